"""Where a cell's layer comes from: the registry of data sources.

A campaign cell's configuration selects its source by the key that carries the source's settings:

* no source key: a **synthetic** family (``family``, ``m``, ``N``, ``n``, ``cond``, ``w_scale``,
  ``same_w``, ``mismatch``; :func:`verify.data.synthetic_layer`);
* ``"llm"``: a **real model** layer, its weights and captured calibration inputs
  (:func:`verify.llm.campaign.load_layer_data`);
* ``"files"``: **your own arrays**, ``{"W": path, "X": path, "X_tilde": path or None}`` (``.npy``,
  ``.npz`` with one array or ``path.npz:key``, or ``path.safetensors:key`` as ``ptq-bounds capture``
  writes them); optional ``"sha256"`` (of the file named by ``W``: checked before use), ``"group"``,
  ``"model"`` and ``"layer"`` (how reports name the layer).

The campaign asks :func:`load_layer` for a layer and :func:`describe` for what to call it; it never
imports a source's module. A source's loader is named as ``"module:function"`` and imported when a
cell of that source runs, so the real-model code (which builds on the campaign) is not imported by
the campaign. :func:`register` adds a source.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["DataSource", "SOURCES", "register", "source_of", "load_layer", "describe"]


@dataclass(frozen=True)
class DataSource:
    """One source. ``key``: the configuration key that selects it (``None``: the default source);
    ``loader``: ``"module:function"``, called ``function(cfg, rng) -> (W, X, X_tilde)``;
    ``describe``: ``cfg -> {"model", "layer", "group"}`` (``group``: the family or layer type the
    figures and reports group cells by)."""

    name: str
    key: str | None
    loader: str
    describe: Callable[[dict], dict]

    def load(self, cfg: dict, rng):
        mod, _, fn = self.loader.partition(":")
        return getattr(importlib.import_module(mod), fn)(cfg, rng)


SOURCES: dict[str, DataSource] = {}


def register(source: DataSource) -> DataSource:
    """Add (or replace) a source; its ``key`` must not select another source."""
    if not isinstance(source, DataSource):
        raise TypeError(f"source must be a DataSource, got {type(source).__name__}")
    clash = [s.name for s in SOURCES.values() if s.key == source.key and s.name != source.name]
    if clash:
        raise ValueError(f"source {source.name!r}: key {source.key!r} already selects {clash[0]!r}")
    SOURCES[source.name] = source
    return source


def source_of(cfg: dict) -> DataSource:
    """The source a cell configuration selects (the first registered key present; else the default)."""
    if not isinstance(cfg, dict):
        raise TypeError(f"a cell configuration is a dict, got {type(cfg).__name__}")
    for s in SOURCES.values():
        if s.key is not None and s.key in cfg:
            return s
    return next(s for s in SOURCES.values() if s.key is None)


def load_layer(cfg: dict, rng):
    """``(W, X, X_tilde)`` of a cell from its source (``X_tilde`` is None without a mismatch)."""
    return source_of(cfg).load(cfg, rng)


def describe(cfg: dict) -> dict:
    """``{"source", "model", "layer", "group"}`` of a cell (``None`` where it does not apply)."""
    s = source_of(cfg)
    return {"source": s.name, **s.describe(cfg)}


# ------------------------------------------------------------------------------------------------
# the built-in sources
# ------------------------------------------------------------------------------------------------
def _describe_synthetic(cfg: dict) -> dict:
    return {"model": None, "layer": None, "group": str(cfg.get("family", cfg.get("study", "?")))}


def _describe_llm(cfg: dict) -> dict:
    """The model and the layer type of a real-model cell: the ``type`` of its ``llm`` entry (or
    ``layer_type``, ``kind``, ``role``), else the last component of the layer name
    (``…self_attn.q_proj`` → ``q_proj``, ``blk.3.attn_q`` → ``attn_q``)."""
    llm = cfg.get("llm")
    kind, name, model = None, None, None
    if isinstance(llm, dict):
        for k in ("type", "layer_type", "kind", "role"):
            if llm.get(k):
                kind = str(llm[k])
                break
        name = llm.get("layer") or llm.get("name")
        model = llm.get("model")
    elif llm is not None:
        name = str(llm)
    if kind is None:
        s = str(name or "layer")
        parts = [p for p in s.replace("/", ".").split(".") if p and not p.isdigit() and p != "weight"]
        kind = parts[-1] if parts else s
    return {"model": str(model) if model else None, "layer": name, "group": kind}


def _describe_files(cfg: dict) -> dict:
    f = cfg.get("files") or {}
    return {"model": f.get("model"), "layer": str(f.get("layer", f.get("W"))), "group": str(f.get("group", "files"))}


def _load_array(spec: str, what: str) -> np.ndarray:
    if ".safetensors" in str(spec):
        return _load_safetensors(str(spec), what)
    path, _, key = str(spec).partition(".npz:")
    if key:
        path += ".npz"
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"files: cannot read {what} from {spec!r} ({exc}); give a .npy or .npz[:key] file") from None
    if isinstance(a, np.lib.npyio.NpzFile):
        with a:
            names = a.files
            if not key and len(names) != 1:
                raise ValueError(f"files: {spec!r} holds {names}; say which with {path}:KEY") from None
            k = key or names[0]
            if k not in names:
                raise ValueError(f"files: {spec!r} has no array {k!r} (it has {names})") from None
            a = a[k]
    return np.asarray(a)


def _load_safetensors(spec: str, what: str) -> np.ndarray:
    path, _, key = spec.partition(".safetensors:")
    path += ".safetensors"
    try:
        from safetensors import safe_open
    except ImportError as exc:
        raise ImportError("files: reading .safetensors needs the safetensors package (the llm extra)") from exc
    try:
        with safe_open(path, framework="numpy") as fh:
            names = list(fh.keys())
            if not key and len(names) != 1:
                raise ValueError(f"files: {spec!r} holds {names}; say which with {path}:KEY")
            k = key or names[0]
            if k not in names:
                raise ValueError(f"files: {spec!r} has no tensor {k!r} (it has {names})")
            return np.asarray(fh.get_tensor(k))
    except (OSError, RuntimeError) as exc:  # safetensors raises its own errors for unreadable files
        raise ValueError(f"files: cannot read {what} from {spec!r} ({exc})") from None


def _file_of(spec: str) -> str:
    s = str(spec)
    for ext in (".safetensors", ".npz"):
        if ext + ":" in s:
            return s.partition(ext + ":")[0] + ext
    return s


def files_layer(cfg: dict, rng=None):
    """``(W, X, X_tilde)`` from the files named in ``cfg["files"]`` (cast to ``cfg["dtype"]`` when given)."""
    f = cfg.get("files")
    if not isinstance(f, dict) or "W" not in f or "X" not in f:
        raise ValueError("files: the configuration needs {'W': path, 'X': path[, 'X_tilde': path]}")
    if f.get("sha256"):
        import hashlib

        h = hashlib.sha256()
        with open(_file_of(f["W"]), "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        if h.hexdigest() != f["sha256"]:
            raise ValueError(f"files: {_file_of(f['W'])} has sha256 {h.hexdigest()[:16]}…, but the cell was built "
                             f"for {f['sha256'][:16]}…: rebuild the campaign")
    W, X = _load_array(f["W"], "W"), _load_array(f["X"], "X")
    Xt = _load_array(f["X_tilde"], "X_tilde") if f.get("X_tilde") else None
    if W.ndim != 2 or X.ndim != 2 or W.shape[1] != X.shape[1]:
        raise ValueError(f"files: W must be n × N and X m × N, got {W.shape} and {X.shape}")
    if Xt is not None and Xt.shape != X.shape:
        raise ValueError(f"files: X_tilde must have X's shape {X.shape}, got {Xt.shape}")
    dtype = np.dtype(cfg.get("dtype", W.dtype))
    return tuple(None if a is None else a.astype(dtype, copy=False) for a in (W, X, Xt))


register(DataSource("synthetic", None, "verify.data:synthetic_layer", _describe_synthetic))
register(DataSource("llm", "llm", "verify.llm.campaign:load_cell_layer", _describe_llm))
register(DataSource("files", "files", "verify.sources:files_layer", _describe_files))
