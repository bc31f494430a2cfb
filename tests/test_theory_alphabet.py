"""theory.alphabet: the P1/T3 alphabet conditions and the high-probability radius, written once.

Each function against a hand computation on a small example (a 3 × 3 drift matrix written out), the
uniform forms against the entrywise ones on random instances, and a scan of the package sources for
retyped radius formulas.
"""

from __future__ import annotations

import io
import math
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest
import sympy as sp

import theory
from theory import alphabet as al
from theory import constants as K

ROOT = Path(__file__).resolve().parents[1]

# processing order; strictly upper triangular as a drift matrix is (z_t − w_t = Σ_{j<t} e_j B_jt)
B3 = np.array([[0.0, 0.5, -1.0],
               [0.0, 0.0, 2.0],
               [0.0, 0.0, 0.0]])
# row 0: one step per column (groups); row 1: one step for the row
D3 = np.array([[1.0, 2.0, 0.5],
               [0.5, 0.5, 0.5]])
#: √(2 log(2·3/0.05)) = √(2 log 120), to 20 digits
MULT_3_005 = 3.0943470208695229645


# ------------------------------------------------------------------------------------------------
# hand computations
# ------------------------------------------------------------------------------------------------
def test_hp_multiplier_hand_values():
    assert al.hp_multiplier(3, 0.05) == pytest.approx(MULT_3_005, rel=1e-15)
    assert al.hp_multiplier(48, 0.01) == pytest.approx(4.2824101572492860896, rel=1e-15)
    # count = 1, η → 1: √(2 log 2)
    assert al.hp_multiplier(1, 0.999999) == pytest.approx(math.sqrt(2 * math.log(2 / 0.999999)), rel=1e-15)
    arr = al.hp_multiplier(np.array([3, 48]), 0.05)
    assert arr.shape == (2,) and arr[0] == pytest.approx(MULT_3_005, rel=1e-15)


def test_hp_multiplier_is_the_symbolic_radius():
    """The numeric multiplier is :func:`theory.constants.hp_radius` with ``σ = 1``: the union of
    ``count`` two-sided tails ``2exp(−α²/2)`` equals η there."""
    for count, eta in ((3, 0.05), (48, 0.01), (4096, 0.2)):
        sym = float(K.hp_radius(1, count, sp.Rational(str(eta))).evalf(30))
        assert al.hp_multiplier(count, eta) == pytest.approx(sym, rel=1e-14)
        a = al.hp_multiplier(count, eta)
        assert count * 2 * math.exp(-a * a / 2) == pytest.approx(eta, rel=1e-12)


@pytest.mark.parametrize("count,eta", [(0, 0.05), (0.5, 0.05), (float("nan"), 0.05), (float("inf"), 0.05),
                                        (3, 0.0), (3, 1.0), (3, -0.1), (3, float("nan"))])
def test_hp_multiplier_rejects_bad_input(count, eta):
    with pytest.raises(ValueError):
        al.hp_multiplier(count, eta)
    with pytest.raises(ValueError):
        al.hp_multiplier(np.array([3, count]), eta)


def test_reach_and_drift_var_hand_values():
    # r_t = ½ Σ_j δ_j |B_jt|
    np.testing.assert_allclose(al.reach(D3, B3), [[0.0, 0.25, 0.5 * (1.0 * 1.0 + 2.0 * 2.0)],
                                                  [0.0, 0.125, 0.5 * (0.5 * 1.0 + 0.5 * 2.0)]], rtol=1e-15)
    # Σ_j δ_j² B_jt²
    np.testing.assert_allclose(al.drift_var(D3, B3), [[0.0, 0.25, 1.0 + 16.0],
                                                      [0.0, 0.0625, 0.25 + 1.0]], rtol=1e-15)
    # one row as a vector
    np.testing.assert_allclose(al.reach(D3[1], B3), [0.0, 0.125, 0.75], rtol=1e-15)


def test_t3_radius_hand_values():
    # a_t = √(¼ Σ_j δ_j² B_jt²)·√(2 log(2N/η)), N = 3
    expect = np.array([[0.0, 0.25, math.sqrt(4.25)], [0.0, 0.125, math.sqrt(0.3125)]]) * MULT_3_005
    np.testing.assert_allclose(al.t3_radius(D3, B3, 0.05), expect, rtol=1e-14)
    np.testing.assert_allclose(al.t3_radius_from_var(al.drift_var(D3, B3), 3, 0.05), expect, rtol=1e-14)
    assert al.t3_radius(D3, B3, 0.05)[0, 2] == pytest.approx(6.3791598046801893040, rel=1e-14)
    # the conservative proxies scale the radius by √(π/8 / ¼) and √(π/2 / ¼)
    np.testing.assert_allclose(al.t3_radius(D3, B3, 0.05, "pi8"), expect * math.sqrt(math.pi / 2), rtol=1e-14)
    np.testing.assert_allclose(al.t3_radius(D3, B3, 0.05, "pi2"), expect * math.sqrt(2 * math.pi), rtol=1e-14)


def test_s_over_delta_from_the_named_constants():
    assert al.s_over_delta() == 0.5
    assert al.s_over_delta("pi8") == pytest.approx(math.sqrt(math.pi / 8), rel=1e-15)
    for key, c in theory.CONSTANTS.items():
        assert al.s_over_delta(key) == pytest.approx(math.sqrt(float(c.s2 / K.delta**2)), rel=1e-15)
    with pytest.raises(ValueError, match="constant"):
        al.s_over_delta("gauss")
    with pytest.raises(ValueError, match="constant"):
        al.t3_radius(D3, B3, 0.05, "gauss")


def test_p1_condition_is_strict_with_the_half_step():
    """Inside ``(lower − δ/2, upper + δ/2)`` strictly; a margin widens the interval."""
    r = al.reach(D3, B3)  # row 0: [0, .25, 2.5]; row 1: [0, .125, .75]
    lower, upper = np.full((2, 3), -10.0), np.ones((2, 3))
    w = np.array([[0.0, 0.0, -1.0],   # t=3: w + r = 1.5 > 1 + 0.25: outside
                  [0.0, 0.0, 0.0]])   # w + r ≤ 0.75 < 1.25, w − r ≥ −0.75: inside
    np.testing.assert_array_equal(al.p1_condition(w, r, lower, upper, D3), [False, True])
    # exactly on the edge: w_3 + r_3 = upper_3 + δ_3/2 → not inside (strict)
    w_edge = np.array([[0.0, 0.0, 1.0 + 0.25 - 2.5], [0.0, 0.0, 1.0 + 0.25 - 0.75]])
    np.testing.assert_array_equal(al.p1_condition(w_edge, r, lower, upper, D3), [False, False])
    w_in = w_edge - 1e-9
    np.testing.assert_array_equal(al.p1_condition(w_in, r, lower, upper, D3), [True, True])
    np.testing.assert_array_equal(al.p1_condition(w_in, r, lower, upper, D3, margin=1e-6), [False, False])
    # the margin may be per entry
    m = np.zeros((2, 3))
    m[1, 2] = 1e-6
    np.testing.assert_array_equal(al.p1_condition(w_in, r, lower, upper, D3, margin=m), [True, False])
    # NaN bounds (an infinite grid's) fail
    assert not al.p1_condition(w_in[0], r[0], np.full(3, np.nan), upper[0], D3[0])


def test_t3_condition_is_closed_without_the_half_step():
    a = np.array([[0.0, 0.5, 1.0]])
    lower, upper = -np.ones((1, 3)), np.ones((1, 3))
    assert al.t3_condition(np.zeros((1, 3)), a, lower, upper)[0]
    # w_3 + a_3 = upper_3 exactly → inside (closed)
    assert al.t3_condition(np.array([[0.0, 0.0, 0.0]]), a, lower, upper)[0]
    assert not al.t3_condition(np.array([[0.0, 0.0, 1e-9]]), a, lower, upper)[0]
    assert not al.t3_condition(np.array([[0.0, -0.5 - 1e-9, 0.0]]), a, lower, upper)[0]
    assert not al.t3_condition(np.zeros((1, 3)), a, lower, upper, margin=1e-9)[0]
    # no half step of slack, unlike P1
    assert not al.t3_condition(np.array([[0.0, 0.0, 0.25]]), a, lower, upper)[0]


def test_uniform_forms_hand_values():
    # max_t ‖B_{:,t}‖₁ = |−1| + |2| = 3, max_t ‖B_{:,t}‖₂ = √5
    assert al.drift_l1_max(B3) == 3.0
    assert al.drift_l2_max(B3) == pytest.approx(math.sqrt(5), rel=1e-15)
    w_over = np.array([2.0, 3.5])
    assert al.k_needed_p1(w_over, B3) == 3.5 + 1.5 - 0.5
    assert al.k_needed_p1_from_norm(w_over, 3.0) == 4.5
    assert al.p1_uniform_radius(3.0) == 1.5
    assert al.k_needed_t3(w_over, B3, 0.05) == pytest.approx(6.9595851423191068771, rel=1e-14)
    assert al.k_needed_t3(w_over, B3, 0.05, "pi8") == pytest.approx(7.8359469681151935958, rel=1e-14)
    assert al.k_needed_t3_from_norm(w_over, math.sqrt(5), 3, 0.05) == pytest.approx(6.9595851423191068771, rel=1e-14)
    assert al.t3_uniform_radius(math.sqrt(5), 3, 0.05) == pytest.approx(0.5 * math.sqrt(5) * MULT_3_005, rel=1e-15)
    # NaN inputs propagate (missing stored measurements in the figures), no exception
    assert math.isnan(al.k_needed_t3_from_norm(np.nan, 1.0, 3, 0.05))


@pytest.mark.parametrize("B", [np.zeros((2, 3)), np.zeros((0, 0)), np.zeros(3)])
def test_bad_drift_matrix_is_rejected(B):
    with pytest.raises(ValueError, match="B must be"):
        al.drift_l1_max(B)
    with pytest.raises(ValueError, match="B must be"):
        al.k_needed_t3(1.0, B, 0.05)


def test_bad_delta_shape_is_rejected():
    with pytest.raises(ValueError, match="delta_p"):
        al.reach(np.ones((2, 4)), B3)


# ------------------------------------------------------------------------------------------------
# the uniform forms imply the entrywise ones
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(12))
def test_uniform_forms_imply_entrywise_forms(seed):
    """With one step per row and the symmetric range ``[−Kδ, Kδ]``: ``K`` just above the uniform
    ``K_P1`` (``K_T3``) meets the entrywise P1 (T3) condition on every row."""
    rng = np.random.default_rng(seed)
    N, n = int(rng.integers(2, 30)), int(rng.integers(1, 6))
    m = int(rng.integers(1, 3 * N))  # wide or tall
    X = rng.standard_normal((m, N)) * rng.uniform(0.05, 5, N)
    lam = float(rng.choice([1e-3, 0.1, 1.0])) * float(np.mean(np.sum(X**2, axis=0)))
    B = theory.B(X, lam, rng.permutation(N))
    d = rng.uniform(0.01, 1.0, (n, 1))  # per-row steps
    W = rng.standard_normal((n, N)) * rng.uniform(0.1, 3)
    dp = np.broadcast_to(d, (n, N))
    w_over = np.max(np.abs(W), axis=1) / d[:, 0]
    eta = float(rng.choice([0.01, 0.05, 0.2]))

    k1 = al.k_needed_p1(w_over, B) + 1e-9
    ok1 = al.p1_condition(W, al.reach(dp, B), -k1 * d, k1 * d, dp)
    assert ok1.all()
    for const in theory.CONSTANTS:
        k3 = al.k_needed_t3(w_over, B, eta, const) + 1e-9
        ok3 = al.t3_condition(W, al.t3_radius(dp, B, eta, const), -k3 * d, k3 * d)
        assert ok3.all(), const
    # the T3 radius of every entry is at most the uniform one (in steps of that row)
    a = al.t3_radius(dp, B, eta)
    assert np.all(a / d <= al.t3_uniform_radius(al.drift_l2_max(B), N, eta) * (1 + 1e-12))
    assert np.all(al.reach(dp, B) / d <= al.p1_uniform_radius(al.drift_l1_max(B)) * (1 + 1e-12))


# ------------------------------------------------------------------------------------------------
# no retyped copies
# ------------------------------------------------------------------------------------------------
#: files that may spell the radius ``√(2 log(2·count/η))`` out
ALLOWED = {
    "theory/alphabet.py",   # the numeric form, once
    "theory/constants.py",  # the symbolic form (sympy) and its derivation
}
RADIUS = re.compile(r"\blog\s*\(\s*2(?:\.0*)?\s*\*")


def _code_lines(text: str):
    """``(line number, code)`` with strings and comments removed."""
    keep: dict[int, list[str]] = {}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (tokenize.STRING, tokenize.COMMENT) or tok.type == getattr(tokenize, "FSTRING_MIDDLE", -1):
            continue
        keep.setdefault(tok.start[0], []).append(tok.string)
    return [(k, " ".join(v)) for k, v in sorted(keep.items())]


def retyped_radius(text: str):
    return [ln for ln, code in _code_lines(text) if RADIUS.search(code)]


def test_the_scan_finds_a_retyped_radius():
    src = "import math\nr = 0.5 * b * math.sqrt(2 * math.log(2 * N / eta))\ns = 'math.log(2 * N)'  # log(2 * N\n"
    assert retyped_radius(src) == [2]
    assert retyped_radius("x = np.sqrt(2*np.log(2.0*m/eta))\n") == [1]


def test_no_retyped_high_probability_radius():
    bad = []
    for pkg in ("algorithms", "theory", "verify", "figures"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in ALLOWED:
                continue
            bad += [f"{rel}:{ln}" for ln in retyped_radius(path.read_text())]
    assert not bad, ("the radius √(2 log(2·count/η)) is retyped; call theory.alphabet "
                     "(hp_multiplier, t3_radius, k_needed_t3, …) instead:\n" + "\n".join(bad))
