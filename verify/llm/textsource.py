"""Named sources of calibration text that are already on the machine.

Nothing is downloaded.  Built-in sources:

``"licenses"`` (default)
    The licence texts that Debian's ``base-files`` installs in
    ``/usr/share/common-licenses/`` (Apache-2.0, GPL-3, ...): real English
    prose, present on every Debian/Ubuntu system.  Symlinked duplicates
    (``GPL -> GPL-3``) are read once.
``"file:PATH"`` or any existing path
    A user-supplied UTF-8 text file (or a directory: all ``*.txt`` files in
    sorted order).

More can be added with :func:`register_text_source`.  Every sample records
its source name, the files read, the character count and the SHA-256 of the
exact text, which end up in the metadata of every capture.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = [
    "TextSample",
    "CalibrationTokens",
    "TEXT_SOURCES",
    "LICENSE_DIR",
    "LICENSE_FILES",
    "register_text_source",
    "load_text",
    "calibration_tokens",
]

LICENSE_DIR = Path("/usr/share/common-licenses")
#: Read in this order (missing files are skipped; symlink duplicates dropped).
LICENSE_FILES = (
    "Apache-2.0",
    "GPL-3",
    "GPL-2",
    "LGPL-2.1",
    "MPL-2.0",
    "GFDL-1.3",
    "Artistic",
    "CC0-1.0",
    "BSD",
    "GPL-1",
    "LGPL-2",
    "LGPL-3",
    "MPL-1.1",
    "GFDL-1.2",
)

SEPARATOR = "\n\n"


@dataclass(frozen=True)
class TextSample:
    source: str
    files: tuple[str, ...]
    text: str
    n_chars: int
    sha256: str

    def metadata(self) -> dict[str, object]:
        return {
            "text_source": self.source,
            "text_files": list(self.files),
            "text_chars": self.n_chars,
            "text_sha256": self.sha256,
        }


def _sample(source: str, paths: list[Path]) -> TextSample:
    parts = []
    for p in paths:
        parts.append(p.read_text(encoding="utf-8", errors="replace").strip())
    text = SEPARATOR.join(parts)
    return TextSample(
        source=source,
        files=tuple(str(p) for p in paths),
        text=text,
        n_chars=len(text),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def _licenses() -> TextSample:
    seen: set[Path] = set()
    paths: list[Path] = []
    for name in LICENSE_FILES:
        p = LICENSE_DIR / name
        if not p.is_file():
            continue
        real = p.resolve()
        if real in seen:
            continue
        seen.add(real)
        paths.append(p)
    if not paths:
        raise FileNotFoundError(
            f"source: no licence texts found in {LICENSE_DIR} (Debian package base-files); "
            "pass a text file instead, e.g. source='file:/path/to/text.txt'"
        )
    return _sample("licenses", paths)


def _from_path(path: str | os.PathLike) -> TextSample:
    p = Path(path).expanduser()
    if p.is_dir():
        files = sorted(q for q in p.glob("*.txt") if q.is_file())
        if not files:
            raise FileNotFoundError(f"source: no *.txt files in directory {p}")
        return _sample(f"file:{p}", files)
    if not p.is_file():
        raise FileNotFoundError(f"source: text file not found: {p}")
    return _sample(f"file:{p}", [p])


TEXT_SOURCES: dict[str, Callable[[], TextSample]] = {"licenses": _licenses}


def register_text_source(name: str, loader: Callable[[], TextSample]) -> None:
    """Register a named text source (``loader()`` returns a :class:`TextSample`)."""
    if not isinstance(name, str) or not name or name.startswith("file:"):
        raise ValueError(f"name: invalid source name {name!r}")
    if not callable(loader):
        raise TypeError("loader must be callable")
    TEXT_SOURCES[name] = loader


def load_text(source: str | os.PathLike = "licenses") -> TextSample:
    """Load calibration text from a named source, ``"file:PATH"`` or a path."""
    if isinstance(source, os.PathLike):
        return _from_path(source)
    if not isinstance(source, str):
        raise TypeError(f"source must be a source name or a path, got {type(source).__name__}")
    if source in TEXT_SOURCES:
        return TEXT_SOURCES[source]()
    if source.startswith("file:"):
        return _from_path(source[5:])
    if os.path.exists(source):
        return _from_path(source)
    raise ValueError(
        f"source: unknown text source {source!r}; known: {sorted(TEXT_SOURCES)}, "
        "'file:PATH' or an existing path"
    )


@dataclass(frozen=True)
class CalibrationTokens:
    """Token array ``[n_sequences, seq_len]`` plus where it came from."""

    tokens: np.ndarray
    sample: TextSample
    seq_len: int
    add_bos: bool
    n_available: int  # tokens the whole text encodes to (BOS excluded)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.size)

    def metadata(self) -> dict[str, object]:
        md = self.sample.metadata()
        md.update(
            {
                "n_tokens": self.n_tokens,
                "seq_len": self.seq_len,
                "n_sequences": int(self.tokens.shape[0]),
                "add_bos": self.add_bos,
                "tokens_available": self.n_available,
                "tokens_sha256": hashlib.sha256(self.tokens.astype("<i8").tobytes()).hexdigest(),
            }
        )
        return md


def calibration_tokens(
    model,
    source: str | os.PathLike = "licenses",
    n_tokens: int = 2048,
    seq_len: int = 512,
    *,
    add_bos: bool | None = None,
) -> CalibrationTokens:
    """The first ``n_tokens`` tokens of a text source as ``[n_tokens // seq_len, seq_len]``.

    The whole text is tokenized once and cut into consecutive, non-overlapping
    sequences.  With ``add_bos`` every sequence starts with the BOS id (which
    counts towards ``seq_len``); ``add_bos=None`` uses the model default
    (``config.add_bos_default``: off for SmolLM2, on for Gemma-3).
    ``n_tokens`` must be a multiple of ``seq_len``.
    """
    from .tokenizer import bos_id, encode

    if add_bos is None:
        add_bos = bool(model.config.add_bos_default)
    if not isinstance(add_bos, (bool, np.bool_)):
        raise TypeError(f"add_bos must be a bool or None, got {type(add_bos).__name__}")
    add_bos = bool(add_bos)

    for nm, v in (("n_tokens", n_tokens), ("seq_len", seq_len)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{nm} must be an int, got {type(v).__name__}")
    if seq_len < 2:
        raise ValueError(f"seq_len: must be >= 2, got {seq_len}")
    if n_tokens < seq_len or n_tokens % seq_len:
        raise ValueError(f"n_tokens: must be a positive multiple of seq_len={seq_len}, got {n_tokens}")
    if seq_len > model.config.context_length:
        raise ValueError(f"seq_len: {seq_len} exceeds the model context length {model.config.context_length}")
    sample = load_text(source)
    ids = encode(sample.text, model)
    n_seq = n_tokens // seq_len
    per = seq_len - 1 if add_bos else seq_len
    need = n_seq * per
    if ids.size < need:
        raise ValueError(
            f"n_tokens: text source {sample.source!r} has only {ids.size} tokens, "
            f"{need} needed for n_tokens={n_tokens}, seq_len={seq_len}"
        )
    body = ids[:need].reshape(n_seq, per)
    if add_bos:
        body = np.concatenate([np.full((n_seq, 1), bos_id(model), dtype=np.int64), body], axis=1)
    body = np.ascontiguousarray(body)
    body.setflags(write=False)
    return CalibrationTokens(tokens=body, sample=sample, seq_len=seq_len, add_bos=add_bos, n_available=int(ids.size))
