"""The generic checker's semantics: scope accounting, tolerances, exact tests, power helpers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

import algorithms as A
import theory as T
from theory.checker import poisson_binomial_sf


def test_poisson_binomial_tail_is_exact():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.6, 9)
    for k in range(0, 11):
        brute = 0.0
        for bits in itertools.product([0, 1], repeat=9):
            if sum(bits) >= k:
                brute += np.prod([pi if b else 1 - pi for pi, b in zip(p, bits)])
        assert abs(poisson_binomial_sf(k, p) - brute) < 1e-12
    # equal probabilities: the binomial tail
    assert abs(poisson_binomial_sf(3, np.full(20, 0.1)) - stats.binom.sf(2, 20, 0.1)) < 1e-12


def test_trials_for_power():
    T_ = T.trials_for_power(0.05, 0.15, alpha=1e-3, power=0.9)
    kc = next(k for k in range(T_ + 1) if stats.binom.sf(k - 1, T_, 0.05) <= 1e-3)
    assert stats.binom.sf(kc - 1, T_, 0.15) >= 0.9
    assert 100 < T_ < 2000
    with pytest.raises(ValueError):
        T.trials_for_power(0.2, 0.1)
    n = T.trials_for_power_expectation(0.1, 4.0, alpha=1e-3, power=0.9)
    assert n == math.ceil(16 * (math.sqrt(math.log(1e3)) + math.sqrt(math.log(10))) ** 2 / 0.02)


def _stoch_run(n=300, seed=0, eta_rows=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((30, 8))
    W = np.tile(rng.standard_normal(8), (n, 1))
    r = A.optq(W, X, grid=A.Grid.symmetric(0.1, 1000), lam=0.5, rounding="stochastic", rng=rng)
    return T.Run.from_result(r, X)


def test_probability_verdict_fields_and_binomial_test():
    run = _stoch_run()
    v = T.check("T2.hp.hoeffding", run, eta=0.2, alpha=0.01)
    assert v.kind == "probability bound" and v.trials == 300 and v.alpha == 0.01
    assert np.all(v.claimed_p == 0.2) and v.expected == pytest.approx(60.0)
    assert v.p_value == (1.0 if v.exceedances == 0 else stats.binomtest(v.exceedances, 300, 0.2, alternative="greater").pvalue)
    assert v.consistent and "binomial" in v.test
    d = v.to_dict()
    assert d["trials"] == 300 and d["claimed_p"] == 0.2 and d["status"] == "consistent"


def test_row_wise_probabilities_use_the_poisson_binomial_test():
    run = _stoch_run(n=50)
    th = np.linspace(0.001, 1.0, 50)  # per-row thresholds: different claimed probabilities
    v = T.check("T2.tail", run, threshold=th)
    assert "Poisson-binomial" in v.test and len(set(np.round(v.claimed_p, 12))) > 1
    assert not v.violated


def test_a_forced_excess_is_a_violation():
    """A threshold of zero claims P(‖·‖∞ > 0) ≤ Σ_i 2 = 1 (vacuous, clipped to 1): never violated;
    a tiny threshold with a fake tiny claimed probability is, via the Poisson-binomial tail."""
    run = _stoch_run(n=40)
    assert not T.check("T2.tail", run, threshold=0.0).violated
    from theory.checker import poisson_binomial_sf as sf

    assert sf(40, np.full(40, 0.01)) < 1e-70


def test_scope_accounting_per_row_and_per_run():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((25, 6))
    W = np.clip(rng.standard_normal((5, 6)) * 2, -2.5, 2.5)
    W[0] = 0.01  # stays inside the small grid
    r = A.optq(W, X, grid=A.Grid.symmetric(1.0, 2), lam=0.2)
    run = T.Run.from_result(r, X)
    v = T.check("T1.sum_c", run)
    assert v.in_scope + v.out_of_scope == 5 and v.in_scope >= 1
    assert list(v.rows) == sorted(v.rows) and len(v.lhs) == v.in_scope
    o = T.check("O1.det", run)
    assert (o.in_scope, o.out_of_scope) == (1, 0)
    assert T.check("T3.drift_bound", run.replace(lam=0.0)).status == "out of scope"


def test_identity_tolerance_follows_the_measured_float32_deviation():
    """The allowance is measured on the run (the same loop in float32 with the run's decisions), so it
    grows with cond(H_λ); where it exceeds NU_MAX of a step the run is out of scope for precision,
    with the number, never a pass."""
    rng = np.random.default_rng(2)
    from verify.strategies import make_X

    X = make_X("ill_conditioned", 60, 20, rng, cond=1e6).astype(np.float32)
    W = rng.standard_normal((3, 20)).astype(np.float32)
    tols = []
    for rel in (1.0, 1e-1, 1e-2):
        lam = rel * float(np.mean(np.sum(X.astype(float) ** 2, axis=0)))
        run = T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=lam), X)
        assert run.precision == "float32"
        v = T.check("I1", run)
        assert v.consistent, v
        tols.append(v.tolerance["atol_max"] / float(np.max(v.rhs)))
    assert max(tols[:2]) < tols[2] < 1e-2
    lam = 1e-8 * float(np.mean(np.sum(X.astype(float) ** 2, axis=0)))
    v = T.check("I1", T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=lam), X))
    assert v.out_of_scope >= 1 and any("precision" in k and "ν/δ" in k for k in v.reasons), v.reasons


def test_precision_comes_from_the_run_not_from_Q_dtype():
    """Casting a float64 run's Q (and record) to float32 does not loosen anything: the precision is a
    field of the run, float64 unless the run says how it was computed."""
    rng = np.random.default_rng(4)
    X, W = rng.standard_normal((40, 12)), rng.standard_normal((4, 12))
    run = T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=1.0), X)
    cast = run.replace(Q=run.Q.astype(np.float32))
    assert cast.precision == "float64"
    assert T.check("I1", cast).tolerance["precision"] == "float64"
    with pytest.raises(ValueError, match="precision"):
        run.replace(precision="float31")


def test_check_accepts_ids_and_records():
    run = _stoch_run(n=5)
    assert T.check(T.CLAIMS["I1"], run).claim == "I1"
    with pytest.raises(KeyError, match="known ids"):
        T.check("T42", run)
    with pytest.raises(ValueError, match="eta"):
        T.check("T2.hp.hoeffding", run, eta=1.5)


@pytest.mark.parametrize("case", ["optq", "optq-saturating", "qronos-original", "qronos-projection", "dead"])
def test_row_batches_give_the_verdicts_of_the_whole_run(case):
    """T.check_all(..., row_batch=k): the same status, counts, reasons, worst ratio and rows as the
    whole run, for every claim and hypothesis (per-run quantities are shared between batches)."""
    rng = np.random.default_rng(3)
    m, N, n = 60, 12, 23
    X = rng.standard_normal((m, N))
    if case == "dead":
        X[:, 4] = 0
    Xt = X + 0.05 * rng.standard_normal((m, N))
    W = rng.standard_normal((n, N)) * 0.3
    K = int(np.ceil(np.abs(W).max() / 0.05 - 0.5))  # a symmetric grid that just reaches the weights
    grid = A.Grid.symmetric(0.05, K) if case == "optq-saturating" else A.Grid.gptq(4)
    if case.startswith("qronos"):
        r = A.qronos(W, X, Xt, grid=grid, lam=0.5, variant=case.split("-")[1])
        run = T.Run.from_result(r, X, X_tilde=Xt, W=W)
    else:
        r = A.optq(W, X, grid=grid, lam=0.01 if case == "optq-saturating" else 0.5)
        run = T.Run.from_result(r, X)
        if case == "optq":  # GPTQ's min/max grid saturates some rows: their out-of-scope reasons merge too
            assert 0 < int(np.sum(r.saturated)) < n
    whole = T.check_all(run)
    batched = T.check_all(run, row_batch=5)
    assert set(whole) == set(batched)
    for k, a in whole.items():
        b = batched[k]
        da, db = a.to_dict(), b.to_dict()
        assert da == db, (k, da, db)
        assert np.array_equal(a.rows, b.rows) and np.allclose(a.ratio, b.ratio, equal_nan=True), k


def test_row_batches_refuse_statistical_runs():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 6))
    r = A.optq(np.tile(rng.standard_normal((1, 6)), (8, 1)), X, grid=A.Grid.integers(0.1), lam=0.5,
               rounding="stochastic", rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match="row_batch"):
        T.check_all(T.Run.from_result(r, X), row_batch=3)
