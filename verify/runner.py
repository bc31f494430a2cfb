"""Running a campaign into the store, resumably, and summarising what the store holds."""

from __future__ import annotations

import concurrent.futures as cf
import json
from pathlib import Path

from tqdm.auto import tqdm

from ._atomic import atomic_path
from .campaign import Campaign, cell_seed, machine_meta, run_cell
from .executor import SerialExecutor, executor
from .store import Store

__all__ = ["run_campaign", "summarize", "format_summary", "write_json"]


def run_campaign(campaign: Campaign, store: Store, *, executor_kind: str = "process", workers: int | None = None,
                 scheduler: str | None = None, progress: bool = True, limit: int | None = None) -> dict:
    """Run every cell of ``campaign`` not yet in ``store``; each finished cell is committed at once.

    ``limit``: run at most this many pending cells (then stop; a later call continues).
    Returns :func:`summarize` of the campaign.
    """
    store.open_campaign(campaign.id, campaign.name, campaign.to_dict(), machine_meta())
    done = store.done_keys(campaign.id)
    pending = [c for c in campaign.cells if c.key not in done]
    if limit is not None:
        pending = pending[: max(0, int(limit))]
    alpha, eta = campaign.alpha_per_test, campaign.eta
    bar = tqdm(total=len(campaign.cells), initial=len(campaign.cells) - len(
        [c for c in campaign.cells if c.key not in done]), desc=f"{campaign.name}", unit="cell",
        disable=not progress, dynamic_ncols=True)

    def args(c):
        return (c.key, c.study, c.config, cell_seed(campaign.seed, c.seed_key))

    try:
        with executor(executor_kind, workers=workers, scheduler=scheduler) as ex:
            if isinstance(ex, SerialExecutor):
                for c in pending:
                    rec = run_cell(*args(c), alpha=alpha, eta=eta)
                    store.put_cell(campaign.id, rec)
                    bar.update(1)
            else:
                futs = [ex.submit(run_cell, *args(c), alpha=alpha, eta=eta) for c in pending]
                for f in cf.as_completed(futs):
                    store.put_cell(campaign.id, f.result())
                    bar.update(1)
    finally:
        bar.close()
    return summarize(store, campaign)


def summarize(store: Store, campaign: Campaign | str) -> dict:
    """Per claim and per checked hypothesis (ids ``hyp.*``, listed after the claims): cells and rows in
    scope, out of scope (by reason), violations and the cells they occurred in, worst ratio, smallest
    p-value, trials and exceedances, verdicts with insufficient evidence (``insufficient``, and the
    weakest smallest-detectable effect ``detectable``) and ``status`` in the vocabulary of
    :mod:`theory.verdicts` (``consistent`` / ``violated`` / ``insufficient evidence`` / ``not exercised``).

    The evidence is folded by :func:`theory.verdicts.aggregate` (its ``runs``, ``rows`` and
    ``violated_in`` are stored as ``cells_in_scope``, ``rows_in_scope`` and ``violated_cells``).
    ``violated`` lists every violated id (claims and hypotheses), ``not_exercised`` the claims never in
    scope, ``insufficient`` the ids with a verdict that lacked the declared power."""
    cid = campaign.id if isinstance(campaign, Campaign) else campaign
    import theory
    from theory import verdicts as V

    cells = store.cells(cid, measurements=False)
    agg: dict = {}
    errors = []
    for c in cells:
        if c["status"] != "done":
            errors.append({"key": c["key"], "error": c["error"]})
            continue
        V.aggregate((_with_power(v) for v in c["verdicts"]), source=c["key"], into=agg)
    order = list(theory.CLAIMS) + [k for k in agg if k not in theory.CLAIMS and not _is_hypothesis(k, agg[k])]
    order += [k for k in agg if k not in order]
    claims = {}
    for k in order:
        reg = theory.CLAIMS.get(k)
        a = agg.get(k) or {}
        kind = reg.kind if reg is not None else a.get("kind", "")
        status = a.get("status", V.NOT_EXERCISED)
        if not a.get("runs") and status in (V.OUT_OF_SCOPE, V.NOT_EXERCISED):
            status = V.NOT_EXERCISED  # an aggregate with nothing in scope
        claims[k] = {
            "claim": k, "kind": kind, "title": reg.title if reg is not None else a.get("title", ""),
            "cells_in_scope": int(a.get("runs", 0)), "rows_in_scope": int(a.get("rows", 0)),
            "out_of_scope": int(a.get("out_of_scope", 0)), "reasons": dict(a.get("reasons", {})),
            "violations": int(a.get("violations", 0)), "violated_cells": list(a.get("violated_in", [])),
            "worst_ratio": a.get("worst_ratio"), "min_p_value": a.get("min_p_value"),
            "trials": int(a.get("trials", 0)), "exceedances": int(a.get("exceedances", 0)),
            "insufficient": int(a.get("insufficient", 0)), "detectable": a.get("detectable"),
            "status": status,
        }
    camp = next((c for c in store.campaigns() if c["id"] == cid), None)
    return {
        "campaign": cid,
        "name": camp["name"] if camp else None,
        "meta": camp["meta"] if camp else None,
        "alpha": (camp["config"].get("alpha") if camp else None),
        "eta": (camp["config"].get("eta") if camp else None),
        "cells": len(cells),
        "cells_expected": len(camp["config"]["cells"]) if camp else None,
        "errors": errors,
        "claims": claims,
        "violated": sorted(k for k, s in claims.items() if s["status"] == V.VIOLATED),
        "not_exercised": sorted(k for k, s in claims.items()
                                if s["status"] == V.NOT_EXERCISED and not _is_hypothesis(k, s)),
        "insufficient": sorted(k for k, s in claims.items() if s["status"] == V.INSUFFICIENT),
        "seconds": sum(float(c["seconds"] or 0) for c in cells),
    }


def _with_power(v: dict) -> dict:
    """A stored verdict with its ``power`` (kept in the store's ``detail``) where aggregate reads it."""
    if v.get("power") is None and isinstance(v.get("detail"), dict) and v["detail"].get("power") is not None:
        return {**v, "power": v["detail"]["power"]}
    return v


def _is_hypothesis(cid: str, s: dict | None = None) -> bool:
    """A checked hypothesis of a run (id ``hyp.*``, kind ``hypothesis``), not a claim."""
    return cid.startswith("hyp.") or (s or {}).get("kind") == "hypothesis"


def format_summary(summary: dict) -> str:
    """The table printed at the end of a campaign: the claims, then the checked hypotheses."""
    lines = [f"campaign {summary['campaign']}: {summary['cells']}/{summary['cells_expected']} cells"
             f" ({summary['seconds']:.1f} s of cell time)"]

    def header(first):
        return (f"{first:24s} {'kind':19s} {'status':21s} {'cells':>5s} {'rows':>7s} {'out':>6s} {'worst ratio':>12s}"
                f" {'min p':>9s}")

    items = list(summary["claims"].items())
    claims = [(k, s) for k, s in items if not _is_hypothesis(k, s)]
    hyps = [(k, s) for k, s in items if _is_hypothesis(k, s)]
    for title, group in (("claim", claims), ("hypothesis", hyps)):
        if not group:
            continue
        h = header(title)
        lines += [h, "-" * len(h)]
        for k, s in group:
            wr = "" if s.get("worst_ratio") is None else f"{s['worst_ratio']:.4g}"
            mp = "" if s.get("min_p_value") is None else f"{s['min_p_value']:.2g}"
            lines.append(f"{k:24s} {str(s.get('kind', ''))[:19]:19s} {s['status']:21s} {s['cells_in_scope']:5d} "
                         f"{s['rows_in_scope']:7d} {s['out_of_scope']:6d} {wr:>12s} {mp:>9s}")
    if summary["errors"]:
        lines.append(f"{len(summary['errors'])} cells failed:")
        lines += [f"  {e['key']}: {e['error']}" for e in summary["errors"][:10]]
    if summary["violated"]:
        lines.append("VIOLATED: " + ", ".join(summary["violated"]))
    else:
        lines.append("no claim violated" + (", no hypothesis violated" if hyps else ""))
    if summary.get("insufficient"):
        lines.append("insufficient evidence (a statistical check lacked the declared power): "
                     + ", ".join(summary["insufficient"]))
    if summary["not_exercised"]:
        lines.append("not exercised (never in scope): " + ", ".join(summary["not_exercised"]))
    return "\n".join(lines)


def write_json(path, payload) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    return path
