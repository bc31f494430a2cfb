"""The real-LLM campaign on any model transformers loads: ``ptq-bounds verify --campaign real-llm
--model PATH`` with ``PATH`` a Hugging Face model directory (or a GGUF file of an architecture the
NumPy forward does not know).

The layers' ``W``, ``X`` and ``X̃`` are captured once with :func:`verify.llm.hf.capture_to_dir`
(forward hooks; X̃ from sequential quantization of every earlier linear layer) into
``OUT/captures/<name>-<hash>/``, where ``<hash>`` covers the model's SHA-256, the layer pattern,
the tokens, the calibration text and the sequential quantizer, so a second run reuses the files.
The cells are those of the quick real-LLM campaign (:data:`verify.llm.campaign.QUICK_RECIPES`) on
each captured layer, reading their data through the ``files`` data source
(:mod:`verify.sources`); a cell's data is checked against the SHA-256 recorded when it was built.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

__all__ = ["build_model_campaign"]


def _capture_key(identity: dict, layers: str, tokens: int, text, spec_id: str) -> str:
    text_sha = None
    if text is not None and Path(str(text)).is_file():
        text_sha = hashlib.sha256(Path(str(text)).read_bytes()).hexdigest()
    doc = {"model": identity.get("sha256"), "layers": layers, "tokens": int(tokens), "text": str(text),
           "text_sha256": text_sha, "quantizer": spec_id}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def build_model_campaign(model, layers: str | None = None, *, tokens: int | None = None, text=None, seed: int = 0,
                         out="ptq-results", recipes=None, progress: bool = True):
    """The campaign (a :class:`verify.campaign.Campaign`) of ``model`` (a model directory or a
    GGUF file, loaded by transformers): every recipe of ``recipes`` (default
    :data:`~verify.llm.campaign.QUICK_RECIPES`) on every linear layer matching ``layers`` (default:
    all), from ``tokens`` calibration tokens (default 512) of ``text`` (default the licence texts).
    ``ValueError`` for bad input; ``ImportError`` naming the ``hf`` extra without transformers."""
    from ..campaign import Campaign, Cell, claims_for
    from . import hf
    from .campaign import QUICK_RECIPES, quantizer_id

    hf._require_torch()
    tokens = 512 if tokens is None else int(tokens)
    pattern = layers or "*"
    recipes = QUICK_RECIPES if recipes is None else recipes
    loaded = hf.load(model)
    spec = hf.quantizer_spec()
    key = _capture_key(loaded.identity(), pattern, tokens, text, quantizer_id(spec))
    name = Path(str(loaded.path or "model")).name.replace(".gguf", "")
    cdir = Path(out) / "captures" / f"{name}-{key}"
    manifest_path = cdir / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text())
    else:
        manifest_path, manifest = hf.capture_to_dir(loaded, pattern, cdir, text=text, n_tokens=tokens,
                                                    progress=progress)
    cells = []
    for row in manifest["layers"]:
        f = cdir / row["file"]
        n, N = row["W_shape"]
        m = row["X_shape"][0]
        kind = str(row["name"]).replace("/", ".").split(".")[-1]
        files = {"W": f"{f}:W", "X": f"{f}:X", "sha256": _file_sha256(f), "group": kind,
                 "model": manifest["model"].get("sha256"), "layer": row["name"]}
        for rc in recipes:
            if rc.get("weights", "stored") != "stored" or rc.get("blocks") is not None:
                continue  # the degenerate Q4_1 cell and the block-strided cells are GGUF-campaign specific
            cfg = dict(rc["config"])
            g = cfg["grid"].get("group_size")
            if g and N % int(g):
                continue  # groups must divide the layer's input features
            cfg.update(label=rc["label"], N=int(N), n=int(n), m=int(m), dtype="float32", claims=claims_for(int(N)),
                       files=dict(files, **({"X_tilde": f"{f}:X_tilde"} if rc["inputs"] == "X_tilde" else {})))
            cells.append(Cell("real-llm", cfg))
    if not cells:
        raise ValueError(f"--layers: no linear layer of {model} matches {pattern!r}")
    ident = manifest["model"]
    desc = (f"real-LLM layers of {ident.get('path')} ({ident.get('architecture')}, sha256 "
            f"{str(ident.get('sha256'))[:16]}…) through transformers: {len(manifest['layers'])} linear layers, "
            f"{tokens} calibration tokens; X̃ from sequential quantization by {quantizer_id(spec)}; "
            f"data in {cdir}")
    return Campaign(name="real-llm-model", seed=seed, cells=tuple(cells), description=desc,
                    meta={"model": ident, "layers": [r["name"] for r in manifest["layers"]], "tokens": manifest["tokens"],
                          "capture": str(cdir), "sequential_quantizer": quantizer_id(spec)})
