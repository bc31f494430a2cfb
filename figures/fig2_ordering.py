"""Figure 2 — processing order: error, bound and Σc_t for natural, decreasing, increasing and random orders.

Study ``ordering`` (OPTQ, nearest rounding on δZ, λ = 0.01·mean‖X_t‖², 64 rows; the four orders of
one family share the same data). (a) The median ‖X(w−q)‖₂ per order (bars, whiskers: min–max over
rows) and the T1 bound (δ/2)√Σc_t (black ticks). (b) Σ_t c_t relative to the order-free AM–GM floor
N·(det H_λ)^{1/N} of claim O1.amgm (≥ 1 for every order; O1.det: Π_t c_t = det H_λ, so an order only
redistributes the c_t). (c) The profile c_t against the processing position t for one family.

"Decreasing" (GPTQ's act_order) minimising Σc_t is a measured finding here, not a theorem (SPEC O1:
it does not in general). Plotted values: ``err_l2``, ``T1.sum_c/rhs``, ``O1.amgm/lhs`` (the floor) and ``/rhs`` (Σc_t), ``c``.
"""

from __future__ import annotations

import numpy as np

from ._data import claim_arrays, meas
from ._style import add_footer, collect_legend, color, legend_axes, new_figure, note, plain_log_ticks, ref_line

NUMBER = 2
STEM = "fig2_ordering"
STUDY = "ordering"
CLAIMS = ("O1.det", "O1.amgm", "T1.sum_c")
TITLE = "Processing order: error, T1 bound and Σc_t (O1)"

ORDERS = ("natural", "decreasing", "increasing", "random")
HATCH = {"natural": "", "decreasing": "///", "increasing": "...", "random": "xx"}
#: orders carry no colour of their own (a colour means one thing in every figure): grey levels, hatches
FACE = {"natural": "#ffffff", "decreasing": "#666666", "increasing": "#bbbbbb", "random": "#dddddd"}
LINE = {"natural": ("#333333", "-"), "decreasing": ("#333333", "--"), "increasing": ("#999999", "-."),
        "random": ("#999999", ":")}
LABEL = {"decreasing": "decreasing (act_order)"}


def table(cells) -> dict:
    """``{family: {order: cell}}``, families in first-seen order."""
    out: dict = {}
    for c in cells:
        out.setdefault(c["config"].get("family", "?"), {})[c["config"].get("order", "natural")] = c
    return out


def _orders(tab):
    seen = {o for d in tab.values() for o in d}
    return [o for o in ORDERS if o in seen] + sorted(seen - set(ORDERS))


def draw(src):
    cells = src.study(STUDY, f"figure {NUMBER}")
    tab = table(cells)
    fams = src.ordered(tab, STUDY, "family")
    orders = _orders(tab)
    fig = new_figure(10.0, 4.1)
    gs = fig.add_gridspec(2, 3, width_ratios=[1.25, 1.25, 1.0], height_ratios=[1.0, 0.12])
    ax_e, ax_s, ax_c = (fig.add_subplot(gs[0, i]) for i in range(3))
    width = 0.8 / max(1, len(orders))
    xs = np.arange(len(fams))
    for i, o in enumerate(orders):
        face = FACE.get(o, "#eeeeee")
        pos = xs - 0.4 + width * (i + 0.5)
        med, lo, hi, bound, rel = [], [], [], [], []
        for f in fams:
            c = tab[f].get(o)
            e = meas(c, "err_l2") if c else None
            med.append(float(np.median(e)) if e is not None and e.size else np.nan)
            lo.append(float(np.min(e)) if e is not None and e.size else np.nan)
            hi.append(float(np.max(e)) if e is not None and e.size else np.nan)
            rhs = claim_arrays(c, "T1.sum_c")[1] if c else None
            bound.append(float(np.median(rhs)) if rhs is not None else np.nan)
            floor, sc = claim_arrays(c, "O1.amgm") if c else (None, None)  # lhs: the floor, rhs: Σ_t c_t
            rel.append(float(sc[0] / floor[0]) if floor is not None else np.nan)
        med, lo, hi = map(np.array, (med, lo, hi))
        bars = ax_e.bar(pos, med, width, color=face, hatch=HATCH.get(o, ""), edgecolor="#333333", lw=0.5,
                        label=LABEL.get(o, o), yerr=np.vstack([med - lo, hi - med]),
                        error_kw=dict(lw=0.7, capsize=1.5, ecolor="#333333"))
        for b in bars.patches:
            b.set_gid(f"err_l2:{o}")
        mk = ax_e.scatter(pos, bound, marker="_", s=140, color=color("nearest"), lw=1.8, zorder=4,
                          label=r"T1 bound $(\delta/2)\sqrt{\Sigma_t c_t}$" if i == 0 else None)
        mk.set_gid(f"bound:{o}")
        bars = ax_s.bar(pos, rel, width, color=face, hatch=HATCH.get(o, ""), edgecolor="#333333", lw=0.5,
                        label=LABEL.get(o, o))
        for b in bars.patches:
            b.set_gid(f"sum_c_rel:{o}")
    for ax in (ax_e, ax_s):
        ax.set_xticks(xs, fams)
        ax.set_xlabel("data family")
        ax.grid(axis="x", visible=False)
    ax_e.set_yscale("log")
    ax_e.set_ylabel(r"$\|X(w-q)\|_2$, median over rows")
    plain_log_ticks(ax_e, "y")
    ax_e.set_title("(a) ℓ2 error (whiskers: min–max) and T1 bound")
    ref_line(ax_s, 1.0, axis="y", ls="--", label=r"AM–GM floor $N(\det H_\lambda)^{1/N}$ (every order)")
    ax_s.set_ylabel(r"$\Sigma_t c_t \,/\, N(\det H_\lambda)^{1/N}$")
    ax_s.set_title(r"(b) $\Sigma_t c_t$ relative to the order-free floor (O1)")
    top = np.nanmax([p.get_height() for p in ax_s.patches] + [1.0])
    ax_s.set_ylim(0, top * 1.15)

    # (c) the c_t profile of the family whose Σc_t depends most on the order
    def spread(f):
        v = [float(np.sum(meas(c, "c"))) for c in tab[f].values() if meas(c, "c") is not None]
        return (max(v) / min(v)) if v and min(v) > 0 else 0.0
    fam = max(fams, key=spread)
    any_c = False
    for i, o in enumerate(orders):
        c = tab[fam].get(o)
        cv = meas(c, "c") if c else None
        if cv is None:
            continue
        any_c = True
        lc, ls = LINE.get(o, ("#999999", "-"))
        ln, = ax_c.plot(np.arange(1, cv.size + 1), cv, color=lc, lw=1.2, ls=ls, label=LABEL.get(o, o))
        ln.set_gid(f"c:{o}")
    if any_c:
        ax_c.set_yscale("log")
        plain_log_ticks(ax_c, "y")
        ax_c.legend(fontsize=6.0)
    else:
        note(ax_c, "$c_t$ not stored for this family")
    ax_c.set_xlabel("processing position t")
    ax_c.set_ylabel(r"$c_t$ (units of $\|X_t\|^2$)")
    ax_c.set_title(f"(c) $c_t$ along the order ({fam})")
    h, lab = collect_legend([ax_e, ax_s])
    legend_axes(fig.add_subplot(gs[1, :]), h, lab, ncols=6, fontsize=6.5)
    fig.suptitle(f"Fig. {NUMBER}. " + TITLE.replace("Σc_t", r"$\Sigma_t c_t$"), fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
