"""Checking every applicable claim on one layer: the library behind ``ptq-bounds check-layer``.

:func:`check_layer` quantizes ``W`` with OPTQ (and, given ``X_tilde``, with OPTQ on ``X̃`` and
Qronos in both variants) and checks every claim and hypothesis on each run; :func:`check_given`
checks a quantized weight made elsewhere (a :class:`verify.packed.GivenQ`) as the output of an
OPTQ- or Qronos-like loop, with the errors it implies. Both return a :class:`LayerReport`: its
``status`` and ``exit_code`` follow :mod:`theory.verdicts`; ``format()`` is the command's text and
``to_dict()`` its JSON. Bad input raises ``ValueError`` naming the argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .threads import rebalance

__all__ = ["RunCheck", "LayerReport", "check_layer", "check_given"]


@dataclass
class RunCheck:
    """One checked run: its label, λ, saturated rows, ``‖X(W − Q)ᵀ‖_F`` (for the OPTQ run on X)
    and the verdicts of :func:`theory.check_all` (claim id → ``Verdict``)."""

    label: str
    lam: float
    saturated_rows: int
    rows: int
    error_fro: float | None
    verdicts: dict

    @classmethod
    def of(cls, label: str, result, run, X, verdicts: dict) -> "RunCheck":
        """The record of one run: ``result`` (an algorithm's), its ``theory.Run`` and the data ``X``
        (or its square root) ``‖X(W − Q)ᵀ‖_F`` is measured on, for the OPTQ run on X."""
        err = None
        if label == "optq":
            D = np.asarray(run.W, dtype=np.float64) - np.asarray(result.Q, dtype=np.float64)
            err = float(np.linalg.norm(np.asarray(X, dtype=np.float64) @ D.T))
        sat = np.asarray(result.saturated)
        return cls(label, float(result.lam), int(np.sum(sat)), int(sat.size), err, verdicts)

    def rows_of_verdicts(self) -> list[dict]:
        return [v.to_dict() for v in self.verdicts.values()]


@dataclass
class LayerReport:
    """What :func:`check_layer` / :func:`check_given` found: the runs, the setting, and for a given
    ``Q`` what was read (``q``) and the lines that say how it is judged (``notes``)."""

    shape: dict
    grid: dict
    order: str
    rounding: str
    trials: int
    runs: list = field(default_factory=list)
    q: dict | None = None
    notes: list = field(default_factory=list)

    @property
    def statuses(self) -> list[str]:
        return [d["status"] for r in self.runs for d in r.rows_of_verdicts()]

    @property
    def status(self) -> str:
        from theory.verdicts import CONSISTENT, NOT_EXERCISED, OUT_OF_SCOPE, combine

        st = self.statuses
        return NOT_EXERCISED if CONSISTENT not in st and combine(st) == OUT_OF_SCOPE else combine(st)

    @property
    def exit_code(self) -> int:
        from theory.verdicts import exit_code

        return exit_code(self.statuses)

    def verdict_line(self) -> str:
        """The closing line of the text report."""
        from theory.verdicts import CONSISTENT, EXIT, INSUFFICIENT

        st = self.statuses
        if self.exit_code == EXIT["violated"]:
            return "VIOLATED: a claim failed on this layer"
        if INSUFFICIENT in st:
            return ("no claim violated, but insufficient evidence: a statistical check lacked the power it needs "
                    "(raise --trials)")
        if CONSISTENT not in st:
            return "no claim violated, but none was checked: no claim was in scope on this layer (see the reasons)"
        return "no claim violated"

    def format(self) -> str:
        lines = list(self.notes)
        for r in self.runs:
            lines.append(f"\n== {r.label}: λ = {r.lam:.4g}, {r.saturated_rows}/{r.rows} rows saturated")
            lines.append(f"{'claim':24s} {'status':21s} {'in':>6s} {'out':>6s} {'worst ratio':>12s}  reason / p-value")
            for d in r.rows_of_verdicts():
                wr = "" if d.get("worst_ratio") is None else f"{d['worst_ratio']:.4g}"
                extra = (f"p = {d['p_value']:.3g}" if d.get("p_value") is not None else
                         "; ".join(f"{k} ({n})" for k, n in list(d["reasons"].items())[:1]))
                lines.append(f"{d['claim']:24s} {d['status']:21s} {d['in_scope']:6d} {d['out_of_scope']:6d} "
                             f"{wr:>12s}  {extra}")
        lines.append("\n" + self.verdict_line())
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = {"shape": self.shape, "grid": self.grid, "order": self.order, "rounding": self.rounding,
             "trials": self.trials, "status": self.status, "exit_code": self.exit_code,
             "runs": [{"run": r.label, "lam": float(r.lam), "saturated_rows": r.saturated_rows,
                       "error_fro": r.error_fro, "verdicts": r.rows_of_verdicts()} for r in self.runs]}
        if self.q is not None:
            d["q"] = self.q
        return d


def _shape(W, X) -> dict:
    return {"n": int(W.shape[0]), "N": int(W.shape[1]), "m": int(X.shape[0])}


def _check_shapes(W, X, Xt) -> None:
    if W.ndim != 2 or X.ndim != 2:
        raise ValueError(f"W and X must be 2-D (n × N and m × N), got {W.shape} and {X.shape}")
    if X.shape[1] != W.shape[1]:
        raise ValueError(f"shape mismatch: W is {W.shape} (n × N) but X is {X.shape}; X must be m × N "
                         f"(rows are samples){' — it looks transposed' if X.shape[0] == W.shape[1] else ''}")
    if Xt is not None and Xt.shape != X.shape:
        raise ValueError(f"shape mismatch: X_tilde is {Xt.shape}, X is {X.shape}")


def _checked(theory, run, alpha, eta) -> dict:
    """:func:`theory.check_all`; its own failure is an internal error, never taken for bad input."""
    try:
        return theory.check_all(run, alpha=alpha, eta=eta)
    except (ValueError, TypeError) as exc:
        raise RuntimeError(f"internal error of the checker: {type(exc).__name__}: {exc}") from exc


def check_layer(W, X, X_tilde=None, *, grid, lam: float | None = None, percdamp: float | None = None,
                order="natural", rounding: str = "nearest", trials: int = 1, seed: int = 0, alpha: float = 1e-4,
                eta: float = 0.05, progress: bool = False) -> LayerReport:
    """Quantize the layer with this package's algorithms and check every claim on each run.

    ``grid``: an :class:`algorithms.Grid`; damping ``lam`` (absolute) or ``percdamp`` (GPTQ's relative
    one, default 0.01); stochastic rounding repeats the layer ``trials`` times (rows are trials),
    seeded by ``seed``. Raises ``ValueError`` for bad input (shapes, grid, damping)."""
    import algorithms as A
    import theory
    from tqdm.auto import tqdm

    W, X = np.asarray(W), np.asarray(X)
    Xt = None if X_tilde is None else np.asarray(X_tilde)
    _check_shapes(W, X, Xt)
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ValueError(f"trials must be an integer ≥ 1, got {trials!r}")
    damp = {"lam": lam} if lam is not None else {"percdamp": 0.01 if percdamp is None else percdamp}
    Wr = np.tile(W, (trials, 1)) if rounding == "stochastic" and trials > 1 else W
    kw = dict(grid=grid, order=order, rounding=rounding, rng=np.random.default_rng(seed), **damp)
    plan = [("optq", lambda: A.optq(Wr, X, **kw), dict())]
    if Xt is not None:
        plan.append(("optq on X_tilde", lambda: A.optq(Wr, Xt, **kw), dict(X_tilde=Xt)))
        for v in ("projection", "original"):
            plan.append((f"qronos-{v}", lambda v=v: A.qronos(Wr, X, Xt, variant=v, **kw), dict(X_tilde=Xt, W=Wr)))
    report = LayerReport(shape=_shape(W, X), grid=grid.to_dict(), order=order if isinstance(order, str) else "custom",
                         rounding=rounding, trials=int(trials))
    with tqdm(total=len(plan), desc="check-layer", unit="run", disable=not progress, dynamic_ncols=True,
              leave=False) as bar:
        for label, quantize, extra in plan:
            bar.set_postfix_str(label)
            rebalance()  # under a CPU share (check-layer): this process's current share of the CPUs
            r = quantize()
            run = theory.Run.from_result(r, X, **extra)
            bar.set_postfix_str(f"{label}: checking the claims")
            report.runs.append(RunCheck.of(label, r, run, X, _checked(theory, run, alpha, eta)))
            bar.update()
    return report


def check_given(given, W, X, X_tilde=None, *, kind: str = "optq", lam: float | None = None,
                percdamp: float | None = None, order="natural", rounding: str = "nearest",
                precision: str | None = None, static_groups: bool = False, alpha: float = 1e-4, eta: float = 0.05,
                source: str = "") -> LayerReport:
    """Check a quantized weight made elsewhere (``given``, a :class:`verify.packed.GivenQ`) as the
    output of ``kind`` (``optq``, ``qronos-projection``, ``qronos-original``) at the damping (``lam``,
    or ``percdamp`` of GPTQ's mean diagonal, default 0.01) and ``order``, in the working precision
    ``precision`` (default: what the reader inferred). ``source``: the file spec, for the notes."""
    import theory

    from algorithms.cholesky import gptq_lambda

    from .packed import implied_run_given

    if kind.startswith("qronos") and X_tilde is None:
        raise ValueError(f"--q-kind {kind} needs --x-tilde (Qronos quantizes against the mismatched inputs)")
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Xt = None if X_tilde is None else np.asarray(X_tilde, dtype=np.float64)
    _check_shapes(W, X, Xt)
    D = Xt if Xt is not None else X
    if lam is None:
        d = np.sum(D * D, axis=0)
        if not kind.startswith("qronos"):
            d = np.where(d == 0, D.shape[0] / 2, d)  # GPTQ's dead-feature diagonal
        lam = gptq_lambda(d, D.shape[0], 0.01 if percdamp is None else percdamp)
    lam = float(lam)
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"the damping must be positive: λ = {lam}; pass --lam or --percdamp")
    prec = precision or given.precision
    why = "--precision" if precision else given.precision_reason
    given.info.update(kind=kind, precision=prec, precision_from=why, lam=lam, order=order)
    notes = [f"Q from {source} ({given.format}{', ' + given.stored_dtype}): {given.info.get('grid')}"]
    if given.format == "gptq":
        notes.append(f"  zero points: {given.info['zero_convention']} ({given.info['zero_convention_from']})")
    if given.g_idx is not None and np.any(np.diff(given.g_idx) < 0) and order == "natural":
        notes.append("  note: g_idx is not sorted (the file was made with act_order); pass --order decreasing")
    notes.append(f"  checked as the output of {kind} at λ = {lam:.4g}, order {order}, working precision {prec} "
                 f"(from {why})")
    run = implied_run_given(kind, W, given, X, lam=lam, order=order, rounding=rounding, X_tilde=Xt,
                            precision=prec, static_groups=static_groups)
    verdicts = _checked(theory, run, alpha, eta)
    sat = np.asarray(run.saturated)
    report = LayerReport(shape=_shape(W, X), grid=given.grid.to_dict(), order=order, rounding=rounding, trials=1,
                         q=given.info, notes=notes)
    report.runs.append(RunCheck(f"given Q as {kind}", lam, int(np.sum(sat)), int(sat.size), None, verdicts))
    return report
