"""The exact quantities (SPEC §3) against slow reference definitions, including cond(H_λ) ≥ 1e10.

References (written here from the definitions, no package code): the Schur complement of the
trailing block, dist² to a span by least squares on ``X_λ = [X; √λ I]``, ridge regression by a
linear solve, ``ŵ`` by the normal equations. Tolerances: a Cholesky pivot carries an absolute
error of order ``N·eps·‖H_λ‖`` (backward stability), so ``c_t`` is compared with an absolute
tolerance ``32·N·eps·‖H_λ‖``; whole-matrix identities scale the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import algorithms as A
from theory import quantities as qt
from verify.strategies import layers, make_X, mismatch

EPS = np.finfo(float).eps


def schur_c(X, lam, perm):
    N = X.shape[1]
    H = X.T @ X + lam * np.eye(N)
    Hp = H[np.ix_(perm, perm)]
    out = np.empty(N)
    for t in range(N):
        b = Hp[t + 1:, t]
        out[t] = Hp[t, t] - (b @ np.linalg.solve(Hp[t + 1:, t + 1:], b) if t + 1 < N else 0.0)
    return out


def dist2_c(X, lam, perm):
    m, N = X.shape
    Xl = np.vstack([X, np.sqrt(lam) * np.eye(N)])[:, perm]
    out = np.empty(N)
    for t in range(N):
        A_ = Xl[:, t + 1:]
        y = Xl[:, t]
        if A_.shape[1]:
            v = np.linalg.lstsq(A_, y, rcond=None)[0]
            y = y - A_ @ v
        out[t] = y @ y
    return out


def ridge_beta(X, lam, perm, t):
    Xp = X[:, perm]
    A_ = Xp[:, t + 1:]
    return np.linalg.solve(A_.T @ A_ + lam * np.eye(A_.shape[1]), A_.T @ Xp[:, t])


def Hnorm(X, lam):
    return float(np.linalg.eigvalsh(X.T @ X)[-1]) + lam


@st.composite
def data(draw):
    cond = draw(st.sampled_from([1e2, 1e10, 1e12]))
    layer = draw(layers(N=(1, 12), n=(1, 2), cond=cond))
    X = layer.X
    mean = float(np.mean(np.sum(X**2, axis=0))) or 1.0
    rels = [1e-9, 1e-3, 1.0] if layer.singular else [0.0, 1e-12, 1e-3, 1.0]
    lam = draw(st.sampled_from(rels)) * mean
    N = X.shape[1]
    perm = np.array(draw(st.permutations(range(N))))
    return X, lam, perm, layer.regime


@settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data())
def test_c_against_schur_complement_and_distance_to_span(case):
    X, lam, perm, regime = case
    try:
        c = qt.c(X, lam, perm)
    except ValueError:
        assert lam == 0.0
        return
    atol = 32 * X.shape[1] * EPS * Hnorm(X, lam)
    np.testing.assert_allclose(c, dist2_c(X, lam, perm), rtol=0, atol=atol)
    if lam > 0 or np.linalg.matrix_rank(X) == X.shape[1]:
        np.testing.assert_allclose(c, schur_c(X, lam, perm), rtol=0, atol=atol * 10)
    assert np.all(c > 0) or lam == 0


@pytest.mark.parametrize("cond", [1e11, 1e12, 1e14])
def test_c_at_high_condition_numbers(cond):
    rng = np.random.default_rng(int(np.log10(cond)))
    X = make_X("ill_conditioned", 40, 12, rng, cond=cond)
    for lam in (0.0, 1e-10):
        H = X.T @ X + lam * np.eye(12)
        assert np.linalg.cond(H) >= 1e10
        perm = rng.permutation(12)
        c = qt.c(X, lam, perm)
        atol = 32 * 12 * EPS * Hnorm(X, lam)
        np.testing.assert_allclose(c, dist2_c(X, lam, perm), rtol=0, atol=atol)
        # the product identity in the log domain, against an LU determinant
        sign, ld = np.linalg.slogdet(H)
        assert sign > 0
        assert abs(np.sum(np.log(c)) - ld) <= 2 * np.sum(atol / c) + 1e-12


def test_product_of_c_is_the_determinant_for_every_order():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((9, 6))
    ld = np.linalg.slogdet(X.T @ X + 0.2 * np.eye(6))[1]
    for _ in range(5):
        c = qt.c(X, 0.2, rng.permutation(6))
        assert abs(np.sum(np.log(c)) - ld) < 1e-12 * abs(ld) + 1e-12
    assert abs(qt.logdet(X, 0.2) - ld) < 1e-12


def test_M_B_R_and_the_optq_recurrences():
    """w − q = Mᵀe, z − w = Bᵀe (B strictly upper), R has orthogonal columns of squared norm c_t."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 10)) * np.exp(rng.uniform(-1, 1, 10))
    W = rng.standard_normal((4, 10))
    lam = 0.3
    r = A.optq(W, X, grid=A.Grid.gptq(3), lam=lam, order="decreasing")
    perm = np.asarray(r.order)
    fac = qt.factor(X, lam, perm)
    Mm, Bm, R = fac.M(), fac.B(), fac.R(X)
    assert np.allclose(np.diag(Mm), 1) and np.allclose(np.tril(Mm, -1), 0)
    assert np.allclose(np.tril(Bm), 0)
    e = np.asarray(r.errors)
    np.testing.assert_allclose((np.asarray(r.W0) - np.asarray(r.Q))[:, perm], e @ Mm, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(r.z) - np.asarray(r.W0)[:, perm], e @ Bm, rtol=1e-10, atol=1e-10)
    G = R.T @ R
    tol = 32 * 10 * EPS * Hnorm(X, lam)
    np.testing.assert_allclose(np.diag(G), fac.c, rtol=0, atol=tol)
    assert np.max(np.abs(G - np.diag(np.diag(G)))) <= tol
    np.testing.assert_allclose(R[:30], qt.R(X, lam, perm, block="X"))
    np.testing.assert_allclose(R[30:], qt.R(X, lam, perm, block="lam"))
    # M = D⁻¹U with H⁻¹ = UᵀU (reference: invert H, only here, in the test)
    Hp = (X.T @ X + lam * np.eye(10))[np.ix_(perm, perm)]
    U = np.linalg.cholesky(np.linalg.inv(Hp)).T
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(Hp), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(Mm, U / np.diag(U)[:, None], rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fac.c, 1 / np.diag(U) ** 2, rtol=1e-9)


def test_rows_of_B_are_the_ridge_vectors_and_the_lambda_derivative():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((7, 6))
    perm = rng.permutation(6)
    for lam in (1e-3, 0.5, 20.0):
        Bm = qt.B(X, lam, perm)
        for t in range(5):
            np.testing.assert_allclose(Bm[t, t + 1:], ridge_beta(X, lam, perm, t), rtol=1e-9, atol=1e-12)
        d = qt.dc_dlam(X, lam, perm)
        h = 1e-5 * lam
        fd = (qt.c(X, lam + h, perm) - qt.c(X, lam - h, perm)) / (2 * h)
        np.testing.assert_allclose(d, fd, rtol=1e-5)
        assert np.all(d >= 1)
        np.testing.assert_allclose(qt.drift(X, lam, perm), np.linalg.norm(Bm, axis=0))


def test_dead_features_are_split_off_exactly():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((10, 5))
    X[:, 2] = 0
    perm = np.array([2, 0, 4, 1, 3])
    c_keep0 = qt.c(X, 0.0, perm)  # λ = 0 allowed: c = 0 on the dead feature
    assert c_keep0[0] == 0.0
    np.testing.assert_allclose(c_keep0[1:], dist2_c(X[:, [0, 4, 1, 3]], 0.0, np.arange(4)), atol=1e-12)
    np.testing.assert_allclose(qt.c(X, 0.0, perm, dead="zero")[0], 5.0)
    Bm = qt.B(X, 0.3, perm)
    assert np.all(Bm[0] == 0) and np.all(Bm[:, 0] == 0)
    np.testing.assert_allclose(qt.c(X, 0.3, perm, dead="zero")[1:], qt.c(X, 0.3, perm, dead="keep")[1:])


def test_w_hat_and_rho_against_ridge_regression():
    rng = np.random.default_rng(5)
    for cond in (1e2, 1e10):
        X = make_X("ill_conditioned", 30, 8, rng, cond=cond)
        Xt = mismatch(X, rng, level=0.05)
        W = rng.standard_normal((3, 8))
        for lam in (1e-6, 1.0):
            Wh = qt.w_hat(W, X, Xt, lam)
            Ht = Xt.T @ Xt + lam * np.eye(8)
            ref = np.linalg.solve(Ht, (Xt.T @ X + lam * np.eye(8)) @ W.T).T
            k = np.linalg.cond(Ht)
            np.testing.assert_allclose(Wh, ref, rtol=0, atol=64 * k * EPS * np.max(np.abs(ref)))
            rho2 = qt.rho2(W, X, Xt, lam)
            f = lambda v, w: np.sum((X @ w - Xt @ v) ** 2) + lam * np.sum((w - v) ** 2)  # noqa: E731
            for i in range(3):
                assert abs(rho2[i] - f(Wh[i], W[i])) <= 1e-12 * (1 + rho2[i])
                for _ in range(3):  # ŵ is the minimiser
                    v = Wh[i] + 1e-3 * rng.standard_normal(8)
                    assert f(v, W[i]) >= rho2[i] * (1 - 1e-12)
                assert rho2[i] <= np.sum(((X - Xt) @ W[i]) ** 2) * (1 + 1e-12)


def test_y1_matches_the_original_qronos_definition():
    rng = np.random.default_rng(6)
    X = rng.standard_normal((20, 5))
    Xt = mismatch(X, rng, level=0.1)
    W = rng.standard_normal((2, 5))
    f = 3
    others = [s for s in range(5) if s != f]
    ref = (Xt[:, f] @ (X @ W.T - Xt[:, others] @ W[:, others].T)) / (Xt[:, f] @ Xt[:, f])
    np.testing.assert_allclose(qt.y1(W, X, Xt, f), ref, rtol=1e-12)
    r = A.qronos(W, X, Xt, grid=A.Grid.symmetric(0.05, 10**4), lam=0.1, variant="original", order=[3, 0, 1, 2, 4])
    np.testing.assert_allclose(qt.y1(W, X, Xt, 3), np.asarray(r.y1), rtol=1e-10)
    np.testing.assert_allclose(qt.w_hat(W, X, Xt, 0.1), np.asarray(r.W_hat), rtol=1e-9, atol=1e-12)


def test_explicit_bound_chain():
    rng = np.random.default_rng(7)
    for regime in ("tall", "wide", "rank_deficient", "duplicate", "dead"):
        X = make_X(regime, 6 if regime == "wide" else 24, 9, rng)
        perm = rng.permutation(9)
        for lam in (0.0, 1e-3, 1.0):
            try:
                c = qt.c(X, lam, perm)
            except ValueError:
                continue
            ce = qt.c_explicit(X, lam, perm)
            cc = qt.c_column(X, lam, perm)
            tol = 32 * 9 * EPS * Hnorm(X, lam)
            assert np.all(c <= ce + tol) and np.all(ce <= cc + tol)
            if lam == 0.0:
                np.testing.assert_allclose(c, ce, rtol=0, atol=tol)


def test_inputs_from_other_backends(xp):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((12, 5))
    W = rng.standard_normal((2, 5))
    Xt = X + 0.01
    np.testing.assert_allclose(qt.c(xp.asarray(X), 0.1, [4, 3, 2, 1, 0]), qt.c(X, 0.1, [4, 3, 2, 1, 0]))
    np.testing.assert_allclose(qt.w_hat(xp.asarray(W), xp.asarray(X), xp.asarray(Xt), 0.1), qt.w_hat(W, X, Xt, 0.1))
    np.testing.assert_allclose(qt.c(xp.asarray(X.astype(np.float32)), 0.1), qt.c(X.astype(np.float32), 0.1))


def test_bad_input_gives_clear_errors():
    X = np.ones((3, 2))
    with pytest.raises(ValueError, match="lam"):
        qt.c(X, -1.0)
    with pytest.raises(ValueError, match="positive definite|singular"):
        qt.c(X, 0.0)
    with pytest.raises(ValueError, match="exactly once"):
        qt.c(X, 1.0, [0, 0])
    with pytest.raises(ValueError, match="NaN"):
        qt.c(np.array([[np.nan, 1.0]]), 1.0)
    with pytest.raises(ValueError, match="dead"):
        qt.c(X, 1.0, dead="drop")
    with pytest.raises(ValueError, match="identically zero"):
        qt.y1(np.ones((1, 2)), X, np.array([[0.0, 1.0]] * 3), 0)
