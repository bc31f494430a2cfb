"""Hypothesis strategies for layers ``(W, X)`` in controlled regimes.

Public so that users can audit their own quantizers on the same data the package's tests use::

    from hypothesis import given
    from verify.strategies import layers

    @given(layers(regime="ill_conditioned", cond=1e10))
    def test_mine(layer):
        W, X = layer.W, layer.X
        ...

Each example is drawn from a seed and a few shape parameters (hypothesis shrinks those), then
built with NumPy by :mod:`verify.data`, so even large layers are cheap. Regimes (``FAMILIES``):

* ``"tall"``: ``m ≥ 2N`` Gaussian rows with anisotropic column scales;
* ``"wide"``: ``m < N`` (``XᵀX`` singular: needs λ > 0);
* ``"rank_deficient"``: ``X = A·B`` of rank ``r < min(m, N)``;
* ``"dead"``: some all-zero columns (dead features);
* ``"duplicate"``: some columns repeated exactly;
* ``"ill_conditioned"``: ``X = U·diag(s)·Vᵀ`` with ``cond(XᵀX)`` equal to ``cond``;
* ``"heavy_tailed"``: Student-t entries (3 degrees of freedom) with a few outlier features.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from .data import FAMILIES, SINGULAR, make_X, mismatch

__all__ = ["FAMILIES", "Layer", "make_X", "layers", "mismatch"]

@dataclass(frozen=True)
class Layer:
    """One drawn layer: ``W`` (``n × N``), ``X`` (``m × N``), the regime and the seed it came from."""

    W: np.ndarray
    X: np.ndarray
    regime: str
    seed: int

    @property
    def singular(self) -> bool:
        return self.regime in SINGULAR

    def __repr__(self):  # short, for hypothesis' falsifying-example output
        return f"Layer(regime={self.regime!r}, seed={self.seed}, W{self.W.shape}, X{self.X.shape})"


@st.composite
def layers(
    draw,
    regime=None,
    *,
    n=(1, 6),
    N=(1, 24),
    m=None,
    cond: float = 1e6,
    w_scale=(0.1, 10.0),
) -> Layer:
    """A layer ``(W, X)``; ``regime`` one of ``FAMILIES`` (or None: any). ``n``, ``N``, ``m``: ranges
    (inclusive) or ints; by default ``m`` follows the regime (tall: 2N..4N, wide: 1..N−1)."""
    reg = draw(st.sampled_from(FAMILIES)) if regime is None else regime
    if reg == "wide":
        Nv = draw(_int(N if not isinstance(N, tuple) else (max(2, N[0]), max(2, N[1]))))
    elif reg in ("dead", "duplicate"):
        Nv = draw(_int(N if not isinstance(N, tuple) else (max(2, N[0]), max(2, N[1]))))
    else:
        Nv = draw(_int(N))
    if m is not None:
        mv = draw(_int(m))
    elif reg == "wide":
        mv = draw(st.integers(1, max(1, Nv - 1)))
    else:
        mv = draw(st.integers(2 * Nv, 4 * Nv))
    nv = draw(_int(n))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    X = make_X(reg, mv, Nv, rng, cond=cond)
    lo, hi = w_scale if isinstance(w_scale, tuple) else (w_scale, w_scale)
    W = rng.standard_normal((nv, Nv)) * np.exp(rng.uniform(np.log(lo), np.log(hi)))
    return Layer(W=W, X=X, regime=reg, seed=seed)


def _int(r):
    if isinstance(r, tuple):
        return st.integers(r[0], r[1])
    return st.just(int(r))
