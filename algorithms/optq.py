"""OPTQ (GPTQ), deterministic and stochastic, in four equivalent update forms.

For one row ``w`` (all rows at once: they share ``X`` and are independent), in processing
order ``t = 1..N``::

    z_t = w_t                     (the current, already updated weight)
    q_t = Q(z_t)                  (nearest, or stochastic rounding Q_s)
    e_t = z_t − q_t
    w_s ← w_s − e_t U_ts / U_tt   for s > t,   where H_λ⁻¹ = UᵀU, U upper triangular.

Equivalent update forms (``method=``), identical up to floating point:

* ``"blocked"`` (default): the Cholesky form with GPTQ's lazy batch updates: inside a block of
  ``block_size`` columns (itself split into small sub-blocks) the updates are applied column by
  column; the rest of the matrix receives them as one matrix product per block.
* ``"cholesky"``: the Cholesky form, every update applied at once (no blocking).
* ``"inverse"``: the OBS form: ``w ← w − e_t H⁻¹[:, t]/H⁻¹[t, t]`` on the remaining coordinates,
  then ``H⁻¹`` is downdated to the inverse of the trailing block.
* ``"ridge"``: ``w_{>t} += e_t β_t`` with ``β_t = argmin_v ‖X_t − X_{>t}v‖² + λ‖v‖²`` (one ridge
  solve per column; slow, for checking).

Rows are never looped over in Python: each step acts on all ``n`` rows at once. The loop and its
update forms live in :mod:`algorithms.loop` (shared with Qronos and the batched trials).
"""

from __future__ import annotations

from . import loop
from .grids import Grid
from .loop import METHODS, ROUNDINGS
from .result import QuantResult
from .validation import check_lambda, check_layer

__all__ = ["optq", "METHODS", "ROUNDINGS"]


def optq(
    W,
    X,
    *,
    grid: Grid,
    lam: float | None = None,
    percdamp: float | None = None,
    order="natural",
    rounding: str = "nearest",
    rng=None,
    block_size: int = 128,
    method: str = "blocked",
    dead: str = "zero",
    kernel: str = "auto",
    samples: int | None = None,
) -> QuantResult:
    """Quantize the rows of ``W`` (``n × N``) with OPTQ on calibration data ``X`` (``m × N``).

    Parameters
    ----------
    grid : :class:`Grid` — ``Grid.symmetric(δ, K)``, ``Grid.integers(δ)`` or ``Grid.gptq(bits, ...)``.
    lam : absolute damping, ``H_λ = XᵀX + λI``. Or give ``percdamp`` (GPTQ's convention,
        ``λ = percdamp · mean diag((2/m)XᵀX) · m/2``). The λ used is ``result.lam``.
    order : ``"natural"``, ``"decreasing"`` (GPTQ's act_order), ``"increasing"``, ``"random"``
        (needs ``rng``) or a permutation.
    rounding : ``"nearest"`` or ``"stochastic"`` (needs ``rng``: a ``numpy.random.Generator``, or an
        :class:`algorithms.SplitMix64` counter stream; the uniforms are the same on every kernel).
    block_size : columns per lazy batch (``method="blocked"``).
    method : update form, see the module docstring.
    dead : ``"zero"`` (GPTQ: weights of features with ``‖X_t‖ = 0`` are zeroed and their Hessian
        diagonal set to GPTQ's 1) or ``"keep"``.
    kernel : ``"auto"`` (the fused GPU kernel for CuPy arrays where it applies, else the generic
        loop), ``"fused"`` (that kernel or an error) or ``"generic"`` (the array-API loop). Results
        agree up to floating-point rounding of the updates.
    samples : the number of calibration rows ``m`` that ``X`` stands for, when ``X`` is not the
        data itself but any ``X'`` with ``X'ᵀX' = XᵀX`` (a square root of accumulated Gram matrices,
        :mod:`verify.stream`); ``m`` enters GPTQ's dead-feature value ``m/2``. Default ``X``'s rows.

    Returns
    -------
    :class:`QuantResult` (``Q`` in the original feature order; ``errors`` and ``z`` in processing
    order; ``order``; ``saturated``; ``lam``; ``alphabet``; ...).
    """
    xp = check_layer(W, X)
    opts = loop.check_options(grid, *W.shape, rounding, rng, block_size, method, dead, kernel)
    samples = loop.check_samples(samples, X)
    check_lambda(lam, percdamp)
    # H = XᵀX + λI (dead features: H_tt = GPTQ's 1, weights 0); the order π (act_order: by diag H)
    W0, H, lam_used, dead_mask, perm = loop.start(xp, W, X, grid, lam=lam, percdamp=percdamp, dead=dead,
                                                  order=order, rng=rng, samples=samples)
    # H ← H[π, π]; U with H⁻¹ = UᵀU (Cholesky of the inverse), in the form the update needs
    F = loop.factor(xp, loop.permute(xp, H, perm), lam_used, method=method)
    # for t in π: q_t = Q(w_t), e_t = w_t − q_t, w_{>t} −= e_t U_{t,>t}/U_tt
    cols = loop.run_columns(xp, W0, F, perm, grid, rounding=rounding, rng=rng, block_size=block_size,
                            W_fit=W, W_static=W0, kernel=kernel)
    # Q back in the original feature order
    return QuantResult(
        lam=lam_used, grid=grid, W0=W0, dead=dead_mask, rounding=rounding, algorithm="optq",
        m=samples, options=dict(opts, order=order if isinstance(order, str) else "custom",
                                        percdamp=percdamp), **loop.unpermute(xp, cols, perm),
    )
