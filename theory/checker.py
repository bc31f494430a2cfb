"""One generic checker for every claim: ``check(claim, run, **params) -> Verdict``.

Semantics by kind (SPEC §6):

* identity: ``|lhs − rhs| ≤ rtol·max(|lhs|, |rhs|) + atol`` for every element of every in-scope row;
* deterministic bound / implication: ``lhs ≤ rhs·(1 + rtol) + atol`` (one-sided);
* probability bound: each in-scope row is one independent trial; the event is
  ``lhs > rhs·(1 + rtol) + atol`` for some element (and, for joint claims, no saturation: the
  event is intersected with it, never conditioned on it). The exceedance count is compared with
  the claimed probabilities by an exact one-sided test: the binomial test
  (:func:`scipy.stats.binomtest`, ``alternative="greater"``) when every row has the same claimed
  probability, the exact Poisson-binomial upper tail otherwise (rows with different claimed
  probabilities ``p_r``: under the claim the count is stochastically at most a Poisson-binomial
  variable with parameters ``p_r``). Violated when the p-value is below the declared false-alarm
  rate ``alpha``.
* expectation bound: ``Y_r = lhs_r·1{no saturation}/bound_r ∈ [0, b_r]`` (``b_r`` from the claim's
  range; a ``Y_r`` above its range is itself a violation). Hoeffding's inequality for independent
  bounded variables: under the claim ``E Y_r ≤ 1``, so ``P(Σ_r (Y_r − 1) ≥ s) ≤ exp(−2s²/Σ_r b_r²)``;
  the p-value is that bound at the observed ``s``.

Rows outside a claim's hypotheses are out of scope (counted, with reasons), never passes. A run
on which the exact quantities cannot be formed is out of scope as a whole.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from scipy import stats

from .claims import CLAIMS, Claim, get_claim
from .evaluation import C_Q, EPS64, QUANTITIES, Context, ScopeError, value

__all__ = ["Verdict", "check", "check_all", "trials_for_power", "trials_for_power_expectation",
           "poisson_binomial_sf", "DEFAULT_ALPHA"]

#: default false-alarm rate of the statistical tests
DEFAULT_ALPHA = 1e-3


@dataclass(frozen=True, eq=False)
class Verdict:
    """The outcome of one claim on one run.

    ``status``: ``"consistent"``, ``"violated"`` or ``"out of scope"``. ``lhs``, ``rhs``, ``ratio``:
    per in-scope row at its worst element (``ratio = lhs/rhs``; identities: ``lhs/rhs`` too).
    ``rows``: indices of the in-scope rows. ``violations``: deterministic claims, the number of
    violating rows; probabilistic claims, 1 when the test rejects the claim (0 otherwise; the
    exceedance count is ``exceedances``). Probability claims add ``trials``, ``exceedances``,
    ``claimed_p`` (per trial), ``expected`` (sum of claimed probabilities), ``p_value``, ``alpha``,
    ``test``; expectation claims add ``mean`` (of ``Y``), ``range``, ``p_value``, ``alpha``, ``test``.
    """

    claim: str
    kind: str
    status: str
    in_scope: int
    out_of_scope: int
    reasons: dict
    lhs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rhs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ratio: np.ndarray = field(default_factory=lambda: np.zeros(0))
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    worst_ratio: float = float("nan")
    violations: int = 0
    tolerance: dict = field(default_factory=dict)
    trials: int = 0
    exceedances: int = 0
    claimed_p: np.ndarray | None = None
    expected: float = float("nan")
    p_value: float = float("nan")
    alpha: float = float("nan")
    test: str = ""
    mean: float = float("nan")
    range: float = float("nan")
    message: str = ""

    @property
    def violated(self) -> bool:
        return self.status == "violated"

    @property
    def consistent(self) -> bool:
        return self.status == "consistent"

    def to_dict(self) -> dict:
        """A JSON-friendly summary (no per-row arrays)."""
        f = lambda x: None if x is None or (isinstance(x, float) and math.isnan(x)) else x  # noqa: E731
        d = {
            "claim": self.claim, "kind": self.kind, "status": self.status, "in_scope": self.in_scope,
            "out_of_scope": self.out_of_scope, "reasons": dict(sorted(self.reasons.items())),
            "worst_ratio": f(float(self.worst_ratio)), "violations": int(self.violations),
            "tolerance": self.tolerance, "message": self.message,
        }
        if self.kind == "probability bound":
            d.update(trials=self.trials, exceedances=self.exceedances, expected=f(float(self.expected)),
                     claimed_p=None if self.claimed_p is None or self.claimed_p.size == 0 else float(np.max(self.claimed_p)),
                     p_value=f(float(self.p_value)), alpha=f(float(self.alpha)), test=self.test)
        if self.kind == "expectation bound":
            d.update(trials=self.trials, mean=f(float(self.mean)), range=f(float(self.range)),
                     p_value=f(float(self.p_value)), alpha=f(float(self.alpha)), test=self.test)
        return d

    def __repr__(self):
        extra = ""
        if self.kind == "probability bound":
            extra = f", exceedances={self.exceedances}/{self.trials}, p={self.p_value:.3g}"
        elif self.kind == "expectation bound":
            extra = f", mean={self.mean:.4g}, p={self.p_value:.3g}"
        return (f"Verdict({self.claim}: {self.status}, in_scope={self.in_scope}, out_of_scope={self.out_of_scope}, "
                f"worst_ratio={self.worst_ratio:.6g}{extra})")


# ------------------------------------------------------------------------------------------------
# evaluation helpers
# ------------------------------------------------------------------------------------------------
def _lambdify(expr):
    names = sorted(s.name for s in expr.free_symbols)
    fn = sp.lambdify([sp.Symbol(n, real=True) for n in names], expr, modules="numpy")
    return names, fn


_FN_CACHE: dict = {}


def _eval(ctx, expr, rows):
    """Evaluate ``expr`` on the rows ``rows``; returns an array with first axis = rows (or 1)."""
    if isinstance(expr, (int, float)) or (isinstance(expr, sp.Basic) and expr.is_number):
        return np.array([float(expr)])
    if isinstance(expr, sp.Sum):
        summand = expr.function
        v = _eval(ctx, summand, rows)
        return np.sum(v, axis=-1)
    key = sp.srepr(expr)
    if key not in _FN_CACHE:
        _FN_CACHE[key] = _lambdify(expr)
    names, fn = _FN_CACHE[key]
    vals = [value(ctx, n)[rows] if QUANTITIES[n].per == "row" else value(ctx, n) for n in names]
    nd = max(v.ndim for v in vals)
    vals = [v.reshape(v.shape + (1,) * (nd - v.ndim)) for v in vals]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.asarray(fn(*vals), dtype=np.float64)


def _scope(claim: Claim, ctx: Context):
    """Boolean mask of in-scope rows and a Counter of reasons for the others."""
    n = ctx.n
    mask = np.ones(n, dtype=bool)
    reasons: Counter = Counter()
    for h in claim.hypotheses:
        live = mask.copy()
        if not live.any():
            break
        ok, why = h.test(ctx)
        ok = np.broadcast_to(np.asarray(ok, dtype=bool), (n,))
        fail = live & ~ok
        if fail.any():
            reasons[why] += int(fail.sum())
        mask &= ok
    return mask, reasons


def _tolerance(claim: Claim, ctx: Context, lhs, rhs, rows):
    """``(rtol, atol, basis)`` of the claim's tolerance model (see :mod:`theory.evaluation`)."""
    model = claim.tolerance
    tau = ctx.tau
    if model == "exact":
        return 0.0, np.zeros_like(rhs), "exact (indicator)"
    if model in ("sq", "norm"):
        S = ctx.S[rows]
        qerr = (ctx.delta[rows] ** 2 + ctx.e_prop[rows] ** 2) @ np.full(ctx.N, ctx.atol_c)
        S, qerr = _expand(S, lhs), _expand(qerr, lhs)
        if model == "sq":
            M = np.maximum(np.abs(lhs), np.abs(rhs))
            return tau, tau * (2 * np.sqrt(M * S) + tau * S) + qerr, "loop τ = 4·eps·(N + κ); weight scale S"
        M2 = np.maximum(lhs, rhs) ** 2
        slack = tau * M2 + tau * (2 * np.sqrt(M2 * S) + tau * S) + qerr
        atol = np.sqrt(np.maximum(rhs, 0) ** 2 + slack) - np.maximum(rhs, 0)
        return 0.0, atol, "loop τ = 4·eps·(N + κ) on the squared norms; weight scale S"
    if model == "inf":
        S = _expand(ctx.S[rows], lhs)
        dmax = _expand(np.max(ctx.delta[rows], axis=1), lhs)
        mult = math.sqrt(2 * math.log(2 * max(ctx.m, ctx.N) / ctx.eta))
        return tau, 2 * tau * np.sqrt(S) + dmax * math.sqrt(ctx.atol_c) * mult, "loop τ; 2τ√S"
    if model == "w":
        return tau, ctx.atol_w[rows], "loop τ; τ·(|z_t| + |w_t| + Σ_j δ_j|B_jt| + δ_t) (+ τ‖ŵ‖₂ for Qronos)"
    if model == "c":
        return C_Q * ctx.N * EPS64, np.full_like(rhs, 4 * ctx.atol_c), "float64 Cholesky: atol_c = 8·N·eps64·‖H_λ‖"
    if model == "c_rel":
        r = float(np.sum(ctx.atol_c / ctx.c)) + C_Q * ctx.N * EPS64
        return r, np.zeros_like(rhs), "float64 Cholesky: Σ_t atol_c/c_t"
    if model == "log":
        return 0.0, np.full_like(rhs, 2 * float(np.sum(ctx.atol_c / ctx.c)) + C_Q * ctx.N * EPS64), \
            "float64 Cholesky and LU: 2·Σ_t atol_c/c_t"
    if model == "B":
        k = ctx.kappa_keep
        return C_Q * ctx.N * EPS64 * k, np.zeros_like(rhs), "float64: 8·N·eps64·cond(H_λ)"
    if model == "rho":
        k = ctx.kappa_keep
        scale = (np.linalg.norm(ctx.X) + np.linalg.norm(ctx.Xq) + math.sqrt(ctx.lam)) * np.linalg.norm(ctx.W[rows], axis=1)
        return 0.0, C_Q * EPS64 * (ctx.N + math.sqrt(k)) * scale, "float64 QR: 8·eps64·(N + √cond)·scale"
    if model == "fd":
        half = value(ctx, "dc_half")
        return C_Q * ctx.N * EPS64, np.broadcast_to(half, rhs.shape).copy(), "concavity bracket of the difference quotients"
    raise ValueError(f"unknown tolerance model {model!r}")


def _expand(a, like):
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape + (1,) * (np.ndim(like) - a.ndim))


def poisson_binomial_sf(k: int, p) -> float:
    """``P(S ≥ k)`` for ``S`` a sum of independent Bernoulli(``p_r``) (exact, by convolution)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    if k <= 0:
        return 1.0
    if k > p.size:
        return 0.0
    pmf = np.zeros(p.size + 1)
    pmf[0] = 1.0
    for i, pi in enumerate(p):
        pmf[1:i + 2] = pmf[1:i + 2] * (1 - pi) + pmf[0:i + 1] * pi
        pmf[0] *= 1 - pi
    return float(min(1.0, np.sum(pmf[k:])))


# ------------------------------------------------------------------------------------------------
# the checker
# ------------------------------------------------------------------------------------------------
def check(claim, run, *, alpha: float = DEFAULT_ALPHA, context: Context | None = None, **params) -> Verdict:
    """Evaluate ``claim`` (a :class:`Claim` or its id) on ``run``.

    ``params``: ``eta`` (failure probability of the high-probability forms and T3, default 0.05),
    ``threshold`` (T2.tail: α, scalar or per row; default: the α at which the bound equals ``eta``),
    ``lams`` (L1: the λ grid), ``explicit_max_N`` (T1.explicit, T1.c_chain: largest N for which the
    explicit bound, one SVD per feature, is computed; default 256). ``alpha``: false-alarm rate of
    the statistical tests. ``context``: a
    :class:`~theory.evaluation.Context` of this run to share cached quantities between claims
    (:func:`check_all` does this); its parameters are then used.
    """
    claim = get_claim(claim) if isinstance(claim, str) else claim
    if context is not None:
        if context.run is not run:
            raise ValueError("context belongs to another run")
        ctx = context
    else:
        ctx = Context(run, **params)
    n = run.n
    base = dict(claim=claim.id, kind=claim.kind, alpha=float(alpha))
    try:
        mask, reasons = _scope(claim, ctx)
        if claim.per == "run":
            # a fact about (X, λ, order): one trial per run, in scope if the run is
            if not mask.all():
                why = next(iter(reasons)) if reasons else "out of scope"
                return Verdict(status="out of scope", in_scope=0, out_of_scope=1, reasons={why: 1}, **base)
            rows = np.array([0])
        else:
            rows = np.flatnonzero(mask)
        if rows.size == 0:
            return Verdict(status="out of scope", in_scope=0, out_of_scope=n, reasons=dict(reasons), **base)
        lhs = _eval(ctx, claim.lhs, rows)
        rhs = _eval(ctx, claim.bound, rows)
        lhs, rhs = (np.array(a, dtype=np.float64) for a in np.broadcast_arrays(lhs, rhs))
        if lhs.shape[0] == 1 and rows.size > 1:
            lhs = np.broadcast_to(lhs, (rows.size,) + lhs.shape[1:]).copy()
            rhs = np.broadcast_to(rhs, (rows.size,) + rhs.shape[1:]).copy()
        rtol, atol, basis = _tolerance(claim, ctx, lhs, rhs, rows)
    except ScopeError as exc:
        k = n if claim.per == "row" else 1
        return Verdict(status="out of scope", in_scope=0, out_of_scope=k, reasons={str(exc): k}, **base)
    atol = np.broadcast_to(np.asarray(atol, dtype=np.float64), lhs.shape)
    n_out = (n - rows.size) if claim.per == "row" else 0
    axes = tuple(range(1, lhs.ndim))

    if claim.kind == "identity":
        bad = np.abs(lhs - rhs) > rtol * np.maximum(np.abs(lhs), np.abs(rhs)) + atol
    else:
        bad = lhs > rhs + rtol * np.abs(rhs) + atol  # probability claims: exceedance beyond the tolerance
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio_el = np.where(rhs != 0, lhs / rhs, np.where(np.abs(lhs) <= atol, 1.0 if claim.kind == "identity" else 0.0, np.inf))
    if claim.kind == "identity":
        dev = np.abs(ratio_el - 1)
        worst_idx = _argmax_rows(dev, axes)
    else:
        worst_idx = _argmax_rows(ratio_el, axes)
    l_row, r_row, q_row = (_take_rows(a, worst_idx) for a in (lhs, rhs, ratio_el))
    row_bad = np.any(bad, axis=axes) if axes else bad
    tol = {"rtol": float(rtol), "atol_max": float(np.max(atol)) if atol.size else 0.0, "model": claim.tolerance,
           "basis": basis, "dtype": run.dtype}
    worst = float(q_row[np.argmax(np.abs(q_row - 1))]) if claim.kind == "identity" else float(np.max(q_row))
    common = dict(in_scope=int(rows.size), out_of_scope=int(n_out), reasons=dict(reasons), lhs=l_row, rhs=r_row,
                  ratio=q_row, rows=rows, worst_ratio=worst, tolerance=tol, **base)

    if claim.kind in ("identity", "deterministic bound", "implication"):
        v = int(np.sum(row_bad))
        return Verdict(status="violated" if v else "consistent", violations=v, **common)

    nosat = ~run.saturated[rows]
    if claim.kind == "probability bound":
        event = row_bad & nosat if claim.joint_no_saturation else row_bad
        p = np.clip(np.broadcast_to(_eval(ctx, claim.probability, rows), (rows.size,)).astype(float), 0.0, 1.0)
        k, T = int(np.sum(event)), int(rows.size)
        if np.all(p == p[0]):
            pv = float(stats.binomtest(k, T, float(p[0]), alternative="greater").pvalue) if k else 1.0
            test = "exact binomial (one-sided, greater)"
        else:
            pv = poisson_binomial_sf(k, p)
            test = "exact Poisson-binomial upper tail (row-wise claimed probabilities)"
        status = "violated" if pv < alpha else "consistent"
        return Verdict(status=status, violations=int(pv < alpha), trials=T, exceedances=k, claimed_p=p, expected=float(np.sum(p)),
                       p_value=pv, test=test, **common)

    # expectation bound
    upper = np.broadcast_to(_eval(ctx, claim.range_upper, rows), (rows.size,)).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        Y = np.where(nosat, lhs.reshape(rows.size), 0.0) / rhs.reshape(rows.size)
        b = upper / rhs.reshape(rows.size)
    Y = np.where(rhs.reshape(rows.size) > 0, Y, 0.0)
    b = np.where(rhs.reshape(rows.size) > 0, b, 0.0)
    tol_row = (rtol * rhs + atol).reshape(rows.size) / np.where(rhs.reshape(rows.size) > 0, rhs.reshape(rows.size), 1.0)
    over = Y > b * (1 + rtol) + tol_row
    s = float(np.sum(Y - 1.0))
    sb2 = float(np.sum(b**2))
    pv = 1.0 if s <= 0 or sb2 == 0 else float(math.exp(-2 * s * s / sb2))
    status = "violated" if (pv < alpha or over.any()) else "consistent"
    msg = f"{int(over.sum())} rows exceed the range of the variable" if over.any() else ""
    return Verdict(status=status, violations=int(over.sum()) + int(pv < alpha), trials=int(rows.size),
                   mean=float(np.mean(Y)), range=float(np.max(b)) if b.size else float("nan"), p_value=pv,
                   test="Hoeffding's inequality (independent, bounded in [0, b_r]), one-sided", message=msg, **common)


def _argmax_rows(a, axes):
    if not axes:
        return None
    flat = a.reshape(a.shape[0], -1)
    flat = np.where(np.isnan(flat), -np.inf, flat)
    return np.argmax(flat, axis=1)


def _take_rows(a, idx):
    if idx is None:
        return np.asarray(a, dtype=np.float64).copy()
    flat = a.reshape(a.shape[0], -1)
    return flat[np.arange(flat.shape[0]), idx].astype(np.float64)


def check_all(run, claims=None, *, alpha: float = DEFAULT_ALPHA, **params) -> dict:
    """``{id: Verdict}`` for every claim (or the given ids/claims) on ``run``; the exact quantities
    are computed once and shared."""
    ids = list(CLAIMS) if claims is None else [c if isinstance(c, str) else c.id for c in claims]
    ctx = Context(run, **params)
    return {i: check(i, run, alpha=alpha, context=ctx) for i in ids}


# ------------------------------------------------------------------------------------------------
# power
# ------------------------------------------------------------------------------------------------
def trials_for_power(p0: float, p1: float, *, alpha: float = DEFAULT_ALPHA, power: float = 0.9,
                     max_trials: int = 10**7) -> int:
    """Smallest number of trials ``T`` with which the exact one-sided binomial test at level ``alpha``
    rejects ``p ≤ p0`` with probability ≥ ``power`` when the true exceedance rate is ``p1 > p0``."""
    if not (0 <= p0 < p1 <= 1):
        raise ValueError(f"need 0 ≤ p0 < p1 ≤ 1, got p0={p0}, p1={p1}")

    def pw(T):
        kc = int(stats.binom.isf(alpha, T, p0)) + 1  # smallest k with P_{p0}(S ≥ k) ≤ alpha
        while kc > 0 and stats.binom.sf(kc - 2, T, p0) <= alpha:
            kc -= 1
        while stats.binom.sf(kc - 1, T, p0) > alpha:
            kc += 1
        return stats.binom.sf(kc - 1, T, p1)

    T = 1
    while pw(T) < power:
        T *= 2
        if T > max_trials:
            raise ValueError(f"more than {max_trials} trials needed")
    lo, hi = T // 2, T
    while lo + 1 < hi:  # power is not monotone in T (discreteness); this finds a T that works
        mid = (lo + hi) // 2
        if pw(mid) >= power:
            hi = mid
        else:
            lo = mid
    return int(hi)


def trials_for_power_expectation(excess: float, range_: float, *, alpha: float = DEFAULT_ALPHA,
                                 power: float = 0.9) -> int:
    """Trials for the Hoeffding test of an expectation claim to detect a true mean exceeding the bound
    by ``excess`` (in the units of the bound, e.g. 0.1 = 10%) with probability ≥ ``power``, for
    variables in ``[0, range_]``: ``T ≥ range²(√log(1/α) + √log(1/(1−power)))²/(2·excess²)``."""
    if excess <= 0 or range_ <= 0:
        raise ValueError("excess and range_ must be positive")
    T = range_**2 * (math.sqrt(math.log(1 / alpha)) + math.sqrt(math.log(1 / (1 - power)))) ** 2 / (2 * excess**2)
    return int(math.ceil(T))
