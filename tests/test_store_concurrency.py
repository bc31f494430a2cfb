"""Runs sharing one store: cells are claimed, so concurrent runs split the work, every cell is computed
and stored once, a run waits for cells other live runs hold, and the claims of a dead run are taken over.
A killed run leaves no worker processes behind."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import verify.runner as R
from verify.campaign import cell_seed, run_cell
from verify.campaigns import get_campaign, smoke_campaign
from verify.runner import run_campaign
from verify.store import LIVE_OWNERS, Store

#: runs ``ptq-bounds`` with the cell function wrapped so that every computation of a cell is logged
#: (``KEY PID`` per line), after waiting for a start signal, so that both runs start together
COUNTING = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path

    log, go = sys.argv[1], Path(sys.argv[2])
    import verify.runner as R

    inner = R.run_cell

    def counted(key, *args, **kwargs):
        with open(log, "a") as fh:
            fh.write(f"{key} {os.getpid()}\\n")
        return inner(key, *args, **kwargs)

    R.run_cell = counted
    from verify.cli import main

    deadline = time.time() + 120
    while not go.exists() and time.time() < deadline:
        time.sleep(0.01)
    sys.exit(main(sys.argv[3:]))
""")


def test_two_runs_on_one_store_share_the_cells(tmp_path):
    script = tmp_path / "counting.py"
    script.write_text(COUNTING)
    store = tmp_path / "shared" / "store.sqlite"
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs = []
    for i in (1, 2):
        argv = [sys.executable, str(script), str(tmp_path / f"log{i}"), str(go), "verify", "--campaign", "quick",
                "--executor", "serial", "--store", str(store), "--out", str(tmp_path / f"out{i}"), "--no-progress"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    time.sleep(0.5)
    go.touch()
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, out + err
    camp = get_campaign("quick")
    logs = [[line.split() for line in log.read_text().splitlines()] if log.exists() else []
            for log in (tmp_path / "log1", tmp_path / "log2")]
    computed = [k for log in logs for k, _ in log]
    # every cell computed exactly once, by one of the two runs
    assert sorted(computed) == sorted(c.key for c in camp.cells)
    pids = {k: {pid for log in logs for kk, pid in log if kk == k} for k in computed}
    assert all(len(v) == 1 for v in pids.values())
    assert all(logs), "one run computed nothing: the two did not share the campaign"
    # the store holds one record per cell, the one the computing run stored, and no claims left over
    s = Store(store)
    cells = s.cells(camp.id, measurements=False)
    assert sorted(c["key"] for c in cells) == sorted(c.key for c in camp.cells)
    assert all(c["status"] == "done" for c in cells)
    assert {c["key"]: c["worker"].rsplit(":", 1)[1] for c in cells} == {k: next(iter(v)) for k, v in pids.items()}
    assert s.claims(camp.id) == []
    con = sqlite3.connect(store)
    dup = "SELECT COUNT(*) FROM verdicts GROUP BY campaign, key, claim HAVING COUNT(*) > 1"
    assert con.execute(dup).fetchall() == []
    con.close()
    # both runs summarise the whole campaign, as one run alone does
    alone = run_campaign(camp, Store(tmp_path / "alone.sqlite"), executor_kind="serial", progress=False)
    for i in (1, 2):
        summ = json.loads((tmp_path / f"out{i}" / "quick-summary.json").read_text())
        assert summ["cells"] == len(camp.cells)
        assert summ["claims"] == json.loads(json.dumps(alone["claims"]))
        assert summ["violated"] == alone["violated"] and summ["not_exercised"] == alone["not_exercised"]


def _counting(monkeypatch):
    calls = []

    def counted(key, *args, **kwargs):
        calls.append(key)
        return run_cell(key, *args, **kwargs)

    monkeypatch.setattr(R, "run_cell", counted)
    return calls


def test_a_run_waits_for_cells_another_live_run_holds(tmp_path, monkeypatch):
    monkeypatch.setattr(R, "WAIT_POLL_S", 0.05)
    camp = smoke_campaign()
    store = Store(tmp_path / "s.sqlite")
    store.open_campaign(camp.id, camp.name, camp.to_dict(), {})
    other = "another-run"
    LIVE_OWNERS.add(other)  # a live run of this process
    try:
        taken, held = store.claim(camp.id, [c.key for c in camp.cells], other, len(camp.cells))
        assert sorted(taken) == sorted(c.key for c in camp.cells) and held == 0
        calls = _counting(monkeypatch)
        result = {}
        waiting = threading.Thread(target=lambda: result.update(
            s=run_campaign(camp, store, executor_kind="serial", progress=False)))
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive(), "the run did not wait for the cells another run holds"
        for c in camp.cells:  # the other run computes and stores its cells
            store.put_cell(camp.id, run_cell(c.key, c.study, c.config, cell_seed(camp.seed, c.seed_key),
                                             alpha=camp.alpha_per_test, eta=camp.eta))
        waiting.join(timeout=120)
        assert not waiting.is_alive()
    finally:
        LIVE_OWNERS.discard(other)
    assert calls == []  # it computed nothing
    assert result["s"]["cells"] == len(camp.cells) and not result["s"]["errors"]
    assert store.claims(camp.id) == []


def test_claims_of_a_dead_or_silent_run_are_taken_over(tmp_path, monkeypatch):
    camp = smoke_campaign()
    keys = [c.key for c in camp.cells]
    store = Store(tmp_path / "s.sqlite")
    store.open_campaign(camp.id, camp.name, camp.to_dict(), {})
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    con = sqlite3.connect(store.path)
    now = time.time()
    host = socket.gethostname()
    rows = [(camp.id, keys[0], "dead-run", host, dead.pid, now, now),  # its process is gone
            (camp.id, keys[1], "silent-run", "elsewhere", 1, now - 3600, now - 3600),  # no heartbeat for an hour
            (camp.id, keys[2], "left-over", host, os.getpid(), now, now)]  # this process, no run in progress
    con.executemany("INSERT INTO claims VALUES (?,?,?,?,?,?,?)", rows)
    con.commit()
    con.close()
    # a live claim elsewhere is respected
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        taken, held = Store(store.path).claim(camp.id, keys, "probe", 0)
        assert held == 0  # nothing live holds a cell
        con = sqlite3.connect(store.path)
        con.execute("INSERT INTO claims VALUES (?,?,?,?,?,?,?)",
                    (camp.id, keys[3], "live", host, sleeper.pid, now, now))
        con.commit()
        con.close()
        taken, held = store.claim(camp.id, keys, "probe", len(keys))
        assert held == 1 and keys[3] not in taken and set(keys[:3]) <= set(taken)
        store.release(camp.id, "probe")
    finally:
        sleeper.kill()
        sleeper.wait()
    calls = _counting(monkeypatch)
    summ = run_campaign(camp, store, executor_kind="serial", progress=False)
    assert sorted(calls) == sorted(keys)  # the live owner has died meanwhile: everything is taken over, once
    assert summ["cells"] == len(keys) and store.claims(camp.id) == []


def test_a_failed_cell_is_not_retried_within_the_run_but_by_the_next(tmp_path, monkeypatch):
    camp = smoke_campaign()
    store = Store(tmp_path / "s.sqlite")
    calls = []
    bad = camp.cells[0].key

    def failing(key, *args, **kwargs):
        calls.append(key)
        rec = run_cell(key, *args, **kwargs)
        if key == bad:
            rec.update(status="error", error="RuntimeError: boom", verdicts=[], measurements={})
        return rec

    monkeypatch.setattr(R, "run_cell", failing)
    summ = run_campaign(camp, store, executor_kind="serial", progress=False)
    assert calls.count(bad) == 1 and len(calls) == len(camp.cells)
    assert [e["key"] for e in summ["errors"]] == [bad]
    monkeypatch.setattr(R, "run_cell", lambda *a, **k: (calls.append(a[0]), run_cell(*a, **k))[1])
    summ = run_campaign(camp, store, executor_kind="serial", progress=False)
    assert calls.count(bad) == 2 and len(calls) == len(camp.cells) + 1 and not summ["errors"]


def _children(pid: int) -> list[tuple[int, str]]:
    """The descendants of ``pid`` as ``(pid, start time)`` (psutil where installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return [(p.pid, str(p.create_time())) for p in psutil.Process(pid).children(recursive=True)]
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(d.name)] = (int(fields[1]), fields[19])  # ppid, start time
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c, (pp, start) in parents.items():
            if pp == p:
                out.append((c, start))
                todo.append(c)
    return out


def _running(pid: int, start: str) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs (a zombie does not)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            p = psutil.Process(pid)
            return str(p.create_time()) == start and p.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == start and fields[0] not in ("Z", "X")


def _have_psutil() -> bool:
    import importlib.util

    return importlib.util.find_spec("psutil") is not None


@pytest.mark.skipif(not (_have_psutil() or Path("/proc").is_dir()), reason="needs psutil or /proc")
def test_kill_9_leaves_no_worker_processes(tmp_path):
    out = tmp_path / "out"
    store_path = out / "store.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "verify.cli", "verify", "--campaign", "quick", "--out", str(out),
                             "--executor", "process", "--workers", "2", "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 240
        kids = []
        while time.time() < deadline and proc.poll() is None:
            kids = _children(proc.pid)
            done = 0
            if store_path.exists():
                try:
                    con = sqlite3.connect(store_path, timeout=30)
                    done = con.execute("SELECT COUNT(*) FROM cells WHERE status='done'").fetchone()[0]
                    con.close()
                except sqlite3.OperationalError:
                    pass
            if done >= 1 and len(kids) >= 2:  # the workers run (and the resource tracker)
                break
            time.sleep(0.1)
        assert proc.poll() is None, "the campaign finished before it could be killed"
        assert len(kids) >= 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while time.time() < deadline and any(_running(*k) for k in kids):
            time.sleep(0.1)
        left = [k for k in kids if _running(*k)]
        assert left == [], f"processes of the killed run still alive: {left}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _open_store(args):
    path, start = args
    while time.time() < start:
        pass
    try:
        store = Store(path)
        store.open_campaign("c", "quick", {}, {})
        return "ok"
    except Exception as exc:  # the failure itself is the finding
        return repr(exc)


def test_many_processes_create_one_new_store_at_once(tmp_path):
    """Opening a store that does not exist yet from several processes at the same instant: SQLite
    answers some of them "database is locked" without waiting (the journal-mode switch); every one
    must still open it."""
    import multiprocessing as mp

    outcomes = []
    ctx = mp.get_context("spawn")
    with ctx.Pool(6) as pool:
        for rep in range(8):
            path = tmp_path / f"s{rep}" / "store.sqlite"
            start = time.time() + 1.0
            outcomes += pool.map(_open_store, [(str(path), start)] * 6)
    assert outcomes == ["ok"] * len(outcomes), [o for o in outcomes if o != "ok"][:3]
    assert len(Store(tmp_path / "s0" / "store.sqlite").campaigns()) == 1
