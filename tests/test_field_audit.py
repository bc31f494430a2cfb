"""Real layers in the audit (``verify.audit.LayerBank``, ``--real-layers``) and the field audit's
SmolLM2 layer bank and report."""

from __future__ import annotations

import json

import numpy as np
import pytest

import algorithms as A
from verify.audit import GRIDS, LayerBank, audit, audit_cases
from verify.cli import main as cli


def _bank(seed=0, names=("a", "b"), case_shape=None):
    r = np.random.default_rng(seed)
    layers = {}
    for k, nm in enumerate(names):
        N = 80 + 16 * k
        X = r.standard_normal((300, N)) * np.exp(r.standard_normal(N))  # uneven feature scales
        layers[nm] = (r.standard_normal((20, N)), X, X + 0.1 * r.standard_normal(X.shape))
    return LayerBank(layers, {"source": "test"}, case_shape)


SMALL = {"m": 48, "N": 16, "n": 4}


def optq_q(W, X, *, grid, lam, rng, order="natural"):
    return A.optq(W, X, grid=grid, lam=lam, order=order).Q


def rtn_q(W, X, *, grid, lam, rng):
    """Round to nearest, declared as OPTQ: its Q is not one an OPTQ loop would produce."""
    return A.rtn(W, grid=grid).Q


def test_bank_round_trip_and_slices(tmp_path):
    bank = _bank()
    p = bank.save(tmp_path / "bank.npz")
    back = LayerBank.load(p)
    assert back.names() == ["a", "b"] and back.meta == {"source": "test", "slice": LayerBank.SLICE}
    for nm in bank.names():
        for x, y in zip(bank.layers[nm], back.layers[nm]):
            assert np.array_equal(x, y)
    W, X, Xt = back.slice("b", 256, 64, 16, seed=3)
    assert W.shape == (16, 64) and X.shape == Xt.shape == (256, 64) and X.dtype == np.float64
    # a slice is a sub-layer: its columns are columns of the layer, in their original order
    Wf, Xf, _ = bank.layers["b"]
    rng = np.random.default_rng(3)
    c = np.sort(rng.choice(Xf.shape[1], 64, replace=False))
    rows = np.sort(rng.choice(Xf.shape[0], 256, replace=False))
    assert np.array_equal(X, Xf[np.ix_(rows, c)])
    assert np.array_equal(back.slice("b", 256, 64, 16, seed=3)[0], W)  # deterministic


def test_bank_rejects_bad_input(tmp_path):
    r = np.random.default_rng(0)
    with pytest.raises(ValueError, match="non-empty dict"):
        LayerBank({})
    with pytest.raises(ValueError, match="W .n × N. and X"):
        LayerBank({"x": (r.standard_normal((20, 70)), r.standard_normal((300, 64)))})
    with pytest.raises(ValueError, match="at least 256 rows"):
        LayerBank({"x": (r.standard_normal((20, 64)), r.standard_normal((100, 64)))})
    with pytest.raises(ValueError, match="multiple of 8"):
        LayerBank({"x": (r.standard_normal((20, 64)), r.standard_normal((300, 64)))}, case_shape={"m": 9, "N": 9, "n": 1})
    with pytest.raises(ValueError, match="without '/'"):
        LayerBank({"a/b": (r.standard_normal((20, 64)), r.standard_normal((300, 64)))})
    with pytest.raises(ValueError, match="no file"):
        LayerBank.load(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a layer bank"):
        LayerBank.load(tmp_path / "junk.npz")
    with pytest.raises(TypeError, match="real_layers"):
        audit(optq_q, families=("tall",), real_layers=3)
    with pytest.raises(ValueError, match="empty only with real_layers"):
        audit(optq_q, families=())


def test_plan_adds_real_cases_after_the_synthetic_ones():
    bank = _bank()
    syn = audit_cases("optq", "nearest", families=("tall",))
    both = audit_cases("optq", "nearest", families=("tall",), bank=bank)
    assert both[:len(syn)] == syn  # the synthetic plan (and its seeds) is unchanged
    real = both[len(syn):]
    assert len(real) == 2 * len(GRIDS) * 2
    assert {c.family for c in real} == {"a", "b"} and all(c.bank is bank for c in real)
    assert all(c.mismatch == 0 for c in real)
    q = audit_cases("qronos-projection", "nearest", families=(), bank=bank)
    assert len(q) == len(real) and all(c.mismatch for c in q)  # Qronos: on the captured X̃
    st = audit_cases("optq", "stochastic", families=(), bank=bank, trials=50)
    assert all(c.trials == 50 and c.n == 1 for c in st)


def test_real_layers_audit_passes_optq_and_flags_rtn(tmp_path):
    bank = _bank(case_shape=SMALL)
    rep = audit(optq_q, orders=("natural", "decreasing"), families=(), real_layers=bank, shrink=False)
    assert rep.cases == rep.planned == 2 * len(GRIDS) * 2 * 2
    assert rep.exit_code() == 0, rep.format()
    assert rep.claims["T1.sum_c"]["cases_in_scope"] > 0
    ag = rep.agreement  # the package's own optq, called by the user: equal bit for bit on every case
    assert ag["cases"] == rep.cases and ag["bitwise_cases"] == rep.cases and ag["entries_same_level"] == 1.0
    bad = audit(rtn_q, families=(), real_layers=bank, out_dir=tmp_path, grids=("gptq",))
    assert bad.exit_code() == 1, bad.format()
    assert bad.agreement["entries_same_level"] < 1.0 and bad.agreement["bitwise_cases"] < bad.agreement["cases"]
    assert bad.counterexamples, "a failure on a real layer gets a saved counterexample"
    ce = bad.counterexamples[0]
    with np.load(ce["path"]) as z:
        cfg = json.loads(str(z["config"]))
        assert cfg["real_layer"]["source"] == "test" and cfg["case"]["family"] in ("a", "b")
        assert "bank" not in cfg["case"]


def test_cli_real_layers_only(tmp_path, capsys):
    bank = _bank(case_shape=SMALL).save(tmp_path / "bank.npz")
    src = tmp_path / "q.py"
    src.write_text("import algorithms as A\n"
                   "def q(W, X, *, grid, lam, rng):\n    return A.optq(W, X, grid=grid, lam=lam).Q\n")
    rc = cli(["audit", f"{src}:q", "--families", "none", "--real-layers", str(bank), "--grids", "gptq",
              "--no-progress", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr()
    assert rc == 0, out.out + out.err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["cases"] == 2 * 2
    rc = cli(["audit", f"{src}:q", "--real-layers", str(tmp_path / "nope.npz"), "--no-progress"])
    assert rc == 2 and "no file" in capsys.readouterr().err


def test_field_audit_report_has_both_sources(tmp_path, monkeypatch):
    """The field audit on brevitas' GPTQ (installed with the llm extra) over one synthetic family
    and the SmolLM2 layer bank: two reports, both in the markdown."""
    pytest.importorskip("brevitas")
    pytest.importorskip("gguf")
    from verify import field_audit as F

    try:
        F.smollm2_bank(tmp_path / "bank.npz")
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"SmolLM2 unavailable: {exc}")
    monkeypatch.setattr(F, "BANK_PATH", tmp_path / "bank.npz")
    monkeypatch.setattr(F, "_counterexample_dir", lambda a, source: str(tmp_path / "ce" / a.name / source))
    monkeypatch.setattr(F.shutil, "rmtree", lambda *a, **k: None)
    doc = F.run(("tall",), 0, tmp_path / "fa", impls=("brevitas-gptq",), progress=False)
    (row,) = doc["implementations"]
    assert row["report"]["cases"] > 0 and row["report_real"]["cases"] > 0
    assert row["report_real"]["exit_code"] == 0
    assert doc["real_layers"]["layers"] == list(F.REAL_LAYERS)
    md = (tmp_path / "fa.md").read_text()
    assert "## Implementation × claim: SmolLM2-135M layers" in md and "blk.1.ffn_down" in md
    with pytest.raises(ValueError, match="impls"):
        F.run(("tall",), 0, tmp_path / "fa2", impls=("nope",), progress=False)
