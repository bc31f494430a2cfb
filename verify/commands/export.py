"""``ptq-bounds export``: a campaign's verdicts from the store as CSV or JSON.

Exit codes: 0 written; 2 bad input (no store, not a result store, no such campaign, an output
that is not ``.csv``/``.json`` or cannot be written); 4 internal error.
"""

from __future__ import annotations

import sqlite3
import sys

from ..store import Store


def add_arguments(p):
    p.add_argument("output", help="output file (.csv or .json)")
    p.add_argument("--store", default="ptq-results/store.sqlite", help="result store (default ptq-results/store.sqlite)")
    p.add_argument("--campaign", default=None, help="campaign id or name (default: the latest)")
    p.add_argument("--no-progress", action="store_true",
                   help="accepted as by every long command (export draws no progress bar)")


def _bad(msg: str) -> int:
    print(f"ptq-bounds export: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    from pathlib import Path

    from ..cli import BadInput, check_writable_file

    if Path(args.output).is_dir():
        return _bad(f"output: {args.output} is a directory; give a file path ending in .csv or .json")
    fmt = Path(args.output).suffix.lstrip(".").lower()
    if fmt not in ("csv", "json"):
        return _bad(f"output: {args.output} must end in .csv or .json")
    try:
        check_writable_file(args.output, "output")
    except BadInput as exc:
        return _bad(str(exc))
    if not Path(args.store).is_file():
        return _bad(f"--store: no store at {args.store}; run `ptq-bounds verify` first")
    try:
        store = Store(args.store)
        camps = store.campaigns()
    except sqlite3.DatabaseError as exc:
        return _bad(f"--store: {args.store} is not a result store ({exc}); pass the store.sqlite `ptq-bounds "
                    "verify` wrote")
    sel = [c for c in camps if args.campaign in (None, c["id"], c["name"])]
    if not sel:
        return _bad(f"--campaign: no campaign {args.campaign!r} in {args.store} (have: "
                    f"{', '.join(c['id'] for c in camps) or 'none'})")
    try:
        path = store.export(sel[-1]["id"], args.output)
    except ValueError as exc:
        return _bad(str(exc))
    except OSError as exc:
        return _bad(f"output: cannot write {args.output} ({exc.strerror or exc}); give a path in a writable directory")
    print(f"wrote {path}")
    return 0
