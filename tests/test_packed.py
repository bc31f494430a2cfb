"""check-layer --q: a quantized weight made elsewhere (dense, GPTQ packed, compressed-tensors), read by
verify.packed and checked as an OPTQ/Qronos output.

The packers below are written here from the formats' definitions (Python integers, one value at a time),
independently of verify.packed's vectorised unpacking.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

import algorithms as A
from verify import packed
from verify.cli import main


# ------------------------------------------------------------------------------------------------
# independent writers
# ------------------------------------------------------------------------------------------------
def pack_stream(codes, bits):
    """Pack along axis 0: each column's values form one little-endian bit stream (value k at bit k·bits)."""
    codes = np.asarray(codes)
    R = (codes.shape[0] * bits + 31) // 32
    out = np.zeros((R, codes.shape[1]), dtype=np.uint32)
    for c in range(codes.shape[1]):
        acc = 0
        for k, v in enumerate(codes[:, c]):
            assert 0 <= int(v) < 2 ** bits
            acc |= int(v) << (k * bits)
        for r in range(R):
            out[r, c] = (acc >> (32 * r)) & 0xFFFFFFFF
    return out.view(np.int32)


def pack_words(codes, bits):
    """compressed-tensors: 32//bits values per word along axis 1, no straddling."""
    codes = np.asarray(codes)
    pf = 32 // bits
    C = -(-codes.shape[1] // pf)
    out = np.zeros((codes.shape[0], C), dtype=np.uint32)
    for i in range(codes.shape[0]):
        for j, v in enumerate(codes[i]):
            out[i, j // pf] |= np.uint32(int(v) << ((j % pf) * bits))
    return out.view(np.int32)


_ST = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
       np.dtype(np.int32): "I32", np.dtype(np.int64): "I64", np.dtype(np.int8): "I8"}


def save_safetensors(path, tensors, bf16=()):
    """A minimal safetensors writer; names in ``bf16`` are float arrays stored as bfloat16 (truncation of
    values that are exactly bfloat16)."""
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a)
        if name in bf16:
            u = a.astype(np.float32).view(np.uint32)
            assert np.all(u & 0xFFFF == 0), "not exactly bfloat16"
            raw, dt = (u >> 16).astype("<u2").tobytes(), "BF16"
        else:
            raw, dt = a.astype(a.dtype.newbyteorder("<")).tobytes(), _ST[a.dtype]
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ------------------------------------------------------------------------------------------------
# layers whose GPTQ steps are exactly float16 (so the packed Q equals optq's bit for bit)
# ------------------------------------------------------------------------------------------------
def _layer(bits, sym, g, n=6, N=64, m=160, seed=0):
    """W whose static-group min/max fit gives power-of-two-friendly steps (exact in float16)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, N)) * np.exp(rng.uniform(-0.5, 0.5, N))
    maxq = 2 ** bits - 1
    W = np.zeros((n, N))
    for i in range(n):
        for j0 in range(0, N, g):
            s = 2.0 ** -int(rng.integers(2, 6))  # the step
            blk = rng.uniform(-0.45, 0.45, g) * maxq * s
            if sym:  # xmax = maxq·s/2
                blk[int(rng.integers(g))] = maxq * s / 2 * rng.choice([-1, 1])
            else:  # xmin = −z·s, xmax = (maxq − z)·s
                z = int(rng.integers(1, maxq))
                blk = np.clip(blk + (maxq / 2 - z) * s, -z * s, (maxq - z) * s)
                blk[0], blk[1] = -z * s, (maxq - z) * s
            W[i, j0:j0 + g] = blk
    return W, X


def _optq(W, X, bits, sym, g, lam=None):
    grid = A.Grid.gptq(bits, sym=sym, group_size=g, static_groups=True)
    r = A.optq(W, X, grid=grid, lam=lam if lam is not None else 0.05 * float(np.mean(np.sum(X * X, 0))))
    return r


def gptq_pack(r, bits, g, convention="gptq-v1"):
    S, Z, Q = np.asarray(r.alphabet.scale), np.asarray(r.alphabet.zero), np.asarray(r.Q)
    n, N = Q.shape
    codes = np.rint(Q / S + Z).astype(np.int64)
    assert np.array_equal(S * (codes - Z), Q)
    G = N // g
    scales = S[:, ::g].T.astype(np.float16)  # G × n
    assert np.array_equal(scales.astype(np.float64), S[:, ::g].T), "steps not exact in float16"
    zeros = Z[:, ::g].T.astype(np.int64) - (1 if convention == "gptq-v1" else 0)
    return {"layer.qweight": pack_stream(codes.T, bits), "layer.qzeros": pack_stream(zeros.T, bits).T.copy(),
            "layer.scales": scales, "layer.g_idx": (np.arange(N) // g).astype(np.int32)}, codes, G


@pytest.fixture(scope="module")
def cases():
    out = {}
    for bits, sym, g in ((4, True, 16), (4, False, 16), (3, False, 32), (8, True, 16), (2, False, 16)):
        W, X = _layer(bits, sym, g, N=64)
        out[(bits, sym, g)] = (W, X, _optq(W, X, bits, sym, g))
    return out


# ------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [(4, True, 16), (4, False, 16), (3, False, 32), (8, True, 16), (2, False, 16)])
@pytest.mark.parametrize("convention", ["gptq-v1", "gptq-v2"])
def test_gptq_roundtrip_bit_for_bit(cases, tmp_path, key, convention):
    W, X, r = cases[key]
    bits, sym, g = key
    t, codes, G = gptq_pack(r, bits, g, convention)
    assert t["layer.qweight"].shape == (64 * bits // 32, W.shape[0])
    f = tmp_path / "m.safetensors"
    save_safetensors(f, t)
    # explicit convention, and auto (from the symmetric pattern or from W)
    for conv in (convention, "auto"):
        gq = packed.read_q(str(f), W=W, zero_convention=conv)
        assert gq.format == "gptq" and gq.info["bits"] == bits and gq.info["group_size"] == g
        assert gq.info["zero_convention"] == convention
        assert np.array_equal(gq.Q, np.asarray(r.Q))  # bit for bit
        assert np.array_equal(gq.grid.scale, np.asarray(r.alphabet.scale))
        assert gq.stored_dtype == "float16" and gq.precision == "float32"
    # the wrong convention shifts every entry by one step
    other = {"gptq-v1": "gptq-v2", "gptq-v2": "gptq-v1"}[convention]
    bad = packed.read_q(str(f), W=W, zero_convention=other)
    assert not np.array_equal(bad.Q, np.asarray(r.Q))


def test_unpack_stream_straddles_words():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 8, size=(64, 5))
    assert np.array_equal(packed.unpack_stream(pack_stream(codes, 3), 3, 64), codes)
    codes = rng.integers(0, 16, size=(24, 3))
    assert np.array_equal(packed.unpack_words(pack_words(codes.T, 4).T, 4, 24), codes)


def test_auto_convention_ambiguous_without_w(cases, tmp_path):
    W, X, r = cases[(4, False, 16)]
    t, _, _ = gptq_pack(r, 4, 16, "gptq-v1")
    f = tmp_path / "m.npz"
    np.savez(f, **t)
    with pytest.raises(ValueError, match="--zero-convention"):
        packed.read_gptq(str(f), N=64, W=None)
    (tmp_path / "quantize_config.json").write_text(json.dumps({"bits": 4, "checkpoint_format": "gptq"}))
    gq = packed.read_gptq(str(f), N=64, W=None)
    assert gq.info["zero_convention"] == "gptq-v1" and np.array_equal(gq.Q, np.asarray(r.Q))


def test_compressed_tensors_roundtrip(cases, tmp_path):
    for key in ((4, False, 16), (8, True, 16)):
        W, X, r = cases[key]
        bits, sym, g = key
        S, Z, Q = np.asarray(r.alphabet.scale), np.asarray(r.alphabet.zero), np.asarray(r.Q)
        off = 2 ** (bits - 1)
        q = np.rint(Q / S + Z).astype(np.int64) - off  # signed codes
        t = {"l.weight_packed": pack_words(q + off, bits), "l.weight_scale": S[:, ::g].astype(np.float16),
             "l.weight_shape": np.array(W.shape, dtype=np.int64)}
        if not sym:
            t["l.weight_zero_point"] = (Z[:, ::g] - off).astype(np.int8)
        f = tmp_path / f"ct{bits}.safetensors"
        save_safetensors(f, t)
        gq = packed.read_q(str(f), W=W)
        assert gq.format == "compressed-tensors" and gq.info["bits"] == bits
        assert np.array_equal(gq.Q, Q)


# ------------------------------------------------------------------------------------------------
# check-layer --q
# ------------------------------------------------------------------------------------------------
def _cli(tmp_path, W, X, *args):
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "X.npy", X)
    return main(["check-layer", str(tmp_path / "W.npy"), str(tmp_path / "X.npy"), "--no-progress",
                 *[str(a) for a in args]])


def test_check_layer_gptq_holds_and_one_code_changed_is_violated(cases, tmp_path, capsys):
    W, X, r = cases[(4, False, 16)]
    lam = 0.05 * float(np.mean(np.sum(X * X, 0)))
    t, codes, _ = gptq_pack(r, 4, 16, "gptq-v2")
    save_safetensors(tmp_path / "ok.safetensors", t)
    js = tmp_path / "r.json"
    assert _cli(tmp_path, W, X, "--q", tmp_path / "ok.safetensors", "--lam", lam, "--json", js) == 0
    out = capsys.readouterr().out
    assert "gptq-v2" in out and "float16" in out
    rep = json.loads(js.read_text())
    assert rep["q"]["format"] == "gptq" and rep["q"]["precision"] == "float32" and rep["exit_code"] == 0
    assert _cli(tmp_path, W, X, "--q", tmp_path / "ok.safetensors", "--lam", lam, "--precision", "float64") == 0
    # one code moved by one level
    i, j = 2, 5
    bad = codes.copy()
    bad[i, j] += 1 if bad[i, j] < 15 else -1
    t2 = dict(t, **{"layer.qweight": pack_stream(bad.T, 4)})
    save_safetensors(tmp_path / "bad.safetensors", t2)
    assert _cli(tmp_path, W, X, "--q", tmp_path / "bad.safetensors", "--lam", lam) == 1
    assert "VIOLATED" in capsys.readouterr().out


def test_check_layer_gptq_act_order_g_idx(tmp_path, capsys):
    """desc_act: groups by processing position, g_idx unsorted; holds only in the declared order."""
    rng = np.random.default_rng(5)
    n, N, g = 8, 64, 16
    X = rng.standard_normal((200, N)) * np.exp(rng.uniform(-1, 1, N))
    W = rng.standard_normal((n, N))
    r = A.optq(W, X, grid=A.Grid.gptq(4, sym=True, group_size=g), percdamp=0.01, order="decreasing")
    S, Z, Q = np.asarray(r.alphabet.scale), np.asarray(r.alphabet.zero), np.asarray(r.Q)
    g_idx = (np.argsort(np.asarray(r.order)) // g).astype(np.int32)
    codes = np.rint(Q / S + Z).astype(np.int64)
    sc, zz = np.zeros((N // g, n)), np.zeros((N // g, n), dtype=np.int64)
    for j in range(N):
        sc[g_idx[j]], zz[g_idx[j]] = S[:, j], Z[:, j]
    save_safetensors(tmp_path / "a.safetensors", {
        "m.l.qweight": pack_stream(codes.T, 4), "m.l.qzeros": pack_stream((zz - 1).T, 4).T.copy(),
        "m.l.scales": sc.astype(np.float16), "m.l.g_idx": g_idx})
    spec = str(tmp_path / "a.safetensors") + ":m.l"
    assert _cli(tmp_path, W, X, "--q", spec, "--order", "decreasing") == 0
    assert _cli(tmp_path, W, X, "--q", spec) == 1
    assert "act_order" in capsys.readouterr().out


def test_check_layer_dense_fp16_bf16_and_grid_options(cases, tmp_path, capsys):
    W, X, r = cases[(4, True, 16)]
    lam = 0.05 * float(np.mean(np.sum(X * X, 0)))
    Q = np.asarray(r.Q)
    grid = ["--bits", 4, "--group-size", 16, "--static-groups", "--lam", lam]
    np.save(tmp_path / "Q16.npy", Q.astype(np.float16))
    assert _cli(tmp_path, W, X, "--q", tmp_path / "Q16.npy", *grid) == 0
    assert "float16" in capsys.readouterr().out
    save_safetensors(tmp_path / "Qb.safetensors", {"w": Q.astype(np.float32)}, bf16=("w",))
    assert _cli(tmp_path, W, X, "--q", str(tmp_path / "Qb.safetensors") + ":w", *grid) == 0
    assert "bfloat16" in capsys.readouterr().out
    # explicit per-group scales and zeros
    np.save(tmp_path / "S.npy", np.asarray(r.alphabet.scale)[:, ::16])
    np.save(tmp_path / "Z.npy", np.asarray(r.alphabet.zero)[:, ::16])
    args = ["--q", tmp_path / "Q16.npy", "--scales", tmp_path / "S.npy", "--zeros", tmp_path / "Z.npy", "--lam", lam]
    assert _cli(tmp_path, W, X, *args) == 0
    Qb = Q.copy()
    Qb[1, 3] += np.asarray(r.alphabet.scale)[1, 3] * (1 if Qb[1, 3] <= 0 else -1)
    np.save(tmp_path / "Q16.npy", Qb)
    assert _cli(tmp_path, W, X, *args) == 1


@pytest.mark.parametrize("mutate, fragment", [
    (lambda t: t.update({"layer.qweight": t["layer.qweight"].astype(np.float32)}), "qweight"),
    (lambda t: t.update({"layer.scales": t["layer.scales"][:, :-1]}), "scales"),
    (lambda t: t.update({"layer.g_idx": t["layer.g_idx"] + 9}), "g_idx"),
    (lambda t: t.update({"layer.qzeros": t["layer.qzeros"][:-1]}), "qzeros"),
    (lambda t: t.update({"layer.qweight": t["layer.qweight"][:-1]}), "qweight"),
    (lambda t: t.pop("layer.qzeros"), "layer.qzeros"),
])
def test_check_layer_bad_packed_input_exits_2(cases, tmp_path, capsys, mutate, fragment):
    W, X, r = cases[(4, True, 16)]
    t, _, _ = gptq_pack(r, 4, 16)
    mutate(t)
    save_safetensors(tmp_path / "m.safetensors", t)
    assert _cli(tmp_path, W, X, "--q", tmp_path / "m.safetensors") == 2
    assert fragment in capsys.readouterr().err


def test_check_layer_bad_dense_input_exits_2(cases, tmp_path, capsys):
    W, X, r = cases[(4, True, 16)]
    np.save(tmp_path / "Qt.npy", np.asarray(r.Q).T)
    assert _cli(tmp_path, W, X, "--q", tmp_path / "Qt.npy") == 2
    assert "transposed" in capsys.readouterr().err
    np.save(tmp_path / "Qi.npy", np.zeros(W.shape, dtype=np.int32))
    assert _cli(tmp_path, W, X, "--q", tmp_path / "Qi.npy") == 2
    assert "floating-point" in capsys.readouterr().err
    np.save(tmp_path / "Q.npy", np.asarray(r.Q))
    assert _cli(tmp_path, W, X, "--q", tmp_path / "Q.npy", "--q-kind", "qronos-original") == 2
    assert "--x-tilde" in capsys.readouterr().err
