"""The SPEC's counterexamples, pinned: what the claims must NOT say.

* Qronos' original variant does not satisfy the projection variant's δ²/4 bound;
* T2 on a finite grid holds as a joint event with "no saturation" and is false conditioned on it;
* (the non-monotone drift and the O1 ordering counterexample live in test_theory_ordering_lambda.py).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
from scipy.stats import binomtest

import algorithms as A
import theory as T


def test_original_qronos_breaks_the_projection_bound():
    """X = I₂, X̃ = [[1,0],[1,1]], w = (3,0), δ = 1, λ → 0: ‖Xw − X̃q‖² = 1 > 0.5 = ρ² + (δ²/4)Σc̃_t."""
    X = np.eye(2)
    Xt = np.array([[1.0, 0.0], [1.0, 1.0]])
    W = np.array([[3.0, 0.0]])
    for lam in (0.0, 1e-9):
        r = A.qronos(W, X, Xt, grid=A.Grid.symmetric(1.0, 4), lam=lam, variant="original")
        run = T.Run.from_result(r, X, X_tilde=Xt, W=W)
        F2 = np.sum((X @ W[0] - Xt @ np.asarray(r.Q)[0]) ** 2) + lam * np.sum((W[0] - np.asarray(r.Q)[0]) ** 2)
        rho2 = T.rho2(W, X, Xt, lam)[0]
        proj_bound = rho2 + 0.25 * np.sum(T.c_tilde(Xt, lam))
        np.testing.assert_allclose(F2, 1.0, atol=1e-6)
        np.testing.assert_allclose(proj_bound, 0.5, atol=1e-6)
        assert F2 > proj_bound
        # the registry says so: the projection bound is out of scope for this run, the original
        # variant's own identity and bound hold
        v = T.check("T4.projection.bound", run)
        assert v.status == "out of scope" and any("projection" in k for k in v.reasons)
        assert T.check("T4.original.identity", run).consistent
        vb = T.check("T4.original.bound", run)
        assert vb.consistent and vb.rhs[0] >= 1.0
        # …and a run mislabelled as the projection variant is caught by the projection claims
        fake = run.replace(variant="projection")
        assert T.check("T4.projection.bound", fake).violated
        assert T.check("T4.projection.identity", fake).violated


def test_the_original_variant_is_undefined_on_a_dead_first_feature():
    X = np.array([[1.0, 2.0], [0.5, 1.0], [2.0, 0.0]])
    Xt = X.copy()
    Xt[:, 0] = 0.0
    W = np.array([[1.0, -1.0]])
    r = A.qronos(W, X, Xt, grid=A.Grid.symmetric(0.1, 100), lam=0.5, variant="projection")
    run = T.Run.from_result(r, X, X_tilde=Xt, W=W).replace(variant="original")
    v = T.check("T4.original.identity", run)
    assert v.status == "out of scope" and any("dead" in k for k in v.reasons)


def test_t2_is_a_joint_event_and_conditioning_on_no_saturation_is_false():
    """Hadamard X (8×8, orthogonal columns, first row all ones), λ = 0, every weight at K + ½ = 3.5 on
    δ·{−3..3}: stochastic rounding saturates a coordinate w.p. ½, so "no saturation" (prob. 2⁻⁸) forces
    every e_t = +½ and (X(w−q))_1 = 4. The T2 tail at α = 3.99 is 16·e^{−3.98} ≈ 0.30:
    conditioned on no saturation the exceedance probability is 1 (false), jointly it is 2⁻⁸ (true)."""
    N, n = 8, 6000
    X = scipy.linalg.hadamard(N).astype(float)
    W = np.full((n, N), 3.5)
    r = A.optq(W, X, grid=A.Grid.symmetric(1.0, 3), lam=0.0, rounding="stochastic", rng=np.random.default_rng(0))
    run = T.Run.from_result(r, X)
    ok = ~run.saturated
    assert 5 <= ok.sum() <= 60  # ≈ n/256
    D = (np.asarray(r.W0) - np.asarray(r.Q))[ok]
    assert np.all(np.max(np.abs(X @ D.T), axis=0) == 4.0)
    v = T.check("T2.tail", run, threshold=3.99)
    p = float(v.claimed_p[0])
    np.testing.assert_allclose(p, 16 * np.exp(-3.99**2 / 4), rtol=1e-12)
    assert v.consistent and v.exceedances == ok.sum() and v.trials == n  # joint: ≈ 0.004 ≤ 0.30
    # conditioning = checking only the unsaturated rows: the tail bound is violated
    cond = T.check("T2.tail", run.rows(np.flatnonzero(ok)), threshold=3.99)
    assert cond.violated and cond.exceedances == cond.trials
    assert binomtest(int(ok.sum()), int(ok.sum()), p, alternative="greater").pvalue < 1e-6
