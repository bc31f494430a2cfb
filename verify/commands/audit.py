"""``ptq-bounds audit MODULE:FUNCTION``: audit your own quantizer against every claim.

The function is called as ``f(W, X, *, grid, lam, rng)`` (Qronos-like: also ``X_tilde=``) and must
return ``Q`` (``n × N``). It is run over the campaign's data families; the report says, per claim
and per hypothesis, whether it is satisfied, violated or not exercised, and saves a minimal
counterexample (``.npz``) for the first deterministic failure. Exit code 1 when anything is violated.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..audit import FAMILIES, KINDS, audit, load_quantizer


def add_arguments(p):
    p.add_argument("quantizer", metavar="MODULE:FUNCTION",
                   help="your quantizer, e.g. mypkg.quant:my_gptq or path/to/file.py:my_gptq")
    p.add_argument("--kind", default="optq", choices=KINDS,
                   help="what the quantizer implements (which claims apply; default optq)")
    p.add_argument("--rounding", default="nearest", choices=("nearest", "stochastic"))
    p.add_argument("--order", default="natural", choices=("natural", "decreasing", "increasing"),
                   help="the processing order the quantizer uses (default natural)")
    p.add_argument("--families", default=",".join(FAMILIES), help="comma-separated data families")
    p.add_argument("--trials", type=int, default=600, help="trials per case for stochastic rounding (default 600)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=1e-4, help="family-wise false-alarm rate (default 1e-4)")
    p.add_argument("--stop-at-first", action="store_true", help="stop at the first failing case")
    p.add_argument("--no-shrink", action="store_true", help="do not search a minimal counterexample")
    p.add_argument("--out", default="ptq-audit", help="where counterexamples go (default ptq-audit/)")
    p.add_argument("--json", default=None, help="write the report as JSON")


def run(args) -> int:
    try:
        fn = load_quantizer(args.quantizer)
    except (ValueError, ImportError, AttributeError, FileNotFoundError, TypeError) as exc:
        print(f"ptq-bounds audit: {exc}", file=sys.stderr)
        return 2
    fams = tuple(f.strip() for f in args.families.split(",") if f.strip())
    bad = [f for f in fams if f not in FAMILIES]
    if bad:
        print(f"ptq-bounds audit: unknown families {bad}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    rep = audit(fn, name=args.quantizer, kind=args.kind, rounding=args.rounding, order=args.order, families=fams,
                trials=args.trials, seed=args.seed, alpha=args.alpha, stop_at_first=args.stop_at_first,
                shrink=not args.no_shrink, out_dir=args.out, progress=True)
    print(rep.format())
    if args.json:
        Path(args.json).write_text(json.dumps(rep.to_dict(), indent=1, sort_keys=True, default=str))
    return 1 if rep.flagged else 0
