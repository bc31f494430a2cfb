"""theory.Run: plain arrays read from any result object by duck typing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import algorithms as A
import theory as T


def _layer(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((20, 6)), rng.standard_normal((3, 6))


def test_from_optq_result():
    X, W = _layer()
    X[:, 2] = 0
    r = A.optq(W, X, grid=A.Grid.gptq(4, group_size=3), lam=0.0, order="decreasing")
    run = T.Run.from_result(r, X)
    assert run.algorithm == "optq" and run.dead == "zero" and not run.steps_fixed
    np.testing.assert_array_equal(run.W, np.asarray(r.W0))  # the loop's start (dead weights zeroed)
    assert np.all(run.W[:, 2] == 0)
    assert run.scale.shape == (3, 6) and run.qmin == 0 and run.qmax == 15
    assert run.dtype == "float64" and (run.n, run.N, run.m) == (3, 6, 20)
    assert run.data is run.X


def test_from_qronos_result_needs_the_original_weights():
    X, W = _layer(1)
    Xt = X + 0.01
    r = A.qronos(W, X, Xt, grid=A.Grid.symmetric(0.1, 100), lam=0.1, variant="original")
    with pytest.raises(ValueError, match="W="):
        T.Run.from_result(r, X, X_tilde=Xt)
    with pytest.raises(ValueError, match="X_tilde"):
        T.Run.from_result(r, X, W=W)
    run = T.Run.from_result(r, X, X_tilde=Xt, W=W)
    assert run.variant == "original" and run.y1 is not None and run.data is run.X_tilde


def test_from_rtn_and_float32_and_torch():
    X, W = _layer(2)
    run = T.Run.from_result(A.rtn(W.astype(np.float32), A.Grid.gptq(3)), X.astype(np.float32))
    assert run.algorithm == "rtn" and run.dtype == "float32"
    torch = pytest.importorskip("torch")
    r = A.optq(torch.from_numpy(W), torch.from_numpy(X), grid=A.Grid.gptq(4), lam=0.1)
    run = T.Run.from_result(r, torch.from_numpy(X))
    assert isinstance(run.Q, np.ndarray) and T.check("I1", run).consistent


def test_rows_and_replace():
    X, W = _layer(3)
    run = T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=0.1), X)
    sub = run.rows([2, 0])
    np.testing.assert_array_equal(sub.Q, run.Q[[2, 0]])
    assert sub.n == 2 and T.check("I1", sub).in_scope == 2
    assert run.replace(lam=0.5).lam == 0.5


def test_validation_names_the_field():
    X, W = _layer(4)
    good = T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=0.1), X)
    with pytest.raises(ValueError, match="X has 5 columns"):
        good.replace(X=X[:, :5])
    with pytest.raises(ValueError, match="Run.errors"):
        good.replace(errors=good.errors[:, :3])
    with pytest.raises(ValueError, match="permutation"):
        good.replace(order=np.zeros(6, dtype=int))
    with pytest.raises(ValueError, match="algorithm"):
        good.replace(algorithm="gptq2")
    with pytest.raises(ValueError, match="lam"):
        good.replace(lam=-1.0)


def test_duck_typed_result_without_optional_fields():
    X, W = _layer(5)
    r = A.optq(W, X, grid=A.Grid.symmetric(0.05, 1000), lam=0.2)
    duck = SimpleNamespace(Q=r.Q, errors=r.errors, z=r.z, order=r.order, saturated=r.saturated, clipped=r.clipped,
                           lam=r.lam, alphabet=r.alphabet, W0=r.W0, rounding="nearest", algorithm="optq")
    run = T.Run.from_result(duck, X)
    assert run.dead == "keep" and run.steps_fixed
    assert T.check("I1", run).consistent
