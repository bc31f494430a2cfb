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
    "dtype_name",
    "eps",
    "diagonal",
    "device_of",
    "transpose_copy",
    "contiguous",
    "is_identity",
    "cholesky_lower",
    "inv_lower_triangular",
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

    ``rng`` is a ``numpy.random.Generator`` (any backend: the draws are moved to the device),
    a ``cupy.random.Generator`` (CuPy arrays only) or an :class:`algorithms.SplitMix64`.
    """
    from .streams import SplitMix64

    if isinstance(rng, SplitMix64):
        return rng.random(shape, xp=xp, like=like)
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
        "rng must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)), an "
        "algorithms.SplitMix64(seed) or, for CuPy arrays, a cupy.random.Generator; "
        f"got {type(rng).__name__}"
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


def dtype_name(dtype) -> str:
    """``'float32'`` for ``numpy.float32``, ``torch.float32``, ``dtype('float32')`` or ``'float32'``."""
    return str(dtype).split(".")[-1]


def eps(dtype) -> float:
    """Machine epsilon of a floating dtype of any backend."""
    return float(np.finfo(np.dtype(dtype_name(dtype))).eps)


def diagonal(xp, A):
    """The main diagonal of the 2-D ``A`` (``xp.linalg.diagonal`` where the namespace has it)."""
    linalg = getattr(xp, "linalg", None)
    return linalg.diagonal(A) if hasattr(linalg, "diagonal") else xp.diagonal(A)


def device_of(a):
    """The device attribute used by array-API creation functions."""
    return getattr(a, "device", None)


# -- layout and dense linear algebra helpers (used by the column loop and the benchmarks) ----------


def transpose_copy(xp, A):
    """A C-contiguous copy of ``A.T`` (2-D).

    The array API does not expose memory layout, but the column loop needs each column of ``W`` as
    one contiguous row of the working matrix. NumPy transposes in panels of 16 rows (a naive
    transposed copy of a 4096² float32 matrix took 0.11 s against 0.016 s on the 2-core development
    machine); CuPy and torch have their own contiguous copies.
    """
    if is_numpy_namespace(xp):
        A = np.asarray(A)
        n, N = A.shape
        out = np.empty((N, n), dtype=A.dtype)
        step = 16  # 16 source rows = one 64-byte line of float32 per destination row
        for i in range(0, n, step):
            out[:, i:i + step] = A[i:i + step].T
        return out
    if is_torch_namespace(xp):
        return A.T.contiguous()
    if is_cupy_namespace(xp):
        import cupy

        return cupy.ascontiguousarray(A.T)
    return xp.asarray(A.T, copy=True)


def contiguous(xp, A):
    """``A`` itself when it is C-contiguous, else a C-contiguous copy (views with negative or
    transposed strides make NumPy's matmul leave BLAS for a slow loop)."""
    if is_numpy_namespace(xp):
        return np.ascontiguousarray(A)
    if is_torch_namespace(xp):
        return A.contiguous()
    if is_cupy_namespace(xp):
        import cupy

        return cupy.ascontiguousarray(A)
    return A


def is_identity(perm) -> bool:
    """Whether the permutation ``perm`` (any backend) is ``0, 1, …, N−1``."""
    p = to_numpy(perm)
    return bool(np.array_equal(p, np.arange(p.shape[0])))


def cholesky_lower(xp, A):
    """Lower Cholesky factor of the symmetric positive definite ``A``; ``LinAlgError``/``ValueError``
    (never NaN) when ``A`` is not numerically positive definite.

    NumPy: LAPACK ``potrf`` through SciPy (float32 4096²: 0.22 s against 0.62 s for
    ``numpy.linalg.cholesky`` on the 2-core development machine). CuPy: ``cupy.linalg.cholesky``,
    which returns NaN instead of raising, so the result is checked.
    """
    if is_numpy_namespace(xp):
        from scipy.linalg import lapack

        potrf = lapack.get_lapack_funcs("potrf", (A,))
        L, info = potrf(A, lower=True, clean=True, overwrite_a=False)
        if info != 0:
            raise np.linalg.LinAlgError(f"matrix is not positive definite (potrf info={info})")
        return L
    L = xp.linalg.cholesky(A)
    if is_cupy_namespace(xp):
        d = diagonal(xp, L)
        if not bool(xp.all(xp.isfinite(L))) or not bool(xp.all(d > 0)):
            raise np.linalg.LinAlgError("matrix is not positive definite (CuPy Cholesky returned NaN)")
    return L


def inv_lower_triangular(xp, L):
    """``L⁻¹`` for lower-triangular ``L`` (NumPy: LAPACK ``trtri``; elsewhere a triangular solve
    against the identity)."""
    if is_numpy_namespace(xp):
        from scipy.linalg import lapack

        trtri = lapack.get_lapack_funcs("trtri", (L,))
        Li, info = trtri(L, lower=True)
        if info != 0:
            raise np.linalg.LinAlgError(f"singular triangular factor (trtri info={info})")
        return Li
    eye = xp.eye(L.shape[0], dtype=L.dtype, device=device_of(L))
    return solve_triangular(xp, L, eye, lower=True)
