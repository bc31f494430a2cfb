"""``ptq-bounds bench`` runs on a tiny shape and writes a well-formed results file.

Never asserts on time: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math

import numpy as np
import pytest

from verify import bench


def _args(*argv):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(list(argv))


TINY = ("--shapes", "24x64,40x32", "--repeats", "2", "--mc-n", "48", "--mc-trials", "20", "--mc-batch", "8",
        "--no-progress")


def _positive(x):
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_bench_writes_well_formed_json(tmp_path, capsys):
    out = tmp_path / "res.json"
    assert bench.run(_args(*TINY, "--json", str(out))) == 0
    d = json.loads(out.read_text())
    assert d["schema"] == "ptq-bounds-bench/1"
    for key in ("timestamp_utc", "git", "device", "host", "versions", "env", "config", "definitions", "targets"):
        assert key in d
    assert d["device"]["kind"] == "cpu" and d["host"]["cores"] >= 1 and d["device"]["name"]
    assert d["versions"]["numpy"] == np.__version__
    assert d["config"]["dtype"] == "float32" and d["config"]["repeats"] == 2
    assert [r["shape"] for r in d["results"]] == [[24, 64], [40, 32]]
    for r in d["results"]:
        f = r["floor"]
        for op in ("cholesky", "cholesky_inverse", "cholesky_upper", "W@U"):
            assert _positive(f[op]["median_s"]) and len(f[op]["times_s"]) == 2
        assert math.isclose(f["total_s"], sum(f[op]["median_s"] for op in
                                              ("cholesky", "cholesky_inverse", "cholesky_upper", "W@U")))
        assert set(r["optq"]) == set(bench.CASES)
        for case, e in r["optq"].items():
            assert _positive(e["median_s"]) and _positive(e["ratio_to_floor"]) and e["cpu_median_s"] >= 0
        assert r["optq"]["act_order+g128"]["group_size"] == (64 if r["shape"][1] == 64 else 32)
        assert r["memory"]["bytes_W_plus_H"] > 0 and r["memory"]["ratio_incl_inputs"] >= 1
    if importlib.util.find_spec("torch") is not None:  # the reference GPTQ loop, side by side
        for r in d["results"]:
            assert set(r["reference"]) == set(bench.REFERENCE_CASES)
            for case, e in r["reference"].items():
                assert _positive(e["median_s"]) and _positive(e["ratio_to_floor"]) and len(e["times_s"]) == 2
                assert math.isclose(r["optq"][case]["ratio_to_reference"], r["optq"][case]["median_s"] / e["median_s"])
            assert "ratio_to_reference" not in r["optq"]["stochastic"]  # GPTQ has no stochastic rounding
        assert d["versions"]["torch"] and "reference" in d["definitions"]
    mc = d["monte_carlo"]
    assert mc["N"] == 48 and mc["trials"] == 20 and _positive(mc["trials_per_s"])
    printed = capsys.readouterr().out
    assert "24x64" in printed and "trials/s" in printed and str(out) in printed
    if importlib.util.find_spec("torch") is not None:
        assert "x reference" in printed and "reference deterministic" in printed


def test_bench_through_the_cli(tmp_path):
    from verify.cli import main

    rc = main(["bench", "--shapes", "16x32", "--repeats", "1", "--cases", "deterministic", "--mc-trials", "0",
               "--no-memory", "--no-progress", "--out", str(tmp_path)])
    assert rc == 0
    files = list(tmp_path.glob("bench_cpu_*.json"))
    assert len(files) == 1
    d = json.loads(files[0].read_text())
    assert list(d["results"][0]["optq"]) == ["deterministic"] and "monte_carlo" not in d


def test_bench_quick_defaults_parse():
    a = _args("--quick")
    assert a.quick and a.device == "cpu"
    assert bench._parse_shapes(",".join(bench.QUICK_SHAPES)) == [(256, 256), (512, 1024)]
    assert bench._parse_shapes(",".join(bench.SHAPES))[2] == (11008, 4096)


@pytest.mark.parametrize("argv, msg", [
    (("--shapes", "4096by4096"), "is not n x N"),
    (("--shapes", "0x8"), "must be positive"),
    (("--cases", "fast"), "unknown case"),
    (("--repeats", "0"), "--repeats"),
])
def test_bench_bad_arguments(argv, msg, capsys):
    assert bench.run(_args(*argv, "--no-save")) == 2
    assert msg in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_bench_gpu_without_cupy_is_a_clear_error(capsys):
    assert bench.run(_args("--device", "gpu", "--shapes", "8x8", "--no-save")) == 2
    err = capsys.readouterr().err
    assert "CuPy" in err and "--device cpu" in err


def test_optq_trials_rows_are_independent_trials():
    """The Monte Carlo helper: R rows, each a stochastic OPTQ run of the same w (same alphabet),
    differing only through the rounding; batches draw fresh randomness."""
    from algorithms import Grid, optq
    from algorithms.trials import optq_trials

    rng = np.random.default_rng(0)
    N = 32
    X = rng.standard_normal((40, N))
    w = rng.standard_normal(N)
    r = optq_trials(w, X, grid=Grid.gptq(4), trials=50, rng=np.random.default_rng(1), lam=0.3, batch_rows=16)
    assert r.Q.shape == (50, N) and r.errors.shape == (50, N) and r.saturated.shape == (50,)
    assert np.allclose(r.alphabet.scale, r.alphabet.scale[:1])
    assert len({tuple(q) for q in np.asarray(r.Q)}) > 10  # distinct trials
    # one batch of all rows == optq on the tiled matrix with the same rng
    a = optq_trials(w, X, grid=Grid.gptq(4), trials=12, rng=np.random.default_rng(5), lam=0.3)
    b = optq(np.tile(w, (12, 1)), X, grid=Grid.gptq(4), lam=0.3, rounding="stochastic", rng=np.random.default_rng(5))
    assert np.array_equal(np.asarray(a.Q), np.asarray(b.Q))
    with pytest.raises(ValueError, match="one weight vector"):
        optq_trials(np.ones((2, N)), X, grid=Grid.gptq(4), trials=3, rng=np.random.default_rng(0), lam=0.3)


def test_bench_without_the_reference(tmp_path, monkeypatch):
    from verify import bench_reference

    out = tmp_path / "r.json"
    assert bench.run(_args("--shapes", "8x16", "--repeats", "1", "--mc-trials", "0", "--no-memory", "--no-reference",
                           "--no-progress", "--json", str(out))) == 0
    r = json.loads(out.read_text())["results"][0]
    assert "reference" not in r and "ratio_to_reference" not in r["optq"]["deterministic"]
    # without PyTorch the reference is skipped with the reason, the rest runs
    monkeypatch.setattr(bench_reference, "why_unavailable", lambda: "PyTorch is not importable (test)")
    assert bench.run(_args("--shapes", "8x16", "--repeats", "1", "--mc-trials", "0", "--no-memory", "--no-progress",
                           "--json", str(out))) == 0
    d = json.loads(out.read_text())
    assert d["results"][0]["reference"] == {"skipped": "PyTorch is not importable (test)"}
    assert d["config"]["reference"] == "PyTorch is not importable (test)"


@pytest.mark.parametrize("kw, okw", [
    (dict(bits=4), dict(grid=("gptq", 4, True, None, False))),
    (dict(bits=3, sym=False, actorder=True, blocksize=8, groupsize=8),
     dict(grid=("gptq", 3, False, 8, False), order="decreasing", block_size=8)),
    (dict(bits=2, groupsize=8, static_groups=True, actorder=True, blocksize=4),
     dict(grid=("gptq", 2, True, 8, True), order="decreasing", block_size=4)),
])
def test_bench_reference_is_the_reference_semantics(kw, okw):
    """The loop the bench times computes what optq computes under GPTQ's conventions (H = (2/m)XᵀX,
    percdamp, dead features, act_order, groups), as tests/test_reference_gptq.py checks in detail."""
    pytest.importorskip("torch")
    import ast
    import inspect

    import algorithms as A
    from verify import bench_reference
    from verify.bench_reference import reference_gptq

    tree = ast.parse(inspect.getsource(bench_reference))  # independent of the package it is compared with
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m.split(".")[0] == "algorithms" for m in imported)

    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 32)) * np.exp(rng.uniform(-1, 1, 32))
    X[:, 3] = 0.0  # a dead feature
    W = rng.standard_normal((6, 32))
    _, bits, sym, g, static = okw.pop("grid")
    grid = A.Grid.gptq(bits, sym=sym, group_size=g, static_groups=static)
    np.testing.assert_allclose(reference_gptq(W, X, **kw), A.optq(W, X, grid=grid, percdamp=0.01, **okw).Q,
                               rtol=1e-10, atol=1e-12)
