"""OPTQ and Qronos in exact rational arithmetic, and exact decisions of the deterministic claims.

For small layers (``N`` up to about 12) the whole column loop runs on :class:`fractions.Fraction`:

* ``H_λ = XᵀX + λI`` (processing order) is factored as ``H_λ = Ũ D Ũᵀ`` with ``Ũ`` unit upper
  triangular (the LDLᵀ form of the order-reversed matrix; no square roots). Then ``c_t = D_t``
  (the Schur complement of the trailing block) and ``M = D⁻¹U = Ũ⁻¹`` (``H_λ⁻¹ = UᵀU``), so the
  OPTQ update is ``w_s ← w_s − e_t M_ts`` (``s > t``) exactly as in SPEC §2.
* Rounding decisions are exact: ``k = round(z/δ) + zero`` with ties to even (the rule of
  ``algorithms.rounding.round_nearest``, which rounds ``z/δ`` with ``round``, ties to even), then
  ``k`` is clipped to ``[qmin, qmax]``; a value more than half a step outside the range is
  saturation (exactly half a step outside is a tie, not saturation), as in the package.
* Float inputs (float64 arrays) are converted to fractions exactly (``Fraction(float(x))``).

:func:`certify` then decides each deterministic claim of :mod:`theory.claims` on such a run with no
tolerance at all: squared norms are compared exactly; a bound with a square root on both sides is
decided by squaring twice with exact sign checks; AM–GM by comparing ``(Σc/N)^N`` with ``Πc``. A
verdict there is a proof for that input (of the exact-arithmetic algorithm), not a floating-point
judgement. Stochastic claims are not decided here (their events are random).

This module is independent of :mod:`algorithms` (the checker must not reuse the code it checks):
the grid is given as plain numbers (step, zero point, integer range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
import numbers

import numpy as np

__all__ = ["to_fraction", "ExactGrid", "ExactRun", "Certificate", "exact_optq", "exact_qronos", "certify",
           "CERTIFIABLE", "round_half_even", "udu", "det"]

#: the claims :func:`certify` decides exactly (identities and deterministic bounds)
CERTIFIABLE = ("I1", "T1.sum_c", "T1.frobenius", "P1", "P1.drift", "T3.drift_bound", "O1.det", "O1.amgm",
               "T4.projection.identity", "T4.projection.bound", "T4.rho_le_mismatch", "T4.optq_mismatch",
               "T4.original.identity", "T4.original.bound", "T1.explicit", "T1.c_chain", "L1.monotone",
               "L1.concave")


# ------------------------------------------------------------------------------------------------
# conversion and linear algebra on fractions
# ------------------------------------------------------------------------------------------------
def to_fraction(x, name: str = "value") -> Fraction:
    """``x`` as an exact :class:`Fraction` (a float is converted exactly, with all its binary digits)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, bool):
        raise TypeError(f"{name} must be a number, got a bool")
    if isinstance(x, numbers.Integral):
        return Fraction(int(x))
    if isinstance(x, (numbers.Real, np.floating)):
        f = float(x)
        if not math.isfinite(f):
            raise ValueError(f"{name} must be finite, got {f}; remove NaN/Inf from the input")
        return Fraction(f)
    raise TypeError(f"{name} must be a real number (float, int or Fraction), got {type(x).__name__}")


def _matrix(A, name):
    if isinstance(A, (list, tuple)) and A and isinstance(A[0], (list, tuple)):
        rows = [[to_fraction(v, name) for v in r] for r in A]
    else:
        a = np.asarray(A)
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D array (m x N), got shape {a.shape}")
        if a.dtype == object:
            rows = [[to_fraction(v, name) for v in r] for r in a]
        else:
            if not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
                raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
            a = a.astype(np.float64) if not np.issubdtype(a.dtype, np.integer) else a
            rows = [[to_fraction(v.item(), name) for v in r] for r in a]
    if not rows or not rows[0]:
        raise ValueError(f"{name} is empty; give at least one sample and one feature")
    if len({len(r) for r in rows}) != 1:
        raise ValueError(f"{name} must be rectangular")
    return rows


def _vector(v, name, N):
    a = list(v.tolist() if hasattr(v, "tolist") else v)
    if np.ndim(a) != 1 or len(a) != N:
        raise ValueError(f"{name} must be a vector of length N = {N} (one row of W), got shape {np.shape(a)}")
    return [to_fraction(x, name) for x in a]


def _gram(A, Bm):
    """``AᵀB`` for row lists ``A`` (m × p), ``B`` (m × q)."""
    p, q = len(A[0]), len(Bm[0])
    return [[sum((A[i][s] * Bm[i][j] for i in range(len(A))), Fraction(0)) for j in range(q)] for s in range(p)]


def udu(H):
    """``H = Ũ D Ũᵀ`` (``Ũ`` unit upper triangular): returns ``(Ũ, D)``; ``D_t`` is the Schur complement of
    the trailing block ``H_{>t,>t}`` in ``H_{≥t,≥t}``. Raises ``ValueError`` unless ``H`` is positive definite."""
    N = len(H)
    Ut = [[Fraction(int(i == j)) for j in range(N)] for i in range(N)]
    D = [Fraction(0)] * N
    for j in range(N - 1, -1, -1):
        D[j] = H[j][j] - sum((Ut[j][k] ** 2 * D[k] for k in range(j + 1, N)), Fraction(0))
        if D[j] <= 0:
            raise ValueError(
                "H_λ = XᵀX + λI is not positive definite (λ = 0 with dependent or dead features); use lam > 0"
            )
        for i in range(j):
            Ut[i][j] = (H[i][j] - sum((Ut[i][k] * Ut[j][k] * D[k] for k in range(j + 1, N)), Fraction(0))) / D[j]
    return Ut, D


def _inv_unit_upper(Ut):
    N = len(Ut)
    M = [[Fraction(int(i == j)) for j in range(N)] for i in range(N)]
    for j in range(N):
        for i in range(j - 1, -1, -1):
            M[i][j] = -sum((Ut[i][k] * M[k][j] for k in range(i + 1, j + 1)), Fraction(0))
    return M


def _solve(A, b):
    """Exact Gaussian elimination ``A x = b`` (``A`` nonsingular)."""
    N = len(A)
    T = [list(A[i]) + [b[i]] for i in range(N)]
    for col in range(N):
        piv = next((r for r in range(col, N) if T[r][col] != 0), None)
        if piv is None:
            raise ValueError("singular system")
        T[col], T[piv] = T[piv], T[col]
        for r in range(N):
            if r != col and T[r][col] != 0:
                f = T[r][col] / T[col][col]
                T[r] = [a - f * p for a, p in zip(T[r], T[col])]
    return [T[i][N] / T[i][i] for i in range(N)]


def det(A) -> Fraction:
    """Exact determinant by Gaussian elimination (independent of :func:`udu`)."""
    N = len(A)
    T = [list(r) for r in A]
    d = Fraction(1)
    for col in range(N):
        piv = next((r for r in range(col, N) if T[r][col] != 0), None)
        if piv is None:
            return Fraction(0)
        if piv != col:
            T[col], T[piv] = T[piv], T[col]
            d = -d
        d *= T[col][col]
        for r in range(col + 1, N):
            if T[r][col] != 0:
                f = T[r][col] / T[col][col]
                T[r] = [a - f * p for a, p in zip(T[r], T[col])]
    return d


def round_half_even(x: Fraction) -> int:
    """Nearest integer to ``x``, ties to even (as ``numpy.round``/``torch.round``)."""
    return round(x)  # Fraction.__round__ without ndigits rounds half to even


# ------------------------------------------------------------------------------------------------
# grid and run
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExactGrid:
    """One row's alphabet: levels ``δ·(k − zero)``, ``k`` an integer in ``[qmin, qmax]`` (``None``: unbounded).

    ``ExactGrid.symmetric(δ, K)`` is ``δ·{−K..K}`` (``K=None``: ``δZ``); a GPTQ per-row grid is
    ``ExactGrid(δ, zero, 0, 2^b − 1)`` with the fitted scale and zero point."""

    delta: Fraction
    zero: Fraction = Fraction(0)
    qmin: int | None = None
    qmax: int | None = None

    def __post_init__(self):
        d = to_fraction(self.delta, "delta")
        if d <= 0:
            raise ValueError(f"delta must be a positive step, got {float(d)}")
        object.__setattr__(self, "delta", d)
        object.__setattr__(self, "zero", to_fraction(self.zero, "zero"))
        for nm in ("qmin", "qmax"):
            v = getattr(self, nm)
            if v is not None:
                if isinstance(v, float) and math.isinf(v):
                    object.__setattr__(self, nm, None)
                    continue
                if isinstance(v, bool) or not float(v).is_integer():
                    raise ValueError(f"{nm} must be an integer code or None, got {v!r}")
                object.__setattr__(self, nm, int(v))
        if self.qmin is not None and self.qmax is not None and self.qmin > self.qmax:
            raise ValueError(f"qmin = {self.qmin} > qmax = {self.qmax}; give qmin ≤ qmax")

    @classmethod
    def symmetric(cls, delta, K=None) -> "ExactGrid":
        if K is not None and (isinstance(K, bool) or int(K) != K or K < 1):
            raise ValueError(f"K must be a positive integer or None (δZ), got {K!r}")
        return cls(delta, 0, None if K is None else -int(K), None if K is None else int(K))

    @property
    def finite(self) -> bool:
        return self.qmin is not None or self.qmax is not None

    def round(self, z: Fraction):
        """``(q, k, saturated, tie_distance)``: nearest level of ``z`` (ties to even on ``z/δ``), clipped."""
        x = z / self.delta
        k = round_half_even(x) + self.zero
        kc = k
        if self.qmin is not None:
            kc = max(kc, self.qmin)
        if self.qmax is not None:
            kc = min(kc, self.qmax)
        sat = kc != k and abs(x + self.zero - kc) > Fraction(1, 2)
        tie = abs(abs(x - math.floor(x)) - Fraction(1, 2))  # distance (in steps) from a rounding tie
        return self.delta * (kc - self.zero), kc, sat, tie


@dataclass(frozen=True, eq=False)
class ExactRun:
    """An exact OPTQ/Qronos run of one row. Vectors indexed by ``t`` are in processing order; ``q``, ``w``,
    ``w0`` in the original feature order. ``X`` are the float inputs, ``Xl`` the loop data (``X̃`` when given)."""

    algorithm: str
    variant: str | None
    X: list
    Xl: list
    w: list
    w0: list
    lam: Fraction
    order: list
    grid: ExactGrid
    q: list
    k: list
    z: list
    e: list
    e_prop: list
    c: list
    M: list
    H: list
    saturated: bool
    tie_margin: Fraction
    y1: Fraction | None = None
    mismatched: bool = False

    @property
    def N(self):
        return len(self.w)

    @property
    def m(self):
        return len(self.X)


def _prep(X, w, lam, order, grid, X_tilde=None):
    Xf = _matrix(X, "X")
    m, N = len(Xf), len(Xf[0])
    Xt = None
    if X_tilde is not None:
        Xt = _matrix(X_tilde, "X_tilde")
        if len(Xt) != m or len(Xt[0]) != N:
            raise ValueError(f"X_tilde must have the shape of X ({m} x {N}), got {len(Xt)} x {len(Xt[0])}")
    wf = _vector(w, "w", N)
    lamf = to_fraction(lam, "lam")
    if lamf < 0:
        raise ValueError(f"lam must be ≥ 0, got {float(lamf)}")
    if order is None:
        order = list(range(N))
    order = [int(i) for i in (order.tolist() if hasattr(order, "tolist") else order)]
    if sorted(order) != list(range(N)):
        raise ValueError(f"order must be a permutation of range({N}), got {order}")
    if not isinstance(grid, ExactGrid):
        raise TypeError("grid must be a theory.exact.ExactGrid (e.g. ExactGrid.symmetric(delta, K))")
    return Xf, Xt, wf, lamf, order


def _hessian(Xl, lam, order, dead):
    m, N = len(Xl), len(Xl[0])
    G = _gram(Xl, Xl)
    deadmask = [G[j][j] == 0 for j in range(N)]
    if dead == "zero":
        for j in range(N):
            if deadmask[j]:
                G[j][j] = Fraction(m, 2)
    H = [[G[i][j] + (lam if i == j else 0) for j in range(N)] for i in range(N)]
    Hp = [[H[a][b] for b in order] for a in order]
    return H, Hp, deadmask


def _loop(wp, Hp, grid, first=None):
    """The OPTQ column loop on the processing-order start ``wp``; ``first`` (Qronos original) is rounded at
    position 0 in place of the current weight, and the propagated error there is ``wp[0] − q_0``."""
    Ut, D = udu(Hp)
    M = _inv_unit_upper(Ut)
    N = len(wp)
    cur = list(wp)
    z, e, ep, qs, ks = [], [], [], [], []
    sat, tie = False, Fraction(10**9)
    for t in range(N):
        val = first if (t == 0 and first is not None) else cur[t]
        q, k, s, tm = grid.round(val)
        k = int(k) if Fraction(k).denominator == 1 else k
        sat |= s
        tie = min(tie, tm)
        z.append(val)
        e.append(val - q)
        prop = cur[t] - q
        ep.append(prop)
        qs.append(q)
        ks.append(k)
        for s_ in range(t + 1, N):
            if M[t][s_]:
                cur[s_] -= prop * M[t][s_]
    return dict(q_p=qs, k_p=ks, z=z, e=e, e_prop=ep, c=D, M=M, saturated=sat, tie_margin=tie)


def _unpermute(vp, order):
    out = [None] * len(order)
    for t, j in enumerate(order):
        out[j] = vp[t]
    return out


def exact_optq(X, w, lam, *, grid: ExactGrid, order=None, X_tilde=None, dead: str = "keep") -> ExactRun:
    """Deterministic OPTQ of one row ``w`` on ``X`` (``m × N``) in exact arithmetic.

    ``X_tilde`` given: OPTQ is run on ``X̃`` and judged against ``X`` (claim T4.optq_mismatch).
    ``dead="zero"``: GPTQ's convention (dead features get Hessian diagonal ``m/2`` and weight 0);
    ``"keep"``: no change (then ``λ > 0`` is needed when a feature is dead)."""
    if dead not in ("zero", "keep"):
        raise ValueError(f"dead must be 'zero' or 'keep', got {dead!r}")
    Xf, Xt, wf, lamf, order = _prep(X, w, lam, order, grid, X_tilde)
    Xl = Xt if Xt is not None else Xf
    H, Hp, deadmask = _hessian(Xl, lamf, order, dead)
    w0 = [Fraction(0) if (dead == "zero" and deadmask[j]) else wf[j] for j in range(len(wf))]
    r = _loop([w0[j] for j in order], Hp, grid)
    return ExactRun("optq", None, Xf, Xl, wf, w0, lamf, order, grid, _unpermute(r["q_p"], order),
                    _unpermute(r["k_p"], order), r["z"], r["e"], r["e_prop"], r["c"], r["M"], H,
                    r["saturated"], r["tie_margin"], mismatched=Xt is not None)


def w_hat_exact(Xf, Xt, wf, lamf):
    """``ŵ = (X̃ᵀX̃ + λI)⁻¹(X̃ᵀX + λI)w`` exactly (original order)."""
    N = len(wf)
    Ht = _gram(Xt, Xt)
    for j in range(N):
        Ht[j][j] += lamf
    G = _gram(Xt, Xf)
    rhs = [sum((G[s][j] * wf[j] for j in range(N)), Fraction(0)) + lamf * wf[s] for s in range(N)]
    return _solve(Ht, rhs)


def exact_qronos(X, X_tilde, w, lam, *, grid: ExactGrid, variant: str = "projection", order=None) -> ExactRun:
    """Deterministic Qronos of one row in exact arithmetic (SPEC §2): ``variant="projection"`` (OPTQ on
    ``(X̃, λ)`` from ``ŵ``) or ``"original"`` (the first processed coordinate rounds the least-squares
    value ``y_1 = ⟨X̃_f, Xw − Σ_{s≠f} X̃_s w_s⟩/‖X̃_f‖²``; the error ``ŵ_f − q_f`` is propagated)."""
    if variant not in ("projection", "original"):
        raise ValueError(f"variant must be 'projection' or 'original', got {variant!r}")
    if X_tilde is None:
        raise TypeError("X_tilde is required (m x N); pass X_tilde=X when there is no mismatch")
    Xf, Xt, wf, lamf, order = _prep(X, w, lam, order, grid, X_tilde)
    N = len(wf)
    H, Hp, _ = _hessian(Xt, lamf, order, "keep")
    try:
        wh = w_hat_exact(Xf, Xt, wf, lamf)
    except ValueError:
        raise ValueError("X̃ᵀX̃ + λI is singular (λ = 0 and X_tilde has dependent or dead features); use lam > 0") from None
    first = None
    if variant == "original":
        f = order[0]
        nf = sum((Xt[i][f] ** 2 for i in range(len(Xt))), Fraction(0))
        if nf == 0:
            raise ValueError(f"variant='original' is undefined: feature {f} of X_tilde (processed first) is zero")
        res = [sum((Xf[i][j] * wf[j] for j in range(N)), Fraction(0))
               - sum((Xt[i][s] * wf[s] for s in range(N) if s != f), Fraction(0)) for i in range(len(Xt))]
        first = sum((Xt[i][f] * res[i] for i in range(len(Xt))), Fraction(0)) / nf
    r = _loop([wh[j] for j in order], Hp, grid, first=first)
    return ExactRun("qronos", variant, Xf, Xt, wf, wh, lamf, order, grid, _unpermute(r["q_p"], order),
                    _unpermute(r["k_p"], order), r["z"], r["e"], r["e_prop"], r["c"], r["M"], H,
                    r["saturated"], r["tie_margin"], y1=first, mismatched=True)


# ------------------------------------------------------------------------------------------------
# exact decisions
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Certificate:
    """The exact decision of one claim on one exact run.

    ``status``: ``"holds"``, ``"violated"`` or ``"out of scope"`` (with ``reason``). ``lhs``/``rhs``: the
    exactly compared sides (``form`` says which, e.g. squared norms); ``ratio``: the claim's own
    empirical/bound ratio (float, from the exact sides; for identities lhs/rhs)."""

    claim: str
    status: str
    form: str = ""
    lhs: Fraction | None = None
    rhs: Fraction | None = None
    ratio: float = float("nan")
    reason: str = ""
    attained: bool = False  # the bound holds with equality (exactly) on this run

    def to_dict(self) -> dict:
        f = lambda x: None if x is None else f"{x.numerator}/{x.denominator}"  # noqa: E731
        return {"claim": self.claim, "status": self.status, "form": self.form, "lhs": f(self.lhs), "rhs": f(self.rhs),
                "ratio": None if math.isnan(self.ratio) else float(self.ratio), "reason": self.reason,
                "attained": bool(self.attained)}


def _sq(v):
    return sum((x * x for x in v), Fraction(0))


def _Xv(X, v):
    return [sum((r[j] * v[j] for j in range(len(v))), Fraction(0)) for r in X]


def _sqrt_le(a: Fraction, b: Fraction) -> bool:
    """``√a ≤ √b`` for ``a, b ≥ 0`` (exact)."""
    return a <= b


def _fratio(a: Fraction, b: Fraction, *, sqrt=False, identity=False) -> float:
    if b == 0:  # as the checker: 0/0 is 1 for an identity, 0 for a bound
        return (1.0 if identity else 0.0) if a == 0 else math.inf
    r = a / b
    return math.sqrt(r) if sqrt else float(r)


def _le(cid, a, b, form, *, sqrt=False):
    return Certificate(cid, "holds" if a <= b else "violated", form, a, b, _fratio(a, b, sqrt=sqrt), attained=a == b)


def _eq(cid, a, b, form):
    return Certificate(cid, "holds" if a == b else "violated", form, a, b, _fratio(a, b, identity=True), attained=a == b)


def _out(cid, why):
    return Certificate(cid, "out of scope", reason=why)


def _rank_basis(A):
    """Indices of a maximal set of linearly independent columns of ``A`` (row lists), exactly."""
    if not A or not A[0]:
        return []
    T = [list(r) for r in A]
    m, n = len(T), len(T[0])
    piv_cols, row = [], 0
    for col in range(n):
        p = next((r for r in range(row, m) if T[r][col] != 0), None)
        if p is None:
            continue
        T[row], T[p] = T[p], T[row]
        for r in range(row + 1, m):
            if T[r][col] != 0:
                f = T[r][col] / T[row][col]
                T[r] = [a - f * b for a, b in zip(T[r], T[row])]
        piv_cols.append(col)
        row += 1
        if row == m:
            break
    return piv_cols


def _smallest_positive_eig(G, rank, eps):
    """A rational interval ``(a, b]`` holding the smallest positive eigenvalue of the PSD matrix ``G`` of rank
    ``rank`` (exact characteristic polynomial, real-root isolation; width ≤ ``eps``)."""
    import sympy as sp

    x = sp.Symbol("x")
    n = len(G)
    M = sp.Matrix(n, n, lambda i, j: sp.Rational(G[i][j].numerator, G[i][j].denominator))
    p = M.charpoly(x).as_expr()
    P = sp.Poly(sp.cancel(p / x ** (n - rank)), x, domain="QQ")
    ivs = [iv for iv, _ in P.intervals(eps=sp.Rational(eps.numerator, eps.denominator))]
    lo, hi = min(ivs, key=lambda ab: ab[0])
    # a rational root in the isolating interval is that eigenvalue, exactly (the equality cases need it)
    for r in P.ground_roots():
        if lo <= r <= hi:
            r = Fraction(int(sp.Rational(r).p), int(sp.Rational(r).q))
            return r, r
    return Fraction(int(lo.p), int(lo.q)), Fraction(int(hi.p), int(hi.q))


def c_explicit_bounds(Xl, lam, order, eps=Fraction(1, 10**12)):
    """Rational lower and upper bounds ``(L_t, U_t)`` of the explicit ``ĉ_t`` of T1 (processing order):
    ``ĉ_t = λ + ‖P⊥x‖² + λ‖Px‖²/(σ² + λ)`` with ``x = X_t``, ``P`` the projector onto ``span X_{>t}`` and ``σ²``
    its smallest positive squared singular value (an algebraic number, enclosed in a rational interval of width ≤
    ``eps``; ``ĉ_t`` decreases in ``σ²``). Exact (``L = U``) when ``λ = 0`` or ``X_{>t}`` is zero."""
    m = len(Xl)
    cols = [[Xl[i][j] for i in range(m)] for j in order]
    L, U = [], []
    for t in range(len(cols)):
        x = cols[t]
        xx = sum((v * v for v in x), Fraction(0))
        rest = cols[t + 1:]
        A = [[rest[k][i] for k in range(len(rest))] for i in range(m)] if rest else []
        basis = _rank_basis(A) if rest else []
        if not basis:
            L.append(lam + xx)
            U.append(lam + xx)
            continue
        Ar = [[A[i][k] for k in basis] for i in range(m)]
        G = _gram(Ar, Ar)
        b = [sum((Ar[i][k] * x[i] for i in range(m)), Fraction(0)) for k in range(len(basis))]
        par2 = sum((bi * yi for bi, yi in zip(b, _solve(G, b))), Fraction(0))  # ‖Px‖²
        perp2 = xx - par2
        if lam == 0 or par2 == 0:
            L.append(lam + perp2)
            U.append(lam + perp2)
            continue
        Gfull = _gram(A, A)
        a, bnd = _smallest_positive_eig(Gfull, len(basis), eps)
        L.append(lam + perp2 + lam * par2 / (bnd + lam))
        U.append(lam + perp2 + lam * par2 / (max(a, Fraction(0)) + lam))
    return L, U


def _c_at(run, lam):
    G = _gram(run.Xl, run.Xl)
    Hp = [[G[a][b] + (lam if a == b else 0) for b in run.order] for a in run.order]
    return udu(Hp)[1]


def certify(run: ExactRun, claims=None) -> dict:
    """Decide every claim of :data:`CERTIFIABLE` that applies to ``run`` (or those in ``claims``) exactly.

    Returns ``{claim id: Certificate}``; a claim whose hypotheses fail on the run is ``"out of scope"``
    with the reason. Squared forms are compared for norm bounds (both sides are nonnegative)."""
    ids = CERTIFIABLE if claims is None else tuple(claims)
    bad = [c for c in ids if c not in CERTIFIABLE]
    if bad:
        raise ValueError(f"claims {bad} cannot be decided exactly; choose among {', '.join(CERTIFIABLE)}")
    out = {}
    N, lam, g = run.N, run.lam, run.grid
    d2 = g.delta ** 2
    order = run.order
    Xl = run.Xl
    q = run.q
    dq = [a - b for a, b in zip(run.w0, q)]  # loop start minus q
    E2 = _sq(_Xv(Xl, dq)) + lam * _sq(dq)
    sum_c = sum(run.c, Fraction(0))
    # F2 = ‖Xw − X̃q‖² + λ‖w − q‖² (w the original target)
    Xw = _Xv(run.X, run.w)
    Xq = _Xv(Xl, q)
    F2 = _sq([a - b for a, b in zip(Xw, Xq)]) + lam * _sq([a - b for a, b in zip(run.w, q)])
    is_optq = run.algorithm == "optq"
    proj = run.algorithm == "qronos" and run.variant == "projection"
    orig = run.algorithm == "qronos" and run.variant == "original"
    loop = is_optq or proj
    nosat = not run.saturated
    B = [[Fraction(int(i == j)) - run.M[i][j] for j in range(N)] for i in range(N)]
    colsq = [sum((Xl[i][j] ** 2 for i in range(len(Xl))), Fraction(0)) for j in range(N)]

    for cid in ids:
        if cid == "I1":
            if not loop:
                out[cid] = _out(cid, "applies to an OPTQ column loop (OPTQ or Qronos projection)")
                continue
            out[cid] = _eq(cid, E2, sum((e * e * c for e, c in zip(run.e, run.c)), Fraction(0)),
                           "‖X(w−q)‖² + λ‖w−q‖² = Σ e_t² c_t")
        elif cid in ("T1.sum_c", "T1.frobenius"):
            if not is_optq or run.mismatched:
                out[cid] = _out(cid, "applies to an OPTQ run on X")
            elif not nosat:
                out[cid] = _out(cid, "saturation")
            elif cid == "T1.sum_c":
                out[cid] = _le(cid, E2, d2 / 4 * sum_c, "squares: ‖X(w−q)‖² + λ‖w−q‖² ≤ (δ²/4)Σc_t", sqrt=True)
            else:
                out[cid] = _le(cid, E2, d2 / 4 * (sum(colsq, Fraction(0)) + N * lam),
                               "squares: ‖X(w−q)‖² + λ‖w−q‖² ≤ (δ²/4)(‖X‖_F² + Nλ)", sqrt=True)
        elif cid in ("T1.explicit", "T1.c_chain"):
            if cid == "T1.explicit" and (not is_optq or run.mismatched):
                out[cid] = _out(cid, "applies to an OPTQ run on X")
                continue
            if cid == "T1.explicit" and not nosat:
                out[cid] = _out(cid, "saturation")
                continue
            col = [colsq[j] + lam for j in order]
            eps = Fraction(1, 10**12)
            for _ in range(4):  # refine the eigenvalue enclosure until the comparison is decided
                Lc, Uc = c_explicit_bounds(Xl, lam, order, eps)
                if cid == "T1.explicit":
                    lo_b, hi_b = d2 / 4 * sum(Lc, Fraction(0)), d2 / 4 * sum(Uc, Fraction(0))
                    if E2 <= lo_b or E2 > hi_b:
                        out[cid] = Certificate(cid, "holds" if E2 <= lo_b else "violated",
                                               "squares: ‖X(w−q)‖² + λ‖w−q‖² ≤ (δ²/4)Σ_t L_t ≤ (δ²/4)Σ_t ĉ_t "
                                               "(L_t a rational lower bound of ĉ_t)",
                                               E2, lo_b if E2 <= lo_b else hi_b,
                                               _fratio(E2, (lo_b + hi_b) / 2, sqrt=True),
                                               attained=E2 == lo_b == hi_b)
                        break
                else:
                    ok = all(c <= l for c, l in zip(run.c, Lc)) and all(u <= k for u, k in zip(Uc, col))
                    bad = any(c > u for c, u in zip(run.c, Uc)) or any(l > k for l, k in zip(Lc, col))
                    if ok or bad:
                        r1 = max(_fratio(c, (l + u) / 2) for c, l, u in zip(run.c, Lc, Uc))
                        r2 = max(_fratio((l + u) / 2, k) for l, u, k in zip(Lc, Uc, col))
                        out[cid] = Certificate(cid, "holds" if ok else "violated",
                                               "c_t ≤ L_t ≤ ĉ_t ≤ U_t ≤ ‖X_t‖² + λ for every t (L_t, U_t rational "
                                               "bounds of ĉ_t)", max(run.c), max(Uc), max(r1, r2),
                                               attained=any(c == lo == u for c, lo, u in zip(run.c, Lc, Uc)) or
                                               any(lo == u == k for lo, u, k in zip(Lc, Uc, col)))
                        break
                eps = eps * eps
            else:
                out[cid] = Certificate(cid, "undecided", reason="the eigenvalue enclosure could not separate the sides")
        elif cid in ("L1.monotone", "L1.concave"):
            if lam <= 0:
                out[cid] = _out(cid, "the λ grid λ·{1/4, 1/2, 1, 2, 4} needs λ > 0")
                continue
            lams = [lam * Fraction(k, 4) for k in (1, 2, 4, 8, 16)]
            C = [_c_at(run, l) for l in lams]
            pairs = []
            if cid == "L1.monotone":
                for a in range(len(lams) - 1):
                    pairs += [(C[a][t] + lams[a + 1] - lams[a], C[a + 1][t]) for t in range(N)]
                form = "c_t(λ_a) + (λ_b − λ_a) ≤ c_t(λ_b) on λ·{1/4, 1/2, 1, 2, 4}"
            else:
                for a in range(len(lams) - 2):
                    th = (lams[a + 2] - lams[a + 1]) / (lams[a + 2] - lams[a])
                    pairs += [(th * C[a][t] + (1 - th) * C[a + 2][t], C[a + 1][t]) for t in range(N)]
                form = "θc_t(λ_a) + (1−θ)c_t(λ_c) ≤ c_t(λ_b) on λ·{1/4, 1/2, 1, 2, 4}"
            viol = [pq for pq in pairs if pq[0] > pq[1]]
            lo, hi = max(viol or pairs, key=lambda pq: _fratio(*pq))
            out[cid] = Certificate(cid, "violated" if viol else "holds", form, lo, hi,
                                   max(_fratio(a, b) for a, b in pairs), attained=any(a == b for a, b in pairs))
        elif cid == "P1.drift":
            if not loop:
                out[cid] = _out(cid, "applies to an OPTQ column loop")
            elif not nosat:
                out[cid] = _out(cid, "saturation")
            else:
                w0p = [run.w0[j] for j in order]
                certs = [_le(cid, abs(run.z[t] - w0p[t]),
                             g.delta / 2 * sum((abs(B[j][t]) for j in range(N)), Fraction(0)),
                             "|z_t − w_t| ≤ ½Σ_j δ|B_jt| (the worst t)") for t in range(N)]
                viol = [c for c in certs if c.status == "violated"]
                out[cid] = max(viol or certs, key=lambda c: c.ratio)
        elif cid == "P1":
            if not loop or not g.finite:
                out[cid] = _out(cid, "applies to an OPTQ column loop on a finite grid")
                continue
            w0p = [run.w0[j] for j in order]
            lo = g.delta * ((g.qmin if g.qmin is not None else -10**18) - g.zero)
            hi = g.delta * ((g.qmax if g.qmax is not None else 10**18) - g.zero)
            cond = all(
                w0p[t] - g.delta / 2 * sum((abs(B[j][t]) for j in range(N)), Fraction(0)) >= lo - g.delta / 2 and
                w0p[t] + g.delta / 2 * sum((abs(B[j][t]) for j in range(N)), Fraction(0)) <= hi + g.delta / 2
                for t in range(N))
            if not cond:
                out[cid] = _out(cid, "the P1 alphabet condition fails")
            else:
                out[cid] = Certificate(cid, "holds" if nosat else "violated", "condition ⇒ no saturation",
                                       Fraction(int(run.saturated)), Fraction(0), 0.0)
        elif cid == "T3.drift_bound":
            if lam <= 0:
                out[cid] = _out(cid, "needs λ > 0")
                continue
            X2 = max(colsq)
            worst = max(range(N), key=lambda t: _sq([B[j][t] for j in range(N)]))
            out[cid] = _le(cid, _sq([B[j][worst] for j in range(N)]), X2 / lam, "max_t ‖B_{:,t}‖² ≤ max_j‖X_j‖²/λ")
        elif cid == "O1.det":
            p = Fraction(1)
            for c in run.c:
                p *= c
            out[cid] = _eq(cid, p, det(run.H), "Π_t c_t = det H_λ")
        elif cid == "O1.amgm":
            p = Fraction(1)
            for c in run.c:
                p *= c
            # N(det)^{1/N} ≤ Σc  ⇔  det ≤ (Σc/N)^N  (both positive)
            cert = _le(cid, p, (sum_c / N) ** N, "Π_t c_t ≤ (Σ_t c_t / N)^N")
            ratio = N * math.exp((sum(math.log(float(c)) for c in run.c)) / N) / float(sum_c) if p > 0 else 0.0
            out[cid] = Certificate(cid, cert.status, cert.form, cert.lhs, cert.rhs, ratio, attained=cert.attained)
        elif cid in ("T4.projection.identity", "T4.projection.bound", "T4.rho_le_mismatch",
                     "T4.original.identity", "T4.original.bound", "T4.optq_mismatch"):
            if not run.mismatched:
                out[cid] = _out(cid, "needs mismatched inputs X̃")
                continue
            wh = run.w0 if run.algorithm == "qronos" else w_hat_exact(run.X, Xl, run.w, lam)
            rvec = [a - b for a, b in zip(Xw, _Xv(Xl, wh))]
            rho2 = _sq(rvec) + lam * _sq([a - b for a, b in zip(run.w, wh)])
            Xmis = [a - b for a, b in zip(Xw, _Xv(Xl, run.w))]
            mis2 = _sq(Xmis)
            if cid == "T4.rho_le_mismatch":
                out[cid] = _le(cid, rho2, mis2, "squares: ρ_λ² ≤ ‖(X − X̃)w‖²", sqrt=True)
            elif cid == "T4.projection.identity":
                out[cid] = (_eq(cid, F2, rho2 + sum((e * e * c for e, c in zip(run.e, run.c)), Fraction(0)),
                                "‖Xw − X̃q‖² + λ‖w−q‖² = ρ² + Σe_t²c̃_t") if proj else _out(cid, "Qronos projection only"))
            elif cid == "T4.projection.bound":
                if not proj:
                    out[cid] = _out(cid, "Qronos projection only")
                elif not nosat:
                    out[cid] = _out(cid, "saturation")
                else:
                    out[cid] = _le(cid, F2, rho2 + d2 / 4 * sum_c, "‖Xw − X̃q‖² + λ‖w−q‖² ≤ ρ² + (δ²/4)Σc̃_t")
            elif cid == "T4.original.identity":
                if not orig:
                    out[cid] = _out(cid, "Qronos original only")
                else:
                    f = order[0]
                    rhs = rho2 + (wh[f] - q[f]) ** 2 * run.c[0] + sum((e * e * c for e, c in zip(run.e[1:], run.c[1:])),
                                                                       Fraction(0))
                    out[cid] = _eq(cid, F2, rhs, "‖Xw − X̃q‖² + λ‖w−q‖² = ρ² + (ŵ_1−q_1)²c̃_1 + Σ_{t≥2}e_t²c̃_t")
            elif cid == "T4.original.bound":
                if not orig:
                    out[cid] = _out(cid, "Qronos original only")
                elif not nosat:
                    out[cid] = _out(cid, "saturation")
                else:
                    f = order[0]
                    gap = abs(wh[f] - run.y1)
                    rhs = rho2 + (g.delta / 2 + gap) ** 2 * run.c[0] + d2 / 4 * sum(run.c[1:], Fraction(0))
                    out[cid] = _le(cid, F2, rhs, "‖Xw − X̃q‖² + λ‖w−q‖² ≤ ρ² + (δ/2 + |ŵ_1−y_1|)²c̃_1 + (δ²/4)Σ_{t≥2}c̃_t")
            else:  # T4.optq_mismatch: √F2 ≤ √A + √Bq, A = mis², Bq = (δ²/4)Σc̃
                if not is_optq:
                    out[cid] = _out(cid, "applies to OPTQ run on X̃")
                elif not nosat:
                    out[cid] = _out(cid, "saturation")
                else:
                    A, Bq = mis2, d2 / 4 * sum_c
                    # F2 ≤ A + Bq + 2√(A·Bq)  ⇔  s := F2 − A − Bq ≤ 0  or  s² ≤ 4·A·Bq
                    s = F2 - A - Bq
                    holds = s <= 0 or s * s <= 4 * A * Bq
                    ratio = math.sqrt(float(F2)) / (math.sqrt(float(A)) + math.sqrt(float(Bq))) if (A or Bq) else (
                        1.0 if F2 == 0 else math.inf)
                    lhs, rhs = (s * s, 4 * A * Bq) if s > 0 else (s, Fraction(0))
                    out[cid] = Certificate(cid, "holds" if holds else "violated",
                                           "s = F2 − A − B ≤ 0, or s² ≤ 4AB (A = ‖(X−X̃)w‖², B = (δ²/4)Σc̃_t)",
                                           lhs, rhs, ratio,
                                           attained=(s > 0 and s * s == 4 * A * Bq) or (s == 0 and A * Bq == 0))
    return out
