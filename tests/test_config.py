"""Typed cell configurations (verify.config): a misspelt key or a wrong type is an error at the
moment the cell is made; the serialized form, and so every stored key, is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verify.campaign import Cell
from verify.campaigns import CAMPAIGNS, get_campaign
from verify.config import CellConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(CAMPAIGNS))
def test_every_builtin_cell_round_trips(name):
    for cell in get_campaign(name, 0).cells:
        typed = cell.typed
        assert typed.to_dict() == cell.config
        assert json.dumps(typed.to_dict(), sort_keys=True) == json.dumps(cell.config, sort_keys=True)


def test_campaign_ids_are_those_of_the_committed_results():
    """The default campaign's id (a hash of its cells' keys) is the one its committed summary names."""
    summary = json.loads((ROOT / "results" / "default-summary.json").read_text())
    assert get_campaign("default", 0).id == summary["campaign"]


@pytest.mark.parametrize("config,needle", [
    ({"famly": "tall"}, "did you mean 'family'"),
    ({"family": "tall", "w_scal": 2.0}, "did you mean 'w_scale'"),
    ({"family": "talll"}, "family must be one of"),
    ({"algorithm": "gptq"}, "algorithm must be one of"),
    ({"n": 0}, "n must be an integer ≥ 1"),
    ({"n": True}, "n must be an integer"),
    ({"lam_rel": -1.0}, "lam_rel must be a positive number"),
    ({"grid": {"kind": "gptq", "bits": 4, "statc": True}}, "did you mean 'static'"),
    ({"grid": {"kind": "uniform"}}, "grid kind must be one of"),
    ({"grid": {"kind": "symmetric"}}, "delta_rel"),
    ({"mismatch": {"kind": "noise", "levl": 0.1}}, "mismatch must be"),
])
def test_bad_configurations_are_refused(config, needle):
    with pytest.raises(ValueError, match=needle):
        CellConfig.from_dict(config)
    with pytest.raises(ValueError, match=needle):
        Cell("families", config)


def test_typed_fields():
    c = Cell("families", {"family": "dead", "m": 40, "N": 8, "n": 2, "algorithm": "optq",
                          "grid": {"kind": "gptq", "bits": 4}, "claims": ["T1.sum_c"]}).typed
    assert (c.family, c.m, c.N, c.n, c.algorithm, c.claims) == ("dead", 40, 8, 2, "optq", ("T1.sum_c",))
    assert c.order is None and c.given[0] == "family"


def test_defaults_live_in_one_place():
    """Every reader takes a left-out key's value from verify.defaults; a key without a default (or a
    misspelt one) is an error, never None."""
    from verify.defaults import DEFAULTS, setting

    assert setting({}, "order") == "natural" and setting({"order": "decreasing"}, "order") == "decreasing"
    assert setting({"cond": None}, "cond") == DEFAULTS["cond"]
    with pytest.raises(KeyError, match="has no default"):
        setting({}, "ordr")
    assert set(DEFAULTS) <= set(CellConfig.keys())
