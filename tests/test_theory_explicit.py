"""The explicit bound of T1 from one QR (theory/explicit.py) against the per-feature SVD reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theory import explicit as ex
from theory import quantities as qt
from verify.data import SINGULAR
from verify.strategies import layers, make_X

EPS = np.finfo(float).eps


def tol_of(X, lam):
    """The checker's c tolerance scale: ``32·N·eps·‖H_λ‖``."""
    return 32 * X.shape[1] * EPS * (float(np.linalg.eigvalsh(X.T @ X)[-1]) + lam)


def both(X, lam, perm, **kw):
    rc = max(X.shape) * EPS
    return ex.c_explicit_enclosure(np.asarray(X, dtype=float)[:, perm], lam, rcond=rc, **kw)


def ref_projections(Y, S_before):
    """‖P y_j‖², ‖P⊥ y_j‖² onto span of the given earlier columns, by least squares."""
    par, perp = [], []
    for j in range(Y.shape[1]):
        A = Y[:, S_before[j]]
        y = Y[:, j]
        p = A @ np.linalg.lstsq(A, y, rcond=None)[0] if A.shape[1] else np.zeros_like(y)
        par.append(p @ p)
        perp.append((y - p) @ (y - p))
    return np.array(par), np.array(perp)


@pytest.mark.parametrize("regime,m,N", [("tall", 40, 12), ("dead", 40, 12), ("duplicate", 40, 12), ("wide", 7, 12),
                                        ("rank_deficient", 40, 12)])
def test_projections_are_exact(regime, m, N):
    rng = np.random.default_rng(1)
    X = make_X(regime, m, N, rng)
    Y = X[:, np.any(X != 0, axis=0)]
    par2, perp2, k, RS = ex.projections(Y, max(Y.shape) * EPS)
    # the span of the earlier columns (whatever subset was kept) is the span of all earlier columns
    par, perp = ref_projections(Y, [list(range(j)) for j in range(Y.shape[1])])
    scale = np.sum(Y**2, axis=0)
    np.testing.assert_allclose(par2, par, rtol=0, atol=1e-10 * scale.max())
    np.testing.assert_allclose(perp2, perp, rtol=0, atol=1e-10 * scale.max())
    assert RS.shape[0] == RS.shape[1] <= min(Y.shape) and np.all(np.abs(np.diag(RS)) > 0)
    assert k[0] == 0 and np.all(np.diff(k) >= 0) and k[-1] <= RS.shape[0]


def test_sigma2_enclosure_contains_the_exact_value():
    rng = np.random.default_rng(2)
    for regime in ("tall", "ill_conditioned", "heavy_tailed"):
        X = make_X(regime, 50, 20, rng)
        RS = np.linalg.qr(X, mode="r")
        lo, hi = ex.sigma2_enclosure(RS)
        exact = np.array([scipy.linalg.svdvals(RS[:k, :k])[-1] ** 2 for k in range(1, 21)])
        assert np.all(lo <= exact * (1 + 1e-9)) and np.all(exact <= hi * (1 + 1e-9))


@pytest.mark.parametrize("lam", [1e-3, 0.5, 20.0])
def test_full_rank_enclosure_brackets_the_svd_reference(lam):
    rng = np.random.default_rng(3)
    X = make_X("tall", 60, 25, rng)
    perm = rng.permutation(25)
    ref = qt.c_explicit(X, lam, perm, method="svd")
    lo, hi = both(X, lam, perm)
    tol = tol_of(X, lam)
    assert np.all(lo <= ref + tol) and np.all(ref <= hi + tol)
    # with room to refine every block the enclosure closes on the reference
    lo, hi = both(X, lam, perm, budget=np.inf)
    np.testing.assert_allclose(hi, ref, rtol=1e-8, atol=tol)
    np.testing.assert_allclose(lo, ref, rtol=1e-8, atol=tol)


def test_lambda_zero_is_exact_and_equals_c():
    rng = np.random.default_rng(4)
    X = make_X("tall", 50, 20, rng)
    perm = rng.permutation(20)
    tol = tol_of(X, 0.0)
    got = qt.c_explicit(X, 0.0, perm, method="qr")
    np.testing.assert_allclose(got, qt.c_explicit(X, 0.0, perm, method="svd"), rtol=1e-9, atol=tol)
    np.testing.assert_allclose(got, qt.c(X, 0.0, perm), rtol=1e-9, atol=tol)


@pytest.mark.parametrize("regime,m", [("dead", 40), ("duplicate", 40), ("wide", 8), ("rank_deficient", 40)])
@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_singular_regimes_stay_on_the_conservative_side(regime, m, lam):
    rng = np.random.default_rng(5)
    N = 16
    X = make_X(regime, m, N, rng)
    perm = rng.permutation(N)
    tol = tol_of(X, lam)
    got = qt.c_explicit(X, lam, perm, method="qr")
    ref = qt.c_explicit(X, lam, perm, method="svd")
    cc = qt.c_column(X, lam, perm)
    assert np.all(ref <= got + tol), "ĉ⁺ below the SVD's ĉ_t: σ² of the independent subset is not a lower bound"
    assert np.all(got <= cc + tol)
    if lam > 0:
        assert np.all(qt.c(X, lam, perm) <= got + tol)
    dead = ~np.any(X[:, perm] != 0, axis=0)
    np.testing.assert_array_equal(got[dead], lam)


def test_auto_is_the_svd_reference_up_to_256():
    rng = np.random.default_rng(6)
    X = make_X("tall", 30, 10, rng)
    np.testing.assert_array_equal(qt.c_explicit(X, 0.2), qt.c_explicit(X, 0.2, method="svd"))
    with pytest.raises(ValueError, match="method"):
        qt.c_explicit(X, 0.2, method="fast")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(layer=layers(N=(1, 14)), lam=st.sampled_from([0.0, 1e-4, 0.1, 10.0]))
def test_property_chain_and_reference_side(layer, lam):
    X = layer.X
    if lam == 0.0 and layer.singular:
        lam = 0.1
    N = X.shape[1]
    perm = np.random.default_rng(layer.seed).permutation(N)
    tol = tol_of(X, lam)
    lo, hi = both(X, lam, perm)
    cc = qt.c_column(X, lam, perm)
    assert np.all(lo <= hi + tol) and np.all(hi <= cc + tol)
    try:
        c = qt.c(X, lam, perm)
    except ValueError:
        return
    assert np.all(c <= hi + tol)
    if layer.regime not in SINGULAR:
        ref = qt.c_explicit(X, lam, perm, method="svd")
        assert np.all(lo <= ref + 1e-9 * ref + tol) and np.all(ref <= hi + 1e-9 * ref + tol)


def test_gram_path_agrees_with_the_qr_and_declines_dependent_columns():
    rng = np.random.default_rng(7)
    X = make_X("heavy_tailed", 80, 30, rng)
    perm = rng.permutation(30)
    tol = tol_of(X, 0.4)
    G = X.T @ X
    a = qt.c_explicit(X, 0.4, perm, method="qr")
    b = qt.c_explicit(X, 0.4, perm, method="qr", gram=G)
    np.testing.assert_allclose(b, a, rtol=1e-9, atol=tol)
    Y = X[:, perm][:, ::-1]
    p_qr, p_g = ex.projections(Y, 80 * EPS), ex.projections_from_gram(Y.T @ Y)
    for u, v in zip(p_qr[:2], p_g[:2]):
        np.testing.assert_allclose(v, u, rtol=1e-9, atol=tol)
    D = make_X("duplicate", 80, 30, rng)
    assert ex.projections_from_gram(D.T @ D) is None
    np.testing.assert_allclose(qt.c_explicit(D, 0.4, perm, method="qr", gram=D.T @ D),
                               qt.c_explicit(D, 0.4, perm, method="qr"), rtol=1e-12, atol=tol)


def test_shifted_lower_bounds_are_valid_and_tighter():
    rng = np.random.default_rng(8)
    X = make_X("tall", 90, 40, rng)
    RS = np.linalg.qr(X, mode="r")
    lo, hi = ex.sigma2_enclosure(RS)
    up = ex.shifted_lower_bounds(RS, lo, hi, 4)
    exact = np.array([scipy.linalg.svdvals(RS[:k, :k])[-1] ** 2 for k in range(1, 41)])
    assert np.all(up <= exact * (1 + 1e-9)) and np.all(up >= lo)
    assert np.median(up / exact) > np.median(lo / exact) + 0.2
