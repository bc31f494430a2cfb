"""Capture the calibration inputs of every linear layer.

Two entry points, both on a token array ``[n_sequences, seq_len]`` (or a
:class:`~verify.llm.textsource.CalibrationTokens`):

:func:`capture_inputs`
    Float inputs ``X`` (``m x n_in``, rows = all tokens of all sequences) of
    the chosen layers from one float forward pass that stops after the last
    block needed.

:func:`sequential_capture`
    Sequential quantization as GPTQ/Qronos are used in practice.  Two
    residual streams run side by side: a float stream and a "quantized"
    stream in which every layer already processed uses its quantized weight.
    For each linear layer, in execution order, ``quantize(name, W, X,
    X_tilde) -> Q`` is called with ``X`` from the float stream and
    ``X_tilde`` from the quantized stream; ``Q`` then replaces ``W`` in the
    quantized stream.  Layers sharing an input (q/k/v, gate/up) see the same
    ``X``/``X_tilde`` arrays, computed once.

The two streams are stacked along the sequence axis (``[2N, T, d]``) so that
non-linear parts run once; they stay merged (one stream) until the first
block in which some layer is quantized, so ``X_tilde == X`` exactly up to and
including the first quantized layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np

from .forward import blas_threads, block_forward, embed, matmul_wt, rope_tables
from .gguf_model import GGUFModel, LinearLayer
from .stats import gram, layer_stats

__all__ = [
    "QuantizeFn",
    "LayerRecord",
    "KEEP_OPTIONS",
    "capture_inputs",
    "sequential_capture",
]

#: ``quantize(name, W, X, X_tilde) -> Q`` with ``W``/``Q`` of shape ``[out, in]``
#: and ``X``/``X_tilde`` of shape ``[m, in]``.  All arrays passed are read-only.
QuantizeFn = Callable[[str, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

#: What :func:`sequential_capture` can keep per layer.
KEEP_OPTIONS = frozenset({"X", "X_tilde", "H", "H_tilde", "G", "Q", "stats", "stats_tilde"})


@dataclass
class LayerRecord:
    """What :func:`sequential_capture` saw at one selected linear layer.

    ``H = X^T X``, ``H_tilde = X_tilde^T X_tilde`` and ``G = X_tilde^T X``
    are float64; ``X``/``X_tilde`` have the model dtype (float32 by default).
    Layers that share an input (q/k/v, gate/up) share the same ``X`` array
    objects.  ``storage_type`` is the GGUF storage format of the original
    weight (``"Q4_1"``: ``W`` already lies on that 4-bit grid, so
    re-quantizing with the same grid is degenerate).
    """

    name: str
    block: int
    kind: str
    shape: tuple[int, int]
    storage_type: str
    order: int
    X: np.ndarray | None = None
    X_tilde: np.ndarray | None = None
    H: np.ndarray | None = None
    H_tilde: np.ndarray | None = None
    G: np.ndarray | None = None
    Q: np.ndarray | None = None
    stats: dict | None = None
    stats_tilde: dict | None = None
    quantize_seconds: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def rows(self) -> int | None:
        return None if self.X is None else int(self.X.shape[0])


def _as_tokens(model: GGUFModel, tokens) -> np.ndarray:
    if hasattr(tokens, "tokens") and hasattr(tokens, "sample"):  # CalibrationTokens
        tokens = tokens.tokens
    if not isinstance(tokens, np.ndarray):
        try:
            tokens = np.asarray(tokens)
        except Exception as exc:  # pragma: no cover
            raise TypeError("tokens must be an integer array [n_sequences, seq_len]") from exc
    if tokens.ndim == 1:
        raise ValueError(
            "tokens: expected shape [n_sequences, seq_len]; reshape a 1-D array with "
            "verify.llm.forward.as_sequences(tokens, seq_len)"
        )
    if tokens.ndim != 2 or tokens.shape[0] < 1 or tokens.shape[1] < 1:
        raise ValueError(f"tokens: expected shape [n_sequences, seq_len], got {tokens.shape}")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens: expected an integer array, got dtype {tokens.dtype}")
    if tokens.min() < 0 or tokens.max() >= model.config.vocab_size:
        raise ValueError(f"tokens: ids must lie in [0, {model.config.vocab_size})")
    return tokens.astype(np.int64, copy=False)


def _check_model(model) -> None:
    if not isinstance(model, GGUFModel):
        raise TypeError(f"model must be a GGUFModel (see load_model), got {type(model).__name__}")


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, unit="block")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@blas_threads()
def capture_inputs(
    model: GGUFModel,
    tokens,
    layers: Sequence[str] | str | None = None,
    *,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Float calibration inputs ``X`` (``m x n_in``) of the chosen linear layers.

    ``m = n_sequences * seq_len``; rows are ordered sequence by sequence.
    Layers sharing an input (q/k/v, gate/up) map to the same read-only
    array.  The forward pass stops after the last block needed.  Returns a
    dict in execution order.
    """
    _check_model(model)
    tokens = _as_tokens(model, tokens)
    sel = model.resolve_layers(layers)
    wanted = {l.name for l in sel}
    last = max(l.block for l in sel)
    out: dict[str, np.ndarray] = {}

    def lin(block: int, kinds: Sequence[str], x: np.ndarray) -> list:
        names = [f"blk.{block}.{k}" for k in kinds]
        if any(n in wanted for n in names):
            X = _readonly(np.ascontiguousarray(x).reshape(-1, x.shape[-1]))
            for n in names:
                if n in wanted:
                    out[n] = X
        return [matmul_wt(x, model.tensors[n + ".weight"]) for n in names]

    h = embed(model, tokens)
    rope = rope_tables(model, tokens.shape[1], h.dtype)
    for b in _progress(range(last + 1), progress, "capture"):
        h = block_forward(model, b, h, linear=lin, rope=rope)
    return {l.name: out[l.name] for l in sel}


def _check_q(Q, W: np.ndarray, name: str, who: str) -> np.ndarray:
    if not isinstance(Q, np.ndarray):
        try:
            Q = np.asarray(Q)
        except Exception as exc:
            raise TypeError(f"{who}: must return an array for layer {name}") from exc
    if Q.shape != W.shape:
        raise ValueError(f"{who}: returned shape {Q.shape} for layer {name}, expected {W.shape}")
    Q = np.ascontiguousarray(Q, dtype=W.dtype)
    if not np.all(np.isfinite(Q)):
        raise ValueError(f"{who}: returned non-finite values for layer {name}")
    return Q


def _sequential_options(model, quantize, layers, unselected, keep):
    """``(selected layers, keep, unselected)`` of :func:`sequential_capture`, checked."""
    if not callable(quantize):
        raise TypeError("quantize must be callable: quantize(name, W, X, X_tilde) -> Q")
    keep = frozenset((keep,) if isinstance(keep, str) else keep)
    bad = keep - KEEP_OPTIONS
    if bad:
        raise ValueError(f"keep: unknown items {sorted(bad)}; choose from {sorted(KEEP_OPTIONS)}")
    sel = model.resolve_layers(layers)
    if unselected is None:
        if len(sel) < len(model.linear_layers()):
            raise ValueError(
                "unselected: layers is a strict subset, so say what happens to the other layers: "
                "unselected='float' or a quantize-like callback (e.g. round-to-nearest)"
            )
        unselected = "float"
    if not (unselected == "float" or callable(unselected)):
        raise ValueError(f"unselected: expected 'float' or a callable, got {unselected!r}")
    return sel, keep, unselected


def _shared_items(xf: np.ndarray, xq: np.ndarray, keep: frozenset) -> dict:
    """What the layers sharing one input keep of it: ``X``, ``X_tilde`` (one copy each unless both
    are kept, then views of the joint stream), the Gram matrices and the statistics."""
    shared: dict[str, object] = {}
    both = "X" in keep and "X_tilde" in keep
    if "X" in keep:
        shared["X"] = xf if both else _readonly(xf.copy())
    if "X_tilde" in keep:
        shared["X_tilde"] = xq if both else _readonly(xq.copy())
    if "H" in keep or "stats" in keep:
        shared["H"] = _readonly(gram(xf))
    if "H_tilde" in keep or "stats_tilde" in keep:
        shared["H_tilde"] = _readonly(gram(xq))
    if "G" in keep:
        shared["G"] = _readonly(gram(xq, xf))
    if "stats" in keep:
        shared["stats"] = layer_stats(xf, shared["H"])
    if "stats_tilde" in keep:
        shared["stats_tilde"] = layer_stats(xq, shared["H_tilde"])
    return shared


def _record(l: LinearLayer, seconds: float, shared: dict, keep: frozenset, Q, N: int, T: int) -> LayerRecord:
    rec = LayerRecord(name=l.name, block=l.block, kind=l.kind, shape=l.shape, storage_type=l.storage_type,
                      order=l.order, quantize_seconds=seconds, info={"rows": N * T, "n_sequences": N, "seq_len": T})
    for k in ("X", "X_tilde", "stats", "stats_tilde", "H", "H_tilde", "G"):
        if k in keep:
            setattr(rec, k, shared[k])
    if "Q" in keep:
        rec.Q = Q
    return rec


def _two_streams(xf: np.ndarray, xq: np.ndarray, W: np.ndarray, Q: np.ndarray, N: int, T: int, dtype) -> np.ndarray:
    """The layer's output on both streams, ``[2N, T, out]``: ``xf Wᵀ`` then ``xq Qᵀ``."""
    y = np.empty((2 * N, T, W.shape[0]), dtype=dtype)
    np.matmul(xf, W.T, out=y[:N].reshape(-1, W.shape[0]))
    np.matmul(xq, Q.T, out=y[N:].reshape(-1, W.shape[0]))
    return y


@blas_threads()
def sequential_capture(
    model: GGUFModel,
    tokens,
    quantize: QuantizeFn,
    layers: Sequence[str] | str | None = None,
    *,
    unselected: str | QuantizeFn | None = None,
    keep: Iterable[str] = ("X", "X_tilde"),
    progress: bool = False,
) -> dict[str, LayerRecord]:
    """Sequentially quantize the network while capturing ``X`` and ``X_tilde``.

    Parameters
    ----------
    model: a loaded :class:`GGUFModel`.
    tokens: ``[n_sequences, seq_len]`` integer array or ``CalibrationTokens``.
    quantize: ``quantize(name, W, X, X_tilde) -> Q`` for every *selected*
        layer (``W`` float ``[out, in]``, ``X``/``X_tilde`` ``[m, in]``, all
        read-only).  ``Q`` is used in the quantized stream from then on.
    layers: selected layer names (``None`` = all, 210 for SmolLM2; see
        :meth:`GGUFModel.resolve_layers` for wildcards).
    unselected: what happens to layers that are not selected: ``"float"``
        (keep ``W``) or a callback with the signature of ``quantize`` (e.g.
        round-to-nearest).  Required when ``layers`` is a strict subset.
    keep: which items to keep per record, a subset of :data:`KEEP_OPTIONS`:
        ``"X"``, ``"X_tilde"`` (arrays), ``"H"``, ``"H_tilde"``, ``"G"``
        (float64 Gram matrices ``X^T X``, ``X~^T X~``, ``X~^T X``), ``"Q"``,
        ``"stats"``/``"stats_tilde"`` (:func:`verify.llm.stats.layer_stats`).

    Returns ``{name: LayerRecord}`` for the selected layers in execution
    order.  The pass stops after the last block containing a selected layer.
    """
    _check_model(model)
    tokens = _as_tokens(model, tokens)
    sel, keep, unselected = _sequential_options(model, quantize, layers, unselected, keep)
    by_name: dict[str, LinearLayer] = {l.name: l for l in sel}
    last = max(l.block for l in sel)
    first_q_block = 0 if callable(unselected) else min(l.block for l in sel)

    N, T = tokens.shape
    h = embed(model, tokens)
    rope = rope_tables(model, T, h.dtype)
    records: dict[str, LayerRecord] = {}
    split = False  # rows [:N] the float stream, [N:] the quantized stream, from first_q_block on

    def lin(block: int, kinds: Sequence[str], x: np.ndarray) -> list:
        names = [f"blk.{block}.{k}" for k in kinds]
        if not split:
            return [matmul_wt(x, model.tensors[n + ".weight"]) for n in names]
        x = np.ascontiguousarray(x)
        xf = _readonly(x[:N].reshape(-1, x.shape[-1]))
        xq = _readonly(x[N:].reshape(-1, x.shape[-1]))
        shared = _shared_items(xf, xq, keep) if any(n in by_name for n in names) else {}
        outs = []
        for n in names:
            W = model.tensors[n + ".weight"]
            fn = quantize if n in by_name else unselected
            t0 = time.perf_counter()
            Q = W if fn == "float" else _check_q(fn(n, W, xf, xq), W, n, "quantize" if n in by_name else "unselected")
            if n in by_name:
                records[n] = _record(by_name[n], time.perf_counter() - t0, shared, keep, Q, N, T)
            outs.append(_two_streams(xf, xq, W, Q, N, T, x.dtype))
        return outs

    for b in _progress(range(last + 1), progress, "sequential capture"):
        if not split and b >= first_q_block:
            h = np.concatenate([h, h], axis=0)
            split = True
        h = block_forward(model, b, h, linear=lin, rope=rope)
    return {l.name: records[l.name] for l in sel}
