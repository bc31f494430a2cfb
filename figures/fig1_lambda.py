"""Figure 1 — λ sweep: the ℓ2 error of deterministic OPTQ against the T1 bound and its looser forms.

Study ``lambda`` (OPTQ, nearest rounding on δZ, decreasing order, 64 weight rows per cell, one cell
per family and λ). Top row, per family: the empirical ‖X(w−q)‖₂ of every row (dots) and its
median (line), the damped quantity √(‖X(w−q)‖² + λ‖w−q‖²) that T1 bounds, and the three bounds of
claims T1.sum_c ((δ/2)√Σc_t), T1.explicit ((δ/2)√Σĉ_t) and T1.frobenius ((δ/2)√(‖X‖_F² + Nλ)).
Bottom row: the tightness lhs/rhs of each claim (median over rows; 1 = attained).

Every plotted value is read from the store: ``err_l2`` and the claims' stored ``lhs``/``rhs``.
"""

from __future__ import annotations

import numpy as np

from ._data import claim_arrays, meas
from ._style import add_footer, color, legend_axes, marker_for, new_figure, note, plain_log_ticks, ref_line

NUMBER = 1
STEM = "fig1_lambda"
STUDY = "lambda"
CLAIMS = ("T1.sum_c", "T1.explicit", "T1.frobenius")
TITLE = "Deterministic OPTQ: ℓ2 error against the T1 bound and its looser forms, as λ grows"

#: (claim, label, line style): one colour (deterministic OPTQ's bounds), three line styles and markers
BOUNDS = (
    ("T1.sum_c", r"T1: $(\delta/2)\sqrt{\Sigma_t c_t}$", "-"),
    ("T1.explicit", r"T1 explicit: $(\delta/2)\sqrt{\Sigma_t \hat c_t}$", "--"),
    ("T1.frobenius", r"T1 Frobenius: $(\delta/2)\sqrt{\|X\|_F^2 + N\lambda}$", "-."),
)


def lam_rel(cell) -> float:
    """λ relative to mean_t ‖X_t‖² (the cell's configuration; absolute λ when no relative one)."""
    cfg = cell["config"]
    if "lam_rel" in cfg:
        return float(cfg["lam_rel"])
    lam = meas(cell, "lam")
    return float(lam[0]) if lam is not None else float("nan")


def by_family(cells, src=None, study: str = STUDY) -> dict:
    """``{family: cells sorted by λ}``, families in the campaign's order (first seen without ``src``)."""
    out: dict = {}
    for c in cells:
        out.setdefault(c["config"].get("family", "?"), []).append(c)
    fams = src.ordered(out, study, "family") if src is not None else list(out)
    return {f: sorted(out[f], key=lam_rel) for f in fams}


def _median(a):
    return float(np.median(a)) if a is not None and np.size(a) else float("nan")


def draw(src):
    cells = src.study(STUDY, f"figure {NUMBER}")
    fams = by_family(cells, src)
    k = len(fams)
    fig = new_figure(3.4 * k + 0.4, 5.9)
    gs = fig.add_gridspec(3, k, height_ratios=[2.2, 1.0, 0.32])
    axes = np.empty((2, k), dtype=object)
    for j in range(k):
        axes[0, j] = fig.add_subplot(gs[0, j])
        axes[1, j] = fig.add_subplot(gs[1, j], sharex=axes[0, j])
        axes[0, j].tick_params(labelbottom=False)
    for j, (fam, cs) in enumerate(fams.items()):
        ax, axr = axes[0, j], axes[1, j]
        x = np.array([lam_rel(c) for c in cs])
        # every row's error, then the median
        xs, ys = [], []
        for xi, c in zip(x, cs):
            e = meas(c, "err_l2")
            if e is not None:
                xs += [xi] * e.size
                ys += list(e)
        if xs:
            pts = ax.scatter(xs, ys, s=5, color=color("observed"), alpha=0.18, lw=0,
                             label=r"observed $\|X(w-q)\|_2$, each row")
            pts.set_gid("rows:err_l2")
        med = np.array([_median(meas(c, "err_l2")) for c in cs])
        ln, = ax.plot(x, med, color=color("observed"), marker="o", label=r"observed $\|X(w-q)\|_2$, median")
        ln.set_gid("err_l2")
        lhs = np.array([_median(claim_arrays(c, "T1.sum_c")[0]) for c in cs])
        ln, = ax.plot(x, lhs, color="#999999", ls=":", marker=".",
                      label=r"$\sqrt{\|X(w-q)\|^2 + \lambda\|w-q\|^2}$, median")
        ln.set_gid("lhs:T1.sum_c")
        missing = []
        col = color("nearest")
        for i, (cid, label, ls) in enumerate(BOUNDS):
            rhs = np.array([_median(claim_arrays(c, cid)[1]) for c in cs])
            if not np.isfinite(rhs).any():
                missing.append(cid)
                continue
            ln, = ax.plot(x, rhs, color=col, ls=ls, marker=marker_for(i + 1), ms=3.5, mfc="white", label=label,
                          zorder=4)
            ln.set_gid(f"rhs:{cid}")
            lhs_c = [claim_arrays(c, cid) for c in cs]
            rat = np.array([_median(l / r) if l is not None else np.nan for l, r in lhs_c])
            ln, = axr.plot(x, rat, color=col, ls=ls, marker=marker_for(i + 1), ms=3.5, mfc="white", label=cid)
            ln.set_gid(f"ratio:{cid}")
        if missing:
            note(ax, "not in scope / not stored: " + ", ".join(missing), loc="bottom")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"data family: {fam}  (m={cs[0]['config'].get('m')}, N={cs[0]['config'].get('N')})")
        axr.set_xscale("log")
        axr.set_ylim(0, 1.05)
        ref_line(axr, 1.0, axis="y")
        axr.set_xlabel(r"$\lambda \,/\, \mathrm{mean}_t \|X_t\|^2$  (relative damping)")
        for a, which in ((ax, "x"), (ax, "y"), (axr, "x")):
            plain_log_ticks(a, which)
        if j == 0:
            ax.set_ylabel("ℓ2 output error (units of Xw)")
            axr.set_ylabel("tightness lhs/rhs\n(median over rows)")
    h, lab = axes[0, 0].get_legend_handles_labels()
    legend_axes(fig.add_subplot(gs[2, :]), h, lab, ncols=3, fontsize=6.6)
    axes[1, -1].legend(loc="lower right", fontsize=6.5, ncols=3)
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
