"""The figures: each renders from a small stored result set, and what it plots is what the store holds.

A tiny campaign (every study a figure reads, small shapes) runs serially into a temporary store;
a fake real-LLM campaign is written directly with ``Store.put_cell``. Each figure is drawn, saved
(non-empty PDF and PNG), and its artists' data (line data, scatter offsets, bar heights, found by
their ``gid``) are compared with values computed here from the stored records — not with pixels,
and not through the figure modules' own helpers.
"""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")

from figures import FIGURES, figure_module, render  # noqa: E402
from figures._data import FigureDataError, open_source  # noqa: E402
from figures._style import style  # noqa: E402
from verify.campaign import Campaign, Cell  # noqa: E402
from verify.runner import run_campaign  # noqa: E402
from verify.store import Store  # noqa: E402

DZ = {"kind": "symmetric", "delta_rel": 0.125, "K": None}
ETA = 0.05
ROOT = Path(__file__).resolve().parents[1]


def tiny_campaign() -> Campaign:
    cells = []
    for fam in ("tall", "ill_conditioned"):
        for lr in (1e-3, 1e-1, 10.0):
            cells.append(Cell("lambda", dict(family=fam, m=24, N=8, n=4, algorithm="optq", grid=DZ, lam_rel=lr,
                                             order="decreasing", pair=fam)))
    for order in ("natural", "decreasing", "increasing", "random"):
        cells.append(Cell("ordering", dict(family="tall", m=24, N=8, n=4, algorithm="optq", grid=DZ, lam_rel=0.01,
                                           order=order, pair="tall")))
    base = dict(family="tall", m=16, N=8, n=150, same_w=True, algorithm="optq", rounding="stochastic",
                lam_rel=0.05, order="decreasing", pair="s")
    cells += [Cell("stochastic", dict(base, grid=DZ)),
              Cell("stochastic", dict(base, grid={"kind": "symmetric", "delta_rel": 0.125, "K": "t3"})),
              Cell("stochastic", dict(base, n=1, rounding="nearest", grid=DZ))]
    for level in (0.03, 0.3):
        mb = dict(family="tall", m=24, N=8, n=4, lam_rel=0.01, order="decreasing", pair=f"l{level}",
                  mismatch={"kind": "noise", "level": level},
                  grid={"kind": "symmetric", "delta_rel": 0.125, "K": "auto", "K_extra": 24})
        cells += [Cell("mismatch", dict(mb, algorithm="qronos", variant="projection")),
                  Cell("mismatch", dict(mb, algorithm="qronos", variant="original")),
                  Cell("mismatch", dict(mb, algorithm="optq"))]
    for variant in ("projection", "original"):
        cells.append(Cell("mismatch", dict(family="tall", m=24, N=8, n=100, same_w=True, lam_rel=0.01, pair="st",
                                           order="decreasing", rounding="stochastic", algorithm="qronos",
                                           variant=variant, mismatch={"kind": "noise", "level": 0.3}, grid=DZ)))
    for N in (8, 16):
        ab = dict(family="tall", m=2 * N, N=N, algorithm="optq", lam_rel=0.01, order="natural", grid=DZ, pair=f"N{N}")
        cells += [Cell("alphabet", dict(ab, n=6)),
                  Cell("alphabet", dict(ab, n=100, same_w=True, rounding="stochastic"))]
    cells.append(Cell("families", dict(family="heavy_tailed", m=24, N=8, n=4, algorithm="optq", grid=DZ,
                                       lam_rel=0.01, order="natural")))
    return Campaign(name="default", seed=7, cells=tuple(cells), eta=ETA, description="tiny, for the figure tests")


LLM_LAYERS = (("blk.0.attn_q", "attn_q"), ("blk.1.ffn_down", "ffn_down"))  # as verify.llm.campaign names them
#: the OPTQ cells of the fake real-LLM campaign: label, grid bits (those of verify.llm.report.ALPHABET_GRIDS)
LLM_LABELS = (("optq", 4), ("optq-3bit", 3))
LLM_SHAPES = {"attn_q": [576, 576], "ffn_down": [576, 1536]}


def put_llm_campaign(store: Store):
    """A fake real-LLM campaign written cell by cell (only what figures 6 and 9 read): per layer and
    grid one OPTQ cell with tightness ratios and the alphabet measurements (‖w‖∞/δ per row, the
    drift norms max_t‖B_{:,t}‖₁ and max_t‖B_{:,t}‖₂)."""
    cfgs = [{"llm": {"model": "SmolLM2-135M-Instruct", "layer": layer, "kind": kind, "shape": LLM_SHAPES[kind]},
             "algorithm": "optq", "N": LLM_SHAPES[kind][1], "label": label, "grid": {"kind": "gptq", "bits": bits}}
            for layer, kind in LLM_LAYERS for label, bits in LLM_LABELS]
    store.open_campaign("real-llm-test", "real-llm", {"seed": 0, "eta": ETA,
                                                      "cells": [dict(c, study="real-llm") for c in cfgs]},
                        {"git_commit": "0123456789abcdef", "git_dirty": False})
    rng = np.random.default_rng(3)
    for i, cfg in enumerate(cfgs):
        rhs = 1.0 + rng.random(5)
        half = (2 ** cfg["grid"]["bits"] - 1) / 2
        meas = {"T1.sum_c/lhs": rhs * (0.3 + 0.1 * i), "T1.sum_c/rhs": rhs,
                "T4.projection.bound/lhs": rhs * 0.25, "T4.projection.bound/rhs": rhs,
                "w_over_delta_max": half + rng.random(5), "drift_l1_max": np.array([20.0 + 10 * i]),
                "drift_l2_max": np.array([2.0 + i])}
        store.put_cell("real-llm-test", {"key": f"llm:{i}", "study": "real-llm", "config": cfg, "seed": i,
                                         "status": "done", "verdicts": [], "measurements": meas})


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("figstore") / "store.sqlite"
    store = Store(path)
    summ = run_campaign(tiny_campaign(), store, executor_kind="serial", progress=False)
    assert not summ["errors"], summ["errors"]
    put_llm_campaign(store)
    return path


@pytest.fixture(scope="module")
def src(store_path):
    return open_source(store_path)


_DRAWN: dict = {}


def drawn(number, src, **kw):
    """Figure ``number`` drawn from ``src`` (once per source and options: the tests only read it)."""
    key = (number, id(src), tuple(sorted(kw.items())))
    if key not in _DRAWN:
        with style():
            _DRAWN[key] = (src, figure_module(number).draw(src, **kw))  # src kept: its id is not reused
    return _DRAWN[key][1]


def by_gid(fig, gid):
    found = fig.findobj(lambda a: a.get_gid() == gid)
    assert found, f"no artist with gid {gid!r}"
    return found


def one(fig, gid):
    found = by_gid(fig, gid)
    assert len(found) == 1, gid
    return found[0]


def xy(artist):
    return np.asarray(artist.get_xydata(), dtype=float)


def cells_of(src, study):
    return src.store.cells(src.id, study=study)


def med(a):
    return float(np.median(a))


# ------------------------------------------------------------------------------------------------
# every figure renders
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("number", list(FIGURES))
def test_each_figure_renders_nonempty_files(number, src, tmp_path):
    paths = render(number, src, tmp_path, formats=("png", "pdf"))
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 5000, p
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("number", list(FIGURES))
def test_footer_states_the_provenance(number, src):
    fig = drawn(number, src)
    foot = fig._ptq_footer
    mod = figure_module(number)
    if getattr(mod, "REAL_LLM", False):  # drawn from the store's real-LLM campaign alone
        camp = src.llm_campaigns()[0]
        n = len(src.store.cells(camp["id"]))
        assert camp["id"] in foot and f"seed {camp['config']['seed']}" in foot and "0123456789" in foot
        assert f"{n} of {len(camp['config']['cells'])} cells (real-LLM layers)" in foot
        assert src.id not in foot  # the selected campaign gives it no cell
        return
    camp = src.campaign
    assert camp["id"] in foot and f"seed {camp['config']['seed']}" in foot
    commit = camp["meta"].get("git_commit")
    if commit:
        assert commit[:10] in foot
    n = len(cells_of(src, mod.STUDY)) if mod.STUDY else len(cells_of(src, None))
    assert f"{n} of {len(camp['config']['cells'])} cells" in foot


# ------------------------------------------------------------------------------------------------
# the plotted data are the stored data
# ------------------------------------------------------------------------------------------------
def test_fig1_lambda_data(src):
    fig = drawn(1, src)
    cells = [c for c in cells_of(src, "lambda") if c["config"]["family"] == "tall"]
    cells.sort(key=lambda c: c["config"]["lam_rel"])
    lam = [c["config"]["lam_rel"] for c in cells]
    err = [med(c["measurements"]["err_l2"]) for c in cells]
    lines = [ln for ln in by_gid(fig, "err_l2") if np.allclose(xy(ln)[:, 0], lam) and np.allclose(xy(ln)[:, 1], err)]
    assert lines, "the median error of the 'tall' panel is not plotted as stored"
    ax = lines[0].axes
    for cid in ("T1.sum_c", "T1.explicit", "T1.frobenius"):
        want = [med(c["measurements"][f"{cid}/rhs"]) for c in cells]
        ln = [a for a in by_gid(fig, f"rhs:{cid}") if a.axes is ax][0]
        np.testing.assert_allclose(xy(ln)[:, 1], want, rtol=1e-12)
        assert all(w >= e for w, e in zip(want, err))  # sanity: the bound is above the error
    pts = [p for p in by_gid(fig, "rows:err_l2") if p.axes is ax][0]
    want = np.sort(np.concatenate([c["measurements"]["err_l2"] for c in cells]))
    np.testing.assert_allclose(np.sort(pts.get_offsets()[:, 1]), want, rtol=1e-12)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_ylabel() or fig.axes[0].get_ylabel()


def test_fig2_ordering_data(src):
    fig = drawn(2, src)
    cells = {c["config"]["order"]: c for c in cells_of(src, "ordering")}
    for order, c in cells.items():
        bar = one(fig, f"err_l2:{order}")
        assert bar.get_height() == pytest.approx(med(c["measurements"]["err_l2"]), rel=1e-12)
        bar = one(fig, f"sum_c_rel:{order}")
        m = c["measurements"]
        assert bar.get_height() == pytest.approx(m["O1.amgm/rhs"][0] / m["O1.amgm/lhs"][0], rel=1e-12)
        assert bar.get_height() >= 1 - 1e-9  # AM–GM
        np.testing.assert_allclose(xy(one(fig, f"c:{order}"))[:, 1], m["c"], rtol=1e-12)
        bound = one(fig, f"bound:{order}").get_offsets()[0, 1]
        assert bound == pytest.approx(med(m["T1.sum_c/rhs"]), rel=1e-12)


def test_fig3_stochastic_data(src):
    fig = drawn(3, src)
    kinds = {}
    for c in cells_of(src, "stochastic"):
        cfg = c["config"]
        kinds["det" if cfg["rounding"] == "nearest" else "dz" if cfg["grid"]["K"] is None else "fin"] = c
    dz, det, fin = kinds["dz"]["measurements"], kinds["det"]["measurements"], kinds["fin"]["measurements"]
    # (a) ℓ2 over (δ/2)√Σc: the fraction of trials at or above x, and the deterministic value
    norm = math.sqrt(med(dz["T2.expectation/rhs"]))
    r = dz["err_l2"] / norm
    surv = xy(one(fig, "l2:stochastic:tall"))
    np.testing.assert_allclose(surv[:, 0], np.sort(r), rtol=1e-12)
    np.testing.assert_allclose(surv[:, 1], [(r >= a).sum() / r.size for a in surv[:, 0]])
    vline = one(fig, "l2:deterministic:tall").get_xdata()[0]
    assert vline == pytest.approx(det["err_l2"][0] / det["T1.sum_c/rhs"][0], rel=1e-12)
    assert vline <= 1 + 1e-9  # T1
    texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    # what T2.expectation bounds (the mean of the squared ratio) and the observed fraction above 1
    m2 = np.mean(dz["T2.expectation/lhs"]) / med(dz["T2.expectation/rhs"])
    assert f"T2.expectation: mean {m2:.2f} ≤ 1" in texts and m2 <= 1
    assert f"above 1: {100 * np.mean(r > 1):.1f} % of {r.size} trials" in texts
    # (b) the observed fraction at the Hoeffding radius, against the allowed η
    k = int(np.sum(dz["err_linf"] >= med(dz["T2.hp.hoeffding/rhs"])))
    assert f"above the Hoeffding radius ▼: {k} of {r.size}\n(allowed: a fraction η = {100 * ETA:g} %)" in texts
    # (b) the empirical tail, δZ and finite grid jointly with no saturation
    t = xy(one(fig, "tail:dz"))
    np.testing.assert_allclose(t[:, 0], np.sort(dz["err_linf"]), rtol=1e-12)
    n = dz["err_linf"].size
    np.testing.assert_allclose(t[:, 1], [(dz["err_linf"] >= a).sum() / n for a in t[:, 0]])
    tf = xy(one(fig, "tail:finite"))
    ok = fin["saturated"] == 0
    np.testing.assert_allclose(tf[:, 1], [((fin["err_linf"] >= a) & ok).sum() / n for a in tf[:, 0]])
    # the T2 tail-bound curves from the stored v_i, one per named constant
    from theory import CONSTANTS

    v = dz["tail_v"]
    assert v.shape == (kinds["dz"]["config"]["m"],)
    for key in ("hoeffding", "pi8", "pi2"):
        a, p = xy(one(fig, f"bound:{key}")).T
        s2 = CONSTANTS[key].factor * v
        want = np.minimum(1, np.sum(2 * np.exp(-a[:, None] ** 2 / (2 * s2[None, :])), axis=1))
        np.testing.assert_allclose(p, want, rtol=1e-9)
    for cl in ("T2.hp.hoeffding", "T2.hp.pi8", "T2.hp.pi2", "T2.tail"):
        off = one(fig, f"radius:{cl}").get_offsets()[0]
        np.testing.assert_allclose(off, [med(dz[f"{cl}/rhs"]), ETA], rtol=1e-12)
    # the δZ and the finite-grid runs share data and uniforms: equal wherever nothing saturated
    np.testing.assert_allclose(fin["err_linf"][ok], dz["err_linf"][ok], rtol=1e-9)


def test_fig4_mismatch_data(src):
    fig = drawn(4, src)
    cells = cells_of(src, "mismatch")
    det = [c for c in cells if c["config"].get("rounding", "nearest") == "nearest"]

    def series(key, fn):
        cs = sorted((c for c in det if (c["config"]["algorithm"] if c["config"]["algorithm"] == "optq"
                                         else "qronos/" + c["config"]["variant"]) == key),
                    key=lambda c: c["config"]["mismatch"]["level"])
        return [c["config"]["mismatch"]["level"] for c in cs], [fn(c["measurements"]) for c in cs]

    for key, claim, sq in (("qronos/projection", "T4.projection.bound", True),
                           ("qronos/original", "T4.original.bound", True), ("optq", "T4.optq_mismatch", False)):
        x, err = series(key, lambda m: med(m["err_l2"]))
        np.testing.assert_allclose(xy(one(fig, f"err:{key}")), np.c_[x, err], rtol=1e-12)
        _, b = series(key, lambda m: med(m[f"{claim}/rhs"]))
        np.testing.assert_allclose(xy(one(fig, f"bound:{key}"))[:, 1], np.sqrt(b) if sq else b, rtol=1e-12)
    _, mis = series("optq", lambda m: med(m["T4.rho_le_mismatch/rhs"]))
    np.testing.assert_allclose(xy(one(fig, "mismatch"))[:, 1], mis, rtol=1e-12)
    # (b) the ratio Qronos / OPTQ on X̃, row by row, median per level (rows pair: same w, X, X̃)
    x, optq = series("optq", lambda m: m["err_l2"])
    for key in ("qronos/projection", "qronos/original"):
        _, q = series(key, lambda m: m["err_l2"])
        want = [med(a / b) for a, b in zip(q, optq)]
        np.testing.assert_allclose(xy(one(fig, f"ratio:{key}"))[:, 1], want, rtol=1e-12)
    for c in (c for c in cells if c["config"].get("rounding") == "stochastic"):
        key = "qronos/" + c["config"]["variant"]
        lv = c["config"]["mismatch"]["level"]
        m = c["measurements"]
        claim = "T5.projection" if key.endswith("projection") else "T5.original"
        assert one(fig, f"T5:{key}:{lv:g}").get_offsets()[0, 1] == pytest.approx(med(m[f"{claim}/rhs"]), rel=1e-12)
        assert one(fig, f"median:{key}:{lv:g}").get_ydata()[0] == pytest.approx(med(m["err_linf"]), rel=1e-12)


def test_fig4_real_layers_ratio(store_path, tmp_path):
    """(b) puts each real layer at its recorded mismatch, with the median row ratio Qronos / OPTQ on X̃."""
    import shutil

    import sqlite3

    p = tmp_path / "pairs.sqlite"
    shutil.copy(store_path, p)
    con = sqlite3.connect(p)  # the pairs below are the store's only real-LLM campaign
    with con:
        con.execute("DELETE FROM cells WHERE campaign='real-llm-test'")
        con.execute("DELETE FROM campaigns WHERE id='real-llm-test'")
    con.close()
    store = Store(p)
    rng = np.random.default_rng(5)
    base = {"model": "SmolLM2-135M-Instruct", "layer": "blk.3.attn_q", "kind": "attn_q",
            "input_stats": {"rel_mismatch": 0.2}}
    optq, qron = 1.0 + rng.random(6), None
    qron = optq * (0.5 + 0.3 * rng.random(6))
    cells = [("optq-on-xtilde", "optq", optq), ("qronos-projection", "qronos", qron)]
    cfgs = [{"llm": dict(base), "label": lab, "algorithm": alg, "kind": "attn_q"} for lab, alg, _ in cells]
    store.open_campaign("real-llm-pairs", "real-llm", {"seed": 0, "eta": ETA, "cells": [dict(c, study="real-llm")
                                                                                       for c in cfgs]}, {})
    for i, ((lab, alg, err), cfg) in enumerate(zip(cells, cfgs)):
        store.put_cell("real-llm-pairs", {"key": f"pair:{i}", "study": "real-llm", "config": cfg, "seed": i,
                                          "status": "done", "verdicts": [], "measurements": {"err_l2": err}})
    fig = drawn(4, open_source(p))
    np.testing.assert_allclose(one(fig, "llm:attn_q").get_offsets(), [[0.2, np.median(qron / optq)]], rtol=1e-12)
    assert figure_problems(fig) == []


def test_fig5_alphabet_data(src):
    fig = drawn(5, src)
    cells = cells_of(src, "alphabet")
    det = sorted((c for c in cells if c["config"].get("rounding", "nearest") == "nearest"), key=lambda c: c["config"]["N"])
    sto = sorted((c for c in cells if c["config"].get("rounding") == "stochastic"), key=lambda c: c["config"]["N"])
    Ns = [c["config"]["N"] for c in det]
    # observed K: the smallest K with every |z_t| ≤ (K + ½)δ, worst row
    k_obs = [np.max(np.ceil(c["measurements"]["z_over_delta_max"] - 0.5 - 1e-12)) for c in det]
    np.testing.assert_allclose(xy(one(fig, "K:observed:det")), np.c_[Ns, k_obs])
    m = [c["measurements"] for c in det]
    p1 = [math.ceil(np.max(x["w_over_delta_max"]) + 0.5 * x["drift_l1_max"][0] - 0.5 - 1e-12) for x in m]
    np.testing.assert_allclose(xy(one(fig, "K:P1"))[:, 1], p1)
    ms = [c["measurements"] for c in sto]
    t3 = [math.ceil(np.max(x["w_over_delta_max"]) + 0.5 * x["drift_l2_max"][0]
                    * math.sqrt(2 * math.log(2 * c["config"]["N"] / ETA)) - 1e-12) for x, c in zip(ms, sto)]
    np.testing.assert_allclose(xy(one(fig, "K:T3"))[:, 1], t3)
    # observed drift against the P1 radius (a deterministic bound: never above it)
    d = [np.max(x["drift_over_delta_max"]) for x in m]
    np.testing.assert_allclose(xy(one(fig, "drift:observed:det"))[:, 1], d, rtol=1e-12)
    r = xy(one(fig, "drift:P1"))[:, 1]
    np.testing.assert_allclose(r, [0.5 * x["drift_l1_max"][0] for x in m], rtol=1e-12)
    assert np.all(np.array(d) <= r * (1 + 1e-9) + 1e-9)
    q = [np.quantile(x["drift_over_delta_max"], 1 - ETA, method="higher") for x in ms]
    np.testing.assert_allclose(xy(one(fig, "drift:observed:sto"))[:, 1], q, rtol=1e-12)


def test_fig6_tightness_data_includes_llm_layers(src):
    fig = drawn(6, src)
    synth = src.store.cells(src.id)
    for fam in {c["config"]["family"] for c in synth}:
        for cid in ("T1.sum_c",):
            rs = [c["measurements"][f"{cid}/lhs"] / c["measurements"][f"{cid}/rhs"] for c in synth
                  if c["config"]["family"] == fam and f"{cid}/lhs" in c["measurements"]]
            if not rs:
                continue
            pts = one(fig, f"synthetic:worst:{fam}")
            assert np.isclose(pts.get_offsets()[:, 0], np.max(np.concatenate(rs)), rtol=1e-12).any()
    # the pooled median of T1.sum_c over synthetic rows
    pooled = np.concatenate([c["measurements"]["T1.sum_c/lhs"] / c["measurements"]["T1.sum_c/rhs"]
                             for c in synth if "T1.sum_c/lhs" in c["measurements"]])
    assert one(fig, "synthetic:median:T1.sum_c").get_xdata()[0] == pytest.approx(np.median(pooled), rel=1e-12)
    # real-LLM cells from the other campaign, grouped by layer type (the worst row of all its cells);
    # squared-norm claims as √ratio
    llm = src.store.cells("real-llm-test")
    for kind in {c["config"]["llm"]["kind"] for c in llm}:
        ms = [c["measurements"] for c in llm if c["config"]["llm"]["kind"] == kind]
        x = one(fig, f"llm:worst:{kind}").get_offsets()[:, 0]
        assert np.isclose(x, max(np.max(m["T1.sum_c/lhs"] / m["T1.sum_c/rhs"]) for m in ms), rtol=1e-12).any()
        assert np.isclose(x, np.sqrt(max(np.max(m["T4.projection.bound/lhs"] / m["T4.projection.bound/rhs"])
                                         for m in ms)), rtol=1e-12).any()
    assert "real-llm-test" in fig._ptq_footer and "0123456789" in fig._ptq_footer
    n = len(llm)
    assert f"{n} of {n} cells (real-LLM layers)" in fig._ptq_footer


def test_fig6_without_llm_cells(store_path, tmp_path):
    import shutil

    p = tmp_path / "nollm.sqlite"
    shutil.copy(store_path, p)
    import sqlite3

    con = sqlite3.connect(p)
    with con:
        con.execute("DELETE FROM cells WHERE campaign='real-llm-test'")
        con.execute("DELETE FROM campaigns WHERE id='real-llm-test'")
    con.close()
    s = open_source(p)
    fig = drawn(6, s)
    assert not fig.findobj(lambda a: str(a.get_gid() or "").startswith("llm:"))
    # no empty half-figure and no word about real layers: one panel, drawn from data
    assert len([ax for ax in fig.axes if ax.axison]) == 1
    texts = " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    assert "LLM" not in texts and "real" not in texts
    assert figure_problems(fig) == []
    with pytest.raises(FigureDataError, match=r"figure 9 needs a real-LLM campaign.*ptq-bounds verify --campaign real-llm"):
        drawn(9, s)


def test_fig7_lambda_recommendation_data(src):
    fig = drawn(7, src, K=None)
    cells = sorted((c for c in cells_of(src, "lambda") if c["config"]["family"] == "tall"),
                   key=lambda c: c["config"]["lam_rel"])
    lam = np.array([c["config"]["lam_rel"] for c in cells])
    bound = np.array([med(c["measurements"]["T1.sum_c/rhs"]) for c in cells])
    kt3 = np.array([np.max(c["measurements"]["w_over_delta_max"]) + 0.5 * c["measurements"]["drift_l2_max"][0]
                    * math.sqrt(2 * math.log(2 * c["config"]["N"] / ETA)) for c in cells])
    K = math.ceil(np.median(kt3))
    lines = [ln for ln in by_gid(fig, "K_t3") if np.allclose(xy(ln)[:, 1], kt3, rtol=1e-12)]
    assert lines, "K_T3(λ) of the 'tall' family is not plotted as stored"
    ax_k = lines[0].axes
    feas = kt3 <= K
    i = int(np.argmin(np.where(feas, bound, np.inf)))
    stars = [s for s in by_gid(fig, "recommended")
             if np.allclose(s.get_offsets()[0], [lam[i], bound[i]], rtol=1e-12)]
    assert stars, "the recommended λ is not the smallest stored bound among the λ meeting K"
    f = [p for p in by_gid(fig, "feasible") if p.axes is ax_k][0]
    np.testing.assert_allclose(f.get_offsets()[:, 0], lam[feas])
    # an explicit K: the largest K_T3 makes every λ feasible, so the smallest bound wins
    fig = drawn(7, src, K=int(math.ceil(np.max(kt3))))
    stars = [s.get_offsets()[0] for s in by_gid(fig, "recommended")]
    assert any(np.allclose(s, [lam[np.argmin(bound)], np.min(bound)]) for s in stars)


def test_fig9_alphabet_llm_data(src):
    """Per layer type and grid, the K that P1 and T3 need, row by row, from the stored measurements with
    the uniform forms written out (P1: ‖w‖∞/δ + ½‖B‖₁ − ½; T3 with s/δ = ½: ‖w‖∞/δ + ½‖B‖₂√(2 log(2N/η)));
    grey lines at the (2^b − 1)/2 levels per side of the 3- and 4-bit grids."""
    fig = drawn(9, src)
    llm = src.store.cells("real-llm-test")
    kinds = [k for _, k in LLM_LAYERS]
    for label, bits in LLM_LABELS:
        half = (2 ** bits - 1) / 2
        holds = {"p1": 0, "t3": 0}
        n = 0
        for c in (c for c in llm if c["config"]["label"] == label):
            m, kind = c["measurements"], c["config"]["llm"]["kind"]
            N = c["config"]["llm"]["shape"][1]
            w = m["w_over_delta_max"]
            need = {"p1": w + 0.5 * m["drift_l1_max"][0] - 0.5,
                    "t3": w + 0.5 * m["drift_l2_max"][0] * math.sqrt(2 * math.log(2 * N / ETA))}
            for cond, dx in (("p1", -0.2), ("t3", 0.2)):
                gid = f"{cond}:{label}:{kind}"
                med_line = one(fig, f"median:{gid}")
                np.testing.assert_allclose(med_line.get_ydata(), np.median(need[cond]), rtol=1e-12)
                assert np.mean(med_line.get_xdata()) == pytest.approx(kinds.index(kind) + dx)
                np.testing.assert_allclose(one(fig, f"max:{gid}").get_ydata(), np.max(need[cond]), rtol=1e-12)
                np.testing.assert_allclose(one(fig, f"min:{gid}").get_ydata(), np.min(need[cond]), rtol=1e-12)
                holds[cond] += int(np.sum(need[cond] <= half))
            assert one(fig, f"w:{label}:{kind}").get_offsets()[0, 1] == pytest.approx(np.median(w), rel=1e-12)
            n += w.size
        ax = one(fig, f"median:p1:{label}:attn_q").axes
        assert ax.get_yscale() == "log"
        for b in (3, 4):  # both grids' lines in every panel, in that panel's step
            line = one(fig, f"grid:{b}bit:{label}")
            assert line.axes is ax and np.allclose(line.get_ydata(), (2 ** b - 1) / 2)
        texts = " ".join(t.get_text() for t in ax.texts)
        assert f"K ≤ {half:g} (this grid) on {holds['p1']:,} of {n:,} rows for P1, {holds['t3']:,} for T3" in texts
        bits_axis = ax.child_axes[0]  # the right axis: K read as log2(2K + 1) bits
        assert {"3", "4"} <= {t.get_text() for t in bits_axis.get_yticklabels()}
        assert [t.get_text() for t in ax.get_xticklabels()] == kinds


# ------------------------------------------------------------------------------------------------
# errors name the command that produces what is missing
# ------------------------------------------------------------------------------------------------
def test_missing_store_names_the_command(tmp_path):
    with pytest.raises(FigureDataError, match="ptq-bounds verify --campaign default"):
        open_source(tmp_path / "none.sqlite")
    assert not (tmp_path / "none.sqlite").exists()  # not created as a side effect


def test_missing_campaign_and_study(store_path, tmp_path):
    with pytest.raises(FigureDataError, match="no campaign 'nope'"):
        open_source(store_path, "nope")
    s = open_source(store_path, "real-llm")  # a campaign without the synthetic studies
    with pytest.raises(FigureDataError, match=r"'lambda' study.*ptq-bounds verify --campaign default"):
        drawn(1, s)
    fig = drawn(6, s)  # figure 6 works on the real-LLM campaign alone
    assert fig.findobj(lambda a: str(a.get_gid() or "").startswith("llm:worst:"))


def test_command_draws_selected_figures_and_reports_missing(store_path, tmp_path, capsys):
    from verify.cli import main

    out = tmp_path / "figs"
    rc = main(["figures", "--store", str(store_path), "--out", str(out), "--only", "1,6", "--formats", "png"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["fig1_lambda.png", "fig6_tightness.png"]
    rc = main(["figures", "--store", str(store_path), "--campaign", "real-llm", "--out", str(out), "--only", "2,6",
               "--formats", "png"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "figure 2: not drawn" in err and "ptq-bounds verify --campaign default" in err
    assert main(["figures", "--store", str(tmp_path / "absent.sqlite")]) == 2
    assert "no result store" in capsys.readouterr().err
    assert main(["figures", "--store", str(store_path), "--only", "99"]) == 2


def test_figures_read_the_store_only():
    """figures → verify (the store) and theory (constants, claim text); never the algorithms or the
    campaign runner (a figure must not recompute a run)."""
    banned = {"algorithms", "verify.campaign", "verify.runner", "verify.executor", "verify.data"}
    for path in sorted((ROOT / "figures").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert not any(name == b or name.startswith(b + ".") for b in banned), f"{path.name} imports {name}"


# ------------------------------------------------------------------------------------------------
# what a reader sees: no empty panel, short legends, one colour per meaning, rendered math,
# readable log ticks, reference lines above the data
# ------------------------------------------------------------------------------------------------
import re  # noqa: E402

from matplotlib.collections import Collection, PathCollection  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.legend import Legend  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.markers import MarkerStyle  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from matplotlib.transforms import BlendedAffine2D, BlendedGenericTransform  # noqa: E402

#: the most entries one legend may have
MAX_LEGEND = 8
#: the smallest font size, in points at the figure's own size (the size the PNG is written at)
MIN_FONT_PT = 6.0
_MATH = re.compile(r"(?<!\\)\$.*?(?<!\\)\$")


def _opaque(colours) -> set:
    keep = set()
    for c in colours:
        if isinstance(c, str) and c.lower() == "none":
            continue
        rgba = matplotlib.colors.to_rgba(c)
        if rgba[3] > 0:
            keep.add(to_hex(rgba[:3]))
    return keep


def _hexes(artist, *, meaning: bool = False) -> set:
    """The opaque colours an artist is drawn in. ``meaning``: only the colour that carries its meaning
    (a line's colour, a marker's or patch's fill; the edge only where the fill is white or absent)."""
    if isinstance(artist, Line2D):
        line = _opaque([artist.get_color()]) if artist.get_linestyle() not in ("None", "none", "") else set()
        marked = artist.get_marker() not in ("None", "none", "", None)
        has_face = marked and MarkerStyle(artist.get_marker()).is_filled()  # "_", "+", "x" have no face
        face_all = _opaque([artist.get_markerfacecolor()]) if has_face else set()
        face = face_all - {"#ffffff"}
        edge = _opaque([artist.get_markeredgecolor()]) if marked else set()
        return ((line | face) or edge) if meaning else (line | face_all | edge)  # only what is drawn
    if isinstance(artist, Collection):
        face, edge = _opaque(artist.get_facecolors()), _opaque(artist.get_edgecolors())
    elif isinstance(artist, Patch):
        face, edge = _opaque([artist.get_facecolor()]), _opaque([artist.get_edgecolor()])
    elif isinstance(artist, Text):
        return _opaque([artist.get_color()])
    else:
        return set()
    return ((face - {"#ffffff"}) or edge) if meaning else (face | edge)


def _is_ref(artist, ax) -> bool:
    """axhline/axvline/axvspan: drawn in a blended transform, not in data coordinates."""
    tr = artist.get_data_transform() if isinstance(artist, Patch) else artist.get_transform()
    return isinstance(tr, (BlendedGenericTransform, BlendedAffine2D)) and not isinstance(artist, Text)


def _data_artists(ax) -> list:
    out = []
    for a in list(ax.lines) + list(ax.collections) + list(ax.patches):
        if not a.get_visible() or _is_ref(a, ax):
            continue
        if isinstance(a, Line2D):
            d = np.asarray(a.get_xydata(), dtype=float)
            if d.size and np.isfinite(d).all(axis=1).any():
                out.append(a)
        elif isinstance(a, Collection):
            if len(a.get_paths()) or len(a.get_offsets()):
                out.append(a)
        elif isinstance(a, Patch) and not (hasattr(a, "get_height") and a.get_height() == 0):
            out.append(a)
    return out


def figure_problems(fig, *, max_legend: int = MAX_LEGEND) -> list:
    """What a reader of ``fig`` would stumble on (an empty list when nothing): the figure is drawn
    first, so mathtext that does not parse raises here."""
    from figures._style import COLORS, MEANING_WORDS, NEUTRAL

    fig.canvas.draw()
    meaning_of = {to_hex(c): m for m, c in COLORS.items()}
    allowed = set(meaning_of) | {to_hex(c) for c in NEUTRAL}
    bad = []
    for i, ax in enumerate(fig.axes):
        if not ax.axison:
            continue
        name = f"axes {i} ({ax.get_title() or 'untitled'!r})"
        data = _data_artists(ax)
        if not data:
            bad.append(f"{name}: empty panel (no plotted data)")
        for a in list(ax.lines) + list(ax.collections) + list(ax.patches) + list(ax.texts):
            for h in _hexes(a) - allowed:
                bad.append(f"{name}: colour {h} is in no meaning of figures._style.COLORS")
        # lines, areas and boxes could hide a reference line; point markers (a radius on the η line,
        # the recommended λ) are meant to sit on top of it
        top = max((a.get_zorder() for a in data if not isinstance(a, PathCollection)), default=0)
        for a in ax.lines + ax.patches:
            if _is_ref(a, ax) and isinstance(a, Line2D) and a.get_zorder() < top:
                bad.append(f"{name}: reference line at zorder {a.get_zorder()} is under the data (zorder {top})")
        for t in ax.get_xticklabels() + ax.get_yticklabels():
            s = t.get_text()
            if t.get_visible() and ("\\times" in s or "×10" in s or "10^{" in s):
                bad.append(f"{name}: tick label {s!r} is not a plain number")
    renderer = fig.canvas.get_renderer()
    fb = fig.bbox
    ticks = {id(lab) for ax in fig.axes for axis in (ax.xaxis, ax.yaxis)
             for tk in axis.get_major_ticks() + axis.get_minor_ticks() for lab in (tk.label1, tk.label2)}
    for t in fig.findobj(Text):
        if t.get_visible() and t.get_text().strip() and id(t) not in ticks:  # ticks outside the view are not drawn
            e = t.get_window_extent(renderer)
            if e.x0 < fb.x0 - 2 or e.x1 > fb.x1 + 2 or e.y0 < fb.y0 - 2 or e.y1 > fb.y1 + 2:
                bad.append(f"text {t.get_text()[:60]!r} runs off the figure")
    # titles and axis labels of different panels must not overlap one another
    heads = [(i, t) for i, ax in enumerate(fig.axes) if ax.axison
             for t in (ax.title, ax.xaxis.label, ax.yaxis.label) if t.get_visible() and t.get_text().strip()]
    boxes = [(i, t, t.get_window_extent(renderer)) for i, t in heads]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (i, t, e), (j, u, f) = boxes[a], boxes[b]
            if i != j and e.overlaps(f):
                bad.append(f"text {t.get_text()[:40]!r} overlaps {u.get_text()[:40]!r}")
    seen: dict = {}
    for leg in fig.findobj(Legend):
        texts = [t.get_text() for t in leg.texts]
        if len(texts) > max_legend:
            bad.append(f"legend with {len(texts)} entries (more than {max_legend}): {texts}")
        for h, lab in zip(leg.legend_handles, texts):
            for hx in _hexes(h, meaning=True):
                m = meaning_of.get(hx)
                if m is None:
                    continue
                seen.setdefault(hx, set()).add(lab)
                if not any(w in lab for w in MEANING_WORDS[m]):
                    bad.append(f"colour {hx} means {m!r} but the legend entry {lab!r} says something else")
    for t in fig.findobj(Text):
        s = t.get_text()
        if not s or not t.get_visible():
            continue
        if t.get_fontsize() < MIN_FONT_PT:
            bad.append(f"text {s[:40]!r} at {t.get_fontsize():g} pt (under {MIN_FONT_PT} pt)")
        if s.count("$") - s.count("\\$") - 2 * len(_MATH.findall(s)) != 0:
            bad.append(f"text {s!r}: unbalanced $")
        rest = _MATH.sub("", s)
        for tok in ("_{", "^{"):
            if tok in rest:
                bad.append(f"text {s!r}: raw TeX {tok!r} outside $…$")
        if re.search(r"\\[A-Za-z]+", rest):
            bad.append(f"text {s!r}: a TeX command outside $…$")
    return bad


def test_figure_checks_catch_each_problem():
    """The checks themselves: a figure with each problem is flagged, a clean one is not."""
    from figures._style import COLORS, new_figure

    with style():
        fig = new_figure(4, 3)
        ax1, ax2 = fig.subplots(1, 2)
        for k in range(MAX_LEGEND + 1):  # one legend entry too many
            ax1.plot([0, 1], [k, k + 1], color="#333333", label=f"series {k}")
        ax1.legend()
        ax1.plot([0, 1], [0, 1], color=COLORS["hoeffding"], label="dead")  # blue for a family
        ax1.legend()
        ax1.set_xlabel(r"max_t‖B_{:,t}‖₁")  # raw TeX
        ax1.axhline(0.5, color="#666666", zorder=1)  # reference under the data
        ax2.set_title("(b) nothing here")  # an empty panel
        ax2.set_ylabel("too small to read", fontsize=4)
        ax1.set_title("a title much too long for its panel, over its neighbour's", in_layout=False)
        ax2.text(0.5, 0.5, "a note that runs past the right edge", transform=ax2.transAxes, in_layout=False)
    msgs = figure_problems(fig, max_legend=MAX_LEGEND)
    joined = "\n".join(msgs)
    assert "more than 8" in joined
    assert "means 'hoeffding' but the legend entry 'dead'" in joined
    assert "raw TeX '_{'" in joined
    assert "empty panel" in joined and "(b) nothing here" in joined
    assert "reference line at zorder 1" in joined
    assert "runs off the figure" in joined
    assert "'too small to read' at 4 pt" in joined
    assert "overlaps '(b) nothing here'" in joined
    with style():
        fig = new_figure(4, 3)
        ax = fig.subplots()
        ax.plot([1, 10, 100], [1, 2, 3], color=COLORS["hoeffding"], label=r"Hoeffding, $s^2 = \delta^2/4$")
        ax.set_xscale("log")
        from figures._style import plain_log_ticks, ref_line

        plain_log_ticks(ax)
        ref_line(ax, 10)
        ax.set_xlabel(r"$\max_t \|B_{:,t}\|_1$")
        ax.legend()
    assert figure_problems(fig) == []


@pytest.mark.parametrize("number", list(FIGURES))
def test_figure_reads_at_its_printed_size(number, src):
    fig = drawn(number, src)
    assert figure_problems(fig) == []


def test_colour_means_one_thing_in_all_figures(src):
    """Across all figures together, a colour of the meaning map labels only entries of its meaning."""
    from figures._style import COLORS

    hexes = [to_hex(c) for c in COLORS.values()]
    assert len(set(hexes)) == len(hexes), "two meanings share a colour"
    labels: dict = {}
    for n in FIGURES:
        fig = drawn(n, src)
        for leg in fig.findobj(Legend):
            for h, t in zip(leg.legend_handles, leg.texts):
                for hx in _hexes(h, meaning=True):
                    labels.setdefault(hx, []).append(t.get_text())
    assert figure_problems_across(labels) == []


def figure_problems_across(labels: dict) -> list:
    from figures._style import COLORS, MEANING_WORDS

    meaning_of = {to_hex(c): m for m, c in COLORS.items()}
    return [f"{hx} ({meaning_of[hx]}) labels {lab!r}" for hx, labs in labels.items() if hx in meaning_of
            for lab in labs if not any(w in lab for w in MEANING_WORDS[meaning_of[hx]])]
