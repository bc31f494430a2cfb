"""Auditing any quantizer against the claims.

A user's quantizer is a function ``f(W, X, *, grid, lam, rng) -> Q`` (Qronos-like ones also take
``X_tilde=``). It is run over the campaign's data families; each output is turned into a
:class:`theory.Run` and every claim is checked with the one generic checker, together with the
hypotheses the claims rest on (the output lies on the grid; nearest rounding rounds to nearest;
stochastic rounding is unbiased).

From ``Q`` alone: the quantizer *declares* what it is (``kind``: ``optq``, ``qronos-projection``,
``qronos-original``; ``rounding``; ``order``). For an OPTQ-like column loop at ``(λ, order)`` the
rounding errors are determined by ``w − q = Mᵀe`` (``M`` unit upper triangular from the loop's
data, λ and order), so ``e`` and ``z = q + e`` are *implied* by ``Q``: for OPTQ they are the
errors it made; for any other ``Q`` they are what an OPTQ run would have had to make. A
quantizer that is not what it declares fails the hypotheses (``|e_t| ≤ δ/2`` for nearest
rounding, ``Q`` on the grid) or the bounds.

When a deterministic check fails, hypothesis searches for a minimal failing layer (shrinking
shapes and seeds) and saves it as ``.npz`` (``W, X, X_tilde, Q`` and the configuration).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg
from scipy.stats import binomtest

__all__ = ["KINDS", "AuditCase", "AuditReport", "load_quantizer", "implied_run", "hypothesis_checks",
           "audit", "audit_cases", "evaluate_case"]

KINDS = ("optq", "qronos-projection", "qronos-original")

FAMILIES = ("tall", "ill_conditioned", "heavy_tailed", "duplicate", "dead", "wide", "rank_deficient")


def load_quantizer(spec: str):
    """``"package.module:function"`` (or a file path ``path/to/file.py:function``) → the callable."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"quantizer must be given as MODULE:FUNCTION (e.g. mypkg.quant:my_gptq), got {spec!r}")
    mod_name, _, fn_name = spec.rpartition(":")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        s = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ImportError(f"cannot import module {mod_name!r} (is it on PYTHONPATH?): {exc}") from exc
    try:
        fn = getattr(mod, fn_name)
    except AttributeError as exc:
        raise AttributeError(f"module {mod_name!r} has no function {fn_name!r}") from exc
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    return fn


# ------------------------------------------------------------------------------------------------
# implied run
# ------------------------------------------------------------------------------------------------
def _order(order, D, N, rng=None, dead="keep"):
    """The processing order a quantizer declaring ``order`` uses (``"decreasing"``: by diag(DᵀD), with
    GPTQ's value m/2 on dead features when ``dead="zero"``, ties by index)."""
    from algorithms.ordering import resolve_order

    d = np.sum(D * D, axis=0)
    if dead == "zero":
        d = np.where(d == 0, D.shape[0] / 2, d)
    return np.asarray(resolve_order(np, order, d, N, rng=rng))


def _alphabet(grid, W, w0_p, E, Mm, perm):
    """Per-entry step and zero point (original order) of ``grid`` on this run; GPTQ groups fitted
    on the fly are refitted from the implied weights at each group's first column."""
    from algorithms.grids import ColumnGrid, fit_minmax

    n, N = W.shape
    if grid.kind == "gptq" and grid.group_size and not grid.static_groups:
        g = grid.group_size
        S = np.zeros((n, N))
        Z = np.zeros((n, N))
        for t0 in range(0, N, g):
            cur = w0_p[:, t0:t0 + g] - E[:, :t0] @ Mm[:t0, t0:t0 + g]
            s, z = fit_minmax(np, cur, grid)
            S[:, t0:t0 + g] = s[:, None]
            Z[:, t0:t0 + g] = z[:, None]
        inv = np.argsort(perm)
        qmin, qmax = grid.int_range()
        return S[:, inv], Z[:, inv], qmin, qmax
    cg = ColumnGrid(np, grid, n=n, N=N, order=perm, W_fit=W, W_static=W, dtype=np.float64, device=None)
    a = cg.alphabet(np.argsort(perm))
    return np.asarray(a.scale), np.asarray(a.zero), a.qmin, a.qmax


def implied_run(kind: str, W, Q, X, *, grid, lam: float, order="natural", rounding="nearest", X_tilde=None,
                dead: str = "zero"):
    """The :class:`theory.Run` implied by the output ``Q`` of a quantizer that declares ``kind``.

    ``e`` solves ``(w₀ − q)_π = Mᵀe`` (``w₀ = w`` for OPTQ — with the weights of dead features
    zeroed when ``dead="zero"``, GPTQ's convention — and ``ŵ`` for Qronos), ``z = q + e``; for the
    original Qronos variant the first rounded value is ``y₁`` (recomputed here).
    """
    import theory

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    W = np.asarray(W, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Xt = None if X_tilde is None else np.asarray(X_tilde, dtype=np.float64)
    qronos = kind.startswith("qronos")
    D = Xt if (qronos or Xt is not None) else X
    n, N = W.shape
    perm = _order(order, D, N, dead="keep" if qronos else dead)
    Mm = theory.M(D, lam, perm)
    if qronos:
        w0 = theory.w_hat(W, X, Xt, lam)
    else:
        w0 = W.copy()
        if dead == "zero":
            w0[:, np.sum(D * D, axis=0) == 0] = 0.0
    w0_p = w0[:, perm]
    Delta = w0_p - Q[:, perm]
    E = scipy.linalg.solve_triangular(Mm.T, Delta.T, lower=True, unit_diagonal=True, check_finite=False).T
    Z = Q[:, perm] + E
    errors = E.copy()
    y1 = None
    if kind == "qronos-original":
        f = int(perm[0])
        y1 = theory.quantities.y1(W, X, Xt, f)
        Z[:, 0] = y1
        errors[:, 0] = y1 - Q[:, f]
    scale, zero, qmin, qmax = _alphabet(grid, W, w0_p, E, Mm, perm)
    sp_, zp_ = scale[:, perm], zero[:, perm]
    u = Z / sp_ + zp_
    if rounding == "nearest":
        k = np.round(u)
        clipped = (k < qmin) | (k > qmax)
    else:
        clipped = (u < qmin) | (u > qmax)
    return theory.Run(
        X=X, W=W if qronos else w0, Q=Q, lam=float(lam), order=perm, errors=errors, z=Z, scale=scale, zero=zero, qmin=qmin,
        qmax=qmax, clipped=clipped, saturated=clipped.any(axis=1), rounding=rounding,
        algorithm="qronos" if qronos else "optq", X_tilde=None if (not qronos and Xt is None) else Xt,
        variant=("original" if kind == "qronos-original" else "projection") if qronos else None, y1=y1,
        dead=dead if not qronos else "keep", steps_fixed=not (grid.kind == "gptq" and grid.group_size and not grid.static_groups),
        meta={"implied": True, "kind": kind},
    )


# ------------------------------------------------------------------------------------------------
# hypotheses
# ------------------------------------------------------------------------------------------------
def hypothesis_checks(run, *, trials_same_w: bool = False, alpha: float = 1e-6) -> list[dict]:
    """The hypotheses every claim rests on, checked on an implied run.

    * ``on-grid``: every ``q`` is a level of the declared grid;
    * ``nearest``: nearest rounding of the implied ``z`` gives ``q`` (``|e_t| ≤ δ_t/2`` where not clipped);
    * ``unbiased``: stochastic rounding of the first processed coordinate rounds up with probability
      equal to the fractional part (exact two-sided binomial test at ``alpha``; rows must be trials
      of one weight vector).
    """
    out = []
    perm = run.order
    S = run.scale[:, perm]
    Zp = run.zero[:, perm]
    Qp = run.Q[:, perm]
    k = Qp / S + Zp
    on = (np.abs(k - np.round(k)) <= 1e-6 * np.maximum(1.0, np.abs(k))) & (np.round(k) >= run.qmin - 0.5) & (
        np.round(k) <= run.qmax + 0.5)
    out.append(dict(check="on-grid", ok=bool(on.all()), detail=f"{int((~on).sum())} of {on.size} entries off the grid"))
    if run.rounding == "nearest":
        u = run.z / S + Zp
        kz = np.clip(np.round(u), run.qmin, run.qmax)
        tol = 1e-7 * (1.0 + np.abs(u))
        near_tie = np.abs(np.abs(u - np.floor(u)) - 0.5) <= tol
        ok = (np.abs(kz - k) <= 1e-6) | near_tie
        out.append(dict(check="nearest", ok=bool(ok.all()),
                        detail=f"{int((~ok).sum())} entries not rounded to nearest; max |e|/δ = "
                               f"{float(np.max(np.abs(run.errors) / S)):.4g}"))
    else:
        bad = (np.abs(run.errors) >= S * (1 + 1e-7)) & ~run.clipped
        out.append(dict(check="stochastic-step", ok=bool(not bad.any()),
                        detail=f"{int(bad.sum())} unclipped entries with |e| ≥ δ"))
        if trials_same_w and run.n >= 50:
            f = int(perm[0])
            z0 = run.z[:, 0] / S[:, 0] + Zp[:, 0]
            frac = float(z0[0] - math.floor(z0[0]))
            ups = int(np.sum(k[:, 0] > np.floor(z0) + 0.5))
            inside = run.qmin <= math.floor(z0[0]) and math.floor(z0[0]) + 1 <= run.qmax
            if 1e-9 < frac < 1 - 1e-9 and inside:
                p = float(binomtest(ups, run.n, frac).pvalue)
                out.append(dict(check="unbiased", ok=p >= alpha,
                                detail=f"feature {f}: {ups}/{run.n} rounded up, fractional part {frac:.4f}, "
                                       f"two-sided exact binomial p = {p:.3g} (false-alarm rate {alpha:g})"))
    return out


# ------------------------------------------------------------------------------------------------
# the audit plan
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditCase:
    """One layer and setting the quantizer is run on."""

    family: str
    grid: dict
    lam_rel: float
    seed: int
    m: int = 64
    N: int = 24
    n: int = 12
    trials: int = 0  # > 0: stochastic, rows are trials of one weight vector
    mismatch: float = 0.0

    def label(self) -> str:
        g = self.grid["kind"] + (f"-{self.grid.get('bits')}b" if self.grid["kind"] == "gptq" else "")
        if self.grid.get("group_size"):
            g += f"-g{self.grid['group_size']}"
        mm = f", mismatch {self.mismatch}" if self.mismatch else ""
        return f"{self.family}, {g}, λ={self.lam_rel:g}·mean‖X_t‖²{mm}"


def audit_cases(kind: str, rounding: str, *, families=FAMILIES, trials: int = 600, seed: int = 0) -> list[AuditCase]:
    grids = [{"kind": "symmetric", "delta_rel": 0.125, "K": "auto", "K_extra": 40},
             {"kind": "gptq", "bits": 4, "sym": True},
             {"kind": "gptq", "bits": 3, "sym": False, "group_size": 8}]
    mismatches = (0.0,) if kind == "optq" else (0.3, 1.0)
    cases = []
    i = 0
    for fam in families:
        for g in grids:
            for lam_rel in (0.01, 1.0):
                for mm in mismatches:
                    m = 16 if fam == "wide" else 64
                    cases.append(AuditCase(fam, g, lam_rel, seed + i, m=m, trials=trials if rounding == "stochastic" else 0,
                                           mismatch=mm))
                    i += 1
    return cases


def _case_data(case: AuditCase):
    from .campaign import make_grid
    from .data import make_X, mismatch

    rng = np.random.default_rng(case.seed)
    X = make_X(case.family, case.m, case.N, rng, cond=1e6)
    if case.trials:
        w = rng.standard_normal(case.N)
        W = np.repeat(w[None, :], case.trials, axis=0)
    else:
        W = rng.standard_normal((case.n, case.N))
    Xt = mismatch(X, rng, kind="noise", level=case.mismatch) if case.mismatch else None
    grid = make_grid(case.grid, W)
    D = Xt if Xt is not None else X
    lam = case.lam_rel * float(np.mean(np.sum(D * D, axis=0)) or 1.0)
    return W, X, Xt, grid, lam


def _call(quantizer, kind, W, X, Xt, grid, lam, rng):
    if kind.startswith("qronos"):
        Q = quantizer(W, X, X_tilde=Xt, grid=grid, lam=lam, rng=rng)
    else:
        Q = quantizer(W, X, grid=grid, lam=lam, rng=rng)
    Q = getattr(Q, "Q", Q)  # accept a result object too
    try:
        from algorithms._backend import to_numpy

        Q = np.asarray(to_numpy(Q), dtype=np.float64)
    except Exception as exc:  # noqa: BLE001
        raise TypeError(f"the quantizer must return an n × N array, got {type(Q).__name__}") from exc
    if Q.shape != W.shape:
        raise ValueError(f"the quantizer returned shape {Q.shape}, expected {W.shape} (n × N, like W)")
    if not np.all(np.isfinite(Q)):
        raise ValueError("the quantizer returned NaN or Inf")
    return Q


def evaluate_case(quantizer, kind, rounding, order, case: AuditCase, *, alpha: float, eta: float = 0.05):
    """Run the quantizer on one case; ``(failures, verdicts, hypothesis results, data)``."""
    import theory

    W, X, Xt, grid, lam = _case_data(case)
    rng = np.random.default_rng(case.seed + 10_000)
    try:
        Q = _call(quantizer, kind, W, X, Xt, grid, lam, rng)
    except (TypeError, ValueError) as exc:
        if "the quantizer returned" in str(exc) or "must return" in str(exc):
            raise
        return None, {}, [], dict(W=W, X=X, X_tilde=Xt, Q=None, lam=lam, grid=grid, error=f"{type(exc).__name__}: {exc}")
    run = implied_run(kind, W, Q, X, grid=grid, lam=lam, order=order, rounding=rounding, X_tilde=Xt)
    hyps = hypothesis_checks(run, trials_same_w=bool(case.trials), alpha=alpha)
    verdicts = theory.check_all(run, alpha=alpha, eta=eta)
    fails = [("hypothesis " + h["check"], h["detail"]) for h in hyps if not h["ok"]]
    fails += [(cid, repr(v)) for cid, v in verdicts.items() if v.violated]
    return fails, verdicts, hyps, dict(W=W, X=X, X_tilde=Xt, Q=Q, lam=lam, grid=grid)


@dataclass
class AuditReport:
    """The outcome of an audit: per claim and per hypothesis, satisfied / violated / not exercised."""

    quantizer: str
    kind: str
    rounding: str
    order: str
    cases: int = 0
    claims: dict = field(default_factory=dict)  # id -> {"status", "cases_in_scope", "violations", "first"}
    hypotheses: dict = field(default_factory=dict)
    counterexamples: list = field(default_factory=list)
    declined: list = field(default_factory=list)
    seconds: float = 0.0

    @property
    def flagged(self) -> bool:
        return any(c["status"] == "violated" for c in self.claims.values()) or any(
            h["status"] == "violated" for h in self.hypotheses.values())

    def to_dict(self) -> dict:
        return {"quantizer": self.quantizer, "kind": self.kind, "rounding": self.rounding, "order": self.order,
                "cases": self.cases, "flagged": self.flagged, "claims": self.claims, "hypotheses": self.hypotheses,
                "counterexamples": self.counterexamples, "declined": self.declined, "seconds": self.seconds}

    def format(self) -> str:
        lines = [f"audit of {self.quantizer} (declared: {self.kind}, {self.rounding} rounding, {self.order} order): "
                 f"{self.cases} cases, {self.seconds:.1f} s"]
        for name, h in self.hypotheses.items():
            lines.append(f"  hypothesis {name:18s} {h['status']:14s} {h.get('first') or ''}")
        for cid, c in self.claims.items():
            extra = f"  first failure: {c['first']}" if c.get("first") else ""
            lines.append(f"  {cid:28s} {c['status']:14s} in scope in {c['cases_in_scope']} cases{extra}")
        if self.declined:
            lines.append(f"  the quantizer raised on {len(self.declined)} cases (not counted), e.g. {self.declined[0]}")
        for ce in self.counterexamples:
            lines.append(f"  counterexample for {ce['check']}: {ce['path']} ({ce['shape']})")
        lines.append("FLAGGED: the quantizer violates a claim or a hypothesis" if self.flagged else
                     "no claim or hypothesis violated")
        return "\n".join(lines)


def audit(quantizer, *, kind: str = "optq", rounding: str = "nearest", order: str = "natural",
          families=FAMILIES, trials: int = 600, seed: int = 0, alpha: float = 1e-4, eta: float = 0.05,
          stop_at_first: bool = False, shrink: bool = True, out_dir=None, progress: bool = False,
          name: str | None = None) -> AuditReport:
    """Audit ``quantizer`` over the campaign's data families (see the module docstring).

    ``alpha`` is the family-wise false-alarm rate of the statistical checks (split over the cases);
    ``stop_at_first`` stops at the first failing case; ``shrink`` searches a minimal counterexample for
    the first deterministic failure and saves it under ``out_dir`` (default ``ptq-audit/``).
    """
    import theory
    from tqdm.auto import tqdm

    if isinstance(quantizer, str):
        name = name or quantizer
        quantizer = load_quantizer(quantizer)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    cases = audit_cases(kind, rounding, families=families, trials=trials, seed=seed)
    a_case = alpha / max(1, len(cases) * (len(theory.CLAIMS) + 1))
    rep = AuditReport(quantizer=name or getattr(quantizer, "__name__", "quantizer"), kind=kind, rounding=rounding,
                      order=order)
    for cid in theory.CLAIMS:
        rep.claims[cid] = {"status": "not exercised", "cases_in_scope": 0, "violations": 0, "first": None}
    t0 = time.time()
    first_det = None
    for case in tqdm(cases, desc="audit", unit="case", disable=not progress):
        fails, verdicts, hyps, data = evaluate_case(quantizer, kind, rounding, order, case, alpha=a_case, eta=eta)
        if fails is None:  # the quantizer declined this case (raised ValueError/TypeError)
            rep.declined.append(f"{case.label()}: {data['error']}")
            continue
        rep.cases += 1
        for h in hyps:
            s = rep.hypotheses.setdefault(h["check"], {"status": "satisfied", "cases": 0, "violations": 0, "first": None})
            s["cases"] += 1
            if not h["ok"]:
                s["violations"] += 1
                s["status"] = "violated"
                s["first"] = s["first"] or f"{case.label()}: {h['detail']}"
                if first_det is None and h["check"] in ("on-grid", "nearest"):
                    first_det = ("hypothesis " + h["check"], case)
        for cid, v in verdicts.items():
            c = rep.claims.setdefault(cid, {"status": "not exercised", "cases_in_scope": 0, "violations": 0, "first": None})
            if v.in_scope:
                c["cases_in_scope"] += 1
                if c["status"] == "not exercised":
                    c["status"] = "satisfied"
            if v.violated:
                c["violations"] += 1
                c["status"] = "violated"
                c["first"] = c["first"] or f"{case.label()}: {v!r}"
                if first_det is None and v.kind in ("identity", "deterministic bound", "implication"):
                    first_det = (cid, case)
        if stop_at_first and fails:
            break
    if shrink and first_det is not None:
        ce = shrink_counterexample(quantizer, kind, rounding, order, first_det[0], first_det[1], alpha=a_case,
                                   eta=eta, out_dir=out_dir)
        if ce:
            rep.counterexamples.append(ce)
    rep.seconds = time.time() - t0
    return rep


# ------------------------------------------------------------------------------------------------
# minimal counterexamples
# ------------------------------------------------------------------------------------------------
def _fails_check(check, quantizer, kind, rounding, order, case, alpha, eta):
    try:
        fails, _, _, data = evaluate_case(quantizer, kind, rounding, order, case, alpha=alpha, eta=eta)
    except (ValueError, np.linalg.LinAlgError):
        return False, None
    if fails is None:
        return False, None
    return any(f[0] == check for f in fails), data


def shrink_counterexample(quantizer, kind, rounding, order, check, case: AuditCase, *, alpha, eta, out_dir=None,
                          max_examples: int = 150):
    """Shrink the failing case (smaller N, m, n and other seeds) with hypothesis; save the smallest
    failing layer as ``.npz`` and return its description (None when nothing smaller fails)."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample

    def strat():
        return st.builds(
            lambda N, m, n, seed: AuditCase(case.family, case.grid, case.lam_rel, seed, m=m, N=N, n=n,
                                            trials=0, mismatch=case.mismatch),
            N=st.integers(2, case.N), m=st.integers(2, case.m), n=st.integers(1, case.n), seed=st.integers(0, 10**6),
        )

    best = case
    try:
        best = find(strat(), lambda c: _fails_check(check, quantizer, kind, rounding, order, c, alpha, eta)[0],
                    settings=settings(max_examples=max_examples, deadline=None, database=None,
                                      suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        pass
    ok, data = _fails_check(check, quantizer, kind, rounding, order, best, alpha, eta)
    if not ok:
        return None
    out = Path(out_dir or "ptq-audit")
    out.mkdir(parents=True, exist_ok=True)
    fname = out / f"counterexample-{check.replace(' ', '_').replace('.', '_')}.npz"
    cfg = {"check": check, "kind": kind, "rounding": rounding, "order": order, "lam": data["lam"],
           "grid": data["grid"].to_dict(), "case": best.__dict__}
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    np.savez(fname, config=json.dumps(cfg, default=str), **arrays)
    return {"check": check, "path": str(fname), "shape": f"W {data['W'].shape}, X {data['X'].shape}",
            "case": best.label()}
