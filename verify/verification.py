"""A verification run, decided: run a campaign, re-check its float32 doubts in float64, and turn
the summary into an exit code with the reasons (the library behind ``ptq-bounds verify``).

:func:`verify_campaign` runs the campaign's missing cells into the store, summarises, and re-runs in
float64 the worst float32 cells whose deterministic bounds show a ratio above 1 within the float32
tolerance (``recheck``) and those with rows out of scope for precision (``recheck_precision``).
:func:`decide` is the exit policy of :mod:`theory.verdicts` applied to a campaign: a claim violated
in a cell or in a float64 re-run → 1; cells or re-runs that failed → 4; nothing checked, no claim in
scope, insufficient evidence, or (for campaigns that promise full coverage) a claim never in scope →
3; else 0.
"""

from __future__ import annotations

from .campaigns import FULL_COVERAGE
from .runner import format_summary, run_campaign

__all__ = ["verify_campaign", "decide"]


def verify_campaign(campaign, store, *, executor_kind: str = "process", workers: int | None = None,
                    scheduler=None, progress: bool = True, limit: int | None = None, recheck: int = 8,
                    recheck_precision: int = 8, echo=None) -> dict:
    """Run ``campaign`` into ``store`` and re-check in float64; returns the summary with
    ``float64_recheck`` and ``float64_precision_recheck``. ``echo`` (e.g. ``print``) receives the
    summary table as soon as the cells are done, then one line per re-check."""
    summary = run_campaign(campaign, store, executor_kind=executor_kind, workers=workers, scheduler=scheduler,
                           progress=progress, limit=limit)
    say = echo or (lambda s: None)
    say(format_summary(summary))
    if summary["cells"]:
        from .recheck import float64_precision_recheck, float64_recheck, precision_recheck_line, recheck_line

        summary["float64_recheck"] = float64_recheck(store, campaign, limit=recheck, progress=progress)
        say(recheck_line(summary["float64_recheck"]))
        summary["float64_precision_recheck"] = float64_precision_recheck(store, campaign, limit=recheck_precision,
                                                                         progress=progress)
        say(precision_recheck_line(summary["float64_precision_recheck"]))
    return summary


def decide(summary: dict, campaign_name: str) -> tuple[int, list[str]]:
    """``(exit code, reasons)`` of a finished run: the reasons are one line each, empty for 0."""
    from theory.verdicts import CONSISTENT, EXIT, INSUFFICIENT, VIOLATED, exit_code

    rechecks = [r for key in ("float64_recheck", "float64_precision_recheck")
                for r in (summary.get(key) or {}).get("rechecked", [])]
    bad64 = sorted({k for r in rechecks for k, d in r.get("claims", {}).items() if d.get("float64_status") == VIOLATED})
    failed64 = [r for r in rechecks if "error" in r]
    statuses = [s["status"] for s in summary["claims"].values()]
    statuses += [VIOLATED] * bool(bad64) + [INSUFFICIENT] * bool(summary.get("insufficient"))
    complete = summary["cells"] == summary["cells_expected"]
    unexercised = sorted(summary["not_exercised"]) if complete and campaign_name in FULL_COVERAGE else []
    errors = len(summary["errors"]) + len(failed64)
    code = exit_code(statuses, errors=errors, required_checked=not unexercised)
    lines = []
    if bad64:
        lines.append("violated in the float64 re-check: " + ", ".join(bad64))
    if code == EXIT["violated"]:
        lines.append("violated: " + ", ".join(sorted(set(summary["violated"]) | set(bad64))))
    elif code == EXIT["internal error"]:
        lines.append(f"internal error: {len(summary['errors'])} cells and {len(failed64)} float64 re-runs failed to "
                     "run (see the table above); re-running continues with the cells that failed")
    elif code == EXIT["not exercised"]:
        why = []
        if not summary["cells"]:
            why.append("no cell ran (nothing checked)")
        elif CONSISTENT not in statuses:
            why.append("no claim was in scope on any cell")
        if summary.get("insufficient"):
            why.append("insufficient evidence (a statistical check lacked the declared power): "
                       + ", ".join(summary["insufficient"]))
        if unexercised:
            why.append("claims never in scope: " + ", ".join(unexercised))
        lines.append("not exercised: " + "; ".join(why))
    return code, lines
