"""On-disk cache of captured calibration data.

One ``.npz`` file per (layer, key); the key holds the model file SHA-256,
the text source and its SHA-256, ``n_tokens``, ``seq_len``, ``add_bos``, the
layer name, the mode (``"float"`` or ``"sequential"`` plus the quantizer
identity and the selection), what is stored (``"X"`` or ``"H"``) and the
dtype.  The full key is stored inside the file as JSON and checked on load.

Stored arrays:

* ``store="X"``: ``X`` (and ``X_tilde`` in sequential mode), model dtype;
* ``store="H"``: ``H = X^T X`` in float64 (and ``H_tilde = X~^T X~``,
  ``G = X~^T X`` in sequential mode);

plus per-layer statistics (:func:`verify.llm.stats.layer_stats`, JSON) and
capture metadata (JSON).

Files are written atomically: to ``.tmp-*.part`` in the same directory, then
``os.replace``; readers only ever open final names, and a final file that
fails to load (truncated, wrong key) counts as a miss and is rewritten.  The
default directory is ``$PTQ_CACHE_DIR``, else ``~/.cache/provable-ptq``; a
directory inside the source repository is refused.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .._atomic import atomic_path
from .capture import QuantizeFn, capture_inputs, sequential_capture
from .gguf_model import GGUFModel, default_cache_dir, resolve_cache_dir
from .stats import gram, layer_stats
from .textsource import calibration_tokens, load_text

__all__ = [
    "CACHE_VERSION",
    "CachedLayer",
    "default_cache_dir",
    "cache_path",
    "save_npz_atomic",
    "load_npz",
    "producer_fingerprint",
    "cached_inputs",
    "cached_sequential",
    "sequential_key",
]

CACHE_VERSION = 1
_resolve_dir = resolve_cache_dir


@dataclass
class CachedLayer:
    """Cached capture of one layer: ``arrays`` (``X``/``X_tilde`` or ``H``/``H_tilde``/``G``)."""

    name: str
    arrays: dict[str, np.ndarray]
    stats: dict
    stats_tilde: dict | None
    meta: dict
    path: Path
    from_cache: bool
    key: dict = field(repr=False, default_factory=dict)

    def __getitem__(self, k: str) -> np.ndarray:
        return self.arrays[k]


def _key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def cache_path(cache_dir: Path, key: dict) -> Path:
    """File name for ``key`` (layer name, mode and store are kept readable)."""
    return (
        cache_dir
        / key["model_sha256"][:16]
        / f"{key['layer']}.{key['mode']}.{key['store']}.{_key_hash(key)[:24]}.npz"
    )


#: the source files whose code produces a capture: the forward pass, the text and tokens, the model
#: reader, and the algorithms that quantize the earlier layers (for ``X̃``)
_PRODUCER_FILES = ("algorithms/*.py", "verify/llm/capture.py", "verify/llm/forward.py", "verify/llm/gguf_model.py",
                   "verify/llm/tokenizer.py", "verify/llm/textsource.py", "verify/llm/cache.py", "verify/llm/hf.py")


def producer_fingerprint() -> str:
    """SHA-256 (16 hex digits) of the code that produces a capture (:data:`_PRODUCER_FILES`). Every
    cache file records it, and a file written by other code is a miss: a change in ``algorithms/``
    (which quantizes the earlier layers, hence ``X̃``) or in the forward pass never reuses stale
    captures, with no tag to bump by hand."""
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for pattern in _PRODUCER_FILES:
        for f in sorted(root.glob(pattern)):
            h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def save_npz_atomic(path: Path, arrays: dict[str, np.ndarray], key: dict, extra: dict | None = None) -> None:
    """Write ``arrays`` (+ JSON ``key`` and ``extra``, with the :func:`producer_fingerprint`) to
    ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(arrays)
    payload["__key__"] = np.array(json.dumps(key, sort_keys=True))
    extra = dict(extra or {}, producer=producer_fingerprint())
    payload["__extra__"] = np.array(json.dumps(extra, sort_keys=True, default=str))
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **payload)


def load_npz(path: Path, key: dict, *, producer: bool = True) -> tuple[dict[str, np.ndarray], dict] | None:
    """Arrays and extra metadata of a cache file, or ``None`` on any miss.

    Missing, truncated or unreadable files and files whose stored key differs
    from ``key`` are misses; with ``producer`` (the default) so are files
    written by other code than this (:func:`producer_fingerprint`). A reader
    that checks the content itself (a campaign cell checks the data's SHA-256)
    passes ``producer=False``.
    """
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = json.loads(str(z["__key__"]))
            if stored != json.loads(json.dumps(key, sort_keys=True)):
                return None
            extra = json.loads(str(z["__extra__"]))
            if producer and extra.get("producer") != producer_fingerprint():
                return None
            arrays = {k: z[k] for k in z.files if not k.startswith("__")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError):
        return None
    for a in arrays.values():
        a.flags.writeable = False
    return arrays, extra


def _base_key(model: GGUFModel, sample, n_tokens, seq_len, add_bos, store) -> dict:
    if add_bos is None:
        add_bos = model.config.add_bos_default
    if store not in ("X", "H"):
        raise ValueError(f"store: expected 'X' or 'H', got {store!r}")
    return {
        "version": CACHE_VERSION,
        "model_sha256": model.sha256,
        "model_name": model.config.name,
        "text_source": sample.source,
        "text_sha256": sample.sha256,
        "n_tokens": int(n_tokens),
        "seq_len": int(seq_len),
        "add_bos": bool(add_bos),
        "store": store,
        "dtype": str(model.dtype),
    }


def cached_inputs(
    model: GGUFModel,
    *,
    source="licenses",
    n_tokens: int = 2048,
    seq_len: int = 512,
    layers: Sequence[str] | str | None = None,
    store: str = "X",
    add_bos: bool | None = None,
    cache_dir=None,
    regenerate: bool = False,
    progress: bool = True,
) -> dict[str, CachedLayer]:
    """Float inputs of the chosen layers, from the cache or freshly captured.

    Only missing layers are recomputed (one forward pass up to the last
    missing block).  ``regenerate=True`` ignores existing files.
    """
    if not isinstance(model, GGUFModel):
        raise TypeError(f"model must be a GGUFModel, got {type(model).__name__}")
    cdir = _resolve_dir(cache_dir)
    sel = model.resolve_layers(layers)
    sample = load_text(source)
    base = _base_key(model, sample, n_tokens, seq_len, add_bos, store)
    keys = {l.name: dict(base, layer=l.name, mode="float") for l in sel}
    out, missing = _lookup(cdir, keys, regenerate)
    if missing:
        ct = calibration_tokens(model, source, n_tokens, seq_len, add_bos=add_bos)
        meta_common = ct.metadata()
        meta_common.update({"model": model.identity, "mode": "float"})
        X = capture_inputs(model, ct, missing, progress=progress)
        grams: dict[int, np.ndarray] = {}
        stats_of: dict[int, dict] = {}
        for n in missing:
            x = X[n]
            if id(x) not in grams:  # q/k/v and gate/up share X
                grams[id(x)] = gram(x)
                stats_of[id(x)] = layer_stats(x, grams[id(x)])
            arrays = {"X": x} if store == "X" else {"H": grams[id(x)]}
            l = model.layer(n)
            meta = dict(meta_common, layer=n, storage_type=l.storage_type, shape=list(l.shape))
            key = keys[n]
            p = cache_path(cdir, key)
            save_npz_atomic(p, arrays, key, {"stats": stats_of[id(x)], "meta": meta})
            out[n] = CachedLayer(n, arrays, stats_of[id(x)], None, meta, p, False, key)
    return {l.name: out[l.name] for l in sel}


def cached_sequential(
    model: GGUFModel,
    quantize: QuantizeFn,
    quantizer_id: str,
    *,
    source="licenses",
    n_tokens: int = 2048,
    seq_len: int = 512,
    layers: Sequence[str] | str | None = None,
    unselected: str | QuantizeFn | None = None,
    unselected_id: str | None = None,
    store: str = "X",
    add_bos: bool | None = None,
    cache_dir=None,
    regenerate: bool = False,
    progress: bool = True,
    quantize_all: bool = False,
) -> dict[str, CachedLayer]:
    """:func:`sequential_capture` with an on-disk cache.

    A callable cannot be hashed reliably, so the caller names it:
    ``quantizer_id`` (and ``unselected_id`` when ``unselected`` is a
    callable) must change whenever the quantizer's behaviour changes.  The
    key also holds the whole selection, since ``X_tilde`` of a layer depends
    on how every earlier layer was treated.  Any miss reruns the whole
    sequential pass.  Stored: ``X``/``X_tilde`` (``store="X"``) or
    ``H``/``H_tilde``/``G`` (``store="H"``).

    ``quantize_all=True``: *every* linear layer, selected or not, is quantized
    with ``quantize`` (``unselected`` must be left out).  ``X_tilde`` of a
    layer then depends only on the layers before it, not on the selection,
    so the key omits the selection (``"selection_sha256": "all-quantized"``):
    captures are shared by every selection, and a miss recomputes only the
    missing layers (one pass up to the last missing block).
    """
    if not isinstance(model, GGUFModel):
        raise TypeError(f"model must be a GGUFModel, got {type(model).__name__}")
    if not isinstance(quantizer_id, str) or not quantizer_id:
        raise ValueError("quantizer_id: a non-empty string naming the quantize callback is required")
    if quantize_all:
        if unselected is not None or unselected_id is not None:
            raise ValueError("quantize_all=True quantizes every layer with `quantize`: leave unselected "
                             "and unselected_id out")
        return _cached_sequential_all(model, quantize, quantizer_id, source=source, n_tokens=n_tokens,
                                      seq_len=seq_len, layers=layers, store=store, add_bos=add_bos,
                                      cache_dir=cache_dir, regenerate=regenerate, progress=progress)
    if callable(unselected):
        if not isinstance(unselected_id, str) or not unselected_id:
            raise ValueError("unselected_id: required (non-empty str) when unselected is a callable")
        unsel_key = "callable:" + unselected_id
    elif unselected in (None, "float"):
        unsel_key = "float"
    else:
        raise ValueError(f"unselected: expected 'float' or a callable, got {unselected!r}")
    cdir = _resolve_dir(cache_dir)
    sel = model.resolve_layers(layers)
    if unselected is None and len(sel) < len(model.linear_layers()):
        raise ValueError(
            "unselected: layers is a strict subset, so say what happens to the other layers: "
            "unselected='float' or a quantize-like callback"
        )
    base = _sequential_base(model, quantizer_id, unsel_key, source, n_tokens, seq_len, store, add_bos,
                            selection=hashlib.sha256("\n".join(l.name for l in sel).encode()).hexdigest())
    keys = {l.name: dict(base, layer=l.name) for l in sel}
    out, missing = _lookup(cdir, keys, regenerate)
    if not missing:
        return out
    # X_tilde depends on the whole selection: any miss reruns the whole pass
    names = [l.name for l in sel]
    ct = calibration_tokens(model, source, n_tokens, seq_len, add_bos=add_bos)
    recs = sequential_capture(model, ct, quantize, names, unselected=unselected if unselected is not None else "float",
                              keep=_SEQUENTIAL_KEEP[store], progress=progress)
    return _save_sequential(model, ct, recs, names, keys, cdir, store, base)


_SEQUENTIAL_KEEP = {"X": ("X", "X_tilde", "stats", "stats_tilde"), "H": ("H", "H_tilde", "G", "stats", "stats_tilde")}


def _sequential_base(model, quantizer_id, unsel_key, source, n_tokens, seq_len, store, add_bos, *, selection) -> dict:
    """The key fields every layer of one sequential capture shares."""
    base = _base_key(model, load_text(source), n_tokens, seq_len, add_bos, store)
    base.update({"mode": "sequential", "quantizer_id": quantizer_id, "unselected": unsel_key,
                 "selection_sha256": selection})
    return base


def _lookup(cdir, keys: dict, regenerate: bool) -> tuple[dict[str, CachedLayer], list[str]]:
    """The cached layers of ``keys`` (``{name: key}``) and the names that are missing."""
    out: dict[str, CachedLayer] = {}
    missing = []
    for name, key in keys.items():
        p = cache_path(cdir, key)
        hit = None if regenerate else load_npz(p, key)
        if hit is None:
            missing.append(name)
            continue
        arrays, extra = hit
        out[name] = CachedLayer(name, arrays, extra.get("stats", {}), extra.get("stats_tilde"), extra.get("meta", {}),
                                p, True, key)
    return out, missing


def _save_sequential(model, ct, recs, names, keys, cdir, store, base) -> dict[str, CachedLayer]:
    """Writes the captured layers ``names`` of ``recs`` (captured on the tokens ``ct``) and returns
    them as :class:`CachedLayer`."""
    meta_common = dict(ct.metadata(), model=model.identity, **{k: base[k] for k in ("mode", "quantizer_id", "unselected")})
    out = {}
    for n in names:
        r, l = recs[n], model.layer(n)
        arrays = {"X": r.X, "X_tilde": r.X_tilde} if store == "X" else {"H": r.H, "H_tilde": r.H_tilde, "G": r.G}
        meta = dict(meta_common, layer=n, storage_type=l.storage_type, shape=list(l.shape),
                    quantize_seconds=r.quantize_seconds)
        p = cache_path(cdir, keys[n])
        save_npz_atomic(p, arrays, keys[n], {"stats": r.stats, "stats_tilde": r.stats_tilde, "meta": meta})
        out[n] = CachedLayer(n, arrays, r.stats, r.stats_tilde, meta, p, False, keys[n])
    return out


def _hf_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def hf_sequential_base(model: GGUFModel, quantizer_id: str, *, source="licenses", n_tokens: int = 2048,
                       seq_len: int = 512) -> dict:
    """The key fields every layer of one transformers capture shares (:func:`cached_hf_sequential`):
    those of the NumPy path's ``quantize_all`` capture, with ``mode = "sequential-transformers"`` and
    the torch and transformers versions (their arithmetic produces ``X̃``)."""
    base = _all_base_key(model, quantizer_id, source, n_tokens, seq_len, "X", None)
    base.update({"mode": "sequential-transformers", "forward": _hf_versions()})
    return base


def cached_hf_sequential(model: GGUFModel, quantize: QuantizeFn, quantizer_id: str, *, source="licenses",
                         n_tokens: int = 2048, seq_len: int = 512, layers: Sequence[str] | str | None = None,
                         cache_dir=None, regenerate: bool = False, progress: bool = True) -> dict[str, CachedLayer]:
    """``X`` and ``X̃`` of the selected layers captured through transformers
    (:func:`verify.llm.hf.capture`: forward hooks on every ``nn.Linear``, the float and the quantized
    stream side by side, *every* linear layer quantized by ``quantize`` in execution order), with
    the on-disk cache of :func:`cached_sequential` (``quantize_all=True`` semantics: ``X̃`` of a layer
    depends only on the layers before it, so captures are shared by every selection and a miss
    recomputes only the missing layers). The tokens are those of the NumPy path (the package's
    tokenizer of the GGUF file). torch runs with one thread, so ``X̃`` is reproducible on a machine."""
    from . import hf

    if not isinstance(model, GGUFModel):
        raise TypeError(f"model must be a GGUFModel, got {type(model).__name__}")
    cdir = _resolve_dir(cache_dir)
    sel = model.resolve_layers(layers)
    base = hf_sequential_base(model, quantizer_id, source=source, n_tokens=n_tokens, seq_len=seq_len)
    keys = {l.name: dict(base, layer=l.name) for l in sel}
    out, missing = _lookup(cdir, keys, regenerate)
    if missing:
        import torch

        loaded = hf.load(model.path, tokenizer=False)
        ids, md = hf.calibration_ids(loaded, source, n_tokens=int(n_tokens), seq_len=int(seq_len))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            caps = hf.capture(loaded, ids, missing, quantize=quantize, progress=progress)
        finally:
            torch.set_num_threads(threads)
        meta_common = dict(md, model=model.identity, mode=base["mode"], quantizer_id=quantizer_id,
                           forward=base["forward"])
        for n in missing:
            c, l = caps[n], model.layer(n)
            if tuple(c.W.shape) != tuple(l.shape):
                raise RuntimeError(f"transformers capture: {n} has W {c.W.shape}, the GGUF file {tuple(l.shape)}")
            st, stt = layer_stats(c.X, gram(c.X)), layer_stats(c.X_tilde, gram(c.X_tilde))
            arrays = {"X": c.X, "X_tilde": c.X_tilde}
            meta = dict(meta_common, layer=n, storage_type=l.storage_type, shape=list(l.shape),
                        quantize_seconds=c.quantize_seconds)
            p = cache_path(cdir, keys[n])
            save_npz_atomic(p, arrays, keys[n], {"stats": st, "stats_tilde": stt, "meta": meta})
            for a in arrays.values():
                a.flags.writeable = False
            out[n] = CachedLayer(n, arrays, st, stt, meta, p, False, keys[n])
    return {l.name: out[l.name] for l in sel}


def sequential_key(model: GGUFModel, quantizer_id: str, layer: str, *, source="licenses", n_tokens: int = 2048,
                   seq_len: int = 512, store: str = "X", add_bos: bool | None = None) -> dict:
    """The cache key of one layer captured by ``cached_sequential(..., quantize_all=True)``.

    It holds the model file's SHA-256, the text source and its SHA-256, ``n_tokens``, ``seq_len``,
    ``add_bos``, the quantizer identity and the layer: enough to trace (and find) the data.
    """
    return dict(_all_base_key(model, quantizer_id, source, n_tokens, seq_len, store, add_bos),
                layer=model.layer(layer).name)


def _all_base_key(model, quantizer_id, source, n_tokens, seq_len, store, add_bos) -> dict:
    return _sequential_base(model, quantizer_id, "same-quantizer", source, n_tokens, seq_len, store, add_bos,
                            selection="all-quantized")


def _cached_sequential_all(model, quantize, quantizer_id, *, source, n_tokens, seq_len, layers, store, add_bos,
                           cache_dir, regenerate, progress) -> dict[str, CachedLayer]:
    cdir = _resolve_dir(cache_dir)
    sel = model.resolve_layers(layers)
    base = _all_base_key(model, quantizer_id, source, n_tokens, seq_len, store, add_bos)
    keys = {l.name: dict(base, layer=l.name) for l in sel}
    out, missing = _lookup(cdir, keys, regenerate)
    if missing:  # X_tilde depends only on earlier layers: capture just the missing ones
        ct = calibration_tokens(model, source, n_tokens, seq_len, add_bos=add_bos)
        recs = sequential_capture(model, ct, quantize, missing, unselected=quantize, keep=_SEQUENTIAL_KEEP[store],
                                  progress=progress)
        out.update(_save_sequential(model, ct, recs, missing, keys, cdir, store, base))
    return {l.name: out[l.name] for l in sel}
