"""Build a ``tokenizers.Tokenizer`` offline from GGUF tokenizer metadata.

Supports the byte-level BPE ("gpt2") tokenizers of llama.cpp GGUF files whose
pre-tokenizer splits digits individually (``tokenizer.ggml.pre`` in
``{"smollm", "starcoder", "refact"}``), i.e. the HuggingFace pipeline
``Sequence([Digits(individual_digits=True), ByteLevel(add_prefix_space=False)])``
with a ``ByteLevel`` decoder.  Control tokens (``token_type == 3``, e.g.
``<|im_start|>``) are registered as special tokens.

SentencePiece-BPE ("llama") tokenizers (Gemma-3) are rebuilt as a
``tokenizers`` BPE model: the merges are derived from the piece scores (a
piece is formed from any split into two pieces; lower rank = earlier merge),
with byte fallback, spaces mapped to "▁" and no space prefix; user-defined
pieces (newline runs, space runs, HTML tags) are added tokens.

BOS: the GGUF file of SmolLM2 sets ``tokenizer.ggml.add_bos_token = True``
(BOS = ``<|im_start|>``) while the original HuggingFace tokenizer adds no BOS.
:func:`encode` therefore takes an explicit ``add_bos`` argument and adds none
by default.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from .gguf_model import GGUFModel, file_identity, load_model

__all__ = ["build_tokenizer", "encode", "decode", "SUPPORTED_PRE"]

#: llama.cpp pre-tokenizer names that use "split every digit, then GPT-2 regex".
SUPPORTED_PRE = ("smollm", "starcoder", "refact", "codeshell", "exaone", "minerva")

def _require_tokenizers():
    try:
        import tokenizers  # noqa: F401
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "the 'tokenizers' package is needed; install the llm extra: pip install 'provable-ptq[llm]'"
        ) from exc
    return tokenizers


def build_tokenizer(model: GGUFModel | None = None):
    """Return a ``tokenizers.Tokenizer`` equivalent to the GGUF tokenizer.

    ``model`` defaults to :func:`load_model` ``()``.  The result is memoized per
    GGUF file (path, size, mtime).
    """
    _require_tokenizers()
    if model is None:
        model = load_model()
    if not isinstance(model, GGUFModel):
        raise TypeError(f"model must be a GGUFModel, got {type(model).__name__}")
    return _tokenizer_for(file_identity(model.path))


@functools.lru_cache(maxsize=8)
def _tokenizer_for(identity: tuple[str, int, int]):
    """The tokenizer of the GGUF file ``identity`` (:func:`file_identity`), from its metadata."""
    from .gguf_model import _require_gguf

    r = _require_gguf().GGUFReader(identity[0])
    kind = r.fields["tokenizer.ggml.model"].contents()
    pre = r.fields["tokenizer.ggml.pre"].contents() if "tokenizer.ggml.pre" in r.fields else "default"
    if kind == "gpt2":
        tok = _byte_level_bpe(r, pre)
    elif kind == "llama":
        tok = _sentencepiece_bpe(r)
    else:
        raise ValueError(f"model: tokenizer model {kind!r} is not supported ('gpt2' and 'llama' are)")
    return tok


def _byte_level_bpe(r, pre: str):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    if pre not in SUPPORTED_PRE:
        raise ValueError(f"model: pre-tokenizer {pre!r} is not supported (supported: {SUPPORTED_PRE})")
    tokens: list[str] = r.fields["tokenizer.ggml.tokens"].contents()
    merges_raw: list[str] = r.fields["tokenizer.ggml.merges"].contents()
    types = np.asarray(r.fields["tokenizer.ggml.token_type"].contents())
    vocab = {t: i for i, t in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("model: duplicate tokens in tokenizer.ggml.tokens")
    merges = []
    for m in merges_raw:
        a, sep, b = m.partition(" ")
        if not sep:
            raise ValueError(f"model: malformed merge {m!r}")
        merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    special = [tokens[i] for i in np.flatnonzero(types == 3)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    return tok


def _sentencepiece_bpe(r):
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens: list[str] = r.fields["tokenizer.ggml.tokens"].contents()
    scores = np.asarray(r.fields["tokenizer.ggml.scores"].contents(), dtype=np.float64)
    types = np.asarray(r.fields["tokenizer.ggml.token_type"].contents())
    if r.fields.get("tokenizer.ggml.add_space_prefix") is not None and r.fields["tokenizer.ggml.add_space_prefix"].contents():
        raise ValueError("model: SentencePiece tokenizers with add_space_prefix are not supported")
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    normal = [i for i in np.argsort(-scores, kind="stable") if types[i] == 1]
    rank = {tokens[i]: r_ for r_, i in enumerate(normal)}
    merges: list[tuple[int, int, int, str, str]] = []
    for piece, rk in rank.items():
        for j in range(1, len(piece)):
            a, b = piece[:j], piece[j:]
            if a in rank and b in rank:
                merges.append((rk, rank[a], rank[b], a, b))
    merges.sort()
    unk = tokens[int(r.fields["tokenizer.ggml.unknown_token_id"].contents())] if "tokenizer.ggml.unknown_token_id" in r.fields else None
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(a, b) for *_, a, b in merges],
            byte_fallback=True,
            fuse_unk=True,
            unk_token=unk,
        )
    )
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split("\u2581", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in np.flatnonzero(types == 3)])
    tok.add_tokens([AddedToken(tokens[i], special=False, normalized=False) for i in np.flatnonzero(types == 4)])
    return tok


def encode(text: str, model: GGUFModel | None = None, *, add_bos: bool = False) -> np.ndarray:
    """Token ids (``int64``) of ``text``; optionally prepend the GGUF BOS id."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if model is None:
        model = load_model()
    ids = build_tokenizer(model).encode(text, add_special_tokens=False).ids
    if add_bos:
        ids = [bos_id(model)] + ids
    return np.asarray(ids, dtype=np.int64)


def decode(ids: Sequence[int] | np.ndarray, model: GGUFModel | None = None, *, skip_special: bool = False) -> str:
    """Text of a sequence of token ids."""
    if model is None:
        model = load_model()
    return build_tokenizer(model).decode([int(i) for i in np.asarray(ids).ravel()], skip_special_tokens=skip_special)


def bos_id(model: GGUFModel) -> int:
    f = model.reader.fields.get("tokenizer.ggml.bos_token_id")
    if f is None:
        raise ValueError("model: the GGUF file has no BOS token id")
    return int(f.contents())
