"""``ptq-bounds verify``: run a verification campaign and check every claim.

Finished cells go to the result store as they complete (SQLite, default
``ptq-results/store.sqlite``); interrupting and re-running continues where it stopped. At the end a
summary table is printed and written as JSON. Float32 cells whose deterministic bounds show a ratio
above 1 within the float32 tolerance are re-run in float64 (the worst ``--recheck`` of them), and the
result goes into the summary. The exit code is 1 when a claim is violated (also in that float64
re-check), 2 when a cell failed to run, 3 when the default campaign left a claim unexercised.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..campaigns import CAMPAIGNS, FULL_COVERAGE, get_campaign
from ..executor import EXECUTORS
from ..runner import format_summary, run_campaign, write_json
from ..store import Store

DEFAULT_OUT = "ptq-results"


def add_arguments(p):
    p.add_argument("--campaign", default="default",
                   help=f"which campaign: {', '.join(CAMPAIGNS)} or real-llm (default: default)")
    p.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT}/)")
    p.add_argument("--store", default=None, help="result store file (default OUT/store.sqlite)")
    p.add_argument("--json", default=None, help="summary JSON path (default OUT/<campaign>-summary.json)")
    p.add_argument("--executor", default="process", choices=EXECUTORS, help="where cells run (default: process)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (with --executor dask)")
    p.add_argument("--limit", type=int, default=None, help="run at most this many pending cells, then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # real-LLM campaign options (ignored by the synthetic campaigns)
    p.add_argument("--model", default="smollm2-135m", help="real-llm: model name (default smollm2-135m)")
    p.add_argument("--layers", default=None, help="real-llm: comma-separated layer names or patterns")
    p.add_argument("--tokens", type=int, default=None, help="real-llm: calibration tokens")
    p.add_argument("--recheck", type=_nonneg_int, default=8, metavar="K",
                   help="re-run in float64 the K worst float32 cells whose deterministic bounds show a ratio above 1 "
                        "within the float32 tolerance (default 8; 0: none)")
    p.add_argument("--recheck-precision", type=_nonneg_int, default=8, metavar="K",
                   help="re-run in float64 the K float32 cells with the most rows out of scope because the loop's "
                        "float32 precision could not resolve a claim (default 8; 0: none)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="real-llm: the quick subset, blk.0.attn_q and every layer of blk.1 (the default)")
    size.add_argument("--full", action="store_true", help="real-llm: all 210 linear layers")


def _nonneg_int(s: str) -> int:
    import argparse

    try:
        k = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {s!r}") from None
    if k < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {k}")
    return k


def run(args) -> int:
    out = Path(args.out)
    store = Store(args.store or out / "store.sqlite")
    if args.campaign == "real-llm":
        from ..llm.campaign import build_campaign

        try:
            campaign = build_campaign(model=args.model, layers=args.layers, tokens=args.tokens, full=args.full,
                                      seed=args.seed, progress=not args.no_progress)
        except (FileNotFoundError, ImportError, ValueError) as exc:  # model package, text, layers, tokens
            print(f"ptq-bounds verify: real-llm: {exc}", file=sys.stderr)
            return 2
    else:
        try:
            campaign = get_campaign(args.campaign, args.seed)
        except ValueError as exc:
            print(f"ptq-bounds verify: {exc}", file=sys.stderr)
            return 2
    if args.workers is not None and args.workers < 1:
        print("ptq-bounds verify: --workers must be ≥ 1", file=sys.stderr)
        return 2
    summary = run_campaign(campaign, store, executor_kind=args.executor, workers=args.workers,
                           scheduler=args.scheduler, progress=not args.no_progress, limit=args.limit)
    print(format_summary(summary))
    if summary["cells"]:
        from ..recheck import float64_precision_recheck, float64_recheck, precision_recheck_line, recheck_line

        summary["float64_recheck"] = float64_recheck(store, campaign, limit=args.recheck,
                                                     progress=not args.no_progress)
        print(recheck_line(summary["float64_recheck"]))
        summary["float64_precision_recheck"] = float64_precision_recheck(store, campaign, limit=args.recheck_precision,
                                                                         progress=not args.no_progress)
        print(precision_recheck_line(summary["float64_precision_recheck"]))
    path = write_json(args.json or out / f"{campaign.name}-summary.json", summary)
    print(f"store: {store.path}   summary: {path}")
    if args.campaign == "real-llm":
        _real_llm_report(store, campaign, out, summary.get("float64_recheck"), summary.get("float64_precision_recheck"))
    if summary["violated"]:
        return 1
    bad64 = sorted({k for key in ("float64_recheck", "float64_precision_recheck")
                    for r in summary.get(key, {}).get("rechecked", [])
                    for k, d in r.get("claims", {}).items() if d["float64_status"] == "violated"})
    if bad64:
        print("violated in the float64 re-check: " + ", ".join(bad64), file=sys.stderr)
        return 1
    if summary["errors"]:
        return 2
    complete = summary["cells"] == summary["cells_expected"]
    if complete and campaign.name in FULL_COVERAGE and summary["not_exercised"]:
        print("claims never in scope: " + ", ".join(summary["not_exercised"]), file=sys.stderr)
        return 3
    return 0


def _real_llm_report(store, campaign, out: Path, recheck: dict | None, precision: dict | None = None) -> None:
    """Print the per-layer-type report of a real-LLM campaign and write it (Markdown and JSON), with the
    float64 re-check of the worst float32 cells whose deterministic bounds show a ratio above 1 within
    the float32 tolerance."""
    from ..llm.report import format_layer_type_report, layer_type_report
    from ..recheck import format_float64_precision_recheck, format_float64_recheck

    rep = layer_type_report(store, campaign)
    md = format_layer_type_report(rep)
    if recheck is not None:
        rep["float64_recheck"] = recheck
        md += "\n" + format_float64_recheck(recheck)
    if precision is not None:
        rep["float64_precision_recheck"] = precision
        md += "\n" + format_float64_precision_recheck(precision)
    print()
    print(md)
    path = out / f"{campaign.name}-report.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(md + "\n")
    jpath = write_json(out / f"{campaign.name}-report.json", rep)
    print(f"per-layer-type report: {path} (JSON: {jpath})")
