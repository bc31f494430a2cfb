"""The campaign machinery: seeds, the result store, resuming after SIGINT/SIGKILL, executors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from verify.campaign import Cell, cell_seed, run_cell
from verify.campaigns import default_campaign, get_campaign, smoke_campaign
from verify.runner import run_campaign, summarize
from verify.store import Store

from conftest import CLI  # noqa: E402


def _verdicts(store, cid):
    return {(c["key"], v["claim"]): (v["status"], v["worst_ratio"], v["in_scope"])
            for c in store.cells(cid, measurements=False) for v in c["verdicts"]}


def assert_same_results(a, b, cid):
    """Same cells, same statuses and scope; numbers equal up to the last bits (executors may run
    BLAS with a different number of threads, which changes the order of floating-point sums)."""
    va, vb = _verdicts(a, cid), _verdicts(b, cid)
    assert va.keys() == vb.keys()
    for k in va:
        (sa, ra, ia), (sb, rb, ib) = va[k], vb[k]
        assert (sa, ia) == (sb, ib), k
        if ra is not None or rb is not None:
            assert ra == pytest.approx(rb, rel=1e-9, abs=1e-12), k
    ma = {c["key"]: c["measurements"] for c in a.cells(cid)}
    for c in b.cells(cid):
        assert c["measurements"].keys() == ma[c["key"]].keys()
        for k, v in c["measurements"].items():
            np.testing.assert_allclose(v, ma[c["key"]][k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_cell_seeds_are_stable_and_distinct():
    camp = default_campaign()
    keys = [c.key for c in camp.cells]
    assert len(set(keys)) == len(keys), "two cells share a key"
    seeds = {cell_seed(0, k) for k in keys}
    assert len(seeds) == len(keys)
    # adding a cell does not change the seeds of the others
    assert cell_seed(0, keys[3]) == cell_seed(0, keys[3])
    assert cell_seed(1, keys[3]) != cell_seed(0, keys[3])


def test_a_cell_is_a_pure_function_of_config_and_seed():
    c = smoke_campaign().cells[3]
    a = run_cell(c.key, c.study, c.config, 123, alpha=1e-4, eta=0.05)
    b = run_cell(c.key, c.study, c.config, 123, alpha=1e-4, eta=0.05)
    assert a["status"] == "done"
    assert [v["worst_ratio"] for v in a["verdicts"]] == [v["worst_ratio"] for v in b["verdicts"]]
    np.testing.assert_array_equal(a["measurements"]["err_linf"], b["measurements"]["err_linf"])


def test_a_failing_cell_is_recorded_not_raised(tmp_path):
    cfg = dict(family="tall", m=8, N=4, n=2, algorithm="optq", grid={"kind": "nope"}, lam_rel=0.1)
    with pytest.raises(ValueError, match="grid kind"):  # a campaign cannot even be made of it
        Cell("bad", cfg)
    rec = run_cell("bad:0", "bad", cfg, 1, alpha=1e-3, eta=0.05)  # and a worker given it records the failure
    assert rec["status"] == "error" and "unknown grid kind" in rec["error"]


def test_store_commits_each_cell_once_and_exports(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    camp = smoke_campaign()
    summ = run_campaign(camp, store, executor_kind="serial", progress=False)
    assert summ["cells"] == len(camp.cells) and not summ["errors"] and not summ["violated"]
    cells = store.cells(camp.id)
    assert {c["key"] for c in cells} == {c.key for c in camp.cells}
    # a second put of a finished cell writes nothing
    rec = dict(cells[0])
    rec["verdicts"] = []
    assert store.put_cell(camp.id, rec) is False
    assert len(store.cells(camp.id)[0]["verdicts"]) > 0
    # re-running does no work and changes nothing
    before = _verdicts(store, camp.id)
    run_campaign(camp, store, executor_kind="serial", progress=False)
    assert _verdicts(store, camp.id) == before
    # measurements round-trip, exports are well formed
    m = next(c for c in store.cells(camp.id) if c["config"].get("rounding") == "stochastic")["measurements"]
    assert m["err_linf"].shape == (2000,)
    csv_path = store.export(camp.id, tmp_path / "v.csv")
    assert csv_path.read_text().splitlines()[0].startswith("key,study,claim")
    js = json.loads(store.export(camp.id, tmp_path / "v.json").read_text())
    assert len(js["cells"]) == len(camp.cells)
    meta = store.campaigns()[0]["meta"]
    assert {"git_commit", "versions", "python"} <= set(meta)


def _done(path, cid=None):
    if not Path(path).exists():
        return 0
    con = sqlite3.connect(path, timeout=30)
    try:
        q = "SELECT COUNT(*) FROM cells WHERE status='done'"
        return con.execute(q).fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _default_sigint():
    """In the child, before exec: SIGINT back to its default, so that Python turns it into
    KeyboardInterrupt (Python leaves an inherited SIG_IGN alone)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig,executor", [(signal.SIGKILL, "serial"), (signal.SIGINT, "serial"),
                                          (signal.SIGINT, "process")])
def test_interrupted_campaign_resumes_without_loss_or_duplicates(tmp_path, sig, executor):
    out = tmp_path / "out"
    store_path = out / "store.sqlite"
    args = CLI + ["verify", "--campaign", "quick", "--out", str(out), "--executor", executor, "--workers", "2",
                  "--no-progress"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # the child gets SIGINT's default disposition whatever the test runner inherited (under nohup or as a
    # background job SIGINT is ignored, and an ignored signal stays ignored across exec)
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
                            preexec_fn=_default_sigint)
    deadline = time.time() + 240
    while _done(store_path) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the campaign finished before it could be interrupted"
    if sig == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C does: the whole process group
    else:
        proc.send_signal(sig)
    proc.communicate(timeout=120)
    if sig == signal.SIGINT:
        assert proc.returncode == 130
    camp = get_campaign("quick")
    interrupted = _done(store_path)
    assert 2 <= interrupted < len(camp.cells)
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    store = Store(store_path)
    cells = store.cells(camp.id, measurements=False)
    keys = [c["key"] for c in cells]
    assert sorted(keys) == sorted(c.key for c in camp.cells)  # nothing lost, nothing duplicated
    assert all(c["status"] == "done" for c in cells)
    con = sqlite3.connect(store_path)
    dup = con.execute("SELECT key, claim, COUNT(*) FROM verdicts GROUP BY campaign, key, claim HAVING COUNT(*) > 1").fetchall()
    con.close()
    assert dup == []


def _same_as_serial(tmp_path, kind):
    """The smoke campaign serially and with executor ``kind`` (2 workers): the same results.
    Returns the campaign and the second store."""
    camp = smoke_campaign()
    a = Store(tmp_path / "a.sqlite")
    b = Store(tmp_path / "b.sqlite")
    run_campaign(camp, a, executor_kind="serial", progress=False)
    run_campaign(camp, b, executor_kind=kind, workers=2, progress=False)
    assert_same_results(a, b, camp.id)
    return camp, b


def test_process_executor_gives_the_serial_results(tmp_path):
    _same_as_serial(tmp_path, "process")


def test_replaced_workers_give_the_serial_results(tmp_path, monkeypatch):
    """Workers replaced after every cell (TASKS_PER_WORKER = 1; what bounds a long campaign's
    worker memory) give the serial results."""
    import sys

    import verify.executor as ex

    if sys.version_info < (3, 11):
        pytest.skip("max_tasks_per_child needs Python 3.11")
    monkeypatch.setattr(ex, "TASKS_PER_WORKER", 1)
    camp, b = _same_as_serial(tmp_path, "process")
    workers = {c["worker"] for c in b.cells(camp.id, measurements=False)}
    assert len(workers) > 2, workers  # more processes than the pool's size: workers were replaced


def test_dask_local_cluster_gives_the_local_results(tmp_path):
    pytest.importorskip("distributed")
    _same_as_serial(tmp_path, "dask")


def test_summary_counts_scope_and_status(tmp_path):
    store = Store(tmp_path / "s.sqlite")
    camp = smoke_campaign()
    run_campaign(camp, store, executor_kind="serial", progress=False)
    s = summarize(store, camp)
    assert s["claims"]["I1"]["status"] == "consistent"
    assert s["claims"]["T2.hp.hoeffding"]["rows_in_scope"] == 2000
    # out-of-scope rows are counted with their reasons, never as passes
    t2 = s["claims"]["T2.tail"]
    assert t2["out_of_scope"] > 0 and sum(t2["reasons"].values()) == t2["out_of_scope"]


def test_export_has_the_configuration_columns(tmp_path):
    import csv

    from verify.store import CONFIG_COLUMNS

    store = Store(tmp_path / "s.sqlite")
    camp = smoke_campaign()
    run_campaign(camp, store, executor_kind="serial", progress=False)
    rows = list(csv.DictReader(open(store.export(camp.id, tmp_path / "v.csv"), newline="")))
    assert set(CONFIG_COLUMNS) | {"seed", "config", "claim", "status"} <= set(rows[0])
    by_key = {c.key: c.config for c in camp.cells}
    for r in rows:  # every row says what ran, in words, and agrees with the stored configuration
        cfg = by_key[r["key"]]
        assert json.loads(r["config"]) == cfg
        assert (r["family"], int(r["n"]), int(r["N"]), int(r["m"])) == (cfg["family"], cfg["n"], cfg["N"], cfg["m"])
        assert r["algorithm"] == cfg["algorithm"] and r["order"] == cfg.get("order", "natural")
        assert r["rounding"] == cfg.get("rounding", "nearest") and r["dtype"] == cfg.get("dtype", "float64")
        assert r["grid"].startswith(cfg["grid"]["kind"])
        if cfg["algorithm"] != "rtn":
            assert r["damping"] in ("lam", "lam_rel", "percdamp") and r[r["damping"]] != ""
        if cfg["algorithm"] == "qronos":
            assert r["variant"] and r["mismatch"].startswith(cfg["mismatch"]["kind"])
    assert any(r["rounding"] == "stochastic" for r in rows) and any(r["algorithm"] == "qronos" for r in rows)
    js = json.loads(store.export(camp.id, tmp_path / "v.json").read_text())
    assert js["meta"]["git_commit"] == store.campaigns()[0]["meta"]["git_commit"]
    for c in js["cells"]:
        assert set(CONFIG_COLUMNS) <= set(c["columns"]) and c["columns"]["family"] == c["config"]["family"]


def test_check_layer_and_audit_json_carry_the_provenance_verify_stores(tmp_path, monkeypatch):
    from verify.campaign import machine_meta
    from verify.cli import main

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save("W.npy", rng.standard_normal((4, 8)))
    np.save("X.npy", rng.standard_normal((32, 8)))
    Path("userq.py").write_text("import algorithms\n\ndef good(W, X, *, grid, lam, rng):\n"
                                "    return algorithms.optq(W, X, grid=grid, lam=lam, rng=rng).Q\n")
    assert main(["check-layer", "W.npy", "X.npy", "--seed", "7", "--json", "c.json", "--no-progress"]) == 0
    assert main(["audit", "userq.py:good", "--families", "tall", "--grids", "gptq", "--no-shrink", "--no-progress",
                 "--seed", "3", "--json", "a.json"]) == 0
    meta = machine_meta()
    for name, seed in (("c.json", 7), ("a.json", 3)):
        prov = json.loads(Path(name).read_text())["provenance"]
        assert set(meta) <= set(prov), name  # everything verify stores with a campaign
        assert prov["seed"] == seed and prov["git_commit"] == meta["git_commit"]
        assert prov["package_version"] == meta["versions"]["provable-ptq"]
        assert prov["versions"]["numpy"] == np.__version__
        assert {"scipy", "torch", "brevitas"} <= set(prov["versions"])
