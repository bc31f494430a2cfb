"""``ptq-bounds audit MODULE:FUNCTION``: audit your own quantizer against every claim.

``ptq-bounds audit --list`` lists the adapters of third-party implementations (:mod:`verify.adapters`:
library, version or why it is unavailable, kind, whether the claims apply as proved or are checked
as empirical questions); ``ptq-bounds audit --impl NAME`` audits one of them (other options as below;
its kind, orders, grids and precision come from the adapter unless given).

The function is called as ``f(W, X, *, grid, lam, rng)`` (Qronos-like: also ``X_tilde=``; with
``--orders``: also ``order=``) and must return ``Q`` (``n × N``); the full contract is in
:mod:`verify.audit` and in ``--help``. It is run over the campaign's data families; the report
says, per claim and per hypothesis, whether it is consistent, violated or not checked (and why),
lists the cases the quantizer declined or failed on, convention differences and the working
precision, and saves a minimal counterexample (``.npz``) for the first deterministic failure.
Exit codes as every command (:mod:`theory.verdicts`): 0 all consistent, 1 violated, 2 bad input
(including a quantizer that cannot be called or fails on every case: one line naming the problem),
3 nothing exercised or insufficient evidence, 4 the quantizer failed on some cases or an internal
error.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from pathlib import Path

from ..audit import CONTRACT, FAMILIES, GRIDS, KINDS, ORDERS, PRECISIONS, audit, load_quantizer
from ..cli import open_unit_interval, positive_int


def _choices(allowed, what, none_ok=False):
    def parse(s: str):
        if none_ok and s.strip() == "none":
            return ()
        v = tuple(x.strip() for x in s.split(",") if x.strip())
        bad = [x for x in v if x not in allowed]
        if bad or not v:
            raise argparse.ArgumentTypeError(f"unknown {what} {bad or s!r}; choose from {', '.join(allowed)}")
        return v

    return parse


def add_arguments(p):
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    text = CONTRACT.replace("``", "")
    p.epilog = "quantizer contract:\n" + "\n".join("  " + line if line else "" for line in text.splitlines())
    p.add_argument("quantizer", metavar="MODULE:FUNCTION", nargs="?", default=None,
                   help="your quantizer, e.g. mypkg.quant:my_gptq or path/to/file.py:my_gptq")
    p.add_argument("--list", action="store_true",
                   help="list the adapters of third-party implementations (library, version, kind, how the claims apply)")
    p.add_argument("--impl", default=None, metavar="NAME",
                   help="audit a third-party implementation through its adapter (see --list)")
    p.add_argument("--kind", default=None, choices=KINDS,
                   help="what the quantizer implements (which claims apply; default: its declaration, else optq)")
    p.add_argument("--rounding", default=None, choices=("nearest", "stochastic"),
                   help="default: its declaration, else nearest")
    od = p.add_mutually_exclusive_group()
    od.add_argument("--order", default=None, choices=ORDERS,
                    help="the one processing order the quantizer uses (it is not told; default natural)")
    od.add_argument("--orders", default=None, type=_choices(ORDERS, "orders"),
                    help="comma-separated orders the quantizer supports; it is called with order=... on each "
                         "(e.g. natural,decreasing for act_order)")
    p.add_argument("--grids", default=None, type=_choices(tuple(GRIDS), "grids"),
                   help=f"comma-separated grids the quantizer supports (default: its declaration, else all: "
                        f"{','.join(GRIDS)})")
    p.add_argument("--precision", default="auto", choices=("auto",) + PRECISIONS,
                   help="the quantizer's working precision (default auto: inferred from the dtype of the Q it returns)")
    p.add_argument("--families", default=",".join(FAMILIES), type=_choices(FAMILIES, "families", none_ok=True),
                   help="comma-separated synthetic data families (none: only the --real-layers)")
    p.add_argument("--real-layers", default=None, metavar="FILE.npz",
                   help="also audit on slices of these real layers (a layer bank: arrays <name>/W, <name>/X[, "
                        "<name>/X_tilde]; `python -m verify.field_audit` writes one of SmolLM2 layers)")
    p.add_argument("--trials", type=positive_int, default=1200,
                   help="trials per case for stochastic rounding (≥ 1; default 1200: enough for the power the checker requires)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=open_unit_interval, default=1e-4, help="family-wise false-alarm rate (default 1e-4)")
    p.add_argument("--stop-at-first", action="store_true", help="stop at the first failing case")
    p.add_argument("--no-shrink", action="store_true", help="do not search a minimal counterexample")
    p.add_argument("--out", default="ptq-audit", help="where counterexamples go (default ptq-audit/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--debug", action="store_true", help="print tracebacks of failed cases and internal errors")


def _write_json(args, rep, adapter=None):
    if args.json:
        from ..campaign import provenance

        d = rep.to_dict()
        # what produced the report: the same record verify stores with a campaign, plus the seed
        d["provenance"] = provenance(seed=args.seed)
        if adapter is not None:
            d["provenance"]["implementation"] = {"name": adapter.name, "library": adapter.library,
                                                 "version": adapter.version()}
        Path(args.json).write_text(json.dumps(d, indent=1, sort_keys=True, default=str))


def _list() -> int:
    from ..adapters import ADAPTERS

    rows = [("NAME", "LIBRARY", "VERSION", "KIND", "CLAIMS", "ALGORITHM")]
    notes = []
    for a in ADAPTERS.values():
        why = a.why_unavailable()
        rows.append((a.name, a.library, a.version() or "-" if not why else "unavailable", a.kind,
                     "as proved" if a.proved else f"empirical ({a.audit_kind}'s claims as questions)", a.algorithm))
        if why:
            notes.append(f"  {a.name}: {why}")
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip())
    if notes:
        print("unavailable:")
        print("\n".join(notes))
    return 0


def _run_impl(args) -> int:
    from ..adapters import ADAPTERS, audit_adapter

    a = ADAPTERS.get(args.impl)
    if a is None:
        print(f"ptq-bounds audit: --impl: unknown implementation {args.impl!r}; choose one of "
              f"{', '.join(ADAPTERS)} (ptq-bounds audit --list)", file=sys.stderr)
        return 2
    why = a.why_unavailable()
    if why:
        print(f"ptq-bounds audit: --impl {a.name} is unavailable: {why}", file=sys.stderr)
        return 2
    kw = dict(families=args.families, trials=args.trials, seed=args.seed, alpha=args.alpha, real_layers=args.real_layers,
              stop_at_first=args.stop_at_first, shrink=not args.no_shrink, out_dir=args.out, progress=not args.no_progress)
    for key in ("kind", "rounding", "order", "orders", "grids"):
        if getattr(args, key) is not None:
            kw[key] = getattr(args, key)
    if args.precision != "auto":
        kw["precision"] = args.precision
    try:
        rep = audit_adapter(a, **kw)
    except ValueError as exc:
        print(f"ptq-bounds audit: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return _finish(args, rep, a)


def _finish(args, rep, adapter=None) -> int:
    """Write the JSON, print the report (or its one-line problem) and the tracebacks with --debug;
    the audit's exit code."""
    _write_json(args, rep, adapter)
    if rep.problem:
        print(f"ptq-bounds audit: {rep.problem}", file=sys.stderr)
        if args.debug:
            for e in rep.errors[:3]:
                print(e.get("traceback") or "", file=sys.stderr)
        return rep.exit_code()
    print(rep.format())
    if args.debug:
        for e in rep.errors:
            if e.get("traceback"):
                print(f"--- {e['case']}\n{e['traceback']}", file=sys.stderr)
    return rep.exit_code()


def run(args) -> int:
    if getattr(args, "list", False):
        return _list()
    if getattr(args, "impl", None) is not None:
        if args.quantizer is not None:
            print("ptq-bounds audit: give either MODULE:FUNCTION or --impl NAME, not both", file=sys.stderr)
            return 2
        return _run_impl(args)
    if args.quantizer is None:
        print("ptq-bounds audit: MODULE:FUNCTION is required (or --impl NAME for a third-party implementation, "
              "--list to see them)", file=sys.stderr)
        return 2
    try:
        fn = load_quantizer(args.quantizer)
    except Exception as exc:  # noqa: BLE001 - any failure to load the user's module is bad input
        msg = str(exc) if isinstance(exc, (ValueError, ImportError, AttributeError, FileNotFoundError, TypeError)) \
            else f"cannot load {args.quantizer}: {type(exc).__name__}: {exc}"
        print(f"ptq-bounds audit: {' '.join(msg.split())}", file=sys.stderr)
        if getattr(args, "debug", False):
            traceback.print_exc()
        return 2
    try:
        rep = audit(fn, name=args.quantizer, kind=args.kind, rounding=args.rounding, order=args.order,
                    orders=args.orders, grids=args.grids, precision=args.precision, families=args.families,
                    trials=args.trials, seed=args.seed, alpha=args.alpha, stop_at_first=args.stop_at_first,
                    shrink=not args.no_shrink, out_dir=args.out, progress=not args.no_progress,
                    real_layers=args.real_layers)
    except ValueError as exc:  # a bad argument or declaration
        print(f"ptq-bounds audit: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return _finish(args, rep)
