"""Figure 5 — alphabet size: the K needed for no saturation against N, deterministic (P1) vs stochastic (T3).

Study ``alphabet`` (family ``tall``, m = 2N, λ = 0.01·mean‖X_t‖², natural order, runs on the infinite
grid δZ so nothing is clipped; the two roundings of one N share X). A symmetric grid δ·{−K,…,K} would
reproduce a δZ run exactly iff every |z_t| ≤ (K + ½)δ, so the K a run *needs* is
⌈max_t |z_t|/δ − ½⌉ (from the stored ``z_over_delta_max``).

(a) K needed: observed (deterministic: the worst of the weight rows; stochastic: the (1−η) quantile
and the maximum over trials of one weight vector) against the uniform conditions of the claims,
P1 (nearest): K + ½ ≥ ‖w‖∞/δ + ½·max_t‖B_{:,t}‖₁, and T3 (stochastic, w.p. ≥ 1−η):
K ≥ ‖w‖∞/δ + (s/δ)·max_t‖B_{:,t}‖₂·√(2 log(2N/η)), s² = δ²/4 (Hoeffding). (b) The drift
max_t |z_t − w_t| in steps δ: observed (stored ``drift_over_delta_max``) against the P1 radius
½·max_t‖B_{:,t}‖₁ (grows like √N) and the T3 radius (s/δ)·max_t‖B_{:,t}‖₂·√(2 log(2N/η)) (like √log N).

The conditions are evaluated from the stored drift norms ``drift_l1_max``, ``drift_l2_max`` and
``w_over_delta_max`` by :mod:`theory.alphabet` (the named constant s²/δ² of :data:`theory.CONSTANTS`,
the campaign's η).
"""

from __future__ import annotations

import math

import numpy as np

from ._data import meas
from matplotlib.ticker import NullFormatter

from ._style import add_footer, collect_legend, color, legend_axes, new_figure, note, plain_log_ticks

NUMBER = 5
STEM = "fig5_alphabet"
STUDY = "alphabet"
CLAIMS = ("P1", "P1.drift", "T3.alphabet", "T3.drift_tail")
TITLE = "Alphabet size: K needed for no saturation against N — deterministic (P1) vs stochastic (T3)"

DET, STO = color("nearest"), color("hoeffding")
#: one legend for both panels: (a) K = ‖w‖∞/δ + radius, (b) the radius (drift) alone
LAB = {
    "P1": (r"P1 (nearest): $K + \frac{1}{2} \geq \|w\|_\infty/\delta + \frac{1}{2}\mathrm{max}_t\|B_{:,t}\|_1$"
           r"   [(b): the radius $\frac{1}{2}\mathrm{max}_t\|B_{:,t}\|_1$]"),
    "det": "observed, nearest rounding (worst of the weight rows)",
    "T3": (r"T3 (stochastic, w.p. $\geq 1-\eta$): $K \geq \|w\|_\infty/\delta + (s/\delta)\mathrm{max}_t\|B_{:,t}\|_2"
           r"\sqrt{2\log(2N/\eta)}$   [(b): the radius]"),
    "sto": "observed, stochastic rounding: (1−η) quantile over trials",
    "max": "observed, stochastic rounding: maximum over trials",
}


def k_needed(z_over_delta):
    """Smallest K ≥ 0 with every |z_t| ≤ (K + ½)δ, per row."""
    return np.maximum(np.ceil(np.asarray(z_over_delta, dtype=float) - 0.5 - 1e-12), 0)


def k_p1(cell) -> float:
    """Uniform P1 condition (worst row): ``max ‖w‖∞/δ + ½ max_t‖B_{:,t}‖₁ − ½``."""
    from theory import alphabet

    return alphabet.k_needed_p1_from_norm(meas(cell, "w_over_delta_max"), meas(cell, "drift_l1_max")[0])


def p1_radius(cell) -> float:
    """P1's radius in steps: ``½ max_t‖B_{:,t}‖₁``."""
    from theory import alphabet

    return float(alphabet.p1_uniform_radius(float(meas(cell, "drift_l1_max")[0])))


def t3_radius(cell, N: int, eta: float) -> float:
    """T3's radius in steps: ``(s/δ) max_t‖B_{:,t}‖₂ √(2 log(2N/η))`` (Hoeffding's s)."""
    from theory import alphabet

    return float(alphabet.t3_uniform_radius(meas(cell, "drift_l2_max")[0], N, eta, "hoeffding"))


def k_t3(cell, N: int, eta: float) -> float:
    """Uniform T3 condition: ``max ‖w‖∞/δ + (s/δ) max_t‖B_{:,t}‖₂ √(2 log(2N/η))``."""
    from theory import alphabet

    return alphabet.k_needed_t3_from_norm(meas(cell, "w_over_delta_max"), meas(cell, "drift_l2_max")[0], N, eta,
                                          "hoeffding")


def split(cells):
    """``{N: {"det": cell, "sto": cell}}`` sorted by N."""
    out: dict = {}
    for c in cells:
        kind = "sto" if c["config"].get("rounding", "nearest") == "stochastic" else "det"
        out.setdefault(int(c["config"]["N"]), {})[kind] = c
    return dict(sorted(out.items()))


def observed(cell, name: str, eta: float, stochastic: bool):
    """``(typical, max)`` over rows: deterministic: (max, max); stochastic: ((1−η) quantile, max)."""
    v = meas(cell, name)
    if v is None or v.size == 0:
        return np.nan, np.nan
    if name == "z_over_delta_max":
        v = k_needed(v)
    q = float(np.quantile(v, 1 - eta, method="higher")) if stochastic else float(np.max(v))
    return q, float(np.max(v))


def draw(src):
    cells = src.study(STUDY, f"figure {NUMBER}")
    eta = src.eta
    tab = split(cells)
    Ns = np.array(list(tab))
    fig = new_figure(9.0, 4.4)
    gs = fig.add_gridspec(2, 2, height_ratios=[1.0, 0.2])
    axk, axd = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])

    def series(kind, fn):
        return np.array([fn(tab[N][kind], N) if kind in tab[N] else np.nan for N in Ns])

    # (a) K
    kdet = series("det", lambda c, N: observed(c, "z_over_delta_max", eta, False)[0])
    ksto_q = series("sto", lambda c, N: observed(c, "z_over_delta_max", eta, True)[0])
    ksto_m = series("sto", lambda c, N: observed(c, "z_over_delta_max", eta, True)[1])
    p1 = series("det", lambda c, N: math.ceil(k_p1(c) - 1e-12))
    t3 = series("sto", lambda c, N: math.ceil(k_t3(c, N, eta) - 1e-12))
    for y, kw, gid in (
        (p1, dict(color=DET, ls="--", marker="s", mfc="white", label=LAB["P1"]), "P1"),
        (kdet, dict(color=DET, ls="-", marker="s", label=LAB["det"]), "observed:det"),
        (t3, dict(color=STO, ls="--", marker="o", mfc="white", label=LAB["T3"]), "T3"),
        (ksto_q, dict(color=STO, ls="-", marker="o", label=LAB["sto"]), "observed:sto"),
        (ksto_m, dict(color=STO, ls=":", marker=".", label=LAB["max"]), "observed:sto:max"),
    ):
        if np.isfinite(y).any():
            ln, = axk.plot(Ns, y, **kw)
            ln.set_gid(f"K:{gid}")
    w = series("det", lambda c, N: float(np.max(meas(c, "w_over_delta_max"))))
    ln, = axk.plot(Ns, w, color="#999999", ls="-.", lw=0.9, label=r"$\|w\|_\infty/\delta$ (no drift)")
    ln.set_gid("K:w")
    axk.set_xscale("log", base=2)
    axk.set_xticks(Ns, [str(n) for n in Ns])
    axk.xaxis.set_minor_formatter(NullFormatter())
    axk.set_xlabel("N (input features; m = 2N samples)")
    axk.set_ylabel("K needed (levels per side of δ·{−K,…,K})")
    axk.set_title("(a) alphabet size needed for no saturation")

    # (b) drift in steps
    r_p1 = series("det", lambda c, N: p1_radius(c))
    r_t3 = series("sto", lambda c, N: t3_radius(c, N, eta))
    d_det = series("det", lambda c, N: observed(c, "drift_over_delta_max", eta, False)[0])
    d_sto = series("sto", lambda c, N: observed(c, "drift_over_delta_max", eta, True)[0])
    d_stm = series("sto", lambda c, N: observed(c, "drift_over_delta_max", eta, True)[1])
    for y, kw, gid in (
        (r_p1, dict(color=DET, ls="--", marker="s", mfc="white", label=LAB["P1"]), "P1"),
        (d_det, dict(color=DET, ls="-", marker="s", label=LAB["det"]), "observed:det"),
        (r_t3, dict(color=STO, ls="--", marker="o", mfc="white", label=LAB["T3"]), "T3"),
        (d_sto, dict(color=STO, ls="-", marker="o", label=LAB["sto"]), "observed:sto"),
        (d_stm, dict(color=STO, ls=":", marker=".", label=LAB["max"]), "observed:sto:max"),
    ):
        if np.isfinite(y).any():
            ln, = axd.plot(Ns, y, **kw)
            ln.set_gid(f"drift:{gid}")
    if not (np.isfinite(d_det).any() or np.isfinite(d_sto).any()):
        note(axd, "observed drift needs the measurement drift_over_delta_max\n(re-run the campaign with this version)",
             loc="bottom")
    axd.set_xscale("log", base=2)
    axd.set_yscale("log")
    axd.set_xticks(Ns, [str(n) for n in Ns])
    axd.xaxis.set_minor_formatter(NullFormatter())
    plain_log_ticks(axd, "y")
    axd.set_xlabel("N (input features)")
    axd.set_ylabel(r"drift $\mathrm{max}_t |z_t - w_t|$ (steps of $\delta$)")
    axd.set_title("(b) drift: observed against the P1 and T3 radii")
    h, lab = collect_legend([axk, axd])
    legend_axes(fig.add_subplot(gs[1, :]), h, lab, ncols=2, fontsize=6.2)
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}  (η = {eta:g})", fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
