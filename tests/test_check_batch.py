"""check-layer's --threads and --batch (several layers in one process, one-thread workers)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from verify.threads import available_cpus, blas_limit, default_threads

from conftest import run_cli as ptq  # noqa: E402


@pytest.fixture
def layers(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        X = rng.standard_normal((64, 12)) * np.exp(rng.uniform(-1, 1, 12))
        np.save(tmp_path / f"W{i}.npy", rng.standard_normal((6, 12)))
        np.save(tmp_path / f"X{i}.npy", X)
    np.save(tmp_path / "Xt0.npy", np.load(tmp_path / "X0.npy") + 0.05)
    (tmp_path / "list.txt").write_text(
        f"# three layers\n{tmp_path}/W0.npy {tmp_path}/X0.npy {tmp_path}/Xt0.npy\n\n"
        f"{tmp_path}/W1.npy {tmp_path}/X1.npy  # no X̃\n{tmp_path}/W2.npy {tmp_path}/X2.npy\n")
    return tmp_path


def test_batch_checks_every_layer_and_matches_single_runs(layers):
    r = ptq("check-layer", "--batch", layers / "list.txt", "--jobs", 2, "--lam", 1.0, "--json", layers / "b.json")
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((layers / "b.json").read_text())
    assert [d["exit_code"] for d in doc["layers"]] == [0, 0, 0] and doc["exit_code"] == 0
    assert len(doc["layers"][0]["runs"]) == 4 and len(doc["layers"][1]["runs"]) == 1
    one = ptq("check-layer", layers / "W1.npy", layers / "X1.npy", "--lam", 1.0, "--threads", 1,
              "--json", layers / "one.json")
    assert one.returncode == 0, one.stderr
    single = json.loads((layers / "one.json").read_text())
    assert single["runs"][0]["verdicts"] == doc["layers"][1]["runs"][0]["verdicts"]


@pytest.mark.parametrize("args,fragment", [
    (("W0.npy", "X0.npy", "--batch", "list.txt"), "not both"),
    (("--lam", "1"), "W and X are required"),
    (("--batch", "bad.txt"), "expected 'W X [X_TILDE]'"),
    (("--batch", "none.txt"), "cannot read"),
])
def test_batch_bad_input_is_2(layers, args, fragment):
    (layers / "bad.txt").write_text("only_one_path.npy\n")
    r = ptq("check-layer", *[layers / a if a.endswith((".npy", ".txt")) else a for a in args])
    assert r.returncode == 2 and fragment in r.stderr, r.stderr


def test_threads_option_and_environment(layers, monkeypatch):
    assert available_cpus() >= 1
    monkeypatch.setenv("PTQ_BLAS_THREADS", "1")
    assert default_threads() == 1
    monkeypatch.setenv("PTQ_BLAS_THREADS", "zero")
    with pytest.raises(ValueError, match="PTQ_BLAS_THREADS"):
        default_threads()
    monkeypatch.delenv("PTQ_BLAS_THREADS")
    assert default_threads() == available_cpus()
    with pytest.raises(ValueError, match="threads"):
        with blas_limit(0):
            pass
    from threadpoolctl import threadpool_info

    with blas_limit(1):
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    r = ptq("check-layer", layers / "W2.npy", layers / "X2.npy", "--threads", 0)
    assert r.returncode == 2 and "threads" in r.stderr
