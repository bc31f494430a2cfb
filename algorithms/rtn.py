"""Round-to-nearest (RTN): every weight rounded independently, no error feedback (the baseline)."""

from __future__ import annotations

from ._backend import device_of, namespace, uniforms
from .grids import ColumnGrid, Grid
from .loop import ROUNDINGS, check_representable
from .result import QuantResult
from .rounding import round_nearest, round_stochastic
from .validation import check_choice, check_matrix

__all__ = ["rtn"]


def rtn(W, grid: Grid, *, rounding: str = "nearest", rng=None) -> QuantResult:
    """Round each entry of ``W`` onto ``grid`` (GPTQ grids: scales fitted to ``W`` itself, groups
    in the natural order). ``errors = W − Q``; ``order`` is the identity."""
    check_matrix("W", W)
    xp = namespace(W)
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be an algorithms.Grid, got {type(grid).__name__}")
    check_choice("rounding", rounding, ROUNDINGS)
    if rounding == "stochastic" and rng is None:
        raise ValueError("rounding='stochastic' needs rng=numpy.random.default_rng(seed)")
    n, N = W.shape
    grid.check_dividing(N)
    grid.check_rows(n)
    dev = device_of(W)
    perm = xp.arange(N, device=dev)
    check_representable(xp, W, grid)  # as optq: a finite grid must reach the weights (never silent clipping)
    spec = grid
    if grid.kind == "gptq" and grid.group_size and not grid.static_groups:
        # without error feedback, on-the-fly groups see the original weights: same as static groups
        spec = Grid.gptq(grid.bits, sym=grid.sym, group_size=grid.group_size, static_groups=True)
    cg = ColumnGrid(xp, spec, n=n, N=N, order=perm, W_fit=W, W_static=W, dtype=W.dtype, device=dev)
    alpha = cg.alphabet(perm)
    if rounding == "nearest":
        Q, clipped = round_nearest(xp, W, alpha.scale, alpha.zero, alpha.qmin, alpha.qmax)
    else:
        U = uniforms(xp, rng, (n, N), like=W)
        Q, clipped = round_stochastic(xp, W, alpha.scale, alpha.zero, alpha.qmin, alpha.qmax, U)
    return QuantResult(
        Q=Q, errors=W - Q, z=xp.asarray(W, copy=True), order=perm, saturated=xp.any(clipped, axis=1),
        clipped=clipped, lam=float("nan"), grid=grid, alphabet=alpha, W0=xp.asarray(W, copy=True),
        dead=xp.zeros((N,), dtype=xp.bool, device=dev), rounding=rounding, algorithm="rtn", m=0,
    )
