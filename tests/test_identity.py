"""The exact identity ‖X(w−q)‖² + λ‖w−q‖² = Σ_t e_t² c_t (SPEC §4 I1) for every algorithm and
option, and its Qronos form ‖Xw − X̃q‖² + λ‖w−q‖² = ρ_λ² + Σ_t ê_t² c̃_t (T4).

Everything on the right-hand side is computed here from its definition (c_t as the Schur
complement of the trailing block, ρ_λ and ŵ by a direct linear solve), not from package code.
Clipping (saturation) is allowed: the identity holds for any rounding.
RTN has no error feedback and no such identity; it is not covered here.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import algorithms as A
from verify.strategies import layers, make_X, mismatch


def schur_c(X, lam, order, dead_value=None):
    """c_t = H_tt − H_{t,>t} H_{>t,>t}⁻¹ H_{>t,t} in processing order, H = XᵀX (+ GPTQ's dead fix) + λI."""
    m, N = X.shape
    H = X.T @ X
    if dead_value is not None:
        d = np.diag(H) == 0
        H[d, d] = dead_value
    H = H + lam * np.eye(N)
    Hp = H[np.ix_(order, order)]
    c = np.empty(N)
    for t in range(N):
        b = Hp[t + 1:, t]
        c[t] = Hp[t, t] - (b @ np.linalg.solve(Hp[t + 1:, t + 1:], b) if t + 1 < N else 0.0)
    return c


def rtol_for(X, lam, dtype):
    """Relative tolerance of the identity: 16·eps·(N + cond(H_λ)). Accumulated rounding grows like
    N·eps; the update coefficients (from the factorization, or the explicitly downdated inverse of
    the OBS form) carry relative errors of order cond(H_λ)·eps (SPEC §4: the identity holds only to
    a tolerance that grows with cond(H_λ)·eps)."""
    N = X.shape[1]
    eps = np.finfo(dtype).eps
    H = X.T @ X + lam * np.eye(N)
    w = np.linalg.eigvalsh(H)
    cond = w[-1] / max(w[0], np.finfo(float).tiny)
    return 16 * eps * (N + cond)


def assert_identity(lhs, rhs, X, lam, W, Q, dtype):
    """|lhs − rhs| ≤ rtol·(rhs + ‖H_λ‖·‖w‖·‖w − q‖) per row: the rounding errors of the run are
    relative to the magnitudes it handles (‖w‖, not only the small differences e_t), so the
    tolerance scales with ‖H_λ‖‖w‖‖w−q‖ as well as with the result."""
    rtol = rtol_for(X, lam, dtype)
    Hn = float(np.linalg.eigvalsh(X.T @ X)[-1]) + lam
    W = np.asarray(W, dtype=np.float64)
    D = W - np.asarray(Q, dtype=np.float64)
    scale = rhs + Hn * np.linalg.norm(W, axis=1) * np.linalg.norm(D, axis=1)
    gap = np.abs(lhs - rhs)
    assert np.all(gap <= rtol * scale), (gap / scale, rtol)


def optq_identity_gap(r, X):
    X = np.asarray(X, dtype=np.float64)
    dead_value = X.shape[0] / 2 if r.options.get("dead") == "zero" else None
    c = schur_c(X, r.lam, np.asarray(r.order), dead_value)
    D = np.asarray(r.W0, dtype=np.float64) - np.asarray(r.Q, dtype=np.float64)
    lhs = np.sum((X @ D.T) ** 2, axis=0) + r.lam * np.sum(D**2, axis=1)
    rhs = np.sum(np.asarray(r.errors, dtype=np.float64) ** 2 * c, axis=1)
    return lhs, rhs


@st.composite
def optq_cases(draw):
    layer = draw(layers(N=(1, 20), n=(1, 5), cond=draw(st.sampled_from([1e2, 1e6, 1e10]))))
    rels = [1e-3, 0.1, 10.0] if layer.singular else [0.0, 1e-8, 0.1, 10.0]
    lam = draw(st.sampled_from(rels)) * float(np.mean(np.sum(layer.X**2, axis=0)) or 1.0)
    order = draw(st.sampled_from(["natural", "decreasing", "increasing", "random"]))
    rounding = draw(st.sampled_from(["nearest", "stochastic"]))
    wmax = float(np.max(np.abs(layer.W)))
    kind = draw(st.sampled_from(["tight", "wide", "gptq", "group", "integers"]))
    if kind == "tight":  # small K: saturation is likely, the identity must still hold
        grid = A.Grid.symmetric(wmax / 2, 2)
    elif kind == "wide":
        grid = A.Grid.symmetric(wmax / 16, 10_000)
    elif kind == "integers":
        grid = A.Grid.integers(wmax / 3)
    elif kind == "gptq":
        grid = A.Grid.gptq(draw(st.integers(2, 8)), sym=draw(st.booleans()))
    else:
        N = layer.W.shape[1]
        g = draw(st.sampled_from([d for d in range(1, N + 1) if N % d == 0]))
        grid = A.Grid.gptq(3, sym=draw(st.booleans()), group_size=g, static_groups=draw(st.booleans()))
    dead = draw(st.sampled_from(["zero", "keep"])) if lam > 0 else "zero"
    method = draw(st.sampled_from(["blocked", "blocked", "cholesky", "inverse"]))
    return layer, dict(grid=grid, lam=lam, order=order, rounding=rounding, dead=dead, method=method,
                       block_size=draw(st.integers(1, 32)), rng=np.random.default_rng(draw(st.integers(0, 99))))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(optq_cases())
def test_optq_identity_float64(case):
    layer, kw = case
    r = A.optq(layer.W, layer.X, **kw)
    lhs, rhs = optq_identity_gap(r, layer.X)
    assert_identity(lhs, rhs, layer.X, r.lam, r.W0, r.Q, np.float64)


@pytest.mark.parametrize("regime", ["tall", "ill_conditioned", "heavy_tailed", "dead", "duplicate"])
@pytest.mark.parametrize("rel", [1e-1, 1e-2, 1e-4])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_optq_identity_float32(xp, regime, rel, rounding):
    """The same body on every backend (NumPy, torch, CuPy): float32 in, float32 out, identity to the
    float32 tolerance."""
    rng = np.random.default_rng(1)
    X = make_X(regime, 192, 48, rng, cond=1e6).astype(np.float32)
    W = rng.standard_normal((12, 48)).astype(np.float32)
    lam = rel * float(np.mean(np.sum(X.astype(np.float64) ** 2, axis=0)))
    r = A.optq(xp.asarray(W), xp.asarray(X), grid=A.Grid.gptq(4, group_size=16), lam=lam, order="decreasing",
               rounding=rounding, rng=np.random.default_rng(2))
    Q, E = xp.numpy(r.Q), xp.numpy(r.errors)
    assert Q.dtype == np.float32 and E.dtype == np.float32
    X64 = X.astype(np.float64)
    run = _host_result(r, xp)
    lhs, rhs = optq_identity_gap(run, X64)
    assert_identity(lhs, rhs, X64, run.lam, run.W0, run.Q, np.float32)


def _host_result(r, xp):
    """The fields the identity reads, as NumPy arrays (whatever backend computed them)."""
    from types import SimpleNamespace

    return SimpleNamespace(Q=xp.numpy(r.Q), errors=xp.numpy(r.errors), W0=xp.numpy(r.W0), order=xp.numpy(r.order),
                           lam=float(r.lam), options=r.options)


@pytest.mark.parametrize("variant", ["projection", "original"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_qronos_identity_every_backend(xp, variant, rounding):
    """Qronos' identity, the same body on every backend (float64)."""
    rng = np.random.default_rng(3)
    X = make_X("tall", 96, 24, rng, cond=1e4)
    Xt = mismatch(X, rng, kind="noise", level=0.1)
    W = rng.standard_normal((5, 24))
    lam = 0.1 * float(np.mean(np.sum(Xt**2, axis=0)))
    r = A.qronos(xp.asarray(W), xp.asarray(X), xp.asarray(Xt), grid=A.Grid.gptq(4), lam=lam, order="decreasing",
                 rounding=rounding, variant=variant, rng=np.random.default_rng(4))
    from types import SimpleNamespace

    run = SimpleNamespace(Q=xp.numpy(r.Q), errors=xp.numpy(r.errors), order=xp.numpy(r.order), lam=float(r.lam),
                          variant=r.variant)
    lhs, rhs, What = qronos_identity_gap(run, W, X, Xt)
    np.testing.assert_allclose(xp.numpy(r.W_hat), What, rtol=1e-8, atol=1e-8 * (np.max(np.abs(What)) + 1))
    assert_identity(lhs, rhs, Xt, run.lam, np.hstack([W, What]), np.hstack([run.Q, run.Q]), np.float64)


def qronos_identity_gap(r, W, X, Xt):
    """‖Xw − X̃q‖² + λ‖w−q‖² against ρ_λ² + Σ ê_t² c̃_t with ŵ solved directly."""
    N = W.shape[1]
    lam = r.lam
    Ht = Xt.T @ Xt + lam * np.eye(N)
    What = np.linalg.solve(Ht, (Xt.T @ X + lam * np.eye(N)) @ W.T).T
    rho2 = np.sum((X @ W.T - Xt @ What.T) ** 2, axis=0) + lam * np.sum((W - What) ** 2, axis=1)
    order = np.asarray(r.order)
    c = schur_c(Xt, lam, order)
    E = np.asarray(r.errors, dtype=np.float64).copy()
    if r.variant == "original":  # the first coordinate propagates ŵ_f − q_f, not the rounding error
        f = order[0]
        E[:, 0] = What[:, f] - r.Q[:, f]
    lhs = np.sum((X @ W.T - Xt @ r.Q.T) ** 2, axis=0) + lam * np.sum((W - r.Q) ** 2, axis=1)
    return lhs, rho2 + np.sum(E**2 * c, axis=1), What


@st.composite
def qronos_cases(draw):
    layer = draw(layers(regime=draw(st.sampled_from(["tall", "ill_conditioned", "heavy_tailed", "duplicate"])),
                        N=(2, 16), n=(1, 4), cond=1e4))
    rng = np.random.default_rng(layer.seed)
    Xt = mismatch(layer.X, rng, kind=draw(st.sampled_from(["noise", "quantized"])),
                  level=draw(st.sampled_from([0.01, 0.1, 0.5])))
    lam = draw(st.sampled_from([1e-3, 0.1, 3.0])) * float(np.mean(np.sum(Xt**2, axis=0)))
    wmax = float(np.max(np.abs(layer.W)))
    grid = draw(st.sampled_from([A.Grid.symmetric(wmax / 4, 6), A.Grid.symmetric(wmax / 8, 4000),
                                 A.Grid.gptq(3), A.Grid.gptq(4, sym=False)]))
    return layer, Xt, dict(grid=grid, lam=lam, order=draw(st.sampled_from(["natural", "decreasing", "random"])),
                           rounding=draw(st.sampled_from(["nearest", "stochastic"])),
                           variant=draw(st.sampled_from(["projection", "original"])),
                           rng=np.random.default_rng(5))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(qronos_cases())
def test_qronos_identity(case):
    layer, Xt, kw = case
    if kw["variant"] == "original":
        # the original variant is undefined for a dead first feature (checked in test_validation)
        X0 = Xt.copy()
        if np.any(np.all(X0 == 0, axis=0)):
            kw["variant"] = "projection"
    try:
        r = A.qronos(layer.W, layer.X, Xt, **kw)
    except ValueError as exc:
        assert "cannot represent" in str(exc)  # ŵ outside a tight grid: rejected, not silently clipped
        return
    lhs, rhs, What = qronos_identity_gap(r, layer.W, layer.X, Xt)
    np.testing.assert_allclose(r.W_hat, What, rtol=1e-8, atol=1e-8 * (np.max(np.abs(What)) + 1))
    assert_identity(lhs, rhs, Xt, r.lam, np.hstack([layer.W, r.W_hat]), np.hstack([r.Q, r.Q]), np.float64)


def test_identity_detects_a_wrong_update():
    """The check above is not vacuous: an OPTQ run whose updates use the wrong sign breaks it."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 16))
    W = rng.standard_normal((3, 16))
    r = A.optq(W, X, grid=A.Grid.symmetric(0.2, 100), lam=0.5)
    H = X.T @ X + 0.5 * np.eye(16)
    U = np.linalg.cholesky(np.linalg.inv(H)).T
    w = W.copy()
    Q = np.zeros_like(W)
    E = np.zeros_like(W)
    for t in range(16):  # the mutant: + instead of −
        q = np.round(w[:, t] / 0.2) * 0.2
        E[:, t] = w[:, t] - q
        Q[:, t] = q
        w[:, t + 1:] += np.outer(E[:, t], U[t, t + 1:] / U[t, t])
    c = schur_c(X, 0.5, np.arange(16))
    D = W - Q
    lhs = np.sum((X @ D.T) ** 2, axis=0) + 0.5 * np.sum(D**2, axis=1)
    rhs = np.sum(E**2 * c, axis=1)
    assert np.max(np.abs(lhs - rhs) / rhs) > 1e-3
    lhs_ok, rhs_ok = optq_identity_gap(r, X)
    np.testing.assert_allclose(lhs_ok, rhs_ok, rtol=1e-12)
