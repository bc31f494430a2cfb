"""Shared look of the figures: a colour-blind-safe palette, fonts, the provenance footer, saving.

Nothing here changes matplotlib's global state: figures are built with the object-oriented API
(:class:`matplotlib.figure.Figure` on an Agg canvas, no ``pyplot``, no display needed) inside
:func:`style`, a ``rc_context``.

Palette: Okabe & Ito (2008), "Color Universal Design", safe for the common colour-vision
deficiencies; every series also differs by marker or line style, so the figures read in grey.

One colour, one meaning, in every figure: :data:`COLORS` maps each meaning to its colour (no colour
twice), and the figures take their colours from it by meaning (:func:`color`). Measured values are
black where a panel shows one algorithm and rounding; where a panel compares them, a measured value
takes the colour of its algorithm or rounding and differs from that one's bound by marker or line
style. What has no colour of its own (data families, layer types, processing orders) differs by
marker, hatch or line style.
Reference lines (bound = 1, the probability η, …) are grey, drawn above the data (:data:`Z_REF`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from verify._atomic import atomic_path

__all__ = ["OKABE_ITO", "COLORS", "MEANING_WORDS", "NEUTRAL", "REF", "Z_REF", "MARKERS", "LINESTYLES", "color",
           "marker_for", "style", "new_figure", "add_footer", "save", "note", "legend_axes", "collect_legend",
           "plain_log_ticks", "ref_line", "fit_width", "FORMATS"]

#: Okabe–Ito colours by name
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
#: meaning -> colour, the same in every figure; no colour stands for two meanings
COLORS = {
    "observed": OKABE_ITO["black"],          # measured errors, empirical distributions
    "nearest": OKABE_ITO["vermillion"],      # deterministic OPTQ (nearest rounding) and its bounds (T1, P1)
    "hoeffding": OKABE_ITO["blue"],          # stochastic rounding, s² = δ²/4 (Hoeffding): T2, T3
    "pi8": OKABE_ITO["orange"],              # the constant s² = πδ²/8
    "pi2": OKABE_ITO["sky"],                 # the constant s² = πδ²/2
    "qronos/projection": OKABE_ITO["green"],  # Qronos, projection variant (T4, T5)
    "qronos/original": OKABE_ITO["purple"],  # Qronos, original variant (T4, T5)
    "recommended": OKABE_ITO["yellow"],      # the recommended λ (figure 7)
}
#: words one of which every legend entry drawn in a meaning's colour contains (checked by the tests)
MEANING_WORDS = {
    "observed": ("observed", "empirical", "measured"),
    "nearest": ("nearest", "deterministic", "OPTQ on", "P1", "T1"),
    "hoeffding": ("Hoeffding", "stochastic", r"\delta^2/4", "T3"),
    "pi8": (r"\pi\delta^2/8", "pi8"),
    "pi2": (r"\pi\delta^2/2", "pi2"),
    "qronos/projection": ("Qronos (projection)", "projection"),
    "qronos/original": ("Qronos (original)", "original"),
    "recommended": ("recommended",),
}
#: neutral colours: references (grey), context, fills; they carry no meaning of their own
REF = "#666666"
NEUTRAL = ("#666666", "#999999", "#bbbbbb", "#dddddd", "#eeeeee", "#ffffff", "#444444", "#333333", "#555555")
#: reference lines are drawn above the data
Z_REF = 4
#: the colour cycle of the rc settings: neutral, so an uncoloured series never borrows a meaning
CYCLE = ["#333333", "#999999"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", "-.", ":"]
FORMATS = ("pdf", "png")

_RC = {
    "font.size": 8.5,
    "axes.titlesize": 9,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.2,
    "xtick.labelsize": 7.5,
    "ytick.labelsize": 7.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": matplotlib.cycler(color=CYCLE),
    "lines.linewidth": 1.4,
    "lines.markersize": 4.5,
    "legend.frameon": False,
    "savefig.dpi": 150,
    "pdf.fonttype": 42,  # embed TrueType (editable text in the PDF)
    "svg.fonttype": "none",
}


def color(meaning: str) -> str:
    """The colour of ``meaning`` (a key of :data:`COLORS`)."""
    return COLORS[meaning]


def marker_for(i: int) -> str:
    return MARKERS[i % len(MARKERS)]


@contextmanager
def style():
    """The figures' rc settings, for the duration of the block only."""
    with matplotlib.rc_context(_RC):
        yield


def new_figure(width: float = 7.0, height: float = 4.2, **kw) -> Figure:
    """A :class:`Figure` on an Agg canvas (no pyplot, no display). Call inside :func:`style`."""
    fig = Figure(figsize=(width, height), layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def fit_width(fig: Figure, text: str, fontsize: float, indent: str = "") -> str:
    """``text`` with its lines broken so that each fits the figure's width at ``fontsize`` (an average
    character is taken as 0.6 em wide, on the safe side for DejaVu Sans)."""
    import textwrap

    width = max(20, int(fig.get_figwidth() * 72 / (0.6 * fontsize)))
    out = []
    for line in text.split("\n"):
        lead = line[:len(line) - len(line.lstrip())]
        if len(line) > width and " | " in line:  # break at the separator first
            head, tail = line.rsplit(" | ", 1)
            out += textwrap.wrap(head, width=width, subsequent_indent=lead + indent) or [""]
            line = lead + indent + tail
        out += textwrap.wrap(line, width=width, subsequent_indent=lead + indent) or [""]
    return "\n".join(out)


def add_footer(fig: Figure, text: str) -> None:
    """The data provenance, small and grey, under the axes (kept clear of them by the layout)."""
    fig.supxlabel(fit_width(fig, text, 6.2, indent="  "), fontsize=6.2, color="#555555", x=0.0, ha="left")
    fig._ptq_footer = text  # for tests and callers


def legend_axes(ax, handles, labels, *, ncols: int = 3, fontsize: float = 6.3):
    """Use ``ax`` (a thin row of the grid) as a legend box: no frame, no ticks."""
    ax.set_axis_off()
    if handles:
        ax.legend(handles, labels, loc="center", ncols=ncols, fontsize=fontsize)
    return ax


def collect_legend(axes) -> tuple[list, list]:
    """The unique ``(handles, labels)`` of several axes, first seen first."""
    seen: dict = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    return list(seen.values()), list(seen)


def _plain(v, _pos=None) -> str:
    """A tick value as a plain number (``20``, ``0.5``, ``1e-05``), never ``2×10¹``."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else ""
    if 1e-4 <= abs(v) < 1e6:
        import numpy as np

        text = np.format_float_positional(float(f"{v:.3g}"), trim="-")
    else:
        text = f"{v:.0e}".replace("e-0", "e-").replace("e+0", "e")
    return text.replace("-", "\u2212")


def plain_log_ticks(ax, axis: str = "x") -> None:
    """Readable labels on a log axis: plain numbers at the decades; when the axis spans under two
    decades, also at 2 and 5 times them, under one decade at more round values (the minor ticks
    stay, unlabelled, elsewhere). Call it after the data are drawn (it reads the axis limits)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    a = getattr(ax, f"{axis}axis")
    if a.get_scale() != "log":
        return
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    a.set_major_formatter(FuncFormatter(_plain))
    if lo > 0 and math.log10(hi / lo) < 1:  # under a decade: enough round values to read a slope
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)))
    elif lo > 0 and math.log10(hi / lo) < 2:
        a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    a.set_minor_formatter(NullFormatter())


def ref_line(ax, value: float, *, axis: str = "x", **kw):
    """A grey reference line (bound = 1, η, …) above the data."""
    kw = {"color": REF, "lw": 0.9, "zorder": Z_REF, **kw}
    return (ax.axvline if axis == "x" else ax.axhline)(value, **kw)


def note(ax, text: str, *, loc: str = "center") -> None:
    """A message inside an axes (missing data, empty panels)."""
    pos = {"center": (0.5, 0.5, "center", "center"), "top": (0.5, 0.97, "center", "top"),
           "bottom": (0.5, 0.03, "center", "bottom")}[loc]
    ax.text(pos[0], pos[1], text, transform=ax.transAxes, ha=pos[2], va=pos[3], fontsize=7, color="#444444",
            wrap=True, bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#bbbbbb", lw=0.5))


def save(fig: Figure, out_dir, stem: str, formats=FORMATS, dpi: int | None = None) -> list[Path]:
    """Write ``out_dir/stem.<fmt>`` for every format (atomically: a temporary file, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        kw = {"metadata": {"Software": "provable-ptq figures"}} if fmt in ("png", "pdf") else {}
        if fmt == "pdf":
            kw = {"metadata": {"Creator": "provable-ptq figures"}}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, **kw)
        paths.append(path)
    return paths
