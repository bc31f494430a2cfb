"""Reading the result store for the figures (the store only: nothing is recomputed here).

:func:`open_source` opens a store and selects a campaign; :class:`Source` hands out its finished
cells by study, the real-LLM cells of the store (figures 4, 6 and 9) and the provenance footer. Missing
stores, campaigns, studies or measurements raise :class:`FigureDataError`, whose message names
the command that produces what is missing.
"""

from __future__ import annotations

import datetime as _dt
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from verify.sources import describe, source_of
from verify.store import Store

__all__ = ["FigureDataError", "Source", "open_source", "verify_command", "ratio", "claim_arrays", "meas",
           "group_of", "llm_label", "llm_parts", "verdict", "is_llm", "eta_of", "DEFAULT_STORE"]

#: where ``ptq-bounds verify`` writes its store by default
DEFAULT_STORE = "ptq-results/store.sqlite"


class FigureDataError(RuntimeError):
    """What a figure needs is not in the store (the message says which command produces it)."""


def verify_command(campaign: str = "default", store=None) -> str:
    """The command that fills ``store`` with ``campaign``."""
    if store is None or str(store) == DEFAULT_STORE:
        return f"ptq-bounds verify --campaign {campaign}"
    return f"ptq-bounds verify --campaign {campaign} --store {store}"


@dataclass
class Source:
    """A store with a selected campaign; cells are loaded once and cached."""

    store: Store
    path: Path
    campaign: dict
    _cells: dict = field(default_factory=dict, repr=False)
    _extra: list | None = field(default=None, repr=False)

    # -- cells ----------------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.campaign["id"]

    @property
    def eta(self) -> float:
        return eta_of(self.campaign)

    def cells(self, study: str | None = None) -> list:
        """The finished (``status == "done"``) cells of the campaign, optionally of one study."""
        key = study or "*"
        if key not in self._cells:
            self._cells[key] = [c for c in self.store.cells(self.id, study=study) if c["status"] == "done"]
        return self._cells[key]

    def study(self, study: str, figure: str) -> list:
        """The done cells of ``study``, or :class:`FigureDataError` naming the command to run."""
        cells = self.cells(study)
        if cells:
            return cells
        names = {c.get("study") for c in self.campaign["config"].get("cells", [])}
        if study in names:
            why = (f"campaign {self.id} defines study {study!r} but none of its cells has finished; "
                   f"finish it with `{verify_command(self.campaign['name'], self._store_arg)}`")
        else:
            why = (f"campaign {self.id} ({self.campaign['name']!r}) has no study {study!r}; "
                   f"run `{verify_command('default', self._store_arg)}` and pass --campaign default")
        raise FigureDataError(f"{figure} needs the {study!r} study: {why}")

    def config_order(self, study: str | None, key: str) -> list:
        """The distinct values of configuration ``key`` in the order the campaign lists its cells
        (optionally of one study): figures lay families, orders, … out in the campaign's order."""
        vals = [c.get(key) for c in self.campaign["config"].get("cells", [])
                if isinstance(c, dict) and (study is None or c.get("study") == study)]
        return list(dict.fromkeys(v for v in vals if v is not None))

    def ordered(self, values, study: str | None, key: str) -> list:
        """``values`` sorted by :meth:`config_order` (unknown values last, in their given order)."""
        rank = {v: i for i, v in enumerate(self.config_order(study, key))}
        vals = list(dict.fromkeys(values))
        return sorted(vals, key=lambda v: (rank.get(v, len(rank)), vals.index(v)))

    @property
    def _store_arg(self):
        return str(self.path) if str(self.path) != DEFAULT_STORE else None

    def llm_campaigns(self) -> list:
        """The real-LLM campaign to show beside the selected one: among the other campaigns whose cells
        are real-LLM layers (configuration with ``llm``; ``real-llm``, ``real-llm-full``, …), the one
        with the most finished cells, the latest on a tie (one only, so no layer is counted twice)."""
        best, best_n = None, 0
        for c in self.store.campaigns():  # ordered by creation
            if c["id"] == self.id:
                continue
            cfg_cells = c["config"].get("cells", [])
            if not (any(isinstance(x, dict) and "llm" in x for x in cfg_cells) or "llm" in c["name"]):
                continue
            n = len(self.store.done_keys(c["id"]))
            if n and n >= best_n:
                best, best_n = c, n
        return [best] if best is not None else []

    def llm_cells(self) -> tuple[list, list]:
        """``(cells, campaigns)``: the done real-LLM cells of the selected campaign and of the latest
        real-LLM campaign(s) in the store."""
        if self._extra is None:
            cells = [c for c in self.cells() if is_llm(c)]
            camps = [self.campaign] if cells else []
            for camp in self.llm_campaigns():
                more = [c for c in self.store.cells(camp["id"]) if c["status"] == "done" and is_llm(c)]
                for c in more:
                    c["_campaign"] = camp["id"]
                if more:
                    cells += more
                    camps.append(camp)
            self._extra = [cells, camps]
        return self._extra[0], self._extra[1]

    # -- provenance -----------------------------------------------------------------------------
    def footer(self, cells, *, what: str = "", extra_campaigns=(), skip_unused: bool = False) -> str:
        """``campaign … (seed …) · code <commit> · n of N cells … · store …``. ``skip_unused``: leave
        the selected campaign out when none of ``cells`` is its own and another campaign is named
        (a figure drawn from the real-LLM campaign only)."""
        n = sum(1 for c in cells if _in(c, self.campaign, self))
        others = [camp for camp in extra_campaigns if camp["id"] != self.id]
        parts = [] if skip_unused and n == 0 and others else [_describe(self.campaign, n, what)]
        for camp in others:
            parts.append(_describe(camp, sum(1 for c in cells if _in(c, camp, self)), "real-LLM layers"))
        parts[-1] += f" | store {self.path.name}"
        return "data: " + "\n      ".join(parts)  # one line per campaign


def _in(cell, camp, src) -> bool:
    # a cell belongs to the selected campaign unless it came from another one (real-LLM cells)
    own = cell.get("_campaign", src.id)
    return own == camp["id"]


def _describe(camp: dict, n: int, what: str) -> str:
    meta = camp.get("meta") or {}
    commit = (meta.get("git_commit") or "unknown")[:10]
    dirty = " (+uncommitted changes)" if meta.get("git_dirty") else ""
    seed = camp["config"].get("seed", "?")
    total = len(camp["config"].get("cells", []))
    when = _dt.datetime.fromtimestamp(camp.get("created", 0), tz=_dt.timezone.utc).strftime("%Y-%m-%d")
    scope = f" ({what})" if what else ""
    return (f"campaign {camp['id']}, seed {seed}, code {commit}{dirty}, {when}: "
            f"{n} of {total} cells{scope}")


def open_source(store=None, campaign: str | None = None) -> Source:
    """Open ``store`` (default :data:`DEFAULT_STORE`) and select ``campaign`` (an id, or a name: its
    latest run; default: the latest ``default`` campaign, else the latest campaign)."""
    path = Path(store or DEFAULT_STORE)
    if not path.is_file():
        raise FigureDataError(
            f"no result store at {path}; produce one with "
            f"`{verify_command('default', None if store is None else path)}` (or pass --store PATH)")
    st = Store(path)
    camps = st.campaigns()
    if not camps:
        raise FigureDataError(f"the store {path} holds no campaign; run `{verify_command('default', path)}`")
    if campaign is None:
        chosen = st.latest_campaign("default") or camps[-1]
    else:
        by_id = [c for c in camps if c["id"] == campaign]
        by_name = [c for c in camps if c["name"] == campaign]
        if by_id:
            chosen = by_id[-1]
        elif by_name:
            chosen = by_name[-1]
        else:
            known = ", ".join(f"{c['id']} ({c['name']})" for c in camps)
            raise FigureDataError(f"no campaign {campaign!r} in {path}; the store holds: {known}. "
                                  f"Run `{verify_command(campaign if campaign in ('default', 'quick', 'real-llm') else 'default', path)}`")
    src = Source(store=st, path=path, campaign=chosen)
    return src


# ------------------------------------------------------------------------------------------------
# reading one cell
# ------------------------------------------------------------------------------------------------
def meas(cell, name: str):
    """A stored measurement (NumPy array) or ``None``."""
    m = cell.get("measurements") or {}
    return m.get(name)


def claim_arrays(cell, claim: str):
    """``(lhs, rhs)`` of ``claim`` on its in-scope rows (stored arrays), or ``(None, None)``."""
    lhs, rhs = meas(cell, f"{claim}/lhs"), meas(cell, f"{claim}/rhs")
    if lhs is None or rhs is None or lhs.size == 0:
        return None, None
    return np.asarray(lhs, dtype=float).ravel(), np.asarray(rhs, dtype=float).ravel()


def ratio(cell, claim: str, *, squared: bool = False):
    """Per in-scope row ``lhs/rhs`` of ``claim`` (``√(lhs/rhs)`` for a claim on squared norms), or None."""
    lhs, rhs = claim_arrays(cell, claim)
    if lhs is None:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(rhs > 0, lhs / rhs, np.nan)
    if squared:
        r = np.sqrt(np.maximum(r, 0))
    return r[np.isfinite(r)]


def verdict(cell, claim: str):
    for v in cell.get("verdicts", []):
        if v["claim"] == claim:
            return v
    return None


def eta_of(campaign: dict) -> float:
    e = campaign["config"].get("eta")
    return float(e) if e is not None and math.isfinite(float(e)) else 0.05


# ------------------------------------------------------------------------------------------------
# groups (figure 6): synthetic families and real-LLM layer types
# ------------------------------------------------------------------------------------------------
def is_llm(cell) -> bool:
    return source_of(cell.get("config") or {}).name == "llm"


def llm_parts(cfg: dict) -> tuple:
    """``(model or None, layer type)`` of a real-LLM cell (:func:`verify.sources.describe`)."""
    d = describe(cfg)
    return d["model"], d["group"]


def llm_label(cfg: dict) -> str:
    """The layer type of a real-LLM cell (see :func:`llm_parts`)."""
    return llm_parts(cfg)[1]


def group_of(cell) -> tuple[str, str]:
    """``("llm", layer type)`` or ``("synthetic", family)``."""
    d = describe(cell.get("config") or {})
    return ("llm" if d["source"] == "llm" else "synthetic"), d["group"]
