"""Re-run in float64 the cells whose deterministic bounds were exceeded within the float32 tolerance.

The checker judges a float32 run with a dtype-aware tolerance (the loop's accuracy
``τ = 4·eps32·(N + cond(H_λ))`` relative to the weights): a deterministic bound may then show a
ratio ``lhs/rhs`` above 1 without being *violated*, typically where the bound itself is small
(P1.drift at the first processed columns, Qronos started from a ``ŵ`` solved in float32).
:func:`float64_recheck` separates float noise from a real exceedance: it re-runs those cells on
exactly the same data and configuration in float64 (tolerance ~1e-11) and reports, per claim, the
float32 ratio next to the float64 one. A ratio that stays above 1 in float64 would be a finding.
"""

from __future__ import annotations

import copy

import numpy as np

__all__ = ["float64_recheck", "format_float64_recheck", "recheck_line", "ABOVE_RTOL"]

#: a float64 row counts as above its bound when ``lhs > rhs·(1 + ABOVE_RTOL)`` (+ that fraction of the
#: row set's largest bound): bounds attained with equality (ties of GPTQ's symmetric grids) stay below
ABOVE_RTOL = 1e-9


def _exceeding(store, campaign_id: str) -> list[tuple[float, dict, list]]:
    """``(max ratio, cell, claims)`` of float32 cells with a deterministic bound's ratio above 1."""
    import theory

    # facts about (data, λ, order) are evaluated in float64 whatever the run's dtype: nothing to re-check
    per_run = {k for k, c in theory.CLAIMS.items() if c.per == "run"}
    out = []
    for c in store.cells(campaign_id, measurements=False):
        cfg = c["config"]
        if c["status"] != "done" or cfg.get("dtype", "float64") == "float64" or cfg.get("degenerate"):
            continue
        bad = [(v["worst_ratio"], v["claim"]) for v in c["verdicts"]
               if v["kind"] == "deterministic bound" and v["claim"] not in per_run and v["in_scope"]
               and v["worst_ratio"] is not None
               and np.isfinite(v["worst_ratio"]) and v["worst_ratio"] > 1.0]
        if bad:
            out.append((max(r for r, _ in bad), c, sorted({k for _, k in bad})))
    out.sort(key=lambda t: -t[0])
    return out


def float64_recheck(store, campaign, *, limit: int = 8, progress: bool = True, alpha: float = 1e-3,
                    eta: float = 0.05) -> dict:
    """Re-run (at most ``limit``) float32 cells of ``campaign`` whose deterministic-bound ratio exceeded 1,
    worst first, in float64, and evaluate the same claims.

    Returns ``{"cells_exceeding": k, "rechecked": [...]}``; each entry holds the cell key, its label
    and layer (or family), and per claim the float32 worst ratio and the float64 status, worst ratio and
    number of rows above 1.
    """
    from .campaign import run_cell

    if not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer ≥ 0, got {limit!r}")
    cid = campaign if isinstance(campaign, str) else campaign.id
    found = _exceeding(store, cid)
    todo = found[:limit]
    it = todo
    if progress and todo:
        from tqdm.auto import tqdm

        it = tqdm(todo, desc="float64 re-check", unit="cell")
    rows = []
    for ratio32, c, claims in it:
        cfg = copy.deepcopy(c["config"])
        cfg["dtype"] = "float64"
        cfg["claims"] = claims
        rec = run_cell(c["key"], c["study"], cfg, c["seed"], alpha=alpha, eta=eta)
        if rec["status"] != "done":
            rows.append({"key": c["key"], "label": cfg.get("label"), "where": _where(cfg), "error": rec["error"]})
            continue
        v64 = {v["claim"]: v for v in rec["verdicts"]}
        v32 = {v["claim"]: v for v in c["verdicts"]}
        per = {}
        for k in claims:
            lhs = np.asarray(rec["measurements"].get(k + "/lhs", []), dtype=np.float64)
            rhs = np.asarray(rec["measurements"].get(k + "/rhs", []), dtype=np.float64)
            # above 1 beyond float64 rounding (a bound attained with equality gives 1 ± 1e-13)
            above = int(np.sum(lhs > rhs * (1 + ABOVE_RTOL) + ABOVE_RTOL * np.abs(rhs).max(initial=0.0)))
            per[k] = {"float32_worst_ratio": v32[k]["worst_ratio"], "float64_status": v64[k]["status"],
                      "float64_worst_ratio": v64[k]["worst_ratio"], "float64_rows_above_1": above,
                      "float64_rows": int(lhs.size)}
        rows.append({"key": c["key"], "label": cfg.get("label"), "where": _where(cfg), "claims": per})
    return {"campaign": cid, "cells_exceeding": len(found), "limit": limit, "rechecked": rows}


def _where(cfg: dict) -> str:
    if "llm" in cfg:
        return cfg["llm"].get("layer", "?")
    return str(cfg.get("family", cfg.get("study", "?")))


def format_float64_recheck(rc: dict) -> str:
    """Markdown section for :func:`float64_recheck`'s result."""
    L = ["### Deterministic bounds above ratio 1 in float32: float64 re-check", ""]
    n = rc["cells_exceeding"]
    if not n:
        L += ["No float32 cell has a deterministic bound with ratio above 1.", ""]
        return "\n".join(L)
    L.append(f"{n} float32 cells have a deterministic bound with ratio lhs/rhs above 1 on some row, within the "
             "checker's float32 tolerance (not violations). The worst "
             f"{len(rc['rechecked'])} were re-run on the same data and configuration in float64, where the "
             "tolerance is ~1e-11; a ratio still above 1 there would be a finding.")
    L.append("")
    L.append("| cell | configuration | claim | float32 worst ratio | float64 worst ratio | float64 rows above 1 + 1e-9 | float64 status |")
    L.append("|---|---|---|---|---|---|---|")
    for r in rc["rechecked"]:
        if "error" in r:
            L.append(f"| {r['where']} | {r['label']} | – | – | – | – | error: {r['error']} |")
            continue
        for k, d in r["claims"].items():
            L.append(f"| {r['where']} | {r['label']} | {k} | {d['float32_worst_ratio']:.4f} | "
                     f"{d['float64_worst_ratio']:.4f} | {d['float64_rows_above_1']} of {d['float64_rows']} | "
                     f"{d['float64_status']} |")
    L.append("")
    return "\n".join(L)


def recheck_line(rc: dict) -> str:
    """One line for the command's output."""
    n, done = rc["cells_exceeding"], rc["rechecked"]
    if not n:
        return "float64 re-check: no float32 cell has a deterministic bound with ratio above 1"
    worst = [d["float64_worst_ratio"] for r in done for d in r.get("claims", {}).values()]
    above = sum(d["float64_rows_above_1"] for r in done for d in r.get("claims", {}).values())
    errs = sum("error" in r for r in done)
    w = f"{max(worst):.6f}" if worst else "–"
    return (f"float64 re-check: {n} float32 cells with a deterministic ratio above 1 (within tolerance); the worst "
            f"{len(done)} re-run in float64: worst ratio {w}, rows above 1 + 1e-9: {above}"
            + (f", {errs} failed" if errs else ""))
