"""Deliberately broken quantizers (mutants) that the audit must flag, and the correct ones it must not.

Every mutant has the audit signature ``f(W, X, *, grid, lam, rng[, X_tilde]) -> Q`` and is the
plain OPTQ/Qronos loop below with one bug, as they occur in practice:

=========================  =============================================================================
``wrong_sign``             the error is added to the later weights instead of subtracted
``missing_damping``        λ is ignored (a negligible jitter instead)
``order_not_undone``       processed in act_order, the result is returned in processing order
``off_by_one``             the update coefficients of column t are applied one column late
``biased_stochastic``      stochastic rounding rounds up with probability frac + 0.15
``lower_factor``           the lower Cholesky factor of H⁻¹ is used where the upper one is needed
``skipped_lazy_update``    the lazy block update of the later blocks is skipped
``stale_inverse``          the inverse Hessian is not downdated across blocks (OBS form)
``group_scales_original``  on-the-fly group scales fitted on the original instead of the current weights
``no_error_feedback``      plain round-to-nearest declared as OPTQ
``qronos_without_ls``      Qronos without the least-squares step (OPTQ on X̃ from w)
``qronos_first_from_ls``   original Qronos that rounds ŵ₁ instead of the least-squares value y₁
=========================  =============================================================================

The reference loop (``bug=None``) equals :func:`algorithms.optq` (tested), so each mutant differs
from a correct implementation by exactly its bug.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from .refgrid import minmax_fit

__all__ = ["MUTANTS", "CORRECT", "reference_loop"]


def _levels(grid, W):
    """Per-row (or per-entry) step/zero/range of a grid for the plain loop (symmetric and GPTQ)."""
    if grid.kind == "symmetric":
        d = np.asarray(grid.delta, dtype=np.float64)
        d = np.broadcast_to(d.reshape(-1, 1) if d.ndim else d, (W.shape[0], 1))[:, 0]
        lo, hi = grid.int_range()
        return d, np.zeros(W.shape[0]), lo, hi
    s, z = minmax_fit(W, grid)
    return s, z, 0, grid.maxq


def _round(z, s, zp, lo, hi, u=None, bias=0.0):
    x = z / s
    if u is None:
        k = np.round(x)
    else:
        f = np.floor(x)
        k = f + (u < np.clip(x - f + bias, 0, 1))
    k = np.clip(k + zp, lo, hi)
    return s * (k - zp)


def reference_loop(W, X, *, grid, lam, rng=None, order="natural", rounding="nearest", block=8, bug=None,
                   start=None, first=None):
    """A plain OPTQ column loop (Cholesky form with lazy blocks) with an optional ``bug``.

    ``start``: the weights the loop starts from (default ``W``); ``first``: the value rounded at the
    first position instead (Qronos' original variant). Dead features are zeroed as GPTQ does.
    """
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    n, N = W.shape
    H = X.T @ X
    dead = np.diag(H) == 0
    H[dead, dead] = X.shape[0] / 2
    lam_used = 1e-9 * float(np.mean(np.diag(H))) if bug == "missing_damping" else lam
    H = H + lam_used * np.eye(N)
    d = np.diag(H)
    perm = np.argsort(-d, kind="stable") if order == "decreasing" else np.arange(N)
    w = (W if start is None else np.asarray(start, dtype=np.float64)).copy()
    if start is None:
        w[:, dead] = 0.0
    w = w[:, perm]
    Hp = H[np.ix_(perm, perm)]
    Hinv = np.linalg.inv(Hp)
    L = np.linalg.cholesky(Hinv)
    U = L if bug == "lower_factor" else L.T  # H⁻¹ = UᵀU with U = Lᵀ upper
    s_row, z_row, lo, hi = _levels(grid, np.asarray(W, dtype=np.float64))
    g = grid.group_size if grid.kind == "gptq" else None
    S = np.repeat(s_row[:, None], N, axis=1)
    Zp = np.repeat(z_row[:, None], N, axis=1)
    if g and grid.static_groups:
        W0 = np.asarray(W, dtype=np.float64).copy()
        W0[:, dead] = 0.0
        for j in range(0, N, g):
            s, z = minmax_fit(W0[:, j:j + g], grid)
            S[:, j:j + g], Zp[:, j:j + g] = s[:, None], z[:, None]
        S, Zp = S[:, perm], Zp[:, perm]
    W_orig_p = np.asarray(W, dtype=np.float64)[:, perm]
    U_draw = rng.random((N, n)) if rounding == "stochastic" else None
    bias = 0.15 if bug == "biased_stochastic" else 0.0
    Q = np.zeros((n, N))
    Hinv_stale = Hinv.copy()
    Hcur = Hinv.copy()
    for i1 in range(0, N, block):
        i2 = min(i1 + block, N)
        E = np.zeros((n, i2 - i1))
        for t in range(i1, i2):
            if g and not grid.static_groups and t % g == 0:
                src = W_orig_p if bug == "group_scales_original" else w
                s, z = minmax_fit(src[:, t:t + g], grid)
                S[:, t:t + g], Zp[:, t:t + g] = s[:, None], z[:, None]
            val = first if (t == 0 and first is not None) else w[:, t]
            q = _round(val, S[:, t], Zp[:, t], lo, hi, None if U_draw is None else U_draw[t], bias)
            Q[:, t] = q
            e = w[:, t] - q
            if bug == "no_error_feedback":
                continue
            if bug == "stale_inverse":
                # OBS form whose inverse is downdated inside a block but restored at each block start
                if t == i1:
                    Hcur = Hinv_stale.copy()
                col = Hcur[t, t + 1:]
                w[:, t + 1:] -= np.outer(e / Hcur[t, t], col)
                Hcur[t + 1:, t + 1:] -= np.outer(Hcur[t + 1:, t], Hcur[t, t + 1:]) / Hcur[t, t]
                continue
            dcoef = U[t, t + 1:i2] / U[t, t]
            if bug == "off_by_one":
                dcoef = U[t, t:i2 - 1] / U[t, t]
            upd = np.outer(e, dcoef)
            w[:, t + 1:i2] += upd if bug == "wrong_sign" else -upd
            E[:, t - i1] = e / U[t, t]
        if bug in ("no_error_feedback", "stale_inverse", "skipped_lazy_update"):
            continue
        upd = E @ U[i1:i2, i2:]
        w[:, i2:] += upd if bug == "wrong_sign" else -upd
    if bug == "order_not_undone":
        return Q
    return Q[:, np.argsort(perm)]


def _w_hat(W, X, Xt, lam):
    N = W.shape[1]
    return np.linalg.solve(Xt.T @ Xt + lam * np.eye(N), (Xt.T @ X + lam * np.eye(N)) @ W.T).T


def _qronos_loop(W, X, *, X_tilde, grid, lam, rng=None, variant="original", bug=None, rounding="nearest"):
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Xt = np.asarray(X_tilde, dtype=np.float64)
    if bug == "qronos_without_ls":
        return reference_loop(W, Xt, grid=grid, lam=lam, rng=rng, rounding=rounding, start=W)
    What = _w_hat(W, X, Xt, lam)
    first = None
    if variant == "original" and bug != "qronos_first_from_ls":
        x1 = Xt[:, 0]
        first = W[:, 0] + ((X - Xt) @ W.T).T @ x1 / float(x1 @ x1)
    return reference_loop(W, Xt, grid=grid, lam=lam, rng=rng, rounding=rounding, start=What, first=first)


def _optq_mutant(bug, rounding="nearest", order="natural"):
    def f(W, X, *, grid, lam, rng=None):
        return reference_loop(W, X, grid=grid, lam=lam, rng=rng, order=order, rounding=rounding, bug=bug)

    f.__name__ = f"mutant_{bug}"
    return f


def _qronos_mutant(bug, variant="original"):
    def f(W, X, *, X_tilde, grid, lam, rng=None):
        return _qronos_loop(W, X, X_tilde=X_tilde, grid=grid, lam=lam, rng=rng, variant=variant, bug=bug)

    f.__name__ = f"mutant_{bug}"
    return f


#: name -> (quantizer, audit keywords: what it declares itself to be)
MUTANTS = {
    "wrong_sign": (_optq_mutant("wrong_sign"), dict(kind="optq")),
    "missing_damping": (_optq_mutant("missing_damping"), dict(kind="optq")),
    "order_not_undone": (_optq_mutant("order_not_undone", order="decreasing"), dict(kind="optq", order="decreasing")),
    "off_by_one": (_optq_mutant("off_by_one"), dict(kind="optq")),
    "biased_stochastic": (_optq_mutant("biased_stochastic", rounding="stochastic"), dict(kind="optq", rounding="stochastic")),
    "lower_factor": (_optq_mutant("lower_factor"), dict(kind="optq")),
    "skipped_lazy_update": (_optq_mutant("skipped_lazy_update"), dict(kind="optq")),
    "stale_inverse": (_optq_mutant("stale_inverse"), dict(kind="optq")),
    "group_scales_original": (_optq_mutant("group_scales_original"), dict(kind="optq")),
    "no_error_feedback": (_optq_mutant("no_error_feedback"), dict(kind="optq")),
    "qronos_without_ls": (_qronos_mutant("qronos_without_ls"), dict(kind="qronos-original")),
    "qronos_first_from_ls": (_qronos_mutant("qronos_first_from_ls"), dict(kind="qronos-original")),
}


def _algo_optq(W, X, *, grid, lam, rng=None, order="natural", rounding="nearest"):
    import algorithms

    return algorithms.optq(W, X, grid=grid, lam=lam, rng=rng, order=order, rounding=rounding).Q


def _algo_qronos(W, X, *, X_tilde, grid, lam, rng=None, variant="projection", rounding="nearest"):
    import algorithms

    return algorithms.qronos(W, X, X_tilde, grid=grid, lam=lam, rng=rng, variant=variant, rounding=rounding).Q


#: the package's own algorithms under the same signature: the audit must never flag them
CORRECT = {
    "optq": (partial(_algo_optq), dict(kind="optq")),
    "optq_act_order": (partial(_algo_optq, order="decreasing"), dict(kind="optq", order="decreasing")),
    "optq_stochastic": (partial(_algo_optq, rounding="stochastic"), dict(kind="optq", rounding="stochastic")),
    "qronos_projection": (partial(_algo_qronos), dict(kind="qronos-projection")),
    "qronos_original": (partial(_algo_qronos, variant="original"), dict(kind="qronos-original")),
    "reference_loop": (partial(reference_loop), dict(kind="optq")),
}
