"""Figure 6 — tightness: the distribution of empirical/bound ratios across data families and real LLM layers.

Every cell of the campaign (and of the latest real-LLM campaign in the store, when there is one;
its cells carry an ``llm`` entry in their configuration). For each bound claim, each in-scope row
gives one ratio lhs/rhs from the stored ``<claim>/lhs`` and ``<claim>/rhs`` (√ of the ratio for the
claims on squared norms, so that every ratio compares norms; ratios ≤ 1 mean the bound held, a
ratio near 1 that it is nearly attained — T1 is attained by orthogonal columns). Boxes: all rows
of the panel pooled (quartiles, whiskers 5–95 %); markers: the worst (largest) ratio of each data
family (left) or LLM layer type (right; drawn only when the store holds real-LLM cells), told apart
by marker shape (white, dark grey edge: no colour, so no colour of the other figures is borrowed).
Ratios above 1 are legitimate for the probability claims (marked †: T2.tail, T2.hp.*, T3.drift_tail,
T5.*: a row exceeds its bound with probability ≤ η, which the campaign tests with an exact binomial
test), never for the deterministic ones; the note under the panels says so, and speaks of
deterministic ratios above 1 only when the drawn data have one.
"""

from __future__ import annotations

import matplotlib
import numpy as np

from ._data import group_of, is_llm, llm_parts, ratio
from ._style import Z_REF, add_footer, collect_legend, fit_width, marker_for, new_figure, plain_log_ticks, ref_line

NUMBER = 6
STEM = "fig6_tightness"
STUDY = None  # every cell
#: (claim, on squared norms?) in display order, top to bottom
BOUNDS = (
    ("T1.sum_c", False),
    ("T1.explicit", False),
    ("T1.frobenius", False),
    ("P1.drift", False),
    ("T2.tail", False),
    ("T2.hp.hoeffding", False),
    ("T2.hp.pi8", False),
    ("T2.hp.pi2", False),
    ("T2.hp.explicit", False),
    ("T3.drift_tail", False),
    ("T3.drift_bound", True),
    ("T4.rho_le_mismatch", False),
    ("T4.projection.bound", True),
    ("T4.original.bound", True),
    ("T4.optq_mismatch", False),
    ("T5.projection", False),
    ("T5.original", False),
)
CLAIMS = tuple(c for c, _ in BOUNDS)
#: horizontal boxes (``orientation`` since Matplotlib 3.10; ``vert`` before, deprecated after)
HORIZONTAL = ({"orientation": "horizontal"} if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
              else {"vert": False})
TITLE = "Tightness: empirical / bound across data families and real LLM layers"
TITLE_SYNTH = "Tightness: empirical / bound across data families"
#: claims on a probability (a row may exceed its bound with probability ≤ η)
PROBABILITY = ("T2.tail", "T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.pi2", "T2.hp.explicit", "T3.drift_tail",
               "T5.projection", "T5.original")


def claim_tick(cid: str) -> str:
    return f"{cid} †" if cid in PROBABILITY else cid


def ratios(cells, groups_of) -> dict:
    """``{claim: {group: ratios}}`` over ``cells``; ``groups_of(cell)`` names the cell's group."""
    out: dict = {c: {} for c, _ in BOUNDS}
    for cell in cells:
        g = groups_of(cell)
        for cid, sq in BOUNDS:
            r = ratio(cell, cid, squared=sq)
            if r is not None and r.size:
                out[cid].setdefault(g, []).append(r)
    return {cid: {g: np.concatenate(v) for g, v in d.items()} for cid, d in out.items()}


def llm_group_fn(cells):
    """Layer type, prefixed by the model when the cells come from more than one model."""
    models = {llm_parts(c["config"])[0] for c in cells}
    multi = len(models) > 1

    def fn(c):
        model, kind = llm_parts(c["config"])
        return f"{model}:{kind}" if multi and model else kind
    return fn


def _panel(ax, data: dict, claims: list, group_order: list, *, gid: str):
    y = np.arange(len(claims))[::-1]
    ypos = dict(zip(claims, y))
    for cid in claims:
        pooled = np.concatenate(list(data[cid].values())) if data[cid] else np.zeros(0)
        pooled = pooled[pooled > 0]
        if pooled.size:
            bp = ax.boxplot([pooled], positions=[ypos[cid]], **HORIZONTAL, widths=0.55, whis=(5, 95),
                            showfliers=False, patch_artist=True, manage_ticks=False,
                            boxprops=dict(facecolor="#dddddd", edgecolor="#333333", lw=0.6),
                            medianprops=dict(color="#333333", lw=1.0), whiskerprops=dict(lw=0.7, color="#333333"),
                            capprops=dict(lw=0.7, color="#333333"))
            bp["medians"][0].set_gid(f"{gid}:median:{cid}")
    for i, g in enumerate(group_order):
        xs, ys = [], []
        for cid in claims:
            r = data[cid].get(g)
            if r is not None and r.size:
                xs.append(float(np.max(r)))
                ys.append(ypos[cid] + 0.28 * ((i % 5) / 4 - 0.5) if len(group_order) > 1 else ypos[cid])
        if xs:
            sc = ax.scatter(xs, ys, s=20, marker=marker_for(i), facecolor="white", edgecolor="#333333", lw=0.7,
                            zorder=3, label=g)
            sc.set_gid(f"{gid}:worst:{g}")
    ref_line(ax, 1.0, ls="--", zorder=Z_REF)
    ax.set_yticks(y, [claim_tick(c) for c in claims])
    ax.set_xscale("log")
    ax.set_xlabel("empirical / bound (per row; 1 = bound attained)")
    ax.set_ylim(-0.7, len(claims) - 0.3)


def draw(src):
    cells = src.cells()
    llm, llm_camps = src.llm_cells()
    synth = [c for c in cells if not is_llm(c)]
    if not synth and not llm:
        from ._data import FigureDataError, verify_command

        raise FigureDataError(f"figure {NUMBER} needs finished cells; campaign {src.id} has none; run "
                              f"`{verify_command(src.campaign['name'], src._store_arg)}`")
    ds = ratios(synth, lambda c: group_of(c)[1])
    dl = ratios(llm, llm_group_fn(llm))
    used = [cid for cid, _ in BOUNDS if ds[cid] or dl[cid]]
    main_h = 0.8 + 0.25 * max(4, len(used))
    two = bool(llm)
    fig = new_figure(10.0 if two else 6.5, main_h + 1.6)
    gs = fig.add_gridspec(2, 2 if two else 1, height_ratios=[main_h, 0.95], width_ratios=[1.25, 1.0] if two else None)
    axs = fig.add_subplot(gs[0, 0])
    fam_order = list(dict.fromkeys(group_of(c)[1] for c in synth))
    _panel(axs, ds, used, fam_order, gid="synthetic")
    axs.set_title(f"(a) synthetic data families ({len(synth)} cells)")
    panels = [axs]
    if two:
        axl = fig.add_subplot(gs[0, 1], sharey=axs, sharex=axs)
        fn = llm_group_fn(llm)
        llm_order = list(dict.fromkeys(fn(c) for c in llm))
        _panel(axl, dl, used, llm_order, gid="llm")
        axl.set_title(f"(b) real LLM layers by type ({len(llm)} cells)")
        axl.tick_params(labelleft=False)
        panels.append(axl)
    for ax in panels:
        plain_log_ticks(ax, "x")
    leg = fig.add_subplot(gs[1, :])
    leg.set_axis_off()
    h1, l1 = collect_legend([axs])
    if h1:
        first = leg.legend(h1, l1, loc="upper left" if two else "upper center", ncols=4, fontsize=6.3,
                           title="worst row of each data family", title_fontsize=6.5)
        leg.add_artist(first)
    if two:
        h2, l2 = collect_legend([panels[1]])
        if h2:
            leg.legend(h2, l2, loc="upper right", ncols=4, fontsize=6.3, title="worst row of each LLM layer type",
                       title_fontsize=6.5)
    notes = ["† probability claims: a row may exceed its bound (ratio above 1) with probability ≤ η; "
             "the campaign judges them by an exact binomial test."]
    over = []
    for tag, d in (("(a)", ds), ("(b)", dl)):
        for cid, _ in BOUNDS:
            worst = max((float(np.max(r)) for r in d[cid].values() if r.size), default=0.0)
            if cid not in PROBABILITY and cid in used and worst > 1 + 1e-9:
                over.append(f"{cid} in {tag}, at most {worst:.4g}")
    if over:
        notes.append("Deterministic claims above 1 (by more than 1e-9): " + "; ".join(over) + ". A row counts as "
                     "violated only beyond the run's measured floating-point deviation (paper_checks.md).")
    leg.text(0.5, 0.0, fit_width(fig, "\n".join(notes), 6.3), transform=leg.transAxes, ha="center", va="bottom",
             fontsize=6.3,
             color="#333333")
    fig.suptitle(f"Fig. {NUMBER}. {TITLE if two else TITLE_SYNTH}", fontsize=9.5)
    add_footer(fig, src.footer(synth + llm, what="all studies", extra_campaigns=llm_camps))
    return fig
