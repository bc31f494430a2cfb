"""Figure 4 — Qronos against OPTQ on mismatched inputs X̃ ≠ X, as the mismatch grows (T4, T5).

Study ``mismatch`` (family ``tall``, X̃ = X + noise of relative level ε; the algorithms at one level
share the same X, W and X̃). (a) The error ‖Xw − X̃q‖₂ (median over rows, markers) of Qronos
(projection and original variants) and of OPTQ run on X̃ from w, with each one's deterministic bound
(lines of the same colour): √(ρ_λ² + (δ²/4)Σc̃_t) (T4.projection.bound), the original variant's
bound (T4.original.bound), and ‖(X−X̃)w‖ + (δ/2)√Σc̃_t (T4.optq_mismatch); in grey ‖(X−X̃)w‖ and
ρ_λ ≤ ‖(X−X̃)w‖ (T4.rho_le_mismatch). (b) Tightness lhs/rhs of those bounds (√ of the ratio for the
bounds on squared norms). (c) Stochastic Qronos: the distribution over trials of ‖Xw − X̃q‖∞ (boxes:
quartiles, whiskers 1–99 %) and the T5 bound at probability η (markers).

Values from the store: ``err_l2``, ``err_linf`` and the claims' lhs/rhs.
"""

from __future__ import annotations

import numpy as np

from ._data import claim_arrays, meas
from ._style import OKABE_ITO, add_footer, collect_legend, legend_axes, new_figure, note

NUMBER = 4
STEM = "fig4_mismatch"
STUDY = "mismatch"
CLAIMS = ("T4.projection.bound", "T4.original.bound", "T4.optq_mismatch", "T4.rho_le_mismatch", "T5.projection",
          "T5.original")
TITLE = "Qronos vs OPTQ on mismatched inputs X̃ ≠ X (T4, T5)"

#: (algorithm key, label, colour, marker, bound claim, bound on squared norms?)
ALGS = (
    ("qronos/projection", "Qronos (projection)", OKABE_ITO["blue"], "o", "T4.projection.bound", True),
    ("qronos/original", "Qronos (original)", OKABE_ITO["green"], "s", "T4.original.bound", True),
    ("optq", "OPTQ on X̃", OKABE_ITO["vermillion"], "^", "T4.optq_mismatch", False),
)
T5 = {"qronos/projection": "T5.projection", "qronos/original": "T5.original"}


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


def draw(src):
    cells = src.study(STUDY, f"figure {NUMBER}")
    det, sto = split(cells)
    fig = new_figure(10.5, 4.6)
    gs = fig.add_gridspec(2, 3, width_ratios=[1.3, 1.0, 1.0], height_ratios=[1.0, 0.2])
    ax, axr, axs = (fig.add_subplot(gs[0, i]) for i in range(3))
    for key, label, col, mk, claim, sq in ALGS:
        cs = det.get(key, [])
        if not cs:
            continue
        x = np.array([level(c) for c in cs])
        err = np.array([_med(meas(c, "err_l2")) for c in cs])
        hollow = key == "qronos/projection"  # drawn larger and hollow: the variants often coincide
        ln, = ax.plot(x, err, color=col, marker=mk, ls="none", ms=8 if hollow else 4.5,
                      mfc="none" if hollow else col, mew=1.3, label=f"{label}: ‖Xw − X̃q‖₂")
        ln.set_gid(f"err:{key}")
        rhs = np.array([_med(claim_arrays(c, claim)[1]) for c in cs])
        ln, = ax.plot(x, np.sqrt(rhs) if sq else rhs, color=col, ls=":" if key == "qronos/original" else "--",
                      lw=2.2 if hollow else 1.2, label=f"{label}: bound ({claim})")
        ln.set_gid(f"bound:{key}")
        rat = []
        for c in cs:
            lhs, r = claim_arrays(c, claim)
            rat.append(_med(np.sqrt(lhs / r) if sq else lhs / r) if lhs is not None else np.nan)
        ln, = axr.plot(x, rat, color=col, marker=mk, ls="-", lw=2.2 if hollow else 1.2, ms=8 if hollow else 4.5,
                       mfc="none" if hollow else col, label=claim)
        ln.set_gid(f"ratio:{key}")
    # ‖(X − X̃)w‖ and ρ_λ: from the OPTQ cells (any cell with X̃ stores them; the data are shared)
    ref = det.get("optq") or det.get("qronos/projection") or next(iter(det.values()), [])
    if ref:
        x = np.array([level(c) for c in ref])
        mis = np.array([_med(claim_arrays(c, "T4.rho_le_mismatch")[1]) for c in ref])
        ln, = ax.plot(x, mis, color="#555555", ls=":", lw=1.2, label="‖(X − X̃)w‖₂")
        ln.set_gid("mismatch")
    proj = det.get("qronos/projection", [])
    if proj:
        x = np.array([level(c) for c in proj])
        rho = np.array([_med(claim_arrays(c, "T4.rho_le_mismatch")[0]) for c in proj])
        ln, = ax.plot(x, rho, color="#999999", ls="-.", lw=1.0, label="ρ_λ (Qronos' floor)")
        ln.set_gid("rho")
    if not det:
        note(ax, "no deterministic mismatch cells")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mismatch level ε  (X̃ = X + ε·rms(X)·Gaussian noise)")
    ax.set_ylabel("‖Xw − X̃q‖₂, median over rows (units of Xw)")
    ax.set_title("(a) error and T4 bounds")
    axr.set_xscale("log")
    axr.set_ylim(0, 1.05)
    axr.axhline(1, color="#999999", lw=0.8)
    axr.set_xlabel("mismatch level ε")
    axr.set_ylabel("tightness lhs/rhs (median over rows)")
    axr.set_title("(b) tightness of the T4 bounds")
    axr.legend(fontsize=6.2, loc="lower right")

    # (c) stochastic Qronos, ℓ∞ against T5
    groups = [(key, c) for key in T5 for c in sto.get(key, [])]
    if groups:
        levels = sorted({level(c) for _, c in groups})
        pos_of = {lv: i for i, lv in enumerate(levels)}
        off = {"qronos/projection": -0.18, "qronos/original": 0.18}
        for key, c in groups:
            e = meas(c, "err_linf")
            col = dict((a[0], a[2]) for a in ALGS)[key]
            p = pos_of[level(c)] + off[key]
            bp = axs.boxplot([e], positions=[p], widths=0.3, whis=(1, 99), showfliers=False, patch_artist=True,
                             medianprops=dict(color="black", lw=1.0), boxprops=dict(facecolor=col, alpha=0.55, lw=0.6),
                             whiskerprops=dict(lw=0.7), capprops=dict(lw=0.7), manage_ticks=False)
            bp["medians"][0].set_gid(f"median:{key}:{level(c):g}")
            rhs = claim_arrays(c, T5[key])[1]
            if rhs is not None:
                sc = axs.scatter([p], [_med(rhs)], marker="v", color=col, edgecolor="black", lw=0.4, s=34, zorder=5,
                                 label=f"{T5[key]} bound w.p. 1−η" if pos_of[level(c)] == 0 else None)
                sc.set_gid(f"T5:{key}:{level(c):g}")
        for key, label, col, *_ in ALGS[:2]:
            axs.bar([0], [0], color=col, alpha=0.55, label=f"{label}: ‖Xw − X̃q‖∞ over trials")
        axs.set_xticks(range(len(levels)), [f"ε = {lv:g}" for lv in levels])
        axs.set_yscale("log")
    else:
        note(axs, "no stochastic Qronos cells in this study")
    axs.set_xlabel("mismatch level")
    axs.set_ylabel("‖Xw − X̃q‖∞ (units of Xw)")
    axs.set_title(f"(c) stochastic Qronos vs T5 (η = {src.eta:g})")
    h, lab = collect_legend([ax, axs])
    legend_axes(fig.add_subplot(gs[1, :]), h, lab, ncols=4, fontsize=6.2)
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
