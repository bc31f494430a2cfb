"""``ptq-bounds paper-checks``: regenerate ``paper_checks.md`` from the claim registry and the
stored verification results (campaign summaries, by default the committed ``results/*-summary.json``).

The summaries' per-claim (and per-hypothesis) evidence is merged with
:func:`theory.verdicts.merge_summaries`; statuses use that module's vocabulary. Exit codes: 0 written
(or, with ``--check``, up to date); 1 with ``--check`` when the file is stale (the check failed; CI
relies on it); 2 bad input (a summary that is missing, unreadable or not a campaign summary, or
evidence for claims this version does not know); 3 no summary found (nothing to render evidence from).
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..paper_checks import DEFAULT_SUMMARIES, SummaryError, render

EXIT_STALE = 1  # --check: the file differs from the rendering


def add_arguments(p):
    p.add_argument("--summary", action="append", default=None,
                   help="campaign summary JSON written by `ptq-bounds verify` (repeatable; default: "
                        + ", ".join(DEFAULT_SUMMARIES) + " where present)")
    p.add_argument("--out", default="paper_checks.md", help="output file (default paper_checks.md)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if OUT differs from the rendering")
    p.add_argument("--tightness", default=None,
                   help="tightness summary written by `ptq-bounds tightness` (default: tightness.json beside the "
                        "first summary, where present)")


def run(args) -> int:
    paths = args.summary or [p for p in DEFAULT_SUMMARIES if Path(p).exists()]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"ptq-bounds paper-checks: --summary: no such file {', '.join(map(str, missing))}; "
              "run `ptq-bounds verify` first", file=sys.stderr)
        return 2
    if not paths:
        print(f"ptq-bounds paper-checks: not exercised: no campaign summary found (looked for "
              f"{', '.join(DEFAULT_SUMMARIES)}); run `ptq-bounds verify` or pass --summary FILE", file=sys.stderr)
        return 3
    try:
        text = render(paths, args.tightness)
    except ValueError as exc:  # SummaryError, or evidence for claim ids this version does not know
        msg = str(exc) if isinstance(exc, SummaryError) else f"--summary: {exc}; re-run `ptq-bounds verify`"
        print(f"ptq-bounds paper-checks: {msg}", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is stale: regenerate it with `ptq-bounds paper-checks`", file=sys.stderr)
            return EXIT_STALE
        print(f"{out} is up to date")
        return 0
    try:
        out.write_text(text)
    except OSError as exc:
        print(f"ptq-bounds paper-checks: --out: cannot write {out} ({exc.strerror or exc}); "
              "give a path in an existing, writable directory", file=sys.stderr)
        return 2
    print(f"wrote {out} from {', '.join(map(str, paths))}")
    return 0
