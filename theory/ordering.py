"""O1: what the processing order does and does not change (SPEC §4 O1).

Exact and order-free (claims ``O1.det`` and ``O1.amgm`` in :mod:`theory.claims`):
``Π_t c_t = det H_λ`` for every order, hence ``Σ_t c_t ≥ N·(det H_λ)^{1/N}`` (AM–GM). Ordering only
redistributes the ``c_t``.

Not a theorem: that decreasing column norms (GPTQ's act_order) minimize ``Σ_t c_t`` or
``max_t c_t``. The rearrangement argument (for weights nondecreasing in position, decreasing
norms minimize ``Σ_t ω_t ‖X_{π(t)}‖²``) is a heuristic about an upper bound, and it fails for the
exact quantity: ``X = [[2, 3, 2], [−1, −3, 3]]``, ``λ = 0.1`` gives ``Σ c_t = 18.46`` in decreasing
order and ``9.98`` in the best order. The helpers below compute ``Σ c_t`` and ``max c_t`` for given
orders so that campaigns can *report* the comparison as a measured finding.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from ._array import as64
from .quantities import c as c_of, logdet, resolve_order

__all__ = ["ORDER_KINDS", "order_for", "OrderStats", "order_stats", "compare_orders", "best_order", "amgm_floor",
           "COUNTEREXAMPLE_X", "COUNTEREXAMPLE_LAM"]

ORDER_KINDS = ("natural", "decreasing", "increasing", "random")

#: O1's counterexample: decreasing order does not minimize Σ c_t (18.46 against 9.98 at λ = 0.1).
COUNTEREXAMPLE_X = np.array([[2.0, 3.0, 2.0], [-1.0, -3.0, 3.0]])
COUNTEREXAMPLE_LAM = 0.1


def order_for(X, kind: str, *, rng=None, dead: str = "zero") -> np.ndarray:
    """The permutation for ``kind``, as ``algorithms.optq(order=kind, dead=dead)`` runs it:
    ``natural``, ``decreasing``/``increasing`` by GPTQ's diagonal (``‖X_t‖²``, dead features at
    ``m/2`` with ``dead="zero"``; :func:`theory.quantities.order_key`) with a stable sort, or
    ``random`` from ``rng``."""
    X = as64(X)
    N = X.shape[1]
    if kind == "random":
        if rng is None:
            raise ValueError("order 'random' needs rng=numpy.random.default_rng(seed)")
        return rng.permutation(N).astype(np.int64)
    return resolve_order(kind, N, X, dead=dead)


@dataclass(frozen=True)
class OrderStats:
    """``Σ_t c_t`` and ``max_t c_t`` of one order (a measured finding, not a claim)."""

    name: str
    order: tuple
    sum_c: float
    max_c: float


def order_stats(X, lam, order, *, name: str = "") -> OrderStats:
    """``Σ_t c_t`` and ``max_t c_t`` for ``order``."""
    p = resolve_order(order, as64(X).shape[1], X)
    cv = c_of(X, lam, p)
    return OrderStats(name or "custom", tuple(int(i) for i in p), float(np.sum(cv)), float(np.max(cv)))


def best_order(X, lam, *, objective: str = "sum", max_N: int = 8) -> OrderStats:
    """The order minimizing ``Σ c_t`` (``objective="sum"``) or ``max c_t`` (``"max"``), by brute force
    over all ``N!`` orders (``N ≤ max_N``)."""
    X = as64(X)
    N = X.shape[1]
    if N > max_N:
        raise ValueError(f"brute force over {N}! orders is too many (N = {N} > max_N = {max_N})")
    if objective not in ("sum", "max"):
        raise ValueError("objective must be 'sum' or 'max'")
    best = None
    for p in itertools.permutations(range(N)):
        s = order_stats(X, lam, np.array(p), name=f"best ({objective})")
        key = s.sum_c if objective == "sum" else s.max_c
        if best is None or key < best[0] - 1e-12 * abs(key):
            best = (key, s)
    return best[1]


def compare_orders(X, lam, *, kinds=ORDER_KINDS, rng=None, brute_force: bool | None = None, max_N: int = 8,
                   dead: str = "zero") -> dict:
    """``{name: OrderStats}`` for the order kinds (``random`` needs ``rng``; each kind as
    ``algorithms.optq(order=kind, dead=dead)`` runs it, see :func:`order_for`), plus ``"best (sum)"``
    and ``"best (max)"`` by brute force when ``N ≤ max_N`` (or ``brute_force=True``), and
    ``"amgm floor"`` (``N·det^{1/N}``, a lower bound on ``Σ c_t`` for every order)."""
    X = as64(X)
    N = X.shape[1]
    out = {}
    for k in kinds:
        if k == "random" and rng is None:
            continue
        out[k] = order_stats(X, lam, order_for(X, k, rng=rng, dead=dead), name=k)
    if brute_force or (brute_force is None and N <= max_N):
        out["best (sum)"] = best_order(X, lam, objective="sum", max_N=max(max_N, N))
        out["best (max)"] = best_order(X, lam, objective="max", max_N=max(max_N, N))
    floor = amgm_floor(X, lam)
    out["amgm floor"] = OrderStats("amgm floor", (), floor, math.nan)
    return out


def amgm_floor(X, lam) -> float:
    """``N·(det H_λ)^{1/N}``: no order has a smaller ``Σ_t c_t`` (claim O1.amgm)."""
    N = as64(X).shape[1]
    return float(N * math.exp(logdet(X, lam) / N))
