"""Tests of theory.stats: validity (false-alarm rates), power (detection of biased rounding and of
excess expectations), exactness of the Poisson-binomial tails, and input validation."""

import itertools
import math
import time

import numpy as np
import pytest
from scipy import stats

from theory.stats import (
    _chernoff_two_sided,
    _exact_two_sided,
    binomial_power_detectable,
    expectation_test,
    unbiased_rounding_test,
)


def envelope(sims, alpha):
    """Upper end of the allowed false-alarm count: mean + 3 binomial standard deviations."""
    return alpha * sims + 3 * math.sqrt(sims * alpha * (1 - alpha))


def sequential_rounding(rng, n, N, mode="unbiased"):
    """Rows of a sequential rounding process whose fractional parts depend on the row's own past:
    ``u_t = 8 + a_t + 0.37·Σ_{j<t} (u_j − k_j)``; ``mode``: "unbiased" (P(up) = f), "biased"
    (P(up) = min(1, f + 0.25) at every other column) or "nearest" (deterministic rounding)."""
    a = rng.uniform(0.0, 1.0, (n, N))
    u = np.empty((n, N))
    k = np.empty((n, N))
    err = np.zeros(n)
    for t in range(N):
        u[:, t] = 8.0 + a[:, t] + 0.37 * err
        fl = np.floor(u[:, t])
        f = u[:, t] - fl
        if mode == "nearest":
            up = f >= 0.5
        else:
            prob = np.minimum(1.0, f + 0.25) if (mode == "biased" and t % 2 == 1) else f
            up = rng.random(n) < prob
        k[:, t] = fl + up
        err += u[:, t] - k[:, t]
    f = u - np.floor(u)
    valid = (f > 1e-9) & (f < 1 - 1e-9)
    return u, k, valid


# ------------------------------------------------------------------------------------------------
# Poisson-binomial column tails
# ------------------------------------------------------------------------------------------------
def test_exact_column_tails_match_enumeration():
    rng = np.random.default_rng(1)
    n = 8
    p = rng.uniform(0, 1, (n, 3))
    p[2, 1] = 0.0
    outcomes = np.array(list(itertools.product([0, 1], repeat=n)))
    for j in range(3):
        prob = np.prod(np.where(outcomes == 1, p[:, j], 1 - p[:, j]), axis=1)
        S = outcomes.sum(1)
        for s in range(n + 1):
            ref = min(1.0, 2 * min(prob[S >= s].sum(), prob[S <= s].sum()))
            ss = np.full(3, s)
            assert _exact_two_sided(p, ss)[j] == pytest.approx(ref, rel=1e-10, abs=1e-300)
            assert _chernoff_two_sided(p, ss)[j] >= ref * (1 - 1e-9)  # a bound, never below


def test_chernoff_is_a_bound_and_exact_at_the_ends():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, (300, 40))
    s = (rng.random(p.shape) < np.clip(p + rng.uniform(-0.2, 0.2, 40), 0, 1)).sum(0)
    ex, ch = _exact_two_sided(p, s), _chernoff_two_sided(p, s)
    assert np.all(ch >= ex * (1 - 1e-9))
    small = ex < 1e-2
    assert small.sum() >= 5 and np.all(ch[small] <= 100 * ex[small])  # not much weaker where it matters
    s_end = np.where(np.arange(40) % 2 == 0, 0, 300)
    assert _chernoff_two_sided(p, s_end) == pytest.approx(_exact_two_sided(p, s_end), rel=1e-9)


# ------------------------------------------------------------------------------------------------
# 1. unbiased stochastic rounding
# ------------------------------------------------------------------------------------------------
def test_detects_rounding_biased_at_every_other_column():
    u, k, valid = sequential_rounding(np.random.default_rng(3), 600, 24, "biased")
    r = unbiased_rounding_test(u, k, valid, alpha=0.05)
    assert r["status"] == "violated" and r["p_value"] < 1e-10
    assert r["worst_column"]["index"] % 2 == 1
    assert r["ups"] > r["expected_ups"]
    assert r["trials"] == int(valid.sum()) and r["bad_levels"] == 0


@pytest.mark.parametrize("n", [100, 300])
def test_detects_nearest_rounding_presented_as_stochastic(n):
    u, k, valid = sequential_rounding(np.random.default_rng(4), n, 24, "nearest")
    r = unbiased_rounding_test(u, k, valid, alpha=0.05)
    assert r["status"] == "violated" and r["p_value"] < 1e-6
    assert r["p_direction"] < r["p_pooled"]  # the directional family is the one that sees it


@pytest.mark.parametrize("seed", range(10))
def test_nearest_rounding_with_few_rows_is_never_consistent(seed):
    u, k, valid = sequential_rounding(np.random.default_rng(100 + seed), 5, 24, "nearest")
    r = unbiased_rounding_test(u, k, valid, alpha=0.05)
    assert r["status"] in ("violated", "insufficient evidence")


def test_few_rows_of_unbiased_rounding_is_insufficient_evidence():
    u, k, valid = sequential_rounding(np.random.default_rng(5), 5, 24)
    r = unbiased_rounding_test(u, k, valid, alpha=0.05, max_bias=0.1)
    assert r["status"] == "insufficient evidence" and r["detectable"] > 0.1


def test_false_alarm_rate_of_unbiased_sequential_rounding():
    rng = np.random.default_rng(6)
    sims, alpha = 300, 0.05
    alarms, col_small, cols = 0, 0, 0
    consistent = 0
    for _ in range(sims):
        u, k, valid = sequential_rounding(rng, 100, 24)
        r = unbiased_rounding_test(u, k, valid, alpha=alpha)
        alarms += r["status"] == "violated"
        consistent += r["status"] == "consistent"
        # the per-column p-values are individually valid: check them at 0.05 as well
        f = np.where(valid, u - np.floor(u), 0.0)
        up = valid & (k == np.floor(u) + 1)
        pc = _exact_two_sided(f, up.sum(0))
        col_small += int((pc <= 0.05).sum())
        cols += pc.size
    assert alarms <= envelope(sims, alpha)
    assert col_small <= 0.05 * cols + math.sqrt(cols * math.log(1e4) / 2)
    assert consistent >= sims - envelope(sims, alpha)  # enough power at n = 100 for max_bias = 0.1


def test_false_alarm_rate_with_chernoff_columns():
    rng = np.random.default_rng(7)
    sims, alpha = 100, 0.05
    alarms = 0
    for _ in range(sims):
        u, k, valid = sequential_rounding(rng, 100, 24)
        r = unbiased_rounding_test(u, k, valid, alpha=alpha, exact_budget=1)
        assert "Chernoff" in r["test"]
        alarms += r["status"] == "violated"
    assert alarms <= envelope(sims, alpha)


def test_biased_rounding_detected_by_chernoff_columns():
    u, k, valid = sequential_rounding(np.random.default_rng(8), 600, 24, "biased")
    r = unbiased_rounding_test(u, k, valid, alpha=0.05, exact_budget=1)
    assert r["status"] == "violated" and r["p_columns"] < 1e-10


def test_impossible_level_is_a_violation():
    u, k, valid = sequential_rounding(np.random.default_rng(9), 200, 8)
    k = k.copy()
    k[3, 4] += 2
    r = unbiased_rounding_test(u, k, valid, alpha=0.05)
    assert r["bad_levels"] == 1 and r["status"] == "violated"
    valid2 = valid.copy()
    valid2[3, 4] = False  # a clipped entry is not counted
    assert unbiased_rounding_test(u, k, valid2, alpha=0.05)["bad_levels"] == 0


def test_detectable_bias_formula_and_power():
    alpha, power = 0.05, 0.9
    u, k, valid = sequential_rounding(np.random.default_rng(10), 100, 24)
    r = unbiased_rounding_test(u, k, valid, alpha=alpha, power=power)
    T = r["trials"]
    assert r["horizon"] == 2400
    a_star = math.sqrt(r["horizon"] * math.log(6 / alpha) / 2)
    assert r["detectable"] == pytest.approx((a_star + stats.norm.ppf(power) * math.sqrt(T) / 2) / T)
    # a uniform bias of `detectable` (f kept in [0.3, 0.6] so f + b stays a probability) is detected
    # with frequency ≥ power − simulation slack
    rng = np.random.default_rng(11)
    b = r["detectable"]
    hits = 0
    for _ in range(100):
        f = rng.uniform(0.3, 0.6, (100, 24))
        uu = 5 + f
        kk = 5 + (rng.random(f.shape) < f + b)
        hits += unbiased_rounding_test(uu, kk, np.ones(f.shape, bool), alpha=alpha)["status"] == "violated"
    assert hits >= 100 * power - 3 * math.sqrt(100 * power * (1 - power))


def test_no_valid_entries():
    u = np.full((3, 4), 2.5)
    r = unbiased_rounding_test(u, np.full((3, 4), 2), np.zeros((3, 4), bool), alpha=0.05)
    assert r["status"] == "insufficient evidence" and r["trials"] == 0
    assert r["detectable"] == math.inf and r["worst_column"] is None and r["p_value"] == 1.0


def test_large_run_is_fast():
    rng = np.random.default_rng(12)
    n, N = 20000, 256
    u = rng.uniform(0, 15, (n, N))
    k = np.floor(u) + (rng.random((n, N)) < u - np.floor(u))
    t0 = time.perf_counter()
    r = unbiased_rounding_test(u, k, np.ones((n, N), bool), alpha=0.05)
    assert time.perf_counter() - t0 < 20
    assert r["status"] == "consistent" and "Chernoff" in r["test"]


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.5), "alpha"), (dict(alpha=0.05, power=1.0), "power"),
    (dict(alpha=0.05, max_bias=-0.1), "max_bias"), (dict(alpha=0.05, exact_budget=0), "exact_budget"),
])
def test_rounding_rejects_bad_parameters(kwargs, match):
    u = np.full((2, 3), 1.5)
    with pytest.raises(ValueError, match=match):
        unbiased_rounding_test(u, np.ones((2, 3)), np.ones((2, 3), bool), **kwargs)


def test_rounding_rejects_bad_arrays():
    u = np.full((2, 3), 1.5)
    k = np.ones((2, 3))
    v = np.ones((2, 3), bool)
    with pytest.raises(ValueError, match="u must be a 2-D"):
        unbiased_rounding_test(u[0], k[0], v[0], alpha=0.05)
    with pytest.raises(ValueError, match="k must have the shape"):
        unbiased_rounding_test(u, k[:, :2], v, alpha=0.05)
    with pytest.raises(ValueError, match="valid must be a boolean"):
        unbiased_rounding_test(u, k, v.astype(int), alpha=0.05)
    with pytest.raises(ValueError, match="valid must have the shape"):
        unbiased_rounding_test(u, k, v[:1], alpha=0.05)
    bad_u = u.copy()
    bad_u[0, 0] = np.nan
    with pytest.raises(ValueError, match="u must be finite"):
        unbiased_rounding_test(bad_u, k, v, alpha=0.05)
    v2 = v.copy()
    v2[0, 0] = False
    unbiased_rounding_test(bad_u, k, v2, alpha=0.05)  # NaN allowed where not valid
    with pytest.raises(ValueError, match="k must hold finite integer"):
        unbiased_rounding_test(u, k + 0.5, v, alpha=0.05)
    with pytest.raises(ValueError, match="u must be a real numeric"):
        unbiased_rounding_test(u.astype(str), k, v, alpha=0.05)


# ------------------------------------------------------------------------------------------------
# 2. expectation claims
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, b", [(2000, 10.0), (5000, 20.0)])
def test_low_variance_excess_detected_where_hoeffding_is_not(n, b):
    rng = np.random.default_rng(20)
    Y = np.clip(1.1 + 0.05 * rng.standard_normal(n), 0, b)
    r = expectation_test(Y, b, identical=True, alpha=0.05)
    assert r["status"] == "violated" and r["p_value"] < 0.05
    assert r["p_hoeffding"] >= 0.05  # Hoeffding alone cannot see it
    assert r["p_value"] == pytest.approx(min(1.0, 2 * r["p_bernstein"]))
    # not identical: Hoeffding only
    r2 = expectation_test(Y, b, identical=False, alpha=0.05)
    assert r2["p_bernstein"] is None and r2["p_value"] == r["p_hoeffding"] and r2["status"] == "consistent"


def test_hoeffding_pvalue_formula():
    rng = np.random.default_rng(21)
    b = rng.uniform(1, 3, 500)
    Y = np.clip(1.2 + 0.3 * rng.standard_normal(500), 0, b)
    r = expectation_test(Y, b, identical=False, alpha=0.01)
    s = float(np.sum(Y - 1))
    assert r["p_value"] == pytest.approx(math.exp(-2 * s * s / np.sum(b * b)))
    assert r["mean"] == pytest.approx(Y.mean()) and r["trials"] == 500
    assert expectation_test(np.full(10, 0.5), 1.0, identical=False, alpha=0.01)["p_value"] == 1.0


def test_empirical_bernstein_pvalue_solves_the_bound():
    rng = np.random.default_rng(22)
    n, b = 3000, 5.0
    Y = np.clip(1.05 + 0.2 * rng.standard_normal(n), 0, b)
    r = expectation_test(Y, b, identical=True, alpha=0.05)
    L = math.log(2 / r["p_bernstein"])
    V = Y.var(ddof=1)
    lower = Y.mean() - math.sqrt(2 * V * L / n) - 7 * b * L / (3 * (n - 1))
    assert lower == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("law", ["uniform", "two-point", "heterogeneous"])
def test_expectation_false_alarms_at_the_null(law):
    rng = np.random.default_rng(23)
    sims, alpha, n = 300, 0.01, 400
    alarms = 0
    for _ in range(sims):
        if law == "uniform":
            b, identical = 2.0, True
            Y = rng.uniform(0.5, 1.5, n)
        elif law == "two-point":  # the largest variance with mean 1 in [0, 4]
            b, identical = 4.0, True
            Y = 4.0 * (rng.random(n) < 0.25)
        else:
            b, identical = rng.uniform(1.0, 6.0, n), False
            Y = b * (rng.random(n) < 1 / b)
        alarms += expectation_test(Y, b, identical=identical, alpha=alpha)["status"] == "violated"
    assert alarms <= envelope(sims, alpha)


def test_expectation_detectable_and_power():
    rng = np.random.default_rng(24)
    alpha, power, n, b = 0.05, 0.9, 2000, 10.0
    Y0 = np.clip(1.0 + 0.05 * rng.standard_normal(n), 0, b)
    eps = expectation_test(Y0, b, identical=True, alpha=alpha, power=power)["detectable"]
    assert 0 < eps < 0.1
    hits = sum(expectation_test(np.clip(1 + eps + 0.05 * rng.standard_normal(n), 0, b), b, identical=True,
                                alpha=alpha)["status"] == "violated" for _ in range(100))
    assert hits >= 100 * power - 3 * math.sqrt(100 * power * (1 - power))
    small = expectation_test(Y0[:50], b, identical=True, alpha=alpha, max_excess=0.1)
    assert small["status"] == "insufficient evidence" and small["detectable"] > 0.1
    assert expectation_test(Y0, b, identical=True, alpha=alpha, max_excess=0.1)["status"] == "consistent"


@pytest.mark.parametrize("Y, b, kwargs, match", [
    ([], 1.0, {}, "Y is empty"),
    ([0.5, np.nan], 1.0, {}, "Y must be finite"),
    ([0.5, 1.5], 1.0, {}, r"Y must lie in \[0, b\]"),
    ([-0.1, 0.5], 1.0, {}, r"Y must lie in \[0, b\]"),
    ([0.5, 0.5], -1.0, {}, "b must be finite"),
    ([0.5, 0.5], [1.0, 1.0, 1.0], {}, "b must be a scalar or have one range"),
    ([0.5, 0.5], 1.0, dict(alpha=0.0), "alpha"),
    ([0.5, 0.5], 1.0, dict(power=2.0), "power"),
    ([0.5, 0.5], 1.0, dict(max_excess=0.0), "max_excess"),
    ([0.5, 0.5], 1.0, dict(identical="yes"), "identical"),
])
def test_expectation_rejects_bad_input(Y, b, kwargs, match):
    kw = dict(identical=True, alpha=0.05) | kwargs
    with pytest.raises(ValueError, match=match):
        expectation_test(np.asarray(Y, dtype=float), b, **kw)


# ------------------------------------------------------------------------------------------------
# 3. power of the exact binomial test
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T, p0, alpha, power", [(1000, 0.05, 0.01, 0.9), (200, 0.1, 0.05, 0.8), (50, 0.01, 0.05, 0.9)])
def test_binomial_power_detectable_against_scipy(T, p0, alpha, power):
    p1 = binomial_power_detectable(T, p0, alpha=alpha, power=power)
    # critical count computed directly: the smallest k with P_{p0}(S ≥ k) ≤ alpha
    ks = np.arange(T + 2)
    kc = int(ks[np.argmax(stats.binom.sf(ks - 1, T, p0) <= alpha)])
    assert stats.binom.sf(kc - 1, T, p0) <= alpha < stats.binom.sf(kc - 2, T, p0)
    assert p0 < p1 <= 1
    assert stats.binom.sf(kc - 1, T, p1) >= power
    assert stats.binom.sf(kc - 1, T, p1 - 1e-7) < power
    # and by simulation of the exact test with scipy's own p-value
    rng = np.random.default_rng(30)
    counts = rng.binomial(T, p1, size=4000)
    rejected = np.mean([stats.binomtest(int(c), T, p0, alternative="greater").pvalue <= alpha for c in counts[:400]])
    assert rejected >= power - 3 * math.sqrt(power * (1 - power) / 400)
    assert np.mean(counts >= kc) == pytest.approx(power, abs=3 * math.sqrt(power * (1 - power) / 4000) + 0.01)


def test_binomial_power_detectable_closed_form_and_unreachable():
    # p0 = 0: reject at the first exceedance, power 1 − (1 − p1)^T
    T, power = 30, 0.9
    assert binomial_power_detectable(T, 0.0, alpha=0.05, power=power) == pytest.approx(
        1 - (1 - power) ** (1 / T), abs=1e-9)
    assert binomial_power_detectable(10, 0.9, alpha=0.01) == math.inf  # 0.9**10 > 0.01: never rejects
    assert binomial_power_detectable(10, 1.0, alpha=0.01) == math.inf


@pytest.mark.parametrize("args, kwargs, match", [
    ((0, 0.1), dict(alpha=0.05), "T must be"), ((10.5, 0.1), dict(alpha=0.05), "T must be"),
    ((10, -0.1), dict(alpha=0.05), "p0 must be"), ((10, 1.1), dict(alpha=0.05), "p0 must be"),
    ((10, 0.1), dict(alpha=1.0), "alpha"), ((10, 0.1), dict(alpha=0.05, power=0.0), "power"),
])
def test_binomial_power_detectable_rejects_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        binomial_power_detectable(*args, **kwargs)
