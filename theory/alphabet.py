"""The alphabet conditions P1 and T3 and the high-probability radius (SPEC §4), written once.

Every caller (the claims' hypotheses, ``recommend_lambda``, the campaign's grid sizing, the figures)
evaluates these formulas through the functions below, with the constants of
:data:`theory.constants.CONSTANTS`; nothing else retypes them.

Notation (SPEC §1, §3): ``B = I − M`` is the drift matrix in processing order (``N × N``,
``z_t − w_t = Σ_{j<t} e_j B_jt``); ``δ_p`` the steps per entry in processing order (``n × N``: one row
per weight row, constant along a row for a per-row grid, per group otherwise); ``w_p`` the loop's
start in processing order (``n × N``); ``lower``, ``upper`` the grid's range per entry.

* High-probability multiplier: ``√(2 log(2·count/η))``, the radius (in units of the sub-Gaussian scale)
  at which the union of ``count`` two-sided tails ``2exp(−α²/(2σ²))`` equals ``η``
  (:func:`theory.constants.hp_radius` is its symbolic form).
* P1 (nearest rounding, ``|e_j| ≤ δ_j/2``): the drift satisfies ``|z_t − w_t| ≤ r_t``,
  ``r_t = ½ Σ_j δ_j |B_jt|`` (:func:`reach`). Entrywise condition: ``[w_t − r_t, w_t + r_t]`` inside
  ``(lower_t − δ_t/2, upper_t + δ_t/2)``. Uniform form (one step δ per row, ``lower = −Kδ``,
  ``upper = Kδ``): ``K + ½ ≥ ‖w‖∞/δ + ½·max_t ‖B_{:,t}‖₁``.
* T3 (stochastic rounding): w.p. ≥ 1−η every ``|z_t − w_t| < a_t``,
  ``a_t = √(s²/δ² · Σ_j δ_j² B_jt²)·√(2 log(2N/η))`` (:func:`t3_radius`). Entrywise condition:
  ``[w_t − a_t, w_t + a_t]`` inside ``[lower_t, upper_t]`` (a stochastically rounded ``z_t`` beyond the
  range could round outside the grid, so no half step of slack). Uniform form:
  ``K ≥ ‖w‖∞/δ + (s/δ)·max_t ‖B_{:,t}‖₂·√(2 log(2N/η))``.

The uniform forms imply the entrywise ones (``Σ_j δ|B_jt| = δ‖B_{:,t}‖₁`` ≤ the maximum over t, and the
same in ℓ2). With per-column steps (groups) only the entrywise forms apply.
"""

from __future__ import annotations

import math

import numpy as np

from .constants import CONSTANTS, HALF_STEP, delta

__all__ = [
    "hp_multiplier",
    "s_over_delta",
    "reach",
    "drift_var",
    "t3_radius",
    "t3_radius_from_var",
    "p1_condition",
    "t3_condition",
    "drift_l1_max",
    "drift_l2_max",
    "p1_uniform_radius",
    "t3_uniform_radius",
    "k_needed_p1",
    "k_needed_t3",
    "k_needed_p1_from_norm",
    "k_needed_t3_from_norm",
]

#: ``½``: the nearest-rounding half step ``|e| ≤ δ/2`` in units of ``δ`` (``HALF_STEP/δ``).
_HALF = float(HALF_STEP / delta)


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def _eta(eta) -> float:
    try:
        e = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"eta must be a number in (0, 1), got {eta!r}") from None
    if not (0.0 < e < 1.0):
        raise ValueError(f"eta must lie in (0, 1) (a failure probability), got {eta!r}")
    return e


def _B(B) -> np.ndarray:
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != B.shape[1] or B.shape[0] < 1:
        raise ValueError(f"B must be the N × N drift matrix (N ≥ 1, processing order), got shape {B.shape}")
    return B


def _delta_B(delta_p, B):
    B = _B(B)
    d = np.asarray(delta_p, dtype=np.float64)
    if d.ndim not in (1, 2) or d.shape[-1] != B.shape[0]:
        raise ValueError(f"delta_p must be n × N (or N) with N = {B.shape[0]} (the size of B), got shape {d.shape}")
    return d, B


def s_over_delta(constant: str = "hoeffding") -> float:
    """``s/δ = √(s²/δ²)`` of the named variance proxy of :data:`theory.constants.CONSTANTS`
    (``½`` for Hoeffding's ``s² = δ²/4``)."""
    if constant not in CONSTANTS:
        raise ValueError(f"constant must be one of {sorted(CONSTANTS)}, got {constant!r}")
    return math.sqrt(CONSTANTS[constant].factor)


def _factor(constant: str) -> float:
    if constant not in CONSTANTS:
        raise ValueError(f"constant must be one of {sorted(CONSTANTS)}, got {constant!r}")
    return CONSTANTS[constant].factor


# ------------------------------------------------------------------------------------------------
# the high-probability multiplier
# ------------------------------------------------------------------------------------------------
def hp_multiplier(count, eta):
    """``√(2 log(2·count/η))``: the union of ``count`` two-sided sub-Gaussian tails
    ``2exp(−α²/(2σ²))`` equals ``η`` at ``α = σ·hp_multiplier(count, η)``.

    ``count ≥ 1`` (a scalar gives a float, an array an array of the same shape), ``0 < η < 1``.
    """
    e = _eta(eta)
    if np.ndim(count) == 0:
        try:
            c = float(count)
        except (TypeError, ValueError):
            raise ValueError(f"count must be a number ≥ 1, got {count!r}") from None
        if not (math.isfinite(c) and c >= 1):
            raise ValueError(f"count must be finite and ≥ 1 (the number of events in the union), got {count!r}")
        return math.sqrt(2 * math.log(2 * c / e))
    c = np.asarray(count, dtype=np.float64)
    if not np.all(np.isfinite(c) & (c >= 1)):
        raise ValueError("count must be finite and ≥ 1 (the number of events in the union) everywhere")
    return np.sqrt(2 * np.log(2 * c / e))


# ------------------------------------------------------------------------------------------------
# entrywise forms
# ------------------------------------------------------------------------------------------------
def reach(delta_p, B):
    """``r_t = ½ Σ_j δ_j |B_jt|`` (``n × N``, processing order): the largest drift ``|z_t − w_t|`` when
    every ``|e_j| ≤ δ_j/2`` (P1's radius)."""
    d, B = _delta_B(delta_p, B)
    return _HALF * (d @ np.abs(B))


def drift_var(delta_p, B):
    """``Σ_j δ_j² B_jt²`` (``n × N``, processing order): the drift's variance proxy in units of ``s²/δ²``."""
    d, B = _delta_B(delta_p, B)
    return (d**2) @ (B**2)


def t3_radius_from_var(var, N, eta, constant: str = "hoeffding"):
    """``a_t = √(s²/δ² · var_t) · √(2 log(2N/η))`` from ``var = Σ_j δ_j² B_jt²`` (:func:`drift_var`)."""
    return np.sqrt(_factor(constant) * np.asarray(var, dtype=np.float64)) * hp_multiplier(N, eta)


def t3_radius(delta_p, B, eta, constant: str = "hoeffding"):
    """T3's radius ``a_t = √(s²/δ² · Σ_j δ_j² B_jt²) · √(2 log(2N/η))`` (``n × N``, processing order;
    ``N`` the size of ``B``, ``s²`` the named constant)."""
    d, B = _delta_B(delta_p, B)
    return t3_radius_from_var(drift_var(d, B), B.shape[0], eta, constant)


def p1_condition(w_p, reach, lower, upper, delta_p, margin=0):
    """Entrywise P1 condition per row: every ``[w_t − r_t − margin, w_t + r_t + margin]`` lies strictly
    inside ``(lower_t − δ_t/2, upper_t + δ_t/2)``. Arrays broadcast (``n × N``); returns one bool per row
    (NaN bounds, e.g. an infinite grid's, give False)."""
    w, r = np.asarray(w_p, dtype=np.float64), np.asarray(reach, dtype=np.float64)
    d = np.asarray(delta_p, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = (w + r + margin < upper + _HALF * d) & (w - r - margin > lower - _HALF * d)
    return np.all(ok, axis=-1)


def t3_condition(w_p, radius, lower, upper, margin=0):
    """Entrywise T3 condition per row: every ``[w_t − a_t − margin, w_t + a_t + margin]`` lies inside
    ``[lower_t, upper_t]`` (closed). Arrays broadcast (``n × N``); returns one bool per row."""
    w, a = np.asarray(w_p, dtype=np.float64), np.asarray(radius, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = (w + a + margin <= upper) & (w - a - margin >= lower)
    return np.all(ok, axis=-1)


# ------------------------------------------------------------------------------------------------
# uniform forms (one step δ per row, symmetric grid δ·{−K, …, K})
# ------------------------------------------------------------------------------------------------
def drift_l1_max(B) -> float:
    """``max_t ‖B_{:,t}‖₁``."""
    return float(np.max(np.sum(np.abs(_B(B)), axis=0)))


def drift_l2_max(B) -> float:
    """``max_t ‖B_{:,t}‖₂``."""
    return float(np.max(np.sqrt(np.sum(_B(B) ** 2, axis=0))))


def p1_uniform_radius(b1_max):
    """P1's uniform radius in steps: ``½·max_t ‖B_{:,t}‖₁`` from ``b1_max = max_t ‖B_{:,t}‖₁``."""
    return _HALF * b1_max


def t3_uniform_radius(b2_max, N, eta, constant: str = "hoeffding"):
    """T3's uniform radius in steps: ``(s/δ)·max_t ‖B_{:,t}‖₂·√(2 log(2N/η))`` from
    ``b2_max = max_t ‖B_{:,t}‖₂``."""
    return s_over_delta(constant) * b2_max * hp_multiplier(N, eta)


def k_needed_p1_from_norm(w_over_delta_max, b1_max) -> float:
    """Smallest real ``K`` of P1's uniform form, ``K + ½ ≥ ‖w‖∞/δ + ½·max_t ‖B_{:,t}‖₁``:
    ``max(w_over_delta_max) + ½·b1_max − ½`` (``w_over_delta_max``: ``‖w‖∞/δ`` per row, the worst
    counts)."""
    return float(np.max(w_over_delta_max) + p1_uniform_radius(b1_max) - _HALF)


def k_needed_t3_from_norm(w_over_delta_max, b2_max, N, eta, constant: str = "hoeffding") -> float:
    """Smallest real ``K`` of T3's uniform form,
    ``K ≥ ‖w‖∞/δ + (s/δ)·max_t ‖B_{:,t}‖₂·√(2 log(2N/η))``, from ``b2_max = max_t ‖B_{:,t}‖₂``
    (``w_over_delta_max``: ``‖w‖∞/δ`` per row, the worst counts)."""
    return float(np.max(w_over_delta_max) + t3_uniform_radius(b2_max, N, eta, constant))


def k_needed_p1(w_over_delta_max, B) -> float:
    """Smallest real ``K`` with ``K + ½ ≥ ‖w‖∞/δ + ½·max_t ‖B_{:,t}‖₁`` (P1, uniform form; ``B`` the
    ``N × N`` drift matrix). May be below 1; the integer ``K`` of a grid is at least its ceiling."""
    return k_needed_p1_from_norm(w_over_delta_max, drift_l1_max(B))


def k_needed_t3(w_over_delta_max, B, eta, constant: str = "hoeffding") -> float:
    """Smallest real ``K`` with ``K ≥ ‖w‖∞/δ + (s/δ)·max_t ‖B_{:,t}‖₂·√(2 log(2N/η))`` (T3, uniform
    form; ``N`` is the size of ``B``, ``s²`` the named constant)."""
    B = _B(B)
    return k_needed_t3_from_norm(w_over_delta_max, drift_l2_max(B), B.shape[0], eta, constant)
