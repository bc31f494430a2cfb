"""Re-run in float64 the cells whose deterministic bounds were exceeded within the float32 tolerance.

The checker judges a float32 run with the deviation its working precision is measured to explain
on the run's own inputs (:mod:`theory.precision`): a deterministic bound may then show a ratio
``lhs/rhs`` above 1 without being *violated*, by at most that allowance.
:func:`float64_recheck` separates float noise from a real exceedance: it re-runs those cells on
exactly the same data and configuration in float64 (tolerance ~1e-11) and reports, per claim, the
float32 ratio next to the float64 one. A ratio that stays above 1 in float64 would be a finding.

:func:`float64_precision_recheck` does the same for the float32 cells where the loop's precision put
rows *out of scope* for precision (the measured float32 allowance exceeds ``NU_MAX`` of a step:
ill-conditioned ``H_λ``), so that the claims, the exact identities first, are checked on those rows too.
"""

from __future__ import annotations

import copy

import numpy as np

from theory.precision import NU_MAX

from .defaults import setting

__all__ = ["float64_recheck", "format_float64_recheck", "recheck_line", "ABOVE_RTOL", "float64_precision_recheck",
           "format_float64_precision_recheck", "precision_recheck_line", "PRECISION_REASON"]

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
        if c["status"] != "done" or setting(cfg, "dtype") == "float64" or setting(cfg, "degenerate"):
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
    _check_limit(limit)
    cid = campaign if isinstance(campaign, str) else campaign.id
    found = _exceeding(store, cid)
    todo = found[:limit]
    it = _bar(todo, "float64 re-check", progress)
    rows = []
    for ratio32, c, claims in it:
        rec, cfg = _rerun64(c, claims, alpha, eta)
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
        rows.append({"key": c["key"], "label": cfg.get("label"), "where": _where(cfg), "dtype": _run_dtype(rec),
                     "claims": per})
    return {"campaign": cid, "cells_exceeding": len(found), "limit": limit, "rechecked": rows}


def _check_limit(limit) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit must be an integer ≥ 0, got {limit!r}")


def _rerun64(c: dict, claims: list, alpha: float, eta: float) -> tuple[dict, dict]:
    """Run stored cell ``c`` again in float64 (same data, seed and configuration) for ``claims``."""
    from .campaign import run_cell

    import theory

    cfg = copy.deepcopy(c["config"])
    cfg["dtype"] = "float64"
    # the hypothesis verdicts (hyp.*) come with every cell; only claims are listed
    cfg["claims"] = [k for k in claims if k in theory.CLAIMS] or list(theory.CLAIMS)
    return run_cell(c["key"], c["study"], cfg, c["seed"], alpha=alpha, eta=eta), cfg


def _run_dtype(rec: dict) -> str | None:
    """The dtype the re-run's loop actually ran in, as the checker recorded it."""
    for v in rec["verdicts"]:
        dt = (v.get("detail") or {}).get("tolerance", {}).get("dtype")
        if dt:
            return dt
    return None


def _bar(todo, desc, progress):
    if progress and todo:
        from tqdm.auto import tqdm

        return tqdm(todo, desc=desc, unit="cell")
    return todo


#: the checker's reason when float32 cannot resolve a claim (see theory: the PRECISE hypothesis)
PRECISION_REASON = "out of scope for precision"


def _precision_limited(store, campaign_id: str) -> list[tuple[int, dict, dict]]:
    """``(rows, cell, {claim: rows})`` of float32 cells where the loop's precision put rows out of scope."""
    out = []
    for c in store.cells(campaign_id, measurements=False):
        cfg = c["config"]
        if c["status"] != "done" or setting(cfg, "dtype") == "float64":
            continue
        per = {}
        for v in c["verdicts"]:
            k = sum(int(n) for r, n in (v.get("reasons") or {}).items() if r.startswith(PRECISION_REASON))
            if k:
                per[v["claim"]] = k
        if per:
            out.append((sum(per.values()), c, per))
    out.sort(key=lambda t: -t[0])
    return out


def float64_precision_recheck(store, campaign, *, limit: int = 8, progress: bool = True, alpha: float = 1e-3,
                              eta: float = 0.05) -> dict:
    """Re-run in float64 (at most ``limit``) float32 cells where the loop's float32 precision put rows of
    some claims out of scope (measured allowance above ``NU_MAX`` of a step), most such rows first.

    In float64 those rows come into scope (allowance ~1e-12 of a step) unless another hypothesis fails there (saturation,
    …). Returns ``{"cells_limited": k, "rechecked": [...]}``; per claim: the float32 rows out of scope
    for precision, the float64 rows in scope, status, worst ratio, and the float64 out-of-scope reasons.
    """
    _check_limit(limit)
    cid = campaign if isinstance(campaign, str) else campaign.id
    found = _precision_limited(store, cid)
    todo = found[:limit]
    rows = []
    for _, c, per32 in _bar(todo, "float64 precision re-check", progress):
        rec, cfg = _rerun64(c, sorted(per32), alpha, eta)
        if rec["status"] != "done":
            rows.append({"key": c["key"], "label": cfg.get("label"), "where": _where(cfg), "error": rec["error"]})
            continue
        v64 = {v["claim"]: v for v in rec["verdicts"]}
        per = {}
        for k, n32 in sorted(per32.items()):
            v = v64[k]
            per[k] = {"float32_rows_out_precision": n32, "float64_status": v["status"],
                      "float64_rows_in_scope": int(v["in_scope"]),
                      "float64_worst_ratio": v["worst_ratio"], "float64_violations": v.get("violations") or 0,
                      "float64_out_of_scope": {r: int(m) for r, m in (v.get("reasons") or {}).items()}}
        rows.append({"key": c["key"], "label": cfg.get("label"), "where": _where(cfg), "dtype": _run_dtype(rec),
                     "claims": per})
    return {"campaign": cid, "cells_limited": len(found), "limit": limit, "rechecked": rows}


def format_float64_precision_recheck(rc: dict) -> str:
    """Markdown section for :func:`float64_precision_recheck`'s result (claims aggregated)."""
    L = ["### Out of scope for float32 precision: float64 re-check", ""]
    n = rc["cells_limited"]
    if not n:
        L += ["No float32 cell had rows out of scope for the loop's precision.", ""]
        return "\n".join(L)
    done = [r for r in rc["rechecked"] if "error" not in r]
    errs = len(rc["rechecked"]) - len(done)
    L.append(f"{n} float32 cells had rows out of scope because the loop's float32 precision could not resolve "
             f"the claim (measured allowance above {NU_MAX:g} of a step). {len(rc['rechecked'])} of them were re-run on the same data in float64"
             + (f" ({errs} failed)" if errs else "") + ", where those rows come into scope unless another hypothesis "
             "fails there.")
    L.append("")
    L.append("| claim | cells | float32 rows out (precision) | float64 rows in scope | float64 violated cells | "
             "float64 worst ratio | float64 out of scope (main reason) |")
    L.append("|---|---|---|---|---|---|---|")
    agg: dict = {}
    for r in done:
        for k, d in r["claims"].items():
            a = agg.setdefault(k, {"cells": 0, "out32": 0, "in64": 0, "bad": 0, "worst": None, "why": {}})
            a["cells"] += 1
            a["out32"] += d["float32_rows_out_precision"]
            a["in64"] += d["float64_rows_in_scope"] or 0
            a["bad"] += d["float64_status"] == "violated"
            w = d["float64_worst_ratio"]
            if w is not None and np.isfinite(w) and (a["worst"] is None or _badness(k, w) > _badness(k, a["worst"])):
                a["worst"] = w
            for why, m in d["float64_out_of_scope"].items():
                if not why.startswith(("applies to", "needs ")):
                    a["why"][why.split(":")[0]] = a["why"].get(why.split(":")[0], 0) + m
    for k in sorted(agg):
        a = agg[k]
        why = max(a["why"].items(), key=lambda t: t[1]) if a["why"] else None
        L.append(f"| {k} | {a['cells']} | {a['out32']} | {a['in64']} | {a['bad']} | "
                 f"{'–' if a['worst'] is None else format(a['worst'], '.4f')} | "
                 f"{'–' if why is None else f'{why[0]} ({why[1]} rows)'} |")
    L.append("")
    L.append("Probability and expectation claims are judged per cell by their exact tests (the violated-cells "
             "column). Their worst ratio is over all in-scope rows, so it can exceed 1 on allowed rows. For the "
             "claims that hold jointly with no saturation, a saturated row counts as 0, as in their tests (the "
             "claim bounds the error times the indicator of no saturation).")
    L.append("")
    return "\n".join(L)


def _badness(claim: str, ratio: float) -> float:
    """How far a worst ratio is from passing: identities by ``|ratio − 1|``, bounds by the ratio."""
    import theory

    c = theory.CLAIMS.get(claim)
    return abs(ratio - 1) if c is not None and c.kind == "identity" else ratio


def precision_recheck_line(rc: dict) -> str:
    """One line for the command's output."""
    n, done = rc["cells_limited"], [r for r in rc["rechecked"] if "error" not in r]
    if not n:
        return "float64 precision re-check: no float32 cell had rows out of scope for precision"
    cl = [d for r in done for d in r["claims"].values()]
    return (f"float64 precision re-check: {n} float32 cells had rows out of scope for precision; {len(done)} re-run in "
            f"float64: {sum(d['float64_rows_in_scope'] or 0 for d in cl)} claim-rows in scope, "
            f"{sum(d['float64_status'] == 'violated' for d in cl)} violated")


def _where(cfg: dict) -> str:
    from .sources import describe

    d = describe(cfg)
    return str(d["layer"] or d["group"])


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
