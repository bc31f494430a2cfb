"""Processing orders π of the features.

* ``"natural"``: 0, 1, …, N−1;
* ``"decreasing"``: by ``diag(H)`` (squared column norms) descending, GPTQ's ``act_order``;
* ``"increasing"``: ascending;
* ``"random"``: a uniform permutation drawn from ``rng``;
* or an explicit permutation (any integer sequence holding each of 0..N−1 once).

Ties are broken by the lower feature index (stable sort), so orders are reproducible.
``order[t]`` is the feature processed at position ``t``.
"""

from __future__ import annotations

import numbers

import numpy as np

from ._backend import to_numpy
from .streams import SplitMix64

__all__ = ["resolve_order", "ORDERS"]

ORDERS = ("natural", "decreasing", "increasing", "random")


def resolve_order(xp, order, diag, N: int, *, rng=None, device=None):
    """The permutation (int64 array on the backend of ``xp``) for ``order``."""
    if isinstance(order, str):
        if order == "natural":
            p = np.arange(N)
        elif order in ("decreasing", "increasing"):
            d = to_numpy(diag).astype(np.float64)
            p = np.argsort(-d if order == "decreasing" else d, kind="stable")
        elif order == "random":
            if not isinstance(rng, (np.random.Generator, SplitMix64)):
                raise ValueError(
                    "order='random' needs rng=numpy.random.default_rng(seed) (or algorithms.SplitMix64(seed)) "
                    "to draw the permutation"
                )
            p = rng.permutation(N)
        else:
            raise ValueError(
                f"order must be one of {', '.join(map(repr, ORDERS))} or a permutation of range(N); got {order!r}"
            )
    else:
        try:
            p = np.asarray(to_numpy(order))
        except Exception as exc:  # pragma: no cover - exotic input
            raise TypeError(f"order must be a string or an integer permutation, got {type(order).__name__}") from exc
        if p.ndim != 1 or p.shape[0] != N:
            raise ValueError(f"order must be a permutation of range({N}) (length {N}), got shape {p.shape}")
        if not (np.issubdtype(p.dtype, np.integer) or (p.dtype == object and all(isinstance(v, numbers.Integral) for v in p))):
            raise TypeError(f"order must hold integers, got dtype {p.dtype}")
        p = p.astype(np.int64)
        if not np.array_equal(np.sort(p), np.arange(N)):
            raise ValueError(f"order must hold each of 0..{N - 1} exactly once (a permutation); it does not")
    return xp.asarray(p.astype(np.int64), device=device)
