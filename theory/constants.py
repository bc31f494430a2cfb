"""The constants of the claims (SPEC §5), defined once, and their sympy derivations.

The claims in :mod:`theory.claims` build their formulas from the expressions here; the functions
``derive_*`` re-derive each constant symbolically from first principles, and the tests check that
every derivation reproduces the expression the claims use (so no constant is retyped anywhere).

Symbols: ``δ`` grid step, ``f`` fractional part of ``z/δ``, ``σ`` a sub-Gaussian scale, ``α`` a
threshold, ``m`` number of samples (union bound), ``η`` failure probability.

Variance proxies ``s²`` for one stochastic-rounding error (SPEC T2), each named:

* ``"hoeffding"``: ``δ²/4``: Hoeffding's lemma for a mean-zero variable on an interval of length
  ``δ`` (the stochastic-rounding error is one). Valid for every tail statement here; the sharpest.
* ``"pi8"``: ``πδ²/8``: the Gaussian ``N(0, s²)`` whose ``E|Y|`` equals the largest first absolute
  moment of a mean-zero two-point law on an interval of length ``δ`` (``δ/2``, at ``f = ½``);
  conservative.
* ``"pi2"``: ``πδ²/2``: the same for any mean-zero law with ``|e| ≤ δ`` (largest ``E|e|`` is
  ``δ``); the most conservative.

Since ``1/4 < π/8 < π/2``, a tail bound proved with the Hoeffding proxy implies the two others.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp

__all__ = [
    "delta", "f", "sigma", "alpha", "m", "eta", "t", "lam", "damp",
    "HALF_STEP",
    "TAIL_FACTOR",
    "Constant",
    "CONSTANTS",
    "tail_bound",
    "hp_radius",
    "SQ_MGF",
    "derive_rtn_error",
    "derive_stochastic_moments",
    "derive_chernoff",
    "derive_hp_radius",
    "derive_sq_mgf",
    "derive_gaussian_abs_moment",
    "derive_convex_order_constants",
    "derive_hoeffding_proxy",
    "derive_gptq_scaling",
    "derive_amgm",
    "derive_ridge_derivative",
]

delta = sp.Symbol("delta", positive=True)
f = sp.Symbol("f", nonnegative=True)
sigma = sp.Symbol("sigma", positive=True)
alpha = sp.Symbol("alpha", positive=True)
m = sp.Symbol("m", positive=True, integer=True)
eta = sp.Symbol("eta", positive=True)
t = sp.Symbol("t", positive=True)
lam = sp.Symbol("lambda", nonnegative=True)
damp = sp.Symbol("damp", nonnegative=True)

#: Nearest rounding without saturation: ``|e| ≤ HALF_STEP`` (``δ/2``).
HALF_STEP = delta / 2
#: Two-sided sub-Gaussian tail: ``P(|Y| ≥ α) ≤ TAIL_FACTOR·exp(−α²/(2σ²))``.
TAIL_FACTOR = sp.Integer(2)
#: ``E exp(Y²/(4σ²))`` for ``Y ~ N(0, σ²)`` (the alternative "√2" tail).
SQ_MGF = sp.sqrt(2)


@dataclass(frozen=True)
class Constant:
    """A named variance proxy ``s²`` for one rounding error (a sympy expression in ``delta``)."""

    key: str
    name: str
    s2: sp.Expr
    sharp: bool
    note: str

    @property
    def factor(self) -> float:
        """``s²/δ²`` as a float."""
        return float(self.s2 / delta**2)


CONSTANTS = {
    "hoeffding": Constant(
        "hoeffding", "hoeffding δ²/4 (sharpest)", delta**2 / 4, True,
        "Hoeffding's lemma: a mean-zero error on an interval of length δ is sub-Gaussian with proxy δ²/4; "
        "valid for every tail statement here and the tightest of the three.",
    ),
    "pi8": Constant(
        "pi8", "convex order πδ²/8", sp.pi * delta**2 / 8, False,
        "matches E|e| of the two-point rounding law at f = 1/2 (its maximum, δ/2); conservative "
        "(π/8 > 1/4), so implied by the Hoeffding form.",
    ),
    "pi2": Constant(
        "pi2", "convex order πδ²/2 (conservative)", sp.pi * delta**2 / 2, False,
        "matches the largest E|e| (= δ) of any mean-zero error with |e| ≤ δ; the most conservative.",
    ),
}


def tail_bound(a=alpha, s=sigma):
    """``2·exp(−α²/(2σ²))``: the two-sided sub-Gaussian tail (Chernoff with ``t* = α/σ²``)."""
    return TAIL_FACTOR * sp.exp(-a**2 / (2 * s**2))


def hp_radius(s=sigma, mm=m, e=eta):
    """``σ·√(2 log(2m/η))``: the radius at which the union of ``m`` two-sided tails equals ``η``."""
    return s * sp.sqrt(2 * sp.log(TAIL_FACTOR * mm / e))


# ------------------------------------------------------------------------------------------------
# derivations (each returns the derived expression(s); the tests compare them with the above)
# ------------------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def derive_rtn_error():
    """``max_{u∈[0,1)} min(u, 1−u)·δ``: the nearest-rounding error of ``z = (k+u)δ``; returns ``δ/2``."""
    u = sp.Symbol("u", nonnegative=True)
    err = sp.Min(u, 1 - u) * delta
    return sp.simplify(sp.maximum(err, u, sp.Interval(0, 1)))


@lru_cache(maxsize=None)
def derive_stochastic_moments():
    """Stochastic rounding of ``z = (k+f)δ``: up (error ``(f−1)δ``) w.p. ``f``, down (error ``fδ``)
    w.p. ``1−f``. Returns ``(E e, E e², max_f E e²)`` = ``(0, f(1−f)δ², δ²/4)``."""
    e_down, e_up = f * delta, (f - 1) * delta
    mean = sp.simplify((1 - f) * e_down + f * e_up)
    second = sp.factor(sp.simplify((1 - f) * e_down**2 + f * e_up**2))
    mx = sp.simplify(sp.maximum(second, f, sp.Interval(0, 1)))
    return mean, second, mx


@lru_cache(maxsize=None)
def derive_chernoff():
    """Chernoff for ``Y`` with ``E e^{tY} ≤ e^{t²σ²/2}``: ``min_t exp(−tα + t²σ²/2)``.
    Returns ``(t*, two-sided tail)`` = ``(α/σ², 2exp(−α²/(2σ²)))``."""
    g = -t * alpha + t**2 * sigma**2 / 2
    (ts,) = sp.solve(sp.diff(g, t), t)
    assert sp.diff(g, t, 2).subs(t, ts).is_positive
    return sp.simplify(ts), sp.simplify(2 * sp.exp(g.subs(t, ts)))


@lru_cache(maxsize=None)
def derive_hp_radius():
    """Solve ``m·2exp(−α²/(2σ²)) = η`` for ``α > 0``: returns ``σ√(2 log(2m/η))``."""
    sols = sp.solve(sp.Eq(m * 2 * sp.exp(-alpha**2 / (2 * sigma**2)), eta), alpha)
    pos = [s for s in sols if s.is_positive is not False]
    return sp.simplify(pos[0])


@lru_cache(maxsize=None)
def derive_sq_mgf():
    """``E exp(Y²/(4σ²))`` for ``Y ~ N(0, σ²)``: returns ``√2``."""
    y = sp.Symbol("y", real=True)
    dens = sp.exp(-y**2 / (2 * sigma**2)) / sp.sqrt(2 * sp.pi * sigma**2)
    return sp.simplify(sp.integrate(sp.exp(y**2 / (4 * sigma**2)) * dens, (y, -sp.oo, sp.oo)))


@lru_cache(maxsize=None)
def derive_gaussian_abs_moment():
    """``E|Y|`` for ``Y ~ N(0, σ²)``: returns ``σ√(2/π)``."""
    y = sp.Symbol("y", real=True)
    dens = sp.exp(-y**2 / (2 * sigma**2)) / sp.sqrt(2 * sp.pi * sigma**2)
    return sp.simplify(2 * sp.integrate(y * dens, (y, 0, sp.oo)))


@lru_cache(maxsize=None)
def derive_convex_order_constants():
    """The Gaussian variances whose ``E|Y|`` matches the largest ``E|e|`` of (a) the two-point
    stochastic-rounding law (``E|e| = 2f(1−f)δ``, maximal ``δ/2`` at ``f = ½``) and (b) any mean-zero
    law with ``|e| ≤ δ`` (maximal ``E|e| = δ``). Returns ``(s²_two_point, s²_bounded)`` =
    ``(πδ²/8, πδ²/2)``. Matching ``E|·|`` is necessary for convex-order domination; the tail bounds
    with these proxies hold in any case because they are larger than Hoeffding's ``δ²/4``."""
    s = sp.Symbol("s", positive=True)
    abs_two_point = sp.simplify((1 - f) * f * delta + f * (1 - f) * delta)
    mx = sp.maximum(abs_two_point, f, sp.Interval(0, 1))
    eabs = derive_gaussian_abs_moment().subs(sigma, s)
    (s_a,) = sp.solve(sp.Eq(eabs, mx), s)
    (s_b,) = sp.solve(sp.Eq(eabs, delta), s)
    return sp.simplify(s_a**2), sp.simplify(s_b**2)


@lru_cache(maxsize=None)
def derive_hoeffding_proxy():
    """Hoeffding's lemma for the stochastic-rounding error, from its log-MGF
    ``ψ(t) = log((1−f)e^{tfδ} + f e^{t(f−1)δ})``: ``ψ(0) = ψ'(0) = 0`` and ``ψ''(t) = p(1−p)δ²`` with
    ``p`` the tilted probability of rounding up, so ``ψ'' ≤ max_p p(1−p)δ² = δ²/4`` and
    ``ψ(t) ≤ t²(δ²/4)/2``. Returns ``(ψ(0), ψ'(0), ψ'' − p(1−p)δ², proxy)`` = ``(0, 0, 0, δ²/4)``."""
    tt = sp.Symbol("tt", real=True)
    P = sp.Symbol("P", nonnegative=True)
    mgf = (1 - f) * sp.exp(tt * f * delta) + f * sp.exp(tt * (f - 1) * delta)
    psi = sp.log(mgf)
    p = f * sp.exp(tt * (f - 1) * delta) / mgf
    d2 = sp.simplify(sp.diff(psi, tt, 2) - p * (1 - p) * delta**2)
    proxy = sp.maximum(P * (1 - P) * delta**2, P, sp.Interval(0, 1))
    return sp.simplify(psi.subs(tt, 0)), sp.simplify(sp.diff(psi, tt).subs(tt, 0)), d2, proxy


@lru_cache(maxsize=None)
def derive_gptq_scaling():
    """GPTQ's ``H_g = (2/m)XᵀX + damp·I`` equals ``(2/m)(XᵀX + λI)`` iff ``λ = damp·m/2``; its
    Schur complements are ``(2/m)c_t``, so GPTQ's ``d_t² = 1/((2/m)c_t)`` and its per-column loss
    ``e_t²/(2d_t²) = e_t² c_t / m``. Checked on a symbolic 2×2 Gram matrix.

    Returns ``(λ in terms of damp, loss_1 − e²c_1/m, loss_2 − e²c_2/m)`` (the last two simplify to 0)."""
    g11, g12, g22, e = sp.symbols("g11 g12 g22 e", real=True)
    G = sp.Matrix([[g11, g12], [g12, g22]])
    Hg = (2 / m) * G + damp * sp.eye(2)
    (lam_sol,) = sp.solve(sp.Eq(Hg[0, 0], ((2 / m) * (G + lam * sp.eye(2)))[0, 0]), lam)
    H = G + lam_sol * sp.eye(2)
    # processing order (1, 2): c_1 = Schur complement of the trailing block, c_2 = H_22
    c1 = H[0, 0] - H[0, 1] ** 2 / H[1, 1]
    c2 = H[1, 1]
    # GPTQ: U with H_g⁻¹ = UᵀU, d_t = U_tt; d_1² = (H_g⁻¹ restricted...) = 1/Schur(H_g)
    c1g = Hg[0, 0] - Hg[0, 1] ** 2 / Hg[1, 1]
    c2g = Hg[1, 1]
    d1sq, d2sq = 1 / c1g, 1 / c2g
    loss1 = e**2 / d1sq / 2
    loss2 = e**2 / d2sq / 2
    return lam_sol, sp.simplify(loss1 - e**2 * c1 / m), sp.simplify(loss2 - e**2 * c2 / m)


@lru_cache(maxsize=None)
def derive_amgm():
    """AM–GM for ``N = 2, 3`` as sums of squares (``c_t = x_t²``, ``x_t > 0``):
    ``(x²+y²)/2 − xy = (x−y)²/2`` and
    ``(x³+y³+z³)/3 − xyz = (x+y+z)((x−y)²+(y−z)²+(z−x)²)/6``.
    Returns the two differences (left minus right side), which simplify to 0."""
    x, y, z = sp.symbols("x y z", positive=True)
    d2 = sp.expand((x**2 + y**2) / 2 - x * y - (x - y) ** 2 / 2)
    d3 = sp.expand((x**3 + y**3 + z**3) / 3 - x * y * z
                   - (x + y + z) * ((x - y) ** 2 + (y - z) ** 2 + (z - x) ** 2) / 6)
    return d2, d3


@lru_cache(maxsize=None)
def derive_ridge_derivative():
    """For ``N = 2`` (processing order 1 then 2), ``c_1(λ) = λ + a − b²/(d + λ)`` with
    ``a = ‖X_1‖²``, ``b = ⟨X_1, X_2⟩``, ``d = ‖X_2‖²``, ``β = b/(d + λ)``.
    Returns ``(c_1' − (1 + β²), c_1'')``: the first simplifies to 0, the second is ``−2b²/(d+λ)³ ≤ 0``."""
    a, b = sp.symbols("a b", real=True)
    d = sp.Symbol("d", positive=True)
    c1 = lam + a - b**2 / (d + lam)
    beta = b / (d + lam)
    return sp.simplify(sp.diff(c1, lam) - (1 + beta**2)), sp.simplify(sp.diff(c1, lam, 2))
