"""Running a campaign into the store, resumably, and summarising what the store holds."""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from tqdm.auto import tqdm

from ._atomic import atomic_path
from .campaign import Campaign, cell_seed, machine_meta, run_cell
from .executor import SerialExecutor, executor
from .store import LIVE_OWNERS, Store

__all__ = ["run_campaign", "summarize", "format_summary", "write_json"]


#: seconds between two heartbeats of a run's claims
HEARTBEAT_S = 5.0
#: a claim whose heartbeat is older than this (seconds) is taken over by another run
STALE_AFTER_S = 120.0
#: seconds between two looks at the store while the remaining cells are computed by other runs
WAIT_POLL_S = 1.0


def run_campaign(campaign: Campaign, store: Store, *, executor_kind: str = "process", workers: int | None = None,
                 scheduler: str | None = None, progress: bool = True, limit: int | None = None) -> dict:
    """Run every cell of ``campaign`` not yet in ``store``; each finished cell is committed at once.

    Several runs may share one store: each claims the cells it computes, a few at a time
    (:meth:`Store.claim`), so concurrent runs split the work and every cell is computed and stored
    once; a run that finds the remaining cells claimed by other live runs waits for them (the progress
    bar counts the cells the store holds), then summarises. Claims of a run that died are taken over.

    ``limit``: run at most this many pending cells (then stop; a later call continues).
    Returns :func:`summarize` of the campaign.
    """
    store.open_campaign(campaign.id, campaign.name, campaign.to_dict(), machine_meta())
    since = time.time()
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    keys = [c.key for c in campaign.cells]
    by_key = {c.key: c for c in campaign.cells}
    budget = None if limit is None else max(0, int(limit))
    alpha, eta = campaign.alpha_per_test, campaign.eta
    bar = tqdm(total=len(keys), initial=_stored(store, campaign.id, keys), desc=f"{campaign.name}", unit="cell",
               disable=not progress, dynamic_ncols=True)

    def args(c):
        return (c.key, c.study, c.config, cell_seed(campaign.seed, c.seed_key))

    LIVE_OWNERS.add(owner)
    beat = _Heartbeat(store, campaign.id, owner)
    beat.start()
    try:
        with executor(executor_kind, workers=workers, scheduler=scheduler) as ex:
            capacity = _capacity(ex, workers)
            attempted: set[str] = set()  # keys this run has submitted (each at most once)
            running: dict = {}  # future -> key
            while True:
                room = capacity - len(running)
                if budget is not None:
                    room = min(room, budget - len(attempted))
                claimed, held = [], 0
                if room > 0:
                    claimed, held = store.claim(campaign.id, [k for k in keys if k not in attempted], owner, room,
                                                since=since, stale_after=STALE_AFTER_S)
                for k in claimed:
                    attempted.add(k)
                    running[ex.submit(run_cell, *args(by_key[k]), alpha=alpha, eta=eta)] = k
                if running:
                    done, _ = cf.wait(list(running), timeout=WAIT_POLL_S if held else None,
                                      return_when=cf.FIRST_COMPLETED)
                    for f in done:
                        running.pop(f)
                        store.put_cell(campaign.id, f.result())
                    _show(bar, store, campaign.id, keys, held)
                    continue
                if not held:
                    break  # nothing left to run (or this run's limit is reached)
                # every remaining cell is being computed by another run: wait for it
                _show(bar, store, campaign.id, keys, held)
                time.sleep(WAIT_POLL_S)
    finally:
        beat.stop()
        LIVE_OWNERS.discard(owner)
        try:
            store.release(campaign.id, owner)
            _show(bar, store, campaign.id, keys, 0)
        except Exception:  # noqa: BLE001 - the claims are taken over once this process is gone
            pass
        bar.close()
    return summarize(store, campaign)


def _capacity(ex, workers: int | None) -> int:
    """How many cells to keep claimed and in flight: one in this process; about two per worker otherwise
    (so that a worker never waits for the next claim)."""
    if isinstance(ex, SerialExecutor):
        return 1
    n = workers
    if n is None:
        client = getattr(ex, "_client", None)  # a Dask executor: its cluster's threads
        try:
            n = sum(client.nthreads().values()) if client is not None else None
        except Exception:  # noqa: BLE001
            n = None
    return 2 * max(1, n or os.cpu_count() or 1)


def _stored(store: Store, campaign_id: str, keys) -> int:
    done = store.done_keys(campaign_id)
    return sum(k in done for k in keys)


def _show(bar, store: Store, campaign_id: str, keys, held: int) -> None:
    """Progress: the cells the store holds (computed by this run or another), and how many other runs hold."""
    if bar.disable:
        return
    bar.n = _stored(store, campaign_id, keys)
    bar.set_postfix_str(f"{held} claimed by other runs" if held else "", refresh=False)
    bar.refresh()


class _Heartbeat:
    """A thread that keeps a run's claims alive (:meth:`Store.heartbeat` every :data:`HEARTBEAT_S` s)."""

    def __init__(self, store: Store, campaign_id: str, owner: str):
        self._args = (store, campaign_id, owner)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ptq-claims-heartbeat", daemon=True)

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self):
        store, cid, owner = self._args
        while not self._stop.wait(HEARTBEAT_S):
            try:
                store.heartbeat(cid, owner)
            except Exception:  # noqa: BLE001 - a busy store: the next beat tries again
                pass


def summarize(store: Store, campaign: Campaign | str) -> dict:
    """Per claim and per checked hypothesis (ids ``hyp.*``, listed after the claims): cells and rows in
    scope, out of scope (by reason), violations and the cells they occurred in, worst ratio, smallest
    p-value, trials and exceedances, verdicts with insufficient evidence (``insufficient``, and the
    weakest smallest-detectable effect ``detectable``) and ``status`` in the vocabulary of
    :mod:`theory.verdicts` (``consistent`` / ``violated`` / ``insufficient evidence`` / ``not exercised``).

    The evidence is folded by :func:`theory.verdicts.aggregate` (its ``runs``, ``rows`` and
    ``violated_in`` are stored as ``cells_in_scope``, ``rows_in_scope`` and ``violated_cells``).
    ``violated`` lists every violated id (claims and hypotheses), ``not_exercised`` the claims never in
    scope, ``insufficient`` the ids with a verdict that lacked the declared power."""
    cid = campaign.id if isinstance(campaign, Campaign) else campaign
    import theory
    from theory import verdicts as V

    cells = store.cells(cid, measurements=False)
    agg: dict = {}
    errors = []
    for c in cells:
        if c["status"] != "done":
            errors.append({"key": c["key"], "error": c["error"]})
            continue
        V.aggregate((_with_power(v) for v in c["verdicts"]), source=c["key"], into=agg)
    order = list(theory.CLAIMS) + [k for k in agg if k not in theory.CLAIMS and not _is_hypothesis(k, agg[k])]
    order += [k for k in agg if k not in order]
    claims = {}
    for k in order:
        reg = theory.CLAIMS.get(k)
        a = agg.get(k) or {}
        kind = reg.kind if reg is not None else a.get("kind", "")
        status = a.get("status", V.NOT_EXERCISED)
        if not a.get("runs") and status in (V.OUT_OF_SCOPE, V.NOT_EXERCISED):
            status = V.NOT_EXERCISED  # an aggregate with nothing in scope
        claims[k] = {
            "claim": k, "kind": kind, "title": reg.title if reg is not None else a.get("title", ""),
            "cells_in_scope": int(a.get("runs", 0)), "rows_in_scope": int(a.get("rows", 0)),
            "out_of_scope": int(a.get("out_of_scope", 0)), "reasons": dict(a.get("reasons", {})),
            "violations": int(a.get("violations", 0)), "violated_cells": list(a.get("violated_in", [])),
            "worst_ratio": a.get("worst_ratio"), "min_p_value": a.get("min_p_value"),
            "trials": int(a.get("trials", 0)), "exceedances": int(a.get("exceedances", 0)),
            "insufficient": int(a.get("insufficient", 0)), "detectable": a.get("detectable"),
            "status": status,
        }
    camp = next((c for c in store.campaigns() if c["id"] == cid), None)
    return {
        "campaign": cid,
        "name": camp["name"] if camp else None,
        "meta": camp["meta"] if camp else None,
        "alpha": (camp["config"].get("alpha") if camp else None),
        "eta": (camp["config"].get("eta") if camp else None),
        "cells": len(cells),
        "cells_expected": len(camp["config"]["cells"]) if camp else None,
        "errors": errors,
        "claims": claims,
        "violated": sorted(k for k, s in claims.items() if s["status"] == V.VIOLATED),
        "not_exercised": sorted(k for k, s in claims.items()
                                if s["status"] == V.NOT_EXERCISED and not _is_hypothesis(k, s)),
        "insufficient": sorted(k for k, s in claims.items() if s["status"] == V.INSUFFICIENT),
        "seconds": sum(float(c["seconds"] or 0) for c in cells),
    }


def _with_power(v: dict) -> dict:
    """A stored verdict with its ``power`` (kept in the store's ``detail``) where aggregate reads it."""
    if v.get("power") is None and isinstance(v.get("detail"), dict) and v["detail"].get("power") is not None:
        return {**v, "power": v["detail"]["power"]}
    return v


def _is_hypothesis(cid: str, s: dict | None = None) -> bool:
    """A checked hypothesis of a run (id ``hyp.*``, kind ``hypothesis``), not a claim."""
    return cid.startswith("hyp.") or (s or {}).get("kind") == "hypothesis"


def format_summary(summary: dict) -> str:
    """The table printed at the end of a campaign: the claims, then the checked hypotheses."""
    lines = [f"campaign {summary['campaign']}: {summary['cells']}/{summary['cells_expected']} cells"
             f" ({summary['seconds']:.1f} s of cell time)"]

    def header(first):
        return (f"{first:24s} {'kind':19s} {'status':21s} {'cells':>5s} {'rows':>7s} {'out':>6s} {'worst ratio':>12s}"
                f" {'min p':>9s}")

    items = list(summary["claims"].items())
    claims = [(k, s) for k, s in items if not _is_hypothesis(k, s)]
    hyps = [(k, s) for k, s in items if _is_hypothesis(k, s)]
    for title, group in (("claim", claims), ("hypothesis", hyps)):
        if not group:
            continue
        h = header(title)
        lines += [h, "-" * len(h)]
        for k, s in group:
            wr = "" if s.get("worst_ratio") is None else f"{s['worst_ratio']:.4g}"
            mp = "" if s.get("min_p_value") is None else f"{s['min_p_value']:.2g}"
            lines.append(f"{k:24s} {str(s.get('kind', ''))[:19]:19s} {s['status']:21s} {s['cells_in_scope']:5d} "
                         f"{s['rows_in_scope']:7d} {s['out_of_scope']:6d} {wr:>12s} {mp:>9s}")
    if summary["errors"]:
        lines.append(f"{len(summary['errors'])} cells failed:")
        lines += [f"  {e['key']}: {e['error']}" for e in summary["errors"][:10]]
    if summary["violated"]:
        lines.append("VIOLATED: " + ", ".join(summary["violated"]))
    else:
        lines.append("no claim violated" + (", no hypothesis violated" if hyps else ""))
    if summary.get("insufficient"):
        lines.append("insufficient evidence (a statistical check lacked the declared power): "
                     + ", ".join(summary["insufficient"]))
    if summary["not_exercised"]:
        lines.append("not exercised (never in scope): " + ", ".join(summary["not_exercised"]))
    return "\n".join(lines)


def write_json(path, payload) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
    return path
