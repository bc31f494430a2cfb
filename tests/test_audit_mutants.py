"""Mutation meta-tests: every broken variant of OPTQ/Qronos is flagged by the audit; the
package's correct algorithms never are. Also a minimal counterexample is found and saved."""

from __future__ import annotations

import numpy as np
import pytest

import algorithms as A
from verify.audit import audit, implied_run
from verify.mutants import CORRECT, MUTANTS, reference_loop


def test_there_are_at_least_ten_mutants():
    assert len(MUTANTS) >= 10


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_flagged(name):
    f, kw = MUTANTS[name]
    rep = audit(f, stop_at_first=True, shrink=False, **kw)
    assert rep.flagged, rep.format()


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_correct_algorithm_is_never_flagged(name):
    f, kw = CORRECT[name]
    rep = audit(f, shrink=False, **kw)
    assert not rep.flagged, rep.format()
    # and the audit exercised the claims it is about
    assert rep.exit_code() == 0, rep.format()
    exercised = {k for k, c in list(rep.claims.items()) + list(rep.hypotheses.items()) if c["status"] == "consistent"}
    if kw["kind"] == "optq" and kw.get("rounding", "nearest") == "nearest":
        assert {"T1.sum_c", "T1.frobenius", "P1.drift", "hyp.on_grid", "hyp.nearest"} <= exercised
    if kw.get("rounding") == "stochastic":
        assert {"T2.hp.hoeffding", "T2.expectation", "hyp.unbiased"} <= exercised
    if kw["kind"] == "qronos-original":
        assert "T4.original.bound" in exercised
    # identities hold by construction for errors solved from Q: a checker may leave them out of scope
    for ident in ("I1", "T4.original.identity", "T4.projection.identity"):
        assert rep.claims[ident]["status"] in ("consistent", "out of scope"), (ident, rep.claims[ident])


def test_mutation_score_and_which_mutants_break_a_bound():
    """Mutation score 100 %; most mutants also break a bound itself (not only a hypothesis)."""
    flagged, by_bound = [], []
    for name, (f, kw) in MUTANTS.items():
        rep = audit(f, stop_at_first=False, shrink=False, families=("tall", "ill_conditioned", "duplicate"), **kw)
        if rep.flagged:
            flagged.append(name)
        if any(c["status"] == "violated" for c in rep.claims.values()):
            by_bound.append(name)
    assert sorted(flagged) == sorted(MUTANTS)
    assert len(by_bound) >= 8, by_bound


def test_reference_loop_is_the_package_optq():
    """The mutants are one bug away from a correct loop: without a bug it equals algorithms.optq."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 24))
    W = rng.standard_normal((5, 24))
    for g in (A.Grid.symmetric(0.1, 100), A.Grid.gptq(4), A.Grid.gptq(3, sym=False, group_size=8),
              A.Grid.gptq(3, group_size=8, static_groups=True)):
        for order in ("natural", "decreasing"):
            np.testing.assert_allclose(reference_loop(W, X, grid=g, lam=0.5, order=order),
                                       A.optq(W, X, grid=g, lam=0.5, order=order).Q, rtol=0, atol=1e-12)


def test_implied_errors_of_optq_are_its_own_errors():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((64, 20))
    W = rng.standard_normal((4, 20))
    g = A.Grid.gptq(4, group_size=5)
    r = A.optq(W, X, grid=g, lam=0.3, order="decreasing")
    run = implied_run("optq", W, r.Q, X, grid=g, lam=0.3, order="decreasing")
    np.testing.assert_array_equal(run.order, r.order)
    np.testing.assert_allclose(run.errors, r.errors, atol=1e-10)
    np.testing.assert_allclose(run.scale, r.alphabet.scale, rtol=1e-12)


def test_counterexample_is_shrunk_and_saved(tmp_path):
    f, kw = MUTANTS["wrong_sign"]
    rep = audit(f, stop_at_first=True, shrink=True, out_dir=tmp_path, families=("tall",), **kw)
    assert rep.flagged and rep.counterexamples
    ce = rep.counterexamples[0]
    z = np.load(ce["path"])
    assert z["W"].shape[1] <= 24 and z["X"].shape[1] == z["W"].shape[1]
    assert z["W"].size < 12 * 24  # smaller than the failing case it started from
