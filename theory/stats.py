"""Statistical tests for the probabilistic claims, each with a valid p-value and a stated power.

A p-value ``p`` is *valid* when ``P(p ≤ x) ≤ x`` for every ``x`` under the null hypothesis; every
p-value below is valid without asymptotics (normal approximations are used only to *state power*,
never to decide). Each test reports the smallest deviation it would detect with probability
``≥ power`` so that too little evidence is reported as such, never as a pass.

:func:`unbiased_rounding_test` — stochastic rounding ``P(up | past) = f`` (``f`` the fractional part).
  Entries ``(r, t)``: rows ``r`` independent, columns ``t`` in processing order; ``I_rt`` the
  up-indicator, ``f_rt`` a function of the row's past. Three families, combined by Bonferroni
  (``p = min(1, 3·min(p_a, p_b, p_c))``):

  (a) per column: given the pasts of all rows, the ``I_rt`` of column ``t`` are independent
      Bernoulli(``f_rt``), so ``S_t = Σ_r I_rt`` is Poisson-binomial and the two-sided test
      ``min(1, 2·min(P(S ≥ s), P(S ≤ s)))`` is valid conditionally, hence unconditionally. The tails are
      exact (convolution) when ``n²·N ≤ exact_budget``; otherwise each tail is replaced by its Chernoff
      bound ``P(S ≥ s) ≤ exp(−θs)·Π_r(1 − f_r + f_r e^θ)`` (θ ≥ 0; θ ≤ 0 for the lower tail), which
      is a valid upper bound for *every* θ, so the p-value stays valid however θ is optimised. When
      ``s`` is 0 or the number of entries the Chernoff bound equals the exact tail ``Π(1 − f)``, ``Π f``.
      Columns are combined by Bonferroni over all ``N`` columns: ``p_a = min(1, N·min_t p_t)``.
  (b) pooled count: ``D = Σ (I_rt − f_rt)`` over the valid entries, ordered by column then row, is a
      martingale whose increments lie in intervals of length 1 (invalid entries: increment 0). By
      Azuma–Hoeffding over the deterministic horizon ``H = n·N``:
      ``p_b = min(1, 2·exp(−2D²/H))``. (Using the random number of valid entries ``T`` instead of ``H``
      would not be valid: ``T`` depends on earlier outcomes. ``H = T`` when every entry is valid.)
  (c) pooled direction: ``D' = Σ g_rt (I_rt − f_rt)`` with the predictable sign ``g = sign(f − ½)``;
      same bound, ``p_c = min(1, 2·exp(−2D'²/H))``. It detects rounding biased towards (or away from)
      the nearest level, e.g. deterministic nearest rounding, whose up-count matches ``Σf`` on
      average and so escapes (a) and (b).

  An entry whose chosen level is not ``floor(u)`` or ``floor(u) + 1`` is a violation by itself.
  Power: under a uniform bias ``P(up) = f + b`` the combined p-value is below α as soon as
  ``|D| > a* = √(H·log(6/α)/2)``; ``D`` has mean ``bT`` and standard deviation ``≤ √T/2``, so by
  the normal approximation ``detectable = (a* + z_power·√T/2)/T`` (``= (√(log(6/α)/2) + z_power/2)/√T``
  when ``H = T``).

:func:`expectation_test` — independent ``Y_r ∈ [0, b_r]``, null ``E Y_r ≤ 1`` for every ``r``.
  Hoeffding: ``P(Σ(Y_r − 1) ≥ s) ≤ exp(−2s²/Σ b_r²)``. For i.i.d. rows additionally the empirical
  Bernstein bound of Maurer & Pontil (2009, Thm 4) for variables in ``[0, b]``: with probability
  ``≥ 1 − δ``, ``E Y ≥ Ȳ − √(2 V_n L/n) − 7bL/(3(n − 1))``, ``L = log(2/δ)``, ``V_n`` the unbiased sample
  variance (the theorem applied to ``b − Y``). Its p-value is the smallest δ for which this lower
  confidence bound reaches 1 (a quadratic in ``√L``); combined ``min(1, 2·min(p_H, p_EB))``.

:func:`binomial_power_detectable` — power of the exact one-sided binomial test of an exceedance
  probability ``≤ p0``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from scipy import stats

__all__ = ["unbiased_rounding_test", "expectation_test", "binomial_power_detectable",
           "EXACT_BUDGET"]

#: largest ``n²·N`` (rows² × columns) for which the per-column Poisson-binomial tails are computed
#: exactly by convolution; above it the Chernoff bound is used (about a second of work at the limit)
EXACT_BUDGET = 10**9
_THETA_MAX = 50.0  # Chernoff exponent search range |θ| ≤ 50 (any θ gives a valid bound)
_CHUNK = 2**21  # elements per block of columns in the Chernoff computation


# ------------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------------
def _prob(x, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not (0.0 < float(x) < 1.0):
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {x!r}")
    return float(x)


def _positive(x, name: str, *, allow_none: bool = False):
    if allow_none and x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not (0.0 < float(x) < math.inf):
        raise ValueError(f"{name} must be a positive finite number, got {x!r}")
    return float(x)


def _real_array(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"{name} must be a real numeric array, got dtype {a.dtype}")
    return a.astype(np.float64, copy=False)


# ------------------------------------------------------------------------------------------------
# Poisson-binomial column tails
# ------------------------------------------------------------------------------------------------
def _exact_two_sided(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Exact two-sided p-values ``min(1, 2·min(P(S ≥ s_j), P(S ≤ s_j)))``, ``S_j = Σ_r Bernoulli(p[r, j])``,
    by convolution of the Bernoulli laws, vectorised over the columns ``j``."""
    n, N = p.shape
    pmf = np.zeros((N, n + 1))
    pmf[:, 0] = 1.0
    for r in range(n):
        pr = p[r][:, None]
        head = pmf[:, :r + 1] * pr
        pmf[:, :r + 1] *= 1.0 - pr
        pmf[:, 1:r + 2] += head
    j = np.arange(N)
    lower = np.cumsum(pmf, axis=1)[j, s]  # P(S ≤ s)
    upper = np.cumsum(pmf[:, ::-1], axis=1)[j, n - s]  # P(S ≥ s), summed from the top (no cancellation)
    return np.minimum(1.0, 2.0 * np.minimum(np.minimum(lower, upper), 1.0))


def _chernoff_two_sided(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Two-sided p-value bounds ``min(1, 2·exp(−I_j))`` with ``I_j = θ s_j − Σ_r log(1 − p + p e^θ)``.

    ``exp(−I)`` bounds ``P(S ≥ s)`` for θ ≥ 0 and ``P(S ≤ s)`` for θ ≤ 0, for *every* such θ (Markov's
    inequality applied to ``e^{θS}``); θ is the safeguarded-Newton maximiser of the concave ``I`` (its
    sign is that of ``s − E S``), and the largest ``I`` met is kept. At ``s = 0`` and ``s = #{p > 0}`` the
    supremum is the exact tail (``Π(1 − p)``, ``Π p``) and is used directly.
    """
    n, N = p.shape
    q = 1.0 - p
    mu = p.sum(0)
    var = (p * q).sum(0)
    npos = (p > 0).sum(0)
    with np.errstate(divide="ignore"):
        I = np.zeros(N)
        at0 = s <= 0
        I[at0] = -np.log(q[:, at0]).sum(0)
        atn = s >= npos
        I[atn] = -np.log(np.where(p[:, atn] > 0, p[:, atn], 1.0)).sum(0)
        I[s > npos] = np.inf  # impossible count: probability 0
    inner = ~at0 & ~atn
    theta = np.clip((s - mu) / np.maximum(var, 1e-300), -_THETA_MAX, _THETA_MAX)
    lo = np.full(N, -_THETA_MAX)
    hi = np.full(N, _THETA_MAX)
    active = inner.copy()
    for _ in range(100):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        th = theta[idx]
        E = np.exp(th)
        P = p[:, idx]
        m = q[:, idx] + P * E
        sig = P * E / m
        d1 = s[idx] - sig.sum(0)  # I'(θ)
        d2 = (sig * (1.0 - sig)).sum(0)  # −I''(θ) > 0
        val = th * s[idx] - np.log(m).sum(0)
        I[idx] = np.maximum(I[idx], val)
        lo[idx] = np.where(d1 > 0, th, lo[idx])
        hi[idx] = np.where(d1 < 0, th, hi[idx])
        newton = th + d1 / np.maximum(d2, 1e-300)
        inside = (newton > lo[idx]) & (newton < hi[idx])
        theta[idx] = np.where(inside, newton, 0.5 * (lo[idx] + hi[idx]))
        # concavity: I(θ*) − I(θ) ≤ |I'(θ)|·|θ* − θ| ≤ |d1|·(hi − lo)
        done = (np.abs(d1) * (hi[idx] - lo[idx]) <= 1e-10 * np.maximum(1.0, val)) | (hi[idx] - lo[idx] < 1e-12)
        active[idx[done]] = False
    return np.minimum(1.0, 2.0 * np.exp(-I))


def _column_pvalues(p: np.ndarray, s: np.ndarray, exact_budget: float) -> tuple[np.ndarray, str]:
    n, N = p.shape
    if float(n) * n * N <= exact_budget:
        return _exact_two_sided(p, s), "exact Poisson-binomial"
    out = np.empty(N)
    step = max(1, _CHUNK // max(n, 1))
    for j0 in range(0, N, step):
        out[j0:j0 + step] = _chernoff_two_sided(p[:, j0:j0 + step], s[j0:j0 + step])
    return out, "Chernoff bound on the Poisson-binomial tails"


# ------------------------------------------------------------------------------------------------
# 1. unbiased stochastic rounding
# ------------------------------------------------------------------------------------------------
def unbiased_rounding_test(u, k, valid, *, alpha: float, power: float = 0.9, max_bias: float = 0.1,
                           exact_budget: float = EXACT_BUDGET) -> dict:
    """Test that stochastic rounding was unbiased: ``P(k_rt = floor(u_rt) + 1 | past) = u_rt − floor(u_rt)``.

    ``u`` (n × N): pre-rounding values in grid units, columns in processing order, rows independent
    trials; ``k`` (n × N): the integer levels chosen; ``valid`` (n × N, bool): the entries to test (not
    clipped, both neighbours in the grid, fractional part not within floating-point slack of 0 or 1).
    ``alpha``: false-alarm rate; ``power`` and ``max_bias``: the verdict is "insufficient evidence"
    unless a uniform bias ``max_bias`` would be detected with probability ``≥ power``.
    ``exact_budget``: largest ``n²·N`` for exact per-column tails (above it: Chernoff bounds).
    The tests and their validity are described in the module docstring.

    Returns a dict: ``status`` ("violated", "insufficient evidence" or "consistent"), ``p_value``,
    ``alpha``, ``trials`` (valid entries T), ``ups``, ``expected_ups`` (Σf), ``bad_levels`` (valid
    entries whose level is neither neighbour), ``detectable`` (smallest uniform bias b, P(up) = f + b,
    detected with probability ≥ power; ``inf`` when T = 0), ``power``, ``test``, ``worst_column``
    (``{"index", "p_value"}`` of the most significant column, None without valid entries), and the
    family p-values ``p_columns``, ``p_pooled``, ``p_direction`` and the horizon ``horizon`` = n·N.
    """
    alpha = _prob(alpha, "alpha")
    power = _prob(power, "power")
    max_bias = _positive(max_bias, "max_bias")
    exact_budget = _positive(exact_budget, "exact_budget")
    u = _real_array(u, "u")
    if u.ndim != 2:
        raise ValueError(f"u must be a 2-D array (rows = independent trials, columns = processing order), "
                         f"got shape {u.shape}")
    k = _real_array(k, "k")
    if k.shape != u.shape:
        raise ValueError(f"k must have the shape of u {u.shape}, got {k.shape}")
    valid = np.asarray(valid)
    if valid.dtype != bool:
        raise ValueError(f"valid must be a boolean array, got dtype {valid.dtype}")
    if valid.shape != u.shape:
        raise ValueError(f"valid must have the shape of u {u.shape}, got {valid.shape}")
    if not np.all(np.isfinite(u[valid])):
        raise ValueError("u must be finite at the valid entries")
    kv = k[valid]
    if not np.all(np.isfinite(kv)) or not np.all(kv == np.round(kv)):
        raise ValueError("k must hold finite integer levels at the valid entries")

    n, N = u.shape
    fl = np.floor(np.where(valid, u, 0.0))
    f = np.where(valid, u - fl, 0.0)  # 0 at invalid entries: they contribute nothing
    up = valid & (k == fl + 1)
    bad = valid & ~up & (k != fl)
    T = int(valid.sum())
    H = n * N
    ups = int(up.sum())
    expected = float(f.sum())

    s_col = up.sum(0).astype(np.int64)
    col_p, col_method = _column_pvalues(f, s_col, exact_budget) if N > 0 else (np.ones(0), "none")
    if T > 0:
        j = int(np.argmin(np.where(valid.any(0), col_p, np.inf)))
        worst = {"index": j, "p_value": float(col_p[j])}
        p_a = min(1.0, N * float(col_p[j]))
    else:
        worst, p_a = None, 1.0
    inc = np.where(valid, up - f, 0.0)
    D = float(inc.sum())
    Dg = float((np.sign(f - 0.5) * inc).sum())
    p_b = min(1.0, 2.0 * math.exp(-2.0 * D * D / H)) if H else 1.0
    p_c = min(1.0, 2.0 * math.exp(-2.0 * Dg * Dg / H)) if H else 1.0
    p = min(1.0, 3.0 * min(p_a, p_b, p_c))

    if T > 0:
        a_star = math.sqrt(H * math.log(6.0 / alpha) / 2.0)
        detectable = (a_star + stats.norm.ppf(power) * math.sqrt(T) / 2.0) / T
    else:
        detectable = math.inf
    nbad = int(bad.sum())
    if p < alpha or nbad > 0:
        status = "violated"
    elif detectable > max_bias:
        status = "insufficient evidence"
    else:
        status = "consistent"
    test = (f"Bonferroni (x3) of: per-column two-sided {col_method} tests (Bonferroni over {N} columns); "
            f"Azuma-Hoeffding on the pooled count martingale and on the sign(f-1/2)-weighted martingale "
            f"(horizon n*N = {H})")
    return {"status": status, "p_value": p, "alpha": alpha, "trials": T, "ups": ups,
            "expected_ups": expected, "bad_levels": nbad, "detectable": float(detectable),
            "power": power, "test": test, "worst_column": worst,
            "p_columns": p_a, "p_pooled": p_b, "p_direction": p_c, "horizon": H}


# ------------------------------------------------------------------------------------------------
# 2. expectation claims
# ------------------------------------------------------------------------------------------------
def _eb_pvalue(mean: float, var: float, n: int, b: float) -> float:
    """Smallest δ with ``mean − √(2·var·L/n) − 7bL/(3(n−1)) ≥ 1``, ``L = log(2/δ)`` (capped at 1)."""
    d = mean - 1.0
    if n < 2 or d <= 0:
        return 1.0
    A = 7.0 * b / (3.0 * (n - 1))
    B = math.sqrt(2.0 * max(var, 0.0) / n)
    if A == 0.0:
        return 1.0 if B == 0.0 else min(1.0, 2.0 * math.exp(-(d / B) ** 2))
    x = 2.0 * d / (B + math.sqrt(B * B + 4.0 * A * d))  # positive root of A x² + B x − d
    return min(1.0, 2.0 * math.exp(-x * x))


def expectation_test(Y, b, *, identical: bool, alpha: float, power: float = 0.9,
                     max_excess: float | None = None) -> dict:
    """Test the null ``E Y_r ≤ 1`` for independent ``Y_r ∈ [0, b_r]`` (a claim's bound normalised to 1).

    ``Y``: observations (any shape, flattened); ``b``: their ranges (scalar or broadcastable to ``Y``);
    ``identical``: the rows are i.i.d. trials of one law (enables the empirical Bernstein test);
    ``alpha``: false-alarm rate; ``max_excess``: if given, the verdict is "insufficient evidence" unless
    a relative excess ``max_excess`` would be detected with probability ``≥ power``.
    Tests (module docstring): Hoeffding ``p_H = exp(−2s²/Σb_r²)``, ``s = Σ(Y_r − 1)`` (1 if s ≤ 0), and
    when ``identical`` also the Maurer–Pontil empirical Bernstein p-value ``p_EB`` with ``b = max b_r``;
    ``p = min(1, 2·min(p_H, p_EB))`` (``p = p_H`` otherwise).

    ``detectable``: the smallest ε such that a true mean ``1 + ε`` is detected with probability ≥ power,
    by the normal approximation: Hoeffding part ``(s* + z·√(Σb_r²)/2)/n`` with ``s*`` its rejection
    threshold and ``√(Σb_r²)/2`` the range bound on the standard deviation of ``Σ Y_r``; empirical
    Bernstein part ``√(2V L/n) + 7bL/(3(n−1)) + z·√(V/n)`` with ``L = log(4/α)`` and the sample variance
    ``V`` held at its observed value; the smaller of the two when ``identical``.

    Returns a dict: ``status``, ``p_value``, ``alpha``, ``trials``, ``mean``, ``test``, ``detectable``,
    ``power``, and the parts ``p_hoeffding``, ``p_bernstein`` (None unless ``identical``).
    """
    alpha = _prob(alpha, "alpha")
    power = _prob(power, "power")
    max_excess = _positive(max_excess, "max_excess", allow_none=True)
    if not isinstance(identical, (bool, np.bool_)):
        raise ValueError(f"identical must be True or False, got {identical!r}")
    Y = _real_array(Y, "Y").ravel()
    if Y.size == 0:
        raise ValueError("Y is empty: at least one trial is needed")
    if not np.all(np.isfinite(Y)):
        raise ValueError("Y must be finite (no NaN or Inf)")
    b_arr = _real_array(b, "b")
    try:
        b_arr = np.broadcast_to(b_arr.reshape(b_arr.shape if b_arr.ndim == 0 else (-1,)), Y.shape)
    except ValueError:
        raise ValueError(f"b must be a scalar or have one range per observation ({Y.size}), got shape "
                         f"{np.shape(b)}") from None
    if not np.all(np.isfinite(b_arr)) or np.any(b_arr < 0):
        raise ValueError("b must be finite and ≥ 0")
    if np.any(Y < 0) or np.any(Y > b_arr):
        raise ValueError("Y must lie in [0, b] entrywise (an observation outside its range violates the "
                         "test's hypothesis; check it separately)")

    n = Y.size
    z = stats.norm.ppf(power)
    mean = float(Y.mean())
    s = float(np.sum(Y - 1.0))
    sb2 = float(np.sum(b_arr * b_arr))
    p_H = 1.0 if s <= 0 or sb2 == 0 else min(1.0, math.exp(-2.0 * s * s / sb2))
    k_fam = 2.0 if identical else 1.0
    s_star = math.sqrt(sb2 * math.log(k_fam / alpha) / 2.0)
    det_H = (s_star + z * math.sqrt(sb2) / 2.0) / n
    if identical:
        bmax = float(b_arr.max())
        var = float(Y.var(ddof=1)) if n >= 2 else 0.0
        p_EB = _eb_pvalue(mean, var, n, bmax)
        p = min(1.0, 2.0 * min(p_H, p_EB))
        if n >= 2:
            L = math.log(4.0 / alpha)
            det_EB = math.sqrt(2.0 * var * L / n) + 7.0 * bmax * L / (3.0 * (n - 1)) + z * math.sqrt(var / n)
        else:
            det_EB = math.inf
        detectable = min(det_H, det_EB)
        test = "Bonferroni (x2) of Hoeffding and Maurer-Pontil empirical Bernstein (i.i.d.), one-sided"
    else:
        p_EB, p, detectable = None, p_H, det_H
        test = "Hoeffding for independent bounded variables, one-sided"
    if p < alpha:
        status = "violated"
    elif max_excess is not None and detectable > max_excess:
        status = "insufficient evidence"
    else:
        status = "consistent"
    return {"status": status, "p_value": p, "alpha": alpha, "trials": n, "mean": mean, "test": test,
            "detectable": float(detectable), "power": power, "p_hoeffding": p_H, "p_bernstein": p_EB}


# ------------------------------------------------------------------------------------------------
# 3. power of the exact binomial test
# ------------------------------------------------------------------------------------------------
def binomial_power_detectable(T, p0, *, alpha: float, power: float = 0.9) -> float:
    """Smallest true exceedance probability ``p1`` that the exact one-sided binomial test of
    ``p ≤ p0`` with ``T`` trials at level ``alpha`` detects with probability ``≥ power``.

    The test rejects when the count reaches ``k_c``, the smallest ``k`` with ``P_{p0}(S ≥ k) ≤ alpha``;
    its power ``P_{p1}(S ≥ k_c)`` increases in ``p1`` and equals 1 at ``p1 = 1``, so ``p1`` is found by
    bisection (returned to within 1e-12, rounded up). Returns ``math.inf`` when the test can never
    reject (``P_{p0}(S = T) = p0^T > alpha``), i.e. no exceedance probability is detectable.
    """
    if isinstance(T, bool) or not isinstance(T, numbers.Integral) or T < 1:
        raise ValueError(f"T must be a positive integer number of trials, got {T!r}")
    T = int(T)
    if isinstance(p0, bool) or not isinstance(p0, numbers.Real) or not (0.0 <= float(p0) <= 1.0):
        raise ValueError(f"p0 must be a probability in [0, 1], got {p0!r}")
    p0 = float(p0)
    alpha = _prob(alpha, "alpha")
    power = _prob(power, "power")
    if stats.binom.pmf(T, T, p0) > alpha:
        return math.inf
    kc = max(1, int(stats.binom.isf(alpha, T, p0)))
    while kc > 1 and stats.binom.sf(kc - 2, T, p0) <= alpha:
        kc -= 1
    while stats.binom.sf(kc - 1, T, p0) > alpha:
        kc += 1
    lo, hi = p0, 1.0
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        if stats.binom.sf(kc - 1, T, mid) >= power:
            hi = mid
        else:
            lo = mid
    return hi
