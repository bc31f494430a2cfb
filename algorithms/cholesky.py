"""The damped Hessian ``H_λ = XᵀX + λI`` and the upper factor ``U`` of its inverse.

Conventions (SPEC §1):

* ``lam`` is absolute, in the units of ``XᵀX``.
* GPTQ's ``percdamp`` uses ``H_gptq = (2/m)XᵀX`` and ``damp = percdamp · mean diag(H_gptq)``;
  since ``H_gptq + damp·I = (2/m)(XᵀX + λI)`` this is ``λ = damp · m/2``.
* Dead features (``‖X_t‖ = 0``): GPTQ sets ``H_gptq[t, t] = 1`` (that is ``m/2`` in units of
  ``XᵀX``) and zeroes the weights of those features. ``dead="zero"`` does the same;
  ``dead="keep"`` leaves the weights and the Hessian alone (then ``λ > 0`` is needed).

``U`` is upper triangular with positive diagonal and ``H_λ⁻¹ = UᵀU``. It is computed from the
Cholesky factor of the order-reversed Hessian, ``J H_λ J = L Lᵀ``, as ``U = J L⁻¹ J`` (one
factorization and one triangular inverse; ``H_λ`` itself is never inverted).
"""

from __future__ import annotations

import numpy as np

from ._backend import cholesky_lower, contiguous, diagonal, dtype_name, eps, inv_lower_triangular, to_numpy

__all__ = ["gram", "prepare_hessian", "inverse_cholesky_upper", "gptq_lambda"]


def gram(xp, X, dtype):
    """``XᵀX`` in ``dtype``."""
    Xc = xp.astype(X, dtype)
    return Xc.T @ Xc


def gptq_lambda(diagH, m: int, percdamp: float) -> float:
    """λ (units of ``XᵀX``) equal to GPTQ's ``percdamp`` damping: ``percdamp·mean diag((2/m)H)·m/2``.

    ``diagH`` must already carry GPTQ's dead-feature value (``m/2``) where applicable.
    """
    return float(percdamp) * float(np.mean(to_numpy(diagH)))


def prepare_hessian(xp, X, *, lam, percdamp, dead: str, dtype, name: str = "X", samples: int | None = None):
    """``(H_λ, λ, dead_mask, diag_for_order)``.

    ``H_λ`` = ``XᵀX`` with GPTQ's dead-feature fix (``dead="zero"``) plus ``λI``; ``λ`` from
    ``lam`` or from ``percdamp``; ``diag_for_order`` the diagonal GPTQ sorts by (before damping).
    ``samples``: the number of calibration rows ``m`` that ``X`` stands for (default its own rows).
    """
    N = X.shape[1]
    m = X.shape[0] if samples is None else samples
    with np.errstate(over="ignore"):  # an overflow is reported below, with the fix
        H = gram(xp, X, dtype)
    d = diagonal(xp, H)
    dead_mask = d == 0
    idx = xp.arange(N, device=getattr(H, "device", None))
    if dead == "zero" and bool(xp.any(dead_mask)):
        d = xp.where(dead_mask, xp.asarray(m / 2.0, dtype=dtype, device=getattr(H, "device", None)), d)
        H[idx, idx] = d
    _check_gram(xp, X, d, dead_mask, dtype=dtype, name=name)
    if percdamp is not None:
        lam = gptq_lambda(d, m, percdamp)
    lam = float(lam)
    H[idx, idx] = d + lam
    _check_damped(xp, H, lam=lam, percdamp=percdamp, dtype=dtype, name=name)
    return H, lam, dead_mask, d


def _check_gram(xp, X, d, dead_mask, *, dtype, name="X"):
    """``XᵀX`` must be representable in ``dtype``: a ValueError naming the overflow (or the underflow
    that makes every live feature look dead; a RuntimeWarning when only some do) and the fix, never a
    LinAlgError later."""
    dtname = dtype_name(dtype)
    if not bool(xp.all(xp.isfinite(d))):
        amax = float(xp.max(xp.abs(xp.astype(X, xp.float64))))
        raise ValueError(
            f"{name}ᵀ{name} overflows {dtname} (max|{name}| = {amax:.3g}; the squares and sums of {name} must stay "
            f"below {float(np.finfo(dtname).max):.3g}): rescale {name} (e.g. {name} / max|{name}|: with percdamp "
            "the quantization does not change, with lam scale lam by the factor squared)"
            + (", or pass float64 data" if dtname == "float32" else "")
        )
    if bool(xp.any(dead_mask)):
        _check_underflow(xp, X, dead_mask, dtname, name)


def _check_damped(xp, H, *, lam, percdamp, dtype, name="X"):
    """``XᵀX + λI`` must be finite in ``dtype`` (a ValueError naming the damping otherwise)."""
    dtname = dtype_name(dtype)
    if not (np.isfinite(lam) and bool(xp.all(xp.isfinite(H)))):
        what = (f"percdamp = {percdamp:g} gives λ = {lam:.3g}" if percdamp is not None else f"lam = {lam:.3g}")
        raise ValueError(
            f"the damped Hessian {name}ᵀ{name} + λI overflows {dtname}: {what}, which with diag({name}ᵀ{name}) "
            f"exceeds the largest {dtname} ({float(np.finfo(dtname).max):.3g}); use a damping of the order of "
            f"diag({name}ᵀ{name}) (percdamp=0.01 is GPTQ's default), or rescale {name}"
        )


def _check_underflow(xp, X, dead_mask, dtname, name):
    """Features with nonzero data whose ``‖X_t‖²`` underflows to 0 would count as dead: a
    ValueError when every live feature does (the result would be meaningless), else a RuntimeWarning."""
    live = xp.any(X != 0, axis=0)
    k = int(xp.sum(xp.astype(dead_mask & live, xp.int64)))
    if not k:
        return
    N = int(dead_mask.shape[0])
    msg = (f"{k} of {N} features of {name} are not zero but ‖{name}_t‖² underflows to 0 in {dtname} (max|{name}| = "
           f"{float(xp.max(xp.abs(X))):.3g}), so they would count as dead features: rescale {name} (e.g. "
           f"{name} / max|{name}|: with percdamp the quantization does not change, with lam scale lam by the "
           "factor squared)" + (", or pass float64 data" if dtname == "float32" else ""))
    if k == int(xp.sum(xp.astype(live, xp.int64))):  # every live feature underflows
        raise ValueError(msg)
    import warnings

    warnings.warn(msg, RuntimeWarning, stacklevel=5)


def _explain_failure(H, lam, name: str):
    Hn = to_numpy(H).astype(np.float64)
    if not np.all(np.isfinite(Hn)):
        return (f"the damped Hessian {name}ᵀ{name} + λI (λ = {lam:.6g}) has entries that overflow "
                f"{dtype_name(H.dtype)}: rescale {name} (e.g. {name} / max|{name}|), or use a smaller damping")
    try:
        w = np.linalg.eigvalsh((Hn + Hn.T) / 2)
    except np.linalg.LinAlgError:
        return (f"the damped Hessian {name}ᵀ{name} + λI (λ = {lam:.6g}) is not numerically positive definite "
                f"and its eigenvalues cannot be computed (entries near the limits of {dtype_name(H.dtype)}): "
                f"rescale {name} (e.g. {name} / max|{name}|), or pass percdamp=0.01")
    mean_diag = float(np.mean(np.diag(Hn)) - lam)
    lam_min_needed = max(0.0, -float(w[0]) + lam) + 1e-6 * max(mean_diag, 1e-300)
    return (
        f"the damped Hessian {name}ᵀ{name} + λI (λ = {lam:.6g}) is not numerically positive definite "
        f"(smallest eigenvalue {w[0]:.3e}, largest {w[-1]:.3e}; {name} has dead or linearly dependent "
        f"features): pass lam ≥ {lam_min_needed:.3e}, e.g. lam={max(lam_min_needed, 1e-2 * mean_diag):.3e} "
        f"(1% of the mean of diag({name}ᵀ{name})), or percdamp=0.01"
    )


def inverse_cholesky_upper(xp, H, lam: float, *, name: str = "X"):
    """Upper-triangular ``U`` with ``H⁻¹ = UᵀU`` (``H`` symmetric positive definite).

    Raises ``ValueError`` with the λ that would be needed when ``H`` is not numerically
    positive definite; with ``λ = 0`` a numerically singular ``H`` (a pivot below
    ``N·eps·max diag``) is rejected rather than factorised into meaningless numbers.
    """
    N = H.shape[0]
    Hr = contiguous(xp, xp.flip(H, axis=(0, 1)))
    try:
        L = cholesky_lower(xp, Hr)  # raises (never NaN) when not positive definite
    except Exception as exc:
        raise ValueError(_explain_failure(H, lam, name)) from exc
    piv = diagonal(xp, L)
    if not bool(xp.all(xp.isfinite(L))) or not bool(xp.all(piv > 0)):
        raise ValueError(_explain_failure(H, lam, name))
    if lam == 0.0:
        dmax = float(xp.max(xp.abs(diagonal(xp, H))))
        if float(xp.min(piv)) ** 2 <= N * eps(H.dtype) * dmax:
            raise ValueError(
                f"{name}ᵀ{name} is numerically singular (a feature is dead or a linear combination of "
                f"later ones) and lam = 0: pass lam > 0, e.g. lam={1e-2 * dmax:.3e} (1% of the largest "
                f"diagonal entry of {name}ᵀ{name}), or percdamp=0.01"
            )
    Linv = inv_lower_triangular(xp, L)
    return xp.flip(Linv, axis=(0, 1))
