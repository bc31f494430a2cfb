"""One exit-code policy for every command (theory/verdicts.py, README "Exit codes"):
0 every checked claim holds; 1 a claim or hypothesis is violated; 2 bad input; 3 not exercised or
insufficient evidence; 4 internal error (one line, the traceback only with --debug).

Everything runs in-process through ``verify.cli.main`` on tiny inputs."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import TRACEBACK
from conftest import cli_code as code


def boom(*_a, **_k):
    raise RuntimeError("boom\nsecond line")


def assert_internal_error(capsys, argv, monkeypatch_target, monkeypatch):
    monkeypatch.setattr(*monkeypatch_target, boom)
    assert code(argv) == 4
    err = capsys.readouterr().err
    assert "ptq-bounds: internal error: RuntimeError: boom second line (run with --debug for the traceback)" in err
    assert TRACEBACK not in err
    # --debug after the subcommand, then before it
    assert code([argv[0], "--debug", *argv[1:]]) == 4
    err = capsys.readouterr().err
    assert TRACEBACK in err and "ptq-bounds: internal error: RuntimeError" in err and "--debug for" not in err
    assert code(["--debug", *argv]) == 4
    assert TRACEBACK in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# fixtures: a tiny deterministic campaign (the smoke campaign without its stochastic cell) and a layer
# ------------------------------------------------------------------------------------------------
def tiny_campaign(seed=0):
    from verify.campaign import Campaign
    from verify.campaigns import smoke_campaign

    cells = tuple(c for c in smoke_campaign(seed).cells if c.config.get("rounding") != "stochastic")[:4]
    return Campaign(name="tiny", seed=seed, cells=cells, description="exit-code tests")


@pytest.fixture
def tiny(monkeypatch):
    import verify.commands.verify_cmd as vc

    monkeypatch.setattr(vc, "get_campaign", lambda name, seed=0: tiny_campaign(seed))
    return vc


def patch_cells(monkeypatch, edit):
    """Wrap the cell runner: ``edit(record)`` changes each finished cell record."""
    import verify.runner as R

    real = R.run_cell

    def run_cell(*a, **k):
        rec = real(*a, **k)
        edit(rec)
        return rec

    monkeypatch.setattr(R, "run_cell", run_cell)


def put_verdict(rec, verdict):
    """Replace (or add) the verdict of ``verdict["claim"]`` in a cell record."""
    rec["verdicts"] = [v for v in rec["verdicts"] if v["claim"] != verdict["claim"]] + [verdict]


def verify_argv(tmp_path, *extra):
    return ["verify", "--campaign", "smoke", "--out", tmp_path / "o", "--executor", "serial", "--no-progress",
            "--recheck", 0, "--recheck-precision", 0, *extra]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    from verify.runner import run_campaign
    from verify.store import Store

    path = tmp_path_factory.mktemp("store") / "store.sqlite"
    run_campaign(tiny_campaign(), Store(path), executor_kind="serial", progress=False)
    return path


@pytest.fixture
def layer(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 12)) * np.exp(rng.uniform(-1, 1, 12))
    np.save(tmp_path / "W.npy", rng.standard_normal((6, 12)))
    np.save(tmp_path / "X.npy", X)
    return tmp_path


# ------------------------------------------------------------------------------------------------
# the CLI wrapper
# ------------------------------------------------------------------------------------------------
def test_argparse_errors_exit_2(capsys):
    assert code(["no-such-command"]) == 2
    assert code(["verify", "--workers", "many"]) == 2
    assert code([]) == 2


def test_debug_flag_is_accepted_before_and_after_the_subcommand():
    from verify.cli import build_parser

    p = build_parser()
    assert p.parse_args(["--debug", "export", "x.csv"]).debug is True
    assert p.parse_args(["export", "x.csv", "--debug"]).debug is True
    assert p.parse_args(["export", "x.csv"]).debug is False
    # a command that declares its own --debug (the audit) keeps one given before it
    assert p.parse_args(["--debug", "audit", "m:f"]).debug is True
    assert p.parse_args(["audit", "m:f", "--debug"]).debug is True
    assert p.parse_args(["audit", "m:f"]).debug is False


def test_keyboard_interrupt_exits_130(monkeypatch, capsys):
    import verify.commands.export as ex

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "run", interrupted)
    assert code(["export", "x.csv"]) == 130


# ------------------------------------------------------------------------------------------------
# verify
# ------------------------------------------------------------------------------------------------
def test_verify_0_when_every_checked_claim_holds(tiny, tmp_path, capsys):
    assert code(verify_argv(tmp_path)) == 0
    s = json.loads((tmp_path / "o" / "tiny-summary.json").read_text())
    assert s["violated"] == [] and s["claims"]["I1"]["status"] == "consistent"
    assert {st["status"] for st in s["claims"].values()} <= {"consistent", "not exercised", "insufficient evidence"}


def test_verify_1_on_a_violated_claim(tiny, tmp_path, monkeypatch, capsys):
    def violate(rec):
        for v in rec["verdicts"]:
            if v["claim"] == "I1" and v["in_scope"]:
                v.update(status="violated", violated=True)

    patch_cells(monkeypatch, violate)
    assert code(verify_argv(tmp_path)) == 1
    assert "I1" in capsys.readouterr().err
    s = json.loads((tmp_path / "o" / "tiny-summary.json").read_text())
    assert s["violated"] == ["I1"] and s["claims"]["I1"]["violated_cells"]


def test_verify_1_on_a_violated_hypothesis(tiny, tmp_path, monkeypatch, capsys):
    def violate(rec):
        put_verdict(rec, {"claim": "hyp.on_grid", "kind": "hypothesis", "status": "violated", "in_scope": 2,
                          "out_of_scope": 0, "reasons": {}, "violated": True})

    patch_cells(monkeypatch, violate)
    assert code(verify_argv(tmp_path)) == 1
    out = capsys.readouterr().out
    assert "hypothesis" in out and "VIOLATED: hyp.on_grid" in out
    s = json.loads((tmp_path / "o" / "tiny-summary.json").read_text())
    assert "hyp.on_grid" in s["violated"] and list(s["claims"])[-1].startswith("hyp.")


def test_verify_2_on_bad_arguments_before_creating_anything(tmp_path, capsys):
    assert code(verify_argv(tmp_path) + ["--campaign", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--campaign" in err
    for name in ("default", "quick", "smoke", "real-llm"):
        assert name in err
    assert not (tmp_path / "o").exists()
    assert code(verify_argv(tmp_path, "--workers", 0)) == 2
    assert "--workers" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_verify_3_when_nothing_was_checked(tiny, tmp_path, capsys):
    assert code(verify_argv(tmp_path, "--limit", 0)) == 3
    assert "nothing checked" in capsys.readouterr().err


def test_verify_3_on_insufficient_evidence(tiny, tmp_path, monkeypatch, capsys):
    def weak(rec):
        put_verdict(rec, {"claim": "T2.expectation", "kind": "expectation bound", "status": "insufficient evidence",
                          "in_scope": 5, "out_of_scope": 0, "reasons": {}, "violated": False,
                          "detail": {"power": {"detectable": 0.4, "power": 0.9}}})

    patch_cells(monkeypatch, weak)
    assert code(verify_argv(tmp_path)) == 3
    assert "insufficient evidence" in capsys.readouterr().err
    s = json.loads((tmp_path / "o" / "tiny-summary.json").read_text())
    assert s["insufficient"] == ["T2.expectation"] and s["claims"]["T2.expectation"]["detectable"] == 0.4


def test_verify_3_when_a_full_coverage_campaign_leaves_a_claim_unexercised(tiny, tmp_path, monkeypatch, capsys):
    import verify.verification as vv

    monkeypatch.setattr(vv, "FULL_COVERAGE", ("tiny",))
    assert code(verify_argv(tmp_path)) == 3
    assert "claims never in scope" in capsys.readouterr().err


def test_verify_4_when_a_cell_failed(tiny, tmp_path, monkeypatch, capsys):
    seen = []

    def fail(rec):  # the first cell fails to run, the others are fine
        seen.append(rec["key"])
        if len(seen) == 1:
            rec.update(status="error", error="RuntimeError: cell broke", verdicts=[], measurements={})

    patch_cells(monkeypatch, fail)
    assert code(verify_argv(tmp_path)) == 4
    assert "failed to run" in capsys.readouterr().err


def test_verify_4_on_a_crash(tiny, tmp_path, monkeypatch, capsys):
    import verify.verification as vv

    assert_internal_error(capsys, verify_argv(tmp_path), (vv, "run_campaign"), monkeypatch)


# ------------------------------------------------------------------------------------------------
# check-layer
# ------------------------------------------------------------------------------------------------
def _patch_check_all(monkeypatch, edit):
    import theory

    real = theory.check_all

    def check_all(*a, **k):
        return {cid: edit(v) for cid, v in real(*a, **k).items()}

    monkeypatch.setattr(theory, "check_all", check_all)


def test_check_layer_0_1_2(layer, monkeypatch, capsys):
    argv = ["check-layer", layer / "W.npy", layer / "X.npy", "--lam", 1.0, "--json", layer / "r.json"]
    assert code(argv) == 0
    assert json.loads((layer / "r.json").read_text())["exit_code"] == 0
    assert code(["check-layer", layer / "missing.npy", layer / "X.npy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err
    _patch_check_all(monkeypatch, lambda v: dataclasses.replace(v, status="violated") if v.claim == "I1" else v)
    assert code(argv) == 1


def test_check_layer_3_when_nothing_is_in_scope(layer, monkeypatch, capsys):
    _patch_check_all(monkeypatch, lambda v: dataclasses.replace(v, status="out of scope", in_scope=0))
    assert code(["check-layer", layer / "W.npy", layer / "X.npy"]) == 3
    assert "no claim in scope" in capsys.readouterr().err


def test_check_layer_3_on_insufficient_evidence(layer, monkeypatch, capsys):
    _patch_check_all(monkeypatch, lambda v: dataclasses.replace(v, status="insufficient evidence")
                     if v.claim == "I1" else v)
    assert code(["check-layer", layer / "W.npy", layer / "X.npy"]) == 3
    assert "insufficient evidence" in capsys.readouterr().err


def test_check_layer_4_on_a_crash(layer, monkeypatch, capsys):
    import algorithms

    assert_internal_error(capsys, ["check-layer", layer / "W.npy", layer / "X.npy"], (algorithms, "optq"), monkeypatch)


# ------------------------------------------------------------------------------------------------
# paper-checks
# ------------------------------------------------------------------------------------------------
SUMMARY = {"campaign": "unit", "claims": {
    "I1": {"kind": "identity", "cells_in_scope": 2, "rows_in_scope": 10, "violations": 0, "out_of_scope": 1,
           "worst_ratio": 1.0, "status": "verified"},
    "T2.expectation": {"kind": "expectation bound", "cells_in_scope": 1, "rows_in_scope": 50, "violations": 0,
                       "insufficient": 1, "detectable": 0.25, "status": "insufficient evidence"},
    "hyp.on_grid": {"kind": "hypothesis", "cells_in_scope": 2, "rows_in_scope": 10, "violations": 0,
                    "status": "consistent"},
}}


def test_paper_checks_0_and_stale_1(tmp_path, capsys):
    summ = tmp_path / "s.json"
    summ.write_text(json.dumps(SUMMARY))
    out = tmp_path / "pc.md"
    assert code(["paper-checks", "--summary", summ, "--out", out]) == 0
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| hyp.on_grid |"))
    assert "## Hypotheses checked on every run" in text and "| consistent | 2 | 10 |" in row
    assert "| insufficient evidence |" in text and "| consistent |" in text and "verified" not in text
    assert "| not exercised |" in text  # claims absent from the evidence
    assert code(["paper-checks", "--summary", summ, "--out", out, "--check"]) == 0
    out.write_text(text + "edited\n")
    assert code(["paper-checks", "--summary", summ, "--out", out, "--check"]) == 1
    assert "stale" in capsys.readouterr().err


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not JSON"),
    ("[1, 2]", "not a campaign summary"),
    (json.dumps({"claims": {"T9.nope": {"cells_in_scope": 1}}}), "unknown claim ids"),
    (None, "no such file"),
])
def test_paper_checks_2_on_bad_summaries(tmp_path, capsys, content, fragment):
    summ = tmp_path / "s.json"
    if content is not None:
        summ.write_text(content)
    out = tmp_path / "pc.md"
    assert code(["paper-checks", "--summary", summ, "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--summary" in err and fragment in err
    assert not out.exists()


def test_paper_checks_3_when_no_summary_is_found(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert code(["paper-checks", "--out", "pc.md"]) == 3
    assert "no campaign summary found" in capsys.readouterr().err
    assert not (tmp_path / "pc.md").exists()


def test_paper_checks_4_on_a_crash(tmp_path, monkeypatch, capsys):
    import verify.commands.paper_checks as pc

    summ = tmp_path / "s.json"
    summ.write_text(json.dumps(SUMMARY))
    assert_internal_error(capsys, ["paper-checks", "--summary", summ, "--out", tmp_path / "pc.md"],
                          (pc, "render"), monkeypatch)


# ------------------------------------------------------------------------------------------------
# export, figures, bench
# ------------------------------------------------------------------------------------------------
def test_export_0_2_4(store_path, tmp_path, monkeypatch, capsys):
    assert code(["export", tmp_path / "v.csv", "--store", store_path]) == 0 and (tmp_path / "v.csv").is_file()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("not a database " * 100)
    for argv, fragment in ((["export", tmp_path / "v.csv", "--store", tmp_path / "absent.sqlite"], "--store"),
                           (["export", tmp_path / "v.txt", "--store", store_path], ".csv or .json"),
                           (["export", tmp_path / "v.csv", "--store", store_path, "--campaign", "nope"], "--campaign"),
                           (["export", tmp_path / "v.csv", "--store", garbage], "not a result store")):
        assert code(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err
    from verify.store import Store

    assert_internal_error(capsys, ["export", tmp_path / "w.csv", "--store", store_path], (Store, "export"),
                          monkeypatch)


def test_figures_0_2_4(store_path, tmp_path, monkeypatch, capsys):
    import figures.command as fc

    assert code(["figures", "--list"]) == 0
    for argv in (["--store", tmp_path / "absent.sqlite"], ["--store", store_path, "--only", "99"],
                 ["--store", store_path, "--formats", "docx"], ["--store", store_path, "--dpi", 0]):
        assert code(["figures", "--out", tmp_path / "f", *argv]) == 2, argv
        assert capsys.readouterr().err.count("\n") == 1
    assert_internal_error(capsys, ["figures", "--store", store_path, "--out", tmp_path / "f", "--only", "1"],
                          (fc, "render"), monkeypatch)


TINY_BENCH = ["bench", "--shapes", "8x8", "--cases", "deterministic", "--repeats", 1, "--mc-trials", 0,
              "--no-memory", "--no-floor", "--no-save", "--no-progress"]


def test_bench_0_2_4(monkeypatch, capsys):
    import verify.bench as bench

    assert code(TINY_BENCH) == 0
    assert code([*TINY_BENCH, "--shapes", "8by8"]) == 2
    assert "--shapes" in capsys.readouterr().err
    assert code([*TINY_BENCH, "--cases", "fast"]) == 2
    assert "--cases" in capsys.readouterr().err
    assert_internal_error(capsys, TINY_BENCH, (bench, "_make_device"), monkeypatch)
