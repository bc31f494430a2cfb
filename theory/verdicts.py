"""One status vocabulary, one evidence aggregator and one exit-code policy for every command.

Every verdict of the package (a claim on a run, a checked hypothesis of a run, a whole campaign,
an audit, ``check-layer``, ``paper_checks.md``) uses these statuses:

* ``consistent``: checked in scope, no violation beyond the run's measured floating-point
  deviation (deterministic) or no significant excess at the declared false-alarm rate with the
  stated power (statistical);
* ``violated``: the opposite;
* ``insufficient evidence``: checked, but the test could not reach the declared power (too few
  trials, or a floating-point deviation too large to decide): never a pass;
* ``out of scope``: a hypothesis of the claim does not hold (counted, with reasons);
* ``not exercised``: nothing in scope at all (aggregates only);
* ``error``: the computation itself failed (a cell, a quantizer call).

Exit codes (:data:`EXIT`): 0 every checked claim holds; 1 a claim or hypothesis is violated;
2 bad input; 3 not exercised or insufficient evidence; 4 internal error.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

__all__ = ["CONSISTENT", "VIOLATED", "INSUFFICIENT", "OUT_OF_SCOPE", "NOT_EXERCISED", "ERROR", "STATUSES",
           "EXIT", "combine", "aggregate", "exit_code", "merge_summaries"]

CONSISTENT = "consistent"
VIOLATED = "violated"
INSUFFICIENT = "insufficient evidence"
OUT_OF_SCOPE = "out of scope"
NOT_EXERCISED = "not exercised"
ERROR = "error"
STATUSES = (CONSISTENT, VIOLATED, INSUFFICIENT, OUT_OF_SCOPE, NOT_EXERCISED, ERROR)

#: the exit-code policy of every ``ptq-bounds`` command
EXIT = {"ok": 0, "violated": 1, "bad input": 2, "not exercised": 3, "internal error": 4}

# precedence when statuses of one claim are combined over several runs
_RANK = {VIOLATED: 5, ERROR: 4, CONSISTENT: 3, INSUFFICIENT: 2, OUT_OF_SCOPE: 1, NOT_EXERCISED: 0}


def combine(statuses: Iterable[str]) -> str:
    """The status of one claim over several verdicts: violated if any is; else consistent if any
    is; else insufficient evidence if any is; else not exercised. (``error`` ranks below
    ``violated`` and above ``consistent``: a failed computation is never hidden by others.)"""
    best = NOT_EXERCISED
    for s in statuses:
        if s not in _RANK:
            raise ValueError(f"unknown status {s!r}; statuses are {STATUSES}")
        if _RANK[s] > _RANK[best]:
            best = s
    return OUT_OF_SCOPE if best == OUT_OF_SCOPE else best


def _num(x):
    if x is None:
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def _new(cid, kind, title=""):
    return {"claim": cid, "kind": kind, "title": title, "status": NOT_EXERCISED, "runs": 0, "rows": 0,
            "out_of_scope": 0, "reasons": {}, "violations": 0, "violated_in": [], "worst_ratio": None,
            "min_p_value": None, "trials": 0, "exceedances": 0, "insufficient": 0, "detectable": None,
            "sources": []}


def _worse(kind, a, b) -> bool:
    if kind == "identity":
        return abs(a - 1) > abs(b - 1)
    return a > b


def aggregate(verdicts: Iterable, *, source: str | None = None, into: dict | None = None) -> dict:
    """Fold verdicts (``theory.Verdict`` objects or their ``to_dict()``; claims and hypotheses, any
    runs) into one summary per id.

    Per id: ``runs`` (verdicts with an in-scope row), ``rows`` (in-scope rows), ``out_of_scope``
    (rows; runs for per-run claims) with ``reasons``, ``violations`` (violating verdicts),
    ``violated_in`` (their sources), ``worst_ratio`` (identities: farthest from 1),
    ``min_p_value``, ``trials``/``exceedances`` (probability claims), ``insufficient`` (verdicts with
    insufficient evidence), ``detectable`` (the largest, i.e. weakest, smallest-detectable effect
    any statistical verdict stated) and ``status`` (:func:`combine`). ``into``: an existing
    summary to add to (several campaigns, several audit cases)."""
    out = {} if into is None else into
    for v in verdicts:
        d = v.to_dict() if hasattr(v, "to_dict") else dict(v)
        cid = d["claim"]
        s = out.setdefault(cid, _new(cid, d.get("kind", "")))
        ins = int(d.get("in_scope") or 0)
        s["out_of_scope"] += int(d.get("out_of_scope") or 0)
        for r, k in (d.get("reasons") or {}).items():
            s["reasons"][r] = s["reasons"].get(r, 0) + int(k)
        status = d.get("status") or (VIOLATED if d.get("violated") else (CONSISTENT if ins else OUT_OF_SCOPE))
        if status == "verified":  # stored results written before this vocabulary
            status = CONSISTENT
        if ins:
            s["runs"] += 1
            s["rows"] += ins
            wr = _num(d.get("worst_ratio"))
            if wr is not None and (s["worst_ratio"] is None or _worse(s["kind"], wr, s["worst_ratio"])):
                s["worst_ratio"] = wr
            p = _num(d.get("p_value"))
            if p is not None:
                s["min_p_value"] = p if s["min_p_value"] is None else min(s["min_p_value"], p)
            s["trials"] += int(d.get("trials") or 0)
            s["exceedances"] += int(d.get("exceedances") or 0)
            det = _num((d.get("power") or {}).get("detectable"))
            if det is not None:
                s["detectable"] = det if s["detectable"] is None else max(s["detectable"], det)
        if status == VIOLATED:
            s["violations"] += 1
            if source is not None and source not in s["violated_in"]:
                s["violated_in"].append(source)
        if status == INSUFFICIENT:
            s["insufficient"] += 1
        s["status"] = combine([s["status"], status])
        if source is not None and (ins or status == VIOLATED) and source not in s["sources"]:
            s["sources"].append(source)
    return out


def merge_summaries(summaries: Iterable[Mapping]) -> dict:
    """Merge per-id summaries of :func:`aggregate` (e.g. of several campaigns) into one."""
    out: dict = {}
    for summ in summaries:
        for cid, c in summ.items():
            s = out.setdefault(cid, _new(cid, c.get("kind", ""), c.get("title", "")))
            for k in ("runs", "rows", "out_of_scope", "violations", "trials", "exceedances", "insufficient"):
                s[k] += int(c.get(k) or 0)
            for r, k in (c.get("reasons") or {}).items():
                s["reasons"][r] = s["reasons"].get(r, 0) + int(k)
            wr = _num(c.get("worst_ratio"))
            if wr is not None and (s["worst_ratio"] is None or _worse(s["kind"], wr, s["worst_ratio"])):
                s["worst_ratio"] = wr
            p = _num(c.get("min_p_value"))
            if p is not None:
                s["min_p_value"] = p if s["min_p_value"] is None else min(s["min_p_value"], p)
            det = _num(c.get("detectable"))
            if det is not None:
                s["detectable"] = det if s["detectable"] is None else max(s["detectable"], det)
            for k in ("violated_in", "sources"):
                s[k] = sorted(set(s[k]) | set(c.get(k) or []))
            st = c.get("status") or NOT_EXERCISED
            s["status"] = combine([s["status"], CONSISTENT if st == "verified" else st])
    return out


def exit_code(statuses: Iterable[str], *, errors: int = 0, required_checked: bool = True) -> int:
    """The exit code of a command from the statuses it reported (claims and hypotheses).

    1 if anything is violated; else 4 if a computation failed (``errors`` > 0 or an ``error``
    status); else 3 if any verdict has insufficient evidence, nothing at all was checked
    (no ``consistent``), or ``required_checked`` is false (e.g. a claim the campaign must exercise
    was not); else 0."""
    st = list(statuses)
    if VIOLATED in st:
        return EXIT["violated"]
    if errors or ERROR in st:
        return EXIT["internal error"]
    if INSUFFICIENT in st or CONSISTENT not in st or not required_checked:
        return EXIT["not exercised"]
    return EXIT["ok"]
