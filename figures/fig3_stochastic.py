"""Figure 3 — deterministic against stochastic OPTQ: the ℓ2 error, and the ℓ∞ tail against T2.

Study ``stochastic``: per family, R trials of stochastic OPTQ on one weight vector, on δZ and on a
finite grid sized by the T3 condition, and the deterministic run (nearest rounding) on the same X
and w (one pairing group: identical data, so the deterministic error is one number). One column
per family.

(a) ℓ2: the fraction of trials whose ‖X(w−q)‖₂ / ((δ/2)√Σ_t c_t) is at least x (the normaliser is
√ of the stored T2.expectation bound (δ²/4)Σc_t), and the deterministic run in the same unit (the
stored T1.sum_c bound, the same number), a vertical line. T2.expectation bounds the mean of the
squared ratio by 1 (with λ‖w−q‖² added to the squared error), not each trial: by Markov's inequality
it allows a fraction 1/x² of the trials at or above x (shaded); the panel's title states the observed
mean that T2.expectation bounds (from its stored lhs/rhs) and the observed fraction above 1.
(b) The empirical tail P(‖X(w−q)‖∞ ≥ α) (on the finite grid, jointly with no saturation, as T2
states it) against the T2 tail bound
Σ_i 2exp(−α²/(2σ_i²)), σ_i² = s²Σ_t δ_t²R_it²/δ², for the three named constants, the radii of
T2.hp.* at probability η (exceeded with probability ≤ η: the panel's title states the observed
fraction at the Hoeffding radius) and the T2.tail threshold.

Values from the store: ``err_l2``, ``err_linf``, ``saturated``, ``T1.sum_c``, ``T2.expectation``,
``T2.hp.*`` and ``T2.tail`` lhs/rhs, and ``tail_v`` (v_i = Σ_t δ_t²R_it², for the tail curves; the
curve evaluates the claim's formula, :func:`theory.constants.tail_bound`, at the stored v_i).
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from matplotlib.legend_handler import HandlerTuple
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from verify.defaults import setting

from ._data import claim_arrays, meas
from ._style import REF, Z_REF, add_footer, color, new_figure, note, plain_log_ticks, ref_line

NUMBER = 3
STEM = "fig3_stochastic"
STUDY = "stochastic"
CLAIMS = ("T2.tail", "T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.pi2", "T2.expectation", "T1.sum_c")
TITLE = "Deterministic vs stochastic OPTQ: the ℓ2 error, and the ℓ∞ tail against the T2 bound"

CONST = (  # (constant key, claim, label, line style)
    ("hoeffding", "T2.hp.hoeffding", r"$s^2 = \delta^2/4$ (Hoeffding, sharp)", "-"),
    ("pi8", "T2.hp.pi8", r"$s^2 = \pi\delta^2/8$ (convex order)", "--"),
    ("pi2", "T2.hp.pi2", r"$s^2 = \pi\delta^2/2$ (conservative)", "-."),
)
ALLOWED_FILL = "#eeeeee"


def split(cells) -> dict:
    """``{family: {"det": cell, "dz": cell, "finite": cell}}`` (missing kinds absent)."""
    out: dict = {}
    for c in cells:
        cfg = c["config"]
        kind = ("det" if setting(cfg, "rounding") != "stochastic"
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


def _norm_l2(c):
    """``(δ/2)√Σ_t c_t`` from the cell's stored bound: √T2.expectation rhs (stochastic) or T1.sum_c rhs."""
    rhs = claim_arrays(c, "T2.expectation")[1]
    if rhs is not None:
        return float(np.sqrt(np.median(rhs)))
    rhs = claim_arrays(c, "T1.sum_c")[1]
    return float(np.median(rhs)) if rhs is not None else None


def _l2_panel(ax, fam, d):
    """(a): survival of the ℓ2 ratio, Markov's allowance from T2.expectation, the deterministic run."""
    sto, det = d.get("dz"), d.get("det")
    xmax = 1.3
    if sto is not None and _norm_l2(sto):
        r = meas(sto, "err_l2") / _norm_l2(sto)
        xs, p = survival(r)
        ln, = ax.step(xs, p, where="post", color=color("observed"), lw=1.3)
        ln.set_gid(f"l2:stochastic:{fam}")
        xmax = max(xmax, float(np.max(r)) * 1.08)
        lhs, rhs = claim_arrays(sto, "T2.expectation")
        sub = []
        if lhs is not None:  # what T2.expectation bounds: the mean of (‖X(w−q)‖² + λ‖w−q‖²) / bound²
            sub.append(f"T2.expectation: mean {float(np.mean(lhs)) / float(np.median(rhs)):.2f} ≤ 1")
        sub.append(f"above 1: {100 * float(np.mean(r > 1)):.1f} % of {r.size} trials")
        title = f"(a) ℓ2 error, {fam}\n" + "\n".join(sub)
    else:
        title = f"(a) ℓ2 error, {fam}"
    x = np.linspace(1.0, xmax, 200)
    fill = ax.fill_between(x, 0, np.minimum(1.0, 1 / x**2), color=ALLOWED_FILL, lw=0, zorder=0.5)
    fill.set_gid(f"l2:allowed:{fam}")
    ax.plot(x, np.minimum(1.0, 1 / x**2), color=REF, lw=0.8, ls=":", zorder=Z_REF)
    ax.fill_between([0, 1.0], 0, 1.0, color=ALLOWED_FILL, lw=0, zorder=0.5)
    if det is not None and _norm_l2(det):
        val = float(np.median(meas(det, "err_l2"))) / _norm_l2(det)
        ln = ax.axvline(val, color=color("nearest"), ls="--", lw=1.3, zorder=Z_REF)
        ln.set_gid(f"l2:deterministic:{fam}")
    else:
        note(ax, "no deterministic companion stored", loc="top")
    ref_line(ax, 1.0)
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, 1.05)
    ax.set_title(title, fontsize=7.6)
    ax.set_xlabel(r"ratio $x = \|X(w-q)\|_2 \,/\, (\delta/2)\sqrt{\Sigma_t c_t}$")


def _tail_panel(ax, fam, d, eta):
    """(b): empirical ℓ∞ tail against the T2 tail bound, the radii at η, the deterministic run."""
    from theory import CONSTANTS

    sto, det = d.get("dz"), d.get("det")
    drawn = False
    for kind, ls in (("dz", "-"), ("finite", "--")):
        c = d.get(kind)
        if c is None:
            continue
        x = meas(c, "err_linf")
        sat = meas(c, "saturated")
        xs, p = survival(x, None if sat is None else (sat == 0))
        ln, = ax.step(xs, p, where="post", color=color("observed"), ls=ls, lw=1.2)
        ln.set_gid(f"tail:{kind}")
        drawn = True
    ref = sto or d.get("finite")
    if ref is None:
        return
    v = meas(ref, "tail_v")
    x = meas(ref, "err_linf")
    radii = [float(np.median(claim_arrays(ref, cl)[1])) for _, cl, *_ in CONST if claim_arrays(ref, cl)[1] is not None]
    lo = max(float(np.min(x[x > 0])) if np.any(x > 0) else 1e-12, 1e-300) * 0.7
    if det is not None and float(np.median(meas(det, "err_linf"))) > 0:
        lo = min(lo, float(np.median(meas(det, "err_linf"))) * 0.7)
    hi = max([float(np.max(x))] + radii) * 1.3
    a = np.geomspace(lo, hi, 400)
    for key, cl, lab, ls in CONST:
        if v is not None:
            ln, = ax.plot(a, tail_curve(a, v, CONSTANTS[key].factor), color=color(key), ls=ls, lw=1.2, zorder=Z_REF)
            ln.set_gid(f"bound:{key}")
        rad = claim_arrays(ref, cl)[1]
        if rad is not None:
            mk = ax.scatter([float(np.median(rad))], [eta], marker="v", color=color(key), s=30, zorder=Z_REF + 1,
                            edgecolor="#333333", lw=0.4)
            mk.set_gid(f"radius:{cl}")
    th = claim_arrays(ref, "T2.tail")[1]
    if th is not None:
        mk = ax.scatter([float(np.median(th))], [eta], marker="o", facecolor="white", s=30, zorder=Z_REF + 2,
                        edgecolor=color("hoeffding"), lw=1.2)
        mk.set_gid("radius:T2.tail")
    if v is None:
        note(ax, "tail-bound curve needs the measurement tail_v\n(re-run the campaign with this version)", loc="bottom")
    if det is not None:
        ln = ax.axvline(float(np.median(meas(det, "err_linf"))), color=color("nearest"), ls="--", lw=1.3, zorder=Z_REF)
        ln.set_gid("tail:deterministic")
    ref_line(ax, eta, axis="y", ls=":")
    rad = claim_arrays(ref, "T2.hp.hoeffding")[1]
    title = f"(b) ℓ∞ tail, {fam}"
    if rad is not None:
        k = int(np.sum(x >= float(np.median(rad))))
        title += f"\nabove the Hoeffding radius ▼: {k} of {x.size}\n(allowed: a fraction η = {100 * eta:g} %)"
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    if drawn:
        ax.set_yscale("log")
        n = max(meas(c, "err_linf").size for c in d.values() if meas(c, "err_linf") is not None)
        ax.set_ylim(0.5 / n, 1.5)
    ax.set_title(title, fontsize=7.6)
    ax.set_xlabel(r"$\alpha$ (units of $Xw$)")
    plain_log_ticks(ax, "x")
    plain_log_ticks(ax, "y")


def legend_entries(eta: float):
    """The shared legend: (handles, labels), 8 entries."""
    h = [Line2D([], [], color=color("observed"), lw=1.3),
         Line2D([], [], color=color("observed"), ls="--", lw=1.2),
         Line2D([], [], color=color("nearest"), ls="--", lw=1.3)]
    lab = ["observed, stochastic rounding on δZ (trials)",
           "observed, finite T3-sized grid, jointly with no saturation",
           "deterministic (nearest rounding), same X and w"]
    for key, cl, text, ls in CONST:
        parts = [Line2D([], [], color=color(key), ls=ls, lw=1.2),
                 Line2D([], [], color=color(key), marker="v", ls="none", mec="#333333", mew=0.4)]
        extra = "; ○ T2.tail threshold" if key == "hoeffding" else ""
        h.append(tuple(parts))
        lab.append(f"T2 tail bound, {text}; ▼ radius at η{extra}")
    h += [Patch(facecolor=ALLOWED_FILL, edgecolor=REF, ls=":", lw=0.8), Line2D([], [], color=REF, lw=0.9)]
    lab += [r"allowed: (a) $P(\mathrm{ratio} \geq x) \leq 1/x^2$ (Markov, from T2.expectation)",
            f"reference: (a) ratio = 1, (b) probability η = {eta:g}"]
    return h, lab


def draw(src):
    cells = src.study(STUDY, f"figure {NUMBER}")
    tab = split(cells)
    fams = src.ordered(tab, STUDY, "family")
    k = max(1, len(fams))
    eta = src.eta
    fig = new_figure(max(7.5, 3.1 * k), 6.9)
    gs = fig.add_gridspec(3, k, height_ratios=[1.0, 1.15, 0.3])
    for j, fam in enumerate(fams):
        ax_a = fig.add_subplot(gs[0, j])
        ax_b = fig.add_subplot(gs[1, j])
        _l2_panel(ax_a, fam, tab[fam])
        _tail_panel(ax_b, fam, tab[fam], eta)
        if j == 0:
            ax_a.set_ylabel(r"fraction of trials with ratio $\geq x$")
            ax_b.set_ylabel(r"$P(\|X(w-q)\|_\infty \geq \alpha)$")
    h, lab = legend_entries(eta)
    leg_ax = fig.add_subplot(gs[2, :])
    leg_ax.set_axis_off()
    leg_ax.legend(h, lab, loc="center", ncols=2, fontsize=6.4, handler_map={tuple: HandlerTuple(ndivide=None)})
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
