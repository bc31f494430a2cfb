"""``paper_checks.md`` from the claim registry and stored verification results: the library behind
``ptq-bounds paper-checks``.

:func:`load_summaries` reads and checks campaign summaries (``results/*-summary.json``),
:func:`evidence_from_summaries` merges their per-claim evidence with
:func:`theory.verdicts.merge_summaries`, and :func:`render` writes the page (claims, evidence, the
float64 re-checks, and the tightness search). A summary that cannot be used raises
:class:`SummaryError` (a ``ValueError``) naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["DEFAULT_SUMMARIES", "SummaryError", "load_summaries", "evidence_from_summaries", "render"]

DEFAULT_SUMMARIES = ("results/default-summary.json", "results/real-llm-summary.json")


class SummaryError(ValueError):
    """A summary file that cannot be used (bad input, exit code 2)."""


def _as_aggregate(summary: dict) -> dict:
    """A campaign summary's per-id entries in the form of :func:`theory.verdicts.aggregate` (the
    summary stores ``runs``/``rows``/``violated_in`` as ``cells_in_scope``/``rows_in_scope``/
    ``violated_cells``); sources and violations are attributed to the campaign."""
    src = summary.get("campaign") or summary.get("name") or "campaign"
    out = {}
    for cid, c in summary["claims"].items():
        runs = int(c.get("cells_in_scope", c.get("runs")) or 0)
        violations = int(c.get("violations") or 0)
        out[cid] = {**c, "runs": runs, "rows": int(c.get("rows_in_scope", c.get("rows")) or 0),
                    "violated_in": [src] if violations else [], "sources": [src] if runs else []}
    return out


def evidence_from_summaries(summaries: list[dict]) -> dict:
    """Merge campaign summaries (:func:`theory.verdicts.merge_summaries`) into ``theory.report``
    evidence (claim or hypothesis id → dict)."""
    from theory.report import evidence_from_aggregate
    from theory.verdicts import merge_summaries

    return evidence_from_aggregate(merge_summaries(_as_aggregate(s) for s in summaries))


def load_summaries(paths) -> list[dict]:
    """The summaries in ``paths``; :class:`SummaryError` (one line) for a file that is unreadable,
    not JSON, or not a campaign summary written by ``ptq-bounds verify``."""
    out = []
    for p in paths:
        try:
            s = json.loads(Path(p).read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise SummaryError(f"--summary: cannot read {p} ({getattr(exc, 'strerror', None) or exc})") from None
        except json.JSONDecodeError as exc:
            raise SummaryError(f"--summary: {p} is not JSON ({exc.msg} at line {exc.lineno}); "
                               "pass a summary written by `ptq-bounds verify`") from None
        if not isinstance(s, dict) or not isinstance(s.get("claims"), dict) or not all(
                isinstance(c, dict) for c in s["claims"].values()):
            raise SummaryError(f"--summary: {p} is not a campaign summary (no per-claim \"claims\" object); "
                               "pass a summary written by `ptq-bounds verify`")
        _check_fields(s, p)
        out.append(s)
    if not any(s["claims"] for s in out):
        raise SummaryError(f"--summary: {', '.join(map(str, paths))} hold no per-claim evidence (empty \"claims\"); "
                           "pass a summary of a campaign that ran, written by `ptq-bounds verify`")
    return out


_COUNTS = ("cells_in_scope", "runs", "rows_in_scope", "rows", "violations", "trials", "exceedances",
           "insufficient", "out_of_scope")
_REALS = ("worst_ratio", "min_p_value", "detectable")


def _check_fields(summary: dict, path) -> None:
    """Every per-claim field the rendering reads has the type ``ptq-bounds verify`` writes
    (:class:`SummaryError` naming the file, the claim and the field otherwise)."""
    from theory.verdicts import STATUSES

    def bad(cid, key, v, want):
        raise SummaryError(f"--summary: {path}: claim {cid!r} field {key!r} is {v!r}, expected {want}; "
                           "pass a summary written by `ptq-bounds verify`")

    for cid, c in summary["claims"].items():
        for key in _COUNTS:
            v = c.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                bad(cid, key, v, "an integer ≥ 0")
        for key in _REALS:
            v = c.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                bad(cid, key, v, "a number or null")
        if "status" in c and c["status"] not in (*STATUSES, "verified"):  # "verified": the former name
            bad(cid, "status", c["status"], "one of " + ", ".join(STATUSES))
        for key, typ, want in (("reasons", dict, "an object"), ("violated_cells", list, "a list"),
                               ("violated_in", list, "a list"), ("sources", list, "a list")):
            if key in c and c[key] is not None and not isinstance(c[key], typ):
                bad(cid, key, c[key], want)


def render(paths, tightness=None) -> str:
    """The page: claims and campaign evidence (``paths``), then the tightness search (``tightness``, default
    ``tightness.json`` beside the first summary, when it exists)."""
    from theory.report import render_paper_checks

    summaries = load_summaries(paths)
    text = render_paper_checks(evidence_from_summaries(summaries))
    from .recheck import format_float64_precision_recheck, format_float64_recheck

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
    tpath = Path(tightness) if tightness is not None else (Path(paths[0]).parent / "tightness.json" if paths else None)
    if tpath is not None and (tightness is not None or tpath.is_file()):
        from .tightness import paper_checks_section

        try:
            tsum = json.loads(tpath.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SummaryError(f"--tightness: cannot read {tpath} ({exc}); pass the tightness.json written by "
                               "`ptq-bounds tightness`") from None
        if not isinstance(tsum, dict) or not isinstance(tsum.get("claims"), dict):
            raise SummaryError(f"--tightness: {tpath} is not a tightness summary; pass the tightness.json written "
                               "by `ptq-bounds tightness`")
        text = text.rstrip("\n") + "\n\n" + paper_checks_section(tsum).rstrip("\n") + "\n"
    return text
