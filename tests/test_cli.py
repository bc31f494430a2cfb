"""The command line as documented in the README: check-layer, audit, export, paper-checks."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

from conftest import run_cli as ptq  # noqa: E402


@pytest.fixture
def layer(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 16)) * np.exp(rng.uniform(-1, 1, 16))
    W = rng.standard_normal((8, 16))
    np.save(tmp_path / "W.npy", W)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "Xt.npy", X + 0.1 * rng.standard_normal(X.shape))
    np.savez(tmp_path / "both.npz", W=W, X=X)
    return tmp_path


def test_help_lists_every_command():
    r = ptq("--help")
    assert r.returncode == 0
    for cmd in ("verify", "check-layer", "audit", "figures", "paper-checks", "export", "bench"):
        assert cmd in r.stdout


def test_check_layer_reports_every_claim_and_writes_json(layer):
    r = ptq("check-layer", layer / "W.npy", layer / "X.npy", "--x-tilde", layer / "Xt.npy", "--bits", 4,
            "--lam", 2.0, "--order", "decreasing", "--json", layer / "out.json")
    assert r.returncode == 0, r.stderr
    assert "no claim violated" in r.stdout
    rep = json.loads((layer / "out.json").read_text())
    labels = [run["run"] for run in rep["runs"]]
    assert labels == ["optq", "optq on X_tilde", "qronos-projection", "qronos-original"]
    status = {v["claim"]: v["status"] for v in rep["runs"][0]["verdicts"]}
    assert status["I1"] == "consistent" and status["T2.tail"] == "out of scope"
    q = {v["claim"]: v["status"] for v in rep["runs"][2]["verdicts"]}
    assert q["T4.projection.identity"] == "consistent"


def test_check_layer_stochastic_trials_and_npz_keys(layer):
    args = (f"{layer / 'both.npz'}:W", f"{layer / 'both.npz'}:X", "--delta", 0.05, "--rounding", "stochastic",
            "--percdamp", 0.05)
    # 50 repetitions cannot resolve a 25 % excess of the expected squared error: insufficient evidence, exit 3
    r = ptq("check-layer", *args, "--trials", 50, "--json", layer / "few.json")
    assert r.returncode == 3, r.stderr
    v = {d["claim"]: d for d in json.loads((layer / "few.json").read_text())["runs"][0]["verdicts"]}
    assert v["T2.expectation"]["status"] == "insufficient evidence" and v["T2.expectation"]["power"]["detectable"] > 0.25
    r = ptq("check-layer", *args, "--trials", 400, "--json", layer / "s.json")
    assert r.returncode == 0, r.stderr
    v = {d["claim"]: d for d in json.loads((layer / "s.json").read_text())["runs"][0]["verdicts"]}
    assert v["T2.hp.hoeffding"]["trials"] == 3200 and v["T2.hp.hoeffding"]["status"] == "consistent"
    assert v["hyp.unbiased"]["status"] == "consistent" and v["hyp.unbiased"]["power"]["detectable"] < 0.05


@pytest.mark.parametrize("args,fragment", [
    (["missing.npy", "X.npy"], "no such file"),
    (["W.npy", "XT.npy"], "looks transposed"),
    (["W.npy", "nan.npy"], "NaN"),
    (["both.npz", "X.npy"], "say which"),
])
def test_check_layer_bad_input(layer, args, fragment):
    X = np.load(layer / "X.npy")
    np.save(layer / "XT.npy", X.T)
    X[3, 2] = np.nan
    np.save(layer / "nan.npy", X)
    r = ptq("check-layer", *[layer / a for a in args])
    assert r.returncode == 2
    assert fragment in r.stderr, r.stderr


def test_audit_command_flags_a_broken_quantizer_and_passes_a_correct_one(tmp_path):
    mod = tmp_path / "myquant.py"
    mod.write_text(textwrap.dedent("""
        import algorithms

        def good(W, X, *, grid, lam, rng):
            return algorithms.optq(W, X, grid=grid, lam=lam, rng=rng).Q

        def rtn_in_disguise(W, X, *, grid, lam, rng):
            return algorithms.rtn(W, grid).Q
    """))
    env_cwd = tmp_path
    r = ptq("audit", f"{mod}:good", "--families", "tall,dead", "--json", tmp_path / "a.json", cwd=env_cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no claim or hypothesis violated" in r.stdout
    r = ptq("audit", f"{mod}:rtn_in_disguise", "--families", "tall,duplicate", "--out", tmp_path / "ce", cwd=env_cwd)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FLAGGED" in r.stdout and "counterexample" in r.stdout
    assert list((tmp_path / "ce").glob("counterexample-*.npz"))


def test_audit_command_bad_spec():
    r = ptq("audit", "no_colon_here")
    assert r.returncode == 2 and "MODULE:FUNCTION" in r.stderr
    r = ptq("audit", "json:nope")
    assert r.returncode == 2 and "has no function" in r.stderr


def test_export_and_paper_checks(tmp_path):
    r = ptq("verify", "--campaign", "smoke", "--out", tmp_path / "o", "--executor", "serial", "--no-progress")
    assert r.returncode == 0, r.stdout + r.stderr
    r = ptq("export", tmp_path / "v.csv", "--store", tmp_path / "o" / "store.sqlite")
    assert r.returncode == 0 and (tmp_path / "v.csv").exists()
    out = tmp_path / "pc.md"
    r = ptq("paper-checks", "--summary", tmp_path / "o" / "smoke-summary.json", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "Provenance" in out.read_text()
    r = ptq("paper-checks", "--summary", tmp_path / "o" / "smoke-summary.json", "--out", out, "--check")
    assert r.returncode == 0
    out.write_text(out.read_text() + "\nedited by hand\n")
    r = ptq("paper-checks", "--summary", tmp_path / "o" / "smoke-summary.json", "--out", out, "--check")
    assert r.returncode == 1 and "stale" in r.stderr
