"""A counter-based stream of uniforms (SplitMix64), the same on every backend and every kernel.

``U_k = (splitmix64(s + (k + 1)·γ) >> 11) · 2⁻⁵³``, ``γ = 0x9E3779B97F4A7C15``, for the counters
``k = 0, 1, 2, …`` of one draw, with ``s`` the stream's seed advanced by ``γ`` per value already
drawn (so consecutive draws continue the sequence). ``U_k`` is exactly uniform on the 2⁻⁵³ grid
of [0, 1).

Stochastic rounding takes its uniforms from the ``rng`` it is given, and from nothing else:

* a ``numpy.random.Generator`` (or, for CuPy arrays, a ``cupy.random.Generator``): the uniforms
  are ``rng.random((N, n))`` (processing position × row), whichever loop runs;
* a :class:`SplitMix64`: the uniforms are the formula above, computed by the array library of
  the weights, or inside the fused GPU kernel (:mod:`algorithms.fused_gpu`) from the counter
  ``k = t·n + i`` without materialising the ``N × n`` array. Both give the same values, bit for bit.

So the same ``rng`` gives the same quantization on every path; no environment variable changes
the stream.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import is_cupy_namespace, is_numpy_namespace, is_torch_namespace

__all__ = ["SplitMix64", "GAMMA"]

GAMMA = 0x9E3779B97F4A7C15
_MASK = (1 << 64) - 1


def _splitmix(ap, seed: int, count: int):
    """``U_0 … U_{count−1}`` of the stream seeded ``seed``, as float64 on the array module ``ap``
    (``numpy`` or ``cupy``, which share these integer semantics)."""
    k = ap.arange(1, count + 1, dtype=ap.uint64)
    with np.errstate(over="ignore"):
        z = ap.uint64(seed) + k * ap.uint64(GAMMA)
        z = (z ^ (z >> ap.uint64(30))) * ap.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> ap.uint64(27))) * ap.uint64(0x94D049BB133111EB)
        z = z ^ (z >> ap.uint64(31))
    return (z >> ap.uint64(11)).astype(ap.float64) * (2.0 ** -53)


class SplitMix64:
    """A counter-based uniform stream for stochastic rounding (see the module docstring).

    >>> from algorithms import SplitMix64
    >>> rng = SplitMix64(2024)          # pass as ``rng=`` to optq, qronos, optq_trials, rtn
    >>> u = rng.random((2, 3))          # the next six values of the stream, C order
    """

    def __init__(self, seed: int):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
        self.seed = int(seed) & _MASK
        self.drawn = 0  # values drawn so far

    def __repr__(self) -> str:
        return f"SplitMix64(seed={self.seed}, drawn={self.drawn})"

    def take(self, count: int) -> int:
        """Reserves the next ``count`` values; returns the seed ``s`` of that draw (its values are
        ``U_k``, ``k = 0 … count−1``, of the formula with this ``s``)."""
        s = (self.seed + self.drawn * GAMMA) & _MASK
        self.drawn += int(count)
        return s

    def random(self, shape, *, xp=None, like=None):
        """The next ``prod(shape)`` values as a float64 array of ``shape`` (C order), NumPy by
        default, or on the backend and device of ``like`` (``xp`` its namespace)."""
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        count = math.prod(shape)
        seed = self.take(count)
        if xp is not None and is_cupy_namespace(xp):
            import cupy

            return _splitmix(cupy, seed, count).reshape(shape)
        u = _splitmix(np, seed, count).reshape(shape)
        if xp is None or is_numpy_namespace(xp):
            return u
        if is_torch_namespace(xp):
            import torch

            return torch.as_tensor(u, device=like.device if like is not None else None)
        return xp.asarray(u)

    def permutation(self, n: int) -> np.ndarray:
        """A uniform random permutation of ``range(n)`` (``argsort`` of ``n`` stream values)."""
        return np.argsort(self.random(int(n)), kind="stable")
