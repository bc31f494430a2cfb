"""On-disk cache of calibration captures (verify.llm.cache)."""

import os
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.llm

# single-threaded BLAS: multithreaded OpenBLAS spins badly on a busy 2-core box
os.environ.setdefault("PTQ_BLAS_THREADS", "1")

pytest.importorskip("gguf", reason="needs the llm extra (gguf)")
pytest.importorskip("tokenizers", reason="needs the llm extra (tokenizers)")

KW = dict(source="licenses", n_tokens=64, seq_len=32, progress=False)


@pytest.fixture(scope="module")
def model(smollm2):
    from verify.llm.textsource import load_text

    try:
        load_text("licenses")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return smollm2


def test_default_cache_dir(monkeypatch, tmp_path):
    from verify.llm.cache import default_cache_dir

    monkeypatch.setenv("PTQ_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PTQ_CACHE_DIR")
    assert default_cache_dir() == Path.home() / ".cache" / "provable-ptq"


def test_cache_refuses_repository(model):
    from verify.llm.cache import cached_inputs

    repo = Path(__file__).resolve().parents[1]
    with pytest.raises(ValueError, match="cache_dir"):
        cached_inputs(model, layers=["blk.0.attn_q"], cache_dir=repo / ".ptq-cache", **KW)


def test_float_cache_hit_is_identical(model, tmp_path):
    from verify.llm.cache import cached_inputs
    from verify.llm.capture import capture_inputs
    from verify.llm.textsource import calibration_tokens

    layers = ["blk.0.attn_q", "blk.0.attn_k", "blk.1.ffn_down"]
    a = cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)
    assert not any(c.from_cache for c in a.values())
    b = cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)
    assert all(c.from_cache for c in b.values())
    X = capture_inputs(model, calibration_tokens(model, "licenses", 64, 32), layers)
    for n in layers:
        assert np.array_equal(a[n]["X"], b[n]["X"]) and np.array_equal(b[n]["X"], X[n])
        assert b[n].stats == a[n].stats
        assert b[n].meta["text_sha256"] == a[n].meta["text_sha256"]
        assert b[n].meta["storage_type"] == "Q4_1"
        assert b[n].path.is_file() and tmp_path in b[n].path.parents
    # partial hit: one new layer, the others come from disk
    c = cached_inputs(model, layers=layers + ["blk.1.ffn_up"], cache_dir=tmp_path, **KW)
    assert {n: v.from_cache for n, v in c.items()} == {**{n: True for n in layers}, "blk.1.ffn_up": False}
    assert list(c) == ["blk.0.attn_q", "blk.0.attn_k", "blk.1.ffn_up", "blk.1.ffn_down"]  # execution order
    # H mode stores X^T X in float64
    h = cached_inputs(model, layers=["blk.1.ffn_down"], store="H", cache_dir=tmp_path, **KW)
    H = h["blk.1.ffn_down"]["H"]
    assert H.dtype == np.float64 and H.shape == (1536, 1536)
    np.testing.assert_allclose(H, X["blk.1.ffn_down"].astype(np.float64).T @ X["blk.1.ffn_down"], rtol=1e-12)
    # key separates configurations
    d = cached_inputs(model, layers=["blk.0.attn_q"], cache_dir=tmp_path, **dict(KW, n_tokens=96))
    assert not d["blk.0.attn_q"].from_cache and d["blk.0.attn_q"]["X"].shape == (96, 576)


def test_partial_and_corrupt_files_are_never_read(model, tmp_path, monkeypatch):
    from verify.llm import cache as C

    layers = ["blk.0.attn_output"]
    ref = C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)["blk.0.attn_output"]
    path = ref.path

    # a killed writer: savez dies half-way -> no final file, no temp left over
    path.unlink()
    real_savez = np.savez

    def dying_savez(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(C.np, "savez", dying_savez)
    with pytest.raises(KeyboardInterrupt):
        C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)
    monkeypatch.setattr(C.np, "savez", real_savez)
    assert not path.exists()
    assert not list(path.parent.glob(".tmp-*"))

    # a stray temp file from a killed process is ignored
    (path.parent / ".tmp-stray.part").write_bytes(b"garbage")
    a = C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)["blk.0.attn_output"]
    assert not a.from_cache and np.array_equal(a["X"], ref["X"])

    # a truncated final file is a miss and is rewritten
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert C.load_npz(path, a.key) is None
    b = C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)["blk.0.attn_output"]
    assert not b.from_cache and np.array_equal(b["X"], ref["X"])
    c = C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)["blk.0.attn_output"]
    assert c.from_cache and np.array_equal(c["X"], ref["X"])

    # a file whose stored key differs is a miss
    other = dict(a.key, n_tokens=12345)
    assert C.load_npz(path, other) is None

    # a file written by other code (another fingerprint of algorithms/ and the forward pass) is a miss
    # for the producers, and is recomputed; a reader that checks the content itself may still read it
    assert C.load_npz(path, a.key)[1]["producer"] == C.producer_fingerprint()
    monkeypatch.setattr(C, "producer_fingerprint", lambda: "other-code")
    assert C.load_npz(path, a.key) is None
    assert C.load_npz(path, a.key, producer=False) is not None
    d = C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)["blk.0.attn_output"]
    assert not d.from_cache and np.array_equal(d["X"], ref["X"])
    assert C.cached_inputs(model, layers=layers, cache_dir=tmp_path, **KW)["blk.0.attn_output"].from_cache


def test_sequential_cache(model, tmp_path):
    from verify.llm.cache import cached_sequential

    def q(name, W, X, Xt):
        return W + np.float32(1e-2) * np.sign(W)

    layers = ["blk.0.attn_output", "blk.0.ffn_down"]
    with pytest.raises(ValueError, match="quantizer_id"):
        cached_sequential(model, q, "", layers=layers, unselected="float", cache_dir=tmp_path, **KW)
    with pytest.raises(ValueError, match="unselected_id"):
        cached_sequential(model, q, "sign", layers=layers, unselected=q, cache_dir=tmp_path, **KW)
    a = cached_sequential(model, q, "sign-1e-2", layers=layers, unselected="float", store="H", cache_dir=tmp_path, **KW)
    b = cached_sequential(model, q, "sign-1e-2", layers=layers, unselected="float", store="H", cache_dir=tmp_path, **KW)
    assert all(v.from_cache for v in b.values()) and not any(v.from_cache for v in a.values())
    for n in layers:
        for k in ("H", "H_tilde", "G"):
            assert np.array_equal(a[n][k], b[n][k])
    # attn_output is the first quantized layer: no mismatch yet; ffn_down sees one
    assert np.array_equal(b["blk.0.attn_output"]["H"], b["blk.0.attn_output"]["H_tilde"])
    assert not np.array_equal(b["blk.0.ffn_down"]["H"], b["blk.0.ffn_down"]["H_tilde"])
    c = cached_sequential(model, q, "other-id", layers=layers, unselected="float", store="H", cache_dir=tmp_path, **KW)
    assert not any(v.from_cache for v in c.values())
    assert b["blk.0.ffn_down"].stats_tilde is not None
