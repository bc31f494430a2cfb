"""The floating-point deviation a run's working precision explains, measured on the run's own inputs.

A claim is about the exact-arithmetic algorithm. A run computed in finite precision is judged by
two float64 re-evaluations of its output ``Q`` and one measurement:

* **Exact re-evaluation** (float64). The errors an OPTQ column loop must have made to produce
  ``Q`` are *implied* by it: ``(w₀ − q)_π = Mᵀe*`` (``M`` unit upper triangular from the loop
  data, ``λ`` and the order), and ``z* = q + e*``. Every hypothesis (on the grid, nearest
  rounding, unbiased stochastic rounding) and every bound is judged on ``(e*, z*)`` and on ``Q``
  itself, never on what the quantizer reports about itself.
* **Reference deviation** (working precision). The same column loop is run in the run's working
  precision (GPTQ's arithmetic: ``H_λ``, its Cholesky factor, the inverse, the upper Cholesky factor
  of the inverse, rank-one updates in lazy blocks; Qronos: ``ŵ`` solved in that precision) with the
  run's rounding decisions ``q`` taken as given, giving ``z_ref``; ``d_ref = |z_ref − z*|`` is what
  that precision does to ``z`` on these inputs.
* **Allowance** ``ν_{r,t} = F·max_{t'} d_ref_{r,t'} + U·eps(p)·(|z*_{r,t}| + |q_{r,t}| + δ_{r,t})``:
  the entries of one row share the factorization's error, whose realisation differs between
  arrangements of the same arithmetic (blocked or not, another factorization path, another BLAS),
  so the row's maximum is used; ``F`` (:data:`F_REF`) covers those differences (measured: the
  package's own float32 loop stays within 2.1× the row maximum of the reference over seven synthetic
  data families, cond(H_λ) from 1e2 to 6e8, and within 32× on the linear layers of SmolLM2-135M,
  where 16 was too small on 3 of 2961 cells); the last term is the rounding of ``z/δ`` and the storage
  of ``q`` in precision ``p`` (a weight exactly on a half step rounds either way in float32).
* A run that carries its own loop record is judged with its *measured* deviation
  ``|z_record − z*|`` (exact, since the loop rounded its own ``z``), after checking that the record
  is plausible (within the reference allowance).

A run whose allowance exceeds :data:`NU_MAX` of a step somewhere is out of scope "for precision"
(with the number), never a pass. A run that reports its own loop record (``z``, ``e``) must agree
with the re-evaluation within the allowance (hypothesis ``record``).

float16 and bfloat16 have no LAPACK: their reference runs in float32 and ``d_ref`` is scaled by
``eps(p)/eps(float32)`` (stated in the verdict).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from ._array import as64, eps

__all__ = ["F_REF", "U_ULP", "NU_MAX", "BLOCK", "reference_z", "implied_errors", "allowance"]

#: factor on the measured reference deviation (other arrangements of the same arithmetic)
F_REF = 64.0
#: ulps of |z| + |q| + δ for the rounding of z/δ and the storage of q
U_ULP = 4.0
#: above this allowance (in steps) a row is out of scope for precision
NU_MAX = 2e-3
#: lazy-batch block size of the reference loop
BLOCK = 128

_LAPACK = {"float32": np.float32, "float64": np.float64}


def _work_dtype(precision: str):
    if precision in _LAPACK:
        return _LAPACK[precision], 1.0
    if precision in ("float16", "bfloat16"):
        e = {"float16": 2.0**-10, "bfloat16": 2.0**-7}[precision]
        return np.float32, e / float(np.finfo(np.float32).eps)
    raise ValueError(f"precision must be one of float64, float32, float16, bfloat16; got {precision!r}")


def eps_of(precision: str) -> float:
    """Machine epsilon of a working precision name (bfloat16 included)."""
    if precision == "bfloat16":
        return 2.0**-7
    return eps(precision)


def implied_errors(Mm, w0p, Qp, *, first=None):
    """``e*`` solving ``(w₀ − q)_π = Mᵀe*`` (float64; rows of ``w0p``/``Qp`` in processing order)."""
    D = as64(w0p) - as64(Qp)
    return scipy.linalg.solve_triangular(Mm.T, D.T, lower=True, unit_diagonal=True, check_finite=False).T


def _upper_inverse_factor(D, lam, dead_mask, m, dt):
    """GPTQ's arithmetic in dtype ``dt``: ``U`` upper with ``H_λ⁻¹ = UᵀU`` (processing order);
    ``None`` when a factorization fails in that precision."""
    H = D.T @ D
    if dead_mask is not None and dead_mask.any():
        idx = np.flatnonzero(dead_mask)
        H[idx, idx] = dt(m / 2.0)
    H[np.diag_indices_from(H)] += dt(lam)
    try:
        L = scipy.linalg.cholesky(H, lower=True, check_finite=False)
        Hinv = scipy.linalg.cho_solve((L, True), np.eye(H.shape[0], dtype=dt), check_finite=False)
        U = scipy.linalg.cholesky(Hinv, lower=False, check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    if U.dtype != dt or not np.all(np.isfinite(U)) or np.any(np.diag(U) <= 0):
        return None
    return U


def reference_factor(Xq, lam, perm, precision: str, *, dead: str = "keep"):
    """The column loop's update matrix in ``precision`` (processing order): row ``t`` is
    ``U_t,: / U_tt`` with ``U`` upper triangular, ``H_λ⁻¹ = UᵀU``; ``None`` when the working
    precision cannot factor ``H_λ``. It depends on the data, ``λ`` and the order only, so the
    rows of a run checked in batches share it."""
    dt, _ = _work_dtype(precision)
    X = np.asarray(Xq)
    D = X[:, perm].astype(dt)
    dead_mask = ~np.any(D != 0, axis=0) if dead == "zero" else None
    U = _upper_inverse_factor(D, lam, dead_mask, X.shape[0], dt)
    if U is None:
        return None
    return U / np.diag(U)[:, None]  # row t: U_ts / U_tt


def reference_z(Xq, lam, perm, w0p, Qp, precision: str, *, dead: str = "keep", first_e=None, factor=None):
    """``z_ref`` (``n × N``, processing order, float64) of the column loop run in ``precision`` with
    the rounding decisions ``Qp`` given, starting from ``w0p``; ``None`` when the working precision
    cannot factor ``H_λ``. ``first_e``: the error propagated from the first column instead of
    ``z_0 − q_0`` (Qronos' original variant). ``factor``: :func:`reference_factor` of the same
    data if already computed."""
    dt, _ = _work_dtype(precision)
    A = reference_factor(Xq, lam, perm, precision, dead=dead) if factor is None else factor
    if A is None:
        return None
    z = np.array(w0p, dtype=dt, order="C", copy=True)
    q = np.asarray(Qp).astype(dt)
    n, N = z.shape
    for b0 in range(0, N, BLOCK):
        b1 = min(N, b0 + BLOCK)
        k = b1 - b0
        # the block's columns as contiguous rows: the same products and subtractions, element by
        # element, as updating the columns of z in place, with contiguous memory access
        zb = np.ascontiguousarray(z[:, b0:b1].T)
        qb = np.ascontiguousarray(q[:, b0:b1].T)
        Eb = np.empty((k, n), dtype=dt)
        for j in range(k):
            t = b0 + j
            e = zb[j] - qb[j]
            if t == 0 and first_e is not None:
                e = np.asarray(first_e).astype(dt)
            Eb[j] = e
            if j + 1 < k:
                zb[j + 1:] -= A[t, t + 1:b1, None] * e[None, :]
        z[:, b0:b1] = zb.T
        if b1 < N:
            z[:, b1:] -= np.ascontiguousarray(Eb.T) @ A[b0:b1, b1:]  # the layout (and BLAS call) of an n × k E
    return z.astype(np.float64)


def w_hat_system(X, Xt, lam, precision: str):
    """``(X̃ᵀX̃ + λI, X̃ᵀX + λI)`` in the working precision: the normal equations of ``ŵ``
    (shared by the rows of a run checked in batches)."""
    dt, _ = _work_dtype(precision)
    X, Xt = (np.asarray(a).astype(dt) for a in (X, Xt))
    N = X.shape[1]
    A = Xt.T @ Xt
    A[np.diag_indices(N)] += dt(lam)
    Bm = Xt.T @ X
    Bm[np.diag_indices(N)] += dt(lam)
    return A, Bm


def w_hat_in(W, X, Xt, lam, precision: str, *, system=None):
    """``ŵ`` solved in the working precision (normal equations, as Qronos implementations do);
    ``None`` when that precision cannot solve it. ``system``: :func:`w_hat_system` of the same
    data if already computed."""
    dt, _ = _work_dtype(precision)
    A, Bm = w_hat_system(X, Xt, lam, precision) if system is None else system
    W = np.asarray(W).astype(dt)
    try:
        V = scipy.linalg.solve(A, Bm @ W.T, assume_a="pos", check_finite=False)
    except (np.linalg.LinAlgError, ValueError):
        return None
    if not np.all(np.isfinite(V)):
        return None
    return V.T.astype(np.float64)


def allowance(d_ref, z_star, Qp, delta_p, precision: str):
    """``ν`` (``n × N``): ``F_REF·(max of d_ref over the row) + U_ULP·eps·(|z*| + |q| + δ)``;
    ``inf`` everywhere when ``d_ref`` is ``None`` (the precision could not factor ``H_λ``)."""
    _, scale = _work_dtype(precision)
    ulp = U_ULP * eps_of(precision) * (np.abs(z_star) + np.abs(Qp) + delta_p)
    if d_ref is None:
        return np.full_like(z_star, np.inf)
    d = np.where(np.isfinite(d_ref), d_ref, np.inf) * scale
    return F_REF * np.max(d, axis=1, keepdims=True) + ulp
