"""Reliability on hostile input (issue 14): every bad input ends in one line that names the argument
and the fix (exit code 2 on the command line, a ValueError/TypeError from the API), never a
traceback, an internal error or a silently wrong answer.

Everything runs in-process through ``verify.cli.main`` on tiny inputs (a few seconds in all)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import TRACEBACK
from conftest import cli_code as code


def bad_input(capsys, argv, *needles):
    """``ptq-bounds argv`` exits 2 with a message (no traceback, no internal error) holding ``needles``."""
    rc = code(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert TRACEBACK not in err and "internal error" not in err, err
    last = err.strip().splitlines()[-1]
    for n in needles:
        assert n in last, last
    return last


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    f = {}
    f["W"] = tmp_path / "W.npy"
    np.save(f["W"], rng.standard_normal((4, 8)))
    f["X"] = tmp_path / "X.npy"
    np.save(f["X"], rng.standard_normal((32, 8)))
    f["garbage.npy"] = tmp_path / "garbage.npy"
    f["garbage.npy"].write_bytes(b"this is not an array file" * 8)
    f["truncated.npy"] = tmp_path / "truncated.npy"
    f["truncated.npy"].write_bytes(f["W"].read_bytes()[:150])
    f["garbage.safetensors"] = tmp_path / "garbage.safetensors"
    f["garbage.safetensors"].write_bytes(b"\x00\x01garbage" * 20)
    try:
        from safetensors.numpy import save_file

        good = tmp_path / "good.safetensors"
        save_file({"w": rng.standard_normal((4, 8))}, str(good))
        f["truncated.safetensors"] = tmp_path / "truncated.safetensors"
        f["truncated.safetensors"].write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    except ImportError:  # pragma: no cover
        pass
    f["garbage.sqlite"] = tmp_path / "garbage.sqlite"
    f["garbage.sqlite"].write_bytes(b"garbage" * 1000)
    f["dir"] = tmp_path / "adir"
    f["dir"].mkdir()
    f["file_as_dir"] = f["W"] / "out.json"  # a path whose parent is a regular file: never writable
    return f


@pytest.fixture
def store(tmp_path):
    """A result store holding one tiny campaign (two smoke cells)."""
    from verify.campaign import Campaign
    from verify.campaigns import smoke_campaign
    from verify.runner import run_campaign
    from verify.store import Store

    cells = tuple(c for c in smoke_campaign(0).cells if c.config.get("rounding") != "stochastic")[:2]
    camp = Campaign(name="tiny", seed=0, cells=cells, description="reliability tests")
    s = Store(tmp_path / "store.sqlite")
    run_campaign(camp, s, executor_kind="serial", progress=False)
    return s.path


# ------------------------------------------------------------------------------------------------
# check-layer
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which,arg", [("garbage.npy", "W"), ("truncated.npy", "W"), ("garbage.safetensors", "W"),
                                       ("truncated.safetensors", "W"), ("garbage.npy", "X"), ("dir", "W")])
def test_check_layer_damaged_files_name_the_argument(capsys, files, which, arg):
    if which not in files:
        pytest.skip("safetensors is not installed")
    argv = ["check-layer", files["W"], files["X"], "--no-progress"]
    argv[1 if arg == "W" else 2] = files[which]
    bad_input(capsys, argv, f"{arg}: ", str(files[which].name))


@pytest.mark.parametrize("opt,value", [("--eta", "2"), ("--eta", "0"), ("--eta", "1"), ("--alpha", "2"),
                                       ("--alpha", "-1"), ("--alpha", "0"), ("--alpha", "nan"), ("--seed", "-1"),
                                       ("--trials", "0")])
def test_check_layer_out_of_range_options(capsys, files, opt, value):
    bad_input(capsys, ["check-layer", files["W"], files["X"], opt, value], opt)


@pytest.mark.parametrize("target", ["dir", "file_as_dir"])
def test_check_layer_unwritable_json_before_any_work(capsys, files, monkeypatch, target):
    import algorithms

    def never(*_a, **_k):  # pragma: no cover - the writability check comes first
        raise AssertionError("the layer was quantized before --json was checked")

    monkeypatch.setattr(algorithms, "optq", never)
    bad_input(capsys, ["check-layer", files["W"], files["X"], "--json", files[target]], "--json")


def test_check_layer_no_progress_and_json(capsys, files, tmp_path):
    out = tmp_path / "sub" / "report.json"
    assert code(["check-layer", files["W"], files["X"], "--no-progress", "--json", out]) in (0, 3)
    assert json.loads(out.read_text())["runs"]
    assert "check-layer:" not in capsys.readouterr().err  # no progress bar


# ------------------------------------------------------------------------------------------------
# verify
# ------------------------------------------------------------------------------------------------
def _no_campaign(monkeypatch):
    import verify.verification as vc

    def never(*_a, **_k):  # pragma: no cover - bad arguments are rejected before any work
        raise AssertionError("the campaign ran before its arguments were checked")

    monkeypatch.setattr(vc, "run_campaign", never)


@pytest.mark.parametrize("extra,needle", [
    (["--seed", "-1"], "--seed"),
    (["--limit", "-1"], "--limit"),
    (["--workers", "0"], "--workers"),
    (["--campaign", "nope"], "real-llm"),
    (["--scheduler", "tcp://127.0.0.1:1"], "--executor dask"),
])
def test_verify_bad_arguments_create_nothing(capsys, tmp_path, monkeypatch, extra, needle):
    _no_campaign(monkeypatch)
    out = tmp_path / "out"
    bad_input(capsys, ["verify", "--campaign", "smoke", "--out", out, "--no-progress", *extra], needle)
    assert not out.exists()  # no empty store left behind


@pytest.mark.parametrize("opt,target", [("--json", "dir"), ("--json", "file_as_dir"), ("--store", "dir"),
                                        ("--store", "file_as_dir"), ("--out", "file_as_dir")])
def test_verify_unwritable_outputs_fail_before_the_campaign(capsys, tmp_path, files, monkeypatch, opt, target):
    _no_campaign(monkeypatch)
    argv = ["verify", "--campaign", "smoke", "--no-progress", opt, files[target]]
    if opt != "--out":
        argv += ["--out", tmp_path / "out"]
    bad_input(capsys, argv, opt)


def test_verify_garbage_store(capsys, tmp_path, files, monkeypatch):
    _no_campaign(monkeypatch)
    bad_input(capsys, ["verify", "--campaign", "smoke", "--no-progress", "--out", tmp_path / "out",
                       "--store", files["garbage.sqlite"]], "--store", "not a result store")


def test_verify_unreachable_dask_scheduler_fails_fast(capsys, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    import time

    import verify.executor as ex

    _no_campaign(monkeypatch)
    monkeypatch.setattr(ex, "SCHEDULER_TIMEOUT", 1.0)
    t0 = time.monotonic()
    bad_input(capsys, ["verify", "--campaign", "smoke", "--no-progress", "--out", tmp_path / "out",
                       "--executor", "dask", "--scheduler", "tcp://127.0.0.1:1"], "--scheduler", "tcp://127.0.0.1:1")
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("extra,needle", [
    (["--formats", "xyz"], "--formats"),
    (["--dpi", "0"], "--dpi"),
    (["--only", "abc"], "--only"),
    (["--only", "99"], "--only"),  # no such figure
])
def test_figures_bad_options(capsys, store, tmp_path, extra, needle):
    last = bad_input(capsys, ["figures", "--store", store, "--out", tmp_path / "f", *extra], needle)
    assert "invalid literal" not in last


def test_figures_garbage_store_and_unwritable_out(capsys, store, files):
    bad_input(capsys, ["figures", "--store", files["garbage.sqlite"], "--out", files["dir"]], "--store")
    bad_input(capsys, ["figures", "--store", store, "--out", files["W"] / "figs", "--only", "1"], "--out")


def test_figures_accepts_no_progress(capsys, store, tmp_path):
    assert code(["figures", "--store", store, "--campaign", "tiny", "--only", "6", "--formats", "png",
                 "--no-progress", "--out", tmp_path / "f"]) in (0, 2)
    assert "unrecognized arguments" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# paper-checks
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,needle", [
    ('{"claims": {', "is not JSON"),
    ("garbage", "is not JSON"),
    ("[1, 2]", "not a campaign summary"),
    ('{"a": 1}', "not a campaign summary"),
    ('{"claims": [1]}', "not a campaign summary"),
    ('{"claims": {"T1.sum_c": 5}}', "not a campaign summary"),
    ('{"claims": {"T1.sum_c": {"cells_in_scope": "abc"}}}', "cells_in_scope"),
    ('{"claims": {"T1.sum_c": {"cells_in_scope": [1]}}}', "cells_in_scope"),
    ('{"claims": {"T1.sum_c": {"worst_ratio": "big"}}}', "worst_ratio"),
    ('{"claims": {}}', "no per-claim evidence"),
])
def test_paper_checks_bad_summaries(capsys, tmp_path, content, needle):
    s = tmp_path / "s.json"
    s.write_text(content)
    out = tmp_path / "pc.md"
    bad_input(capsys, ["paper-checks", "--summary", s, "--out", out], "--summary", needle)
    assert not out.exists()


def test_paper_checks_directory_and_unwritable_out(capsys, tmp_path, files):
    bad_input(capsys, ["paper-checks", "--summary", files["dir"], "--out", tmp_path / "pc.md"], "--summary")
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"claims": {"T1.sum_c": {"status": "consistent", "cells_in_scope": 1,
                                                     "rows_in_scope": 2, "violations": 0, "worst_ratio": 0.5}}}))
    bad_input(capsys, ["paper-checks", "--summary", s, "--out", files["dir"]], "--out")
    bad_input(capsys, ["paper-checks", "--summary", s, "--out", files["file_as_dir"]], "--out")


# ------------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------------
def test_export_bad_outputs_and_stores(capsys, store, files, tmp_path):
    last = bad_input(capsys, ["export", files["dir"], "--store", store], "output", "directory")
    assert "format ''" not in last
    d = tmp_path / "d.csv"
    d.mkdir()
    bad_input(capsys, ["export", d, "--store", store], "output", "directory")
    bad_input(capsys, ["export", files["W"] / "x.csv", "--store", store], "output")
    bad_input(capsys, ["export", tmp_path / "x.csv", "--store", files["garbage.sqlite"]], "--store")


def test_export_accepts_no_progress(capsys, store, tmp_path):
    assert code(["export", tmp_path / "x.csv", "--store", store, "--no-progress"]) == 0
    assert (tmp_path / "x.csv").read_text()


# ------------------------------------------------------------------------------------------------
# --version
# ------------------------------------------------------------------------------------------------
def test_version(capsys):
    from verify.cli import package_version

    assert code(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ptq-bounds ") and package_version() in out


# ------------------------------------------------------------------------------------------------
# the API
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def layer():
    rng = np.random.default_rng(0)
    return rng.standard_normal((4, 16)), rng.standard_normal((64, 16))


def test_qronos_without_x_tilde(layer):
    import algorithms as A

    W, X = layer
    with pytest.raises(TypeError, match="X_tilde is required"):
        A.qronos(W, X, None, grid=A.Grid.symmetric(0.05), percdamp=0.01)


@pytest.mark.parametrize("case", ["percdamp", "X64", "X32", "qronos"])
def test_overflow_is_explained(layer, case):
    import algorithms as A

    W, X = layer
    g = A.Grid.symmetric(0.05)
    with pytest.raises(ValueError, match="overflows") as ei:
        if case == "percdamp":
            A.optq(W, X, grid=g, percdamp=1e308)
        elif case == "X64":
            A.optq(W, X * 1e200, grid=g, percdamp=0.01)
        elif case == "X32":
            A.optq(W.astype(np.float32), (X * 1e30).astype(np.float32), grid=g, percdamp=0.01)
        else:
            A.qronos(W, X * 1e200, X * 1e200, grid=g, percdamp=0.01)
    assert "rescale" in str(ei.value) or "damping" in str(ei.value)


def test_underflow_to_dead_features_is_an_error(layer):
    import algorithms as A

    W, X = layer
    with pytest.raises(ValueError, match="underflows"):
        A.optq(W, X * 1e-300, grid=A.Grid.symmetric(0.05), lam=0.0)
    X2 = X.copy()
    X2[:, 0] *= 1e-300  # one feature underflows: a warning, the others are quantized
    with pytest.warns(RuntimeWarning, match="underflows"):
        A.optq(W, X2, grid=A.Grid.symmetric(0.05), percdamp=0.01)
    X3 = X.copy()
    X3[:, 0] = 0.0  # a truly dead feature is GPTQ's business, no warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A.optq(W, X3, grid=A.Grid.symmetric(0.05), percdamp=0.01)


def test_rtn_rejects_a_grid_that_cannot_hold_w(layer):
    import algorithms as A

    W, X = layer
    with pytest.raises(ValueError, match="cannot represent the weights"):
        A.rtn(W * 100, A.Grid.symmetric(0.05, 3))
    with pytest.raises(ValueError, match="cannot represent the weights"):
        A.optq(W * 100, X, grid=A.Grid.symmetric(0.05, 3), percdamp=0.01)
    A.rtn(W, A.Grid.symmetric(0.05, 1000))  # a grid that holds W still works


def test_recommend_lambda_bad_arguments(layer):
    import theory

    W, X = layer
    with pytest.raises(TypeError, match="K must be a real number"):
        theory.recommend_lambda(X, W, delta=0.05, K="7")
    with pytest.raises(ValueError, match="lams"):
        theory.recommend_lambda(X, W, delta=0.05, K=1000, lams=[1.0, float("nan")])
    Xn = X.copy()
    Xn[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        theory.recommend_lambda(Xn, W, delta=0.05, K=1000)
    with pytest.raises(ValueError, match="one step per row"):
        theory.recommend_lambda(X, W, delta=np.full(3, 0.05), K=1000)
    with pytest.raises(ValueError, match="constant must be one of"):
        theory.recommend_lambda(X, W, delta=0.05, K=1000, constant="bogus")
    # per-row delta of the right length, and numpy scalars, still work
    theory.recommend_lambda(X, W, delta=np.full((4, 1), 0.05), K=np.int64(1000))


def test_verify_sigint_exits_130_in_process(monkeypatch, capsys, tmp_path):
    """``verify.cli.main`` maps KeyboardInterrupt (what SIGINT raises) to exit 130 with one line."""
    import verify.verification as vc

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(vc, "run_campaign", interrupted)
    assert code(["verify", "--campaign", "smoke", "--no-progress", "--out", tmp_path / "out"]) == 130
    assert "interrupted" in capsys.readouterr().err


def test_writability_check_creates_nothing(tmp_path):
    """The writability check never creates or deletes anything."""
    from verify.cli import BadInput, check_writable_file

    before = sorted(os.listdir(tmp_path))
    check_writable_file(tmp_path / "new" / "s.json", "--json")
    with pytest.raises(BadInput, match="is a directory"):
        check_writable_file(tmp_path, "--json")
    assert sorted(os.listdir(tmp_path)) == before


def test_check_rejects_what_is_not_a_run_and_bad_alpha():
    import numpy as np

    import algorithms as A
    import theory as T

    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((20, 5)), rng.standard_normal((2, 5))
    run = T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=1.0), X)
    with pytest.raises(TypeError, match="run must be a theory.Run"):
        T.check("I1", {"Q": W})
    with pytest.raises(TypeError, match="run must be a theory.Run"):
        T.check_all({"Q": W})
    for a in (2, -1, 0.0, 1.0):
        with pytest.raises(ValueError, match="alpha must lie in"):
            T.check_all(run, alpha=a)
