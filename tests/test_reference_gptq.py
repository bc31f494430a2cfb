"""Faithfulness to the reference GPTQ semantics and cross-checks against an independent
implementation installed from PyPI (brevitas 0.13.4: GPTQ and the original Qronos).

Covered: GPTQ's Hessian convention H = (2/m)XᵀX and damping (percdamp of the mean diagonal,
λ = damp·m/2), dead features (H_tt = 1, weights zeroed), act_order with un-permutation, lazy
blocks, per-row, grouped and static-group grids, symmetric and asymmetric.
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
import pytest

import algorithms as A

torch = pytest.importorskip("torch")


# The plain-torch transcription of the reference algorithm's documented semantics (min/max quantizer,
# lazy batches of `blocksize` columns, groups refitted at each group start, static groups fitted on
# the original weights, act_order by diag(H) with the result un-permuted) lives in
# verify/bench_reference.py, written independently of `algorithms` (no shared code; a test checks
# it imports nothing from there), so the benchmark times exactly what these tests pin.
from verify.bench_reference import reference_gptq  # noqa: E402


def _layer(seed, m=96, N=32, n=6, dead=()):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, N)) * np.exp(rng.uniform(-1, 1, N))
    X[:, list(dead)] = 0.0
    W = rng.standard_normal((n, N)) * np.exp(rng.uniform(-1, 1, (n, 1)))
    return W, X


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "bits,sym,groupsize,static,actorder,blocksize",
    [
        (4, True, -1, False, False, 128),
        (3, False, -1, False, True, 8),
        (4, True, 8, False, False, 8),
        (4, False, 16, False, True, 8),
        (2, True, 8, True, True, 4),
        (4, False, 16, True, False, 16),
    ],
)
def test_matches_reference_semantics(xp, seed, bits, sym, groupsize, static, actorder, blocksize):
    """The same body on every backend: optq on NumPy, torch (and CuPy) equals the reference."""
    W, X = _layer(seed, dead=(3,) if seed == 1 else ())
    Qref = reference_gptq(W, X, bits=bits, sym=sym, blocksize=blocksize, groupsize=groupsize,
                          actorder=actorder, static_groups=static)
    grid = A.Grid.gptq(bits, sym=sym, group_size=None if groupsize == -1 else groupsize, static_groups=static)
    r = A.optq(xp.asarray(W), xp.asarray(X), grid=grid, percdamp=0.01, order="decreasing" if actorder else "natural",
               block_size=blocksize)
    np.testing.assert_allclose(xp.numpy(r.Q), Qref, rtol=1e-10, atol=1e-12)


def test_percdamp_is_gptq_damping_in_units_of_XtX():
    W, X = _layer(0, dead=(2, 7))
    m = X.shape[0]
    r = A.optq(W, X, grid=A.Grid.gptq(4), percdamp=0.05)
    Hg = (2.0 / m) * X.T @ X
    d = np.diag(Hg).copy()
    d[d == 0] = 1.0  # GPTQ's dead-feature value
    assert r.lam == pytest.approx(0.05 * d.mean() * m / 2, rel=1e-12)
    r2 = A.optq(W, X, grid=A.Grid.gptq(4), lam=r.lam)
    np.testing.assert_array_equal(r.Q, r2.Q)


def test_gptq_losses_sum_to_the_identity_over_m():
    W, X = _layer(4)
    m = X.shape[0]
    r = A.optq(W, X, grid=A.Grid.gptq(3), percdamp=0.01, order="decreasing")
    D = W - r.Q
    identity = np.sum((X @ D.T) ** 2, axis=0) + r.lam * np.sum(D**2, axis=1)
    np.testing.assert_allclose(np.sum(r.losses, axis=1), identity / m, rtol=1e-10)


def test_dead_features_are_zeroed_and_the_order_is_undone():
    W, X = _layer(2, dead=(0, 5))
    r = A.optq(W, X, grid=A.Grid.gptq(4), percdamp=0.01, order="decreasing")
    assert np.all(r.Q[:, [0, 5]] == 0) and np.all(r.W0[:, [0, 5]] == 0)
    assert np.array_equal(np.where(r.dead)[0], [0, 5])
    d = np.sum(X**2, axis=0)
    d[[0, 5]] = X.shape[0] / 2  # GPTQ's H_tt = 1 in units of (2/m)XᵀX
    np.testing.assert_array_equal(r.order, np.argsort(-d, kind="stable"))
    # un-permutation: column j of Q is feature j, processed at position t with order[t] = j
    t = int(np.where(r.order == 9)[0][0])
    np.testing.assert_allclose(r.Q[:, 9], r.z[:, t] - r.errors[:, t], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# brevitas (independent implementation from PyPI): GPTQ and the original Qronos
# ---------------------------------------------------------------------------------------------
def _brevitas():
    pytest.importorskip("brevitas")
    warnings.filterwarnings("ignore", module="brevitas")
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant.scaled_int import Int8ActPerTensorFloat, Int8WeightPerChannelFloat

    def weight_quant(bits):
        # per-row symmetric narrow-range integer grid whose scale is fitted once, then fixed
        return type("Wq", (Int8WeightPerChannelFloat,),
                    {"bit_width": bits, "scaling_impl_type": ScalingImplType.PARAMETER_FROM_STATS})

    def act_quant(bits):
        return type("Aq", (Int8ActPerTensorFloat,), {"bit_width": bits})

    return qnn, weight_quant, act_quant


def _init_layer(qnn, Wq, W, X, pre=None):
    layer = qnn.QuantLinear(W.shape[1], W.shape[0], bias=False, weight_quant=Wq, dtype=torch.float64)
    layer.weight.data = torch.from_numpy(W.copy())
    model = torch.nn.Sequential(*( [pre] if pre is not None else []), layer)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.from_numpy(X))
    model.eval()
    scale = layer.quant_weight().scale.detach().numpy().reshape(-1, 1)
    return model, layer, scale


@pytest.mark.parametrize("seed,actorder,bits,dead", [(0, False, 4, ()), (1, True, 4, (4,)), (2, True, 3, ()),
                                                     (3, False, 2, (0, 9))])
def test_optq_equals_brevitas_gptq(seed, actorder, bits, dead):
    qnn, weight_quant, _ = _brevitas()
    from brevitas.graph.gptq import gptq_mode

    W, X = _layer(seed, m=200, N=40, n=8, dead=dead)
    model, layer, scale = _init_layer(qnn, weight_quant(bits), W, X)
    with torch.no_grad(), gptq_mode(model, act_order=actorder, num_blocks=5, dtype=torch.float64) as g:
        for _ in range(g.num_layers):
            g.model(torch.from_numpy(X))
            g.update()
    Qb = layer.quant_weight().value.detach().numpy()
    K = 2 ** (bits - 1) - 1
    r = A.optq(W, X, grid=A.Grid.symmetric(scale, K), percdamp=0.01,
               order="decreasing" if actorder else "natural", block_size=math.ceil(40 / 5))
    np.testing.assert_array_equal(r.Q, Qb)
    assert not np.array_equal(r.Q, A.rtn(W, A.Grid.symmetric(scale, K)).Q)  # error feedback mattered


def _brevitas_qronos(seed, actorder, act_bits, monkeypatch):
    """Run brevitas' Qronos on one layer whose inputs pass through an activation quantizer
    (so X̃ ≠ X); return its Q and the data needed to run ours."""
    qnn, weight_quant, act_quant = _brevitas()
    import brevitas.graph.qronos as bq
    from brevitas.graph.gpfq import gpfq_mode

    # brevitas damps with alpha·(power-iteration estimate of λ_max(X̃ᵀX̃/m)); use the exact λ_max
    monkeypatch.setattr(bq, "power_iteration", lambda H, steps, *a, **k: torch.linalg.eigvalsh(H)[-1])
    rng = np.random.default_rng(seed)
    m, N, n = 400, 24, 6
    X = rng.standard_normal((m, N)) * rng.uniform(0.2, 3, N)
    W = rng.standard_normal((n, N))
    act = qnn.QuantIdentity(act_quant=act_quant(act_bits), return_quant_tensor=False, dtype=torch.float64)
    model, layer, scale = _init_layer(qnn, weight_quant(4), W, X, pre=act)
    with torch.no_grad():
        Xt = act(torch.from_numpy(X)).detach().numpy()  # the mismatched inputs X̃
    assert np.abs(Xt - X).max() > 0.05
    alpha = 1e-4
    with torch.no_grad(), gpfq_mode(model, act_order=actorder, dtype=torch.float64,
                                    algorithm_impl=partial(bq.Qronos, alpha=alpha, num_blocks=3)) as g:
        for _ in range(g.num_layers):
            g.model(torch.from_numpy(X))
            g.update()
    Qb = layer.quant_weight().value.detach().numpy()
    lam = alpha * float(np.linalg.eigvalsh(Xt.T @ Xt / m)[-1]) * m
    kw = dict(grid=A.Grid.symmetric(scale, 7), lam=lam, order="decreasing" if actorder else "natural")
    return Qb, W, X, Xt, kw


@pytest.mark.parametrize("seed,actorder,act_bits", [(0, False, 4), (1, True, 4), (3, False, 2), (4, True, 3)])
def test_qronos_original_equals_brevitas_qronos(seed, actorder, act_bits, monkeypatch):
    Qb, W, X, Xt, kw = _brevitas_qronos(seed, actorder, act_bits, monkeypatch)
    r = A.qronos(W, X, Xt, variant="original", **kw)
    np.testing.assert_array_equal(r.Q, Qb)


def test_qronos_cross_check_discriminates_the_variants(monkeypatch):
    """On this instance the projection variant differs from brevitas' Qronos while the original
    variant equals it: the cross-check can tell the two variants apart."""
    Qb, W, X, Xt, kw = _brevitas_qronos(3, False, 2, monkeypatch)
    p = A.qronos(W, X, Xt, variant="projection", **kw)
    o = A.qronos(W, X, Xt, variant="original", **kw)
    assert not np.array_equal(p.Q, Qb)
    np.testing.assert_array_equal(o.Q, Qb)
    np.testing.assert_allclose(o.W_hat, p.W_hat, rtol=1e-12, atol=1e-12)  # same least-squares target


def test_projection_with_matched_inputs_is_optq():
    W, X = _layer(7)
    for order in ("natural", "decreasing"):
        a = A.qronos(W, X, X, grid=A.Grid.gptq(4), lam=3.0, variant="projection", order=order)
        b = A.optq(W, X, grid=A.Grid.gptq(4), lam=3.0, order=order, dead="keep")
        np.testing.assert_allclose(a.W_hat, W, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(a.Q, b.Q)
