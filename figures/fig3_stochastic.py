"""Figure 3 — deterministic against stochastic OPTQ: ℓ2 and ℓ∞ errors, and the T2 tail.

Study ``stochastic``: per family, R trials of stochastic OPTQ on one weight vector, on δZ and on a
finite grid sized by the T3 condition, and the deterministic run (nearest rounding) on the same X
and w (one pairing group: identical data, so the deterministic error is one number).

(a) ℓ2: the distribution over trials of ‖X(w−q)‖₂ / ((δ/2)√Σ_t c_t) for stochastic rounding (the
normaliser is √ of the stored T2.expectation bound (δ²/4)Σc_t: E[‖X(w−q)‖² + λ‖w−q‖²] ≤ 1 after
normalising), and the deterministic error in the same unit (normaliser: the stored T1.sum_c bound,
the same number), as a vertical line. (b) ℓ∞: ‖X(w−q)‖∞ over the Hoeffding high-probability radius
s√(2 log(2m/η))√(max_t c_t), s² = δ²/4 (stored T2.hp.hoeffding rhs: exceeded with probability ≤ η);
the conservative constants πδ²/8 and πδ²/2 give the radii marked by grey lines. (c) Per family, the
empirical tail P(‖X(w−q)‖∞ ≥ α) (on the finite grid, jointly with no saturation, as T2 states it)
against the T2 tail bound Σ_i 2exp(−α²/(2σ_i²)), σ_i² = s²Σ_t δ_t²R_it²/δ², for the three named
constants, and the radii of T2.hp.* at probability η.

Values from the store: ``err_l2``, ``err_linf``, ``saturated``, ``T1.sum_c``, ``T2.expectation``,
``T2.hp.*`` and ``T2.tail`` lhs/rhs, and ``tail_v`` (v_i = Σ_t δ_t²R_it², for the tail curves; the
curve evaluates the claim's formula, :func:`theory.constants.tail_bound`, at the stored v_i).
"""

from __future__ import annotations

import numpy as np
import sympy as sp

from ._data import claim_arrays, meas
from ._style import OKABE_ITO, add_footer, collect_legend, color_for, legend_axes, new_figure, note, plain_log_ticks

NUMBER = 3
STEM = "fig3_stochastic"
STUDY = "stochastic"
CLAIMS = ("T2.tail", "T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.pi2", "T2.expectation", "T1.sum_c")
TITLE = "Deterministic vs stochastic OPTQ: ℓ2 and ℓ∞ errors, and the T2 tail bound"

CONST = (  # (constant key, claim, label, colour, line style)
    ("hoeffding", "T2.hp.hoeffding", "s² = δ²/4 (Hoeffding, sharp)", OKABE_ITO["blue"], "-"),
    ("pi8", "T2.hp.pi8", "s² = πδ²/8 (convex order)", OKABE_ITO["orange"], "--"),
    ("pi2", "T2.hp.pi2", "s² = πδ²/2 (conservative)", OKABE_ITO["vermillion"], "-."),
)


def split(cells) -> dict:
    """``{family: {"det": cell, "dz": cell, "finite": cell}}`` (missing kinds absent)."""
    out: dict = {}
    for c in cells:
        cfg = c["config"]
        kind = ("det" if cfg.get("rounding", "nearest") != "stochastic"
                else "dz" if cfg["grid"].get("K") is None else "finite")
        out.setdefault(cfg.get("family", "?"), {})[kind] = c
    return out


def _tail_fn():
    """``2exp(−α²/(2σ²))`` of :mod:`theory.constants` as a NumPy function of ``(α, σ)``."""
    from theory import constants as K

    return sp.lambdify((K.alpha, K.sigma), K.tail_bound(), modules="numpy")


def tail_curve(alpha, v, factor):
    """``min(1, Σ_i tail(α, √(factor·v_i)))`` on a grid of ``α`` (the T2 tail bound)."""
    f = _tail_fn()
    v = np.asarray(v, dtype=float)
    v = v[v > 0]
    sig = np.sqrt(factor * v)[None, :]
    return np.minimum(1.0, np.sum(f(np.asarray(alpha, dtype=float)[:, None], sig), axis=1))


def survival(x, event=None):
    """``(α, P(X ≥ α [, event]))`` at the sorted sample points: the empirical tail."""
    x = np.asarray(x, dtype=float)
    ok = np.ones(x.size, dtype=bool) if event is None else np.asarray(event, dtype=bool)
    xs = np.sort(x[ok])
    p = (xs.size - np.searchsorted(xs, xs, side="left")) / x.size  # P(X ≥ xs[k], event); ties counted
    return xs, p


def _ecdf(ax, x, **kw):
    xs = np.sort(np.asarray(x, dtype=float))
    p = np.arange(1, xs.size + 1) / xs.size
    ln, = ax.step(xs, p, where="post", **kw)
    return ln


def _norm_l2(c):
    """``(δ/2)√Σ_t c_t`` from the cell's stored bound: √T2.expectation rhs (stochastic) or T1.sum_c rhs."""
    rhs = claim_arrays(c, "T2.expectation")[1]
    if rhs is not None:
        return float(np.sqrt(np.median(rhs)))
    rhs = claim_arrays(c, "T1.sum_c")[1]
    return float(np.median(rhs)) if rhs is not None else None


def draw(src):
    from theory import CONSTANTS

    cells = src.study(STUDY, f"figure {NUMBER}")
    tab = split(cells)
    fams = list(tab)
    k = max(1, len(fams))
    eta = src.eta
    fig = new_figure(max(10.0, 3.3 * k), 7.0)
    gs = fig.add_gridspec(3, 2 * k, height_ratios=[1.0, 1.0, 0.16])
    ax2 = fig.add_subplot(gs[0, :k])
    axi = fig.add_subplot(gs[0, k:])
    tails = [fig.add_subplot(gs[1, 2 * j:2 * j + 2]) for j in range(k)]
    missing_det = []
    for j, fam in enumerate(fams):
        col = color_for(j)
        d = tab[fam]
        sto = d.get("dz")
        det = d.get("det")
        # (a) ℓ2 relative to (δ/2)√Σc
        if sto is not None and _norm_l2(sto):
            ln = _ecdf(ax2, meas(sto, "err_l2") / _norm_l2(sto), color=col, label=f"{fam}: stochastic (trials)")
            ln.set_gid(f"l2:stochastic:{fam}")
        if det is not None and _norm_l2(det):
            val = float(np.median(meas(det, "err_l2"))) / _norm_l2(det)
            ln = ax2.axvline(val, color=col, ls="--", lw=1.2, label=f"{fam}: deterministic")
            ln.set_gid(f"l2:deterministic:{fam}")
        else:
            missing_det.append(fam)
        # (b) ℓ∞ relative to the Hoeffding radius of the same data
        if sto is not None:
            rad = claim_arrays(sto, "T2.hp.hoeffding")[1]
            if rad is not None:
                r0 = float(np.median(rad))
                ln = _ecdf(axi, meas(sto, "err_linf") / r0, color=col, label=f"{fam}: stochastic")
                ln.set_gid(f"linf:stochastic:{fam}")
                if det is not None:
                    ln = axi.axvline(float(np.median(meas(det, "err_linf"))) / r0, color=col, ls="--", lw=1.2,
                                     label=f"{fam}: deterministic")
                    ln.set_gid(f"linf:deterministic:{fam}")
        # (c) the tail
        ax = tails[j]
        drawn = False
        for kind, ls, lab in (("dz", "-", "stochastic on δZ"), ("finite", "--", "finite grid (T3-sized), joint with no saturation")):
            c = d.get(kind)
            if c is None:
                continue
            x = meas(c, "err_linf")
            sat = meas(c, "saturated")
            ev = None if sat is None else (sat == 0)
            xs, p = survival(x, ev)
            ln, = ax.step(xs, p, where="post", color=OKABE_ITO["black"], ls=ls, lw=1.2,
                          label=f"empirical, {lab} ({x.size} trials)")
            ln.set_gid(f"tail:{kind}")
            drawn = True
        ref = sto or d.get("finite")
        if ref is not None:
            v = meas(ref, "tail_v")
            x = meas(ref, "err_linf")
            radii = [float(np.median(claim_arrays(ref, cl)[1])) for _, cl, *_ in CONST
                     if claim_arrays(ref, cl)[1] is not None]
            lo = max(float(np.min(x[x > 0])) if np.any(x > 0) else 1e-12, 1e-300) * 0.7
            if det is not None and float(np.median(meas(det, "err_linf"))) > 0:
                lo = min(lo, float(np.median(meas(det, "err_linf"))) * 0.7)
            hi = max([float(np.max(x))] + radii) * 1.3
            a = np.geomspace(lo, hi, 400)
            for key, cl, lab, cc, ls in CONST:
                if v is not None:
                    ln, = ax.plot(a, tail_curve(a, v, CONSTANTS[key].factor), color=cc, ls=ls, lw=1.1,
                                  label=f"T2 tail bound Σ_i 2exp(−α²/2σ_i²), {lab}")
                    ln.set_gid(f"bound:{key}")
                rad = claim_arrays(ref, cl)[1]
                if rad is not None:
                    mk = ax.scatter([float(np.median(rad))], [eta], marker="v", color=cc, s=30, zorder=5,
                                    edgecolor="black", lw=0.4, label=f"{cl} radius (bound w.p. 1−η)")
                    mk.set_gid(f"radius:{cl}")
            th = claim_arrays(ref, "T2.tail")[1]
            if th is not None:
                mk = ax.scatter([float(np.median(th))], [eta], marker="o", facecolor="white", s=30, zorder=6,
                                edgecolor=OKABE_ITO["blue"], lw=1.2, label="T2.tail threshold: Σ_i bound = η")
                mk.set_gid("radius:T2.tail")
            if v is None:
                note(ax, "tail-bound curve needs the measurement tail_v\n(re-run the campaign with this version)",
                     loc="bottom")
            if det is not None:
                ln = ax.axvline(float(np.median(meas(det, "err_linf"))), color="#555555", ls=":", lw=1.0,
                                label="deterministic ‖X(w−q)‖∞ (same X, w)")
                ln.set_gid("tail:deterministic")
            ax.axhline(eta, color="#999999", lw=0.6, ls=":")
            ax.set_xscale("log")
            ax.set_xlim(lo, hi)
        if drawn:
            ax.set_yscale("log")
            n = max(meas(c, "err_linf").size for c in d.values() if meas(c, "err_linf") is not None)
            ax.set_ylim(0.5 / n, 1.5)
        ax.set_title(f"(c) tail, {fam}")
        ax.set_xlabel("α (units of Xw)")
        if j == 0:
            ax.set_ylabel("P(‖X(w−q)‖∞ ≥ α)")
    ax2.axvline(1.0, color=OKABE_ITO["black"], lw=0.9)
    ax2.set_xlabel("‖X(w−q)‖₂ / (δ/2)√Σ_t c_t  (dimensionless)")
    ax2.set_ylabel("fraction of trials ≤ x")
    ax2.set_title("(a) ℓ2 error / T1 bound (T2.expectation: RMS ≤ 1)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=color_for(j), lw=2, label=f) for j, f in enumerate(fams)]
    handles += [Line2D([], [], color="black", ls="-", label="stochastic rounding (ECDF over trials)"),
                Line2D([], [], color="black", ls="--", label="deterministic, same X and w")]
    ax2.legend(handles=handles, fontsize=6.2, loc="lower right")
    for key, cl, lab, cc, ls in CONST:
        f = np.sqrt(CONSTANTS[key].factor / CONSTANTS["hoeffding"].factor)
        axi.axvline(f, color=cc, ls=ls, lw=0.9)
        axi.text(f, 0.98, f"{cl} ", rotation=90, fontsize=6, color=cc, va="top", ha="right")
    axi.set_xlabel("‖X(w−q)‖∞ / (δ/2)√(2 log(2m/η))·√max_t c_t  (dimensionless)")
    axi.set_ylabel("fraction of trials ≤ x")
    axi.set_title(f"(b) ℓ∞ error / T2 radius w.p. 1−η (η = {eta:g})")
    axi.set_xscale("log")
    if missing_det:
        note(ax2, "no deterministic companion stored for: " + ", ".join(missing_det), loc="bottom")
    legend_axes(fig.add_subplot(gs[2, :]), *collect_legend(tails), ncols=3, fontsize=6.2)
    for ax in tails:
        plain_log_ticks(ax)
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
