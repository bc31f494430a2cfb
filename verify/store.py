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
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import numpy as np

from ._atomic import atomic_path

__all__ = ["Store", "CellRecord", "pack_arrays", "unpack_arrays"]

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
        with closing(self._connect()) as con:
            con.executescript(SCHEMA)

    def _connect(self):
        con = sqlite3.connect(self.path, timeout=60.0)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        return con

    # -- campaigns ----------------------------------------------------------------------------------
    def open_campaign(self, campaign_id: str, name: str, config: dict, meta: dict) -> None:
        """Register a campaign (idempotent: an existing one keeps its first config and meta)."""
        with closing(self._connect()) as con, con:
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
        """Commit one finished cell and its verdicts in a single transaction.

        Returns False (and writes nothing) when the cell is already stored as done.
        """
        verdicts = cell.get("verdicts", [])
        blob = pack_arrays(cell.get("measurements", {})) if cell.get("measurements") else None
        with closing(self._connect()) as con, con:
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
        rows = []
        for c in self.cells(campaign_id, measurements=False):
            for v in c["verdicts"]:
                rows.append(dict(key=c["key"], study=c["study"], **{k: v[k] for k in v if k != "detail"}))
        return rows

    # -- export ---------------------------------------------------------------------------------------
    def export(self, campaign_id: str, path, fmt: str | None = None) -> Path:
        """Write the verdicts of a campaign as CSV or JSON (by ``fmt`` or the file suffix)."""
        path = Path(path)
        fmt = fmt or path.suffix.lstrip(".").lower()
        if fmt not in ("csv", "json"):
            raise ValueError(f"export format must be 'csv' or 'json', got {fmt!r}")
        rows = self.verdict_rows(campaign_id)
        with atomic_path(path) as tmp:
            if fmt == "json":
                cells = self.cells(campaign_id, measurements=False)
                payload = {"campaign": campaign_id, "cells": [
                    {k: c[k] for k in ("key", "study", "config", "seed", "status", "seconds", "backend", "verdicts")}
                    for c in cells]}
                tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=_json_default))
            else:
                cols = ["key", "study", "claim", "kind", "status", "in_scope", "out_of_scope", "violated",
                        "worst_ratio", "p_value", "trials", "exceedances", "claimed_p", "reasons"]
                with open(tmp, "w", newline="") as fh:
                    w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
                    w.writeheader()
                    for r in rows:
                        w.writerow({**r, "reasons": json.dumps(r.get("reasons", {}), sort_keys=True)})
        return path


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
