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

import dataclasses
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import sympy as sp
from scipy import stats

from .claims import CLAIMS, Claim, get_claim
from ._array import as64
from .evaluation import C_Q, EPS64, NU_MAX, QUANTITIES, Context, ScopeError, value
from .stats import binomial_power_detectable
from .verdicts import CONSISTENT, INSUFFICIENT, OUT_OF_SCOPE, VIOLATED

__all__ = ["Verdict", "check", "check_all", "check_hypotheses", "HYPOTHESES", "trials_for_power", "trials_for_power_expectation",
           "poisson_binomial_sf", "DEFAULT_ALPHA"]

#: default false-alarm rate of the statistical tests
DEFAULT_ALPHA = 1e-3


@dataclass(frozen=True, eq=False)
class Verdict:
    """The outcome of one claim on one run.

    ``status``: one of :data:`theory.verdicts.STATUSES` (``"consistent"``, ``"violated"``,
    ``"insufficient evidence"``, ``"out of scope"``); ``power`` (statistical verdicts): the smallest
    effect the test detects with probability ``power["power"]`` at its ``alpha``. ``lhs``, ``rhs``, ``ratio``:
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
    power: dict = field(default_factory=dict)

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
        if self.power:
            d["power"] = {k: f(v) if isinstance(v, float) else v for k, v in self.power.items()}
        if self.kind == "hypothesis" and self.trials:
            d.update(trials=self.trials, p_value=f(float(self.p_value)), alpha=f(float(self.alpha)), test=self.test)
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
    """``(rtol, atol, basis)`` of the claim's tolerance model (see :mod:`theory.evaluation`): the
    measured allowance ``ν`` of the run's working precision, plus float64 evaluation errors."""
    model = claim.tolerance
    rt64 = C_Q * ctx.N * EPS64
    prec = f"measured {ctx.precision} allowance ν"
    if model == "exact":
        return 0.0, np.zeros_like(rhs), "exact (indicator)"
    if model in ("sq", "norm"):
        qerr = (ctx.delta[rows] ** 2 + ctx.e_prop[rows] ** 2) @ np.full(ctx.N, ctx.atol_c)
        slack = ctx.A_sq[rows] + qerr + ctx.eval_E2[rows]
        if ctx.run.X_tilde is not None and ctx.run.algorithm != "rtn":
            slack = slack + ctx.eval_F2[rows]
        slack = _expand(slack, lhs)
        if model == "sq":
            return rt64, slack, f"{prec}: Σ_t (2·max(|e*_t|, δ_t/2)ν_t + ν_t²)c_t; float64 evaluation"
        b = _expand(0.5 * np.sqrt(np.maximum(value(ctx, "sum_d2c")[rows], 0)), lhs)
        atol = np.sqrt(b**2 + slack) - b
        return rt64, atol, f"{prec} on the squared norm: √(b² + Σ_t (2·max(|e*_t|, δ_t/2)ν_t + ν_t²)c_t) − b"
    if model == "inf":
        nu = np.where(np.isfinite(ctx.nu[rows]), ctx.nu[rows], 0.0)
        rel = 2 * np.max(nu / np.where(ctx.delta[rows] > 0, ctx.delta[rows], np.inf), axis=1)
        if ctx.sample_rows is not None:  # the maxima over the samples, from the pass over them
            st = ctx.samples
            ev = (ctx.m + 2) * EPS64 * st.ev_loop[rows]
            if ctx.run.X_tilde is not None:
                ev = ev + (ctx.m + 2) * EPS64 * st.ev_target[rows]
        else:
            d = np.abs(ctx.w0[rows] - ctx.Q[rows])
            ev = (ctx.m + 2) * EPS64 * np.max(np.abs(ctx.Xq) @ d.T, axis=0)
            if ctx.run.X_tilde is not None:
                ev = ev + (ctx.m + 2) * EPS64 * np.max(np.abs(ctx.X) @ np.abs(ctx.W[rows]).T, axis=0)
        return rt64, _expand(rel, lhs) * np.abs(rhs) + _expand(ev, lhs), f"{prec}: relative 2·max_t ν_t/δ_t; float64 evaluation"
    if model == "w":
        return rt64, ctx.atol_w[rows], f"{prec} through the drift: Σ_j ν_j|B_jt|; float64 evaluation of z*"
    if model == "c":
        return rt64, np.full_like(rhs, 4 * ctx.atol_c), "float64 Cholesky: atol_c = 8·N·eps64·‖H_λ‖"
    if model == "c_rel":
        r = float(np.sum(ctx.atol_c / ctx.c)) + rt64
        return r, np.zeros_like(rhs), "float64 Cholesky: Σ_t atol_c/c_t"
    if model == "log":
        # a backward-stable factorization of H_λ is exact for H_λ + ΔH, ‖ΔH‖₂ ≤ C_Q·N·eps64·‖H_λ‖₂, and
        # |log det(H + ΔH) − log det H| ≲ |tr(H⁻¹ΔH)| ≤ ‖ΔH‖₂·tr(H⁻¹): once for Cholesky, once for LU
        t = 2 * ctx.atol_c * ctx.tr_Hinv
        return 0.0, np.full_like(rhs, t + rt64 * max(1.0, abs(float(np.max(np.abs(rhs)))))), \
            "float64 Cholesky and LU: 2·C_Q·N·eps64·‖H_λ‖·tr(H_λ⁻¹)"
    if model == "B":
        k = ctx.kappa_keep
        return rt64 * k, np.zeros_like(rhs), "float64: 8·N·eps64·cond(H_λ)"
    if model == "rho":
        k = ctx.kappa_keep
        scale = (np.linalg.norm(ctx.X) + np.linalg.norm(ctx.Xq) + math.sqrt(ctx.lam)) * np.linalg.norm(ctx.W[rows], axis=1)
        return 0.0, C_Q * EPS64 * (ctx.N + math.sqrt(k)) * scale, "float64 QR: 8·eps64·(N + √cond)·scale"
    if model == "fd":
        half = value(ctx, "dc_half")
        return rt64, np.broadcast_to(half, rhs.shape).copy(), "concavity bracket of the difference quotients"
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
    ``sample_rows`` (a :class:`theory.SampleRows`: the calibration rows, read again in chunks, when
    the run's ``X`` is a stand-in with the same Gram matrices; the ℓ∞ claims' per-sample quantities
    and ``m`` then come from them, :mod:`theory.samples`),
    ``lams`` (L1: the λ grid), ``explicit_max_N`` (T1.explicit, T1.c_chain: largest N for which the
    explicit bound is computed; default 65536; exact up to N = 256, the upper end of a certified
    enclosure above, see :func:`theory.quantities.c_explicit`). ``alpha``: false-alarm rate of
    the statistical tests. ``context``: a
    :class:`~theory.evaluation.Context` of this run to share cached quantities between claims
    (:func:`check_all` does this); its parameters are then used.
    """
    claim = get_claim(claim) if isinstance(claim, str) else claim
    if not isinstance(claim, Claim):
        raise TypeError(f"claim must be a claim id (e.g. 'T1.sum_c') or a theory.Claim, got {type(claim).__name__}")
    _check_run(run)
    _check_alpha(alpha)
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
    if claim.joint_no_saturation:
        # the claim is about the error times the indicator of no saturation (the event, the mean):
        # a saturated row is 0 there, so its ratios are too (its raw error can exceed the bound
        # many times over without bearing on the claim)
        keep = (~run.saturated[rows]).reshape((rows.size,) + (1,) * (lhs.ndim - 1))
        lhs = np.where(keep, lhs, 0.0)
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
           "basis": basis, "dtype": run.dtype, "precision": run.precision}
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
        pbar = float(np.mean(p))
        det = binomial_power_detectable(T, pbar, alpha=alpha, power=POWER)
        need = min(1.0, 2 * pbar + 0.05)
        power = {"detectable": det, "power": POWER, "alpha": float(alpha), "required": need,
                 "measure": "exceedance probability (claimed ≤ mean p)"}
        status = VIOLATED if pv < alpha else (INSUFFICIENT if det > need else CONSISTENT)
        msg = "" if status != INSUFFICIENT else (
            f"{T} trials detect an exceedance probability of {det:.3g} with power {POWER} (need ≤ {need:.3g})")
        return Verdict(status=status, violations=int(pv < alpha), trials=T, exceedances=k, claimed_p=p, expected=float(np.sum(p)),
                       p_value=pv, test=test, power=power, message=msg, **common)

    # expectation bound
    from .stats import expectation_test

    upper = np.broadcast_to(_eval(ctx, claim.range_upper, rows), (rows.size,)).astype(float)
    r1 = rhs.reshape(rows.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        Y = np.where(nosat, lhs.reshape(rows.size), 0.0) / r1
        b = upper / r1
    Y = np.where(r1 > 0, Y, 0.0)
    b = np.where(r1 > 0, b, 0.0)
    tol_row = (rtol * rhs + atol).reshape(rows.size) / np.where(r1 > 0, r1, 1.0)
    over = Y > b * (1 + rtol) + tol_row
    # the allowance ν enters as a relative slack of the bound (Y is compared with 1 + slack)
    slack = float(np.max(tol_row)) if tol_row.size else 0.0
    Wr, Sr = ctx.W[rows], ctx.delta[rows]
    identical = bool(np.all(Wr == Wr[:1]) and np.all(Sr == Sr[:1]) and np.all(r1 == r1[:1]))
    res = expectation_test(np.maximum(Y - slack, 0.0), np.maximum(b, 0.0), identical=identical, alpha=alpha,
                           power=POWER, max_excess=MAX_EXCESS)
    pv = float(res["p_value"])
    power = {"detectable": res.get("detectable"), "power": POWER, "alpha": float(alpha), "required": MAX_EXCESS,
             "measure": "relative excess of the mean over the bound"}
    if over.any() or pv < alpha:
        status = VIOLATED
    else:
        status = res["status"] if res["status"] in (CONSISTENT, INSUFFICIENT) else CONSISTENT
    msg = f"{int(over.sum())} rows exceed the range of the variable" if over.any() else (
        f"{rows.size} trials detect a relative excess of {res.get('detectable', float('nan')):.3g} with power {POWER}"
        if status == INSUFFICIENT else "")
    return Verdict(status=status, violations=int(over.sum()) + int(pv < alpha), trials=int(rows.size),
                   mean=float(np.mean(Y)), range=float(np.max(b)) if b.size else float("nan"), p_value=pv,
                   test=res.get("test", ""), message=msg, power=power, **common)


def _check_run(run):
    from .run import Run

    if not isinstance(run, Run):
        raise TypeError(f"run must be a theory.Run (build one with theory.Run.from_result(result, X) or "
                        f"theory.Run(...)), got {type(run).__name__}")


def _check_alpha(alpha):
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"alpha must be a number in (0, 1) (the false-alarm rate), got {alpha!r}") from None
    if not 0.0 < a < 1.0:
        raise ValueError(f"alpha must lie in (0, 1) (the false-alarm rate of the statistical tests, e.g. 1e-3), got {a}")


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


#: ids of the hypothesis verdicts :func:`check_all` adds to the claims (every run)
HYPOTHESES = {
    "hyp.on_grid": "every q is a level of the run's grid (up to the storage precision of Q)",
    "hyp.nearest": "nearest rounding: every q_t is a nearest level of the grid to the re-evaluated z*_t "
                   "(|e*_t| ≤ δ_t/2 where not clipped), up to the measured allowance ν_t",
    "hyp.record": "the run's own loop record is consistent: e_t = z_t − q_t, q_t is the rounding of the record's "
                  "z_t, z_t agrees with the float64 re-evaluation of Q within what the working precision "
                  "explains, and every clipping recomputed from Q against the grid is recorded",
    "hyp.unbiased": "stochastic rounding is unbiased at every entry: given its row's past, z*_t rounds up with "
                    "probability equal to its fractional position (exact per-column Poisson-binomial tests, a pooled "
                    "martingale test and a direction test over all entries)",
}

#: a statistical verdict that cannot detect this bias of the up-probability (with power 0.9) is
#: "insufficient evidence"
MAX_BIAS = 0.1
#: expectation claims: the largest relative excess the test must be able to detect
MAX_EXCESS = 0.25
#: probability claims: the test must detect an exceedance probability of 2·p + 0.05
POWER = 0.9


def _hyp_verdict(hid, status, n, *, in_scope, reasons=None, violations=0, worst=float("nan"), message="", **kw):
    return Verdict(claim=hid, kind="hypothesis", status=status, in_scope=int(in_scope),
                   out_of_scope=int(n - in_scope), reasons=dict(reasons or {}), worst_ratio=float(worst),
                   violations=int(violations), message=message, **kw)


def _store_eps(run):
    """Machine epsilon of the coarser of Q's storage dtype and the working precision."""
    from .precision import eps_of

    try:
        e_store = eps_of(run.dtype)
    except (TypeError, ValueError):
        e_store = EPS64
    return max(e_store, eps_of(run.precision))


def check_hypotheses(ctx: Context, *, alpha: float = DEFAULT_ALPHA) -> dict:
    """The hypotheses every claim rests on, checked on the run's output (``{id: Verdict}``, ids in
    :data:`HYPOTHESES`): on the grid, nearest rounding (nearest runs), agreement of the loop record
    with the re-evaluation (runs that carry one), unbiased rounding (stochastic runs)."""
    run = ctx.run
    n = ctx.n
    out = {}
    if run.algorithm == "rtn":
        why = {"applies to an OPTQ or Qronos column loop; this run is rtn": n}
        out = {h: _hyp_verdict(h, OUT_OF_SCOPE, n, in_scope=0, reasons=why) for h in HYPOTHESES if h != "hyp.on_grid"}
    try:
        perm = ctx.perm
        S = ctx.delta
        Zp = as64(run.zero)[:, perm]
        kq = ctx.Qp / np.where(S > 0, S, 1.0) + Zp
        ke = np.round(kq)
        tol = 4 * _store_eps(run) * (np.abs(kq) + np.abs(Zp) + 1.0)
        off = np.abs(kq - ke)
        bad = (off > tol) | (ke < run.qmin) | (ke > run.qmax) | ~(S > 0)
        rb = np.any(bad, axis=1)
        out["hyp.on_grid"] = _hyp_verdict(
            "hyp.on_grid", VIOLATED if rb.any() else CONSISTENT, n, in_scope=n, violations=int(rb.sum()),
            worst=float(np.max(off / tol)) if off.size else 0.0,
            message=f"{int(bad.sum())} of {bad.size} entries off the grid" if rb.any() else "")
        ok_prec = ctx.precise
        why_prec = {f"out of scope for precision ({run.precision}: ν/δ > {NU_MAX:g})": int((~ok_prec).sum())} \
            if (~ok_prec).any() else {}
        nu = np.where(np.isfinite(ctx.nu), ctx.nu, np.inf)
        u = ctx.z_star / np.where(S > 0, S, 1.0) + Zp
        # |z* − z| ≤ ν moves the distance to any level by at most ν: twice that for a comparison
        slack = 2 * nu / np.where(S > 0, S, 1.0) + tol
        rows = ok_prec
        if run.algorithm == "rtn":
            return {"hyp.on_grid": out.pop("hyp.on_grid"), **out}
        if run.rounding == "nearest":
            kn = np.clip(np.round(u), run.qmin, run.qmax)
            excess = np.abs(u - ke) - np.abs(u - kn)
            badn = (excess > slack) & rows[:, None]
            rb = np.any(badn, axis=1)
            unc = ~run.clipped
            ratio = np.where(unc & rows[:, None], np.abs(u - ke) / 0.5, 0.0)
            out["hyp.nearest"] = _hyp_verdict(
                "hyp.nearest", VIOLATED if rb.any() else (CONSISTENT if rows.any() else OUT_OF_SCOPE), n,
                in_scope=int(rows.sum()), reasons=why_prec, violations=int(rb.sum()),
                worst=float(np.max(ratio)) if ratio.size else 0.0,
                message=(f"{int(badn.sum())} entries not rounded to a nearest level of z* (worst excess "
                         f"{float(np.max(np.where(badn, excess, 0))):.3g} steps)") if rb.any() else "")
        else:
            out["hyp.nearest"] = _hyp_verdict("hyp.nearest", OUT_OF_SCOPE, n, in_scope=0,
                                              reasons={"stochastic rounding": n})
        if ctx.implied:
            out["hyp.record"] = _hyp_verdict("hyp.record", OUT_OF_SCOPE, n, in_scope=0,
                                             reasons={"no loop record: the errors were solved from Q": n})
        else:
            e_rec = ctx.e
            loc = np.abs(e_rec - (ctx.z - ctx.Qp))
            if run.algorithm == "qronos" and run.variant == "original":
                loc[:, 0] = np.abs(e_rec[:, 0] - (ctx.z[:, 0] - ctx.Qp[:, 0]))
            nref = np.where(np.isfinite(ctx.nu_ref), ctx.nu_ref, np.inf)
            r = ctx.d_loop / nref
            ulp = 4 * _store_eps(run) * (np.abs(ctx.z) + np.abs(ctx.Qp) + S)
            # the loop's own rounding: q_t is a nearest level of the record's z_t (nearest rounding)
            # or a neighbour of it (stochastic)
            ur = ctx.z / np.where(S > 0, S, 1.0) + Zp
            if run.rounding == "nearest":
                own = (np.abs(ur - ke) - np.abs(ur - np.clip(np.round(ur), run.qmin, run.qmax))) > tol
            else:
                own = ~run.clipped & (np.abs(ur - ke) >= 1 + tol)
            # clipping the record does not mention (recomputed from Q against the grid)
            unrec = ctx.clip_star & ~run.clipped
            badr = ((ctx.d_loop > nref) | (loc > ulp) | own | unrec) & rows[:, None]
            rb = np.any(badr, axis=1)
            out["hyp.record"] = _hyp_verdict(
                "hyp.record", VIOLATED if rb.any() else (CONSISTENT if rows.any() else OUT_OF_SCOPE), n,
                in_scope=int(rows.sum()), reasons=why_prec, violations=int(rb.sum()),
                worst=float(np.max(np.where(rows[:, None], r, 0))) if r.size else 0.0,
                message=(f"{int(badr.sum())} entries where the record's z_t differs from the re-evaluation of Q by "
                         "more than the working precision explains, e_t ≠ z_t − q_t, q_t is not the rounding "
                         f"of the record's own z_t, or clipping is not recorded ({int((unrec & rows[:, None]).sum())})")
                if rb.any() else "")
        if run.rounding == "stochastic":
            out["hyp.unbiased"] = _unbiased(ctx, u, ke, slack, rows, why_prec, alpha)
        else:
            out["hyp.unbiased"] = _hyp_verdict("hyp.unbiased", OUT_OF_SCOPE, n, in_scope=0,
                                               reasons={"nearest rounding": n})
    except ScopeError as exc:
        for h in HYPOTHESES:
            out.setdefault(h, _hyp_verdict(h, OUT_OF_SCOPE, n, in_scope=0, reasons={str(exc): n}))
    return out


def _unbiased(ctx, u, ke, slack, rows, why_prec, alpha):
    from .stats import unbiased_rounding_test

    run = ctx.run
    fl = np.floor(u)
    f = u - fl
    valid = (~run.clipped) & rows[:, None] & (fl >= run.qmin) & (fl + 1 <= run.qmax)
    valid &= (f > slack) & (f < 1 - slack)
    # entries whose level is neither neighbour (beyond the allowance) are violations whatever f is
    near = (np.abs(ke - fl) <= 0) | (np.abs(ke - fl - 1) <= 0)
    lo_ok = np.abs(u - ke) < 1 + slack
    wrong = rows[:, None] & (~run.clipped) & ~(near | lo_ok)
    res = unbiased_rounding_test(u, ke, valid, alpha=alpha, power=POWER, max_bias=MAX_BIAS)
    status = res["status"]
    if wrong.any():
        status = VIOLATED
    n = ctx.n
    power = {"detectable": res.get("detectable"), "power": POWER, "measure": "bias of the up-probability",
             "alpha": alpha}
    msg = (f"{res['ups']}/{res['trials']} entries rounded up, {res['expected_ups']:.1f} expected; "
           f"p = {res['p_value']:.3g}; a bias of {res['detectable']:.3g} would be detected with power {POWER}")
    if wrong.any():
        msg = f"{int(wrong.sum())} entries rounded to a level that is not a neighbour of z*; " + msg
    return _hyp_verdict("hyp.unbiased", status, n, in_scope=int(rows.sum()), reasons=why_prec,
                        violations=int(status == VIOLATED), worst=float("nan"), message=msg,
                        trials=int(res["trials"]), p_value=float(res["p_value"]), alpha=float(alpha),
                        test=res.get("test", ""), power=power)


def check_all(run, claims=None, *, alpha: float = DEFAULT_ALPHA, hypotheses: bool | None = None,
              row_batch: int | None = None, **params) -> dict:
    """``{id: Verdict}`` for every claim (or the given ids/claims) on ``run``, followed by the
    hypothesis verdicts of :func:`check_hypotheses` (ids ``hyp.*``; by default when every claim
    is checked, i.e. ``claims`` is None); the exact quantities are computed once and shared.

    ``row_batch``: check the rows of ``W`` in batches of this many (rows are independent; the
    per-run quantities are computed once and shared) and merge the verdicts
    (:func:`merge_row_verdicts`): the memory of the per-row quantities is that of one batch.
    Deterministic runs only (a statistical verdict cannot be assembled from batches)."""
    _check_run(run)
    _check_alpha(alpha)
    ids = list(CLAIMS) if claims is None else [c if isinstance(c, str) else c.id for c in claims]
    hyps = hypotheses or (hypotheses is None and claims is None)
    if row_batch is not None and run.n > int(row_batch):
        if run.rounding != "nearest":
            raise ValueError("row_batch: statistical verdicts (stochastic rounding) cannot be assembled from row "
                             "batches; leave row_batch out")
        return _check_all_in_batches(run, ids, hyps, int(row_batch), alpha, params)
    ctx = Context(run, **params)
    out = {i: check(i, run, alpha=alpha, context=ctx) for i in ids}
    if hyps:
        out.update(check_hypotheses(ctx, alpha=alpha))
    return out


def _check_all_in_batches(run, ids, hyps, batch, alpha, params) -> dict:
    parent = Context(run, **params)
    first = None
    parts: dict = {}
    starts = range(0, run.n, batch)
    for s in starts:
        idx = np.arange(s, min(s + batch, run.n))
        ctx = parent.for_rows(idx, share=first)
        out = {i: check(i, ctx.run, alpha=alpha, context=ctx) for i in ids}
        if hyps:
            out.update(check_hypotheses(ctx, alpha=alpha))
        for k, v in out.items():
            parts.setdefault(k, []).append((s, v))
        if first is None:  # the per-run quantities, shared by the later batches (not the first batch's rows)
            first = ctx.run_part()
        del ctx, out
    return {k: merge_row_verdicts(v) for k, v in parts.items()}


def merge_row_verdicts(parts) -> Verdict:
    """One verdict from the verdicts of row batches ``[(first row, Verdict), …]`` of one run:
    counts and reasons add up, the rows are renumbered, the worst ratio (identities: farthest from
    1) and its tolerance and message come from the batch that holds it, the status is
    :func:`theory.verdicts.combine` of the batches'. A per-run claim is in scope if it is in every
    batch (its value does not depend on the rows). Statistical verdicts are refused."""
    from .verdicts import combine

    vs = [v for _, v in parts]
    for v in vs:
        if v.trials or not math.isnan(float(v.p_value)):
            raise ValueError(f"{v.claim}: a statistical verdict cannot be assembled from row batches")
    if get_claim(vs[0].claim).per == "run" if vs[0].claim in CLAIMS else False:
        return next((v for v in vs if v.in_scope == 0), vs[0])
    reasons: dict = {}
    for v in vs:
        for k, c in v.reasons.items():
            reasons[k] = reasons.get(k, 0) + c
    scored = [v for v in vs if v.in_scope and not math.isnan(float(v.worst_ratio))]
    ident = vs[0].kind == "identity"
    worst = max(scored, key=(lambda v: abs(v.worst_ratio - 1)) if ident else (lambda v: v.worst_ratio), default=None)
    cat = lambda name: np.concatenate([np.asarray(getattr(v, name)) for v in vs]) if vs else np.zeros(0)  # noqa: E731
    return dataclasses.replace(
        vs[0], status=combine(v.status for v in vs), in_scope=sum(v.in_scope for v in vs),
        out_of_scope=sum(v.out_of_scope for v in vs), reasons=reasons, lhs=cat("lhs"), rhs=cat("rhs"),
        ratio=cat("ratio"), rows=np.concatenate([np.asarray(v.rows) + s for s, v in parts]),
        worst_ratio=worst.worst_ratio if worst is not None else float("nan"),
        violations=sum(v.violations for v in vs),
        tolerance=_merge_tolerances([v.tolerance for v in vs if v.in_scope] or [vs[0].tolerance]),
        message=(worst or vs[0]).message)


def _merge_tolerances(ts: list) -> dict:
    """The tolerance record of merged batches: numbers are the largest of the batches' (they are
    maxima over rows), the rest as in the first."""
    out = dict(ts[0])
    for t in ts[1:]:
        for k, v in t.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(out.get(k), (int, float)):
                out[k] = max(out[k], v)
    return out


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
