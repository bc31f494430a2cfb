"""``ptq-bounds paper-checks``: regenerate ``paper_checks.md`` from the claim registry and the
stored verification results (campaign summaries, by default the committed ``results/*-summary.json``).

``--check`` compares instead of writing (exit code 1 when the file is stale).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

DEFAULT_SUMMARIES = ("results/default-summary.json", "results/real-llm-summary.json")
STATUS = {"verified": "consistent", "violated": "violated", "not exercised": "not yet exercised"}


def add_arguments(p):
    p.add_argument("--summary", action="append", default=None,
                   help="campaign summary JSON written by `ptq-bounds verify` (repeatable; default: "
                        + ", ".join(DEFAULT_SUMMARIES) + " where present)")
    p.add_argument("--out", default="paper_checks.md", help="output file (default paper_checks.md)")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if OUT differs from the rendering")


def evidence_from_summaries(summaries: list[dict]) -> dict:
    """Merge campaign summaries into ``theory.report`` evidence (claim id → dict)."""
    ev: dict[str, dict] = {}
    for s in summaries:
        src = s.get("campaign") or s.get("name") or "campaign"
        for cid, c in s["claims"].items():
            e = ev.setdefault(cid, {"runs": 0, "trials": 0, "violations": 0, "out_of_scope": 0, "worst_ratio": None,
                                    "min_p_value": None, "sources": []})
            e["runs"] += int(c.get("cells_in_scope") or 0)
            e["trials"] += int(c.get("rows_in_scope") or 0)
            e["violations"] += int(c.get("violations") or 0)
            e["out_of_scope"] += int(c.get("out_of_scope") or 0)
            wr = c.get("worst_ratio")
            if wr is not None and not (isinstance(wr, float) and math.isnan(wr)):
                ident = c.get("kind") == "identity"
                if e["worst_ratio"] is None or (abs(wr - 1) > abs(e["worst_ratio"] - 1) if ident else wr > e["worst_ratio"]):
                    e["worst_ratio"] = wr
            p = c.get("min_p_value")
            if p is not None:
                e["min_p_value"] = p if e["min_p_value"] is None else min(e["min_p_value"], p)
            if c.get("cells_in_scope"):
                e["sources"].append(src)
    for e in ev.values():
        e["status"] = "violated" if e["violations"] else ("consistent" if e["runs"] else "not yet exercised")
        e["sources"] = sorted(set(e["sources"]))
    return ev


def render(paths) -> str:
    from theory.report import render_paper_checks

    summaries = [json.loads(Path(p).read_text()) for p in paths]
    text = render_paper_checks(evidence_from_summaries(summaries))
    from ..recheck import format_float64_precision_recheck, format_float64_recheck

    sections = (
        ("float64_recheck", format_float64_recheck, "### Deterministic bounds above ratio 1 in float32: float64 re-check",
         ["## Float32 ratios above 1", "",
          "A float32 run is judged with the loop's float32 accuracy as tolerance, so a deterministic bound can "
          "show a ratio above 1 in the summary without being violated. Per campaign, the worst such cells were "
          "run again in float64 on the same data (`ptq-bounds verify`, option `--recheck`).", ""]),
        ("float64_precision_recheck", format_float64_precision_recheck,
         "### Out of scope for float32 precision: float64 re-check",
         ["## Float32 precision: out-of-scope rows checked in float64", "",
          "Where cond(H_λ) makes the float32 loop too coarse to resolve a claim (τ > 0.05), its rows are out of "
          "scope in float32. Per campaign, the cells with the most such rows were run again in float64 on the same "
          "data (`ptq-bounds verify`, option `--recheck-precision`).", ""]),
    )
    for key, fmt, heading, intro in sections:
        found = [(s.get("campaign") or s.get("name"), s[key]) for s in summaries if key in s]
        if found:
            parts = list(intro) + [fmt(rc).replace(heading, f"### Campaign `{name}`") for name, rc in found]
            text = text.rstrip("\n") + "\n\n" + "\n".join(parts).rstrip("\n") + "\n"
    return text


def run(args) -> int:
    paths = args.summary or [p for p in DEFAULT_SUMMARIES if Path(p).exists()]
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        print(f"ptq-bounds paper-checks: no such summary {missing}; run `ptq-bounds verify` first", file=sys.stderr)
        return 2
    text = render(paths)
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != text:
            print(f"{out} is stale: regenerate it with `ptq-bounds paper-checks`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text)
    print(f"wrote {out} from {', '.join(paths) or 'no stored results'}")
    return 0
