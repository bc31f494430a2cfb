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

Rows are never looped over in Python: each step acts on all ``n`` rows at once. The working
matrix is kept transposed (``N × n``, processing order) so that a column of ``W`` is a contiguous
row.
"""

from __future__ import annotations

import math

from ._backend import device_of, to_numpy, uniforms
from .cholesky import inverse_cholesky_upper, prepare_hessian
from .grids import ColumnGrid, Grid
from .ordering import resolve_order
from .result import QuantResult
from .rounding import round_nearest, round_stochastic
from .validation import check_choice, check_int, check_lambda, check_layer

__all__ = ["optq", "METHODS", "ROUNDINGS"]

METHODS = ("blocked", "cholesky", "inverse", "ridge")
ROUNDINGS = ("nearest", "stochastic")
_INNER = 16  # sub-block width of the blocked form


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
) -> QuantResult:
    """Quantize the rows of ``W`` (``n × N``) with OPTQ on calibration data ``X`` (``m × N``).

    Parameters
    ----------
    grid : :class:`Grid` — ``Grid.symmetric(δ, K)``, ``Grid.integers(δ)`` or ``Grid.gptq(bits, ...)``.
    lam : absolute damping, ``H_λ = XᵀX + λI``. Or give ``percdamp`` (GPTQ's convention,
        ``λ = percdamp · mean diag((2/m)XᵀX) · m/2``). The λ used is ``result.lam``.
    order : ``"natural"``, ``"decreasing"`` (GPTQ's act_order), ``"increasing"``, ``"random"``
        (needs ``rng``) or a permutation.
    rounding : ``"nearest"`` or ``"stochastic"`` (needs ``rng``, a ``numpy.random.Generator``).
    block_size : columns per lazy batch (``method="blocked"``).
    method : update form, see the module docstring.
    dead : ``"zero"`` (GPTQ: weights of features with ``‖X_t‖ = 0`` are zeroed and their Hessian
        diagonal set to GPTQ's 1) or ``"keep"``.

    Returns
    -------
    :class:`QuantResult` (``Q`` in the original feature order; ``errors`` and ``z`` in processing
    order; ``order``; ``saturated``; ``lam``; ``alphabet``; ...).
    """
    xp = check_layer(W, X)
    n, N = W.shape
    opts = _check_options(grid, n, N, rounding, rng, block_size, method, dead)
    check_lambda(lam, percdamp)
    dtype = W.dtype
    dev = device_of(W)
    H, lam_used, dead_mask, diagH = prepare_hessian(xp, X, lam=lam, percdamp=percdamp, dead=dead, dtype=dtype)
    W0 = xp.asarray(W, copy=True)
    if dead == "zero" and bool(xp.any(dead_mask)):
        W0[:, dead_mask] = 0
    _check_representable(xp, W0, grid)
    perm = resolve_order(xp, order, diagH, N, rng=rng, device=dev)
    out = run_columns(
        xp, W0, H, lam_used, perm, grid, rounding=rounding, rng=rng, block_size=block_size,
        method=method, W_fit=W, W_static=W0, name="X",
    )
    return QuantResult(
        lam=lam_used, grid=grid, W0=W0, dead=dead_mask, rounding=rounding, algorithm="optq",
        m=int(X.shape[0]), options=dict(opts, order=order if isinstance(order, str) else "custom",
                                        percdamp=percdamp), **out,
    )


def _check_options(grid, n, N, rounding, rng, block_size, method, dead):
    if not isinstance(grid, Grid):
        raise TypeError(
            f"grid must be an algorithms.Grid (Grid.symmetric(delta, K), Grid.gptq(bits, ...)), got {type(grid).__name__}"
        )
    grid.check_dividing(N)
    grid.check_rows(n)
    check_choice("rounding", rounding, ROUNDINGS)
    check_choice("method", method, METHODS)
    check_choice("dead", dead, ("zero", "keep"))
    check_int("block_size", block_size, lo=1)
    if rounding == "stochastic" and rng is None:
        raise ValueError("rounding='stochastic' needs rng=numpy.random.default_rng(seed)")
    return {"block_size": int(block_size), "method": method, "dead": dead}


def _check_representable(xp, W0, grid: Grid):
    """A finite symmetric grid must reach the weights themselves: ``|w| ≤ (K + ½)δ``."""
    if grid.kind != "symmetric" or grid.K is None:
        return
    d = grid.delta
    if hasattr(d, "shape"):
        d = xp.asarray(to_numpy(d), dtype=W0.dtype, device=device_of(W0))
        ratio = float(xp.max(xp.abs(W0) / xp.reshape(d, (-1, 1))))
    else:
        ratio = float(xp.max(xp.abs(W0))) / float(d)
    if ratio > (grid.K + 0.5) * (1 + 1e-6):
        raise ValueError(
            f"the grid cannot represent the weights: max|W|/δ = {ratio:.4g} exceeds K + 1/2 = {grid.K + 0.5}; "
            f"use K ≥ {math.ceil(ratio - 0.5)} or a larger delta"
        )


def run_columns(xp, W0, H, lam, perm, grid, *, rounding, rng, block_size, method, W_fit, W_static,
                name="X", first=None, U=None):
    """The column loop shared by OPTQ and Qronos; returns the fields of a result.

    ``H`` is the damped Hessian in the original order, ``perm`` the processing order, ``U`` (optional)
    the inverse Cholesky factor of the permuted ``H`` when the caller already has it, ``first``
    an optional ``n``-vector rounded at position 0 instead of the current weight there (Qronos'
    least-squares first coordinate); the error propagated from position 0 is then the current
    weight minus the rounded value.
    """
    n, N = W0.shape
    dev = device_of(W0)
    dtype = W0.dtype
    Hp = xp.take(xp.take(H, perm, axis=0), perm, axis=1)
    Wp = xp.asarray(xp.take(W0, perm, axis=1).T, copy=True)  # N × n working matrix
    cg = ColumnGrid(xp, grid, n=n, N=N, order=perm, W_fit=W_fit, W_static=W_static, dtype=dtype, device=dev)
    Unif = uniforms(xp, rng, (N, n), like=W0) if rounding == "stochastic" else None
    Qp = xp.zeros((N, n), dtype=dtype, device=dev)
    Zp = xp.zeros((N, n), dtype=dtype, device=dev)
    Cp = xp.zeros((N, n), dtype=xp.bool, device=dev)

    def quantize(t):
        s, zp = cg.params(t, Wp)
        val = first if (t == 0 and first is not None) else Wp[t]
        if Unif is None:
            q, c = round_nearest(xp, val, s, zp, cg.qmin, cg.qmax)
        else:
            q, c = round_stochastic(xp, val, s, zp, cg.qmin, cg.qmax, Unif[t])
        Qp[t] = q
        Zp[t] = val
        Cp[t] = c
        return Wp[t] - q  # the error that is propagated

    if method in ("blocked", "cholesky"):
        if U is None:
            U = inverse_cholesky_upper(xp, Hp, lam, name=name)
        if method == "cholesky":
            _loop_cholesky(xp, Wp, U, quantize, [0, N], N)
        else:
            bounds = sorted(set(range(0, N, block_size)) | cg.boundaries(N) | {N})
            _loop_cholesky(xp, Wp, U, quantize, bounds, _INNER)
        hdiag = xp.linalg.diagonal(U) if hasattr(xp.linalg, "diagonal") else xp.diagonal(U)
    elif method == "inverse":
        hdiag = _loop_inverse(xp, Wp, Hp, lam, quantize, name)
    else:
        hdiag = _loop_ridge(xp, Wp, Hp, lam, quantize, name)

    invperm = xp.argsort(perm)
    Q = xp.take(Qp.T, invperm, axis=1)
    Zt = Zp.T
    clipped = Cp.T
    return dict(
        Q=xp.asarray(Q, copy=True), errors=Zt - Qp.T, z=xp.asarray(Zt, copy=True), order=perm,
        saturated=xp.any(clipped, axis=1), clipped=xp.asarray(clipped, copy=True),
        alphabet=cg.alphabet(invperm), hinv_diag=hdiag,
    )


def _loop_cholesky(xp, Wp, U, quantize, bounds, inner):
    """Cholesky form with lazy updates: outer blocks ``[bounds[i], bounds[i+1])`` split in
    sub-blocks of ``inner`` columns; within a sub-block updates are immediate (rank one), then
    the sub-block's scaled errors update the rest of the block, and the block's the rest of W."""
    N, n = Wp.shape
    Err = xp.zeros((N, n), dtype=Wp.dtype, device=device_of(Wp))
    for i1, i2 in zip(bounds[:-1], bounds[1:]):
        for j1 in range(i1, i2, inner):
            j2 = min(j1 + inner, i2)
            for t in range(j1, j2):
                d = quantize(t) / U[t, t]
                Err[t] = d
                if t + 1 < j2:
                    Wp[t + 1:j2] -= U[t, t + 1:j2][:, None] * d[None, :]
            if j2 < i2:
                Wp[j2:i2] -= U[j1:j2, j2:i2].T @ Err[j1:j2]
        if i2 < N:
            Wp[i2:] -= U[i1:i2, i2:].T @ Err[i1:i2]


def _loop_inverse(xp, Wp, Hp, lam, quantize, name):
    """OBS form: keep ``Hinv`` = inverse of the trailing block; update with its column ``t``."""
    N = Wp.shape[0]
    U = inverse_cholesky_upper(xp, Hp, lam, name=name)  # validates positive definiteness
    Hinv = U.T @ U
    hdiag = xp.zeros((N,), dtype=Wp.dtype, device=device_of(Wp))
    for t in range(N):
        e = quantize(t)
        h = Hinv[t, t]
        hdiag[t] = xp.sqrt(h)
        col = Hinv[t + 1:, t]
        Wp[t + 1:] -= (col / h)[:, None] * e[None, :]
        Hinv[t + 1:, t + 1:] -= (col[:, None] * col[None, :]) / h
    return hdiag


def _loop_ridge(xp, Wp, Hp, lam, quantize, name):
    """Ridge form: ``w_{>t} += e_t β_t``, ``β_t = (X_{>t}ᵀX_{>t} + λI)⁻¹ X_{>t}ᵀX_t``."""
    N = Wp.shape[0]
    inverse_cholesky_upper(xp, Hp, lam, name=name)  # validates positive definiteness
    hdiag = xp.zeros((N,), dtype=Wp.dtype, device=device_of(Wp))
    for t in range(N):
        e = quantize(t)
        if t + 1 < N:
            A = Hp[t + 1:, t + 1:]
            b = Hp[t + 1:, t]
            beta = xp.linalg.solve(A, b[:, None])[:, 0]
            Wp[t + 1:] += beta[:, None] * e[None, :]
            c = Hp[t, t] - xp.sum(b * beta)  # Schur complement: 1/U_tt²
        else:
            c = Hp[t, t]
        hdiag[t] = 1 / xp.sqrt(c)
    return hdiag
