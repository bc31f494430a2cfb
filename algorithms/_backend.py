"""Backend plumbing shared by every algorithm: one code path for NumPy, CuPy and torch.

Everything here works through the array-API namespace ``xp`` returned by
:func:`array_api_compat.array_namespace`. The only operations the array API does not
standardise (a triangular solve and random draws) are dispatched here, in one place, so that
no algorithm module imports a particular backend.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import (
    array_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = [
    "namespace",
    "solve_triangular",
    "uniforms",
    "to_numpy",
    "eps",
    "device_of",
]


def namespace(*arrays):
    """The array-API namespace shared by ``arrays`` (``None`` entries are ignored).

    Raises ``TypeError`` naming the problem when the arrays come from different libraries.
    """
    present = [a for a in arrays if a is not None]
    try:
        return array_namespace(*present)
    except TypeError as exc:  # mixed libraries, or not an array at all
        kinds = sorted({type(a).__module__.split(".")[0] + "." + type(a).__name__ for a in present})
        raise TypeError(
            "all arrays must come from one array library (NumPy, CuPy or torch); got "
            + ", ".join(kinds)
            + ". Convert them with the same library first (e.g. numpy.asarray or cupy.asarray)."
        ) from exc


def solve_triangular(xp, A, B, *, lower: bool):
    """Solve ``A Y = B`` for triangular ``A`` on the backend of ``xp``."""
    if is_numpy_namespace(xp):
        import scipy.linalg

        return scipy.linalg.solve_triangular(A, B, lower=lower, check_finite=False)
    if is_cupy_namespace(xp):
        import cupyx.scipy.linalg

        return cupyx.scipy.linalg.solve_triangular(A, B, lower=lower)
    if is_torch_namespace(xp):
        import torch

        return torch.linalg.solve_triangular(A, B, upper=not lower)
    raise TypeError(f"no triangular solver for array namespace {xp.__name__}")


def uniforms(xp, rng, shape, *, like):
    """Uniform draws in [0, 1) of ``shape`` from ``rng`` on the device of ``like``.

    ``rng`` is a ``numpy.random.Generator`` (any backend: the draws are moved to the device)
    or a ``cupy.random.Generator`` (CuPy arrays only).
    """
    if isinstance(rng, np.random.Generator):
        u = rng.random(shape)
        if is_numpy_namespace(xp):
            return u
        if is_torch_namespace(xp):
            import torch

            return torch.as_tensor(u, device=like.device)
        return xp.asarray(u)
    if is_cupy_namespace(xp) and type(rng).__module__.startswith("cupy"):
        return rng.random(shape)
    raise TypeError(
        "rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)) "
        f"or, for CuPy arrays, a cupy.random.Generator; got {type(rng).__name__}"
    )


def to_numpy(a):
    """A NumPy copy of any backend's array (or scalar)."""
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


def eps(dtype) -> float:
    """Machine epsilon of a floating dtype of any backend."""
    name = str(dtype).split(".")[-1]
    return float(np.finfo(np.dtype(name)).eps)


def device_of(a):
    """The device attribute used by array-API creation functions."""
    return getattr(a, "device", None)
