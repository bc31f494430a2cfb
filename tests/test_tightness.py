"""The tightness search (verify/tightness.py, ``ptq-bounds tightness``): every committed best case is
replayed, deterministic ones decided in exact arithmetic, so that a later change that breaks a bound
on a known extremal case is caught; the command's arguments and outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from verify import tightness as T

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "tightness"
SUMMARY = ROOT / "results" / "tightness.json"


def _summary():
    if not SUMMARY.is_file():
        pytest.fail("results/tightness.json is missing: run `ptq-bounds tightness` and commit its output")
    return json.loads(SUMMARY.read_text())


def test_summary_covers_every_searchable_claim():
    s = _summary()
    assert set(s["claims"]) == set(T.TARGETS)
    for cid, r in s["claims"].items():
        assert (FOLDER / f"{cid.replace('.', '_')}.npz").is_file(), cid
        assert r["classification"]["class"] != "violated", (cid, r["classification"])


@pytest.mark.parametrize("claim", sorted(T.TARGETS))
def test_replay_best_case(claim):
    """The bound still holds on its best-found case; the deterministic ratio is reproduced exactly."""
    case, cfg = T.load_case(FOLDER, claim)
    target = T.TARGETS[claim]
    rep = T.replay_case(claim, case, trials=2000)
    assert rep["float"]["status"] in ("consistent", "insufficient evidence"), rep["float"]
    if target.stochastic:
        assert rep["float"]["status"] == "consistent", rep["float"]  # 2000 trials have the power
        if target.measure == "quantile":
            # (1 − p)-quantile of lhs/bound ≤ 1 ⇔ the empirical exceedance frequency ≤ p (up to ties)
            assert rep["float"]["ratio"] <= 1.0
        return
    # deterministic: the float ratio recorded is the one the checker computes now
    assert math.isclose(rep["float"]["ratio"], cfg["best_ratio"], rel_tol=1e-12, abs_tol=0.0)
    cert = rep["certificate"]
    assert claim in T.EX.CERTIFIABLE
    assert cert["status"] == "holds", cert  # decided in exact arithmetic: no tolerance
    assert cert["lhs"] == cfg["certificate"]["lhs"] and cert["rhs"] == cfg["certificate"]["rhs"]


def test_certificates_recorded_for_every_certifiable_best_case():
    s = _summary()
    for cid, r in s["claims"].items():
        if T.TARGETS[cid].stochastic:
            continue
        assert r["certificate"]["status"] == "holds", cid


def test_decode_and_bounds_agree():
    for t in T.TARGETS.values():
        b = T.bounds(t, 3, 2)
        th = np.array([(lo + hi) / 2 for lo, hi in b])
        case = T.decode(t, th, 3, 2)
        assert case["X"].shape == (2, 3) and case["w"].shape == (3,)
        assert (case["X_tilde"] is not None) == t.mismatched
    with pytest.raises(ValueError, match="theta"):
        T.decode(T.TARGETS["T1.sum_c"], np.zeros(3), 3, 2)


def test_check_claims_names_the_option():
    assert T.check_claims(["T1.sum_c"]) == ["T1.sum_c"]
    assert "T2.hp.pi8" in T.check_claims(["T2.hp"])
    with pytest.raises(ValueError, match="--claims: unknown claim"):
        T.check_claims(["T9"])
    with pytest.raises(ValueError, match="--claims: I1 is not searched"):
        T.check_claims(["I1"])


def test_search_finds_the_attained_t1_constant_and_certifies_it():
    """A small search: the reference family attains T1.sum_c exactly; the search itself gets close."""
    r = T.search_claim("T1.sum_c", budget=60, sizes=((1, 1), (2, 2)), seed=1)
    assert r["certificate"]["status"] == "holds"
    assert r["best_ratio"] == pytest.approx(1.0, abs=1e-12)
    assert r["search_ratio"] > 0.8


def test_cli_small_run_and_bad_arguments(tmp_path, capsys):
    from verify.cli import main

    out = tmp_path / "tt"
    store = tmp_path / "store.sqlite"
    argv = ["tightness", "--claims", "T1.frobenius,T2.expectation", "--budget", "24", "--sizes", "1x1,2x2",
            "--final-trials", "500", "--out", str(out), "--no-progress", "--store", str(store)]
    rc = main(argv)
    assert rc == 0
    assert (out / "T1_frobenius.npz").is_file() and (out / "T2_expectation.json").is_file()
    s = json.loads((tmp_path / "tt.json").read_text())
    assert set(s["claims"]) == {"T1.frobenius", "T2.expectation"}
    # recorded in the result store: one campaign, one cell per claim with its best ratio
    from verify.store import Store

    st = Store(store)
    (camp,) = [c for c in st.campaigns() if c["name"] == "tightness"]
    rows = {v["claim"]: v for v in st.verdict_rows(camp["id"])}
    assert set(rows) == {"T1.frobenius", "T2.expectation"}
    assert rows["T1.frobenius"]["worst_ratio"] == pytest.approx(s["claims"]["T1.frobenius"]["best_ratio"])
    assert main(argv) == 0 and len(st.verdict_rows(camp["id"])) == 2  # stored once
    assert (tmp_path / "tt.md").read_text().startswith("# Tightness search")
    capsys.readouterr()
    assert main(["tightness", "--claims", "T9.nope", "--no-save"]) == 2
    assert "--claims" in capsys.readouterr().err
    assert main(["tightness", "--budget", "3", "--no-save"]) == 2
    assert "--budget" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["tightness", "--sizes", "2by2"])
    assert e.value.code == 2
    assert "NxM" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["tightness", "--claims", "T1.sum_c", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["tightness", "--claims", "T1.sum_c", "--out", str(tmp_path / "o2"),
                 "--store", str(tmp_path / "file" / "s.sqlite")]) == 2
    assert "--store" in capsys.readouterr().err


class _NoCells:
    """A stand-in for a store source with no campaign cells (the figure must still draw the search results)."""

    id = "none"

    def cells(self, study=None):
        return []

    def llm_cells(self):
        return [], []

    def footer(self, cells, what="", extra_campaigns=()):
        return "data: no campaign"


def test_fig8_plots_the_committed_best_ratios():
    pytest.importorskip("matplotlib")
    from figures import FIGURES
    from figures import fig8_tightness_search as F8
    from figures._style import style

    assert FIGURES[8] == "figures.fig8_tightness_search"
    s = _summary()
    with style():
        fig = F8.draw(_NoCells(), s)
    ax = fig.axes[0]
    seen = {}
    for art in ax.collections:
        gid = art.get_gid() or ""
        if gid.startswith("best:"):
            seen[gid[5:]] = float(art.get_offsets()[0][0])
    for cid, r in s["claims"].items():
        if r.get("best_ratio"):
            want = math.sqrt(r["best_ratio"]) if cid in F8.SQUARED else r["best_ratio"]
            assert seen[cid] == pytest.approx(want, rel=1e-12), cid
    leg = ax.get_legend()
    assert leg is not None and len(leg.get_texts()) <= 8
    labels = [t.get_text() for t in ax.get_yticklabels()] + [t.get_text() for t in leg.get_texts()]
    labels += [ax.get_xlabel(), ax.get_title(), fig._suptitle.get_text()]
    assert not any("\\" in t or "{" in t for t in labels), labels  # no raw TeX


@pytest.mark.parametrize("N", [2, 3, 5])
def test_drift_bound_family_matches_its_closed_form(N):
    """T3.drift_bound on identical columns, λ = u‖x‖²: the ratio is Σ_{k=1}^{N−1} u/(u+k)² (derived by hand:
    every ridge vector has entries ‖x‖²/(λ + ‖x‖²k)), checked by the checker in float64 and exactly."""
    from fractions import Fraction

    u = 1.25
    case = {"X": np.full((1, N), 2.0), "X_tilde": None, "w": np.zeros(N), "lam": u * 4.0}
    t = T.TARGETS["T3.drift_bound"]
    want = sum(Fraction(5, 4) / (Fraction(5, 4) + k) ** 2 for k in range(1, N))
    assert T.evaluate(t, case)["ratio"] == pytest.approx(float(want), rel=1e-12)
    cert = T.certify_case(t, case)
    assert cert["status"] == "holds"
    lhs, rhs = (Fraction(cert[k]) for k in ("lhs", "rhs"))
    assert lhs / rhs == want  # exactly
