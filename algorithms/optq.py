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

from ._backend import contiguous, device_of, is_identity, to_numpy, transpose_copy, uniforms
from .cholesky import inverse_cholesky_upper, prepare_hessian
from .grids import Alphabet, ColumnGrid, Grid
from .ordering import resolve_order
from .result import QuantResult
from .rounding import round_nearest, round_stochastic
from .validation import check_choice, check_int, check_lambda, check_layer

__all__ = ["optq", "METHODS", "ROUNDINGS"]

METHODS = ("blocked", "cholesky", "inverse", "ridge")
ROUNDINGS = ("nearest", "stochastic")
_INNER = 32  # sub-block width of the blocked form (tuned on a 2-core CPU: 8..32 within 10%)


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
    W0, H, lam_used, dead_mask, perm = _start(xp, W, X, grid, lam=lam, percdamp=percdamp, dead=dead, order=order,
                                              rng=rng)
    out = run_columns(
        xp, W0, H, lam_used, perm, grid, rounding=rounding, rng=rng, block_size=block_size,
        method=method, W_fit=W, W_static=W0, name="X",
    )
    return QuantResult(
        lam=lam_used, grid=grid, W0=W0, dead=dead_mask, rounding=rounding, algorithm="optq",
        m=int(X.shape[0]), options=dict(opts, order=order if isinstance(order, str) else "custom",
                                        percdamp=percdamp), **out,
    )


def _start(xp, W, X, grid, *, lam, percdamp, dead, order, rng):
    """The loop's start: ``H_λ`` (GPTQ's dead-feature handling), the starting weights ``W0`` (dead
    features zeroed with ``dead="zero"``), checked against the grid, and the processing order."""
    H, lam_used, dead_mask, diagH = prepare_hessian(xp, X, lam=lam, percdamp=percdamp, dead=dead, dtype=W.dtype)
    W0 = xp.asarray(W, copy=True)
    if dead == "zero" and bool(xp.any(dead_mask)):
        W0[:, dead_mask] = 0
    _check_representable(xp, W0, grid)
    perm = resolve_order(xp, order, diagH, W.shape[1], rng=rng, device=device_of(W))
    return W0, H, lam_used, dead_mask, perm


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
                name="X", first=None, U=None, fused=None):
    """The column loop shared by OPTQ and Qronos; returns the fields of a result.

    ``H`` is the damped Hessian in the original order, ``perm`` the processing order, ``U`` (optional)
    the inverse Cholesky factor of the permuted ``H`` when the caller already has it, ``first``
    an optional ``n``-vector rounded at position 0 instead of the current weight there (Qronos'
    least-squares first coordinate); the error propagated from position 0 is then the current
    weight minus the rounded value.

    ``fused`` (private): ``None`` uses the fused GPU kernel of :mod:`algorithms.fused_gpu` for
    CuPy arrays with ``method="blocked"`` unless the environment variable ``PTQ_FUSED=0`` is set
    (``PTQ_FUSED=require``: the kernel or an error); ``False`` forces the generic array-API loop;
    ``True`` requires the fused kernel.

    Layout: the working matrix ``Wp`` is ``N × n`` (processing order, C-contiguous), so the
    current weights of column ``t`` are the contiguous row ``Wp[t]``; after the loop ``Wp[t]`` holds
    ``z_t`` (every earlier update has reached it by the time it is rounded, and nothing touches it
    afterwards).
    """
    n, N = W0.shape
    dev = device_of(W0)
    dtype = W0.dtype
    ident = is_identity(perm)
    Hp = H if ident else xp.take(xp.take(H, perm, axis=0), perm, axis=1)
    if method in ("blocked", "cholesky"):
        # factor first, so that its temporaries are gone before the N × n working arrays exist
        if U is None:
            U = inverse_cholesky_upper(xp, Hp, lam, name=name)
        hdiag = xp.linalg.diagonal(U) if hasattr(xp.linalg, "diagonal") else xp.diagonal(U)
        hdiag = xp.asarray(hdiag, copy=True)
        # M = D⁻¹U, unit upper triangular (w_s -= e_t M_ts), C-contiguous: U may be a view with
        # negative strides (flipped factor), on which NumPy's matmul would leave BLAS.
        M = contiguous(xp, U / hdiag[:, None])
        del U, Hp
    Wp = transpose_copy(xp, W0)  # N × n working matrix
    if not ident:
        Wp = xp.take(Wp, perm, axis=0)
    cg = ColumnGrid(xp, grid, n=n, N=N, order=perm, W_fit=W_fit, W_static=W_static, dtype=dtype, device=dev)
    Qp = xp.empty((N, n), dtype=dtype, device=dev)
    Cp = xp.empty((N, n), dtype=xp.bool, device=dev)

    use_fused = False
    if method == "blocked":
        from . import fused_gpu

        use_fused = fused_gpu.wanted(xp, fused, dtype, cg)

    E = None
    if use_fused:
        E = fused_gpu.run_blocked(xp, Wp, M, cg, Qp, Cp, rounding=rounding, rng=rng, first=first,
                                  block_size=block_size)
    else:
        Unif = uniforms(xp, rng, (N, n), like=W0) if rounding == "stochastic" else None

        def quantize(t):
            s, zp = cg.params(t, Wp)
            val = first if (t == 0 and first is not None) else Wp[t]
            if Unif is None:
                q, c = round_nearest(xp, val, s, zp, cg.qmin, cg.qmax)
            else:
                q, c = round_stochastic(xp, val, s, zp, cg.qmin, cg.qmax, Unif[t])
            Qp[t] = q
            Cp[t] = c
            return Wp[t] - q  # the error that is propagated

        if method == "cholesky":
            _loop_cholesky(xp, Wp, M, quantize)
        elif method == "blocked":
            E = _loop_blocked(xp, Wp, M, quantize, _block_bounds(N, block_size, cg), _INNER, cg)
        elif method == "inverse":
            hdiag = _loop_inverse(xp, Wp, Hp, lam, quantize, name)
        else:
            hdiag = _loop_ridge(xp, Wp, Hp, lam, quantize, name)

    # z_t = Wp[t]; errors e_t = z_t - q_t. E (the propagated errors) already holds them except at
    # position 0 when Qronos rounds ``first`` there.
    if first is not None:
        Wp[0] = first
    if E is None:
        E = Wp - Qp
    elif first is not None:
        E[0] = Wp[0] - Qp[0]
    invperm = xp.argsort(perm)

    def unpermute(A):  # N × n processing order -> n × N original order (a transposed view)
        return (A if ident else xp.take(A, invperm, axis=0)).T

    # The n × N fields are transposed views of the N × n working arrays (no copy: memory and time
    # matter at 8192², see benchmarks/README.md); they are not C-contiguous.
    return dict(
        Q=unpermute(Qp), errors=E.T, z=Wp.T, order=perm,
        saturated=xp.any(Cp, axis=0), clipped=Cp.T,
        alphabet=Alphabet(scale=unpermute(cg.scale_p), zero=unpermute(cg.zero_p), qmin=cg.qmin, qmax=cg.qmax),
        hinv_diag=hdiag,
    )


def _block_bounds(N, block_size, cg):
    """Outer blocks of the lazy batch form. With on-the-fly groups every group lies inside one
    block (blocks are whole groups), so that a group's current weights are complete when it is
    fitted: the block's rows receive every earlier update when the block starts."""
    step = block_size
    if cg.lazy:
        step = cg.g * max(1, block_size // cg.g)
    return list(range(0, N, step)) + [N]


def _sub_bounds(i1, i2, inner, cg):
    b = set(range(i1, i2, inner))
    if cg.lazy:
        b |= set(range(i1, i2, cg.g))  # a group starts at a sub-block start (its rows are then current)
    return sorted(b) + [i2]


def _loop_blocked(xp, Wp, M, quantize, bounds, inner, cg):
    """Cholesky form with lazy batch updates, ``M = D⁻¹U`` unit upper triangular, ``E`` the
    propagated errors (``N × n``, row ``t`` = column ``t``).

    Outer block ``[i1, i2)``: its rows first receive every earlier error at once,
    ``Wp[i1:i2] -= M[:i1, i1:i2]ᵀ E[:i1]`` (one GEMM with inner dimension ``i1``; "left-looking",
    so the trailing matrix is never rewritten). Inside the block, sub-blocks of ``inner`` columns:
    row ``t`` first receives the errors of the sub-block's earlier columns (one matrix-vector
    product), is rounded, and at the end of the sub-block its errors reach the rest of the block
    as one small GEMM. Each row of ``Wp`` is complete when it is rounded, so the result equals the
    unblocked form up to floating point.
    """
    N, n = Wp.shape
    E = xp.empty((N, n), dtype=Wp.dtype, device=device_of(Wp))
    for i1, i2 in zip(bounds[:-1], bounds[1:]):
        if i1 > 0:
            Wp[i1:i2] -= M[:i1, i1:i2].T @ E[:i1]
        sb = _sub_bounds(i1, i2, inner, cg)
        for j1, j2 in zip(sb[:-1], sb[1:]):
            for t in range(j1, j2):
                if t > j1:
                    Wp[t] -= M[j1:t, t] @ E[j1:t]
                E[t] = quantize(t)
            if j2 < i2:
                Wp[j2:i2] -= M[j1:j2, j2:i2].T @ E[j1:j2]
    return E


def _loop_cholesky(xp, Wp, M, quantize):
    """Cholesky form without blocking: after each column every later row is updated at once,
    ``Wp[t+1:] -= M[t, t+1:] ⊗ e_t`` (the reference for the blocked form)."""
    N = Wp.shape[0]
    for t in range(N):
        e = quantize(t)
        if t + 1 < N:
            Wp[t + 1:] -= M[t, t + 1:][:, None] * e[None, :]


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
