"""Figure 8 — how sharp is each bound: the best ratio the tightness search found, beside the ratios that
random data (the campaign's synthetic families) and real LLM layers give.

Reads stored results only: the campaign's cells from the store (as figure 6: per in-scope row
lhs/rhs, √ of the ratio for the claims on squared norms) and the tightness summary written by
``ptq-bounds tightness`` (``results/tightness.json``). The best-found ratio is drawn in the same
convention (√ for the claims on squared norms). For the probability claims the search's ratio is
the (1 − p)-quantile of lhs/bound over many trials of one input (≤ 1 exactly when the exceedance
frequency is at most the claimed p), whereas the boxes show single rows: a box reaching above 1 is
allowed there, a best-found quantile above 1 would not be.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import numpy as np

from ._data import FigureDataError, is_llm, ratio
from ._style import add_footer, new_figure

NUMBER = 8
STEM = "fig8_tightness_search"
STUDY = None
#: claims whose ratio compares squared norms (drawn as √, as in figure 6)
SQUARED = ("T3.drift_bound", "T4.projection.bound", "T4.original.bound")
DEFAULT_SUMMARY = Path(__file__).resolve().parents[1] / "results" / "tightness.json"
HORIZONTAL = ({"orientation": "horizontal"} if tuple(int(p) for p in matplotlib.__version__.split(".")[:2]) >= (3, 10)
              else {"vert": False})
TITLE = "How sharp is each bound: best ratio found by the search vs random and real-layer data"
RANDOM_FACE, REAL_FACE = "#dddddd", "#999999"  # neutral greys of figures._style.NEUTRAL


CLAIMS = ("T1.sum_c", "T1.explicit", "T1.frobenius", "T1.c_chain", "P1.drift", "T3.drift_bound", "O1.amgm",
          "L1.monotone", "L1.concave", "T4.projection.bound", "T4.rho_le_mismatch", "T4.original.bound",
          "T4.optq_mismatch", "T2.tail", "T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.pi2", "T2.hp.explicit",
          "T2.expectation", "T3.drift_tail", "T5.projection", "T5.original")


def load_summary(path=None) -> dict:
    p = Path(path) if path is not None else DEFAULT_SUMMARY
    if not p.is_file():
        raise FigureDataError(f"figure {NUMBER} needs the tightness summary {p}; produce it with `ptq-bounds tightness`")
    return json.loads(p.read_text())


def _pooled(cells, cid):
    rs = [ratio(c, cid, squared=cid in SQUARED) for c in cells]
    rs = [r for r in rs if r is not None and r.size]
    if not rs:
        return np.zeros(0)
    r = np.concatenate(rs)
    return r[r > 0]


def _box(ax, data, y, face, gid):
    if data.size == 0:
        return None
    bp = ax.boxplot([data], positions=[y], **HORIZONTAL, widths=0.28, whis=(5, 95), showfliers=False,
                    patch_artist=True, manage_ticks=False, boxprops=dict(facecolor=face, lw=0.6),
                    medianprops=dict(color="black", lw=0.9), whiskerprops=dict(lw=0.6), capprops=dict(lw=0.6))
    bp["boxes"][0].set_gid(gid)
    return bp["boxes"][0]


def draw(src, summary=None):
    summary = load_summary(summary) if summary is None or not isinstance(summary, dict) else summary
    cells = src.cells()
    synth = [c for c in cells if not is_llm(c)]
    llm, llm_camps = src.llm_cells()
    claims = [c for c in CLAIMS if c in summary["claims"]] + [c for c in summary["claims"] if c not in CLAIMS]
    n = len(claims)
    fig = new_figure(7.6, 1.6 + 0.24 * n)
    ax = fig.add_subplot()
    y = np.arange(n)[::-1].astype(float)
    h_rand = h_real = h_found = h_ref = None
    for yi, cid in zip(y, claims):
        b = _box(ax, _pooled(synth, cid), yi + 0.17, RANDOM_FACE, f"random:{cid}")
        h_rand = h_rand or b
        b = _box(ax, _pooled(llm, cid), yi - 0.17, REAL_FACE, f"real:{cid}")
        h_real = h_real or b
        r = summary["claims"][cid]
        best = r.get("best_ratio")
        if best is None or not best > 0:
            continue
        v = float(np.sqrt(best)) if cid in SQUARED else float(best)
        found = r.get("source") == "search"
        h = ax.scatter([v], [yi], s=34, marker="D", zorder=6, color="black" if found else "white",
                       edgecolor="black", lw=0.9)
        h.set_gid(f"best:{cid}")
        if found:
            h_found = h_found or h
        else:
            h_ref = h_ref or h
    line = ax.axvline(1.0, color="#666666", lw=0.9, ls="--", zorder=7)  # the neutral reference grey
    ax.set_yticks(y, claims)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 2.0)
    ticks = [1e-3, 1e-2, 1e-1, 1.0]
    ax.set_xticks(ticks, ["0.001", "0.01", "0.1", "1"])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel("empirical / bound (1 = bound attained; √ of the ratio for bounds on squared norms)")
    handles, labels = [], []
    for h, lab in ((h_rand, f"random data: all rows of the campaign ({len(synth)} cells)"),
                   (h_real, f"real LLM layers: all rows ({len(llm)} cells)"),
                   (h_found, "best found by the search (observed ratio)"),
                   (h_ref, "best: the constructed reference family (observed ratio)"),
                   (line, "bound attained (ratio 1)")):
        if h is not None:
            handles.append(h)
            labels.append(lab)
    ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.09 - 0.6 / n), ncols=2, fontsize=6.5)
    ax.set_title("Boxes: quartiles, whiskers 5–95 %. Probability claims: the search reports the (1−p)-quantile "
                 "over trials\n(≤ 1 means the claimed probability holds); single rows above 1 are allowed for them.",
                 fontsize=6.8, color="#333333")
    fig.suptitle(f"Fig. {NUMBER}. {TITLE}", fontsize=9.2)
    prov = (f"tightness: budget {summary['budget']}, seed {summary['seed']}, "
            f"code {((summary.get('machine') or {}).get('git_commit') or 'unknown')[:10]}")
    add_footer(fig, src.footer(synth + llm, what="all studies", extra_campaigns=llm_camps) + f"\n      {prov}")
    return fig
