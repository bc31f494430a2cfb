"""Calibration capture for PTQ on SmolLM2-135M: float X and sequential X_tilde."""

import os
import zlib

import numpy as np
import pytest

pytestmark = pytest.mark.llm

# single-threaded BLAS: multithreaded OpenBLAS spins badly on a busy 2-core box
os.environ.setdefault("PTQ_BLAS_THREADS", "1")

pytest.importorskip("gguf", reason="needs the llm extra (gguf)")
pytest.importorskip("tokenizers", reason="needs the llm extra (tokenizers)")

from verify.llm import gguf_model as gm  # noqa: E402 (after the importorskip guards)

N_SEQ, SEQ = 2, 48


@pytest.fixture(scope="module")
def model(smollm2):
    return smollm2


@pytest.fixture(scope="module")
def tokens(model):
    from verify.llm.textsource import calibration_tokens

    try:
        return calibration_tokens(model, "licenses", n_tokens=N_SEQ * SEQ, seq_len=SEQ)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def identity(name, W, X, Xt):
    return W


def make_perturb(start_order, model, scale=1e-2):
    names = {l.name for l in model.linear_layers() if l.order >= start_order}

    def q(name, W, X, Xt):
        if name not in names:
            return W
        rng = np.random.default_rng(zlib.crc32(name.encode()))
        return W + scale * np.abs(W).max() * rng.standard_normal(W.shape).astype(W.dtype)

    return q


def test_calibration_tokens_metadata(model, tokens):
    md = tokens.metadata()
    assert tokens.tokens.shape == (N_SEQ, SEQ)
    assert md["text_source"] == "licenses" and md["text_chars"] > 10_000
    assert len(md["text_sha256"]) == 64 and md["text_files"]
    from verify.llm.textsource import calibration_tokens

    with pytest.raises(ValueError, match="n_tokens"):
        calibration_tokens(model, "licenses", n_tokens=10**7, seq_len=512)
    with pytest.raises(ValueError, match="n_tokens"):
        calibration_tokens(model, "licenses", n_tokens=100, seq_len=48)
    with pytest.raises(ValueError, match="source"):
        calibration_tokens(model, "no-such-source", n_tokens=96, seq_len=48)


def test_text_source_file(model, tmp_path):
    from verify.llm.textsource import calibration_tokens, load_text

    p = tmp_path / "t.txt"
    p.write_text("word " * 400)
    s = load_text(f"file:{p}")
    assert s.files == (str(p),) and s.n_chars == len("word " * 400) - 1
    ct = calibration_tokens(model, p, n_tokens=64, seq_len=32, add_bos=True)
    assert ct.tokens.shape == (2, 32) and (ct.tokens[:, 0] == 1).all()


def test_capture_inputs_shapes(model, tokens):
    from verify.llm.capture import capture_inputs

    X = capture_inputs(model, tokens, ["blk.0", "blk.1.ffn_down"])
    assert list(X) == [f"blk.0.{k}" for k in gm.LINEAR_TYPES] + ["blk.1.ffn_down"]
    m = N_SEQ * SEQ
    for name, x in X.items():
        assert x.shape == (m, model.layer(name).in_features) and x.dtype == np.float32
        assert not x.flags.writeable
    assert X["blk.0.attn_q"] is X["blk.0.attn_v"]  # shared input
    assert X["blk.0.ffn_gate"] is X["blk.0.ffn_up"]
    with pytest.raises(ValueError, match="layers"):
        capture_inputs(model, tokens, ["blk.0.nope"])
    with pytest.raises(ValueError, match="tokens"):
        capture_inputs(model, tokens.tokens.ravel(), ["blk.0.attn_q"])


def test_sequential_identity_is_exact(model, tokens):
    from verify.llm.capture import capture_inputs, sequential_capture

    R = sequential_capture(model, tokens, identity, ["blk.0", "blk.1"], unselected="float")
    assert len(R) == 14
    X = capture_inputs(model, tokens, ["blk.0", "blk.1"])
    for name, r in R.items():
        assert r.X.shape == r.X_tilde.shape == (N_SEQ * SEQ, r.shape[1])
        assert np.array_equal(r.X, r.X_tilde), name
        assert np.array_equal(r.X, X[name]), name
        assert r.storage_type == "Q4_1"


def test_sequential_mismatch_starts_at_first_quantized_layer(model, tokens):
    from verify.llm.capture import sequential_capture

    start = model.layer("blk.1.attn_output").order
    R = sequential_capture(model, tokens, make_perturb(start, model), ["blk.0", "blk.1", "blk.2"], unselected="float")
    for name, r in R.items():
        same = np.array_equal(r.X, r.X_tilde)
        assert same == (r.order <= start), name


def test_sequential_shared_inputs_and_grams(model, tokens):
    from verify.llm.capture import sequential_capture
    from verify.llm.stats import gram

    start = model.layer("blk.0.attn_q").order
    R = sequential_capture(
        model, tokens, make_perturb(start, model), ["blk.0"], unselected="float",
        keep=("X", "X_tilde", "H", "H_tilde", "G", "Q", "stats"),
    )
    # q/k/v see the same input; quantizing attn_q does not change attn_k's X_tilde
    assert np.array_equal(R["blk.0.attn_k"].X, R["blk.0.attn_k"].X_tilde)
    assert not np.array_equal(R["blk.0.attn_output"].X, R["blk.0.attn_output"].X_tilde)
    r = R["blk.0.ffn_down"]
    np.testing.assert_allclose(r.H, gram(r.X), rtol=1e-12)
    np.testing.assert_allclose(r.G, gram(r.X_tilde, r.X), rtol=1e-12)
    assert r.H.dtype == np.float64 and r.Q.shape == r.shape
    assert r.stats["dead_columns"] == 0 and r.stats["cond"] > 1


def test_sequential_unselected_callback_and_early_stop(model, tokens):
    from verify.llm.capture import sequential_capture

    calls = []

    def rtn(name, W, X, Xt):
        calls.append(name)
        return W + np.float32(1e-3) * np.sign(W)

    def sel(name, W, X, Xt):
        calls.append("SEL:" + name)
        return W

    R = sequential_capture(model, tokens, sel, ["blk.1.ffn_up"], unselected=rtn, keep=("X", "X_tilde"))
    assert list(R) == ["blk.1.ffn_up"]
    assert "SEL:blk.1.ffn_up" in calls
    assert max(int(c.split(".")[1]) for c in calls if not c.startswith("SEL")) == 1  # stopped after block 1
    assert len(calls) == 14
    assert not np.array_equal(R["blk.1.ffn_up"].X, R["blk.1.ffn_up"].X_tilde)
    assert R["blk.1.ffn_up"].stats is None


def test_sequential_argument_errors(model, tokens):
    from verify.llm.capture import sequential_capture

    with pytest.raises(ValueError, match="unselected"):
        sequential_capture(model, tokens, identity, ["blk.0.attn_q"])
    with pytest.raises(ValueError, match="unselected"):
        sequential_capture(model, tokens, identity, ["blk.0.attn_q"], unselected="rtn")
    with pytest.raises(TypeError, match="quantize"):
        sequential_capture(model, tokens, None, ["blk.0.attn_q"], unselected="float")
    with pytest.raises(ValueError, match="keep"):
        sequential_capture(model, tokens, identity, ["blk.0.attn_q"], unselected="float", keep=("Y",))
    with pytest.raises(ValueError, match="quantize"):
        sequential_capture(model, tokens, lambda n, W, X, Xt: W[:, :-1], ["blk.0.attn_q"], unselected="float")
    with pytest.raises(ValueError, match="layers"):
        sequential_capture(model, tokens, identity, ["blk.99.attn_q"], unselected="float")
    with pytest.raises(TypeError, match="model"):
        sequential_capture("smollm2", tokens, identity)


def test_layer_stats():
    from verify.llm.stats import layer_stats

    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 8))
    X[:, 3] = 0.0
    X[5, 1] = 1e3
    s = layer_stats(X)
    assert s["dead_columns"] == 1 and s["dead_columns_H"] == 1
    assert s["cond"] == np.inf
    assert s["numerical_rank"] == 7
    assert s["outlier_ratio"] > 500
    with pytest.raises(ValueError, match="X"):
        layer_stats(np.ones(3))
