"""What a campaign cell runs with when its configuration leaves a key out: one place for every
reader (the campaign, the data sources, the store's columns, the reports, the figures).

:func:`setting` reads a key of a cell configuration (a plain dict, as stored) with its default;
asking for a key that has no default here is an error, so that a misspelt name in the code fails
instead of silently reading ``None``. :mod:`verify.config` checks the values themselves.
"""

from __future__ import annotations

__all__ = ["DEFAULTS", "setting"]

#: key → the value used when a cell configuration does not give it
DEFAULTS = {
    "order": "natural",
    "rounding": "nearest",
    "dtype": "float64",
    "variant": "projection",
    "block_size": 128,
    "lam_rel": 0.01,
    "eta": 0.05,
    "cond": 1e6,
    "w_scale": 1.0,
    "n": 1,
    "same_w": False,
    "degenerate": False,
}


def setting(cfg: dict, key: str):
    """``cfg[key]``, or its default from :data:`DEFAULTS` when the configuration leaves it out."""
    if key not in DEFAULTS:
        raise KeyError(f"{key!r} has no default: read cfg[{key!r}] (defaults exist for {', '.join(DEFAULTS)})")
    v = cfg.get(key)
    return DEFAULTS[key] if v is None else v
