"""Input checks: every bad input becomes a ValueError/TypeError that names the argument and the fix."""

from __future__ import annotations

import math
import numbers

from ._backend import dtype_name, namespace

__all__ = [
    "check_matrix",
    "check_layer",
    "check_lambda",
    "check_int",
    "check_choice",
]

_FLOAT_NAMES = ("float32", "float64")


def check_matrix(name: str, A, *, allow_empty: bool = False):
    """``A`` must be a 2-D float32/float64 array with finite entries."""
    if not hasattr(A, "shape") or not hasattr(A, "dtype"):
        raise TypeError(
            f"{name} must be a 2-D array (NumPy, CuPy or torch), got {type(A).__name__}; "
            f"wrap it with numpy.asarray({name}, dtype=numpy.float64)"
        )
    if len(A.shape) != 2:
        raise ValueError(f"{name} must be 2-D, got shape {tuple(A.shape)}")
    dt = dtype_name(A.dtype)
    if dt not in _FLOAT_NAMES:
        if "complex" in dt:
            raise TypeError(f"{name} has complex dtype {dt}; quantization needs real float32 or float64")
        raise TypeError(
            f"{name} has dtype {dt}; pass float32 or float64 (e.g. {name}.astype('float64'))"
        )
    if not allow_empty and (A.shape[0] == 0 or A.shape[1] == 0):
        raise ValueError(f"{name} is empty (shape {tuple(A.shape)}); it needs at least one row and one column")
    xp = namespace(A)
    if not bool(xp.all(xp.isfinite(A))):
        bad = int(xp.sum(xp.astype(~xp.isfinite(A), xp.int64)))
        raise ValueError(
            f"{name} contains {bad} NaN or Inf entries; remove or replace them before quantizing"
        )
    return A


def check_layer(W, X, X_tilde=None):
    """Shapes and backends of a layer: W is n x N, X (and X_tilde) m x N, all one library."""
    check_matrix("W", W)
    check_matrix("X", X)
    if X_tilde is not None:
        check_matrix("X_tilde", X_tilde)
    xp = namespace(W, X, X_tilde)
    n, N = W.shape
    if X.shape[1] != N:
        raise ValueError(
            f"X has {X.shape[1]} columns but W has {N}: X must be m x N (rows are samples, "
            f"columns the N input features of W); did you pass X transposed?"
        )
    if X_tilde is not None and tuple(X_tilde.shape) != tuple(X.shape):
        raise ValueError(
            f"X_tilde must have the same shape as X {tuple(X.shape)}, got {tuple(X_tilde.shape)}"
        )
    return xp


def check_lambda(lam, percdamp):
    """Exactly one of ``lam`` (absolute, in units of XᵀX) and ``percdamp`` (GPTQ's relative damping)."""
    if lam is not None and percdamp is not None:
        raise ValueError("give either lam (absolute damping) or percdamp (GPTQ convention), not both")
    if lam is None and percdamp is None:
        raise ValueError(
            "damping is required: pass lam=<float ≥ 0> (H = XᵀX + lam·I) or percdamp=0.01 "
            "(GPTQ: lam = percdamp · mean diag((2/m)XᵀX) · m/2)"
        )
    for name, v in (("lam", lam), ("percdamp", percdamp)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
        if not math.isfinite(float(v)):
            raise ValueError(f"{name} must be finite, got {v}")
        if float(v) < 0:
            raise ValueError(f"{name} must be ≥ 0, got {v}; damping adds {name}·I to XᵀX")


def check_int(name: str, v, *, lo: int | None = None, hi: int | None = None):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    v = int(v)
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be ≥ {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be ≤ {hi}, got {v}")
    return v


def check_choice(name: str, v, choices):
    if v not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {v!r}")
    return v
