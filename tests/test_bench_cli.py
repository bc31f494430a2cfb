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
    mc = d["monte_carlo"]
    assert mc["N"] == 48 and mc["trials"] == 20 and _positive(mc["trials_per_s"])
    printed = capsys.readouterr().out
    assert "24x64" in printed and "trials/s" in printed and str(out) in printed


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
