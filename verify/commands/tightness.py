"""``ptq-bounds tightness``: search, per bound claim, for the inputs with the largest empirical/bound ratio.

The search itself is :mod:`verify.tightness`; this module only parses the arguments and prints.
Every best case is saved under ``--out`` (``<claim>.npz`` + ``<claim>.json``) with the summary
``<out>.json``/``<out>.md`` beside the folder (default ``results/tightness/`` and
``results/tightness.json``). Exit codes: 0 every best case satisfies its claim (deterministic ones
certified in exact arithmetic); 1 a claim is violated on a best case (a finding: the case is saved);
2 bad input; 3 nothing was exercised, or a stochastic verdict lacked its power; 4 internal error.
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_OUT = "results/tightness"


def _sizes(text: str):
    out = []
    for part in text.split(","):
        part = part.strip().lower()
        if not part:
            continue
        try:
            N, m = (int(v) for v in part.split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected sizes as NxM pairs such as 2x2,3x3 (N features × m samples), "
                                             f"got {part!r}") from None
        if not (1 <= N <= 12 and 1 <= m <= 64):
            raise argparse.ArgumentTypeError(f"size {part}: need 1 ≤ N ≤ 12 (exact certification) and 1 ≤ m ≤ 64")
        out.append((N, m))
    if not out:
        raise argparse.ArgumentTypeError("give at least one size, e.g. 2x2,3x3")
    return tuple(out)


def add_arguments(p):
    from ..cli import nonneg_int, positive_int
    from ..tightness import DEFAULT_BUDGET, DEFAULT_TRIALS, FINAL_TRIALS

    p.add_argument("--claims", default=None, metavar="T1.sum_c,T2",
                   help="comma-separated claim ids or prefixes (default: every bound claim; `--claims list` lists them)")
    p.add_argument("--budget", type=positive_int, default=DEFAULT_BUDGET,
                   help=f"objective evaluations per deterministic claim, split over the sizes (stochastic claims get a "
                        f"quarter; default {DEFAULT_BUDGET}, about 5 minutes on 2 cores)")
    p.add_argument("--sizes", type=_sizes, default=None, metavar="2x2,3x3",
                   help="layer sizes N×m searched, small first (default 1x1,2x2,3x3,4x4,6x6)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the search and of the stochastic trials")
    p.add_argument("--trials", type=positive_int, default=DEFAULT_TRIALS,
                   help=f"trials per stochastic evaluation during the search (default {DEFAULT_TRIALS})")
    p.add_argument("--final-trials", type=positive_int, default=FINAL_TRIALS,
                   help=f"fresh trials judging a stochastic best case (default {FINAL_TRIALS})")
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"folder for the best cases (default {DEFAULT_OUT}/; the summary goes to <out>.json/.md)")
    p.add_argument("--store", default="ptq-results/store.sqlite",
                   help="result store the search is recorded in, one cell per claim (default ptq-results/store.sqlite)")
    p.add_argument("--no-save", action="store_true", help="print only, write nothing (no files, no store)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _bad(msg):
    print(f"ptq-bounds tightness: {msg}", file=sys.stderr)
    return 2


def run(args) -> int:
    from pathlib import Path

    from theory.verdicts import exit_code

    from ..cli import BadInput, check_writable_dir
    from .. import tightness as T

    if args.claims is not None and args.claims.strip() == "list":
        for c, t in T.TARGETS.items():
            print(f"{c:22s} {t.family:18s} {t.rounding}")
        for c, why in T.NOT_SEARCHED.items():
            print(f"{c:22s} not searched: {why}")
        return 0
    try:
        claims = T.check_claims([c.strip() for c in args.claims.split(",") if c.strip()] if args.claims else None)
        if not claims:
            raise ValueError("--claims: no claim given; pass ids such as T1.sum_c,T2 or omit the option")
        sizes = args.sizes or T.DEFAULT_SIZES
        if args.budget < 4 * len(sizes):
            raise ValueError(f"--budget: {args.budget} is too small for {len(sizes)} sizes; give at least {4 * len(sizes)}")
        out = None
        if not args.no_save:
            out = Path(args.out)
            if out.exists() and not out.is_dir():
                raise ValueError(f"--out: {out} is a file; give a folder (e.g. {DEFAULT_OUT})")
            out.mkdir(parents=True, exist_ok=True)
            check_writable_dir(out, "--out")
            from ..cli import check_writable_file

            check_writable_file(args.store, "--store")
    except (ValueError, BadInput) as exc:
        return _bad(str(exc))
    summary = T.search(claims, budget=args.budget, sizes=sizes, seed=args.seed, out=out,
                       progress=not args.no_progress, trials=args.trials, final_trials=args.final_trials)
    statuses = []
    print(f"{'claim':22s} {'best ratio':>11s} {'N×m':>5s}  {'certificate':12s} class")
    for cid, r in summary["claims"].items():
        cert = (r.get("certificate") or {}).get("status", "—")
        st = r["final"].get("status", "not exercised")
        if cert == "violated":
            st = "violated"
        statuses.append({"consistent": "consistent", "violated": "violated",
                         "insufficient evidence": "insufficient evidence"}.get(st, "out of scope"))
        b = r.get("best_ratio")
        print(f"{cid:22s} {'—' if b is None else f'{b:11.4g}':>11s} {r.get('N')}×{r.get('m')}  {cert:12s} "
              f"{r['classification']['class']}")
    print(f"{summary['seconds']:.1f} s" + ("" if out is None else f"; best cases in {out}/, summary {out}.json"))
    if out is not None:
        import sqlite3

        from ..store import Store

        try:
            cid = T.store_summary(summary, Store(args.store))
        except sqlite3.DatabaseError as exc:
            return _bad(f"--store: {args.store} is not a result store ({exc}); pass the store.sqlite `ptq-bounds "
                        "verify` wrote, or a new path")
        print(f"store: {args.store} (campaign {cid})")
    return exit_code(statuses)
