"""NumPy forward pass of a Llama-architecture (or Gemma-3) GGUF model.

Float32 by default (float64 if the model was loaded/cast with
``dtype=np.float64``).  Text is processed as ``N`` independent sequences of a
fixed length ``T`` (array ``tokens`` of shape ``[N, T]``), so attention cost
stays bounded; there is no KV cache.

Conventions (llama.cpp GGUF):

* linear layers are ``y = x @ W.T`` with ``W`` of shape ``[out, in]``;
* llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` so RoPE
  rotates *adjacent* pairs ``(2i, 2i+1)`` of each head ("interleaved",
  GPT-J style), not the two halves;
* grouped-query attention: query head ``h`` uses key/value head
  ``h // (n_heads // n_kv_heads)``;
* RMSNorm ``x / sqrt(mean(x**2) + eps) * w``; SwiGLU MLP
  ``down(silu(gate(x)) * up(x))``; tied LM head (``token_embd``) unless an
  ``output.weight`` tensor exists.

Gemma-3 (``config.architecture == "gemma3"``, llama.cpp conventions): the
embedding is scaled by ``sqrt(d)``; per-head RMSNorm of queries and keys
before RoPE; RoPE on halves ("neox"); RMSNorm after attention and after the
MLP, before each residual add; GELU(tanh) gate; 5 of every 6 layers use
sliding-window attention with RoPE base 10000, the others the global base.

The block function :func:`block_forward` takes a ``linear`` callback so that
:mod:`verify.llm.capture` can observe and replace every linear layer.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Callable, Sequence

import numpy as np
from scipy.special import expit

from .gguf_model import INPUT_GROUPS, GGUFModel

__all__ = [
    "LinearFn",
    "matmul_wt",
    "rms_norm",
    "rope_cos_sin",
    "rope_tables",
    "gelu_tanh",
    "apply_rope",
    "attention",
    "embed",
    "block_forward",
    "final_logits",
    "forward",
    "greedy_generate",
    "perplexity",
    "as_sequences",
    "blas_threads",
]

@contextmanager
def blas_threads(n: int | None = None):
    """Limit BLAS threads inside the block (needs ``threadpoolctl``; else no-op).

    ``n=None`` reads ``$PTQ_BLAS_THREADS`` and does nothing when it is unset.
    On an oversubscribed machine multithreaded OpenBLAS spins: measured on 2
    busy cores, capturing 2048 tokens took 36.7 s with 2 threads and 9.3 s
    with 1 (4.5 s with 2 threads on an idle machine).  All public entry points
    of this package run inside ``blas_threads()``.
    """
    if n is None:
        env = os.environ.get("PTQ_BLAS_THREADS", "").strip()
        n = int(env) if env else None
    if n is None:
        yield
        return
    if n < 1:
        raise ValueError(f"n: BLAS thread count must be >= 1, got {n}")
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


#: ``linear(block, kinds, x) -> [y_kind for kind in kinds]`` where ``x`` has
#: shape ``[N, T, in]`` and every ``y`` has shape ``[N, T, out]``.
LinearFn = Callable[[int, Sequence[str], np.ndarray], list]


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis."""
    ms = np.mean(np.square(x), axis=-1, keepdims=True)
    return x * (1.0 / np.sqrt(ms + x.dtype.type(eps))) * w


def rope_cos_sin(head_dim: int, theta: float, seq_len: int, dtype=np.float32, offset: int = 0):
    """``cos, sin`` tables of shape ``[seq_len, head_dim // 2]`` (computed in float64)."""
    inv = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    ang = np.arange(offset, offset + seq_len, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, style: str = "interleaved") -> np.ndarray:
    """RoPE on ``x`` of shape ``[N, T, H, hd]``.

    ``style="interleaved"`` rotates pairs ``(2i, 2i+1)`` (Llama GGUF);
    ``style="neox"`` rotates pairs ``(i, i + hd/2)`` (Gemma GGUF).
    """
    c = cos[None, :, None, :]
    s = sin[None, :, None, :]
    if style == "neox":
        half = x.shape[-1] // 2
        x0, x1 = x[..., :half], x[..., half:]
        return np.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)
    if style != "interleaved":
        raise ValueError(f"style: expected 'interleaved' or 'neox', got {style!r}")
    x0 = x[..., 0::2]
    x1 = x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    n_heads: int,
    n_kv_heads: int,
    *,
    scale: float | None = None,
    window: int | None = None,
) -> np.ndarray:
    """Causal grouped-query attention (optionally sliding-window).

    ``q``: ``[N, T, n_heads, hd]``; ``k, v``: ``[N, T, n_kv_heads, hd]``.
    ``scale`` defaults to ``1/sqrt(hd)``; with ``window`` a query at position
    ``i`` sees keys ``j`` with ``i - window < j <= i``.
    Returns ``[N, T, n_heads * hd]`` (heads concatenated, the input layout of
    ``attn_output``).
    """
    N, T, H, hd = q.shape
    G = n_heads // n_kv_heads
    dt = q.dtype
    # [N, Hkv, G, T, hd]
    qh = q.reshape(N, T, n_kv_heads, G, hd).transpose(0, 2, 3, 1, 4)
    kh = k.transpose(0, 2, 3, 1)[:, :, None]  # [N, Hkv, 1, hd, T]
    vh = v.transpose(0, 2, 1, 3)[:, :, None]  # [N, Hkv, 1, T, hd]
    sc = 1.0 / np.sqrt(hd) if scale is None else scale
    s = np.matmul(qh, kh) * dt.type(sc)  # [N, Hkv, G, T, T]
    mask = np.triu(np.ones((T, T), dtype=bool), k=1)
    if window is not None and window < T:
        mask |= np.tril(np.ones((T, T), dtype=bool), k=-window)
    s[..., mask] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(axis=-1, keepdims=True)
    o = np.matmul(s, vh)  # [N, Hkv, G, T, hd]
    return o.transpose(0, 3, 1, 2, 4).reshape(N, T, H * hd)


def embed(model: GGUFModel, tokens: np.ndarray) -> np.ndarray:
    """Token embeddings ``[N, T, d]`` for integer ``tokens`` of shape ``[N, T]``."""
    tokens = _check_tokens(model, tokens)
    e = model.tensors["token_embd.weight"][tokens]
    if model.config.embed_scale != 1.0:
        e *= e.dtype.type(model.config.embed_scale)
    return e


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """GELU, tanh approximation (Gemma)."""
    c = x.dtype.type(np.sqrt(2.0 / np.pi))
    return x.dtype.type(0.5) * x * (1 + np.tanh(c * (x + x.dtype.type(0.044715) * x * x * x)))


def rope_tables(model: GGUFModel, seq_len: int, dtype) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """RoPE ``cos, sin`` tables for every RoPE base used by the model."""
    cfg = model.config
    thetas = {cfg.block_rope_theta(b) for b in range(cfg.n_layers)}
    return {t: rope_cos_sin(cfg.head_dim, t, seq_len, dtype) for t in thetas}


def matmul_wt(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``x @ W.T`` for ``x`` of shape ``[..., in]`` as one 2-D GEMM.

    Always flattening the leading axes makes results independent of how the
    rows are batched (bitwise reproducible between the capture paths).
    """
    x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-1])
    return (x2 @ W.T).reshape(*x.shape[:-1], W.shape[0])


def _default_linear(model: GGUFModel) -> LinearFn:
    def lin(block: int, kinds: Sequence[str], x: np.ndarray) -> list:
        return [matmul_wt(x, model.tensors[f"blk.{block}.{k}.weight"]) for k in kinds]

    return lin


def block_forward(
    model: GGUFModel,
    block: int,
    h: np.ndarray,
    *,
    linear: LinearFn | None = None,
    rope=None,
) -> np.ndarray:
    """One transformer block on the residual stream ``h`` of shape ``[N, T, d]``.

    ``linear(block, kinds, x)`` computes the linear layers of one input group
    (``("attn_q", "attn_k", "attn_v")``, ``("attn_output",)``,
    ``("ffn_gate", "ffn_up")``, ``("ffn_down",)``); by default ``x @ W.T``.
    ``rope`` is a ``(cos, sin)`` pair or the dict of :func:`rope_tables`.
    """
    cfg = model.config
    N, T, d = h.shape
    lin = linear if linear is not None else _default_linear(model)
    t = model.tensors
    pre = f"blk.{block}."
    theta = cfg.block_rope_theta(block)
    if rope is None:
        rope = rope_cos_sin(cfg.head_dim, theta, T, h.dtype)
    elif isinstance(rope, dict):
        rope = rope[theta]
    g_qkv, g_o, g_gu, g_down = INPUT_GROUPS
    eps = cfg.rms_eps

    x = rms_norm(h, t[pre + "attn_norm.weight"], eps)
    q, k, v = lin(block, g_qkv, x)
    q = q.reshape(N, T, cfg.n_heads, cfg.head_dim)
    k = k.reshape(N, T, cfg.n_kv_heads, cfg.head_dim)
    v = v.reshape(N, T, cfg.n_kv_heads, cfg.head_dim)
    if cfg.qk_norm:
        q = rms_norm(q, t[pre + "attn_q_norm.weight"], eps)
        k = rms_norm(k, t[pre + "attn_k_norm.weight"], eps)
    q = apply_rope(q, *rope, style=cfg.rope_style)
    k = apply_rope(k, *rope, style=cfg.rope_style)
    window = cfg.sliding_window if cfg.is_local(block) else None
    ctx = attention(q, k, v, cfg.n_heads, cfg.n_kv_heads, scale=cfg.scale, window=window)
    (o,) = lin(block, g_o, ctx)
    if cfg.post_norms:
        o = rms_norm(o, t[pre + "post_attention_norm.weight"], eps)
    h = h + o

    x = rms_norm(h, t[pre + "ffn_norm.weight"], eps)
    g, u = lin(block, g_gu, x)
    if cfg.activation == "silu":
        a = g * expit(g) * u  # SwiGLU: silu(gate) * up
    elif cfg.activation == "gelu_tanh":
        a = gelu_tanh(g) * u  # GeGLU
    else:  # pragma: no cover
        raise ValueError(f"model: unknown activation {cfg.activation!r}")
    (dn,) = lin(block, g_down, a)
    if cfg.post_norms:
        dn = rms_norm(dn, t[pre + "post_ffw_norm.weight"], eps)
    return h + dn


def final_logits(model: GGUFModel, h: np.ndarray) -> np.ndarray:
    """Final RMSNorm and LM head: logits ``[..., vocab]``."""
    x = rms_norm(h, model.tensors["output_norm.weight"], model.config.rms_eps)
    head = model.tensors.get("output.weight", model.tensors["token_embd.weight"])
    return x @ head.T


def _check_tokens(model: GGUFModel, tokens) -> np.ndarray:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens: expected shape [n_sequences, seq_len], got {tokens.shape}")
    if tokens.size == 0:
        raise ValueError("tokens: empty")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens: expected an integer array, got dtype {tokens.dtype}")
    if tokens.min() < 0 or tokens.max() >= model.config.vocab_size:
        raise ValueError(f"tokens: ids must lie in [0, {model.config.vocab_size})")
    return tokens.astype(np.int64, copy=False)


def as_sequences(tokens, seq_len: int) -> np.ndarray:
    """Reshape a 1-D token array into ``[N, seq_len]`` (drops the tail)."""
    tokens = np.asarray(tokens)
    if not isinstance(seq_len, (int, np.integer)) or seq_len < 2:
        raise ValueError(f"seq_len: expected an integer >= 2, got {seq_len!r}")
    if tokens.ndim == 2:
        return tokens
    n = tokens.size // seq_len
    if n == 0:
        raise ValueError(f"tokens: need at least seq_len={seq_len} tokens, got {tokens.size}")
    return tokens[: n * seq_len].reshape(n, seq_len)


@blas_threads()
def forward(
    model: GGUFModel,
    tokens,
    *,
    n_blocks: int | None = None,
    return_hidden: bool = False,
) -> np.ndarray:
    """Logits ``[N, T, vocab]`` (or the residual stream after ``n_blocks`` blocks)."""
    tokens = _check_tokens(model, tokens)
    cfg = model.config
    nb = cfg.n_layers if n_blocks is None else int(n_blocks)
    if not 0 <= nb <= cfg.n_layers:
        raise ValueError(f"n_blocks: must lie in [0, {cfg.n_layers}]")
    h = embed(model, tokens)
    rope = rope_tables(model, tokens.shape[1], h.dtype)
    for b in range(nb):
        h = block_forward(model, b, h, rope=rope)
    if return_hidden or nb < cfg.n_layers:
        return h
    return final_logits(model, h)


@blas_threads()
def greedy_generate(
    model: GGUFModel, prompt, max_new_tokens: int = 8, *, add_bos: bool | None = None
) -> tuple[str, np.ndarray]:
    """Greedy continuation of ``prompt`` (a string or a 1-D id array).

    ``add_bos=None`` uses ``model.config.add_bos_default`` (string prompts only).
    Returns ``(continuation_text, new_token_ids)``.  Recomputes the whole
    sequence at every step (no KV cache): meant for short checks.
    """
    from .tokenizer import decode, encode

    if add_bos is None:
        add_bos = model.config.add_bos_default
    if isinstance(prompt, str):
        ids = list(encode(prompt, model, add_bos=add_bos))
    else:
        ids = [int(i) for i in np.asarray(prompt).ravel()]
    if max_new_tokens < 1:
        raise ValueError("max_new_tokens: must be >= 1")
    new: list[int] = []
    for _ in range(max_new_tokens):
        h = forward(model, np.asarray([ids + new]), return_hidden=True)
        logits = final_logits(model, h[0, -1])
        new.append(int(np.argmax(logits)))
    return decode(new, model), np.asarray(new, dtype=np.int64)


@blas_threads()
def perplexity(model: GGUFModel, tokens, seq_len: int | None = None, *, progress: bool = False) -> tuple[float, float, int]:
    """Perplexity of ``tokens`` (``[N, T]``, or 1-D with ``seq_len``).

    Each sequence is scored independently (predict token ``t+1`` from
    ``<= t``).  Returns ``(perplexity, mean_nll, n_predicted_tokens)``; the
    mean negative log-likelihood is accumulated in float64.
    """
    if seq_len is not None:
        tokens = as_sequences(tokens, seq_len)
    tokens = _check_tokens(model, tokens)
    total, count = 0.0, 0
    it = range(tokens.shape[0])
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="perplexity", unit="seq")
    for i in it:
        seq = tokens[i : i + 1]
        h = forward(model, seq, return_hidden=True)[0, :-1]
        logits = final_logits(model, h).astype(np.float64)
        mx = logits.max(axis=-1, keepdims=True)
        lse = mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=-1))
        tgt = seq[0, 1:]
        nll = lse - logits[np.arange(len(tgt)), tgt]
        total += float(nll.sum())
        count += len(tgt)
    mean = total / count
    return float(np.exp(mean)), mean, count
