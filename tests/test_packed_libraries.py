"""``check-layer --q`` on packed checkpoints written by the quantization libraries themselves
(AutoGPTQ's ``QuantLinear.pack``, compressed-tensors' ``PackedQuantizationCompressor``), kept under
``tests/data/packed/`` with the weight each library dequantizes from them (``reference.npy``).
Regenerate with ``benchmarks/packed_fixtures.py`` inside the libraries' environments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from verify.cli import main
from verify.packed import read_q

DATA = Path(__file__).parent / "data" / "packed"
FIXTURES = sorted(p.name for p in DATA.iterdir() if (p / "fixture.json").is_file())


def _load(name):
    d = DATA / name
    meta = json.loads((d / "fixture.json").read_text())
    return d, meta, np.load(d / "W.npy"), np.load(d / "X.npy"), np.load(d / "reference.npy")


def test_fixtures_present():
    libs = {json.loads((DATA / f / "fixture.json").read_text())["library"] for f in FIXTURES}
    assert {"auto-gptq", "compressed-tensors"} <= libs


@pytest.mark.parametrize("name", FIXTURES)
def test_reader_equals_the_library_dequantization(name):
    """The reader's float64 Q, rounded to the dtype the library dequantizes in, is the library's own
    dequantized weight, entry for entry."""
    d, meta, W, X, ref = _load(name)
    given = read_q(f"{d / 'model.safetensors'}:{meta['prefix']}", W=W.astype(np.float64))
    assert given.Q.shape == W.shape
    if meta["library"] == "auto-gptq":  # float16 layer: scales float16, dequantized in float16
        assert given.format == "gptq" and given.info["bits"] == meta["settings"]["bits"]
        assert np.array_equal(given.Q.astype(np.float16).astype(np.float32), ref)
    else:  # float32 scales: the product of two float32 numbers is exact in float64
        assert given.format == "compressed-tensors" and given.info["bits"] == meta["settings"]["num_bits"]
        assert np.array_equal(given.Q.astype(np.float32), ref)
        if meta["settings"]["num_bits"] == 3:
            assert given.info["packing"] == "dense"  # the 3-bit layout of current releases
    # and the codes lie on the grid read from the file
    G = given.grid
    codes = given.Q / G.scale + G.zero
    assert np.allclose(codes, np.round(codes), atol=1e-6)
    assert codes.min() >= G.qmin - 1e-6 and codes.max() <= G.qmax + 1e-6


@pytest.mark.parametrize("name", [f for f in FIXTURES if f.startswith("autogptq")])
def test_check_layer_on_autogptq_checkpoints(name, tmp_path, capsys):
    """AutoGPTQ's GPTQ output, packed by AutoGPTQ: every claim holds under the settings it used
    (percdamp 0.01 of mean diag H, desc_act → decreasing order), judged in float32."""
    d, meta, W, X, _ = _load(name)
    s = meta["settings"]
    js = tmp_path / "r.json"
    rc = main(["check-layer", str(d / "W.npy"), str(d / "X.npy"), "--no-progress",
               "--q", f"{d / 'model.safetensors'}:{meta['prefix']}", "--percdamp", "0.01",
               "--order", "decreasing" if s["desc_act"] else "natural", "--precision", "float32",
               "--json", str(js)])
    out = capsys.readouterr()
    rep = json.loads(js.read_text())
    assert rc == 0, out.out + out.err
    assert rep["q"]["format"] == "gptq" and rep["exit_code"] == 0 and rep["status"] == "consistent"
    v = {x["claim"]: x for x in rep["runs"][0]["verdicts"]}
    for cid in ("hyp.on_grid", "hyp.nearest", "T1.sum_c"):  # checked, not vacuous
        assert v[cid]["status"] == "consistent" and v[cid]["in_scope"] > 0, v[cid]


def test_check_layer_flags_a_tampered_library_checkpoint(tmp_path, capsys):
    """One code of AutoGPTQ's packed weight moved by one level: the check says violated."""
    from safetensors.numpy import load_file, save_file

    d, meta, W, X, _ = _load("autogptq-4bit-g16-actorder")
    t = load_file(str(d / "model.safetensors"))
    key = f"{meta['prefix']}.qweight"
    qw = t[key].view(np.uint32).copy()
    code = int(qw[0, 3] & 0xF)
    qw[0, 3] = (qw[0, 3] & ~np.uint32(0xF)) | np.uint32(code + 1 if code < 15 else code - 1)
    t[key] = qw.view(np.int32)
    save_file(t, str(tmp_path / "bad.safetensors"))
    rc = main(["check-layer", str(d / "W.npy"), str(d / "X.npy"), "--no-progress",
               "--q", f"{tmp_path / 'bad.safetensors'}:{meta['prefix']}", "--percdamp", "0.01",
               "--order", "decreasing", "--precision", "float32"])
    assert rc == 1, capsys.readouterr().out
