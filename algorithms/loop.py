"""The OPTQ column loop, shared by :func:`~algorithms.optq`, :func:`~algorithms.qronos` and
:func:`~algorithms.optq_trials` (and, through :func:`block_bounds`, the fused GPU kernel).

For all rows at once (rows of ``W`` are independent; they share ``X``), in processing order
``t = 0..N−1``, with ``H_λ⁻¹ = UᵀU`` (``U`` upper triangular, processing order) and
``M = D⁻¹U`` (``D = diag U``, ``M`` unit upper triangular)::

    z_t = w_t                   (the current, already updated weight)
    q_t = Q(z_t)                (nearest, or stochastic rounding Q_s)
    e_t = z_t − q_t
    w_s ← w_s − e_t M_ts        for s > t.

The pieces, in the order a caller uses them:

* :func:`check_options`, :func:`check_representable`: what every entry point checks;
* :func:`start`: ``H_λ`` (GPTQ's dead features), the starting weights ``W0`` and the order π;
* :func:`permute`: ``H_λ`` in processing order; :func:`factor`: what the update form needs of it
  (``M`` and ``diag U`` for the Cholesky forms, ``U`` for the OBS form, ``H_λ`` for the ridge form);
* :func:`run_columns`: the loop itself; the update form is one entry of :data:`FORMS`, the rounding
  one closure (:func:`quantizer`), the fused GPU kernel an alternative implementation of the
  ``"blocked"`` form; :func:`block_bounds` and :func:`sub_bounds` are the lazy-batch layout (the
  only place it is defined);
* :func:`unpermute`: the result's fields, back in the original feature order.

Layout: the working matrix ``Wp`` is ``N × n`` (processing order, C-contiguous), so the current
weights of column ``t`` are the contiguous row ``Wp[t]``; after the loop ``Wp[t]`` holds ``z_t``
(every earlier update has reached it by the time it is rounded, and nothing touches it afterwards).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import fused_gpu
from ._backend import contiguous, device_of, diagonal, is_identity, to_numpy, transpose_copy, uniforms
from .cholesky import inverse_cholesky_upper, prepare_hessian
from .grids import Alphabet, ColumnGrid, Grid
from .ordering import resolve_order
from .rounding import round_nearest, round_stochastic
from .validation import check_choice, check_int

__all__ = ["METHODS", "ROUNDINGS", "KERNELS", "FORMS", "INNER", "Factor", "Columns", "check_options", "check_representable", "check_samples", "start",
           "permute", "factor", "run_columns", "quantizer", "unpermute", "block_bounds", "sub_bounds"]

METHODS = ("blocked", "cholesky", "inverse", "ridge")
ROUNDINGS = ("nearest", "stochastic")
KERNELS = ("auto", "fused", "generic")
INNER = 32  # sub-block width of the blocked form (tuned on a 2-core CPU: 8..32 within 10%)


# -- checks and the loop's start ---------------------------------------------------------------------


def check_options(grid, n, N, rounding, rng, block_size, method, dead, kernel="auto"):
    """The options every entry point shares; returns the ones recorded in ``result.options``."""
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
    check_choice("kernel", kernel, KERNELS)
    if kernel == "fused" and method != "blocked":
        raise ValueError(f"kernel='fused' runs the lazy-batch form only: use method='blocked' (got {method!r})")
    if rounding == "stochastic" and rng is None:
        raise ValueError("rounding='stochastic' needs rng=numpy.random.default_rng(seed)")
    return {"block_size": int(block_size), "method": method, "dead": dead}


def check_samples(samples, X) -> int:
    """``samples`` (the calibration rows ``X`` stands for) checked, or ``X``'s own row count."""
    if samples is None:
        return int(X.shape[0])
    check_int("samples", samples, lo=1)
    return int(samples)


def check_representable(xp, W0, grid: Grid):
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


def start(xp, W, X, grid, *, lam, percdamp, dead, order, rng, samples=None):
    """The loop's start: ``(W0, H_λ, λ, dead_mask, π)``.

    ``H_λ = XᵀX + λI`` with GPTQ's dead-feature handling, the starting weights ``W0`` (dead
    features zeroed with ``dead="zero"``), checked against the grid, and the processing order π
    (``"decreasing"`` sorts by the undamped diagonal GPTQ sorts by, dead features at ``m/2``).
    """
    H, lam_used, dead_mask, diagH = prepare_hessian(xp, X, lam=lam, percdamp=percdamp, dead=dead, dtype=W.dtype,
                                                    samples=samples)
    W0 = xp.asarray(W, copy=True)
    if dead == "zero" and bool(xp.any(dead_mask)):
        W0[:, dead_mask] = 0
    check_representable(xp, W0, grid)
    perm = resolve_order(xp, order, diagH, W.shape[1], rng=rng, device=device_of(W))
    return W0, H, lam_used, dead_mask, perm


# -- the factor ----------------------------------------------------------------------------------------


def permute(xp, H, perm):
    """``H`` with rows and columns in processing order (``H`` itself for the identity)."""
    return H if is_identity(perm) else xp.take(xp.take(H, perm, axis=0), perm, axis=1)


@dataclass(frozen=True, eq=False)
class Factor:
    """What an update form needs of ``H_λ`` (processing order): the Cholesky forms ``M = D⁻¹U`` and
    ``d = diag U``; the OBS form ``U``; the ridge form ``H_λ`` itself (``Hp``)."""

    method: str
    M: object = None
    d: object = None
    U: object = None
    Hp: object = None


def factor(xp, Hp, lam, *, method, name="X", U=None) -> Factor:
    """The :class:`Factor` of the permuted ``Hp`` for the update form ``method``.

    ``U`` (optional): the inverse Cholesky factor of ``Hp`` when the caller already has it. Every
    form checks that ``Hp`` is numerically positive definite (a ``ValueError`` naming the λ needed).
    """
    if U is None:
        U = inverse_cholesky_upper(xp, Hp, lam, name=name)
    if method == "inverse":
        return Factor(method, U=U)
    if method == "ridge":
        return Factor(method, Hp=Hp)
    d = xp.asarray(diagonal(xp, U), copy=True)
    # M = D⁻¹U, unit upper triangular (w_s -= e_t M_ts), C-contiguous: U may be a view with negative
    # strides (flipped factor), on which NumPy's matmul would leave BLAS.
    return Factor(method, M=contiguous(xp, U / d[:, None]), d=d)


# -- the loop ------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Columns:
    """The loop's output, ``N × n`` arrays in processing order: ``Q`` (levels), ``E`` (errors),
    ``Z`` (the rounded values ``z_t``), ``C`` (clip flags); ``cg`` the realised grid; ``hinv_diag``
    the diagonal of ``U``."""

    Q: object
    E: object
    Z: object
    C: object
    cg: ColumnGrid
    hinv_diag: object


def run_columns(xp, W0, F: Factor, perm, grid, *, rounding, rng, block_size, W_fit, W_static, first=None,
                kernel="auto"):
    """The column loop from the starting weights ``W0`` (``n × N``, original order) with the factor
    ``F`` of the permuted ``H_λ`` (:func:`factor`); returns the working arrays in processing order
    (:func:`unpermute` turns them into a result's fields).

    ``first``: an optional ``n``-vector rounded at position 0 instead of the current weight there
    (Qronos' least-squares first coordinate); the error propagated from position 0 is then the
    current weight minus the rounded value. ``W_fit``/``W_static``: the weights GPTQ grids are fitted
    to (per row / static groups).

    ``kernel``: ``"auto"`` runs the fused GPU kernel of :mod:`algorithms.fused_gpu` for CuPy arrays
    with the ``"blocked"`` form when it supports the grid and dtype; ``"generic"`` the array-API
    loop; ``"fused"`` the kernel or an error. The uniforms of stochastic rounding are the same on
    both paths (:mod:`algorithms.streams`).
    """
    n, N = W0.shape
    dev = device_of(W0)
    dtype = W0.dtype
    Wp = transpose_copy(xp, W0)  # N × n working matrix
    if not is_identity(perm):
        Wp = xp.take(Wp, perm, axis=0)
    cg = ColumnGrid(xp, grid, n=n, N=N, order=perm, W_fit=W_fit, W_static=W_static, dtype=dtype, device=dev)
    Qp = xp.empty((N, n), dtype=dtype, device=dev)
    Cp = xp.empty((N, n), dtype=xp.bool, device=dev)
    if F.method == "blocked" and fused_gpu.wanted(xp, kernel, dtype, cg):
        E = fused_gpu.run_blocked(xp, Wp, F.M, cg, Qp, Cp, rounding=rounding, rng=rng, first=first,
                                  bounds=block_bounds(N, min(block_size, fused_gpu.MAX_BLOCK), cg))
        hdiag = F.d
    else:
        quantize = quantizer(xp, Wp, Qp, Cp, cg, rounding=rounding, rng=rng, first=first)
        E, hdiag = FORMS[F.method](xp, Wp, F, quantize, cg=cg, block_size=block_size)
    # z_t = Wp[t]; errors e_t = z_t - q_t. E (the propagated errors) already holds them except at
    # position 0 when Qronos rounds ``first`` there.
    if first is not None:
        Wp[0] = first
    if E is None:
        E = Wp - Qp
    elif first is not None:
        E[0] = Wp[0] - Qp[0]
    return Columns(Q=Qp, E=E, Z=Wp, C=Cp, cg=cg, hinv_diag=hdiag)


def unpermute(xp, cols: Columns, perm) -> dict:
    """The fields of a result from the loop's output: ``Q`` and the alphabet back in the original
    feature order; ``errors``, ``z``, ``clipped`` stay in processing order.

    The ``n × N`` fields are transposed views of the ``N × n`` working arrays (no copy: memory and
    time matter at 8192², see benchmarks/README.md); they are not C-contiguous.
    """
    ident = is_identity(perm)
    invperm = xp.argsort(perm)

    def back(A):  # N × n processing order -> n × N original order (a transposed view)
        return (A if ident else xp.take(A, invperm, axis=0)).T

    cg = cols.cg
    return dict(
        Q=back(cols.Q), errors=cols.E.T, z=cols.Z.T, order=perm,
        saturated=xp.any(cols.C, axis=0), clipped=cols.C.T,
        alphabet=Alphabet(scale=back(cg.scale_p), zero=back(cg.zero_p), qmin=cg.qmin, qmax=cg.qmax),
        hinv_diag=cols.hinv_diag,
    )


def quantizer(xp, Wp, Qp, Cp, cg, *, rounding, rng, first):
    """``quantize(t)``: rounds column ``t`` (the row ``Wp[t]``, or ``first`` at ``t = 0``) onto the
    grid, stores ``q`` and the clip flag in ``Qp[t]``, ``Cp[t]`` and returns the error to propagate,
    ``Wp[t] − q``. Stochastic rounding draws its ``N × n`` uniforms from ``rng`` once, up front."""
    U = uniforms(xp, rng, tuple(Wp.shape), like=Wp) if rounding == "stochastic" else None

    def quantize(t):
        s, zp = cg.params(t, Wp)
        val = first if (t == 0 and first is not None) else Wp[t]
        if U is None:
            q, c = round_nearest(xp, val, s, zp, cg.qmin, cg.qmax)
        else:
            q, c = round_stochastic(xp, val, s, zp, cg.qmin, cg.qmax, U[t])
        Qp[t] = q
        Cp[t] = c
        return Wp[t] - q

    return quantize


# -- the lazy-batch layout -----------------------------------------------------------------------------


def block_bounds(N: int, block_size: int, cg) -> list:
    """Outer blocks ``[0, b, 2b, …, N]`` of the lazy batch form (also the fused kernel's blocks).
    With on-the-fly groups every group lies inside one block (blocks are whole groups), so that a
    group's current weights are complete when it is fitted: the block's rows receive every earlier
    update when the block starts."""
    step = block_size
    if cg.lazy:
        step = cg.g * max(1, block_size // cg.g)
    return list(range(0, N, step)) + [N]


def sub_bounds(i1: int, i2: int, inner: int, cg) -> list:
    """Sub-blocks of ``inner`` columns inside the block ``[i1, i2)``; a group starts at a sub-block
    start (its rows are then current)."""
    b = set(range(i1, i2, inner))
    if cg.lazy:
        b |= set(range(i1, i2, cg.g))
    return sorted(b) + [i2]


# -- the update forms: (xp, Wp, F, quantize, cg, block_size) -> (E or None, diag U) ------------------------


def _blocked(xp, Wp, F, quantize, *, cg, block_size):
    """Cholesky form with lazy batch updates; ``E`` the propagated errors (``N × n``, row ``t`` =
    column ``t``).

    Outer block ``[i1, i2)``: its rows first receive every earlier error at once,
    ``Wp[i1:i2] -= M[:i1, i1:i2]ᵀ E[:i1]`` (one GEMM with inner dimension ``i1``; "left-looking",
    so the trailing matrix is never rewritten). Inside the block, sub-blocks of :data:`INNER`
    columns: row ``t`` first receives the errors of the sub-block's earlier columns (one
    matrix-vector product), is rounded, and at the end of the sub-block its errors reach the rest of
    the block as one small GEMM. Each row of ``Wp`` is complete when it is rounded, so the result
    equals the unblocked form up to floating point.
    """
    M = F.M
    N, n = Wp.shape
    E = xp.empty((N, n), dtype=Wp.dtype, device=device_of(Wp))
    bounds = block_bounds(N, block_size, cg)
    for i1, i2 in zip(bounds[:-1], bounds[1:]):
        if i1 > 0:
            Wp[i1:i2] -= M[:i1, i1:i2].T @ E[:i1]
        sb = sub_bounds(i1, i2, INNER, cg)
        for j1, j2 in zip(sb[:-1], sb[1:]):
            for t in range(j1, j2):
                if t > j1:
                    Wp[t] -= M[j1:t, t] @ E[j1:t]
                E[t] = quantize(t)
            if j2 < i2:
                Wp[j2:i2] -= M[j1:j2, j2:i2].T @ E[j1:j2]
    return E, F.d


def _cholesky(xp, Wp, F, quantize, *, cg, block_size):
    """Cholesky form without blocking: after each column every later row is updated at once,
    ``Wp[t+1:] -= M[t, t+1:] ⊗ e_t`` (the reference for the blocked form)."""
    M = F.M
    N = Wp.shape[0]
    for t in range(N):
        e = quantize(t)
        if t + 1 < N:
            Wp[t + 1:] -= M[t, t + 1:][:, None] * e[None, :]
    return None, F.d


def _inverse(xp, Wp, F, quantize, *, cg, block_size):
    """OBS form: keep ``Hinv`` = inverse of the trailing block (``UᵀU`` at the start); update with its
    column ``t``: ``w ← w − e_t Hinv[:, t]/Hinv[t, t]``, then downdate ``Hinv``."""
    N = Wp.shape[0]
    Hinv = F.U.T @ F.U
    hdiag = xp.zeros((N,), dtype=Wp.dtype, device=device_of(Wp))
    for t in range(N):
        e = quantize(t)
        h = Hinv[t, t]
        hdiag[t] = xp.sqrt(h)
        col = Hinv[t + 1:, t]
        Wp[t + 1:] -= (col / h)[:, None] * e[None, :]
        Hinv[t + 1:, t + 1:] -= (col[:, None] * col[None, :]) / h
    return None, hdiag


def _ridge(xp, Wp, F, quantize, *, cg, block_size):
    """Ridge form: ``w_{>t} += e_t β_t``, ``β_t = (X_{>t}ᵀX_{>t} + λI)⁻¹ X_{>t}ᵀX_t`` (one solve per
    column, with the trailing block of ``H_λ``)."""
    Hp = F.Hp
    N = Wp.shape[0]
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
    return None, hdiag


#: the update forms of ``method=``, each ``(xp, Wp, F, quantize, *, cg, block_size) -> (E or None, diag U)``
FORMS = {"blocked": _blocked, "cholesky": _cholesky, "inverse": _inverse, "ridge": _ridge}
