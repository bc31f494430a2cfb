"""``ptq-bounds figures``: draw the verification figures from the result store.

Reads the store only (never reruns a cell). Every figure is written as PDF and PNG (``--formats``)
into ``--out``; a figure whose study is missing is reported with the command that produces it,
the others are still drawn. Exit codes: 0 every requested figure was drawn; 2 bad input (an
argument, a missing or unreadable store, a campaign or study the store does not hold: the message
names the command that produces it); 4 internal error.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from . import FIGURES, figure_module, render
from ._data import DEFAULT_STORE, FigureDataError, open_source

DEFAULT_OUT = "ptq-results/figures"


def add_arguments(p):
    p.add_argument("--store", default=None, help=f"result store file (default {DEFAULT_STORE}, what "
                                                 "`ptq-bounds verify` writes)")
    p.add_argument("--campaign", default=None,
                   help="campaign id, or name for its latest run (default: the latest 'default' campaign); "
                        "figures 4 and 6 add the latest real-LLM campaign of the store when there is one, figure 9 draws it alone")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT}/)")
    p.add_argument("--only", default=None, metavar="1,3",
                   help=f"comma-separated figure numbers (default: all, {','.join(map(str, FIGURES))})")
    p.add_argument("--formats", default="pdf,png", help="comma-separated file formats (default pdf,png)")
    p.add_argument("--dpi", type=int, default=None, help="raster resolution (default 150)")
    p.add_argument("--K", type=int, default=None, dest="K",
                   help="figure 7: the alphabet size K (levels per side) the recommended λ must meet "
                        "(default: the median over the λ grid of the K that T3 needs, rounded up)")
    p.add_argument("--list", action="store_true", help="list the figures and their claims, then exit")
    p.add_argument("--no-progress", action="store_true",
                   help="accepted as by every long command (figures draws no progress bar; one line per figure)")


def _parse_only(text):
    if not text:
        return list(FIGURES)
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ValueError(f"{part!r} is not a figure number or range; give numbers such as 1,3 or 2-5 "
                             f"(figures are {', '.join(map(str, FIGURES))})") from None
    bad = [n for n in out if n not in FIGURES]
    if bad:
        raise ValueError(f"no figure {', '.join(map(str, bad))}; figures are {', '.join(map(str, FIGURES))}")
    return list(dict.fromkeys(out))


def _known_formats() -> set:
    """The file formats matplotlib can write here (empty when it cannot be asked)."""
    try:
        from matplotlib.backend_bases import FigureCanvasBase

        return set(FigureCanvasBase.get_supported_filetypes())
    except Exception:  # pragma: no cover - the figure itself will report
        return set()


def run(args) -> int:
    if getattr(args, "list", False):
        for n in FIGURES:
            mod = figure_module(n)
            study = mod.STUDY or ("real-LLM" if getattr(mod, "REAL_LLM", False) else "all cells")
            print(f"{n}  {mod.STEM:18s} study {study:10s} claims {', '.join(mod.CLAIMS)}\n   {mod.TITLE}")
        return 0
    try:
        numbers = _parse_only(args.only)
    except ValueError as exc:
        print(f"ptq-bounds figures: --only: {exc}", file=sys.stderr)
        return 2
    formats = tuple(f.strip().lower().lstrip(".") for f in args.formats.split(",") if f.strip())
    if not formats:
        print("ptq-bounds figures: --formats is empty", file=sys.stderr)
        return 2
    known = _known_formats()
    bad = [f for f in formats if known and f not in known]
    if bad:
        print(f"ptq-bounds figures: --formats: unknown {', '.join(bad)}; choose from {', '.join(sorted(known))}",
              file=sys.stderr)
        return 2
    if args.dpi is not None and args.dpi < 1:
        print(f"ptq-bounds figures: --dpi must be ≥ 1, got {args.dpi}", file=sys.stderr)
        return 2
    if args.K is not None and args.K < 1:
        print(f"ptq-bounds figures: --K must be ≥ 1, got {args.K}", file=sys.stderr)
        return 2
    from verify.cli import BadInput, check_writable_dir

    try:
        check_writable_dir(args.out, "--out")
    except BadInput as exc:
        print(f"ptq-bounds figures: {exc}", file=sys.stderr)
        return 2
    try:
        src = open_source(args.store, args.campaign)
    except FigureDataError as exc:
        print(f"ptq-bounds figures: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"ptq-bounds figures: --store: {args.store} is not a result store ({exc}); pass the store.sqlite "
              "`ptq-bounds verify` wrote", file=sys.stderr)
        return 2
    out = Path(args.out)
    print(f"store {src.path}, campaign {src.id} ({src.campaign['name']})")
    failed = 0
    for n in numbers:
        try:
            opts = {"K": args.K} if n == 7 and getattr(args, "K", None) is not None else {}
            paths = render(n, src, out, formats, dpi=args.dpi, **opts)
        except FigureDataError as exc:
            failed += 1
            print(f"figure {n}: not drawn: {exc}", file=sys.stderr)
            continue
        print(f"figure {n}: " + ", ".join(str(p) for p in paths))
    if failed:
        print(f"ptq-bounds figures: {failed} of {len(numbers)} figures not drawn (see above)", file=sys.stderr)
        return 2
    return 0
