"""Figure 4 — Qronos against OPTQ on mismatched inputs X̃ ≠ X (T4, T5), synthetic and on real layers.

Study ``mismatch`` (family ``tall``, X̃ = X + noise of relative level ε, so ‖X̃ − X‖_F ≈ ε‖X‖_F; the
algorithms at one level share the same X, W and X̃). (a) The error ‖Xw − X̃q‖₂ (median over rows,
markers; the two Qronos variants are drawn a few points apart so that neither hides the other) of
Qronos (projection and original variants) and of OPTQ run on X̃ from w, with each one's
deterministic bound (line of the same colour): √(ρ_λ² + (δ²/4)Σc̃_t) (T4.projection.bound), the
original variant's bound (T4.original.bound), and ‖(X−X̃)w‖ + (δ/2)√Σc̃_t (T4.optq_mismatch); in grey
‖(X−X̃)w‖ and ρ_λ ≤ ‖(X−X̃)w‖ (T4.rho_le_mismatch). (b) The ratio of the errors, Qronos / OPTQ on X̃,
row by row (the rows pair: same w, X, X̃), against the relative mismatch ‖X̃ − X‖_F/‖X‖_F: the
synthetic study (median, bars: quartiles over rows) and, when the store holds a real-LLM campaign,
each real layer with X̃ ≠ X (median over its rows, 4-bit GPTQ grid, Qronos projection against OPTQ on the same
X̃; the marker names the layer type; its mismatch is the one the campaign recorded for the layer).
(c) Stochastic Qronos: the distribution over trials of ‖Xw − X̃q‖∞ (boxes: quartiles, whiskers
1–99 %) and the T5 bound at probability η (markers).

Values from the store: ``err_l2``, ``err_linf`` and the claims' lhs/rhs; for real layers also the
configuration's ``llm.input_stats.rel_mismatch``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import offset_copy

from ._data import claim_arrays, meas
from ._style import REF, Z_REF, add_footer, color, marker_for, new_figure, note, plain_log_ticks, ref_line

NUMBER = 4
STEM = "fig4_mismatch"
STUDY = "mismatch"
CLAIMS = ("T4.projection.bound", "T4.original.bound", "T4.optq_mismatch", "T4.rho_le_mismatch", "T5.projection",
          "T5.original")
TITLE = "Qronos vs OPTQ on mismatched inputs X̃ ≠ X (T4, T5)"

#: (algorithm key, label, marker, bound claim, bound on squared norms?, line style, horizontal offset in points)
ALGS = (
    ("qronos/projection", "Qronos (projection)", "o", "T4.projection.bound", True, "-", -3.5),
    ("qronos/original", "Qronos (original)", "s", "T4.original.bound", True, ":", 3.5),
    ("optq", "OPTQ on X̃", "^", "T4.optq_mismatch", False, "--", 0.0),
)
COLOR = {"qronos/projection": color("qronos/projection"), "qronos/original": color("qronos/original"),
         "optq": color("nearest")}
T5 = {"qronos/projection": "T5.projection", "qronos/original": "T5.original"}
#: real-LLM cell labels paired in (b): (Qronos, OPTQ on X̃), 4-bit GPTQ grid
LLM_PAIR = ("qronos-projection", "optq-on-xtilde")


def alg_key(cfg) -> str:
    a = cfg.get("algorithm", "?")
    return f"{a}/{cfg.get('variant', 'projection')}" if a == "qronos" else a


def level(cell) -> float:
    mm = cell["config"].get("mismatch") or {}
    return float(mm.get("level", np.nan))


def split(cells):
    """``(deterministic, stochastic)``: each ``{algorithm key: cells sorted by level}``."""
    det: dict = {}
    sto: dict = {}
    for c in cells:
        d = sto if c["config"].get("rounding", "nearest") == "stochastic" else det
        d.setdefault(alg_key(c["config"]), []).append(c)
    for d in (det, sto):
        for k in d:
            d[k].sort(key=level)
    return det, sto


def _med(a):
    return float(np.median(a)) if a is not None and np.size(a) else np.nan


def row_ratio(num, den):
    """Per row ``err_l2(num) / err_l2(den)`` (rows where the denominator is positive), or None."""
    a, b = meas(num, "err_l2"), meas(den, "err_l2")
    if a is None or b is None or a.shape != b.shape:
        return None
    ok = b > 0
    return a[ok] / b[ok]


def llm_ratios(llm_cells) -> dict:
    """``{layer type: [(relative mismatch, median row ratio Qronos/OPTQ on X̃, median ratio of the original
    variant or None, the row ratios)]}``, one entry per real layer that has both cells of :data:`LLM_PAIR`
    and X̃ ≠ X."""
    by_layer: dict = {}
    for c in llm_cells:
        cfg = c.get("config") or {}
        llm = cfg.get("llm")
        if not isinstance(llm, dict):
            continue
        by_layer.setdefault(llm.get("layer"), {})[cfg.get("label")] = c
    out: dict = {}
    for layer, d in by_layer.items():
        q, o = d.get(LLM_PAIR[0]), d.get(LLM_PAIR[1])
        if q is None or o is None:
            continue
        r = row_ratio(q, o)
        mm = ((q["config"]["llm"].get("input_stats") or {}).get("rel_mismatch"))
        if r is None or not r.size or mm is None or not mm > 0:  # X̃ = X (first block): nothing to compare
            continue
        orig = d.get("qronos-original")
        ro = row_ratio(orig, o) if orig is not None else None
        kind = q["config"].get("kind") or q["config"]["llm"].get("kind") or "layer"
        out.setdefault(str(kind), []).append((float(mm), float(np.median(r)),
                                              float(np.median(ro)) if ro is not None and ro.size else None, r))
    return out


def _panel_a(ax, det, fig):
    for key, label, mk, claim, sq, ls, dx in ALGS:
        cs = det.get(key, [])
        if not cs:
            continue
        col = COLOR[key]
        x = np.array([level(c) for c in cs])
        err = np.array([_med(meas(c, "err_l2")) for c in cs])
        tr = offset_copy(ax.transData, fig=fig, x=dx, y=0, units="points")
        ln, = ax.plot(x, err, color=col, marker=mk, ls="none", ms=5.5, mfc="white" if key != "optq" else col,
                      mew=1.3, transform=tr, zorder=3)
        ln.set_gid(f"err:{key}")
        rhs = np.array([_med(claim_arrays(c, claim)[1]) for c in cs])
        ln, = ax.plot(x, np.sqrt(rhs) if sq else rhs, color=col, ls=ls, lw=1.4, zorder=Z_REF)
        ln.set_gid(f"bound:{key}")
    ref = det.get("optq") or det.get("qronos/projection") or next(iter(det.values()), [])
    if ref:
        x = np.array([level(c) for c in ref])
        mis = np.array([_med(claim_arrays(c, "T4.rho_le_mismatch")[1]) for c in ref])
        ln, = ax.plot(x, mis, color=REF, ls=(0, (1, 1.5)), lw=1.1, zorder=Z_REF)
        ln.set_gid("mismatch")
    proj = det.get("qronos/projection", [])
    if proj:
        x = np.array([level(c) for c in proj])
        rho = np.array([_med(claim_arrays(c, "T4.rho_le_mismatch")[0]) for c in proj])
        ln, = ax.plot(x, rho, color=REF, ls="-.", lw=1.0, zorder=Z_REF)
        ln.set_gid("rho")
    if not det:
        note(ax, "no deterministic mismatch cells")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"mismatch level $\varepsilon$ ($\tilde X = X + \varepsilon\,\mathrm{rms}(X)\cdot$noise)")
    ax.set_ylabel(r"$\|Xw - \tilde Xq\|_2$, median over rows")
    ax.set_title("(a) error and T4 bounds (synthetic)")


def _panel_b(ax, det, llm):
    """The ratio Qronos / OPTQ on X̃: synthetic rows by level, real layers by their mismatch."""
    optq = {level(c): c for c in det.get("optq", [])}
    lo_x, hi_x = [], []
    for key, label, mk, *_rest, dx in ALGS[:2]:
        xs, med, q1, q3 = [], [], [], []
        for c in det.get(key, []):
            o = optq.get(level(c))
            r = row_ratio(c, o) if o is not None else None
            if r is None or not r.size:
                continue
            xs.append(level(c))
            med.append(float(np.median(r)))
            q1.append(float(np.quantile(r, 0.25)))
            q3.append(float(np.quantile(r, 0.75)))
        if not xs:
            continue
        xs, med = np.array(xs), np.array(med)
        f = 1.06 if dx > 0 else 1 / 1.06  # side by side: the two variants would hide each other
        eb = ax.errorbar(xs * f, med, yerr=[med - np.array(q1), np.array(q3) - med], color=COLOR[key], marker=mk,
                         mfc="white", mew=1.2, ms=5, ls="none", elinewidth=0.9, capsize=2, zorder=3)
        eb.lines[0].set_gid(f"ratio:{key}")
        lo_x.append(float(np.min(xs)))
        hi_x.append(float(np.max(xs)))
    kinds = list(llm)
    orig_gap = []
    for i, kind in enumerate(kinds):
        pts = np.array([(m, r) for m, r, *_ in llm[kind]])
        sc = ax.scatter(pts[:, 0], pts[:, 1], marker=marker_for(i), s=16, color=color("qronos/projection"),
                        edgecolor="#333333", lw=0.3, alpha=0.85, zorder=2.5)
        sc.set_gid(f"llm:{kind}")
        orig_gap += [abs(ro - r) for _, r, ro, _ in llm[kind] if ro is not None]
        lo_x.append(float(np.min(pts[:, 0])))
        hi_x.append(float(np.max(pts[:, 0])))
    ref_line(ax, 1.0, axis="y")
    ax.set_xscale("log")
    if lo_x:
        ax.set_xlim(min(lo_x) / 1.5, max(hi_x) * 1.5)
    if llm:
        n = sum(len(v) for v in llm.values())
        allr = np.array([r for v in llm.values() for _, r, *_ in v])
        pooled = {kind: float(np.median(np.concatenate([rows for *_, rows in llm[kind]]))) for kind in kinds}
        items = [f"{kind} {m:.2f}" for kind, m in sorted(pooled.items(), key=lambda kv: kv[1])]
        per_type = ",\n    ".join(", ".join(items[i:i + 4]) for i in range(0, len(items), 4))
        txt = (f"{n} real layers (filled, 4-bit), per layer {np.min(allr):.2f}–{np.max(allr):.2f};\n"
               f"median over the rows of each type:\n    {per_type}"
               + (f"\noriginal variant: within {max(orig_gap):.3f} of projection (not drawn)" if orig_gap else ""))
        ax.text(0.03, 0.03, txt, transform=ax.transAxes, fontsize=6.2, va="bottom", ha="left", color="#333333",
                zorder=Z_REF + 1, bbox=dict(boxstyle="round,pad=0.25", fc="white", ec="#bbbbbb", lw=0.5))
    ax.set_ylim(0, 1.25)
    ax.set_xlabel(r"relative mismatch $\|\tilde X - X\|_F \,/\, \|X\|_F$")
    ax.set_ylabel(r"$\|Xw - \tilde Xq\|_2$: Qronos / OPTQ on $\tilde X$ (per row)")
    ax.set_title("(b) Qronos / OPTQ on X̃, row by row")
    return kinds


def _panel_c(ax, sto, eta):
    groups = [(key, c) for key in T5 for c in sto.get(key, [])]
    if not groups:
        note(ax, "no stochastic Qronos cells in this study")
        return
    levels = sorted({level(c) for _, c in groups})
    pos_of = {lv: i for i, lv in enumerate(levels)}
    off = {"qronos/projection": -0.18, "qronos/original": 0.18}
    for key, c in groups:
        e = meas(c, "err_linf")
        col = COLOR[key]
        p = pos_of[level(c)] + off[key]
        bp = ax.boxplot([e], positions=[p], widths=0.3, whis=(1, 99), showfliers=False, patch_artist=True,
                        medianprops=dict(color="#333333", lw=1.0), boxprops=dict(facecolor=col, alpha=0.6, lw=0.6),
                        whiskerprops=dict(lw=0.7, color="#333333"), capprops=dict(lw=0.7, color="#333333"),
                        manage_ticks=False)
        bp["medians"][0].set_gid(f"median:{key}:{level(c):g}")
        rhs = claim_arrays(c, T5[key])[1]
        if rhs is not None:
            sc = ax.scatter([p], [_med(rhs)], marker="v", color=col, edgecolor="#333333", lw=0.4, s=34, zorder=Z_REF)
            sc.set_gid(f"T5:{key}:{level(c):g}")
    ax.set_xticks(range(len(levels)), [f"ε = {lv:g}" for lv in levels])
    ax.set_xlim(-0.6, len(levels) - 0.4)
    ax.set_yscale("log")
    plain_log_ticks(ax, "y")
    ax.set_xlabel("mismatch level")
    ax.set_ylabel(r"$\|Xw - \tilde Xq\|_\infty$")
    ax.set_title(f"(c) stochastic Qronos vs T5 (η = {eta:g})")


def draw(src):
    cells = src.study(STUDY, f"figure {NUMBER}")
    det, sto = split(cells)
    llm_cells, llm_camps = src.llm_cells()
    llm = llm_ratios(llm_cells)
    fig = new_figure(10.5, 4.7)
    gs = fig.add_gridspec(2, 3, width_ratios=[1.15, 1.15, 0.9], height_ratios=[1.0, 0.27])
    ax, axr, axs = (fig.add_subplot(gs[0, i]) for i in range(3))
    _panel_a(ax, det, fig)
    kinds = _panel_b(axr, det, llm)
    _panel_c(axs, sto, src.eta)
    for a in (ax, axr):
        plain_log_ticks(a, "x")
    plain_log_ticks(ax, "y")
    h, lab = [], []
    for key, label, mk, claim, sq, ls, dx in ALGS:
        col = COLOR[key]
        h.append((Line2D([], [], color=col, ls=ls, lw=1.4),
                  Line2D([], [], color=col, marker=mk, ls="none", mfc="white" if key != "optq" else col, mew=1.2)))
        lab.append(f"{label}: measured (marker), bound {claim} (line)")
    h += [Line2D([], [], color=REF, ls=(0, (1, 1.5)), lw=1.1), Line2D([], [], color=REF, ls="-.", lw=1.0),
          Line2D([], [], color="#333333", marker="v", ls="none", mfc="#bbbbbb", mew=0.4),
          Patch(facecolor="#dddddd", edgecolor="#333333", lw=0.6)]
    lab += [r"$\|(X - \tilde X)w\|_2$", r"$\rho_\lambda \leq \|(X - \tilde X)w\|_2$ (Qronos' floor)",
            "(c) T5 bound w.p. 1−η, in the variant's colour",
            "(c) box: quartiles over trials, whiskers 1–99 %"]
    leg_ax = fig.add_subplot(gs[1, :])
    leg_ax.set_axis_off()
    leg = leg_ax.legend(h, lab, loc="center left", ncols=2, fontsize=6.3,
                        handler_map={tuple: HandlerTuple(ndivide=None)})
    if kinds:
        leg_ax.add_artist(leg)
        hk = [Line2D([], [], marker=marker_for(i), ls="none", color="#bbbbbb", mec="#333333", mew=0.4)
              for i in range(len(kinds))]  # the shape names the type; the colour is the algorithm's
        leg_ax.legend(hk, kinds, loc="center right", ncols=2, fontsize=6.3,
                      title="(b) real layers (Qronos projection): marker = layer type", title_fontsize=6.4)
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.5)
    labels = LLM_PAIR + ("qronos-original",)
    read = [c for c in llm_cells if (c.get("config") or {}).get("label") in labels] if llm else []
    add_footer(fig, src.footer(cells + read, what=f"study {STUDY}", extra_campaigns=llm_camps if llm else ()))
    return fig
