"""Stochastic rounding: unbiased (exact binomial and Hoeffding tests at stated false-alarm
rates), errors in (−δ, δ), reproducible from the seed.

Each statistical test has a declared false-alarm rate ALPHA; the last test shows that the same
statistics reject a rounding biased by 0.05, so they have power.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from scipy.stats import binomtest

import algorithms as A

loop_module = importlib.import_module("algorithms.loop")

ALPHA = 1e-6  # false-alarm rate of each statistical test in this file
R = 20_000  # trials (rows)


def _layer(N=12, m=40, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, N)), rng.standard_normal(N)


def _up_fraction_test(run, w, delta, alpha=ALPHA):
    """Exact two-sided binomial test that the first processed coordinate rounds up with
    probability frac(w_f/δ), as E Q_s(z) = z requires."""
    f = int(run.order[0])
    u = w[f] / delta
    frac = u - math.floor(u)
    ups = int(np.sum(run.Q[:, f] > w[f]))
    return binomtest(ups, run.Q.shape[0], frac).pvalue, frac


@pytest.mark.parametrize("frac", [0.1, 0.25, 0.5, 0.8])
def test_first_coordinate_rounds_up_with_probability_frac(frac):
    X, w = _layer()
    delta = 0.1
    w[0] = (3 + frac) * delta
    W = np.repeat(w[None, :], R, axis=0)
    r = A.optq(W, X, grid=A.Grid.symmetric(delta, 1000), lam=0.1, rounding="stochastic",
               rng=np.random.default_rng(1))
    p, f = _up_fraction_test(r, w, delta)
    assert f == pytest.approx(frac)
    assert p > ALPHA, p


def _hoeffding_mean_test(E, delta, alpha=ALPHA):
    """Every column of E (trials × N) has mean zero: |mean| ≤ δ·√(2·log(2N/α)/R) for all N
    columns simultaneously with probability ≥ 1 − α (Hoeffding, errors in (−δ, δ); union bound)."""
    Rn, N = E.shape
    bound = delta * math.sqrt(2 * math.log(2 * N / alpha) / Rn)
    return np.max(np.abs(E.mean(axis=0))), bound


def test_every_error_has_mean_zero_and_lies_in_minus_delta_delta():
    X, w = _layer(N=16)
    delta = 0.07
    W = np.repeat(w[None, :], R, axis=0)
    r = A.optq(W, X, grid=A.Grid.symmetric(delta, 1000), lam=0.3, order="decreasing",
               rounding="stochastic", rng=np.random.default_rng(2))
    assert not r.saturated.any()
    assert np.all(np.abs(r.errors) < delta)
    worst, bound = _hoeffding_mean_test(r.errors, delta)
    assert worst <= bound, (worst, bound)
    # the errors are not degenerate: both directions occur in every column
    assert np.all((r.errors > 0).any(axis=0)) and np.all((r.errors < 0).any(axis=0))


def test_stochastic_rtn_and_qronos_are_unbiased():
    rng = np.random.default_rng(3)
    X, w = _layer(N=10)
    delta = 0.05
    W = np.repeat(w[None, :], R, axis=0)
    t = A.rtn(W, A.Grid.symmetric(delta, 1000), rounding="stochastic", rng=np.random.default_rng(4))
    worst, bound = _hoeffding_mean_test(t.errors, delta)
    assert worst <= bound
    Xt = X + 0.1 * rng.standard_normal(X.shape)
    for variant in ("projection", "original"):
        q = A.qronos(W, X, Xt, grid=A.Grid.symmetric(delta, 1000), lam=0.2, variant=variant,
                     rounding="stochastic", rng=np.random.default_rng(5))
        assert np.all(np.abs(q.errors) < delta)
        worst, bound = _hoeffding_mean_test(q.errors, delta)
        assert worst <= bound, (variant, worst, bound)


def test_gptq_grid_stochastic_errors_below_one_step():
    X, w = _layer(N=32, m=100)
    W = np.repeat(w[None, :], 2000, axis=0) * 0.3
    r = A.optq(W, X, grid=A.Grid.gptq(4, group_size=8), percdamp=0.01, rounding="stochastic",
               rng=np.random.default_rng(6))
    o = np.asarray(r.order)
    step = r.alphabet.scale[:, o]
    ok = ~r.clipped
    assert np.all(np.abs(r.errors[ok]) < step[ok])


def test_same_seed_same_result_and_different_seed_differs():
    X, w = _layer()
    W = np.repeat(w[None, :], 50, axis=0)
    kw = dict(grid=A.Grid.gptq(3), lam=0.1, rounding="stochastic", order="random")
    a = A.optq(W, X, rng=np.random.default_rng(7), **kw)
    b = A.optq(W, X, rng=np.random.default_rng(7), **kw)
    c = A.optq(W, X, rng=np.random.default_rng(8), **kw)
    np.testing.assert_array_equal(a.Q, b.Q)
    np.testing.assert_array_equal(a.order, b.order)
    assert not np.array_equal(a.Q, c.Q)


def test_nearest_rounding_ignores_rng():
    X, w = _layer()
    a = A.optq(w[None, :], X, grid=A.Grid.gptq(3), lam=0.1, rng=np.random.default_rng(1))
    b = A.optq(w[None, :], X, grid=A.Grid.gptq(3), lam=0.1, rng=np.random.default_rng(2))
    np.testing.assert_array_equal(a.Q, b.Q)


def test_the_statistics_reject_a_biased_rounding(monkeypatch):
    """Power: rounding up with probability frac + 0.05 is rejected by both tests above."""
    real = loop_module.uniforms

    def biased(xp, rng, shape, like):
        return np.clip(real(xp, rng, shape, like=like) - 0.05, 0.0, 1.0)

    monkeypatch.setattr(loop_module, "uniforms", biased)
    X, w = _layer(N=16)
    delta = 0.1
    w[0] = 3.3 * delta
    W = np.repeat(w[None, :], R, axis=0)
    r = A.optq(W, X, grid=A.Grid.symmetric(delta, 1000), lam=0.1, rounding="stochastic",
               rng=np.random.default_rng(1))
    p, _ = _up_fraction_test(r, w, delta)
    assert p < ALPHA
    worst, bound = _hoeffding_mean_test(r.errors, delta)
    assert worst > bound
