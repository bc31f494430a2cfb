"""Shared look of the figures: a colour-blind-safe palette, fonts, the provenance footer, saving.

Nothing here changes matplotlib's global state: figures are built with the object-oriented API
(:class:`matplotlib.figure.Figure` on an Agg canvas, no ``pyplot``, no display needed) inside
:func:`style`, a ``rc_context``.

Palette: Okabe & Ito (2008), "Color Universal Design", safe for the common colour-vision
deficiencies; every series also differs by marker or line style, so the figures read in grey.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from verify._atomic import atomic_path

__all__ = ["OKABE_ITO", "CYCLE", "MARKERS", "LINESTYLES", "color_for", "marker_for", "style", "new_figure",
           "add_footer", "save", "note", "legend_axes", "collect_legend", "plain_log_ticks", "FORMATS"]

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
#: the order series take colours in (yellow last: weak on white)
CYCLE = [OKABE_ITO[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky", "black", "yellow")]
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


def color_for(i: int) -> str:
    return CYCLE[i % len(CYCLE)]


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


def add_footer(fig: Figure, text: str) -> None:
    """The data provenance, small and grey, under the axes (kept clear of them by the layout)."""
    fig.supxlabel(text, fontsize=6.2, color="#555555", x=0.0, ha="left")
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


def plain_log_ticks(ax, axis: str = "x") -> None:
    """Major labels only on a log axis (minor labels clutter narrow panels)."""
    from matplotlib.ticker import NullFormatter

    getattr(ax, f"{axis}axis").set_minor_formatter(NullFormatter())


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
