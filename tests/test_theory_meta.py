"""Tests of the tests: wrong runs must be caught (issue 4, "Must show" 2).

Each mutant is built from a correct run (the package's, or a plain NumPy transcription of OPTQ
whose unmutated form passes every claim, as a control), and each test names the claims that must
catch it and, honestly, those that cannot:

* a perturbed ``Q`` (one entry moved by one grid step): caught by the identities (I1, T4); the
  bounds (T1) catch it only where they are tight; the probabilistic claims cannot see one entry.
* a wrong sign in the update ``w_s ← w_s + e_t U_ts/U_tt``: caught by I1; P1.drift cannot (it bounds
  ``|z_t − w_t|``, symmetric in the sign).
* missing error feedback (RTN relabelled as OPTQ), a wrong λ, a wrong recorded order: caught by I1.
* biased stochastic rounding (up with probability ``frac + 0.2``): I1 cannot (it holds for any
  rounding); the ℓ∞ claims (T2.hp, T2.tail) catch it where the rows of ``R`` are coherent; the
  expectation claim (T2.expectation) catches it where the fractional parts sit where the biased
  second moment exceeds ``δ²/4`` (``f ≈ 0.3``); with fractional parts spread uniformly neither can.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import algorithms as A
import theory as T


# -------------------------------------------------------------------------------------------------
# a plain transcription of OPTQ on a symmetric grid δ·{−K..K}, with hooks for mutations
# -------------------------------------------------------------------------------------------------
def optq_plain(W, X, *, delta, K, lam, rounding="nearest", rng=None, sign=-1.0, bias=0.0, order=None):
    n, N = W.shape
    perm = np.arange(N) if order is None else np.asarray(order)
    H = (X.T @ X + lam * np.eye(N))[np.ix_(perm, perm)]
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # H⁻¹ = UᵀU (fine for a test transcription)
    w = W[:, perm].astype(np.float64).copy()
    Q = np.zeros_like(w)
    E = np.zeros_like(w)
    Z = np.zeros_like(w)
    C = np.zeros(w.shape, dtype=bool)
    for t in range(N):
        z = w[:, t].copy()
        u = z / delta
        if rounding == "nearest":
            k = np.round(u)
        else:
            f = u - np.floor(u)
            k = np.floor(u) + (rng.random(n) < np.minimum(f + bias, 1.0))
        kc = np.clip(k, -K, K)
        C[:, t] = kc != k
        q = kc * delta
        e = z - q
        Q[:, t], E[:, t], Z[:, t] = q, e, z
        w[:, t + 1:] += sign * np.outer(e, U[t, t + 1:] / U[t, t])
    inv = np.argsort(perm)
    return SimpleNamespace(
        Q=Q[:, inv], errors=E, z=Z, order=perm, saturated=C.any(axis=1), clipped=C, lam=lam,
        alphabet=SimpleNamespace(scale=np.full(W.shape, delta), zero=np.zeros(W.shape), qmin=-K, qmax=K),
        W0=W.copy(), rounding=rounding, algorithm="optq", options={"dead": "keep"}, grid=None,
    )


def _status(run, ids, **kw):
    return {cid: v.status for cid, v in T.check_all(run, ids, **kw).items()}


LOOP_IDS = ("I1", "T1.sum_c", "T1.explicit", "T1.frobenius", "P1", "P1.drift")


# -------------------------------------------------------------------------------------------------
# deterministic mutants
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tight():
    """Orthogonal columns, λ = 0, weights at half-integers: every |e_t| = δ/2, T1 is attained."""
    rng = np.random.default_rng(0)
    N, n, delta = 6, 5, 0.5
    Qo, _ = np.linalg.qr(rng.standard_normal((12, N)))
    X = Qo * np.exp(rng.uniform(-1, 1, N))
    W = (rng.integers(-6, 6, (n, N)) + 0.5) * delta
    return X, W, delta


def test_the_transcription_is_a_correct_control(tight):
    X, W, delta = tight
    run = T.Run.from_result(optq_plain(W, X, delta=delta, K=20, lam=0.0), X)
    st = _status(run, LOOP_IDS)
    assert all(s == "consistent" for s in st.values()), st
    v = T.check("T1.sum_c", run)
    np.testing.assert_allclose(v.ratio, 1.0, rtol=1e-9)  # attained: legitimate ratio 1
    # and it agrees with the package
    r = A.optq(W, X, grid=A.Grid.symmetric(delta, 20), lam=0.0)
    assert np.max(np.abs(np.abs(np.asarray(r.errors)) - delta / 2)) < 1e-9


def test_perturbed_Q_is_caught_by_the_identity_and_the_tight_bound(tight):
    X, W, delta = tight
    r = A.optq(W, X, grid=A.Grid.symmetric(delta, 20), lam=0.0)
    run = T.Run.from_result(r, X)
    Q = run.Q.copy()
    j = int(np.flatnonzero(run.order == 2)[0])
    # one entry per row moved by one grid step, away from its value (|e| grows from δ/2 to 3δ/2;
    # a move towards it, |e| = δ/2 again, is a tie that no claim can or should catch)
    Q[:, 2] -= np.sign(run.errors[:, j]) * delta
    bad = run.replace(Q=Q)
    st = _status(bad, LOOP_IDS)
    assert st["I1"] == "violated"
    assert st["T1.sum_c"] == "violated" and st["T1.explicit"] == "violated" and st["T1.frobenius"] == "violated"
    # P1 / P1.drift look at z and w only: they cannot see a wrong Q
    assert st["P1.drift"] == "consistent"
    assert T.check("I1", bad).violations == W.shape[0]


def test_perturbed_Q_is_caught_by_the_identity_on_generic_data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 10))
    W = rng.standard_normal((4, 10))
    r = A.optq(W, X, grid=A.Grid.gptq(4), lam=0.3, order="decreasing")
    run = T.Run.from_result(r, X)
    assert T.check("I1", run).consistent
    Q = run.Q.copy()
    Q[0, 3] += run.scale[0, 3]
    v = T.check("I1", run.replace(Q=Q))
    assert v.violated and v.violations == 1
    # the loose bounds are generally not tight enough to see one step (honest)
    assert T.check("T1.frobenius", run.replace(Q=Q)).status in ("consistent", "violated", "out of scope")


def test_perturbed_Q_in_qronos_is_caught_by_T4():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((30, 6))
    Xt = X + 0.05 * rng.standard_normal(X.shape)
    W = rng.standard_normal((3, 6))
    for variant, cid in (("projection", "T4.projection.identity"), ("original", "T4.original.identity")):
        r = A.qronos(W, X, Xt, grid=A.Grid.symmetric(0.1, 1000), lam=0.1, variant=variant)
        run = T.Run.from_result(r, X, X_tilde=Xt, W=W)
        assert T.check(cid, run).consistent
        Q = run.Q.copy()
        Q[1, 4] -= 0.1
        assert T.check(cid, run.replace(Q=Q)).violated


def test_wrong_sign_in_the_update():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((30, 8))
    W = rng.standard_normal((4, 8))
    good = T.Run.from_result(optq_plain(W, X, delta=0.05, K=1000, lam=0.5), X)
    bad = T.Run.from_result(optq_plain(W, X, delta=0.05, K=1000, lam=0.5, sign=+1.0), X)
    assert T.check("I1", good).consistent
    assert T.check("I1", bad).violated
    # judged on the float64 re-evaluation of Q (not on the loop's own z), the drift and the rounding
    # hypotheses see it too, and the loop's record disagrees with its output
    vs = T.check_all(bad)
    assert vs["P1.drift"].violated and vs["hyp.nearest"].violated and vs["hyp.record"].violated


def test_missing_feedback_rtn_relabelled_as_optq():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((30, 8)) + 1.0  # correlated columns: feedback matters
    W = rng.standard_normal((4, 8))
    r = A.rtn(W, A.Grid.symmetric(0.05, 1000))
    fake = SimpleNamespace(**{k: getattr(r, k) for k in ("Q", "errors", "z", "order", "saturated", "clipped",
                                                          "alphabet", "W0", "rounding")},
                           lam=0.1, algorithm="optq", options={"dead": "keep"}, grid=None)
    assert T.check("I1", T.Run.from_result(fake, X)).violated


def test_wrong_lambda_and_wrong_order_are_caught():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((30, 8)) + 0.5
    W = rng.standard_normal((4, 8))
    r = A.optq(W, X, grid=A.Grid.symmetric(0.05, 1000), lam=2.0, order="decreasing")
    run = T.Run.from_result(r, X)
    assert T.check("I1", run).consistent
    assert T.check("I1", run.replace(lam=0.0)).violated  # "missing damping" in the record
    assert T.check("I1", run.replace(order=run.order[::-1].copy())).violated


# -------------------------------------------------------------------------------------------------
# biased stochastic rounding
# -------------------------------------------------------------------------------------------------
def test_biased_rounding_is_caught_by_the_linf_claims_on_coherent_data():
    """X = a 256×256 Hadamard matrix (orthogonal columns, first row all ones), λ = 0: the first
    sample sums the errors, and a bias of about −0.18δ per coordinate adds up to ≈ 2× the T2 radius."""
    import scipy.linalg

    rng = np.random.default_rng(6)
    N, n = 256, 60
    X = scipy.linalg.hadamard(N).astype(float)
    W = np.tile(rng.uniform(-3, 3, N), (n, 1))
    kw = dict(delta=1.0, K=100, lam=0.0, rounding="stochastic")
    good = T.Run.from_result(optq_plain(W, X, rng=np.random.default_rng(7), **kw), X)
    bad = T.Run.from_result(optq_plain(W, X, rng=np.random.default_rng(8), bias=0.2, **kw), X)
    ids = ("T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.pi2", "T2.hp.explicit", "T2.tail", "T2.expectation", "I1")
    g = _status(good, ids, eta=0.5)
    b = _status(bad, ids, eta=0.5)
    # 60 trials cannot resolve a 25 % excess of the expected squared error: insufficient, not a pass
    assert all(s == "consistent" for c, s in g.items() if c != "T2.expectation"), g
    assert g["T2.expectation"] in ("consistent", "insufficient evidence")
    # the per-entry unbiasedness test sees the bias directly
    assert T.check_all(good)["hyp.unbiased"].consistent
    assert T.check_all(bad)["hyp.unbiased"].violated
    for cid in ("T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.explicit", "T2.tail"):
        assert b[cid] == "violated", (cid, b)
    # honest limits: the most conservative constant (πδ²/2) has a 2.5× wider radius and misses it;
    # the expectation claim (fractions spread) and the identity (any rounding) cannot see a bias
    # (with 60 trials the expectation test says so: insufficient evidence, not a pass)
    assert b["T2.hp.pi2"] == "consistent" and b["I1"] == "consistent"
    assert b["T2.expectation"] == "insufficient evidence"
    v = T.check("T2.hp.hoeffding", bad, eta=0.5)
    assert v.trials == n and v.exceedances > n // 2 and v.p_value < 1e-10 and "binomial" in v.test


def test_biased_rounding_is_caught_by_the_expectation_claim_where_f_is_near_0_3():
    """X = I, λ = 0 (no feedback): every fractional part is 0.3, where the biased rounding has
    E e² = 0.29δ² > δ²/4. Hoeffding's test on Y ∈ [0, 4] needs a few thousand trials
    (trials_for_power_expectation says how many)."""
    N, n, delta = 4, 4000, 1.0
    X = np.eye(N)
    W = np.tile(np.array([0.3, 1.3, -2.7, 4.3]), (n, 1))
    kw = dict(delta=delta, K=100, lam=0.0, rounding="stochastic")
    good = T.Run.from_result(optq_plain(W, X, rng=np.random.default_rng(9), **kw), X)
    bad = T.Run.from_result(optq_plain(W, X, rng=np.random.default_rng(10), bias=0.2, **kw), X)
    vg, vb = T.check("T2.expectation", good), T.check("T2.expectation", bad)
    assert vg.consistent and abs(vg.mean - 0.84) < 0.05  # f(1−f)/(1/4) = 0.84
    assert vb.violated and abs(vb.mean - 1.16) < 0.05 and vb.p_value < 1e-3
    need = T.trials_for_power_expectation(0.16, 4.0, alpha=1e-3, power=0.9)
    assert need <= 3 * n  # the campaign can choose trials from this helper


def test_biased_rounding_with_spread_fractions_is_not_caught_by_the_expectation_claim():
    """Honest limit: with fractional parts spread over [0, 1) the biased rounding's mean second
    moment is below δ²/4, so the expectation claim (an upper bound) cannot catch it."""
    rng = np.random.default_rng(11)
    N, n = 4, 2000
    X = np.eye(N)
    W = rng.uniform(-5, 5, (n, N))
    bad = T.Run.from_result(optq_plain(W, X, delta=1.0, K=100, lam=0.0, rounding="stochastic",
                                       rng=np.random.default_rng(12), bias=0.2), X)
    assert T.check("T2.expectation", bad).consistent
