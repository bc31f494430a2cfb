"""Figure 9 — what the alphabet conditions need on real layers: per layer type, the K (levels per side,
in the grid's step) that P1 and T3 need, against the K that 3- and 4-bit grids give.

Reads the real-LLM campaign of the store (:meth:`figures._data.Source.llm_cells`): the cells of the
per-row GPTQ grids of :data:`verify.llm.report.ALPHABET_GRIDS` (OPTQ, nearest rounding, 4-bit and
3-bit, asymmetric min/max per row), one panel each. Per row of every layer, the K the uniform
conditions need comes from the stored ``w_over_delta_max``, ``drift_l1_max`` and ``drift_l2_max`` by
:func:`verify.llm.report.alphabet_k_rows` — the same function as the real-LLM report's table "What
the alphabet conditions need (P1, T3)":

* P1 (nearest rounding): ``K ≥ ‖w‖∞/δ + ½·max_t‖B_{:,t}‖₁ − ½``,
* T3 (stochastic rounding, w.p. ≥ 1−η, s² = δ²/4): ``K ≥ ‖w‖∞/δ + (s/δ)·max_t‖B_{:,t}‖₂·√(2 log(2N/η))``

(η of the campaign). Boxes: all rows of the layers of one type (quartiles, whiskers from the
smallest to the largest row). Grey lines: the K per side a b-bit grid with the same step gives,
``(2^b − 1)/2``; the right axis reads K as the bits such a grid needs, ``log2(2K + 1)`` (a K between
two lines needs the upper line's bits). ``‖w‖∞/δ`` alone already reaches the grid's own line (the
grid is fitted to the weights), so what the conditions ask for beyond it is headroom for the drift.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.ticker import NullLocator

from verify.llm.report import ALPHABET_GRIDS, LAYER_TYPES, alphabet_k_rows, bits_for_k, grid_half_range

from ._data import FigureDataError, eta_of, llm_parts, verify_command
from ._style import add_footer, collect_legend, color, legend_axes, new_figure, note, plain_log_ticks, ref_line

NUMBER = 9
STEM = "fig9_alphabet_llm"
STUDY = None
#: drawn from the store's real-LLM campaign only (not from the selected synthetic campaign)
REAL_LLM = True
CLAIMS = ("P1", "T3.alphabet")
TITLE = "Alphabet size on real layers: the K that P1 and T3 need against what 3- and 4-bit grids give"

DET, STO = color("nearest"), color("hoeffding")
#: condition -> (colour, legend label)
COND = {
    "p1": (DET, r"P1 (nearest rounding): $K \geq \|w\|_\infty/\delta + \frac{1}{2}\mathrm{max}_t\|B_{:,t}\|_1"
                r" - \frac{1}{2}$"),
    "t3": (STO, r"T3 (stochastic rounding, $s^2 = \delta^2/4$, w.p. $\geq 1-\eta$): $K \geq \|w\|_\infty/\delta"
                r" + (s/\delta)\mathrm{max}_t\|B_{:,t}\|_2\sqrt{2\log(2N/\eta)}$"),
}
#: reference line style per bit width of the grid
GRID_LS = {2: "-.", 3: ":", 4: "--", 5: (0, (6, 2, 1, 2))}
W_LABEL = r"$\|w\|_\infty/\delta$, median row (the weights alone, no drift)"


def _group_key(cfg) -> tuple:
    model, kind = llm_parts(cfg)
    rank = LAYER_TYPES.index(kind) if kind in LAYER_TYPES else len(LAYER_TYPES)
    return (model or "", rank, kind)


def rows_by_group(cells, campaigns) -> tuple[list, dict]:
    """``(groups, {label: {group: rows}})``: per grid label of :data:`ALPHABET_GRIDS` and layer type
    (``model: type`` when the cells come from several models), :func:`alphabet_k_rows` over the cells,
    each campaign's cells with that campaign's η."""
    models = {llm_parts(c["config"])[0] for c in cells}
    eta = {c["id"]: eta_of(c) for c in campaigns}
    split = defaultdict(list)  # (group key, campaign) -> cells
    for c in cells:
        split[(_group_key(c["config"]), c.get("_campaign", campaigns[0]["id"]))].append(c)
    out: dict = {label: {} for label in ALPHABET_GRIDS}
    keys = sorted({k for k, _ in split})
    names = {k: (f"{k[0]}: {k[2]}" if len(models) > 1 else k[2]) for k in keys}
    for label in ALPHABET_GRIDS:
        for k in keys:
            parts = [alphabet_k_rows(cs, label, eta[camp]) for (kk, camp), cs in split.items() if kk == k]
            parts = [p for p in parts if p is not None]
            if parts:
                out[label][names[k]] = {f: np.concatenate([p[f] for p in parts]) for f in ("w", "p1", "t3")}
    groups = [names[k] for k in keys if any(names[k] in out[lab] for lab in out)]
    return groups, {lab: d for lab, d in out.items() if d}


def _box(ax, data, x, cond, gid):
    col = COND[cond][0]
    bp = ax.boxplot([data], positions=[x], widths=0.34, whis=(0, 100), showfliers=False, patch_artist=True,
                    manage_ticks=False, boxprops=dict(facecolor=to_rgba(col, 0.35), edgecolor=col, lw=0.8),
                    medianprops=dict(color="#333333", lw=1.1), whiskerprops=dict(color=col, lw=0.8),
                    capprops=dict(color=col, lw=0.8), label=COND[cond][1])
    bp["boxes"][0].set_gid(gid)
    bp["medians"][0].set_gid(f"median:{gid}")
    bp["caps"][1].set_gid(f"max:{gid}")
    bp["caps"][0].set_gid(f"min:{gid}")
    return bp["boxes"][0]


def _panel(ax, label, bits, data, groups):
    xs = np.arange(len(groups), dtype=float)
    allv = []
    for x, g in zip(xs, groups):
        r = data.get(g)
        if r is None:
            continue
        for cond, dx in (("p1", -0.2), ("t3", 0.2)):
            _box(ax, r[cond], x + dx, cond, f"{cond}:{label}:{g}")
            allv += [float(np.min(r[cond])), float(np.max(r[cond]))]
        sc = ax.scatter([x], [float(np.median(r["w"]))], marker="_", s=140, color="#444444", lw=1.6, zorder=3,
                        label=W_LABEL)
        sc.set_gid(f"w:{label}:{g}")
        allv.append(float(np.median(r["w"])))
    lines = sorted({grid_half_range(b) for b in ALPHABET_GRIDS.values()})
    lo = min(allv + lines) / 1.6
    hi = max(allv + lines) * 1.35
    for b in sorted(set(ALPHABET_GRIDS.values()), reverse=True):
        K = grid_half_range(b)
        own = " (the grid of this panel)" if b == bits else ""
        ln = ref_line(ax, K, axis="y", ls=GRID_LS.get(b, "--"), lw=1.1 if own else 0.9,
                      label=f"a {b}-bit grid at this step: K = {K:g} per side")
        ln.set_gid(f"grid:{b}bit:{label}")
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xticks(xs, groups, rotation=30, ha="right", rotation_mode="anchor")
    ax.grid(axis="x", visible=False)
    plain_log_ticks(ax, "y")
    sec = ax.secondary_yaxis("right", functions=(lambda K: np.log2(2 * np.asarray(K) + 1),
                                                 lambda b: (np.exp2(np.asarray(b)) - 1) / 2))
    lo_b, hi_b = math.log2(2 * lo + 1), math.log2(2 * hi + 1)
    ticks = [b for b in range(1, 17) if lo_b <= b <= hi_b]
    sec.set_yticks(ticks, [str(b) for b in ticks])
    sec.yaxis.set_minor_locator(NullLocator())
    sec.set_ylabel(r"bits at this step, $\log_2(2K + 1)$")
    # how many rows the b-bit grid of this panel serves
    half = grid_half_range(bits)
    n = sum(data[g]["p1"].size for g in data)
    p1 = sum(int(np.sum(data[g]["p1"] <= half)) for g in data)
    t3 = sum(int(np.sum(data[g]["t3"] <= half)) for g in data)
    med = {c: [float(np.median(data[g][c])) for g in groups if g in data] for c in ("p1", "t3")}
    note(ax, f"K ≤ {half:g} (this grid) on {p1:,} of {n:,} rows for P1, {t3:,} for T3\n"
             f"median row by type: P1 needs K {_span(med['p1'])}, T3 {_span(med['t3'])}", loc="bottom")


def _span(values) -> str:
    """``24–47 (6–7 bits)``: the range of K and of the bits it takes (:func:`bits_for_k`)."""
    lo, hi = min(values), max(values)
    k = f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}–{hi:.0f}"
    b0, b1 = bits_for_k(lo), bits_for_k(hi)
    return f"{k} ({b0} bits)" if b0 == b1 else f"{k} ({b0}–{b1} bits)"


def draw(src):
    cells, camps = src.llm_cells()
    if not cells:
        raise FigureDataError(f"figure {NUMBER} needs a real-LLM campaign in the store {src.path}; run "
                              f"`{verify_command('real-llm', src._store_arg)}`")
    groups, rows = rows_by_group(cells, camps)
    if not rows:
        raise FigureDataError(
            f"figure {NUMBER} needs the real-LLM cells {', '.join(ALPHABET_GRIDS)} with the stored measurements "
            f"w_over_delta_max, drift_l1_max and drift_l2_max; re-run `{verify_command('real-llm', src._store_arg)}` "
            "with this version")
    used = [c for c in cells if c["config"].get("label") in rows and "w_over_delta_max" in (c.get("measurements") or {})]
    panels = sorted(rows, key=lambda lab: -ALPHABET_GRIDS[lab])
    fig = new_figure(4.6 * len(panels) + 0.6, 5.4)
    gs = fig.add_gridspec(2, len(panels), height_ratios=[1.0, 0.2])
    axes = []
    for i, label in enumerate(panels):
        ax = fig.add_subplot(gs[0, i])
        bits = ALPHABET_GRIDS[label]
        _panel(ax, label, bits, rows[label], groups)
        ax.set_title(f"({'abcdefgh'[i]}) in steps δ of the {bits}-bit grid (cells '{label}')")
        ax.set_ylabel("K needed (levels per side, in steps δ)")
        axes.append(ax)
    h, lab = collect_legend(axes)
    legend_axes(fig.add_subplot(gs[1, :]), h, lab, ncols=2, fontsize=6.3)
    eta = sorted({eta_of(c) for c in camps})
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}\n(η = {', '.join(f'{e:g}' for e in eta)}; boxes: all rows of the "
                 "layers of a type, quartiles, whiskers from the smallest to the largest row)", fontsize=9.2)
    add_footer(fig, src.footer(used, what="real-LLM layers", extra_campaigns=camps, skip_unused=True))
    return fig
