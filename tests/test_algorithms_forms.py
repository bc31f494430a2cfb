"""The update forms of OPTQ (SPEC §2) agree: inverse-Hessian (OBS), Cholesky, ridge and blocked.

Data come from the public hypothesis strategies in tall, wide, rank-deficient, dead-feature,
duplicate-column, heavy-tailed and ill-conditioned regimes (float64).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import algorithms as A
from verify.strategies import FAMILIES, Layer, layers

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _grid(draw, W):
    kind = draw(st.sampled_from(["symmetric", "integers", "gptq", "gptq_group", "gptq_static"]))
    N = W.shape[1]
    if kind == "symmetric":
        delta = float(np.max(np.abs(W))) / draw(st.sampled_from([2, 7, 31]))
        return A.Grid.symmetric(delta, K=int(np.ceil(np.max(np.abs(W)) / delta)) + 200)
    if kind == "integers":
        return A.Grid.integers(float(np.max(np.abs(W))) / 5)
    bits = draw(st.integers(2, 5))
    sym = draw(st.booleans())
    if kind == "gptq":
        return A.Grid.gptq(bits, sym=sym)
    divisors = [g for g in range(1, N + 1) if N % g == 0]
    g = draw(st.sampled_from(divisors))
    return A.Grid.gptq(bits, sym=sym, group_size=g, static_groups=(kind == "gptq_static"))


@st.composite
def configs(draw):
    layer = draw(layers(N=(1, 16), n=(1, 5)))
    lam_choices = [0.1, 1.0, 10.0] if layer.singular else [0.0, 0.1, 10.0]
    rel = draw(st.sampled_from(lam_choices))
    lam = rel * float(np.mean(np.sum(layer.X**2, axis=0)) or 1.0)
    order = draw(st.sampled_from(["natural", "decreasing", "increasing", "random"]))
    rounding = draw(st.sampled_from(["nearest", "stochastic"]))
    grid = _grid(draw, layer.W)
    block = draw(st.integers(1, layer.W.shape[1] + 3))
    return layer, lam, order, rounding, grid, block


def _codes(r):
    a = r.alphabet
    return np.round(r.Q / a.scale + a.zero).astype(np.int64)


def _first_tie(r, tol=1e-9):
    """Per row, the first processing position whose value sits on a rounding tie (z/δ + zero a
    half-integer), or N. GPTQ's symmetric grid puts the group's extreme weight exactly at ±7.5
    steps, so a group fitted on the fly ties at its own first column; both roundings of a tie
    are correct, and the last bit decides, so runs are comparable only up to the first tie."""
    o = np.asarray(r.order)
    u = r.z / r.alphabet.scale[:, o] + r.alphabet.zero[:, o]
    tie = np.abs(np.abs(u - np.floor(u)) - 0.5) < tol
    if r.rounding == "stochastic":
        tie[:] = False
    first = np.where(tie.any(axis=1), tie.argmax(axis=1), r.z.shape[1])
    return first


def assert_same_run(r, ref, msg=""):
    """Integer codes equal (values to 1e-12) in processing order, each row up to its first tie."""
    o = np.asarray(ref.order)
    np.testing.assert_array_equal(np.asarray(r.order), o)
    stop = np.minimum(_first_tie(r), _first_tie(ref))
    kr, kf = _codes(r)[:, o], _codes(ref)[:, o]
    scale = float(np.max(np.abs(ref.z))) + 1.0
    for i, s in enumerate(stop):
        np.testing.assert_array_equal(kr[i, :s], kf[i, :s], err_msg=f"{msg} row {i}")
        np.testing.assert_allclose(r.Q[i, o[:s]], ref.Q[i, o[:s]], rtol=1e-12, atol=1e-12 * scale, err_msg=msg)
        np.testing.assert_allclose(r.z[i, :s + 1], ref.z[i, :s + 1], rtol=0, atol=1e-7 * scale, err_msg=msg)
        np.testing.assert_allclose(r.errors[i, :s], ref.errors[i, :s], rtol=0, atol=1e-7 * scale, err_msg=msg)


def _run(layer, lam, order, rounding, grid, block, method, seed=11):
    return A.optq(layer.W, layer.X, grid=grid, lam=lam, order=order, rounding=rounding,
                  rng=np.random.default_rng(seed), block_size=block, method=method)


@SETTINGS
@given(configs())
@example((Layer(W=np.array([[1.3, -0.4, 2.2]]), X=np.eye(3), regime="tall", seed=0), 0.0, "natural",
          "nearest", A.Grid.symmetric(0.5, 10), 2))
@example((Layer(W=np.array([[0.7]]), X=np.array([[2.0], [1.0]]), regime="tall", seed=0), 0.0, "natural",
          "nearest", A.Grid.gptq(3), 1))
def test_update_forms_agree(cfg):
    layer, lam, order, rounding, grid, block = cfg
    ref = _run(layer, lam, order, rounding, grid, block, "cholesky")
    for method in ("blocked", "inverse", "ridge"):
        r = _run(layer, lam, order, rounding, grid, block, method)
        assert_same_run(r, ref, f"method={method}")


@pytest.mark.parametrize("regime", FAMILIES)
def test_block_size_does_not_change_the_result(regime):
    rng = np.random.default_rng(5)
    from verify.strategies import make_X

    X = make_X(regime, 64 if regime != "wide" else 20, 40, rng)
    W = rng.standard_normal((7, 40))
    lam = 0.05 * float(np.mean(np.sum(X**2, axis=0)))
    for grid in (A.Grid.gptq(4, group_size=8), A.Grid.gptq(3, sym=False), A.Grid.symmetric(0.1, 200)):
        runs = [A.optq(W, X, grid=grid, lam=lam, order="decreasing", block_size=b) for b in (1, 3, 8, 16, 40, 128)]
        for r in runs[1:]:
            assert_same_run(r, runs[0], grid.describe())
        # the comparison is not vacuous: rows are compared over many columns
        assert np.mean(_first_tie(runs[0])) > 10, grid.describe()


def test_blocked_form_matches_a_plain_numpy_transcription_of_the_definition():
    """OPTQ written directly from the recurrence of SPEC §2 in a few lines of NumPy (no package code)."""
    rng = np.random.default_rng(0)
    m, N, n = 60, 25, 4
    X = rng.standard_normal((m, N)) * np.exp(rng.uniform(-1, 1, N))
    W = rng.standard_normal((n, N))
    lam, delta, K = 0.3, 0.07, 1000
    H = X.T @ X + lam * np.eye(N)
    Uinv = np.linalg.cholesky(np.linalg.inv(H)).T  # H⁻¹ = UᵀU, U upper
    w = W.copy()
    Q = np.zeros_like(W)
    for t in range(N):
        q = np.clip(np.round(w[:, t] / delta), -K, K) * delta
        e = w[:, t] - q
        Q[:, t] = q
        w[:, t + 1:] -= np.outer(e, Uinv[t, t + 1:] / Uinv[t, t])
    r = A.optq(W, X, grid=A.Grid.symmetric(delta, K), lam=lam, block_size=8)
    np.testing.assert_array_equal(r.Q, Q)


def test_rows_are_independent():
    """Each row is quantized on its own: a row's result does not depend on the other rows."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 12))
    W = rng.standard_normal((6, 12))
    grid = A.Grid.symmetric(0.05, 400)
    full = A.optq(W, X, grid=grid, lam=0.5, order="decreasing")
    for i in range(6):
        one = A.optq(W[i:i + 1], X, grid=grid, lam=0.5, order="decreasing")
        np.testing.assert_array_equal(one.Q[0], full.Q[i])
