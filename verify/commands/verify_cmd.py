"""``ptq-bounds verify``: run a verification campaign and check every claim.

Finished cells go to the result store as they complete (SQLite, default
``ptq-results/store.sqlite``); interrupting and re-running continues where it stopped. At the end a
summary table is printed and written as JSON. Float32 cells whose deterministic bounds show a ratio
above 1 within the float32 tolerance are re-run in float64 (the worst ``--recheck`` of them), and the
result goes into the summary. Exit codes (:func:`theory.verdicts.exit_code`): 1 when a claim or
hypothesis is violated (also in the float64 re-checks); else 4 when a cell (or a re-run) failed to
run; else 3 when nothing was checked, a verdict had insufficient evidence, or the complete default
campaign left a claim unexercised; else 0. Bad arguments exit 2 before anything is created.
"""

from __future__ import annotations

import sqlite3
import sys
from pathlib import Path

from ..campaigns import CAMPAIGNS, get_campaign
from ..cli import nonneg_int
from ..executor import EXECUTORS
from ..runner import write_json
from ..store import Store
from ..verification import decide, verify_campaign

DEFAULT_OUT = "ptq-results"
#: every value of --campaign: the built-in synthetic campaigns and the real-LLM one
CAMPAIGN_CHOICES = (*CAMPAIGNS, "real-llm")


def add_arguments(p):
    p.add_argument("--campaign", default="default",
                   help=f"which campaign: {', '.join(CAMPAIGN_CHOICES)} (default: default)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="campaign seed, an integer ≥ 0 (default 0)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT}/)")
    p.add_argument("--store", default=None, help="result store file (default OUT/store.sqlite)")
    p.add_argument("--json", default=None, help="summary JSON path (default OUT/<campaign>-summary.json)")
    p.add_argument("--executor", default="process", choices=EXECUTORS, help="where cells run (default: process)")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (with --executor dask)")
    p.add_argument("--limit", type=int, default=None, help="run at most this many pending cells, then stop")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # real-LLM campaign options (ignored by the synthetic campaigns)
    p.add_argument("--model", default="smollm2-135m",
                   help="real-llm: smollm2-135m (default), gemma3-270m, a GGUF file, or a Hugging Face model "
                        "directory (through transformers, the hf extra; layers captured into OUT/captures/)")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="real-llm with a model directory: calibration text file (default: the licence texts)")
    p.add_argument("--layers", default=None, help="real-llm: comma-separated layer names or patterns")
    p.add_argument("--tokens", type=int, default=None, help="real-llm: calibration tokens")
    p.add_argument("--recheck", type=nonneg_int, default=8, metavar="K",
                   help="re-run in float64 the K worst float32 cells whose deterministic bounds show a ratio above 1 "
                        "within the float32 tolerance (default 8; 0: none)")
    p.add_argument("--recheck-precision", type=nonneg_int, default=8, metavar="K",
                   help="re-run in float64 the K float32 cells with the most rows out of scope because the loop's "
                        "float32 precision could not resolve a claim (default 8; 0: none)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="real-llm: the quick subset, blk.0.attn_q and every layer of blk.1 (the default)")
    size.add_argument("--full", action="store_true", help="real-llm: all 210 linear layers")


EXIT_BAD_INPUT = 2  # theory.verdicts.EXIT["bad input"], without importing theory for a bad command line


def _bad(msg: str) -> int:
    print(f"ptq-bounds verify: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run(args) -> int:
    # arguments first: nothing (store, output directory) is created for a bad command line
    if args.campaign not in CAMPAIGN_CHOICES:
        return _bad(f"--campaign: unknown campaign {args.campaign!r}; choose one of {', '.join(CAMPAIGN_CHOICES)}")
    if args.workers is not None and args.workers < 1:
        return _bad(f"--workers: must be ≥ 1, got {args.workers}; omit it to use every core")
    if args.limit is not None and args.limit < 0:
        return _bad(f"--limit: must be ≥ 0, got {args.limit}")
    if args.scheduler and args.executor != "dask":
        return _bad("--scheduler: a scheduler address needs --executor dask; add it, or drop --scheduler")
    out = Path(args.out)
    try:  # every output is checked before any work: a long campaign must not fail at its very end
        _check_outputs(args, out)
    except ValueError as exc:
        return _bad(str(exc))
    if args.text is not None and not (args.campaign == "real-llm" and Path(args.model).is_dir()):
        return _bad("--text: a calibration text file is read for --campaign real-llm with a model directory "
                    "(--model PATH); drop it, or give both")
    if args.campaign == "real-llm" and Path(args.model).is_dir():
        from ..llm.model_campaign import build_model_campaign

        try:
            campaign = build_model_campaign(args.model, args.layers, tokens=args.tokens, text=args.text,
                                            seed=args.seed, out=out, progress=not args.no_progress)
        except (FileNotFoundError, ImportError, ValueError) as exc:  # transformers, model, text, layers, tokens
            return _bad(f"real-llm: {exc}")
    elif args.campaign == "real-llm":
        from ..llm.campaign import build_campaign

        try:
            campaign = build_campaign(model=args.model, layers=args.layers, tokens=args.tokens, full=args.full,
                                      seed=args.seed, progress=not args.no_progress)
        except (FileNotFoundError, ImportError, ValueError) as exc:  # model package, text, layers, tokens
            return _bad(f"real-llm: {exc}")
    else:
        try:
            campaign = get_campaign(args.campaign, args.seed)
        except ValueError as exc:
            return _bad(f"--campaign: {exc}")
    if args.executor == "dask" and args.scheduler:  # fail fast on an address that does not answer
        from ..executor import SchedulerUnreachable, connect_scheduler

        try:
            connect_scheduler(args.scheduler).close()
        except SchedulerUnreachable as exc:
            return _bad(str(exc))
    store_path = Path(args.store or out / "store.sqlite")
    try:
        store = Store(store_path)
    except sqlite3.DatabaseError as exc:
        return _bad(f"--store: {store_path} is not a result store ({exc}); pass the store.sqlite `ptq-bounds "
                    "verify` wrote, or a new path")
    summary = verify_campaign(campaign, store, executor_kind=args.executor, workers=args.workers,
                              scheduler=args.scheduler, progress=not args.no_progress, limit=args.limit,
                              recheck=args.recheck, recheck_precision=args.recheck_precision, echo=print)
    path = write_json(args.json or out / f"{campaign.name}-summary.json", summary)
    print(f"store: {store.path}   summary: {path}")
    if args.campaign == "real-llm" and campaign.name != "real-llm-model":  # the report reads GGUF-campaign cells
        _real_llm_report(store, campaign, out, summary.get("float64_recheck"), summary.get("float64_precision_recheck"))
    code, reasons = decide(summary, campaign.name)
    for line in reasons:
        print(line if line.startswith("violated in the float64") else f"ptq-bounds verify: {line}", file=sys.stderr)
    return code


def _check_outputs(args, out: Path) -> None:
    """``--out``, ``--store`` and ``--json`` can be written (ValueError naming the option otherwise)."""
    from ..cli import check_writable_dir, check_writable_file

    check_writable_dir(out, "--out")
    check_writable_file(args.store or out / "store.sqlite", "--store")
    check_writable_file(args.json or out / f"{args.campaign}-summary.json", "--json")


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
