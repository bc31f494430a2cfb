"""Per-layer-type report of a real-LLM campaign, read from the result store only.

:func:`layer_type_report` aggregates the stored cells of a campaign by layer type (``attn_q`` …
``ffn_down``): tightness of every claim (the per-row ratios ``lhs/rhs`` that the checker stored),
out-of-scope row counts per reason, and Qronos against OPTQ on the real mismatched inputs ``X̃``
(measured errors ``‖Xw − X̃q‖`` and the two bounds of T4). :func:`format_layer_type_report`
renders it as Markdown. :func:`tightness_records` gives the per-row ratios of any campaign
(synthetic families or real layers) for figures.

Conventions:

* ratios are ``lhs/rhs`` as the claim states them: squared norms for I1, T4.*.identity and
  T4.*.bound (their square roots are the norm ratios), norms for T1, T4.optq_mismatch, ℓ∞ for
  T2/T5; identities are summarised by ``max |ratio − 1|``;
* the degenerate Q4_1 cells (zero error by construction) are reported separately and left out of
  the tightness statistics;
* out-of-scope reasons are split into *not applicable* (the claim is about another algorithm,
  rounding or kind of data: by design of the cell) and *hypothesis failed* (saturation, the P1/T3
  alphabet conditions, the loop's float32 precision, on-the-fly group steps …).
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict

import numpy as np

from ..defaults import setting

__all__ = ["layer_type_report", "format_layer_type_report", "tightness_records", "NOT_APPLICABLE_PREFIXES",
           "LAYER_TYPES", "ALPHABET_GRIDS", "alphabet_k_rows", "grid_half_range", "bits_for_k"]

LAYER_TYPES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")

#: reasons that only say the claim is about another kind of run (not a failed hypothesis)
NOT_APPLICABLE_PREFIXES = ("applies to", "needs stochastic rounding", "needs nearest rounding",
                           "needs mismatched inputs", "infinite grid")

SQUARED = ("I1", "T4.projection.identity", "T4.projection.bound", "T4.original.identity", "T4.original.bound",
           "T2.expectation")


def _cid(campaign) -> str:
    return campaign if isinstance(campaign, str) else campaign.id


def _not_applicable(reason: str) -> bool:
    return reason.startswith(NOT_APPLICABLE_PREFIXES)


def _group_of(cfg: dict) -> str:
    if "llm" in cfg:
        return cfg["llm"]["kind"]
    return str(cfg.get("family", cfg.get("study", "?")))


def tightness_records(store, campaign, *, include_degenerate: bool = False) -> list:
    """Per cell and claim: the in-scope rows' ``lhs``, ``rhs`` and ``ratio`` (arrays), with the cell's
    group (layer type for real layers, data family for synthetic cells), layer, label, algorithm and
    whether it is degenerate. Works for any campaign in the store."""
    import theory

    out = []
    for c in store.cells(_cid(campaign), measurements=True):
        if c["status"] != "done":
            continue
        cfg = c["config"]
        deg = bool(setting(cfg, "degenerate"))
        if deg and not include_degenerate:
            continue
        meas = c["measurements"]
        for k in meas:
            if not k.endswith("/lhs"):
                continue
            claim = k[:-4]
            lhs = np.asarray(meas[k], dtype=np.float64)
            rhs = np.asarray(meas.get(claim + "/rhs", np.full_like(lhs, np.nan)), dtype=np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(rhs != 0, lhs / rhs, np.where(lhs == 0, 1.0 if _is_identity(claim) else 0.0, np.inf))
            out.append({
                "key": c["key"], "group": _group_of(cfg), "layer": cfg.get("llm", {}).get("layer"),
                "block": cfg.get("llm", {}).get("block"), "label": cfg.get("label"), "algorithm": cfg.get("algorithm"),
                "claim": claim, "claim_kind": theory.CLAIMS[claim].kind if claim in theory.CLAIMS else None,
                "squared": claim in SQUARED, "degenerate": deg, "lhs": lhs, "rhs": rhs, "ratio": ratio,
            })
    return out


def _is_identity(claim: str) -> bool:
    import theory

    return claim in theory.CLAIMS and theory.CLAIMS[claim].kind == "identity"


def _stats(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return {"n": 0, "median": None, "max": None, "min": None}
    return {"n": int(a.size), "median": float(np.median(a)), "max": float(np.max(a)), "min": float(np.min(a))}


def _stats_inf(values) -> dict:
    """Median/min/max of condition numbers, where ``inf`` (stored as the string ``"inf"``: numerically
    singular XᵀX) counts as a value."""
    a = []
    for v in values:
        try:
            a.append(float(v))
        except (TypeError, ValueError):
            continue
    a = np.asarray([x for x in a if not math.isnan(x)], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "median": None, "max": None, "min": None}
    return {"n": int(a.size), "median": float(np.median(a)), "max": float(np.max(a)), "min": float(np.min(a)),
            "singular": int(np.sum(np.isinf(a)))}


def _match_key(cfg: dict) -> str:
    """Cells that differ only in algorithm/variant/inputs: same layer, grid, damping, order, rounding."""
    d = {k: cfg.get(k) for k in ("grid", "percdamp", "lam_rel", "order", "rounding")}
    d["layer"] = cfg["llm"]["layer"]
    return json.dumps(d, sort_keys=True)


def _role(cfg: dict) -> str | None:
    alg, inputs = cfg.get("algorithm"), cfg["llm"].get("inputs")
    if setting(cfg, "degenerate") or cfg["llm"].get("weights") != "stored":
        return None
    if alg == "qronos":
        return f"qronos-{setting(cfg, 'variant')}"
    if alg == "optq":
        return "optq-on-xtilde" if inputs == "X_tilde" else "optq-on-x"
    return None


def layer_type_report(store, campaign) -> dict:
    """Aggregate a real-LLM campaign's stored cells by layer type (see the module docstring)."""
    cid = _cid(campaign)
    cells = [c for c in store.cells(cid, measurements=True) if "llm" in c["config"]]
    types = [t for t in LAYER_TYPES if any(c["config"]["llm"]["kind"] == t for c in cells)]
    types += sorted({c["config"]["llm"]["kind"] for c in cells} - set(types))
    rep = {"campaign": cid, "types": types, "overview": {}, "tightness": {}, "out_of_scope": {},
           "not_applicable_rows": {}, "qronos_vs_optq": {}, "degenerate": {}, "violations": []}
    meta = {}
    if cells:
        llm0 = cells[0]["config"]["llm"]
        d = llm0["data"]
        meta = {"model": llm0.get("model"), "model_sha256": llm0.get("model_sha256"),
                "text_source": d.get("text_source"), "text_sha256": d.get("text_sha256"),
                "n_tokens": d.get("n_tokens"), "seq_len": d.get("seq_len"),
                "sequential_quantizer": d.get("quantizer_id")}
    rep["meta"] = meta
    by_type = defaultdict(list)
    for c in cells:
        by_type[c["config"]["llm"]["kind"]].append(c)

    for t in types:
        cs = by_type[t]
        done = [c for c in cs if c["status"] == "done"]
        layers = sorted({c["config"]["llm"]["layer"] for c in cs}, key=lambda s: int(s.split(".")[1]))
        st = {}
        for c in cs:
            st[c["config"]["llm"]["layer"]] = c["config"]["llm"].get("input_stats", {})
        viol = [c for c in done if any(v["violated"] for v in c["verdicts"])]
        for c in viol:
            rep["violations"].append({"key": c["key"], "layer": c["config"]["llm"]["layer"], "label": c["config"].get("label"),
                                      "claims": [v["claim"] for v in c["verdicts"] if v["violated"]]})
        rep["overview"][t] = {
            "shape": cs[0]["config"]["llm"]["shape"], "layers": len(layers), "cells": len(cs), "done": len(done),
            "errors": len(cs) - len(done), "violated_cells": len(viol),
            "cond_XtX": _stats_inf([s.get("cond_XtX") for s in st.values()]),
            "outlier_ratio": _stats([s.get("outlier_ratio") for s in st.values() if isinstance(s.get("outlier_ratio"), (int, float))]),
            "rel_mismatch": _stats([s.get("rel_mismatch") for s in st.values() if isinstance(s.get("rel_mismatch"), (int, float))]),
            "dead_columns": int(sum(s.get("dead_columns", 0) for s in st.values())),
            "saturated_row_fraction": _sat_fraction(done),
        }
        # tightness
        ratios = defaultdict(list)
        events = defaultdict(lambda: [0, 0, True])  # indicator claims (bound 0): events, rows, all rhs 0
        worst = {}
        for c in done:
            if c["config"].get("degenerate"):
                continue
            meas = c["measurements"]
            for v in c["verdicts"]:
                if not v["in_scope"]:
                    continue
                k = v["claim"]
                if k + "/lhs" in meas:
                    lhs = np.asarray(meas[k + "/lhs"], dtype=np.float64)
                    rhs = np.asarray(meas[k + "/rhs"], dtype=np.float64)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        r = np.where(rhs != 0, lhs / rhs, np.nan)
                    ratios[k].append(r)
                    ev = events[k]
                    ev[0] += int(np.sum(lhs > 0))
                    ev[1] += int(lhs.size)
                    ev[2] = ev[2] and bool(np.all(rhs == 0))
                wr = v.get("worst_ratio")
                if wr is not None and not (isinstance(wr, float) and math.isnan(wr)):
                    if v["kind"] == "identity":
                        wr = abs(wr - 1)
                    worst[k] = max(worst.get(k, -math.inf), wr)
        tt = {}
        for k, rs in ratios.items():
            r = np.concatenate(rs) if rs else np.zeros(0)
            if events[k][2] and events[k][1]:
                tt[k] = {"identity": False, "indicator": True, "rows": events[k][1], "events": events[k][0]}
            elif _is_identity(k):
                s = _stats(np.abs(r - 1))
                tt[k] = {"identity": True, "rows": s["n"], "max_dev": s["max"], "median_dev": s["median"]}
            else:
                s = _stats(r)
                tt[k] = {"identity": False, "rows": s["n"], "median": s["median"], "max": s["max"],
                         "worst_cell": worst.get(k)}
        rep["tightness"][t] = tt
        # out of scope
        oos = Counter()
        oos_cells = Counter()
        na = 0
        per_claim = defaultdict(Counter)
        for c in done:
            for v in c["verdicts"]:
                for r, k in (v.get("reasons") or {}).items():
                    if _not_applicable(r):
                        na += int(k)
                        continue
                    oos[r] += int(k)
                    oos_cells[r] += 1
                    per_claim[v["claim"]][_short_reason(r)] += int(k)
        rep["out_of_scope"][t] = {"rows": dict(oos), "cells": dict(oos_cells),
                                  "by_claim": {k: dict(v) for k, v in per_claim.items()}}
        rep["not_applicable_rows"][t] = na
        rep["qronos_vs_optq"][t] = _qronos_vs_optq(done)
        deg = [c for c in done if c["config"].get("degenerate")]
        if deg:
            errs = [float(np.max(c["measurements"].get("err_l2", np.zeros(1)))) for c in deg]
            rep["degenerate"][t] = {"cells": len(deg), "max_err_l2": max(errs),
                                    "zero_error": all(e == 0.0 for e in errs),
                                    "violated": sum(1 for c in deg if any(v["violated"] for v in c["verdicts"]))}
        rep.setdefault("alphabet", {})[t] = _alphabet_needs(done)
    return rep


#: the per-row GPTQ grids whose step the alphabet section measures K in (cell label → bits)
ALPHABET_GRIDS = {"optq": 4, "optq-3bit": 3}


def grid_half_range(bits: int) -> float:
    """The levels per side a b-bit grid gives, in its own step: ``(2^b − 1)/2``."""
    return (2**int(bits) - 1) / 2


def bits_for_k(K) -> int:
    """The bits a grid with K levels per side (same step) needs: ``⌈log2(2K + 1)⌉``."""
    return int(math.ceil(math.log2(2 * float(K) + 1)))


def alphabet_k_rows(cells, label: str, eta: float = 0.05) -> dict | None:
    """Row by row, over the cells whose configuration ``label`` is ``label`` (one per layer) and that
    store ``w_over_delta_max``, ``drift_l1_max`` and ``drift_l2_max``: the K (levels per side, in units
    of the row's step δ) the uniform P1 and T3 conditions need (:mod:`theory.alphabet`),

    * P1: ``‖w‖∞/δ + ½·max_t‖B_{:,t}‖₁ − ½``,
    * T3: ``‖w‖∞/δ + (s/δ)·max_t‖B_{:,t}‖₂·√(2 log(2N/η))`` (Hoeffding's s),

    as ``{"w": ‖w‖∞/δ, "p1": …, "t3": …, "layers": count}`` (arrays over all rows, in the order of
    ``cells``), or ``None`` when no cell has them. The report's alphabet section and figure 9 both
    read this."""
    from theory import alphabet as AL

    w_all, p1, t3 = [], [], []
    for c in cells:
        m = c.get("measurements") or {}
        if c["config"].get("label") != label or "w_over_delta_max" not in m or "drift_l1_max" not in m:
            continue
        w = np.asarray(m["w_over_delta_max"], dtype=np.float64)
        N = int(c["config"]["llm"]["shape"][1])
        w_all.append(w)
        p1.append(w + float(AL.p1_uniform_radius(float(m["drift_l1_max"][0]))) - 0.5)
        t3.append(w + float(AL.t3_uniform_radius(float(m["drift_l2_max"][0]), N, eta)))
    if not w_all:
        return None
    return {"w": np.concatenate(w_all), "p1": np.concatenate(p1), "t3": np.concatenate(t3), "layers": len(w_all)}


def _alphabet_needs(cells, eta: float = 0.05) -> dict:
    """Per grid of :data:`ALPHABET_GRIDS`: the K the uniform P1 and T3 conditions need, row by row
    (:func:`alphabet_k_rows`), against the half-range ``(2^b − 1)/2`` the b-bit grid gives, and the
    bits a grid with the same step would need (:func:`bits_for_k`)."""
    out = {}
    for label, bits in ALPHABET_GRIDS.items():
        r = alphabet_k_rows(cells, label, eta)
        if r is None:
            continue
        w, p1, t3 = r["w"], r["p1"], r["t3"]
        half = grid_half_range(bits)
        out[label] = {"bits": bits, "grid_half_range": half, "rows": int(w.size), "layers": r["layers"],
                      "w_over_delta_median": float(np.median(w)),
                      "p1": {"median": float(np.median(p1)), "max": float(np.max(p1)),
                             "rows_holding": int(np.sum(p1 <= half)), "bits_median": bits_for_k(np.median(p1)),
                             "bits_max": bits_for_k(np.max(p1))},
                      "t3": {"median": float(np.median(t3)), "max": float(np.max(t3)),
                             "rows_holding": int(np.sum(t3 <= half)), "bits_median": bits_for_k(np.median(t3)),
                             "bits_max": bits_for_k(np.max(t3)), "eta": eta}}
    return out


def _sat_fraction(cells) -> dict:
    """Fraction of rows whose column loop clipped (saturated), per label of nearest-rounding GPTQ cells."""
    acc = defaultdict(lambda: [0, 0])
    for c in cells:
        s = c["measurements"].get("saturated")
        if s is None or c["config"].get("degenerate"):
            continue
        a = acc[c["config"].get("label")]
        a[0] += int(np.sum(s))
        a[1] += int(np.size(s))
    return {k: (v[0] / v[1] if v[1] else None) for k, v in sorted(acc.items())}


def _short_reason(r: str) -> str:
    for p, s in (("saturation", "saturation"), ("loop precision", "float32 precision (τ > 0.05)"),
                 ("the P1 alphabet", "P1 condition fails"), ("the T3 alphabet", "T3 condition fails"),
                 ("group steps", "on-the-fly group steps"), ("H_λ singular or too ill", "log-det precision"),
                 ("exact quantities unavailable", "exact quantities unavailable")):
        if r.startswith(p) or p in r:
            return s
    return r[:60]


def _take(meas, name):
    a = meas.get(name)
    return None if a is None else np.asarray(a, dtype=np.float64)


def _qronos_vs_optq(cells) -> dict:
    """Qronos (both variants) against OPTQ on X̃ and OPTQ on X, per bit width, deterministic cells.

    Errors (``err_l2`` = ‖Xw − X̃q‖ per row, ‖X(w − q)‖ for OPTQ on X) are row-aligned across the cells
    of one layer and configuration, so their per-row ratios are exact pairs. The bounds are the
    stored right sides on the rows where each claim is in scope (no saturation), so they are
    summarised separately: Qronos (projection) ``√(ρ_λ² + (δ²/4)Σc̃)`` (sqrt of T4.projection.bound),
    OPTQ on X̃ ``‖(X−X̃)w‖ + (δ/2)√Σc̃`` (T4.optq_mismatch), and ``ρ_λ`` against ``‖(X−X̃)w‖``
    (T4.rho_le_mismatch, every row)."""
    groups = defaultdict(dict)
    for c in cells:
        cfg = c["config"]
        role = _role(cfg)
        if role is None or setting(cfg, "rounding") != "nearest":
            continue
        groups[_match_key(cfg)][role] = c
    out = {}
    for key, g in groups.items():
        if "qronos-projection" not in g or "optq-on-xtilde" not in g:
            continue
        spec = json.loads(key)
        bits = f"{spec['grid'].get('bits')}-bit" + (f" g{spec['grid']['group_size']}" if spec["grid"].get("group_size") else "")
        tag = f"{bits}, {'percdamp ' + str(spec['percdamp']) if spec.get('percdamp') is not None else 'λ ' + str(spec.get('lam_rel'))}, {spec['order']}"
        acc = out.setdefault(tag, defaultdict(list))
        acc["layers"].append(spec["layer"])
        mo = g["optq-on-xtilde"]["measurements"]
        mp = g["qronos-projection"]["measurements"]
        eo, ep = _take(mo, "err_l2"), _take(mp, "err_l2")
        acc["err_optq_xtilde"].append(eo)
        acc["err_qronos_projection"].append(ep)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc["ratio_projection"].append(np.where(eo > 0, ep / eo, np.nan))
        acc["projection_better"].append((ep <= eo).astype(float))
        if "qronos-original" in g:
            er = _take(g["qronos-original"]["measurements"], "err_l2")
            acc["err_qronos_original"].append(er)
            with np.errstate(divide="ignore", invalid="ignore"):
                acc["ratio_original"].append(np.where(eo > 0, er / eo, np.nan))
        if "optq-on-x" in g:
            acc["err_optq_x"].append(_take(g["optq-on-x"]["measurements"], "err_l2"))
        rho, mis = _take(mp, "T4.rho_le_mismatch/lhs"), _take(mp, "T4.rho_le_mismatch/rhs")
        if rho is not None:
            acc["rho"].append(rho)
            acc["mismatch"].append(mis)
        # the bounds and the measured damped errors on the same (in-scope) rows
        for name, meas, claim, squared in (("qronos_projection", mp, "T4.projection.bound", True),
                                           ("optq_xtilde", mo, "T4.optq_mismatch", False),
                                           ("qronos_original", g.get("qronos-original", {}).get("measurements"),
                                            "T4.original.bound", True)):
            if meas is None:
                continue
            lhs, rhs = _take(meas, claim + "/lhs"), _take(meas, claim + "/rhs")
            n_rows = np.size(meas.get("err_l2", ()))
            acc[f"in_scope_{name}"].append(np.array([0 if lhs is None else lhs.size, n_rows], dtype=float))
            if lhs is None:
                continue
            f = (lambda a: np.sqrt(np.maximum(a, 0))) if squared else (lambda a: a)  # noqa: E731
            acc[f"bound_{name}"].append(f(rhs))
            acc[f"measured_{name}"].append(f(lhs))
    res = {}
    for tag, acc in sorted(out.items()):
        r = {"layers": len(acc.pop("layers"))}
        for k, arrs in acc.items():
            if k.startswith("in_scope_"):
                tot = np.sum(arrs, axis=0)
                r[k] = {"rows": int(tot[0]), "of": int(tot[1]), "fraction": float(tot[0] / tot[1]) if tot[1] else None}
                continue
            a = np.concatenate(arrs) if arrs else np.zeros(0)
            r[k] = _stats(a)
            if k == "projection_better":
                r[k]["mean"] = float(np.mean(a)) if a.size else None
        res[tag] = r
    return res


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------
def _f(x, fmt=".3g"):
    if x is None:
        return "–"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return format(x, fmt)


def format_layer_type_report(rep: dict) -> str:
    """Markdown of :func:`layer_type_report`: its sections in order."""
    L = []
    for section in (_overview_section, _tightness_section, _out_of_scope_section, _qronos_section,
                    _alphabet_section, _degenerate_section):
        L += section(rep)
    return "\n".join(L)


def _overview_section(rep: dict) -> list:
    """Title, model and data, the layers per type and the violations."""
    types = rep["types"]
    L = []
    m = rep.get("meta") or {}
    L.append(f"## Real-LLM layers by type — campaign `{rep['campaign']}`")
    L.append("")
    if m:
        L.append(f"Model {m.get('model')} (GGUF sha256 `{str(m.get('model_sha256'))[:16]}…`); calibration text "
                 f"`{m.get('text_source')}` (sha256 `{str(m.get('text_sha256'))[:16]}…`), {m.get('n_tokens')} tokens "
                 f"in sequences of {m.get('seq_len')}; X̃ from sequential quantization of every earlier layer by "
                 f"`{m.get('sequential_quantizer')}`.")
        L.append("")
    L.append("### Layers")
    L.append("")
    L.append("| type | shape (n×N) | layers | cells | errors | violated cells | cond(XᵀX) median [min, max] | "
             "outlier max/median | ‖X−X̃‖_F/‖X‖_F median | dead columns |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for t in types:
        o = rep["overview"][t]
        c, ol, mm = o["cond_XtX"], o["outlier_ratio"], o["rel_mismatch"]
        L.append(f"| {t} | {o['shape'][0]}×{o['shape'][1]} | {o['layers']} | {o['cells']} | {o['errors']} | "
                 f"{o['violated_cells']} | {_f(c['median'])} [{_f(c['min'])}, {_f(c['max'])}] | {_f(ol['median'])} | "
                 f"{_f(mm['median'])} | {o['dead_columns']} |")
    L.append("")
    if rep["violations"]:
        L.append(f"**{len(rep['violations'])} cells with a violated claim:**")
        for v in rep["violations"][:20]:
            L.append(f"- `{v['key']}` {v['layer']} {v['label']}: {', '.join(v['claims'])}")
    else:
        L.append("No claim violated on any layer.")
    L.append("")
    return L


def _tightness_section(rep: dict) -> list:
    """Empirical/bound per claim and layer type."""
    types = rep["types"]
    L = []
    claims = sorted({k for t in types for k in rep["tightness"][t]}, key=_claim_order)
    L.append("### Tightness (empirical / bound, per row, in-scope rows; degenerate cells excluded)")
    L.append("")
    L.append("Bounds: median / max of lhs/rhs. Identities: max |lhs/rhs − 1| (L1.derivative: against a "
             "difference quotient, within its concavity bracket). Indicator claims (P1: saturation "
             "although the P1 condition holds; T3.alphabet: saturation, allowed with probability η): events "
             "of in-scope rows. Squared-norm claims (" + ", ".join(s for s in SQUARED) + ") are ratios of squares.")
    L.append("")
    L.append("| claim | " + " | ".join(types) + " |")
    L.append("|---|" + "---|" * len(types))
    for k in claims:
        row = []
        for t in types:
            e = rep["tightness"][t].get(k)
            if not e or not e["rows"]:
                row.append("–")
            elif e.get("indicator"):
                row.append(f"{e['events']} of {e['rows']} rows")
            elif e["identity"]:
                row.append(f"dev ≤ {_f(e['max_dev'], '.1e')}")
            else:
                row.append(f"{_f(e['median'], '.3f')} / {_f(e['max'], '.3f')}")
        L.append(f"| {k} | " + " | ".join(row) + " |")
    L.append("")
    L.append("A deterministic bound's max above 1 is within the deviation the run's float32 arithmetic is measured to "
             "explain on its own inputs (the loop's record against the float64 re-evaluation of Q; rows where it "
             "exceeds 0.2 % of a step are out of scope for precision); the "
             "float64 re-check below runs the worst such cells again in float64. Probability and expectation claims "
             "allow exceedances on some rows and are judged by exact tests on all rows (summary table).")
    L.append("")
    return L


def _out_of_scope_section(rep: dict) -> list:
    """Rows out of scope, by hypothesis and by claim; saturated rows."""
    types = rep["types"]
    L = []
    L.append("### Out of scope (rows; a row is one output neuron of one cell)")
    L.append("")
    reasons = sorted({_short_reason(r) for t in types for r in rep["out_of_scope"][t]["rows"]})
    if reasons:
        L.append("| reason (hypothesis failed) | " + " | ".join(types) + " |")
        L.append("|---|" + "---|" * len(types))
        for r in reasons:
            row = []
            for t in types:
                n = sum(k for rr, k in rep["out_of_scope"][t]["rows"].items() if _short_reason(rr) == r)
                row.append(str(n) if n else "–")
            L.append(f"| {r} | " + " | ".join(row) + " |")
        L.append("| *not applicable (another algorithm/rounding; by design)* | "
                 + " | ".join(str(rep["not_applicable_rows"][t]) for t in types) + " |")
    else:
        L.append("No hypothesis failed.")
    L.append("")
    L.append("Per claim (all types), rows out of scope by reason:")
    L.append("")
    agg = defaultdict(Counter)
    for t in types:
        for k, d in rep["out_of_scope"][t]["by_claim"].items():
            agg[k].update(d)
    for k in sorted(agg, key=_claim_order):
        L.append(f"- {k}: " + "; ".join(f"{r}: {n}" for r, n in agg[k].most_common()))
    L.append("")
    L.append("Rows whose column loop saturated (clipped), by cell label: " + "; ".join(
        f"{t}: " + ", ".join(f"{lab} {_f(100 * v, '.0f')}%" for lab, v in rep["overview"][t]["saturated_row_fraction"].items()
                            if v is not None and lab in ("optq", "optq-3bit", "qronos-projection"))
        for t in types))
    L.append("")
    return L


def _qronos_section(rep: dict) -> list:
    """Qronos against OPTQ on the real X̃, and the T4 bounds."""
    types = rep["types"]
    L = []
    L.append("### Qronos vs OPTQ on the real X̃ (deterministic)")
    L.append("")
    L.append("Measured errors ‖Xw − X̃q‖ per row, all rows (medians). Ratios and 'proj. ≤ OPTQ-X̃' pair the rows of "
             "one layer and configuration. 'OPTQ on X' is ‖X(w−q)‖ without mismatch, for scale. ρ_λ and "
             "‖(X−X̃)w‖ are over all rows.")
    L.append("")
    L.append("| type | config | layers | OPTQ on X | OPTQ on X̃ | Qronos proj. | Qronos orig. | proj./OPTQ-X̃ "
             "| orig./OPTQ-X̃ | proj. ≤ OPTQ-X̃ (rows) | ρ_λ | ‖(X−X̃)w‖ |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for t in types:
        for tag, r in rep["qronos_vs_optq"][t].items():
            g = lambda k: (r.get(k) or {}).get("median")  # noqa: E731
            pb = r.get("projection_better") or {}
            L.append(f"| {t} | {tag} | {r['layers']} | {_f(g('err_optq_x'))} | {_f(g('err_optq_xtilde'))} | "
                     f"{_f(g('err_qronos_projection'))} | {_f(g('err_qronos_original'))} | {_f(g('ratio_projection'))} | "
                     f"{_f(g('ratio_original'))} | {_pct(_mean_from(pb))} | {_f(g('rho'))} | {_f(g('mismatch'))} |")
    L.append("")
    L.append("The T4 bounds, on the rows where each is in scope (no saturation), against the measured damped error "
             "√(‖Xw − X̃q‖² + λ‖w−q‖²) of the same rows (medians, measured → bound): Qronos projection "
             "√(ρ_λ² + (δ²/4)Σc̃), Qronos original √(ρ_λ² + (δ/2 + |ŵ₁ − y₁|)²c̃₁ + (δ²/4)Σ_{t≥2}c̃_t), OPTQ on X̃ "
             "‖(X−X̃)w‖ + (δ/2)√Σc̃.")
    L.append("")
    L.append("| type | config | Qronos proj. (rows in scope) | Qronos orig. (rows in scope) | OPTQ on X̃ (rows in scope) |")
    L.append("|---|---|---|---|---|")
    for t in types:
        for tag, r in rep["qronos_vs_optq"][t].items():
            cols = []
            for name in ("qronos_projection", "qronos_original", "optq_xtilde"):
                sc = r.get(f"in_scope_{name}")
                if not sc:
                    cols.append("–")
                    continue
                m, b = (r.get(f"measured_{name}") or {}).get("median"), (r.get(f"bound_{name}") or {}).get("median")
                cols.append(f"{_f(m)} → {_f(b)} ({_pct(sc['fraction'])})")
            L.append(f"| {t} | {tag} | " + " | ".join(cols) + " |")
    L.append("")
    return L


def _alphabet_section(rep: dict) -> list:
    """The K the P1 and T3 alphabet conditions need, per layer type, against what the grid gives."""
    alpha = rep.get("alphabet") or {}
    rows = [(t, g, a) for t in rep["types"] for g, a in (alpha.get(t) or {}).items()]
    if not rows:
        return []
    L = ["### What the alphabet conditions need (P1, T3)", "",
         "K: levels per side, in units of each row's step δ of the GPTQ grid the campaign uses (per-row min/max, "
         "asymmetric), from the uniform forms of the conditions (`theory.alphabet`): P1 needs "
         "K ≥ ‖w‖∞/δ + ½·max_t‖B_{:,t}‖₁ − ½, T3 needs K ≥ ‖w‖∞/δ + (s/δ)·max_t‖B_{:,t}‖₂·√(2 log(2N/η)) "
         f"(η = {rows[0][2]['t3']['eta']}). A b-bit grid gives a half-range of (2^b − 1)/2 steps; ‖w‖∞/δ alone "
         "already fills it (the grid is fitted to the weights), so the conditions ask for headroom beyond the "
         "weights. Bits: what a grid with the same step and K levels per side needs, ⌈log2(2K + 1)⌉ (median row "
         "/ worst row).", "",
         "| type | grid | rows | ‖w‖∞/δ (median) | P1: K needed median / max | P1 holds | P1 bits | "
         "T3: K needed median / max | T3 holds | T3 bits |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for t, g, a in rows:
        p, q = a["p1"], a["t3"]
        L.append(f"| {t} | {a['bits']}-bit ({a['grid_half_range']:g} per side) | {a['rows']} | "
                 f"{_f(a['w_over_delta_median'], '.2f')} | {_f(p['median'], '.1f')} / {_f(p['max'], '.1f')} | "
                 f"{p['rows_holding']} of {a['rows']} | {p['bits_median']} / {p['bits_max']} | "
                 f"{_f(q['median'], '.1f')} / {_f(q['max'], '.1f')} | {q['rows_holding']} of {a['rows']} | "
                 f"{q['bits_median']} / {q['bits_max']} |")
    L.append("")
    return L


def _degenerate_section(rep: dict) -> list:
    """The Q4_1 re-quantization cells (zero error by construction)."""
    L = []
    L.append("### Degenerate configuration: re-quantizing the stored Q4_1 weights with the Q4_1 grid")
    L.append("")
    if rep["degenerate"]:
        L.append("The weights are stored as Q4_1 (asymmetric 4-bit, groups of 32 inputs), so OPTQ with exactly that grid "
                 "reproduces W: zero error by construction, not evidence about the bounds (these cells are left out "
                 "of the tightness statistics).")
        L.append("")
        L.append("| type | cells | max ‖X(w−q)‖ | zero error | violated |")
        L.append("|---|---|---|---|---|")
        for t, d in rep["degenerate"].items():
            L.append(f"| {t} | {d['cells']} | {_f(d['max_err_l2'])} | {'yes' if d['zero_error'] else 'NO'} | {d['violated']} |")
    else:
        L.append("(no degenerate cell in this campaign)")
    L.append("")
    return L


def _pct(x):
    return "–" if x is None else f"{100 * x:.0f}%"


def _mean_from(st):
    return None if not st or st.get("n", 0) == 0 else st.get("mean")


def _claim_order(k: str):
    import theory

    ids = list(theory.CLAIMS)
    return (ids.index(k) if k in ids else len(ids), k)
