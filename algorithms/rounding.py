"""Rounding a value onto a grid: nearest ``Q(z)`` and stochastic ``Q_s(z)``.

For one entry with step ``δ``, zero point ``zp`` and integer range ``[qmin, qmax]``:

* nearest:    ``k = round(z/δ) + zp``  (ties to even, as ``torch.round``),
* stochastic: ``u = z/δ``, ``k = floor(u) + 1{U < u − floor(u)} + zp`` with ``U ~ Uniform[0, 1)``,
  so ``E[δ(k − zp)] = z`` and ``|z − δ(k − zp)| < δ``,

then ``k`` is clipped to ``[qmin, qmax]`` and the level is ``q = δ·(k − zp)``. ``clipped`` says
where the value saturated: for nearest rounding, where ``z`` lies more than half a step outside
the grid's range (a value exactly half a step outside is a tie: clipping it changes the rounding
but not the error ``|e| = δ/2``, and is not saturation); for stochastic rounding, where clipping
changed the drawn ``k``.
"""

from __future__ import annotations

import math

__all__ = ["round_nearest", "round_stochastic"]


def _clip(xp, k, qmin, qmax):
    if math.isinf(qmin) and math.isinf(qmax):
        return k, xp.zeros(k.shape, dtype=xp.bool, device=getattr(k, "device", None))
    kc = xp.minimum(xp.maximum(k, float(qmin)), float(qmax))  # as clip, without its wrapper cost
    return kc, kc != k


def round_nearest(xp, z, scale, zero, qmin, qmax):
    """Nearest rounding of ``z`` (any shape, broadcasting with ``scale``/``zero``): ``(q, clipped)``."""
    x = z / scale
    k = xp.round(x) + zero  # as the reference: round first, then shift (ties to even on x)
    kc, clipped = _clip(xp, k, qmin, qmax)
    if not (math.isinf(qmin) and math.isinf(qmax)):
        clipped = clipped & (xp.abs(x + zero - kc) > 0.5)
    return scale * (kc - zero), clipped


def round_stochastic(xp, z, scale, zero, qmin, qmax, U):
    """Unbiased stochastic rounding of ``z`` with uniforms ``U`` in [0, 1): ``(q, clipped)``."""
    u = z / scale
    f = xp.floor(u)
    up = xp.astype(U < (u - f), u.dtype)
    k = f + up + zero
    kc, clipped = _clip(xp, k, qmin, qmax)
    return scale * (kc - zero), clipped
