"""Running a campaign into the store, resumably, and summarising what the store holds."""

from __future__ import annotations

import concurrent.futures as cf
import json
import math
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
    """Per claim: cells and rows in scope, out of scope (by reason), violations, worst ratio,
    smallest p-value, status (``verified`` / ``violated`` / ``not exercised``)."""
    cid = campaign.id if isinstance(campaign, Campaign) else campaign
    import theory

    cells = store.cells(cid, measurements=False)
    claims = {k: dict(claim=k, kind=c.kind, title=c.title, cells_in_scope=0, rows_in_scope=0, out_of_scope=0,
                      reasons={}, violations=0, violated_cells=[], worst_ratio=None, min_p_value=None, trials=0,
                      exceedances=0) for k, c in theory.CLAIMS.items()}
    errors = []
    for c in cells:
        if c["status"] != "done":
            errors.append({"key": c["key"], "error": c["error"]})
            continue
        for v in c["verdicts"]:
            s = claims.setdefault(v["claim"], dict(claim=v["claim"], kind=v["kind"], title="", cells_in_scope=0,
                                                   rows_in_scope=0, out_of_scope=0, reasons={}, violations=0,
                                                   violated_cells=[], worst_ratio=None, min_p_value=None,
                                                   trials=0, exceedances=0))
            s["out_of_scope"] += int(v["out_of_scope"])
            for r, k in (v.get("reasons") or {}).items():
                s["reasons"][r] = s["reasons"].get(r, 0) + int(k)
            if v["in_scope"]:
                s["cells_in_scope"] += 1
                s["rows_in_scope"] += int(v["in_scope"])
                wr = v.get("worst_ratio")
                if wr is not None and not (isinstance(wr, float) and math.isnan(wr)):
                    if s["worst_ratio"] is None or _worse(v["kind"], wr, s["worst_ratio"]):
                        s["worst_ratio"] = wr
                p = v.get("p_value")
                if p is not None:
                    s["min_p_value"] = p if s["min_p_value"] is None else min(s["min_p_value"], p)
                s["trials"] += int(v.get("trials") or 0)
                s["exceedances"] += int(v.get("exceedances") or 0)
            if v["violated"]:
                s["violations"] += 1
                s["violated_cells"].append(c["key"])
    for s in claims.values():
        s["status"] = "violated" if s["violations"] else ("verified" if s["cells_in_scope"] else "not exercised")
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
        "violated": sorted(k for k, s in claims.items() if s["status"] == "violated"),
        "not_exercised": sorted(k for k, s in claims.items() if s["status"] == "not exercised"),
        "seconds": sum(float(c["seconds"] or 0) for c in cells),
    }


def _worse(kind, a, b) -> bool:
    if kind == "identity":
        return abs(a - 1) > abs(b - 1)
    return a > b


def format_summary(summary: dict) -> str:
    """The table printed at the end of a campaign."""
    lines = [f"campaign {summary['campaign']}: {summary['cells']}/{summary['cells_expected']} cells"
             f" ({summary['seconds']:.1f} s of cell time)"]
    hdr = f"{'claim':24s} {'kind':19s} {'status':14s} {'cells':>5s} {'rows':>7s} {'out':>6s} {'worst ratio':>12s} {'min p':>9s}"
    lines += [hdr, "-" * len(hdr)]
    for k, s in summary["claims"].items():
        wr = "" if s["worst_ratio"] is None else f"{s['worst_ratio']:.4g}"
        mp = "" if s["min_p_value"] is None else f"{s['min_p_value']:.2g}"
        lines.append(f"{k:24s} {s['kind'][:19]:19s} {s['status']:14s} {s['cells_in_scope']:5d} {s['rows_in_scope']:7d} "
                     f"{s['out_of_scope']:6d} {wr:>12s} {mp:>9s}")
    if summary["errors"]:
        lines.append(f"{len(summary['errors'])} cells failed:")
        lines += [f"  {e['key']}: {e['error']}" for e in summary["errors"][:10]]
    if summary["violated"]:
        lines.append("VIOLATED: " + ", ".join(summary["violated"]))
    else:
        lines.append("no claim violated")
    if summary["not_exercised"]:
        lines.append("not exercised (never in scope): " + ", ".join(summary["not_exercised"]))
    return "\n".join(lines)


def write_json(path, payload) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    return path
