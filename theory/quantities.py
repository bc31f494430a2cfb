"""The exact quantities of SPEC §3, computed stably in float64.

Notation. ``X`` is ``m × N`` (rows = samples), ``λ ≥ 0``, ``H_λ = XᵀX + λI`` and
``X_λ = [X; √λ I]`` (so ``X_λᵀX_λ = H_λ``). An order ``π`` lists the features in processing order;
every vector indexed by ``t`` below is in **processing order** (``t = 0`` is feature ``π[0]``).
A named order (``"decreasing"``/``"increasing"``) is the one ``algorithms.optq`` runs
(:func:`order_key`: GPTQ's diagonal, dead features at ``m/2``), whatever convention ``dead`` the
``H_λ`` of a function uses; :func:`c_tilde` sorts ``X̃`` as Qronos does.

* ``c_t = 1/U_tt²`` where ``H_λ⁻¹ = UᵀU`` (``U`` upper triangular, processing order). Equivalently
  the Schur complement of the trailing block, ``c_t = H_tt − H_{t,>t} H_{>t,>t}⁻¹ H_{>t,t}``, and
  ``c_t = dist²((X_λ)_t, span (X_λ)_{>t}) = λ + min_v ‖X_t − X_{>t}v‖² + λ‖v‖²``.
  Computed from ONE Cholesky factorization of the order-reversed Hessian ``J H_λ J = L Lᵀ``:
  ``c_t = L_{t't'}²`` with ``t' = N−1−t`` (the squared diagonal read backwards). ``H_λ`` is never
  inverted. ``Π_t c_t = det H_λ`` (every order), see :func:`logdet`.
* ``M = D⁻¹U`` (``D = diag U``), unit upper triangular; OPTQ's result satisfies ``w − q = Mᵀe``.
  ``M = J L̃⁻¹ J`` with ``L̃ = L·diag(L)⁻¹`` (one unit-triangular solve).
* ``B = I − M``, the drift: ``z_t − w_t = Σ_{j<t} e_j B_jt``. Row ``t`` of ``B`` right of the
  diagonal is the ridge vector ``β_t = argmin_v ‖X_t − X_{>t}v‖² + λ‖v‖²`` (the ridge form of
  OPTQ), so ``dc_t/dλ = 1 + ‖B_{t,:}‖²``; the drift bound of T3 uses the column norms ``‖B_{:,t}‖``.
* ``R = X_λ Mᵀ`` (``(m+N) × N``): orthogonal columns with ``‖R_{:,t}‖² = c_t``; ``X(w − q) =
  R^X e`` with the X-block ``R^X = X_π Mᵀ``.
* Qronos: ``ŵ = (X̃ᵀX̃ + λI)⁻¹(X̃ᵀX + λI)w`` and ``ρ_λ² = min_v ‖Xw − X̃v‖² + λ‖w − v‖²``
  (attained at ``ŵ``); ``c̃_t`` is ``c_t`` of ``X̃``.

Dead features (``X_t = 0``). They are decoupled in ``H_λ`` (row and column ``t`` are ``λ e_t``), so
they are split off exactly: ``M``, ``B``, ``R`` have the identity there and do not depend on any
convention, and ``c_t`` of a dead feature is ``λ`` (``dead="keep"``, the true ``H_λ``; ``0`` when
``λ = 0``, which is therefore allowed) or ``m/2 + λ`` (``dead="zero"``: GPTQ sets the undamped
diagonal to its "1" in ``(2/m)XᵀX`` units, i.e. ``m/2`` in units of ``XᵀX``, and zeroes the weights).
The two conventions give the same ``c_t`` on every live feature, and OPTQ's errors vanish on dead
features when their weights start at 0, so ``Σ_t e_t² c_t`` (identity I1) is the same under both.
The bounds of T1 use the true ``H_λ`` (``dead="keep"``), which gives the smaller ``Σ c_t``.

Every function accepts arrays of any library and returns NumPy float64 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ._array import as64

__all__ = [
    "resolve_order",
    "order_key",
    "dead_features",
    "gram",
    "hessian",
    "Factor",
    "factor",
    "c",
    "logdet",
    "M",
    "B",
    "drift",
    "dc_dlam",
    "R",
    "cond",
    "w_hat",
    "rho2",
    "c_tilde",
    "y1",
    "c_explicit",
    "c_column",
]

DEAD = ("keep", "zero")


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
def _check_X(X, name="X"):
    X = as64(X)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array (m samples × N features), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or Inf entries")
    return X


def _check_lam(lam):
    lam = float(lam)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be a finite number ≥ 0 (H_λ = XᵀX + λI), got {lam}")
    return lam


def _check_dead(dead):
    if dead not in DEAD:
        raise ValueError(f"dead must be 'keep' (true H_λ) or 'zero' (GPTQ: diagonal m/2 on dead features), got {dead!r}")
    return dead


def order_key(X, *, dead: str = "zero") -> np.ndarray:
    """The diagonal that ``"decreasing"``/``"increasing"`` sort by: ``‖X_t‖²`` (float64), and, with
    ``dead="zero"``, GPTQ's dead-feature value ``m/2`` (its "1" of ``(2/m)XᵀX``) where ``‖X_t‖² = 0``
    (GPTQ's test; it differs from "the column is identically zero" only where squares underflow).

    This is the definition :func:`algorithms.optq` runs (it sorts by the undamped diagonal of its
    Hessian after the dead-feature fix; ``dead="keep"`` leaves the dead diagonal at 0, as
    ``optq(dead="keep")`` and Qronos on ``X̃`` do). Written here on its own (``theory`` does not
    import ``algorithms``); a test checks that both give the same permutation. The algorithms
    compute the diagonal in the data's dtype, so features whose norms agree only to within that
    dtype's rounding (and are not exact duplicates) may be ordered differently by the two.
    """
    _check_dead(dead)
    X = as64(X)
    d = np.sum(X**2, axis=0)
    if dead == "zero":
        d = np.where(d == 0, X.shape[0] / 2.0, d)
    return d


def resolve_order(order, N: int, X=None, *, dead: str = "zero") -> np.ndarray:
    """The permutation ``π`` (int64, ``π[t]`` = feature processed at position ``t``).

    ``order``: ``None``/``"natural"``, ``"decreasing"``/``"increasing"`` (by :func:`order_key` of
    ``X`` with the dead-feature convention ``dead``, stable sort, ties by lower index; needs ``X``) or
    an explicit permutation of ``range(N)``. The default ``dead="zero"`` is the order
    ``algorithms.optq(order=...)`` runs with its default ``dead="zero"``; Qronos sorts ``X̃`` with
    ``dead="keep"`` (:func:`c_tilde` does).
    """
    if order is None or (isinstance(order, str) and order == "natural"):
        return np.arange(N, dtype=np.int64)
    if isinstance(order, str):
        if order not in ("decreasing", "increasing"):
            raise ValueError(f"order must be 'natural', 'decreasing', 'increasing' or a permutation, got {order!r}")
        if X is None:
            raise ValueError(f"order={order!r} needs X to sort by column norms")
        d = order_key(X, dead=dead)
        return np.argsort(-d if order == "decreasing" else d, kind="stable").astype(np.int64)
    p = np.asarray(as64(order) if not np.issubdtype(np.asarray(order).dtype, np.integer) else order)
    if p.ndim != 1 or p.shape[0] != N:
        raise ValueError(f"order must be a permutation of range({N}), got shape {p.shape}")
    if not np.all(p == np.round(p)):
        raise ValueError("order must hold integers")
    p = p.astype(np.int64)
    if not np.array_equal(np.sort(p), np.arange(N)):
        raise ValueError(f"order must hold each of 0..{N - 1} exactly once")
    return p


def dead_features(X) -> np.ndarray:
    """Boolean mask of the features whose column of ``X`` is identically zero."""
    return ~np.any(as64(X) != 0, axis=0)


def gram(X) -> np.ndarray:
    """``XᵀX`` in float64 (original feature order), to share between :func:`hessian` and :func:`factor`."""
    X = _check_X(X)
    return X.T @ X


def hessian(X, lam, *, dead: str = "keep", gram=None) -> np.ndarray:
    """``H_λ = XᵀX + λI`` in float64; ``dead="zero"`` puts ``m/2`` on the undamped diagonal of dead features.
    ``gram``: ``XᵀX`` if already computed (:func:`gram`)."""
    X = _check_X(X)
    lam = _check_lam(lam)
    _check_dead(dead)
    H = X.T @ X if gram is None else np.array(gram, dtype=np.float64)
    if dead == "zero":
        dm = dead_features(X)
        H[dm, dm] = X.shape[0] / 2.0
    H[np.diag_indices_from(H)] += lam
    return H


# ------------------------------------------------------------------------------------------------
# the factorization
# ------------------------------------------------------------------------------------------------
def _reverse_both_axes(A: np.ndarray, chunk: int = 1 << 20) -> np.ndarray:
    """``A[::-1, ::-1]`` as a contiguous array, in ``A``'s own memory when ``A`` is contiguous
    (reversing both axes of a C- or F-contiguous matrix reverses its memory order; swapped in
    pieces of ``chunk`` numbers, so the only temporary is one piece)."""
    f = np.ravel(A, order="K")
    if not np.shares_memory(f, A):
        return np.ascontiguousarray(A[::-1, ::-1])
    n = f.size
    h = n // 2
    for i in range(0, h, chunk):
        j = min(i + chunk, h)
        a = f[i:j].copy()
        f[i:j] = f[n - j:n - i][::-1]
        f[n - j:n - i] = a[::-1]
    return A


@dataclass(frozen=True, eq=False)
class Factor:
    """One Cholesky factorization of the order-reversed live block of ``H_λ``, and what follows from it.

    Attributes: ``perm`` (processing order), ``lam``, ``dead`` (convention for ``c`` of dead
    features), ``m``, ``live`` (processing order: not dead), ``L`` (lower Cholesky factor of
    ``J H_live J``), ``c`` (processing order).
    """

    perm: np.ndarray
    lam: float
    dead: str
    m: int
    live: np.ndarray
    L: np.ndarray
    c: np.ndarray

    @property
    def N(self) -> int:
        return int(self.perm.shape[0])

    def M(self) -> np.ndarray:
        """``M = D⁻¹U`` (unit upper triangular, processing order)."""
        N = self.N
        k = self.L.shape[0]
        if k == 0:
            return np.eye(N)
        Lt = self.L / np.diag(self.L)[None, :]  # unit lower triangular
        Linv = scipy.linalg.solve_triangular(Lt, np.eye(k), lower=True, unit_diagonal=True, check_finite=False,
                                             overwrite_b=True)
        del Lt
        if k == N:  # every feature live (the usual case): reversed in place, no second N × N array
            return _reverse_both_axes(Linv)
        Ml = Linv[::-1, ::-1]
        Mfull = np.eye(N)
        pos = np.flatnonzero(self.live)
        Mfull[np.ix_(pos, pos)] = Ml
        return Mfull

    def B(self) -> np.ndarray:
        """Drift matrix ``B = I − M`` (strictly upper triangular): ``z_t − w_t = Σ_{j<t} e_j B_jt``."""
        Bm = np.eye(self.N) - self.M()
        np.fill_diagonal(Bm, 0.0)
        return Bm

    def R(self, X, *, block: str = "full") -> np.ndarray:
        """``R = X_λ Mᵀ`` in processing order; ``block``: ``"full"`` (``(m+N) × N``), ``"X"`` (``X_π Mᵀ``)
        or ``"lam"`` (``√λ Mᵀ``)."""
        Mm = self.M()
        if block not in ("full", "X", "lam"):
            raise ValueError(f"block must be 'full', 'X' or 'lam', got {block!r}")
        RX = as64(X)[:, self.perm] @ Mm.T if block != "lam" else None
        if block == "X":
            return RX
        Rl = np.sqrt(self.lam) * Mm.T
        return Rl if block == "lam" else np.vstack([RX, Rl])


def factor(X, lam, order=None, *, dead: str = "keep", gram=None) -> Factor:
    """Factor ``H_λ`` of ``X`` in processing ``order`` (see the module docstring); ``gram``: ``XᵀX``
    if already computed (:func:`gram`: several λ then cost one ``O(N³/3)`` Cholesky each)."""
    X = _check_X(X)
    lam = _check_lam(lam)
    _check_dead(dead)
    m, N = X.shape
    perm = resolve_order(order, N, X)
    dm = dead_features(X)
    live = ~dm[perm]
    idx = perm[live]
    if gram is None:
        Xl = X[:, idx]
        H = Xl.T @ Xl
    else:
        H = np.asarray(gram, dtype=np.float64)[np.ix_(idx, idx)]
    H[np.diag_indices_from(H)] += lam
    try:
        L = np.linalg.cholesky(H[::-1, ::-1]) if idx.size else np.zeros((0, 0))
    except np.linalg.LinAlgError as exc:
        raise ValueError(
            f"H_λ = XᵀX + λI is not positive definite (λ = {lam:g}): X has linearly dependent live features; "
            "use lam > 0"
        ) from exc
    cl = np.diag(L)[::-1] ** 2
    if not np.all(np.isfinite(cl)) or (idx.size and np.min(cl) <= 0):
        raise ValueError(f"H_λ is numerically singular (λ = {lam:g}); use lam > 0")
    cv = np.empty(N)
    cv[live] = cl
    cv[~live] = lam + (m / 2.0 if dead == "zero" else 0.0)
    return Factor(perm=perm, lam=lam, dead=dead, m=m, live=live, L=L, c=cv)


# ------------------------------------------------------------------------------------------------
# public one-liners
# ------------------------------------------------------------------------------------------------
def c(X, lam, order=None, *, dead: str = "keep") -> np.ndarray:
    """``c_t = 1/U_tt²`` (processing order) from one Cholesky of the order-reversed ``H_λ``."""
    return factor(X, lam, order, dead=dead).c


def logdet(X, lam, *, dead: str = "keep") -> float:
    """``log det H_λ = Σ_t log c_t`` (the same for every order; ``-inf`` when some ``c_t = 0``)."""
    cv = c(X, lam, None, dead=dead)
    with np.errstate(divide="ignore"):
        return float(np.sum(np.log(cv)))


def M(X, lam, order=None) -> np.ndarray:
    """``M = D⁻¹U``, unit upper triangular (processing order); ``w − q = Mᵀe``."""
    return factor(X, lam, order).M()


def B(X, lam, order=None) -> np.ndarray:
    """Drift matrix ``B = I − M``: ``z_t − w_t = Σ_{j<t} e_j B_jt``."""
    return factor(X, lam, order).B()


def drift(X, lam, order=None, *, p=2) -> np.ndarray:
    """Column norms ``‖B_{:,t}‖_p`` (processing order) of the drift matrix."""
    return np.linalg.norm(B(X, lam, order), ord=p, axis=0)


def dc_dlam(X, lam, order=None) -> np.ndarray:
    """``dc_t/dλ = 1 + ‖β_t‖²`` with ``β_t`` the ridge vector of feature ``t`` (= row ``t`` of ``B``)."""
    Bm = B(X, lam, order)
    return 1.0 + np.sum(Bm**2, axis=1)


def R(X, lam, order=None, *, block: str = "full") -> np.ndarray:
    """Residual vectors ``R = X_λ Mᵀ``: orthogonal columns, ``‖R_{:,t}‖² = c_t``."""
    return factor(X, lam, order).R(X, block=block)


def cond(X, lam, *, dead: str = "keep") -> float:
    """Spectral condition number of ``H_λ`` (``inf`` when singular)."""
    w = np.linalg.eigvalsh(hessian(X, lam, dead=dead))
    return float(w[-1] / w[0]) if w[0] > 0 else float("inf")


# ------------------------------------------------------------------------------------------------
# Qronos
# ------------------------------------------------------------------------------------------------
def w_hat(W, X, X_tilde, lam) -> np.ndarray:
    """``ŵ = (X̃ᵀX̃ + λI)⁻¹(X̃ᵀX + λI)w`` for every row ``w`` of ``W`` (``n × N``, original order).

    Solved as the least-squares problem ``min_v ‖[X̃; √λ I]v − [Xw; √λ w]‖²`` by a QR factorization
    of the augmented matrix (accuracy governed by ``cond(X̃_λ)``, not its square).
    """
    W = as64(W)
    X = _check_X(X)
    Xt = _check_X(X_tilde, "X_tilde")
    lam = _check_lam(lam)
    if W.ndim != 2 or W.shape[1] != X.shape[1] or Xt.shape != X.shape:
        raise ValueError(f"shapes: W {W.shape}, X {X.shape}, X_tilde {Xt.shape}: need n×N, m×N, m×N")
    m, N = X.shape
    A = np.vstack([Xt, np.sqrt(lam) * np.eye(N)])
    b = np.vstack([X @ W.T, np.sqrt(lam) * W.T])
    Qm, Rm = np.linalg.qr(A)
    d = np.abs(np.diag(Rm))
    if np.min(d) <= N * np.finfo(float).eps * max(np.max(d), 1e-300):
        raise ValueError("X̃ᵀX̃ + λI is singular (λ = 0 and X_tilde has dependent or dead features); use lam > 0")
    return scipy.linalg.solve_triangular(Rm, Qm.T @ b, lower=False, check_finite=False).T


def rho2(W, X, X_tilde, lam, *, W_hat=None) -> np.ndarray:
    """``ρ_λ² = min_v ‖Xw − X̃v‖² + λ‖w − v‖²`` per row (evaluated at ``ŵ`` as a sum of squares)."""
    W = as64(W)
    X, Xt = _check_X(X), _check_X(X_tilde, "X_tilde")
    lam = _check_lam(lam)
    V = w_hat(W, X, Xt, lam) if W_hat is None else as64(W_hat)
    r = X @ W.T - Xt @ V.T
    return np.sum(r**2, axis=0) + lam * np.sum((W - V) ** 2, axis=1)


def c_tilde(X_tilde, lam, order=None) -> np.ndarray:
    """``c̃_t``: :func:`c` of the mismatched inputs ``X̃`` (dead features kept, as Qronos does; a
    string ``order`` sorts ``X̃`` as Qronos does, dead features at 0)."""
    X_tilde = _check_X(X_tilde, "X_tilde")
    return c(X_tilde, lam, resolve_order(order, X_tilde.shape[1], X_tilde, dead="keep"), dead="keep")


def y1(W, X, X_tilde, f: int) -> np.ndarray:
    """The value the original Qronos variant rounds first (feature ``f``, per row):
    ``y = ⟨X̃_f, Xw − Σ_{s≠f} X̃_s w_s⟩ / ‖X̃_f‖² = w_f + ⟨X̃_f, (X − X̃)w⟩/‖X̃_f‖²``."""
    W = as64(W)
    X, Xt = _check_X(X), _check_X(X_tilde, "X_tilde")
    xf = Xt[:, int(f)]
    nf = float(xf @ xf)
    if nf == 0.0:
        raise ValueError(f"feature {f} of X_tilde is identically zero: the original Qronos variant is undefined")
    return W[:, int(f)] + ((X - Xt) @ W.T).T @ xf / nf


# ------------------------------------------------------------------------------------------------
# explicit upper bounds of c_t (T1)
# ------------------------------------------------------------------------------------------------
def c_column(X, lam, order=None) -> np.ndarray:
    """``‖X_t‖² + λ`` in processing order (the loosest bound on ``c_t``)."""
    X = _check_X(X)
    lam = _check_lam(lam)
    perm = resolve_order(order, X.shape[1], X)
    return np.sum(X[:, perm] ** 2, axis=0) + lam


#: largest N for which ``c_explicit(method="auto")`` runs the exact per-feature SVD
EXPLICIT_SVD_MAX_N = 256


def c_explicit(X, lam, order=None, *, rcond=None, method: str = "auto", gram=None) -> np.ndarray:
    """The data-dependent bound of T1, processing order:

    ``ĉ_t = λ + ‖P⊥ X_t‖² + λ‖P X_t‖²/(σ²_min,+(X_{>t}) + λ)``, ``P`` the orthogonal projector onto
    ``span X_{>t}`` and ``σ_min,+`` its smallest positive singular value; ``c_t ≤ ĉ_t ≤ ‖X_t‖² + λ``
    (equality ``c_t = ĉ_t`` when ``λ = 0``). Singular values below ``rcond·σ_max`` count as zero
    (default ``rcond = max(m, N)·eps``); any threshold gives a valid upper bound of the exact
    ``c_t``.

    ``method``: ``"svd"``, the exact reference, one SVD of ``X_{>t}`` per ``t`` (``O(mN³)``);
    ``"qr"``, :func:`theory.explicit.c_explicit_enclosure` (``O(mN² + N³)``), which returns the
    upper end ``ĉ⁺_t ≥ ĉ_t`` of an enclosure: the projections exact, ``σ²_min`` replaced by a
    certified lower bound (exact where a bounded refinement reached it), so ``c_t ≤ ĉ⁺_t ≤
    ‖X_t‖² + λ`` still holds (a valid, possibly looser bound); ``"auto"``: ``"svd"`` up to
    ``N = EXPLICIT_SVD_MAX_N``, ``"qr"`` above. ``gram``: ``XᵀX`` (original order) if already
    computed: the ``"qr"`` method then factors it instead of ``X`` when no column is nearly dependent.
    """
    X = _check_X(X)
    lam = _check_lam(lam)
    m, N = X.shape
    if method not in ("auto", "svd", "qr"):
        raise ValueError(f"method must be 'auto', 'svd' or 'qr', got {method!r}")
    perm = resolve_order(order, N, X)
    rc = max(m, N) * np.finfo(float).eps if rcond is None else float(rcond)
    if method == "qr" or (method == "auto" and N > EXPLICIT_SVD_MAX_N):
        from .explicit import c_explicit_enclosure

        return c_explicit_enclosure(X, lam, rcond=rc, gram=gram, gram_order=perm, order=perm)[1]
    return _c_explicit_svd(X[:, perm], lam, rc)


def _c_explicit_svd(Xp, lam, rc) -> np.ndarray:
    """The exact ``ĉ_t`` of :func:`c_explicit`, one SVD of ``X_{>t}`` per ``t``."""
    N = Xp.shape[1]
    out = np.empty(N)
    for t in range(N):
        x = Xp[:, t]
        A = Xp[:, t + 1:]
        if A.shape[1] == 0:
            out[t] = lam + float(x @ x)
            continue
        U, s, _ = np.linalg.svd(A, full_matrices=False)
        r = int(np.sum(s > rc * s[0])) if s.size and s[0] > 0 else 0
        if r == 0:
            out[t] = lam + float(x @ x)
            continue
        p = U[:, :r].T @ x
        perp = x - U[:, :r] @ p
        par2 = float(p @ p)
        out[t] = lam + float(perp @ perp) + (lam * par2 / (s[r - 1] ** 2 + lam) if lam > 0 else 0.0)
    return out
