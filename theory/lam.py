"""L1: how λ moves the bounds, and a λ recommendation by an exact scan (SPEC §4 L1).

Exact facts (claims ``L1.monotone``, ``L1.concave``, ``L1.derivative``): ``c_t`` is nondecreasing
and concave in λ with ``dc_t/dλ = 1 + ‖β_t‖² ≥ 1``, so the ℓ2 bound ``(δ/2)√Σc_t`` grows at least
like ``Nλδ²/4``. The drift bound ``max_j ‖X_j‖²/λ`` decreases in λ, but the exact drift
``‖B_{:,t}‖₂`` need not be monotone (:data:`DRIFT_COUNTEREXAMPLE_X`: column 2 rises from ≈0.0097
at λ = 0.01 to 0.2 at λ = 1 and falls back), so the set of λ meeting the T3 alphabet condition need
not be an interval: :func:`recommend_lambda` scans a grid with the exact ``B`` and never bisects.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from . import alphabet
from ._array import as64
from .constants import CONSTANTS
from .quantities import _check_X, factor, resolve_order

__all__ = ["c_of_lambda", "drift_of_lambda", "LambdaScan", "recommend_lambda", "default_lams",
           "DRIFT_COUNTEREXAMPLE_X"]

#: ``‖B_{:,2}‖₂`` (natural order, second column) is not monotone in λ: ≈0.0097 (λ = 0.01), 0.2 (λ = 1),
#: ≈0.0097 (λ = 100).
DRIFT_COUNTEREXAMPLE_X = np.array([[1.0, 1.0, -1.0], [0.0, -1.0, 0.0]])


def c_of_lambda(X, lams, order=None) -> np.ndarray:
    """``c_t(λ)`` for every λ of ``lams``: array ``(len(lams), N)`` (processing order)."""
    return np.array([factor(X, l, order).c for l in np.atleast_1d(lams)])


def drift_of_lambda(X, lams, order=None, *, p=2) -> np.ndarray:
    """Column norms ``‖B_{:,t}‖_p`` for every λ: array ``(len(lams), N)``."""
    return np.array([np.linalg.norm(factor(X, l, order).B(), ord=p, axis=0) for l in np.atleast_1d(lams)])


def default_lams(X, *, num: int = 29) -> np.ndarray:
    """``mean_t ‖X_t‖² · logspace(−6, 1, num)``."""
    s = float(np.mean(np.sum(as64(X) ** 2, axis=0))) or 1.0
    return s * np.logspace(-6, 1, num)


@dataclass(frozen=True)
class LambdaScan:
    """The result of :func:`recommend_lambda`.

    ``lams`` (L,); ``l2_rows`` (L, n): the T1 bound ``(δ_i/2)√Σ_t c_t`` per row; ``l2`` (L,): its
    maximum over rows; ``K_t3``/``K_p1`` (L,): the smallest ``K`` meeting the uniform T3 / P1 condition
    (``nan`` where ``H_λ`` is singular); ``t3_ok``/``p1_ok`` (L,): whether the given ``K`` meets it;
    ``recommended``: the λ with the smallest ``l2`` among those meeting ``condition``; ``index`` its
    position; ``condition``: ``"T3"`` or ``"P1"``.
    """

    lams: np.ndarray
    l2: np.ndarray
    l2_rows: np.ndarray
    K_t3: np.ndarray
    K_p1: np.ndarray
    t3_ok: np.ndarray
    p1_ok: np.ndarray
    recommended: float
    index: int
    condition: str
    K: float
    eta: float

    def table(self) -> list:
        """Rows ``(λ, l2, K_t3, K_p1, t3_ok, p1_ok)`` for printing."""
        return [(float(a), float(b), float(c), float(d), bool(e), bool(f))
                for a, b, c, d, e, f in zip(self.lams, self.l2, self.K_t3, self.K_p1, self.t3_ok, self.p1_ok)]


def recommend_lambda(X, W, *, delta, K, order="natural", eta: float = 0.05, lams=None,
                     condition: str = "T3", constant: str = "hoeffding") -> LambdaScan:
    """Scan ``λ`` and recommend the one with the smallest ℓ2 bound among those meeting the alphabet
    condition (SPEC L1).

    For every λ of ``lams`` (default :func:`default_lams`) the exact ``c_t`` and drift ``B`` are
    computed (one Cholesky each) in ``order`` (a named order as ``algorithms.optq`` runs it with its
    default ``dead="zero"``, :func:`theory.quantities.order_key`; or a permutation such as a result's
    ``order``), and:

    * the T1 bound ``(δ/2)·√(Σ_t c_t)`` per row;
    * T3 (stochastic rounding): ``K ≥ ‖w‖∞/δ + (s/δ)·max_t ‖B_{:,t}‖₂·√(2 log(2N/η))`` (``s²`` the
      named ``constant``, default Hoeffding's ``δ²/4``);
    * P1 (nearest rounding): ``K + ½ ≥ ‖w‖∞/δ + ½·max_t ‖B_{:,t}‖₁``;

    (uniform forms, per row with that row's δ; the worst row counts). ``condition`` chooses which
    condition the recommendation must meet. Never bisects: the feasible set need not be an interval.
    Raises ``ValueError`` naming the smallest ``K`` that would work when no λ of the grid meets it.
    """
    X = _check_X(as64(X))
    W = np.atleast_2d(as64(W))
    m, N = X.shape
    if W.ndim != 2 or W.shape[1] != N:
        raise ValueError(f"W must be n × N with N = {N} (the columns of X), got {W.shape}")
    if not np.all(np.isfinite(W)):
        raise ValueError(f"W contains {int(np.sum(~np.isfinite(W)))} NaN or Inf entries; remove or replace them")
    for name, v in (("K", K), ("eta", eta)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {type(v).__name__} {v!r}"
                            + (" (e.g. K=7)" if name == "K" else ""))
    if not math.isfinite(float(K)) or K <= 0:
        raise ValueError(f"K must be a finite number > 0 (levels per side of the grid δ·{{−K..K}}), got {K}")
    if condition not in ("T3", "P1"):
        raise ValueError("condition must be 'T3' (stochastic rounding) or 'P1' (nearest rounding)")
    if not 0 < eta < 1:
        raise ValueError(f"eta must lie in (0, 1), got {eta}")
    if constant not in CONSTANTS:
        raise ValueError(f"constant must be one of {sorted(CONSTANTS)}, got {constant!r}")
    if np.ndim(delta):
        dv = np.asarray(as64(delta), dtype=np.float64).reshape(-1)
        if dv.size not in (1, W.shape[0]):
            raise ValueError(f"delta must be a scalar or hold one step per row of W ({W.shape[0]} values), "
                             f"got {dv.size} values (shape {np.shape(delta)})")
        d = np.broadcast_to(dv, (W.shape[0],))
    else:
        d = np.full(W.shape[0], float(delta))
    if np.any(~np.isfinite(d)) or np.any(d <= 0):
        raise ValueError("delta must be positive (a scalar or one step per row)")
    lams = default_lams(X) if lams is None else np.asarray(lams, dtype=np.float64).ravel()
    if lams.size == 0 or np.any(~np.isfinite(lams)) or np.any(lams < 0):
        raise ValueError("lams must be a non-empty grid of finite λ ≥ 0 (no NaN or Inf)")
    perm = resolve_order(order, N, X)
    winf = np.max(np.abs(W), axis=1) / d  # ‖w‖∞/δ per row
    L = lams.size
    l2_rows = np.full((L, W.shape[0]), np.nan)
    K_t3 = np.full(L, np.nan)
    K_p1 = np.full(L, np.nan)
    for k, lam in enumerate(lams):
        try:
            fac = factor(X, lam, perm)
        except ValueError:
            continue  # singular H_λ (λ = 0 with dependent features): not a candidate
        Bm = fac.B()
        l2_rows[k] = d / 2 * math.sqrt(float(np.sum(fac.c)))
        K_t3[k] = alphabet.k_needed_t3(winf, Bm, eta, constant)
        K_p1[k] = alphabet.k_needed_p1(winf, Bm)
    with np.errstate(invalid="ignore"):
        t3_ok = np.isfinite(K_t3) & (K_t3 <= K)
        p1_ok = np.isfinite(K_p1) & (K_p1 <= K)
    l2 = np.max(l2_rows, axis=1)
    ok = t3_ok if condition == "T3" else p1_ok
    if not ok.any():
        need = K_t3 if condition == "T3" else K_p1
        j = int(np.nanargmin(need)) if np.isfinite(need).any() else -1
        hint = (f"the smallest K needed on this grid is {math.ceil(need[j])} (at λ = {lams[j]:.4g})"
                if j >= 0 else "H_λ is singular at every λ of the grid")
        raise ValueError(
            f"no λ of the grid meets the {condition} alphabet condition with K = {K}: {hint}; "
            "increase K (or the step δ), or extend lams"
        )
    cand = np.where(ok, l2, np.inf)
    idx = int(np.argmin(cand))
    return LambdaScan(lams=lams, l2=l2, l2_rows=l2_rows, K_t3=K_t3, K_p1=K_p1, t3_ok=t3_ok, p1_ok=p1_ok,
                      recommended=float(lams[idx]), index=idx, condition=condition, K=float(K), eta=float(eta))
