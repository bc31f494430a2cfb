"""render_paper_checks: deterministic Markdown generated from the registry and the evidence."""

from __future__ import annotations

import re

import pytest

from theory import CLAIMS
from theory.report import render_paper_checks

EVIDENCE = {
    "T2.hp.hoeffding": {"runs": 12, "trials": 4800, "violations": 0, "out_of_scope": 30, "worst_ratio": 0.61,
                        "min_p_value": 0.42, "sources": ["mc/b", "mc/a"]},
    "I1": {"runs": 40, "trials": 900, "violations": 0, "out_of_scope": 3, "worst_ratio": 1.0000001},
    "T1.sum_c": {"runs": 5, "violations": 1, "worst_ratio": 1.2},
}


def test_output_is_deterministic():
    a = render_paper_checks(EVIDENCE)
    b = render_paper_checks(dict(reversed(list(EVIDENCE.items()))))
    assert a == b == render_paper_checks(EVIDENCE)
    assert a.endswith("\n")
    assert not re.search(r"20\d\d-\d\d-\d\d|\d\d:\d\d:\d\d", a)  # no timestamps
    assert render_paper_checks() == render_paper_checks({})


def test_page_states_provenance_and_constants_honestly():
    page = render_paper_checks()
    assert "paper's full text was not available" in page
    assert "not quotations" in page and "not the paper's theorem numbers" in page
    assert "sharpest" in page and "conservative" in page
    assert "convex order πδ²/8" in page and "hoeffding δ²/4 (sharpest)" in page
    for cid, cl in CLAIMS.items():
        assert f"### {cid}\n" in page
        assert cl.provenance in page
    assert page.count("not exercised") >= len(CLAIMS)


def test_evidence_is_shown_and_status_follows_it():
    page = render_paper_checks(EVIDENCE)
    row = [l for l in page.splitlines() if l.startswith("| [T2.hp.hoeffding]")][0]
    assert "| consistent | 12 | 4800 | 0 | 30 | 0.61 | 0.42 |" in row
    assert [l for l in page.splitlines() if l.startswith("| [T1.sum_c]")][0].count("violated") == 1
    assert "source: mc/a" in page and page.index("source: mc/a") < page.index("source: mc/b")
    assert [l for l in page.splitlines() if l.startswith("| [T3.alphabet]")][0].count("not exercised") == 1


def test_stale_evidence_is_rejected():
    with pytest.raises(ValueError, match="unknown claim"):
        render_paper_checks({"T9": {"runs": 1}})
    with pytest.raises(ValueError, match="unknown keys"):
        render_paper_checks({"I1": {"runz": 1}})


def test_aggregate_evidence_from_verdicts():
    import numpy as np

    import algorithms as A
    import theory as T
    from theory.report import aggregate_evidence

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 5))
    verdicts = []
    for seed in range(3):
        W = np.random.default_rng(seed).standard_normal((4, 5))
        run = T.Run.from_result(A.optq(W, X, grid=A.Grid.gptq(4), lam=0.1), X)
        verdicts += list(T.check_all(run, ["I1", "T2.hp.hoeffding"]).values())
    ev = aggregate_evidence([v.to_dict() for v in verdicts], source="unit")
    assert ev["I1"]["runs"] == 3 and ev["I1"]["trials"] == 12 and ev["I1"]["status"] == "consistent"
    assert ev["T2.hp.hoeffding"]["status"] == "not exercised" and ev["T2.hp.hoeffding"]["out_of_scope"] == 12
    assert aggregate_evidence(verdicts) == {k: {kk: vv for kk, vv in v.items() if kk != "sources"} for k, v in ev.items()}
    page = render_paper_checks(ev)
    assert "| [I1](#i1) | identity | consistent | 3 | 12 | 0 | 0 |" in page
