"""paper_checks.md is generated from the claim registry and the committed campaign summaries;
the committed file must equal a fresh rendering (regenerate with `ptq-bounds paper-checks`)."""

from __future__ import annotations

import json
from pathlib import Path

import theory
from verify.paper_checks import DEFAULT_SUMMARIES, evidence_from_summaries, render

ROOT = Path(__file__).resolve().parents[1]


def _summaries():
    return [ROOT / p for p in DEFAULT_SUMMARIES if (ROOT / p).exists()]


def test_paper_checks_is_not_stale():
    committed = (ROOT / "paper_checks.md").read_text()
    assert committed == render(_summaries()), "paper_checks.md is stale: run `ptq-bounds paper-checks`"


def test_committed_default_campaign_covers_every_claim_without_violation():
    s = json.loads((ROOT / "results" / "default-summary.json").read_text())
    assert s["cells"] == s["cells_expected"] and not s["errors"]
    assert s["violated"] == [] and s["not_exercised"] == []
    assert set(s["claims"]) == set(theory.CLAIMS) | set(theory.HYPOTHESES)
    assert all(s["claims"][h]["status"] == "consistent" for h in theory.HYPOTHESES)
    assert s.get("insufficient", []) == []


def test_page_is_honest_about_provenance_and_constants():
    text = (ROOT / "paper_checks.md").read_text()
    assert "not available" in text
    assert "conservative" in text and "sharp" in text
    ev = evidence_from_summaries([json.loads(p.read_text()) for p in _summaries()])
    for cid in theory.CLAIMS:
        assert cid in text
        assert ev[cid]["status"] == "consistent", cid
