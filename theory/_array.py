"""Array plumbing for ``theory``: every input, from any array library, becomes a NumPy array.

The exact quantities are computed on the host in float64 (they are references, not fast paths):
CuPy arrays are copied with ``.get()``, torch tensors with ``.detach().cpu().numpy()``, anything
else with :func:`numpy.asarray`. Nothing here imports a backend.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_numpy", "as64", "eps", "dtype_name"]


def to_numpy(a):
    """A NumPy view or copy of ``a`` (any array library, or a scalar); ``None`` stays ``None``."""
    if a is None:
        return None
    if isinstance(a, np.ndarray):
        return a
    mod = type(a).__module__
    if mod.startswith("cupy"):
        return a.get()
    if mod.startswith("torch"):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def as64(a):
    """``a`` as a NumPy float64 array (exact for float32 input)."""
    if a is None:
        return None
    return np.asarray(to_numpy(a), dtype=np.float64)


def dtype_name(dtype) -> str:
    """``'float32'`` for ``numpy.float32``, ``torch.float32``, ``dtype('float32')``, ``'float32'``."""
    return str(dtype).split(".")[-1]


def eps(dtype) -> float:
    """Machine epsilon of a floating dtype of any library (or its name)."""
    return float(np.finfo(np.dtype(dtype_name(dtype))).eps)
