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

from ._backend import cholesky_lower, contiguous, eps, inv_lower_triangular, to_numpy

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


def prepare_hessian(xp, X, *, lam, percdamp, dead: str, dtype):
    """``(H_λ, λ, dead_mask, diag_for_order)``.

    ``H_λ`` = ``XᵀX`` with GPTQ's dead-feature fix (``dead="zero"``) plus ``λI``; ``λ`` from
    ``lam`` or from ``percdamp``; ``diag_for_order`` the diagonal GPTQ sorts by (before damping).
    """
    m, N = X.shape
    H = gram(xp, X, dtype)
    d = xp.linalg.diagonal(H) if hasattr(xp, "linalg") and hasattr(xp.linalg, "diagonal") else xp.diagonal(H)
    dead_mask = d == 0
    idx = xp.arange(N, device=getattr(H, "device", None))
    if dead == "zero" and bool(xp.any(dead_mask)):
        d = xp.where(dead_mask, xp.asarray(m / 2.0, dtype=dtype, device=getattr(H, "device", None)), d)
        H[idx, idx] = d
    if percdamp is not None:
        lam = gptq_lambda(d, m, percdamp)
    lam = float(lam)
    H[idx, idx] = d + lam
    return H, lam, dead_mask, d


def _explain_failure(H, lam, name: str):
    Hn = to_numpy(H).astype(np.float64)
    w = np.linalg.eigvalsh((Hn + Hn.T) / 2)
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
    piv = xp.linalg.diagonal(L) if hasattr(xp.linalg, "diagonal") else xp.diagonal(L)
    if not bool(xp.all(xp.isfinite(L))) or not bool(xp.all(piv > 0)):
        raise ValueError(_explain_failure(H, lam, name))
    if lam == 0.0:
        dmax = float(xp.max(xp.abs(xp.linalg.diagonal(H) if hasattr(xp.linalg, "diagonal") else xp.diagonal(H))))
        if float(xp.min(piv)) ** 2 <= N * eps(H.dtype) * dmax:
            raise ValueError(
                f"{name}ᵀ{name} is numerically singular (a feature is dead or a linear combination of "
                f"later ones) and lam = 0: pass lam > 0, e.g. lam={1e-2 * dmax:.3e} (1% of the largest "
                f"diagonal entry of {name}ᵀ{name}), or percdamp=0.01"
            )
    Linv = inv_lower_triangular(xp, L)
    return xp.flip(Linv, axis=(0, 1))
