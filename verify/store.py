"""The result store: one SQLite file, one transaction per finished cell.

Every finished cell is committed atomically together with its verdicts, its configuration,
seed, timings, the backend, library versions and the git commit of the code that produced it.
Killing a campaign (SIGINT or SIGKILL) loses at most the cells in flight; re-running it skips
the cells already stored, so nothing is lost or duplicated (``(campaign, key)`` is the primary
key). Measurements (per-row arrays a figure may need) are stored as compressed ``.npz`` bytes.

Tables::

    campaigns(id, name, config, created, meta)
    cells(campaign, key, study, config, seed, status, error, started, finished, seconds,
          worker, backend, measurements)
    verdicts(campaign, key, claim, kind, status, in_scope, out_of_scope, reasons, violated,
             worst_ratio, p_value, trials, exceedances, claimed_p, detail)
    claims(campaign, key, owner, host, pid, claimed, heartbeat)

Concurrent runs share the work: a run *claims* the cells it is about to compute, a few at a time,
in one transaction (:meth:`Store.claim`), and keeps its claims alive with a heartbeat; other runs
skip cells claimed by a live owner and take over the claims of an owner that died (its process is
gone on this host, or its heartbeat is older than ``stale_after``). A finished cell's claim is
removed in the transaction that commits the cell, so two runs on one store together produce exactly
one record per cell, and a run killed with ``kill -9`` leaves claims that the next run takes over.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .defaults import setting

__all__ = ["Store", "CellRecord", "CONFIG_COLUMNS", "config_columns", "pack_arrays", "unpack_arrays"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS campaigns (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    created REAL NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cells (
    campaign TEXT NOT NULL,
    key TEXT NOT NULL,
    study TEXT,
    config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    started REAL,
    finished REAL,
    seconds REAL,
    worker TEXT,
    backend TEXT,
    measurements BLOB,
    PRIMARY KEY (campaign, key)
);
CREATE TABLE IF NOT EXISTS verdicts (
    campaign TEXT NOT NULL,
    key TEXT NOT NULL,
    claim TEXT NOT NULL,
    kind TEXT,
    status TEXT NOT NULL,
    in_scope INTEGER NOT NULL,
    out_of_scope INTEGER NOT NULL,
    reasons TEXT,
    violated INTEGER NOT NULL,
    worst_ratio REAL,
    p_value REAL,
    trials INTEGER,
    exceedances INTEGER,
    claimed_p REAL,
    detail TEXT,
    PRIMARY KEY (campaign, key, claim)
);
CREATE TABLE IF NOT EXISTS claims (
    campaign TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    claimed REAL NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (campaign, key)
);
"""


def pack_arrays(arrays: dict) -> bytes:
    """Named NumPy arrays as compressed ``.npz`` bytes."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    return buf.getvalue()


def unpack_arrays(blob) -> dict:
    if not blob:
        return {}
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class CellRecord(dict):
    """A stored cell: ``config``, ``seed``, ``verdicts`` (list of dicts), ``measurements`` (arrays)…"""

    __getattr__ = dict.__getitem__


class Store:
    """A SQLite result store at ``path`` (created with its directory when missing)."""

    def __init__(self, path):
        self.path = Path(path)
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._initialise()

    def _initialise(self, wait: float = 60.0) -> None:
        """Switch the file to WAL and create the tables. Several processes may open a new store at
        the same moment; SQLite then answers some of them "database is locked" at once (changing
        the journal mode does not wait on the busy timeout), so this retries until ``wait`` runs out."""
        deadline = time.monotonic() + wait
        pause = 0.01
        while True:
            try:
                with closing(sqlite3.connect(self.path, timeout=wait)) as con:
                    if con.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        con.execute("PRAGMA journal_mode=WAL")
                    con.isolation_level = None
                    con.execute("BEGIN IMMEDIATE")
                    try:
                        for statement in SCHEMA.split(";"):
                            if statement.strip():
                                con.execute(statement)
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                    con.execute("COMMIT")
                return
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if ("locked" not in msg and "busy" not in msg) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=60.0)
        con.execute("PRAGMA synchronous=FULL")
        return con

    @contextmanager
    def _write(self):
        """A connection inside one write transaction taken at its start (``BEGIN IMMEDIATE``): what
        it reads cannot change before it commits; rolled back on any exception."""
        con = self._connect()
        con.isolation_level = None  # explicit transactions
        try:
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    # -- campaigns ----------------------------------------------------------------------------------
    def open_campaign(self, campaign_id: str, name: str, config: dict, meta: dict) -> None:
        """Register a campaign (idempotent: an existing one keeps its first config and meta)."""
        with self._write() as con:
            con.execute(
                "INSERT OR IGNORE INTO campaigns(id, name, config, created, meta) VALUES (?,?,?,?,?)",
                (campaign_id, name, json.dumps(config, sort_keys=True), time.time(), json.dumps(meta, sort_keys=True)),
            )

    def campaigns(self) -> list[dict]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT id, name, config, created, meta FROM campaigns ORDER BY created").fetchall()
        return [dict(id=r[0], name=r[1], config=json.loads(r[2]), created=r[3], meta=json.loads(r[4])) for r in rows]

    def latest_campaign(self, name: str | None = None) -> dict | None:
        rows = [c for c in self.campaigns() if name is None or c["name"] == name]
        return rows[-1] if rows else None

    # -- cells ----------------------------------------------------------------------------------------
    def done_keys(self, campaign_id: str) -> set[str]:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT key FROM cells WHERE campaign=? AND status='done'", (campaign_id,)).fetchall()
        return {r[0] for r in rows}

    def put_cell(self, campaign_id: str, cell: dict) -> bool:
        """Commit one finished cell and its verdicts in a single transaction (which also removes the
        cell's claim, whoever holds it).

        Returns False (and writes nothing but the claim's removal) when the cell is already stored
        as done.
        """
        verdicts = cell.get("verdicts", [])
        blob = pack_arrays(cell.get("measurements", {})) if cell.get("measurements") else None
        with self._write() as con:
            con.execute("DELETE FROM claims WHERE campaign=? AND key=?", (campaign_id, cell["key"]))
            cur = con.execute("SELECT status FROM cells WHERE campaign=? AND key=?", (campaign_id, cell["key"]))
            row = cur.fetchone()
            if row is not None and row[0] == "done":
                return False
            con.execute("DELETE FROM verdicts WHERE campaign=? AND key=?", (campaign_id, cell["key"]))
            con.execute(
                "INSERT OR REPLACE INTO cells(campaign, key, study, config, seed, status, error, started, finished,"
                " seconds, worker, backend, measurements) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    campaign_id, cell["key"], cell.get("study"), json.dumps(cell["config"], sort_keys=True),
                    int(cell["seed"]), cell.get("status", "done"), cell.get("error"), cell.get("started"),
                    cell.get("finished"), cell.get("seconds"), cell.get("worker"), cell.get("backend"), blob,
                ),
            )
            con.executemany(
                "INSERT INTO verdicts(campaign, key, claim, kind, status, in_scope, out_of_scope, reasons, violated,"
                " worst_ratio, p_value, trials, exceedances, claimed_p, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        campaign_id, cell["key"], v["claim"], v.get("kind"), v["status"], int(v.get("in_scope", 0)),
                        int(v.get("out_of_scope", 0)), json.dumps(v.get("reasons", {}), sort_keys=True),
                        int(bool(v.get("violated"))), _f(v.get("worst_ratio")), _f(v.get("p_value")),
                        _i(v.get("trials")), _i(v.get("exceedances")), _f(v.get("claimed_p")),
                        json.dumps(v.get("detail", {}), sort_keys=True, default=_json_default),
                    )
                    for v in verdicts
                ],
            )
        return True

    # -- claims: concurrent runs share the work ------------------------------------------------------------
    def claim(self, campaign_id: str, keys, owner: str, n: int, *, since: float = 0.0,
              stale_after: float = 120.0) -> tuple[list[str], int]:
        """Claim for ``owner`` up to ``n`` of ``keys`` (in their order) that still need a run, in one
        transaction; returns ``(claimed, held_by_others)``.

        A key needs a run unless its cell is stored as done, or as failed at or after ``since`` (the
        claiming run's start: a cell that failed during this run is not retried by it). A key claimed
        by another owner is skipped while that owner is alive (counted in ``held_by_others``); the
        claim of a dead owner (its process is gone on this host, or its heartbeat is older than
        ``stale_after`` seconds) is taken over. Keys already claimed by ``owner`` are claimed again.
        """
        keys = list(keys)
        now = time.time()
        host = socket.gethostname()
        taken: list[str] = []
        held = 0
        with self._write() as con:
            stored = {r[0]: (r[1], r[2]) for r in con.execute(
                "SELECT key, status, finished FROM cells WHERE campaign=?", (campaign_id,))}
            claims = {r[0]: r[1:] for r in con.execute(
                "SELECT key, owner, host, pid, heartbeat FROM claims WHERE campaign=?", (campaign_id,))}
            for k in keys:
                st = stored.get(k)
                if st is not None and (st[0] == "done" or (st[1] or 0.0) >= since):
                    continue
                c = claims.get(k)
                if c is not None and c[0] != owner and _owner_alive(*c, now=now, stale_after=stale_after):
                    held += 1
                    continue
                if len(taken) < n:
                    con.execute(
                        "INSERT OR REPLACE INTO claims(campaign, key, owner, host, pid, claimed, heartbeat)"
                        " VALUES (?,?,?,?,?,?,?)", (campaign_id, k, owner, host, os.getpid(), now, now))
                    taken.append(k)
        return taken, held

    def heartbeat(self, campaign_id: str, owner: str) -> None:
        """Mark ``owner``'s claims as alive now."""
        with self._write() as con:
            con.execute("UPDATE claims SET heartbeat=? WHERE campaign=? AND owner=?",
                        (time.time(), campaign_id, owner))

    def release(self, campaign_id: str, owner: str, keys=None) -> None:
        """Drop ``owner``'s claims (all of them, or those on ``keys``)."""
        with self._write() as con:
            if keys is None:
                con.execute("DELETE FROM claims WHERE campaign=? AND owner=?", (campaign_id, owner))
            else:
                con.executemany("DELETE FROM claims WHERE campaign=? AND owner=? AND key=?",
                                [(campaign_id, owner, k) for k in keys])

    def claims(self, campaign_id: str) -> list[dict]:
        """The current claims of a campaign (``key``, ``owner``, ``host``, ``pid``, ``claimed``, ``heartbeat``)."""
        with closing(self._connect()) as con:
            rows = con.execute("SELECT key, owner, host, pid, claimed, heartbeat FROM claims WHERE campaign=?"
                               " ORDER BY key", (campaign_id,)).fetchall()
        return [dict(zip(("key", "owner", "host", "pid", "claimed", "heartbeat"), r)) for r in rows]

    def cells(self, campaign_id: str, *, study: str | None = None, measurements: bool = True) -> list[CellRecord]:
        q = ("SELECT key, study, config, seed, status, error, started, finished, seconds, worker, backend"
             + (", measurements" if measurements else "") + " FROM cells WHERE campaign=?")
        args = [campaign_id]
        if study is not None:
            q += " AND study=?"
            args.append(study)
        q += " ORDER BY key"
        with closing(self._connect()) as con:
            rows = con.execute(q, args).fetchall()
            vrows = con.execute(
                "SELECT key, claim, kind, status, in_scope, out_of_scope, reasons, violated, worst_ratio, p_value,"
                " trials, exceedances, claimed_p, detail FROM verdicts WHERE campaign=? ORDER BY key, claim",
                (campaign_id,),
            ).fetchall()
        by_key: dict[str, list] = {}
        for r in vrows:
            by_key.setdefault(r[0], []).append(dict(
                claim=r[1], kind=r[2], status=r[3], in_scope=r[4], out_of_scope=r[5], reasons=json.loads(r[6] or "{}"),
                violated=bool(r[7]), worst_ratio=r[8], p_value=r[9], trials=r[10], exceedances=r[11],
                claimed_p=r[12], detail=json.loads(r[13] or "{}"),
            ))
        out = []
        for r in rows:
            rec = CellRecord(key=r[0], study=r[1], config=json.loads(r[2]), seed=r[3], status=r[4], error=r[5],
                             started=r[6], finished=r[7], seconds=r[8], worker=r[9], backend=r[10],
                             verdicts=by_key.get(r[0], []))
            rec["measurements"] = unpack_arrays(r[11]) if measurements else {}
            out.append(rec)
        return out

    def verdict_rows(self, campaign_id: str) -> list[dict]:
        """One row per verdict: the cell's key, study and seed, its configuration as readable columns
        (:func:`config_columns`) and the verdict's fields (without ``detail``)."""
        rows = []
        for c in self.cells(campaign_id, measurements=False):
            desc = config_columns(c["config"])
            for v in c["verdicts"]:
                rows.append(dict(key=c["key"], study=c["study"], seed=c["seed"], config=c["config"], **desc,
                                 **{k: v[k] for k in v if k != "detail"}))
        return rows

    # -- export ---------------------------------------------------------------------------------------
    def export(self, campaign_id: str, path, fmt: str | None = None) -> Path:
        """Write the verdicts of a campaign as CSV or JSON (by ``fmt`` or the file suffix).

        CSV: one row per verdict; after the verdict's columns, the cell's configuration as readable
        columns (:data:`CONFIG_COLUMNS`: family, shape, damping, grid, order, algorithm, …), its seed
        and the whole configuration as JSON. JSON: the campaign's provenance (``meta``) and one entry
        per cell with its configuration, the same readable columns (``columns``) and its verdicts."""
        path = Path(path)
        fmt = fmt or path.suffix.lstrip(".").lower()
        if fmt not in ("csv", "json"):
            raise ValueError(f"export format must be 'csv' or 'json', got {fmt!r}")
        with atomic_path(path) as tmp:
            if fmt == "json":
                cells = self.cells(campaign_id, measurements=False)
                camp = next((c for c in self.campaigns() if c["id"] == campaign_id), None)
                payload = {"campaign": campaign_id, "name": camp["name"] if camp else None,
                           "meta": camp["meta"] if camp else None, "cells": [
                               {**{k: c[k] for k in ("key", "study", "config", "seed", "status", "error", "seconds",
                                                     "worker", "backend", "verdicts")},
                                "columns": config_columns(c["config"])}
                               for c in cells]}
                tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=_json_default))
            else:
                rows = self.verdict_rows(campaign_id)
                cols = ["key", "study", "claim", "kind", "status", "in_scope", "out_of_scope", "violated",
                        "worst_ratio", "p_value", "trials", "exceedances", "claimed_p", "reasons",
                        *CONFIG_COLUMNS, "seed", "config"]
                with open(tmp, "w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
                    w.writeheader()
                    for r in rows:
                        w.writerow({**r, "reasons": json.dumps(r.get("reasons", {}), sort_keys=True),
                                    "config": json.dumps(r["config"], sort_keys=True)})
        return path


#: the configuration of a cell as readable export columns (see :func:`config_columns`)
CONFIG_COLUMNS = ("family", "n", "N", "m", "damping", "lam", "lam_rel", "percdamp", "grid", "order", "algorithm",
                  "variant", "rounding", "dtype", "mismatch", "model", "layer", "label")


def config_columns(cfg: dict) -> dict:
    """A cell's configuration as the columns of :data:`CONFIG_COLUMNS`, with the defaults the cell ran
    with filled in (order ``natural``, rounding ``nearest``, dtype ``float64``, Qronos variant
    ``projection``, damping ``lam_rel = 0.01`` when none is given; see :mod:`verify.campaign`).

    ``damping`` says which of ``lam`` (absolute λ), ``lam_rel`` (λ = lam_rel × mean ‖X_t‖²) and
    ``percdamp`` (GPTQ's relative damping) applies; ``grid`` describes the grid in words; the
    real-LLM cells give their ``model``, ``layer`` and recipe ``label``; a column that does not apply
    is empty."""
    from .sources import describe

    cfg = cfg or {}
    src = describe(cfg)
    llm = cfg.get("llm") or {}
    alg = cfg.get("algorithm")
    out = {k: None for k in CONFIG_COLUMNS}
    out.update(family=cfg.get("family") or ("llm" if src["source"] == "llm" else None), n=cfg.get("n"), N=cfg.get("N"),
               m=cfg.get("m"), algorithm=alg, order=setting(cfg, "order"),
               rounding=setting(cfg, "rounding"), dtype=setting(cfg, "dtype"),
               grid=_describe_grid(cfg.get("grid")), mismatch=_describe_mismatch(cfg.get("mismatch")),
               model=llm.get("model") if llm else src["model"], layer=llm.get("layer") if llm else src["layer"],
               label=cfg.get("label"))
    if alg is None:  # not an algorithm's cell (e.g. a tightness search): no run settings to default
        out.update(order=cfg.get("order"), rounding=cfg.get("rounding"), dtype=cfg.get("dtype"))
        return out
    if alg == "qronos":
        out["variant"] = setting(cfg, "variant")
    if alg != "rtn":  # RTN has no damping
        if "percdamp" in cfg:
            out.update(damping="percdamp", percdamp=cfg["percdamp"])
        elif "lam" in cfg:
            out.update(damping="lam", lam=cfg["lam"])
        else:
            out.update(damping="lam_rel", lam_rel=setting(cfg, "lam_rel"))
    return out


def _describe_grid(spec) -> str | None:
    """``gptq 4-bit sym``, ``gptq 3-bit asym group 16 static``, ``symmetric delta=0.125*max|W| K=inf``…"""
    if not isinstance(spec, dict):
        return None if spec is None else str(spec)
    kind = spec.get("kind")
    if kind == "gptq":
        s = f"gptq {spec.get('bits')}-bit {'sym' if spec.get('sym', True) else 'asym'}"
        if spec.get("group_size"):
            s += f" group {spec['group_size']}"
        if spec.get("static"):
            s += " static"
        return s
    if kind == "symmetric":
        K = spec.get("K")
        ks = {None: "inf", "auto": "auto", "p1": "sized by P1", "t3": "sized by T3"}.get(K, K) \
            if K is None or isinstance(K, str) else K
        if K == "auto" and spec.get("K_extra"):
            ks = f"auto+{spec['K_extra']}"
        return f"symmetric delta={spec.get('delta_rel')}*max|W| K={ks}"
    return json.dumps(spec, sort_keys=True)


def _describe_mismatch(mm) -> str | None:
    if not mm:
        return None
    if isinstance(mm, dict):
        return f"{mm.get('kind')} {mm.get('level')}"
    return str(mm)


#: owners (claim tokens) of the runs in progress in this process; a claim of this process by an owner not
#: listed here was left by a run that ended without releasing it
LIVE_OWNERS: set[str] = set()


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host (a zombie, killed but not yet reaped, does not)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OSError, ValueError, OverflowError):
        return False
    try:
        with open(f"/proc/{int(pid)}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True  # no /proc: kill(pid, 0) said it exists


def _owner_alive(owner: str, host: str, pid: int, heartbeat: float, *, now: float, stale_after: float) -> bool:
    """Whether the run holding a claim is alive: a recent heartbeat, and on this host a live process
    (in this process: a run in progress)."""
    if now - float(heartbeat) > stale_after:
        return False
    if host == socket.gethostname():
        if int(pid) == os.getpid():
            return owner in LIVE_OWNERS
        return _pid_alive(pid)
    return True


def _f(v):
    if v is None:
        return None
    v = float(v)
    return v


def _i(v):
    return None if v is None else int(v)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
