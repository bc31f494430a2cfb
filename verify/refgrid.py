"""The reference side's own grid fit: GPTQ's min/max scale and zero point, written here in plain
NumPy for the audit's implied runs and the mutants' reference loop, so that a bug in
``algorithms.grids`` cannot be shared by the code under test and the code that judges it."""

from __future__ import annotations

import numpy as np

__all__ = ["minmax_fit"]


def minmax_fit(B, grid):
    """GPTQ's min/max scale and zero point of the block ``B`` (``n × k``), per row (or per tensor)."""
    if grid.perchannel:
        bmin, bmax = B.min(axis=1), B.max(axis=1)
    else:
        bmin = np.full(B.shape[0], B.min())
        bmax = np.full(B.shape[0], B.max())
    xmin = np.minimum(bmin, 0.0)
    xmax = np.maximum(bmax, 0.0)
    maxq = float(2 ** grid.bits - 1)
    if grid.sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        xmin = np.where(xmin < 0, -xmax, xmin)
    both0 = (xmin == 0) & (xmax == 0)
    xmin = np.where(both0, -1.0, xmin)
    xmax = np.where(both0, 1.0, xmax)
    scale = (xmax - xmin) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if grid.sym else np.round(-xmin / scale)
    return scale, zero
