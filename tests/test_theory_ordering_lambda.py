"""O1 (ordering) and L1 (λ) demonstrated on examples where the order and λ change the bound."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import sympy as sp

import algorithms as A
import theory as T
from theory import lam as L
from theory import ordering as O
from theory import quantities as qt


# -------------------------------------------------------------------------------------------------
# O1
# -------------------------------------------------------------------------------------------------
def test_decreasing_order_does_not_minimize_sum_c():
    """SPEC O1 counterexample: X = [[2,3,2],[−1,−3,3]], λ = 0.1: decreasing 18.46, best 9.98."""
    st = O.compare_orders(O.COUNTEREXAMPLE_X, O.COUNTEREXAMPLE_LAM)
    assert st["decreasing"].order == (1, 2, 0)
    assert abs(st["decreasing"].sum_c - 18.46) < 5e-3
    assert abs(st["best (sum)"].sum_c - 9.98) < 5e-3
    assert st["best (sum)"].sum_c < st["decreasing"].sum_c
    assert st["best (max)"].max_c < st["decreasing"].max_c  # nor max c_t
    # every order stays above the AM–GM floor, and the product is the same
    floor = O.amgm_floor(O.COUNTEREXAMPLE_X, O.COUNTEREXAMPLE_LAM)
    ld = np.linalg.slogdet(O.COUNTEREXAMPLE_X.T @ O.COUNTEREXAMPLE_X + 0.1 * np.eye(3))[1]
    for p in itertools.permutations(range(3)):
        c = qt.c(O.COUNTEREXAMPLE_X, 0.1, np.array(p))
        assert np.sum(c) >= floor * (1 - 1e-12)
        assert abs(np.sum(np.log(c)) - ld) < 1e-12


def test_the_order_changes_the_T1_bound_and_the_claims_hold_for_every_order():
    X = O.COUNTEREXAMPLE_X
    W = np.array([[1.3, -0.7, 2.2], [0.1, 0.4, -1.9]])
    bounds = {}
    for p in itertools.permutations(range(3)):
        r = A.optq(W, X, grid=A.Grid.symmetric(0.25, 100), lam=0.1, order=list(p))
        run = T.Run.from_result(r, X)
        vs = T.check_all(run, ["I1", "T1.sum_c", "O1.det", "O1.amgm", "L1.monotone", "L1.concave", "L1.derivative"])
        assert all(v.consistent for v in vs.values()), vs
        bounds[p] = float(vs["T1.sum_c"].rhs[0])
    assert max(bounds.values()) / min(bounds.values()) > 1.7  # √(30.8/9.98)
    assert min(bounds, key=bounds.get) == (2, 1, 0)


def test_compare_orders_reports_random_and_rejects_large_brute_force():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 9))
    st = O.compare_orders(X, 0.5, rng=np.random.default_rng(1))
    assert {"natural", "decreasing", "increasing", "random", "amgm floor"} <= set(st)
    assert "best (sum)" not in st  # N = 9 > 8: no brute force by default
    with pytest.raises(ValueError, match="too many"):
        O.best_order(X, 0.5)
    for k in ("natural", "decreasing", "increasing", "random"):
        assert st[k].sum_c >= st["amgm floor"].sum_c * (1 - 1e-12)


# -------------------------------------------------------------------------------------------------
# L1
# -------------------------------------------------------------------------------------------------
def test_c_is_nondecreasing_concave_with_slope_at_least_one():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((6, 8))  # wide: c_t(0) = 0 for some t
    lams = np.linspace(1e-3, 5.0, 60)
    C = L.c_of_lambda(X, lams)
    d = np.diff(C, axis=0) / np.diff(lams)[:, None]
    assert np.all(d >= 1 - 1e-9)  # dc/dλ ≥ 1
    assert np.all(np.diff(d, axis=0) <= 1e-9)  # concave
    for lam in (0.01, 0.7, 4.0):
        h = 1e-6 * lam
        fd = (qt.c(X, lam + h) - qt.c(X, lam - h)) / (2 * h)
        np.testing.assert_allclose(qt.dc_dlam(X, lam), fd, rtol=1e-5)


def test_lambda_trades_the_l2_bound_against_the_drift():
    """λ changes the bound: the ℓ2 bound (δ/2)√Σc_t grows (at least like Nλδ²/4) while the drift
    bound max_j‖X_j‖²/λ and the exact drift shrink."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((20, 10)) + 0.8
    lams = np.logspace(-3, 2, 11) * float(np.mean(np.sum(X**2, axis=0)))
    l2 = [0.5 * np.sqrt(np.sum(qt.c(X, l))) for l in lams]
    assert np.all(np.diff(l2) > 0)
    assert np.all(np.array(l2) ** 2 >= 0.25 * 10 * lams - 1e-9)
    drift = L.drift_of_lambda(X, lams).max(axis=1)
    assert drift[-1] < drift[0] / 10
    X2max = float(np.max(np.sum(X**2, axis=0)))
    assert np.all(drift**2 <= X2max / lams * (1 + 1e-12))


def test_exact_drift_is_not_monotone_in_lambda():
    """X = [[1,1,−1],[0,−1,0]], natural order: ‖B_{:,2}‖₂ = |B_12| rises from λ = 0.01 to λ = 1 and
    falls again; pinned against an exact sympy computation of the ridge coefficient."""
    X = L.DRIFT_COUNTEREXAMPLE_X
    lam = sp.Symbol("lam", positive=True)
    Xs = sp.Matrix(X.astype(int).tolist())
    A_ = Xs[:, 1:]
    beta = (A_.T * A_ + lam * sp.eye(2)).inv() * A_.T * Xs[:, 0]  # ridge vector of feature 1
    b12 = sp.simplify(beta[0])
    for lv in (sp.Rational(1, 100), sp.Rational(1, 10), 1, 10, 100):
        np.testing.assert_allclose(qt.drift(X, float(lv))[1], abs(float(b12.subs(lam, lv))), rtol=1e-12)
    assert b12.subs(lam, 1) == sp.Rational(1, 5) or b12.subs(lam, 1) == -sp.Rational(1, 5)
    vals = [abs(float(b12.subs(lam, lv))) for lv in (sp.Rational(1, 100), 1, 100)]
    assert vals[0] < vals[1] > vals[2]
    # the bound max_j ‖X_j‖²/λ decreases, the exact drift does not
    D = L.drift_of_lambda(X, np.logspace(-2, 2, 21))[:, 1]
    assert np.any(np.diff(D) > 0) and np.any(np.diff(D) < 0)


MAXDRIFT_X = np.array([[3.0, 2.0, 2.0, -2.0], [3.0, 2.0, 2.0, -3.0]])


def test_the_T3_feasible_set_need_not_be_an_interval_and_recommend_lambda_scans():
    """max_t ‖B_{:,t}‖₂ of MAXDRIFT_X falls to ≈0.852 (λ ≈ 0.32), rises to ≈0.902 (λ ≈ 1.26) and
    falls again, so with K = 4 and ‖w‖∞/δ = 2.6 the λ meeting T3 form two separate intervals."""
    lams = np.logspace(-2, 2, 41)
    mx = L.drift_of_lambda(MAXDRIFT_X, lams).max(axis=1)
    assert np.any(np.diff(mx) > 0)
    W = np.array([[2.6, 0.0, -1.0, 0.5]])
    scan = L.recommend_lambda(MAXDRIFT_X, W, delta=1.0, K=4, eta=0.05, lams=lams)
    ok = scan.t3_ok.astype(int)
    runs = np.sum(np.diff(ok) == 1) + ok[0]  # number of separate feasible intervals
    assert runs == 2, scan.table()
    # the recommendation is the smallest ℓ2 bound among feasible λ (here the smallest feasible λ)
    feas = np.flatnonzero(scan.t3_ok)
    assert scan.index == feas[np.argmin(scan.l2[feas])]
    assert scan.recommended == lams[feas[0]]
    np.testing.assert_allclose(scan.K_t3, 2.6 + 0.5 * mx * np.sqrt(2 * np.log(2 * 4 / 0.05)))


def test_recommend_lambda_errors_and_p1():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 12))
    W = rng.standard_normal((3, 12))
    with pytest.raises(ValueError, match="smallest K needed"):
        L.recommend_lambda(X, W, delta=0.5, K=1)
    scan = L.recommend_lambda(X, W, delta=0.05, K=200, condition="P1")
    assert scan.p1_ok[scan.index] and scan.condition == "P1"
    assert np.all(np.diff(scan.l2) > 0)  # ℓ2 bound grows with λ: smallest feasible λ wins
    with pytest.raises(ValueError, match="condition"):
        L.recommend_lambda(X, W, delta=0.05, K=200, condition="T9")
    # singular H_λ at λ = 0 is skipped, not an error
    Xw = rng.standard_normal((4, 12))
    scan = L.recommend_lambda(Xw, W, delta=0.05, K=10**6, lams=[0.0, 0.1, 1.0])
    assert np.isnan(scan.K_t3[0]) and scan.recommended == 0.1


# -------------------------------------------------------------------------------------------------
# one definition of "decreasing": theory's order is the order algorithms.optq runs
# -------------------------------------------------------------------------------------------------
def _dead_and_tied_X(m, N, dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, N)) * rng.uniform(0.5, 2.0, N)
    X[:, 1] = 0.0                  # dead features: GPTQ's diagonal puts them at m/2, not last
    X[:, N - 2] = 0.0
    X[:, 4] = X[:, 0]              # exact duplicates: tied norms, broken by the lower index
    X[:, 7] = -X[:, 0]
    X[:, 5] = X[:, 3]
    X[:, 6] = np.sqrt(m / 2.0 / m)  # ‖X_6‖² = m/2: tied with the dead features' value
    X[:, 8] *= 0.05                 # a weak live feature, below the dead features' m/2
    return X.astype(dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("m, N", [(40, 12), (6, 16)])
def test_theory_orders_are_the_orders_optq_runs(dtype, m, N):
    X = _dead_and_tied_X(m, N, dtype, seed=m + N)
    W = np.random.default_rng(1).standard_normal((3, N)).astype(dtype)
    grid = A.Grid.integers(0.1)
    for kind in ("decreasing", "increasing"):
        for dead in ("zero", "keep"):
            ran = np.asarray(A.optq(W, X, grid=grid, lam=0.5, order=kind, dead=dead).order)
            np.testing.assert_array_equal(qt.resolve_order(kind, N, X, dead=dead), ran)
            np.testing.assert_array_equal(O.order_for(X, kind, dead=dead), ran)
        # the defaults describe optq's default (dead="zero")
        ran = np.asarray(A.optq(W, X, grid=grid, lam=0.5, order=kind).order)
        np.testing.assert_array_equal(qt.resolve_order(kind, N, X), ran)
        assert O.compare_orders(X, 0.5, kinds=(kind,))[kind].order == tuple(int(i) for i in ran)
        np.testing.assert_allclose(qt.c(X, 0.5, kind), qt.c(X, 0.5, ran), rtol=0, atol=0)
        # Qronos sorts X̃ with its dead features kept (at 0); c_tilde names the same order
        rq = A.qronos(W, X, X, grid=grid, lam=0.5, order=kind)
        np.testing.assert_array_equal(qt.resolve_order(kind, N, X, dead="keep"), np.asarray(rq.order))
        np.testing.assert_array_equal(qt.c_tilde(X, 0.5, kind), qt.c(X, 0.5, np.asarray(rq.order)))
    # not vacuous: on this X the two dead-feature conventions give different orders, and sorting by
    # ‖X_t‖² alone (theory's former definition) is not what optq runs
    zero, keep = (qt.resolve_order("decreasing", N, X, dead=d) for d in ("zero", "keep"))
    assert not np.array_equal(zero, keep)
    plain = np.argsort(-np.sum(X.astype(np.float64) ** 2, axis=0), kind="stable")
    assert not np.array_equal(plain, np.asarray(A.optq(W, X, grid=grid, lam=0.5, order="decreasing").order))


def test_named_order_quantities_line_up_with_optqs_errors():
    """Per-position quantities of a named order pair with the errors of optq run in that order: the
    exact identity ‖X(w0 − q)‖² + λ‖w0 − q‖² = Σ_t e_t² c_t holds with c(X, λ, "decreasing")."""
    X = _dead_and_tied_X(40, 12, "float64", seed=3)
    W = np.random.default_rng(2).uniform(-0.5, 0.5, (4, 12))
    lam = 0.5
    r = A.optq(W, X, grid=A.Grid.integers(0.1), lam=lam, order="decreasing")
    D = np.asarray(r.W0) - np.asarray(r.Q)
    lhs = np.sum((X @ D.T) ** 2, axis=0) + lam * np.sum(D ** 2, axis=1)
    E = np.asarray(r.errors)
    np.testing.assert_allclose(E ** 2 @ qt.c(X, lam, "decreasing"), lhs, rtol=1e-10)
    # sorting by ‖X_t‖² alone moves the dead features and shifts the live ones: the pairing breaks
    plain = np.argsort(-np.sum(X ** 2, axis=0), kind="stable")
    assert not np.allclose(E ** 2 @ qt.c(X, lam, plain), lhs, rtol=1e-6)
    # recommend_lambda(order="decreasing") scans the order optq runs (its numbers are sums and maxima
    # over positions, which dead features, decoupled in H_λ, do not change)
    lams = [0.01, 0.1, 1.0, 10.0]
    by_name = L.recommend_lambda(X, W, delta=0.05, K=1000, order="decreasing", lams=lams)
    by_perm = L.recommend_lambda(X, W, delta=0.05, K=1000, order=np.asarray(r.order), lams=lams)
    for f in ("l2_rows", "K_t3", "K_p1"):
        np.testing.assert_array_equal(getattr(by_name, f), getattr(by_perm, f))
