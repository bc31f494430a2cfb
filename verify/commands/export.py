"""``ptq-bounds export``: a campaign's verdicts from the store as CSV or JSON."""

from __future__ import annotations

import sys

from ..store import Store


def add_arguments(p):
    p.add_argument("output", help="output file (.csv or .json)")
    p.add_argument("--store", default="ptq-results/store.sqlite", help="result store (default ptq-results/store.sqlite)")
    p.add_argument("--campaign", default=None, help="campaign id or name (default: the latest)")


def run(args) -> int:
    from pathlib import Path

    if not Path(args.store).exists():
        print(f"ptq-bounds export: no store at {args.store}; run `ptq-bounds verify` first", file=sys.stderr)
        return 2
    store = Store(args.store)
    camps = store.campaigns()
    sel = [c for c in camps if args.campaign in (None, c["id"], c["name"])]
    if not sel:
        print(f"ptq-bounds export: no campaign {args.campaign!r} in {args.store} (have: "
              f"{', '.join(c['id'] for c in camps) or 'none'})", file=sys.stderr)
        return 2
    try:
        path = store.export(sel[-1]["id"], args.output)
    except ValueError as exc:
        print(f"ptq-bounds export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0
