"""Qronos: quantize ``w`` against mismatched inputs, ``min_q ‖Xw − X̃q‖``.

``X`` are the float inputs of the layer, ``X̃`` the inputs produced by already-quantized earlier
layers. With ``H̃_λ = X̃ᵀX̃ + λI`` and the least-squares target

    ŵ = H̃_λ⁻¹ (X̃ᵀX + λI) w      (minimiser of ‖Xw − X̃v‖² + λ‖w − v‖²),

* ``variant="projection"``: OPTQ on ``(X̃, λ)`` started from ``ŵ``;
* ``variant="original"`` (Qronos as published): the first processed coordinate ``f`` is set by the
  least-squares correction ``q_f = Q(y_f)``, ``y_f = ⟨X̃_f, Xw − Σ_{s≠f} X̃_s w_s⟩ / ‖X̃_f‖²``; the
  other coordinates are re-solved by the ridge problem
  ``w_{≠f} ← (X̃ᵀ_{≠f}X̃_{≠f} + λI)⁻¹[(X̃ᵀX + λI)_{≠f,:} w − X̃ᵀ_{≠f}X̃_f q_f]``, and OPTQ on ``X̃``
  processes the rest. The ridge step equals one OPTQ step from ``ŵ`` that propagates the error
  ``ŵ_f − q_f``, which is how it is computed here.

Dead features of ``X̃`` are kept (no zeroing): ``λ > 0`` is needed when ``X̃ᵀX̃`` is singular.
"""

from __future__ import annotations

from . import loop
from ._backend import device_of, dtype_name
from .cholesky import inverse_cholesky_upper, prepare_hessian
from .ordering import resolve_order
from .result import QronosResult
from .validation import check_choice, check_lambda, check_layer

__all__ = ["qronos", "VARIANTS"]

VARIANTS = ("projection", "original")


def qronos(
    W,
    X,
    X_tilde,
    *,
    grid,
    lam: float | None = None,
    percdamp: float | None = None,
    variant: str = "projection",
    order="natural",
    rounding: str = "nearest",
    rng=None,
    block_size: int = 128,
    method: str = "blocked",
    kernel: str = "auto",
    samples: int | None = None,
) -> QronosResult:
    """Quantize ``W`` (``n × N``) with Qronos on float inputs ``X`` and mismatched inputs ``X_tilde``.

    ``lam``/``percdamp`` as in :func:`algorithms.optq`, applied to ``X̃`` (``percdamp`` gives
    ``λ = percdamp · mean ‖X̃_t‖²``). Brevitas' ``alpha`` damping corresponds to
    ``lam = alpha · λ_max(X̃ᵀX̃)``. ``order="decreasing"`` sorts by ``diag(X̃ᵀX̃)``. ``rng``, ``kernel``, ``samples``: as in
    :func:`algorithms.optq`.
    """
    if X_tilde is None:
        raise TypeError(
            "X_tilde is required: qronos quantizes against the mismatched inputs X_tilde (m x N, the inputs "
            "produced by the already-quantized earlier layers); pass X_tilde=X when there is no mismatch, "
            "or use algorithms.optq(W, X, ...)"
        )
    xp = check_layer(W, X, X_tilde)
    n, N = W.shape
    check_choice("variant", variant, VARIANTS)
    opts = loop.check_options(grid, n, N, rounding, rng, block_size, method, "keep", kernel)
    samples = loop.check_samples(samples, X)
    check_lambda(lam, percdamp)
    dtype = W.dtype
    dev = device_of(W)
    Xc = xp.astype(X, dtype)
    Xt = xp.astype(X_tilde, dtype)
    Ht, lam_used, dead_mask, diagH = prepare_hessian(xp, Xt, lam=lam, percdamp=percdamp, dead="keep", dtype=dtype,
                                                     name="X_tilde", samples=samples)
    perm = resolve_order(xp, order, diagH, N, rng=rng, device=dev)
    Hp = loop.permute(xp, Ht, perm)
    U = inverse_cholesky_upper(xp, Hp, lam_used, name="X_tilde")  # H̃_λ⁻¹ = UᵀU, processing order

    # ŵ = H̃_λ⁻¹ (X̃ᵀX + λI) w, row-wise: Ŵ = W (XᵀX̃ + λI) H̃_λ⁻¹, using H̃_λ⁻¹ = UᵀU (processing order).
    G = Xt.T @ Xc  # G[s, j] = ⟨X̃_s, X_j⟩
    rhs = W @ G.T + lam_used * W  # n × N, original order
    rhs_p = xp.take(rhs, perm, axis=1)
    What_p = (rhs_p @ U.T) @ U
    invperm = xp.argsort(perm)
    W_hat = xp.take(What_p, invperm, axis=1)
    if not bool(xp.all(xp.isfinite(W_hat))):
        raise ValueError(
            f"the least-squares target ŵ = H̃_λ⁻¹(X̃ᵀX + λI)w overflows {dtype_name(dtype)} "
            "(X̃ᵀX is too large for the dtype): rescale X and X_tilde by one common factor (e.g. divide both by "
            "max|X|; with percdamp the result does not change, with lam scale lam by the factor squared), or use "
            "float64"
        )
    loop.check_representable(xp, W_hat, grid)

    first = None
    if variant == "original":
        f = int(perm[0])
        Hf = Xt.T @ Xt[:, f]  # ⟨X̃_s, X̃_f⟩ for all s
        nf = float(Hf[f])
        if nf == 0.0:
            raise ValueError(
                f"variant='original' is undefined when the first processed feature (index {f}) of X_tilde "
                "is identically zero; use variant='projection', or an order that starts with a live feature"
            )
        y = (W @ G[f, :] - W @ Hf + W[:, f] * nf) / nf
        first = y

    F = loop.factor(xp, Hp, lam_used, method=method, name="X_tilde", U=U)
    del U, Hp
    cols = loop.run_columns(xp, W_hat, F, perm, grid, rounding=rounding, rng=rng, block_size=block_size,
                            W_fit=W, W_static=W, first=first, kernel=kernel)
    return QronosResult(
        lam=lam_used, grid=grid, W0=W_hat, dead=dead_mask, rounding=rounding, algorithm="qronos",
        m=samples, options=dict(opts, order=order if isinstance(order, str) else "custom",
                                        percdamp=percdamp, variant=variant),
        W_hat=W_hat, variant=variant, y1=first, **loop.unpermute(xp, cols, perm),
    )
