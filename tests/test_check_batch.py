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


def _blas_threads():
    from threadpoolctl import threadpool_info

    return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}


def test_cpu_share_counts_live_registrations_and_drops_stale_ones(tmp_path):
    from verify.threads import CpuShare

    reg = tmp_path / "reg"
    with CpuShare(cpus=4, directory=reg) as a:
        assert a.live() == 1 and a.threads() == 4
        with CpuShare(cpus=4, directory=reg), CpuShare(cpus=4, directory=reg):
            assert a.live() == 3 and a.threads() == 1  # 4 // 3
        assert a.threads() == 4
        (reg / "12345-dead.lock").write_text("")  # a process that ended without removing its file
        assert a.live() == 1 and not (reg / "12345-dead.lock").exists()
    assert list(reg.glob("*.lock")) == []
    with pytest.raises(ValueError, match="cpus"):
        CpuShare(cpus=0, directory=reg)


def test_shared_blas_rebalances_when_others_start_and_end(tmp_path, monkeypatch):
    """A process that started alone gives up BLAS threads at its next run when others register,
    and takes them back when they end; a fixed number (argument or $PTQ_BLAS_THREADS) is kept."""
    import verify.threads as T

    monkeypatch.setenv("PTQ_CPU_REGISTRY", str(tmp_path / "reg"))
    monkeypatch.delenv("PTQ_BLAS_THREADS", raising=False)
    monkeypatch.setattr(T, "available_cpus", lambda: 4)
    before = _blas_threads()
    assert T.rebalance() is None  # outside a share nothing changes
    with T.shared_blas() as n:
        assert n == 4 and _blas_threads() == {4}
        with T.CpuShare(cpus=4), T.CpuShare(cpus=4):
            assert T.rebalance() == 1 and _blas_threads() == {1}
        assert T.rebalance() == 4 and _blas_threads() == {4}
    assert _blas_threads() == before
    with T.shared_blas(2) as n:
        assert n == 2 and T.rebalance() is None and _blas_threads() == {2}
    monkeypatch.setenv("PTQ_BLAS_THREADS", "1")
    with T.shared_blas() as n:
        assert n == 1 and _blas_threads() == {1}


def test_check_layer_shares_the_cpus_by_default(layers, tmp_path):
    """check-layer without --threads registers for the run and leaves the registry clean; with two
    other live registrations it still completes (with its share, max(1, cpus // 3) threads)."""
    import os

    from verify.threads import CpuShare

    reg = tmp_path / "reg"
    env = {**os.environ, "PTQ_CPU_REGISTRY": str(reg)}
    env.pop("PTQ_BLAS_THREADS", None)
    with CpuShare(directory=reg), CpuShare(directory=reg):
        r = ptq("check-layer", layers / "W0.npy", layers / "X0.npy", "--x-tilde", layers / "Xt0.npy", "--lam", 1.0,
                env=env)
        assert len(list(reg.glob("*.lock"))) == 2
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(reg.glob("*.lock")) == []
