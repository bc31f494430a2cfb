"""The column loop's results are pinned bit for bit (``np.array_equal``) against stored values.

The layers are built so that every floating-point operation of the loop is exact on any machine:
``H_λ⁻¹ = UᵀU`` with ``U = D·M``, ``M`` unit upper triangular with entries in {−1, 0, 1}, ``D`` a
diagonal of powers of two, and ``X = U⁻ᵀ`` (dyadic, so ``XᵀX``, its Cholesky factor and the
triangular inverse are exact whatever the summation order), ``λ = 0``, weights multiples of 1/8 and
steps powers of two (Qronos: ``X̃ = X·S``, ``S`` a diagonal of powers of two). The stored results therefore do not depend on the BLAS, and any change of
the loop's semantics (rounding and its ties, the random stream, the order, the block layout,
Qronos' first value, clipping) changes them. ``tests/data/loop_identity.npz`` was written by the
loop as it was before it moved to ``algorithms/loop.py`` (``python tests/test_loop_identity.py
--write PATH``, run on that version).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import algorithms as A

DATA = Path(__file__).parent / "data" / "loop_identity.npz"
N, n = 12, 5
FIELDS = ("Q", "errors", "z", "order", "saturated", "clipped", "W0", "hinv_diag", "W_hat", "y1")


def _layer(dtype, perm):
    """``(W, X, D)``: processing-order data ``X[:, perm] = U⁻ᵀ``; ``D = diag U``."""
    rng = np.random.default_rng(0)
    Mu = np.eye(N) + np.triu(rng.integers(-1, 2, (N, N)) * (rng.random((N, N)) < 0.4), 1)
    Mu[0, 1:4] = (1, -1, 1)  # the first processed feature is coupled to later ones (Qronos' y1 ≠ ŵ_f)
    D = 2.0 ** rng.integers(-1, 2, N)
    Xp = np.linalg.inv(D[:, None] * Mu).T
    Xp = np.round(Xp * 64) / 64  # removes the inversion's rounding: U⁻ᵀ is dyadic (M is integer)
    X = np.empty_like(Xp)
    X[:, perm] = Xp
    W = rng.integers(-16, 17, (n, N)) / 8.0
    return W.astype(dtype), X.astype(dtype), D


def _grids(dtype):
    return {
        "sym": A.Grid.symmetric(0.25, 8),
        "int": A.Grid.integers(0.5),
        "row": A.Grid.symmetric((2.0 ** -np.arange(n)[:, None] * 2.0).astype(dtype), 64),
    }


def _orders():
    return {"natural": np.arange(N), "custom": np.random.default_rng(3).permutation(N),
            "random": np.random.default_rng(9).permutation(N)}


def results():
    """``{key: array}`` of every case (also the sanity flags that the factorization was exact)."""
    out = {}

    def put(key, res):
        for f in FIELDS:
            v = getattr(res, f, None)
            if v is not None:
                out[f"{key}|{f}"] = np.array(np.asarray(v))
        out[f"{key}|scale"] = np.array(res.alphabet.scale)
        out[f"{key}|zero"] = np.array(res.alphabet.zero)

    for dtype in ("float64", "float32"):
        for oname, perm in _orders().items():
            W, X, D = _layer(dtype, perm)
            order = "random" if oname == "random" else ("natural" if oname == "natural" else perm)
            for gname, grid in _grids(dtype).items():
                for method, bs in (("blocked", 128), ("blocked", 5), ("blocked", 1), ("cholesky", 128)):
                    for rounding in ("nearest", "stochastic"):
                        r = A.optq(W, X, grid=grid, lam=0.0, order=order, rounding=rounding, method=method,
                                   block_size=bs, rng=np.random.default_rng(9))
                        out[f"exact|{dtype}|{oname}|{gname}|{method}"] = np.array(
                            np.array_equal(np.asarray(r.hinv_diag, dtype=np.float64), D))
                        put(f"optq|{dtype}|{oname}|{gname}|{method}|{bs}|{rounding}", r)
                Xt = X * (2.0 ** (np.arange(N) % 2))[None, :].astype(dtype)  # ŵ = W·diag(1, 1/2, …): exact
                for variant in ("projection", "original"):
                    for rounding in ("nearest", "stochastic"):
                        r = A.qronos(W, X, Xt, grid=grid, lam=0.0, variant=variant, order=order, rounding=rounding,
                                     block_size=5, rng=np.random.default_rng(9))
                        put(f"qronos|{dtype}|{oname}|{gname}|{variant}|{rounding}", r)
                if gname != "row":
                    for br in (None, 4):
                        r = A.optq_trials(W[1], X, grid=grid, trials=6, rng=np.random.default_rng(9), lam=0.0,
                                          order=order, block_size=5, batch_rows=br)
                        put(f"trials|{dtype}|{oname}|{gname}|{br}", r)
                if oname == "natural":
                    for rounding in ("nearest", "stochastic"):
                        put(f"rtn|{dtype}|{gname}|{rounding}", A.rtn(W, grid, rounding=rounding,
                                                                      rng=np.random.default_rng(9)))
    return out


def pack(res) -> dict:
    """The arrays of ``res`` as one index (keys, dtypes, shapes) and one flat array per dtype."""
    keys = sorted(res)
    index = [(k, str(res[k].dtype), list(res[k].shape)) for k in keys]
    flat = {}
    for k, dt, _ in index:
        flat.setdefault(dt, []).append(res[k].ravel())
    return {"index": np.array(json.dumps(index)), **{f"data_{dt}": np.concatenate(v) for dt, v in flat.items()}}


def unpack(packed) -> dict:
    index = json.loads(str(packed["index"]))
    pos, out = {}, {}
    for k, dt, shape in index:
        a = packed[f"data_{dt}"]
        i = pos.get(dt, 0)
        size = int(np.prod(shape))
        out[k] = a[i:i + size].reshape(shape)
        pos[dt] = i + size
    return out


@pytest.fixture(scope="module")
def now():
    return results()


def test_the_layers_are_exact(now):
    """The premise: U is reproduced exactly (else the stored values would depend on the machine)."""
    flags = {k: bool(v) for k, v in now.items() if k.startswith("exact|")}
    assert flags and all(flags.values()), [k for k, v in flags.items() if not v]


def test_results_equal_the_stored_ones_bit_for_bit(now):
    with np.load(DATA) as f:
        ref = unpack({k: f[k] for k in f.files})
    assert sorted(ref) == sorted(now), "the set of cases changed"
    differ = [k for k in ref
              if ref[k].dtype != now[k].dtype or ref[k].shape != now[k].shape or not np.array_equal(ref[k], now[k])]
    assert not differ, f"{len(differ)} of {len(ref)} arrays differ, e.g. {differ[:5]}"


def test_the_cases_exercise_ties_saturation_and_every_path(now):
    """Not vacuous: nearest-rounding ties (z/δ on a half-integer), saturated entries, stochastic
    decisions that differ from nearest, and Qronos' first value that differs from the weight."""
    v = now["optq|float64|natural|sym|blocked|128|nearest|z"] / 0.25
    assert np.sum(v - np.floor(v) == 0.5) > 0
    assert any(bool(np.any(now[k])) for k in now if k.endswith("|clipped"))
    a = now["optq|float64|natural|sym|blocked|128|nearest|Q"]
    b = now["optq|float64|natural|sym|blocked|128|stochastic|Q"]
    assert not np.array_equal(a, b)
    differs = [k for k in now if k.endswith("|y1") and not np.array_equal(
        now[k], now[k.replace("|y1", "|W0")][:, int(now[k.replace("|y1", "|order")][0])])]
    assert differs


if __name__ == "__main__":  # python tests/test_loop_identity.py --write PATH
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        res = results()
        np.savez_compressed(sys.argv[2], **pack(res))
        print(f"wrote {len(res)} arrays to {sys.argv[2]}")
    else:
        raise SystemExit("usage: python tests/test_loop_identity.py --write PATH")
