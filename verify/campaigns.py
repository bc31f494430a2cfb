"""The built-in campaigns.

``default`` (what ``ptq-bounds verify`` runs) is the union of small studies, each aimed at a set
of claims and at one figure:

* ``families``    every data family × OPTQ (GPTQ grids, float64 and float32, δZ), RTN, Qronos (both
  variants) and OPTQ on X̃, three independent draws each;
* ``stochastic_families``  stochastic OPTQ on every family (δZ and a T3-sized finite grid);
* ``lambda``      λ sweep (11 values), deterministic OPTQ on δZ (T1 and its looser forms, L1; figures 1, 7);
* ``ordering``    natural / decreasing / increasing / random orders (O1; figure 2);
* ``stochastic``  R trials of one weight vector, stochastic OPTQ on δZ and on a finite grid sized by
  the T3 condition (T2 tail, high-probability and expectation forms, T3; figure 3), and a
  deterministic companion per family (nearest rounding on the same X and w, one row);
* ``mismatch``    Qronos (both variants) and OPTQ on X̃ as the mismatch grows (T4, T5; figure 4);
* ``alphabet``    N grows; the K a run actually needs against P1 and T3 (figure 5);
* ``p1``          finite grids sized exactly by the P1 condition (P1 in scope and tight).

Tightness (figure 6) reads every cell. ``quick`` is a smaller campaign for smoke tests.

Cells compared with each other in a figure share a ``pair`` name: they draw the same data
(:attr:`verify.campaign.Cell.seed_key`), so a λ sweep, the orders, OPTQ against Qronos and
deterministic against stochastic rounding are compared on identical ``X``, ``W`` and ``X̃``.
"""

from __future__ import annotations

from .campaign import Campaign, Cell
from .data import FAMILIES
from .defaults import setting

__all__ = ["CAMPAIGNS", "default_campaign", "quick_campaign", "get_campaign"]

GPTQ4 = {"kind": "gptq", "bits": 4, "sym": True}
DZ = {"kind": "symmetric", "delta_rel": 0.125, "K": None}




def _families(reps: int = 3):
    """Every data family × OPTQ (GPTQ grids, float64 and float32, δZ), RTN, Qronos (both variants) and
    OPTQ on X̃; ``reps`` independent draws of each."""
    cells = []
    for fam in FAMILIES:
        m = 48 if fam == "wide" else 256
        for rep in range(reps):
            base = dict(family=fam, m=m, N=64, n=32, rep=rep)
            mm = {"kind": "quantized", "level": 0.05}
            cells += [
                Cell("families", dict(base, algorithm="optq", grid=GPTQ4, percdamp=0.01, order="decreasing")),
                Cell("families", dict(base, algorithm="optq", grid={"kind": "gptq", "bits": 3, "sym": False,
                                                                    "group_size": 16},
                                      percdamp=0.01, order="decreasing", dtype="float32")),
                Cell("families", dict(base, algorithm="optq", grid=DZ, lam_rel=0.01, order="natural")),
                Cell("families", dict(base, algorithm="rtn", grid=GPTQ4)),
                Cell("families", dict(base, algorithm="qronos", variant="projection", grid=GPTQ4, lam_rel=0.01,
                                      order="decreasing", mismatch=mm)),
                Cell("families", dict(base, algorithm="qronos", variant="original", grid=DZ, lam_rel=0.01,
                                      order="decreasing", mismatch=mm)),
                Cell("families", dict(base, algorithm="optq", grid=DZ, lam_rel=0.01, order="decreasing",
                                      mismatch=mm)),
            ]
    return cells


def _stochastic_families():
    """Stochastic OPTQ on every family: 10000 trials of one weight vector on δZ and on a finite grid
    sized by the T3 condition (T2 and T3 across families)."""
    cells = []
    for fam in FAMILIES:
        m = 48 if fam == "wide" else 128
        base = dict(family=fam, m=m, N=48, n=10000, same_w=True, algorithm="optq", rounding="stochastic",
                    lam_rel=0.05, order="decreasing")
        cells.append(Cell("stochastic_families", dict(base, grid=DZ)))
        cells.append(Cell("stochastic_families", dict(base, grid={"kind": "symmetric", "delta_rel": 0.125,
                                                                  "K": "t3"})))
    return cells


def _lambda():
    cells = []
    for fam in ("tall", "ill_conditioned"):
        for lam_rel in (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0):
            cells.append(Cell("lambda", dict(family=fam, m=256, N=64, n=64, algorithm="optq", grid=DZ,
                                             lam_rel=lam_rel, order="decreasing", pair=fam)))
    return cells


def _ordering():
    cells = []
    for fam in ("tall", "heavy_tailed", "ill_conditioned"):
        for order in ("natural", "decreasing", "increasing", "random"):
            cells.append(Cell("ordering", dict(family=fam, m=256, N=64, n=64, algorithm="optq", grid=DZ,
                                               lam_rel=0.01, order=order, pair=fam)))
    return cells


def _stochastic():
    cells = []
    for fam in ("tall", "heavy_tailed", "dead"):
        base = dict(family=fam, m=128, N=48, n=20000, same_w=True, algorithm="optq", rounding="stochastic",
                    lam_rel=0.05, order="decreasing", pair=fam)
        cells.append(Cell("stochastic", dict(base, grid=DZ)))
        cells.append(Cell("stochastic", dict(base, grid={"kind": "symmetric", "delta_rel": 0.125, "K": "t3"})))
        # deterministic companion on the same X and w (same pairing group; one row): figure 3
        cells.append(Cell("stochastic", dict(base, n=1, rounding="nearest", grid=DZ)))
    return cells


def _mismatch():
    cells = []
    for level in (0.01, 0.03, 0.1, 0.3, 1.0):
        base = dict(family="tall", m=192, N=48, n=32, lam_rel=0.01, order="decreasing", pair=f"level {level}",
                    mismatch={"kind": "noise", "level": level}, grid={"kind": "symmetric", "delta_rel": 0.125,
                                                                      "K": "auto", "K_extra": 24})
        for variant in ("projection", "original"):
            cells.append(Cell("mismatch", dict(base, algorithm="qronos", variant=variant)))
        cells.append(Cell("mismatch", dict(base, algorithm="optq")))
    for level in (0.03, 0.3):
        for variant in ("projection", "original"):
            cells.append(Cell("mismatch", dict(family="tall", m=192, N=48, n=10000, same_w=True, lam_rel=0.01,
                                               pair=f"stochastic level {level}",
                                               order="decreasing", rounding="stochastic", algorithm="qronos",
                                               variant=variant, mismatch={"kind": "noise", "level": level},
                                               grid=DZ)))
    return cells


def _alphabet():
    cells = []
    for N in (16, 32, 64, 128, 256, 512, 1024):
        base = dict(family="tall", m=2 * N, N=N, algorithm="optq", lam_rel=0.01, order="natural", grid=DZ,
                    pair=f"N={N}")
        cells.append(Cell("alphabet", dict(base, n=64)))
        cells.append(Cell("alphabet", dict(base, n=2000, same_w=True, rounding="stochastic")))
    return cells


def _p1():
    cells = []
    for fam in FAMILIES:
        cells.append(Cell("p1", dict(family=fam, m=48 if fam == "wide" else 192, N=48, n=32, algorithm="optq", lam_rel=0.05,
                                     order="decreasing", grid={"kind": "symmetric", "delta_rel": 0.125, "K": "p1"})))
    return cells


def default_campaign(seed: int = 0) -> Campaign:
    cells = (_families() + _stochastic_families() + _lambda() + _ordering() + _stochastic() + _mismatch()
             + _alphabet() + _p1())
    return Campaign(name="default", seed=seed, cells=tuple(cells),
                    description="the built-in Monte Carlo campaign: every claim, synthetic data families")


def quick_campaign(seed: int = 0) -> Campaign:
    """A few cells of each kind (a smoke test, seconds)."""
    full = default_campaign(seed).cells
    keep, seen = [], {}
    for c in full:
        k = (c.study, c.config.get("algorithm"), c.config.get("rounding", "nearest"), c.config.get("variant"),
             c.config["grid"].get("K"))
        if seen.get(k, 0) < 1:
            seen[k] = seen.get(k, 0) + 1
            cfg = dict(c.config)
            if setting(cfg, "n") > 2000:  # enough trials for the expectation test's declared power
                cfg["n"] = 2000
            keep.append(Cell(c.study, cfg))
    return Campaign(name="quick", seed=seed, cells=tuple(keep), description="a smoke test of every cell kind")


def smoke_campaign(seed: int = 0) -> Campaign:
    """Eight tiny cells (deterministic, stochastic, Qronos, RTN): for tests of the machinery."""
    base = dict(family="tall", m=48, N=12, n=6, lam_rel=0.05, order="decreasing")
    cells = [
        Cell("smoke", dict(base, algorithm="optq", grid=GPTQ4)),
        Cell("smoke", dict(base, algorithm="optq", grid=DZ, family="ill_conditioned")),
        Cell("smoke", dict(base, algorithm="optq", grid=DZ, family="dead")),
        Cell("smoke", dict(base, algorithm="optq", grid=DZ, rounding="stochastic", n=2000, same_w=True)),
        Cell("smoke", dict(base, algorithm="qronos", variant="projection", grid=DZ,
                           mismatch={"kind": "noise", "level": 0.1})),
        Cell("smoke", dict(base, algorithm="qronos", variant="original", grid=DZ,
                           mismatch={"kind": "noise", "level": 0.1})),
        Cell("smoke", dict(base, algorithm="rtn", grid=GPTQ4)),
        Cell("smoke", dict(base, algorithm="optq", family="heavy_tailed",
                           grid={"kind": "symmetric", "delta_rel": 0.125, "K": "p1"})),
    ]
    return Campaign(name="smoke", seed=seed, cells=tuple(cells), description="eight tiny cells (machinery tests)")


CAMPAIGNS = {"default": default_campaign, "quick": quick_campaign, "smoke": smoke_campaign}

#: campaigns that must exercise every claim (``ptq-bounds verify`` fails otherwise)
FULL_COVERAGE = ("default",)


def get_campaign(name: str, seed: int = 0) -> Campaign:
    if name not in CAMPAIGNS:
        raise ValueError(f"unknown campaign {name!r}; choose one of {', '.join(CAMPAIGNS)}")
    return CAMPAIGNS[name](seed)
