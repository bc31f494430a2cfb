"""Figure 7 — choosing λ (L1): the ℓ2 bound against the alphabet condition.

Study ``lambda`` (deterministic OPTQ on δZ, one family's λ values share the same X and W). L1: c_t
grows with λ at rate ≥ 1, so the T1 bound (δ/2)√Σ_t c_t grows with λ; the drift ‖B_{:,t}‖₂ that sets
the alphabet a stochastic run needs (T3) shrinks overall (its bound max_j‖X_j‖²/λ decreases) but
need not be monotone, so a λ is chosen by a scan, never by bisection (as
:func:`theory.lam.recommend_lambda` does).

Per family: (top) the T1 bound (stored ``T1.sum_c/rhs``, median over rows) and the measured error;
(middle) the K the T3 condition needs, K_T3(λ) = ‖w‖∞/δ + (s/δ)·max_t‖B_{:,t}‖₂·√(2 log(2N/η)) from the
stored ``drift_l2_max`` and ``w_over_delta_max`` (s² = δ²/4), its looser form with
‖B_{:,t}‖₂² ≤ max_j‖X_j‖²/λ (stored ``T3.drift_bound/rhs``), and, for nearest rounding, the P1
condition; for a given K (default: the median of K_T3 over the grid, rounded up) the feasible λ are
filled and the recommended λ — the smallest bound among them — is starred; (bottom) the trade-off:
the smallest T1 bound reachable with an alphabet of K levels per side.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.ticker import MaxNLocator

from ._data import claim_arrays, meas
from ._style import add_footer, collect_legend, color, legend_axes, new_figure, note, plain_log_ticks, ref_line
from .fig1_lambda import by_family, lam_rel

NUMBER = 7
STEM = "fig7_lambda_rec"
STUDY = "lambda"
CLAIMS = ("L1.monotone", "L1.concave", "L1.derivative", "T3.alphabet", "T3.drift_bound", "T1.sum_c")
TITLE = "Choosing λ (L1): the ℓ2 bound against the alphabet a stochastic run needs (T3)"


def scan(cells, eta: float, K=None) -> dict:
    """The λ scan of one family from its stored cells (sorted by λ): ``lam``, ``bound``, ``err``, ``K_t3``,
    ``K_t3_loose``, ``K_p1``, ``K``, ``feasible``, ``index`` (recommended, or None)."""
    from theory import alphabet

    lam = np.array([lam_rel(c) for c in cells])
    med = lambda a: float(np.median(a)) if a is not None and np.size(a) else np.nan  # noqa: E731
    bound = np.array([med(claim_arrays(c, "T1.sum_c")[1]) for c in cells])
    err = np.array([med(meas(c, "err_l2")) for c in cells])
    kt3, kloose, kp1 = [], [], []
    for c in cells:
        N = int(c["config"]["N"])
        w, b2, b1 = meas(c, "w_over_delta_max"), meas(c, "drift_l2_max"), meas(c, "drift_l1_max")
        wmax = float(np.max(w)) if w is not None else np.nan
        kt3.append(alphabet.k_needed_t3_from_norm(wmax, float(b2[0]), N, eta, "hoeffding")
                   if b2 is not None else np.nan)
        kp1.append(alphabet.k_needed_p1_from_norm(wmax, float(b1[0])) if b1 is not None else np.nan)
        rb = claim_arrays(c, "T3.drift_bound")[1]  # max_j ‖X_j‖²/λ ≥ max_t ‖B_{:,t}‖₂²
        kloose.append(alphabet.k_needed_t3_from_norm(wmax, math.sqrt(float(rb[0])), N, eta, "hoeffding")
                      if rb is not None else np.nan)
    kt3, kloose, kp1 = map(np.array, (kt3, kloose, kp1))
    if K is None:
        K = int(math.ceil(float(np.nanmedian(kt3)))) if np.isfinite(kt3).any() else None
    feasible = np.isfinite(kt3) & (kt3 <= (K if K is not None else -np.inf)) & np.isfinite(bound)
    idx = int(np.argmin(np.where(feasible, bound, np.inf))) if feasible.any() else None
    return dict(lam=lam, bound=bound, err=err, K_t3=kt3, K_t3_loose=kloose, K_p1=kp1, K=K, feasible=feasible,
                index=idx)


def tradeoff(sc: dict):
    """``(Ks, best bound)``: for every integer K from the smallest K_T3 of the grid up to the largest, the
    smallest T1 bound among the λ with K_T3 ≤ K."""
    kt3, bound = sc["K_t3"], sc["bound"]
    ok = np.isfinite(kt3) & np.isfinite(bound)
    if not ok.any():
        return np.zeros(0), np.zeros(0)
    Ks = np.arange(math.ceil(np.min(kt3[ok])), math.ceil(np.max(kt3[ok])) + 1)
    best = np.array([np.min(bound[ok & (kt3 <= k)]) for k in Ks])
    return Ks, best


def draw(src, K=None):
    cells = src.study(STUDY, f"figure {NUMBER}")
    eta = src.eta
    fams = by_family(cells, src)
    k = len(fams)
    fig = new_figure(3.9 * k + 0.4, 7.2)
    gs = fig.add_gridspec(4, k, height_ratios=[1.0, 1.0, 0.8, 0.2])
    axes_all = []
    for j, (fam, cs) in enumerate(fams.items()):
        sc = scan(cs, eta, K)
        ax_b = fig.add_subplot(gs[0, j])
        ax_k = fig.add_subplot(gs[1, j], sharex=ax_b)
        ax_t = fig.add_subplot(gs[2, j])
        axes_all += [ax_b, ax_k, ax_t]
        x = sc["lam"]
        ln, = ax_b.plot(x, sc["bound"], color=color("nearest"), marker="o",
                        label=r"T1 bound $(\delta/2)\sqrt{\Sigma_t c_t}$")
        ln.set_gid("bound")
        ln, = ax_b.plot(x, sc["err"], color=color("observed"), marker=".", ls=":", lw=1.0,
                        label=r"observed $\|X(w-q)\|_2$ (median over rows)")
        ln.set_gid("err")
        ln, = ax_k.plot(x, sc["K_t3"], color=color("hoeffding"), marker="o", mfc="white",
                        label=r"$K_{T3}(\lambda)$ (stochastic), exact drift $B$")
        ln.set_gid("K_t3")
        if np.isfinite(sc["K_t3_loose"]).any():
            ln, = ax_k.plot(x, sc["K_t3_loose"], color=color("hoeffding"), ls="--", lw=1.0,
                            label=r"$K_{T3}$ from $\|B_{:,t}\|_2^2 \leq \mathrm{max}_j\|X_j\|^2/\lambda$ (clipped)")
            ln.set_gid("K_t3_loose")
        ln, = ax_k.plot(x, sc["K_p1"], color=color("nearest"), ls="-.", lw=1.0,
                        label=r"$K_{P1}(\lambda)$ (nearest rounding)")
        ln.set_gid("K_p1")
        if sc["K"] is not None:
            ref_line(ax_k, sc["K"], axis="y", ls=":")
            ax_k.text(x[-1], sc["K"], f"K = {sc['K']} ", va="bottom", ha="right", fontsize=6.5, color="#333333")
            f = sc["feasible"]
            if f.any():
                pts = ax_k.scatter(x[f], sc["K_t3"][f], color=color("hoeffding"), s=22, zorder=3,
                                   label=r"$\lambda$ meeting T3 with this $K$")
                pts.set_gid("feasible")
        i = sc["index"]
        if i is not None:
            st = ax_b.scatter([x[i]], [sc["bound"][i]], marker="*", s=160, color=color("recommended"),
                              edgecolor="#000000", lw=0.6, zorder=6,
                              label=r"recommended $\lambda^*$: smallest bound meeting $K$")
            st.set_gid("recommended")
            for a in (ax_b, ax_k):
                ref_line(a, x[i], ls="--", lw=0.8, color="#999999")
            ax_b.set_title(f"{fam}\n$K$ = {sc['K']}: recommended $\\lambda^*$ = {x[i]:.3g}"
                           + r"$\cdot\mathrm{mean}_t\|X_t\|^2$")
        else:
            ax_b.set_title(f"{fam}\nno λ of the grid meets K = {sc['K']}")
        for a in (ax_b, ax_k):
            a.set_xscale("log")
        ax_b.set_yscale("log")
        finite = np.concatenate([sc["K_t3"], sc["K_p1"], [sc["K"] if sc["K"] is not None else np.nan]])
        finite = finite[np.isfinite(finite)]
        if finite.size:  # linear K axis around the exact conditions; the loose form is clipped
            lo, hi = float(np.min(finite)), float(np.max(finite))
            ax_k.set_ylim(max(0.0, lo - 0.15 * (hi - lo) - 0.5), hi + 0.6 * (hi - lo) + 1.0)
        ax_k.set_xlabel(r"$\lambda \,/\, \mathrm{mean}_t \|X_t\|^2$  (relative damping)")
        for a, which in ((ax_b, "x"), (ax_b, "y"), (ax_k, "x")):
            plain_log_ticks(a, which)
        Ks, best = tradeoff(sc)
        if Ks.size:
            ln, = ax_t.step(Ks, best, where="post", color=color("nearest"), marker="o", ms=3,
                            label="smallest T1 bound with K levels")
            ln.set_gid("tradeoff")
        else:
            note(ax_t, "no λ with a finite $K_{T3}$")
        ax_t.set_xlabel("K (levels per side of δ·{−K,…,K})")
        ax_t.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax_t.set_yscale("log")
        plain_log_ticks(ax_t, "y")
        if j == 0:
            ax_b.set_ylabel("ℓ2 bound / error (units of Xw)")
            ax_k.set_ylabel(f"K needed (η = {eta:g})")
            ax_t.set_ylabel("best T1 bound\n(units of Xw)")
    legend_axes(fig.add_subplot(gs[3, :]), *collect_legend(axes_all), ncols=3 if k > 1 else 2, fontsize=6.2)
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.5)
    add_footer(fig, src.footer(cells, what=f"study {STUDY}"))
    return fig
