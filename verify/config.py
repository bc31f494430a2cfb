"""Typed cell configurations: a misspelt key is an error, never another experiment.

A campaign cell's configuration is stored and hashed as a plain JSON dict (its key and seed derive
from that exact form). :class:`CellConfig` is the typed, frozen view of such a dict: every key
the campaign machinery reads is a field with its type and allowed values, :meth:`CellConfig.from_dict`
rejects unknown keys (naming the closest known one) and values of the wrong type, and
:meth:`CellConfig.to_dict` gives back exactly the keys that were given, so the serialized form
(and every stored key) stays byte-identical. :class:`verify.campaign.Cell` validates its
configuration this way when it is made.

The real-model entry (``llm``) and the files entry (``files``) belong to their data sources
(:mod:`verify.sources`) and are checked there; the grid (``grid``) and the mismatch (``mismatch``)
are checked here.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field

from .data import FAMILIES

__all__ = ["CellConfig", "GRID_KEYS", "MISMATCH_KEYS"]

ALGORITHMS = ("optq", "qronos", "rtn")
ROUNDINGS = ("nearest", "stochastic")
DTYPES = ("float32", "float64")
VARIANTS = ("projection", "original")
ORDERS = ("natural", "decreasing", "increasing", "random")  # algorithms' processing orders
GRID_KEYS = {"gptq": {"kind", "bits", "sym", "group_size", "static"},
             "symmetric": {"kind", "delta_rel", "K", "K_extra"}}
MISMATCH_KEYS = {"kind", "level"}


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


#: field → (check, what it must be)
_CHECKS = {
    "algorithm": (lambda v: v in ALGORITHMS, f"one of {ALGORITHMS}"),
    "family": (lambda v: v in FAMILIES, f"one of {FAMILIES}"),
    "m": (lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    "N": (lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    "n": (lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    "rep": (lambda v: _int(v) and v >= 0, "an integer ≥ 0"),
    "block_size": (lambda v: _int(v) and v >= 1, "an integer ≥ 1"),
    "cond": (lambda v: _num(v) and v >= 1, "a number ≥ 1"),
    "w_scale": (lambda v: _num(v) and v > 0, "a positive number"),
    "lam": (lambda v: _num(v) and v > 0, "a positive number"),
    "lam_rel": (lambda v: _num(v) and v > 0, "a positive number"),
    "percdamp": (lambda v: _num(v) and v > 0, "a positive number"),
    "eta": (lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
    "lams": (lambda v: isinstance(v, (list, tuple)) and all(_num(x) and x > 0 for x in v), "a list of positive numbers"),
    "order": (lambda v: v in ORDERS or (isinstance(v, (list, tuple)) and all(_int(i) for i in v)),
              f"one of {ORDERS} or a permutation"),
    "rounding": (lambda v: v in ROUNDINGS, f"one of {ROUNDINGS}"),
    "dtype": (lambda v: v in DTYPES, f"one of {DTYPES}"),
    "variant": (lambda v: v in VARIANTS, f"one of {VARIANTS}"),
    "same_w": (lambda v: isinstance(v, bool), "true or false"),
    "degenerate": (lambda v: isinstance(v, bool), "true or false"),
    "degenerate_reason": (lambda v: isinstance(v, str), "a string"),
    "label": (lambda v: isinstance(v, str), "a string"),
    "pair": (lambda v: isinstance(v, str), "a string"),
    "claims": (lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v), "a list of claim ids"),
    "grid": (lambda v: isinstance(v, dict), "a grid specification (dict)"),
    "mismatch": (lambda v: isinstance(v, dict), "a mismatch specification (dict)"),
    "llm": (lambda v: isinstance(v, dict), "the real-model source's entry (dict)"),
    "files": (lambda v: isinstance(v, dict), "the files source's entry (dict)"),
}


@dataclass(frozen=True)
class CellConfig:
    """The typed view of one cell configuration (fields ``None`` when not given; see the module
    docstring). ``given``: the keys that were given, in their order."""

    algorithm: str | None = None
    family: str | None = None
    m: int | None = None
    N: int | None = None
    n: int | None = None
    rep: int | None = None
    block_size: int | None = None
    cond: float | None = None
    w_scale: float | None = None
    lam: float | None = None
    lam_rel: float | None = None
    percdamp: float | None = None
    eta: float | None = None
    lams: tuple | None = None
    order: object = None
    rounding: str | None = None
    dtype: str | None = None
    variant: str | None = None
    same_w: bool | None = None
    degenerate: bool | None = None
    degenerate_reason: str | None = None
    label: str | None = None
    pair: str | None = None
    claims: tuple | None = None
    grid: dict | None = None
    mismatch: dict | None = None
    llm: dict | None = None
    files: dict | None = None
    given: tuple = field(default=(), repr=False)

    @classmethod
    def keys(cls) -> tuple:
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != "given")

    @classmethod
    def from_dict(cls, d: dict) -> "CellConfig":
        """Validate ``d`` and return its typed view; ``ValueError`` naming the key otherwise."""
        if not isinstance(d, dict):
            raise TypeError(f"a cell configuration is a dict, got {type(d).__name__}")
        known = cls.keys()
        for k, v in d.items():
            if k not in known:
                close = difflib.get_close_matches(str(k), known, n=1)
                raise ValueError(f"cell configuration: unknown key {k!r}"
                                 + (f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(known)}"))
            ok, what = _CHECKS[k]
            if not ok(v):
                raise ValueError(f"cell configuration: {k} must be {what}, got {v!r}")
        if "grid" in d:
            _check_grid(d["grid"])
        if "mismatch" in d:
            bad = set(d["mismatch"]) - MISMATCH_KEYS
            if bad or not _num(d["mismatch"].get("level")) or not isinstance(d["mismatch"].get("kind"), str):
                raise ValueError(f"cell configuration: mismatch must be {{'kind': str, 'level': number}}, got "
                                 f"{d['mismatch']!r}")
        vals = {k: (tuple(v) if isinstance(v, list) and k in ("lams", "claims") else v) for k, v in d.items()}
        return cls(**vals, given=tuple(d))

    def to_dict(self) -> dict:
        """The configuration as given (the exact keys and values of :meth:`from_dict`'s input)."""
        return {k: (list(getattr(self, k)) if k in ("lams", "claims") else getattr(self, k)) for k in self.given}


def _check_grid(g: dict) -> None:
    kind = g.get("kind")
    if kind not in GRID_KEYS:
        raise ValueError(f"cell configuration: grid kind must be one of {tuple(GRID_KEYS)}, got {kind!r}")
    bad = set(g) - GRID_KEYS[kind]
    if bad:
        close = difflib.get_close_matches(sorted(bad)[0], GRID_KEYS[kind], n=1)
        raise ValueError(f"cell configuration: unknown {kind} grid key {sorted(bad)[0]!r}"
                         + (f" (did you mean {close[0]!r}?)" if close else f"; known: {sorted(GRID_KEYS[kind])}"))
    if kind == "gptq" and not (_int(g.get("bits")) and 1 <= g["bits"] <= 16):
        raise ValueError(f"cell configuration: a gptq grid needs bits, an integer in 1..16, got {g.get('bits')!r}")
    if kind == "symmetric" and not (_num(g.get("delta_rel")) and g["delta_rel"] > 0):
        raise ValueError(f"cell configuration: a symmetric grid needs delta_rel > 0, got {g.get('delta_rel')!r}")
