"""float64 re-check of float32 cells whose deterministic bounds show a ratio above 1 (within tolerance)."""

import sqlite3

import pytest

from verify.campaign import Campaign, Cell
from verify.recheck import float64_recheck, format_float64_recheck
from verify.runner import run_campaign
from verify.store import Store

GRID = {"kind": "gptq", "bits": 4, "sym": True}
BASE = dict(family="tall", m=128, N=32, n=8, grid=GRID, percdamp=0.01, order="decreasing", algorithm="optq")


def _run(tmp_path, *cfgs):
    camp = Campaign("recheck-test", 0, tuple(Cell("t", c) for c in cfgs))
    store = Store(tmp_path / "s.sqlite")
    s = run_campaign(camp, store, executor_kind="serial", progress=False)
    assert s["cells"] == len(cfgs) and not s["errors"]
    return camp, store


def test_float64_cells_are_never_rechecked(tmp_path):
    camp, store = _run(tmp_path, dict(BASE, dtype="float64"))
    rc = float64_recheck(store, camp, progress=False)
    assert rc["cells_exceeding"] == 0 and rc["rechecked"] == []
    assert "No float32 cell" in format_float64_recheck(rc)


def test_recheck_reruns_the_flagged_float32_cell_in_float64(tmp_path):
    camp, store = _run(tmp_path, dict(BASE, dtype="float32"), dict(BASE, dtype="float64"))
    cells = {c["config"]["dtype"]: c for c in store.cells(camp.id, measurements=False)}
    c32 = cells["float32"]
    # record, as a float32 run near its tolerance would, a ratio above 1 for T1.sum_c on both cells
    with sqlite3.connect(store.path) as con:
        con.execute("UPDATE verdicts SET worst_ratio = 1.2 WHERE campaign=? AND claim='T1.sum_c'", (camp.id,))
    rc = float64_recheck(store, camp, progress=False)
    assert rc["cells_exceeding"] == 1  # the float64 cell is not re-run: it is float64 already
    (r,) = rc["rechecked"]
    assert r["key"] == c32["key"] and "T1.sum_c" in r["claims"]
    assert r["dtype"] == "float64"  # the loop itself ran in float64, not the stored float32 data
    d = r["claims"]["T1.sum_c"]
    assert d["float32_worst_ratio"] == 1.2
    # recomputed in float64 on the same data: the bound holds, with its true ratio below 1
    assert d["float64_status"] == "consistent" and 0 < d["float64_worst_ratio"] < 1
    assert d["float64_rows_above_1"] == 0 and d["float64_rows"] > 0
    for k, e in r["claims"].items():  # any other flagged claim (a float32 P1.drift near 1) holds in float64
        assert e["float64_status"] == "consistent" and e["float64_rows_above_1"] == 0, k
    md = format_float64_recheck(rc)
    assert "T1.sum_c" in md and "1.2000" in md
    assert float64_recheck(store, camp, limit=0, progress=False)["rechecked"] == []
    with pytest.raises(ValueError, match="limit"):
        float64_recheck(store, camp, limit=-1)


def test_precision_recheck_brings_float32_out_of_scope_rows_into_scope(tmp_path):
    """An ill-conditioned float32 cell (measured float32 allowance above NU_MAX of a step: I1 out of
    scope in float32) is re-run in float64,
    where the exact identity is checked on those rows and holds."""
    from verify.recheck import float64_precision_recheck, format_float64_precision_recheck

    cfg = dict(BASE, family="ill_conditioned", cond=1e6, lam_rel=1e-6, dtype="float32")
    del cfg["percdamp"]
    camp, store = _run(tmp_path, cfg)
    (c,) = store.cells(camp.id, measurements=False)
    i1 = next(v for v in c["verdicts"] if v["claim"] == "I1")
    k = i1["out_of_scope"]
    assert k >= 1 and any(r.startswith("out of scope for precision") for r in i1["reasons"])
    rc = float64_precision_recheck(store, camp, progress=False)
    assert rc["cells_limited"] == 1
    (r,) = rc["rechecked"]
    assert r["dtype"] == "float64"
    d = r["claims"]["I1"]
    assert d["float32_rows_out_precision"] == k
    assert d["float64_status"] == "consistent" and d["float64_rows_in_scope"] == 8
    assert abs(d["float64_worst_ratio"] - 1) < 1e-6
    md = format_float64_precision_recheck(rc)
    assert f"| I1 | 1 | {k} | 8 | 0 |" in md
    # float64 cells are never re-run
    camp64, store64 = _run(tmp_path / "b", dict(cfg, dtype="float64"))
    assert float64_precision_recheck(store64, camp64, progress=False)["cells_limited"] == 0
