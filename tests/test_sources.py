"""Data sources (verify.sources): the campaign asks the registry for a cell's layer and name, and
never imports a source's module itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from verify.campaign import make_layer
from verify.sources import SOURCES, DataSource, describe, register, source_of


def test_the_key_selects_the_source():
    assert source_of({"family": "tall", "m": 8, "N": 4}).name == "synthetic"
    assert source_of({"llm": {"layer": "blk.1.attn_q"}}).name == "llm"
    assert source_of({"files": {"W": "w.npy", "X": "x.npy"}}).name == "files"
    d = describe({"llm": {"layer": "blk.3.ffn_down", "model": "smollm2-135m"}})
    assert d == {"source": "llm", "model": "smollm2-135m", "layer": "blk.3.ffn_down", "group": "ffn_down"}
    assert describe({"family": "dead"})["group"] == "dead"


def test_synthetic_cells_are_unchanged():
    """The registry's synthetic loader is the campaign's layer maker: same seed, same arrays."""
    from verify.data import make_X

    cfg = {"family": "tall", "m": 20, "N": 6, "n": 3, "cond": 100.0}
    W, X, Xt = make_layer(cfg, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    assert np.array_equal(X, make_X("tall", 20, 6, rng, cond=100.0))
    assert np.array_equal(W, rng.standard_normal((3, 6))) and Xt is None


def test_files_source(tmp_path):
    r = np.random.default_rng(0)
    W, X = r.standard_normal((3, 5)), r.standard_normal((9, 5))
    np.save(tmp_path / "W.npy", W)
    np.savez(tmp_path / "d.npz", X=X, Xt=X + 1)
    cfg = {"files": {"W": str(tmp_path / "W.npy"), "X": f"{tmp_path / 'd.npz'}:X",
                     "X_tilde": f"{tmp_path / 'd.npz'}:Xt"}}
    W2, X2, Xt2 = make_layer(cfg, None)
    assert np.array_equal(W2, W) and np.array_equal(X2, X) and np.array_equal(Xt2, X + 1)
    with pytest.raises(ValueError, match="say which"):
        make_layer({"files": {"W": str(tmp_path / "W.npy"), "X": str(tmp_path / "d.npz")}}, None)
    with pytest.raises(ValueError, match="cannot read W"):
        make_layer({"files": {"W": str(tmp_path / "nope.npy"), "X": str(tmp_path / "W.npy")}}, None)
    np.save(tmp_path / "X7.npy", np.zeros((4, 7)))
    with pytest.raises(ValueError, match="W must be n × N"):
        make_layer({"files": {"W": str(tmp_path / "W.npy"), "X": str(tmp_path / "X7.npy")}}, None)


def test_files_source_reads_safetensors_and_checks_the_hash(tmp_path):
    """A capture file of `ptq-bounds capture` (safetensors, keys W, X, X_tilde) as a cell's data; a
    file changed since the cell was built is refused."""
    import hashlib

    st = pytest.importorskip("safetensors.numpy")
    rng = np.random.default_rng(0)
    arrays = {"W": rng.standard_normal((3, 5)).astype(np.float32), "X": rng.standard_normal((9, 5)).astype(np.float32),
              "X_tilde": rng.standard_normal((9, 5)).astype(np.float32)}
    f = tmp_path / "layer.safetensors"
    st.save_file(arrays, str(f))
    sha = hashlib.sha256(f.read_bytes()).hexdigest()
    cfg = {"files": {"W": f"{f}:W", "X": f"{f}:X", "X_tilde": f"{f}:X_tilde", "sha256": sha, "layer": "blk.0.q",
                     "group": "q"}}
    W, X, Xt = make_layer(cfg, None)
    assert np.array_equal(W, arrays["W"]) and np.array_equal(Xt, arrays["X_tilde"])
    assert describe(cfg) == {"source": "files", "model": None, "layer": "blk.0.q", "group": "q"}
    with pytest.raises(ValueError, match="has no tensor 'Y'"):
        make_layer({"files": {"W": f"{f}:W", "X": f"{f}:Y"}}, None)
    st.save_file({k: v * 2 for k, v in arrays.items()}, str(f))
    with pytest.raises(ValueError, match="rebuild the campaign"):
        make_layer(cfg, None)


def test_register_refuses_a_taken_key():
    with pytest.raises(ValueError, match="already selects"):
        register(DataSource("other-llm", "llm", "x:y", lambda c: {}))
    with pytest.raises(TypeError):
        register("not a source")
    assert SOURCES["llm"].loader == "verify.llm.campaign:load_cell_layer"


def test_the_campaign_does_not_import_the_real_model_code():
    code = "import sys, verify.campaign, verify.recheck; bad = [m for m in sys.modules if m.startswith('verify.llm')]; " \
           "assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
