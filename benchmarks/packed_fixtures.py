"""Write small packed checkpoints with the quantization libraries' own code, for the tests of
``check-layer --q`` (``tests/test_packed_libraries.py``). Run inside a library's environment
(``bash benchmarks/field_audit_envs.sh NAME``):

    PYTHONPATH=. /work/envs/auto-gptq/bin/python benchmarks/packed_fixtures.py auto-gptq
    PYTHONPATH=. /work/envs/llmcompressor/bin/python benchmarks/packed_fixtures.py compressed-tensors

Each fixture is a folder under ``tests/data/packed/`` with ``model.safetensors`` (the layer as the
library packs it), the layer's ``W.npy``/``X.npy`` (float32), ``reference.npy`` (the weight the
library itself dequantizes from what it packed, float32) and ``fixture.json`` (library versions,
the library's settings, how ``reference`` was obtained). The library's GPTQ produces the packed
weights where it has one (AutoGPTQ's ``fasterquant``, llm-compressor's ``quantize_weight``).
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "data" / "packed"
PREFIX = "model.layers.0.mlp.down_proj"


def _layer(seed, n=32, N=64, m=256):
    r = np.random.default_rng(seed)
    W = (0.05 * r.standard_normal((n, N))).astype(np.float32)
    X = (r.standard_normal((m, N)) * np.exp(0.5 * r.standard_normal(N))).astype(np.float32)
    return W, X


def _write(name, tensors, W, X, ref, meta, extra_files=None):
    from safetensors.torch import save_file

    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(d / "model.safetensors"))
    np.save(d / "W.npy", W)
    np.save(d / "X.npy", X)
    np.save(d / "reference.npy", np.asarray(ref, dtype=np.float32))
    for fname, text in (extra_files or {}).items():
        (d / fname).write_text(text)
    (d / "fixture.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    print(f"wrote {d}")


def auto_gptq():
    """AutoGPTQ 0.7.1: fasterquant on a float32 nn.Linear, the fp16 layer packed by its QuantLinear
    (``qlinear_cuda``, whose CPU forward unpacks in torch); reference = that forward on the identity."""
    import torch
    from auto_gptq.nn_modules.qlinear.qlinear_cuda import QuantLinear
    from auto_gptq.quantization.gptq import GPTQ

    for name, bits, group, sym, act, seed in (("autogptq-4bit-g16-actorder", 4, 16, False, True, 1),
                                              ("autogptq-3bit-perrow", 3, -1, False, False, 2),
                                              ("autogptq-4bit-sym-g32", 4, 32, True, False, 3)):
        W, X = _layer(seed)
        n, N = W.shape
        lin = torch.nn.Linear(N, n, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
        g = GPTQ(lin)
        g.quantizer.configure(bits, perchannel=True, sym=sym, mse=False)
        g.add_batch(torch.from_numpy(X).reshape(X.shape[0], 1, N), None)
        torch.cuda.synchronize = lambda *a, **k: None  # CPU-only torch: fasterquant's final synchronize
        scale, zero, g_idx = g.fasterquant(blocksize=128, percdamp=0.01, group_size=group, actorder=act)
        lin16 = torch.nn.Linear(N, n, bias=False, dtype=torch.float16)
        with torch.no_grad():
            lin16.weight.copy_(lin.weight.half())
        ql = QuantLinear(bits, group, N, n, bias=False)
        ql.pack(lin16, scale, zero, g_idx)
        with torch.no_grad():
            ref = ql(torch.eye(N, dtype=torch.float16)).T.float().numpy()  # its own dequantization
        tensors = {f"{PREFIX}.{k}": v for k, v in ql.state_dict().items()}
        qcfg = {"bits": bits, "group_size": group, "desc_act": act, "sym": sym, "static_groups": False,
                "checkpoint_format": "gptq", "damp_percent": 0.01, "true_sequential": True}
        meta = {"library": "auto-gptq", "version": version("auto-gptq"), "torch": version("torch"),
                "packer": "auto_gptq.nn_modules.qlinear.qlinear_cuda.QuantLinear.pack", "prefix": PREFIX,
                "quantizer": "auto_gptq.quantization.gptq.GPTQ.fasterquant (float32), weights cast to float16",
                "settings": qcfg, "reference": "QuantLinear forward (torch unpacking on CPU) on the identity",
                "layer_seed": seed}
        _write(name, tensors, W, X, ref, meta, {"quantize_config.json": json.dumps(qcfg, indent=1) + "\n"})


def compressed_tensors():
    """compressed-tensors (llm-compressor's format): 4-bit symmetric groups from llm-compressor's
    GPTQ, and a 3-bit asymmetric grouped layer (codes from the package's min/max fit, so that the
    dense 3-bit packing and the packed zero points are exercised); compressed by
    ``PackedQuantizationCompressor.compress`` and decompressed by its ``decompress`` (reference)."""
    import torch
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme

    from algorithms import Grid
    from verify.adapters.llmcompressor import gptq as lc_gptq

    # 4-bit symmetric, groups of 16, from llm-compressor's GPTQ (static groups: its pipeline's scales)
    W, X = _layer(4)
    lam = 0.01 * float(np.mean(np.sum(X.astype(np.float64) ** 2, axis=0)))
    res = lc_gptq(W.astype(np.float64), X.astype(np.float64),
                  grid=Grid.gptq(4, sym=True, group_size=16, static_groups=True), lam=lam)
    n, N = W.shape
    scale = np.asarray(res.used["scales"], dtype=np.float32)  # n × G
    cases = [("ct-4bit-sym-g16", 4, True, 16, torch.from_numpy(res.Q.astype(np.float32)), torch.from_numpy(scale),
              None, W, X, "llmcompressor.modifiers.gptq.gptq_quantize.quantize_weight (float32)")]
    # 3-bit asymmetric, groups of 16: on-grid weights from a min/max fit
    W3, X3 = _layer(5)
    Wg = W3.astype(np.float64).reshape(n, N // 16, 16)
    lo, hi = np.minimum(Wg.min(axis=2), 0), np.maximum(Wg.max(axis=2), 0)
    s3 = (hi - lo) / 7
    z3 = np.round(-lo / s3) - 4  # compressed-tensors' signed zero point (codes −4..3)
    codes = np.clip(np.round(Wg / s3[..., None]) + z3[..., None], -4, 3)
    Q3 = (s3[..., None] * (codes - z3[..., None])).reshape(n, N)
    cases.append(("ct-3bit-asym-g16", 3, False, 16, torch.from_numpy(Q3.astype(np.float32)),
                  torch.from_numpy(s3.astype(np.float32)), torch.from_numpy(z3.astype(np.int8)), W3, X3,
                  "min/max fit per group of 16 (asymmetric), rounded to nearest"))
    for name, bits, sym, group, Q, sc, zp, Wl, Xl, how in cases:
        args = QuantizationArgs(num_bits=bits, type="int", symmetric=sym, strategy="group", group_size=group)
        scheme = QuantizationScheme(targets=["Linear"], weights=args)
        sd = {"weight": Q, "weight_scale": sc}
        if zp is not None:
            sd["weight_zero_point"] = zp
        comp = PackedQuantizationCompressor.compress(sd, scheme)
        back = PackedQuantizationCompressor.decompress(dict(comp), scheme)
        tensors = {f"{PREFIX}.{k}": v for k, v in comp.items()}
        meta = {"library": "compressed-tensors", "version": version("compressed-tensors"), "torch": version("torch"),
                "packer": "compressed_tensors.compressors.pack_quantized.PackedQuantizationCompressor.compress",
                "prefix": PREFIX, "quantizer": how, "settings": {"num_bits": bits, "symmetric": sym, "strategy": "group",
                                                                 "group_size": group},
                "reference": "PackedQuantizationCompressor.decompress"}
        _write(name, tensors, Wl, Xl, back["weight"].float().numpy(), meta)


if __name__ == "__main__":
    which = sys.argv[1:] or ["auto-gptq", "compressed-tensors"]
    for w in which:
        {"auto-gptq": auto_gptq, "compressed-tensors": compressed_tensors}[w]()
