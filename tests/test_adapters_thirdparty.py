"""Adapters of third-party GPTQ implementations that live in their own environments
(llm-compressor, gptqmodel, amd-quark, auto-gptq). Each test skips, with the reason, where the
library is not importable: the default environment and CI. Run them inside the library's environment
(``bash benchmarks/field_audit_envs.sh NAME``, then ``/work/envs/NAME/bin/python -m pytest
tests/test_adapters_thirdparty.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from algorithms import Grid, optq
from verify.adapters import ADAPTERS, get

THIRD_PARTY = [name for name, a in ADAPTERS.items() if a.library != "brevitas"]


def _need(name):
    why = get(name).why_unavailable()
    if why:
        pytest.skip(why)
    return get(name)


def _layer(seed, n=8, N=32, m=64, dead=False):
    r = np.random.default_rng(seed)
    W = r.standard_normal((n, N))
    X = r.standard_normal((m, N))
    if dead:
        X[:, 3] = 0.0
    lam = 0.01 * float(np.mean(np.sum(X * X, axis=0)))
    return W, X, lam


def _codes(Q, ref, scales, N):
    s = np.asarray(scales, dtype=np.float64)
    s = np.repeat(s, N // s.shape[1], axis=1)
    return np.round(Q / s), np.round(np.asarray(ref) / s)


GRIDS = [Grid.gptq(4, sym=True), Grid.gptq(4, sym=True, group_size=8, static_groups=True)]


@pytest.mark.parametrize("name", THIRD_PARTY)
def test_registered_with_a_reason_when_absent(name):
    a = get(name)
    assert a.kind in ("optq", "qronos-original", "qronos-projection", "other")
    assert a.proved == (a.kind != "other")
    why = a.why_unavailable()
    if why is not None:
        assert a.library in why and "pip install" in why


@pytest.mark.parametrize("grid", GRIDS, ids=["per-row", "static-groups"])
@pytest.mark.parametrize("order", ["natural", "decreasing"])
def test_llmcompressor_float64_equals_optq_bit_for_bit(grid, order):
    a = _need("llmcompressor-gptq")
    for seed in range(4):
        W, X, lam = _layer(seed, dead=seed % 2 == 0)
        res = a.quantizer(W, X, grid=grid, lam=lam, order=order, precision="float64")
        ref = optq(W, X, grid=grid, lam=lam, order=order)
        assert res.used["fallback"] is None
        assert np.array_equal(res.Q, np.asarray(ref.Q)), (seed, int(np.sum(res.Q != np.asarray(ref.Q))))
        if order == "decreasing":
            assert res.used["order"] == [int(i) for i in np.asarray(ref.order)]


def test_llmcompressor_float32_codes_match_optq():
    a = _need("llmcompressor-gptq")
    agree = []
    for seed in range(4):
        W, X, lam = _layer(seed)
        for grid in GRIDS:
            res = a.quantizer(W, X, grid=grid, lam=lam)
            ref = optq(W, X, grid=grid, lam=lam)
            k, kr = _codes(res.Q, ref.Q, res.used["scales"], W.shape[1])
            agree.append(np.mean(k == kr))
    assert np.mean(agree) > 0.97


def test_llmcompressor_declines_unmappable_grids():
    from verify.audit import Decline

    a = _need("llmcompressor-gptq")
    W, X, lam = _layer(0)
    with pytest.raises(Decline):
        a.quantizer(W, X, grid=Grid.gptq(3, sym=False, group_size=8), lam=lam)
    with pytest.raises(Decline):
        a.quantizer(W, X, grid=Grid.symmetric(0.1, 48), lam=lam)


@pytest.mark.parametrize("name", ["gptqmodel-gptq", "autogptq-gptq"])
@pytest.mark.parametrize("grid", GRIDS + [Grid.gptq(3, sym=False, group_size=8)],
                         ids=["per-row", "static-groups", "on-the-fly-groups"])
@pytest.mark.parametrize("order", ["natural", "decreasing"])
def test_gptq_classes_match_optq(name, grid, order):
    """gptqmodel's and AutoGPTQ's GPTQ classes (float32 loops that fit the grid themselves) against
    optq's float64 loop: the same levels up to float32 rounding, GPTQ's dead-feature convention, and
    an act_order permutation that sorts diag H (dead → 1) descending."""
    a = _need(name)
    agree = []
    for seed in range(3):
        W, X, lam = _layer(seed, dead=seed == 0)
        res = a.quantizer(W, X, grid=grid, lam=lam, order=order)
        ref = optq(W, X, grid=grid, lam=lam, order=order)
        assert res.used.get("fallback") is None
        if seed == 0:  # the dead column is zeroed
            assert np.all(res.Q[:, 3] == 0)
        if order == "decreasing":
            d = (2.0 / X.shape[0]) * np.sum(X * X, axis=0)
            d[d == 0] = 1.0
            assert sorted(res.used["order"]) == list(range(W.shape[1]))
            assert np.all(np.diff(d[res.used["order"]]) <= 1e-6 * d.max())
        diff = np.abs(np.asarray(res.Q, dtype=np.float64) - np.asarray(ref.Q))
        agree.append(np.mean(diff <= 1e-5 * (1 + np.abs(np.asarray(ref.Q)))))
    assert np.mean(agree) > 0.97


def test_autogptq_returns_its_float32_q():
    a = _need("autogptq-gptq")
    W, X, lam = _layer(1)
    assert a.quantizer(W, X, grid=Grid.gptq(4), lam=lam).Q.dtype == np.float32  # its working precision


def test_autogptq_declines_the_odd_level_grid():
    from verify.audit import Decline

    a = _need("autogptq-gptq")
    W, X, lam = _layer(0)
    with pytest.raises(Decline):
        a.quantizer(W, X, grid=Grid.symmetric(0.1, 48), lam=lam)


@pytest.mark.parametrize("name", THIRD_PARTY)
def test_audit_runs_consistent_on_small_family(name):
    from verify.adapters import audit_adapter

    a = _need(name)
    rep = audit_adapter(name, families=("tall",), seed=0, shrink=False)
    # an implementation that is not the audited algorithm (proved=False) may fail its claims: empirical
    assert rep.exit_code() in ((0, 3) if a.proved else (0, 1, 3)), rep.format()


# ------------------------------------------------------------------------------------------------
# amd-quark (GPTQ, Qronos, GPTAQ) and gptqmodel's GPTAQ
# ------------------------------------------------------------------------------------------------
def _mismatched(seed, n=8, N=32, m=64, noise=0.1):
    W, X, lam = _layer(seed, n=n, N=N, m=m)
    Xt = X + noise * np.random.default_rng(seed + 100).standard_normal(X.shape)
    return W, X, Xt, lam


def _close(A, B):
    """Share of entries equal to float32 accuracy (a float32 loop can flip a rounding and cascade)."""
    A, B = np.asarray(A), np.asarray(B)
    return float(np.mean(np.abs(A - B) <= 1e-5 * (1 + np.abs(B))))


@pytest.mark.parametrize("grid", GRIDS + [Grid.gptq(3, sym=False, group_size=8)],
                         ids=["per-row", "static-groups", "on-the-fly-groups"])
@pytest.mark.parametrize("order", ["natural", "decreasing"])
def test_quark_gptq_matches_optq(grid, order):
    from verify.audit import Decline

    a = _need("quark-gptq")
    agree = []
    for seed in range(3):
        W, X, lam = _layer(seed, dead=seed == 0)
        try:
            res = a.quantizer(W, X, grid=grid, lam=lam, order=order)
        except Decline:
            assert order == "decreasing" and grid.group_size and not grid.static_groups
            continue
        ref = optq(W, X, grid=grid, lam=lam, order=order)
        assert res.used["fallback"] is None
        if order == "decreasing":
            assert res.used["order"] == [int(i) for i in np.asarray(ref.order)]
        agree.append(_close(res.Q, ref.Q))
    if agree:
        assert np.mean(agree) > 0.97, agree


def test_quark_gptq_declines_what_it_cannot_represent():
    from verify.audit import Decline

    a = _need("quark-gptq")
    W, X, lam = _layer(0)
    with pytest.raises(Decline):
        a.quantizer(W, X, grid=Grid.symmetric(0.1, 48), lam=lam)
    with pytest.raises(Decline, match="act_order"):
        a.quantizer(W, X, grid=Grid.gptq(3, sym=False, group_size=8), lam=lam, order="decreasing")
    # a dead feature holding a row's largest weight: Quark fits the per-row grid after zeroing it
    X[:, 5] = 0.0
    W[0, 5] = 10.0
    with pytest.raises(Decline, match="after zeroing"):
        a.quantizer(W, X, grid=Grid.gptq(4, sym=True), lam=lam)
    # a row without a negative weight: GPTQ's symmetric scale max/15, Quark's max|w|/7.5
    W, X, lam = _layer(1)
    W[2] = np.abs(W[2])
    with pytest.raises(Decline, match="negative"):
        a.quantizer(W, X, grid=Grid.gptq(4, sym=True), lam=lam)


@pytest.mark.parametrize("grid", GRIDS, ids=["per-row", "static-groups"])
@pytest.mark.parametrize("order", ["natural", "decreasing"])
def test_quark_qronos_is_the_original_variant(grid, order):
    from algorithms import qronos

    a = _need("quark-qronos")
    assert a.kind == "qronos-original" and a.proved
    agree_orig, agree_proj = [], []
    for seed in range(3):
        W, X, Xt, lam = _mismatched(seed, noise=0.5)
        res = a.quantizer(W, X, X_tilde=Xt, grid=grid, lam=lam, order=order)
        agree_orig.append(_close(res.Q, qronos(W, X, Xt, grid=grid, lam=lam, order=order, variant="original").Q))
        agree_proj.append(_close(res.Q, qronos(W, X, Xt, grid=grid, lam=lam, order=order, variant="projection").Q))
    assert np.mean(agree_orig) > 0.97, agree_orig
    assert np.mean(agree_proj) < 0.95, agree_proj  # the projection variant is a different Q (~75-90% here)


def test_quark_qronos_declines_on_the_fly_groups():
    from verify.audit import Decline

    a = _need("quark-qronos")
    W, X, Xt, lam = _mismatched(0)
    with pytest.raises(Decline, match="ValueError"):
        a.quantizer(W, X, X_tilde=Xt, grid=Grid.gptq(3, sym=False, group_size=8), lam=lam)


@pytest.mark.parametrize("name", ["quark-gptaq", "gptqmodel-gptaq"])
@pytest.mark.parametrize("grid", GRIDS, ids=["per-row", "static-groups"])
def test_gptaq_reduces_to_gptq_without_mismatch(name, grid):
    """GPTAQ's correction is proportional to X − X̃: with X̃ = X it is GPTQ, so its Q equals optq's
    (the mapping of grid, damping and order is the GPTQ adapters'); with a mismatch it differs."""
    a = _need(name)
    assert a.kind == "other" and not a.proved
    same, diff = [], []
    for seed in range(3):
        W, X, Xt, lam = _mismatched(seed)
        res = a.quantizer(W, Xt, X_tilde=Xt, grid=grid, lam=lam)
        assert res.used["fallback"] is None
        same.append(_close(res.Q, optq(W, Xt, grid=grid, lam=lam).Q))
        res = a.quantizer(W, X, X_tilde=Xt, grid=grid, lam=lam)
        diff.append(_close(res.Q, optq(W, Xt, grid=grid, lam=lam).Q))
    assert np.mean(same) > 0.97, same
    assert np.mean(diff) < 1.0, diff


def test_quark_gptaq_declines_on_the_fly_groups():
    from verify.audit import Decline

    a = _need("quark-gptaq")
    W, X, Xt, lam = _mismatched(0)
    with pytest.raises(Decline, match="ValueError"):
        a.quantizer(W, X, X_tilde=Xt, grid=Grid.gptq(3, sym=False, group_size=8), lam=lam)
