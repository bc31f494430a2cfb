"""Batched Monte Carlo: many stochastic OPTQ runs of one weight vector as the rows of one run.

Rows of ``W`` are independent in OPTQ (they share only ``X``), so ``R`` independent stochastic
trials of one row ``w`` are the ``R`` rows of a single run on ``W = 1_R wᵀ``. The Hessian, its
factor ``U`` and the order are computed once; the trials are quantized in batches of
``batch_rows`` rows (each batch draws fresh randomness from ``rng``).
"""

from __future__ import annotations

import numbers

from . import loop
from ._backend import namespace, to_numpy
from .grids import Alphabet, Grid
from .result import QuantResult
from .validation import check_int, check_lambda, check_layer

__all__ = ["optq_trials"]


def optq_trials(w, X, *, grid: Grid, trials: int, rng, lam: float | None = None, percdamp: float | None = None,
                order="natural", block_size: int = 128, batch_rows: int | None = None,
                dead: str = "zero", kernel: str = "auto") -> QuantResult:
    """``trials`` independent stochastic OPTQ runs of the weight vector ``w`` (length ``N``, or a
    ``1 × N`` array) on calibration data ``X`` (``m × N``).

    Returns one :class:`QuantResult` whose row ``r`` is trial ``r`` (``Q``, ``errors``, ``z``,
    ``saturated``, ... all with ``trials`` rows). ``grid``: as in :func:`algorithms.optq`; a
    per-row symmetric ``delta`` must be a scalar or ``1 × 1``. ``batch_rows`` bounds the rows
    quantized at once (default: all). ``rng``, ``kernel``: as in :func:`algorithms.optq` (the
    batches draw from ``rng`` one after another).
    """
    trials = check_int("trials", trials, lo=1)
    if batch_rows is None:
        batch_rows = trials
    batch_rows = check_int("batch_rows", batch_rows, lo=1)
    if hasattr(w, "shape") and len(w.shape) == 1:
        w = namespace(w).reshape(w, (1, -1))
    xp = check_layer(w, X)
    if w.shape[0] != 1:
        raise ValueError(f"w must be one weight vector (length N or 1 x N), got shape {tuple(w.shape)}")
    n1, N = w.shape
    check_lambda(lam, percdamp)
    if rng is None:
        raise ValueError("optq_trials needs rng=numpy.random.default_rng(seed) (stochastic rounding)")
    opts = loop.check_options(grid, 1, N, "stochastic", rng, block_size, "blocked", dead, kernel)
    w0, H, lam_used, dead_mask, perm = loop.start(xp, w, X, grid, lam=lam, percdamp=percdamp, dead=dead,
                                                  order=order, rng=rng)
    F = loop.factor(xp, loop.permute(xp, H, perm), lam_used, method="blocked")  # once for every batch
    del H

    outs = []
    for r0 in range(0, trials, batch_rows):
        b = min(batch_rows, trials - r0)
        Wb = xp.asarray(xp.broadcast_to(w0, (b, N)), copy=True)
        cols = loop.run_columns(xp, Wb, F, perm, _grid_for_rows(xp, grid, b), rounding="stochastic", rng=rng,
                                block_size=block_size, W_fit=Wb, W_static=Wb, kernel=kernel)
        outs.append(loop.unpermute(xp, cols, perm))
    cat = (lambda k: outs[0][k]) if len(outs) == 1 else (lambda k: xp.concat([o[k] for o in outs], axis=0))
    alpha = Alphabet(scale=_cat_alpha(xp, outs, "scale"), zero=_cat_alpha(xp, outs, "zero"),
                     qmin=outs[0]["alphabet"].qmin, qmax=outs[0]["alphabet"].qmax)
    return QuantResult(
        Q=cat("Q"), errors=cat("errors"), z=cat("z"), order=perm, saturated=cat("saturated"),
        clipped=cat("clipped"), lam=lam_used, grid=grid, alphabet=alpha,
        W0=xp.asarray(xp.broadcast_to(w0, (trials, N)), copy=True), dead=dead_mask, rounding="stochastic",
        algorithm="optq", hinv_diag=outs[0]["hinv_diag"], m=int(X.shape[0]),
        options=dict(opts, order=order if isinstance(order, str) else "custom", percdamp=percdamp,
                     trials=trials, batch_rows=batch_rows),
    )


def _cat_alpha(xp, outs, field):
    parts = [getattr(o["alphabet"], field) for o in outs]
    return parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)


def _grid_for_rows(xp, grid: Grid, b: int) -> Grid:
    """The grid for ``b`` copies of one row (a per-row symmetric step is repeated)."""
    if grid.kind == "symmetric" and not isinstance(grid.delta, numbers.Real):
        d = grid.delta
        if tuple(d.shape) != (1, 1):
            raise ValueError(f"a per-row delta for optq_trials must be 1 x 1 (one row), got shape {tuple(d.shape)}")
        return Grid.symmetric(float(to_numpy(d).ravel()[0]), grid.K)
    return grid
