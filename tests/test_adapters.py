"""Adapters of third-party implementations (verify.adapters): the library's own code driven through
the audit contract. brevitas (GPTQ, Qronos, GPFQ) runs wherever the brevitas extra is installed;
otherwise these tests skip with the reason.

Measured equality: brevitas' GPTQ equals ``algorithms.optq`` and brevitas' Qronos equals
``algorithms.qronos(variant="original")`` bit for bit in float64 (``assert_array_equal``) under the
same convention (λ mapped to brevitas' percdamp / alpha, the same grid, the same order).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import algorithms as A
from verify.adapters import ADAPTERS, KINDS, Adapter, AdapterReport, audit_adapter, get


def _brevitas():
    pytest.importorskip("torch", reason="brevitas adapters need torch (pip install 'provable-ptq[brevitas]')")
    pytest.importorskip("brevitas", reason="brevitas is not installed (pip install 'provable-ptq[brevitas]')")
    warnings.filterwarnings("ignore", module="brevitas")
    from verify.adapters import brevitas as B

    return B


def _layer(seed, m=96, N=32, n=6, dead=()):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, N)) * np.exp(rng.uniform(-1, 1, N))
    X[:, list(dead)] = 0.0
    W = rng.standard_normal((n, N)) * np.exp(rng.uniform(-1, 1, (n, 1)))
    return W, X


def test_registry_declares_every_adapter():
    assert {"brevitas-gptq", "brevitas-qronos", "brevitas-gpfq"} <= set(ADAPTERS)
    for a in ADAPTERS.values():
        assert a.kind in KINDS and callable(a.quantizer) and a.install
        assert a.proved == (a.kind != "other")
    assert get("brevitas-gpfq").kind == "other" and not get("brevitas-gpfq").proved
    with pytest.raises(KeyError, match="brevitas-gptq"):
        get("no-such-impl")


def test_an_unavailable_library_says_how_to_install_it():
    a = Adapter(name="x-gptq", library="no-such-dist-xyz", module="no_such_module_xyz", kind="optq", proved=True,
                quantizer=lambda *a, **k: None, install="pip install no-such-dist-xyz")
    assert not a.available() and a.version() is None
    assert "pip install no-such-dist-xyz" in a.why_unavailable()
    with pytest.raises(RuntimeError, match="unavailable"):
        audit_adapter(a)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("order", ["natural", "decreasing"])
@pytest.mark.parametrize("grid", [A.Grid.gptq(4), A.Grid.gptq(3), A.Grid.gptq(4, group_size=8, static_groups=True)],
                         ids=["gptq4", "gptq3", "static8"])
def test_brevitas_gptq_equals_optq_bit_for_bit(seed, order, grid):
    B = _brevitas()
    W, X = _layer(seed, dead=(3, 7) if seed == 3 else ())
    lam = 0.05 * float(np.mean(np.sum(X * X, axis=0)))
    W_in = W.copy()
    r = B.gptq(W_in, X, grid=grid, lam=lam, order=order)
    np.testing.assert_array_equal(W_in, W)  # the caller's W is not changed
    o = A.optq(W, X, grid=grid, lam=lam, order=order)
    np.testing.assert_array_equal(r.Q, o.Q)
    assert not np.array_equal(r.Q, A.rtn(W, grid).Q)  # error feedback mattered
    m = X.shape[0]
    d = np.sum(X * X, axis=0) * 2 / m
    d[d == 0] = 1.0
    assert r.used["percdamp"] * d.mean() * m / 2 == pytest.approx(lam, rel=1e-13)
    assert r.used["fallback"] is None and r.used["act_order"] == (order == "decreasing")


def test_brevitas_gptq_on_a_narrow_symmetric_grid():
    B = _brevitas()
    W, X = _layer(5)
    g = A.Grid.symmetric(np.abs(W).max(axis=1, keepdims=True) / 7, 7)
    np.testing.assert_array_equal(B.gptq(W, X, grid=g, lam=2.0).Q, A.optq(W, X, grid=g, lam=2.0).Q)


@pytest.mark.parametrize("seed,order", [(0, "natural"), (1, "decreasing"), (2, "decreasing")])
def test_brevitas_qronos_equals_original_qronos_bit_for_bit(seed, order):
    B = _brevitas()
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((200, 24)) * rng.uniform(0.2, 3, 24)
    Xt = X + 0.3 * rng.standard_normal(X.shape)
    W = rng.standard_normal((6, 24))
    lam = float(np.mean(np.sum(Xt * Xt, axis=0)))  # λ = 1·mean‖X̃_t‖²: order-dependent power iteration matters
    g = A.Grid.gptq(4)
    r = B.qronos(W, X, X_tilde=Xt, grid=g, lam=lam, order=order)
    o = A.qronos(W, X, Xt, grid=g, lam=lam, order=order, variant="original")
    np.testing.assert_array_equal(r.Q, o.Q)
    assert r.used["alpha"] * r.used["power_iteration_lambda_max"] * X.shape[0] == pytest.approx(lam, rel=1e-13)


@pytest.mark.parametrize("grid,order,match", [
    (A.Grid.gptq(3, sym=False), "natural", "asymmetric"),
    (A.Grid.gptq(3, group_size=8), "natural", "on the fly"),
    (A.Grid.symmetric(0.1, 48), "natural", "narrow range"),
    (A.Grid.gptq(4), "increasing", "order"),
])
def test_brevitas_declines_what_it_cannot_express(grid, order, match):
    B = _brevitas()
    W, X = _layer(1)
    with pytest.raises(NotImplementedError, match=match):
        B.gptq(W, X, grid=grid, lam=1.0, order=order)


@pytest.mark.parametrize("name", ["brevitas-gptq", "brevitas-qronos"])
def test_audit_of_brevitas_finds_no_violation(name):
    _brevitas()
    rep = audit_adapter(name, families=("tall", "dead"), shrink=False)
    assert isinstance(rep, AdapterReport)
    assert rep.cases > 0 and not rep.flagged and not rep.errors, rep.format()
    assert rep.exit_code() == 0, rep.format()
    assert "claims apply as proved" in rep.format()
    assert rep.to_dict()["claims_apply"] == "as proved"


def test_gpfq_report_labels_claims_as_empirical():
    _brevitas()
    rep = audit_adapter("brevitas-gpfq", families=("tall",), grids=("gptq",), orders=("natural",), shrink=False)
    text = rep.format()
    assert "EMPIRICAL" in text and "[empirical] T1" in text
    d = rep.to_dict()
    assert d["claims_apply"] == "empirical" and d["implementation"]["proved"] is False
    assert all(v.get("label") == "empirical" for v in d["claims"].values())


def test_cli_list_and_impl(capsys):
    from verify.cli import main

    assert main(["audit", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ADAPTERS:
        assert name in out
    assert main(["audit", "--impl", "no-such-impl"]) == 2
    err = capsys.readouterr().err
    assert "brevitas-gptq" in err and "--list" in err
    assert main(["audit"]) == 2


def test_cli_unavailable_impl_exits_2_with_the_install_hint(monkeypatch, capsys):
    from verify.cli import main

    fake = Adapter(name="x-gptq", library="no-such-dist-xyz", module="no_such_module_xyz", kind="optq",
                   proved=True, quantizer=lambda *a, **k: None, install="pip install 'provable-ptq[x]'")
    monkeypatch.setitem(ADAPTERS, "x-gptq", fake)
    assert main(["audit", "--impl", "x-gptq"]) == 2
    assert "provable-ptq[x]" in capsys.readouterr().err


def test_cli_impl_audits_brevitas(tmp_path, capsys):
    _brevitas()
    from verify.cli import main

    out = tmp_path / "r.json"
    code = main(["audit", "--impl", "brevitas-gptq", "--families", "tall", "--grids", "gptq", "--no-shrink",
                 "--json", str(out)])
    assert code == 0, capsys.readouterr()
    import json

    d = json.loads(out.read_text())
    assert d["implementation"]["library"] == "brevitas" and d["status"] == "consistent"
