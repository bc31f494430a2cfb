"""The field audit: every available adapter (:mod:`verify.adapters`) audited over the synthetic data
families; writes ``results/field-audit.json`` and ``results/field-audit.md`` (implementation ×
claim, library versions, conventions, verdicts).

    python -m verify.field_audit [--families tall,dead,...] [--out results/field-audit]
    python -m verify.field_audit --setup NAME|all    # build the pinned environments first

``--setup`` runs ``benchmarks/field_audit_envs.sh`` (llmcompressor, gptqmodel, amd-quark, auto-gptq:
each library in its own virtual environment with its pinned torch, this checkout installed with
``--no-deps`` and the package's core dependencies), then the audit.

Each adapter runs in this interpreter when its library imports here; otherwise, when a virtual
environment ``$PTQ_ENVS/<library>/bin/python`` exists (default ``PTQ_ENVS=/work/envs``), the audit
runs there as ``python -m verify.cli audit --impl NAME --json ...`` with this checkout on
``PYTHONPATH``. Adapters available nowhere are listed with the reason. Statistical checks (and so a
power) arise only for stochastic rounding; the implementations audited here round to nearest, so
every verdict is deterministic (``power: n/a``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .audit import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


def _run_here(a, families, seed):
    from .adapters import audit_adapter

    return audit_adapter(a, families=families, seed=seed, shrink=True,
                         out_dir=str(ROOT / "results" / "field-audit-counterexamples" / a.name)).to_dict()


def _run_env(a, py, families, seed):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        p = subprocess.run([str(py), "-m", "verify.cli", "audit", "--impl", a.name, "--families", ",".join(families),
                            "--seed", str(seed), "--json", str(out), "--no-progress",
                            "--out", str(ROOT / "results" / "field-audit-counterexamples" / a.name)],
                           env=env, capture_output=True, text=True)
        if not out.exists():
            return {"status": "error", "exit_code": p.returncode, "problem": (p.stderr or p.stdout)[-400:]}
        return json.loads(out.read_text())


def run(families=FAMILIES, seed=0, out="results/field-audit"):
    from .adapters import ADAPTERS

    envs = Path(os.environ.get("PTQ_ENVS", "/work/envs"))
    rows = []
    for a in ADAPTERS.values():
        entry = a.describe()
        if a.available():
            entry["environment"] = sys.executable
            entry["report"] = _run_here(a, families, seed)
        elif (envs / a.library / "bin" / "python").exists():
            py = envs / a.library / "bin" / "python"
            entry["environment"] = str(py)
            entry["report"] = _run_env(a, py, families, seed)
            impl = (entry["report"] or {}).get("implementation") or {}
            for k in ("version", "available", "why_unavailable"):  # as seen in its own environment
                if k in impl:
                    entry[k] = impl[k]
        else:
            entry["report"] = None
        rows.append(entry)
    doc = {"families": list(families), "seed": seed, "command": "python -m verify.field_audit", "implementations": rows}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
    out.with_suffix(".md").write_text(markdown(doc))
    return doc


def _cell(c):
    if not c or c.get("status") in (None, "not exercised") or not c.get("cases_in_scope"):
        return "–"
    wr = c.get("worst_ratio")
    s = {"consistent": "holds", "violated": "VIOLATED"}.get(c["status"], c["status"])
    return f"{s} ({c['cases_in_scope']}" + (f", ≤{wr:.3g}" if isinstance(wr, float) else "") + ")"


def markdown(doc) -> str:
    impls = doc["implementations"]
    ran = [i for i in impls if i.get("report") and i["report"].get("claims")]
    lines = ["# Field audit: third-party GPTQ / Qronos / GPFQ implementations", "",
             f"Regenerate with `{doc['command']}`. Data families: {', '.join(doc['families'])}; seed {doc['seed']}.",
             "Cells: verdict (cases in scope, worst ratio of the empirical value to the bound). Every check is "
             "deterministic (nearest rounding), so no power applies. *Empirical* rows are implementations that are "
             "not the audited algorithm: their verdicts answer whether its claims also hold, not a theorem's check.", "",
             "## Implementations", "", "| implementation | library | version | kind | claims | status (exit) | cases ran / planned / declined |",
             "|---|---|---|---|---|---|---|"]
    for i in impls:
        r = i.get("report")
        st = f"{r.get('status')} ({r.get('exit_code')})" if r else f"not run: {i['why_unavailable']}"
        cnt = f"{r.get('cases', 0)} / {r.get('planned', 0)} / {len(r.get('declined', []))}" if r else "–"
        lines.append(f"| {i['name']} | {i['library']} | {i['version'] or '–'} | {i['kind']} | "
                     f"{'as proved' if i['proved'] else 'empirical'} | {st} | {cnt} |")
    ids = []
    for i in ran:
        for group in ("hypotheses", "claims"):
            for k, c in i["report"][group].items():
                if c.get("cases_in_scope") and k not in ids:
                    ids.append(k)
    if ran:
        lines += ["", "## Implementation × claim", "", "| claim | " + " | ".join(i["name"] for i in ran) + " |",
                  "|---|" + "---|" * len(ran)]
        for k in ids:
            cells = [_cell(i["report"]["hypotheses"].get(k) or i["report"]["claims"].get(k)) for i in ran]
            lines.append(f"| {k} | " + " | ".join(cells) + " |")
    lines += ["", "## Conventions and findings", ""]
    for i in impls:
        lines.append(f"### {i['name']}")
        for conv, how in i["conventions"]:
            lines.append(f"- {conv}: {how}")
        r = i.get("report")
        if r:
            for c in r.get("conventions", []):
                lines.append(f"- found: {c['convention']}: {c['found']} (checked as {c['checked_as']})")
            reasons = {}
            for d in r.get("declined", []):
                reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
            for why, k in reasons.items():
                lines.append(f"- declined {k} cases: {why}")
            for group in ("hypotheses", "claims"):
                for k, c in r[group].items():
                    if c.get("first"):
                        lines.append(f"- {'empirical: ' if not i['proved'] else ''}{k} fails first on {c['first']}")
            for ce in r.get("counterexamples", []):
                lines.append(f"- counterexample for {ce['check']}: `{os.path.relpath(ce['path'], ROOT)}` ({ce['shape']})")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m verify.field_audit", description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "results" / "field-audit"))
    p.add_argument("--setup", metavar="NAME|all", default=None,
                   help="first build the environment(s) with benchmarks/field_audit_envs.sh "
                        "(llmcompressor, gptqmodel, amd-quark, auto-gptq or all)")
    a = p.parse_args(argv)
    if a.setup:
        rc = subprocess.run(["bash", str(ROOT / "benchmarks" / "field_audit_envs.sh"), a.setup]).returncode
        if rc:
            print(f"--setup {a.setup}: building the environment failed (exit {rc})", file=sys.stderr)
            return rc
    fams = tuple(x for x in a.families.split(",") if x)
    bad = [f for f in fams if f not in FAMILIES]
    if bad or not fams:
        print(f"--families: unknown {bad or a.families!r}; choose from {', '.join(FAMILIES)}", file=sys.stderr)
        return 2
    doc = run(fams, a.seed, a.out)
    print(f"wrote {a.out}.json and {a.out}.md ({len(doc['implementations'])} implementations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
