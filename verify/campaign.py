"""Campaigns: frozen configurations of cells, and the pure function that runs one cell.

A *cell* is one experiment: a data family and shape, a grid, λ, an order, a rounding, an
algorithm (OPTQ, Qronos in either variant, RTN) and, for Qronos or OPTQ on mismatched inputs, a
perturbation of ``X`` giving ``X̃``. Running a cell draws its data from its own seed, quantizes,
evaluates every claim of :mod:`theory` with the one generic checker, and returns verdicts and
measurements (per-row arrays the figures read). Cells are pure functions of ``(config, seed)``,
so any executor reproduces them exactly.

Trials: for stochastic rounding, the ``n`` rows of a cell are independent trials — ``trials``
copies of one weight vector (``same_w=True``) — so a Monte Carlo cell costs one matrix run.

Seeds: the seed of a cell is derived from the campaign seed and the cell's key (a hash of its
configuration), so adding or removing cells never changes the data of the others. Cells that must
be compared on the same data carry a ``"pair"`` name in their configuration: their seed derives
from the pairing group instead (:attr:`Cell.seed_key`), so they draw identical ``X``, ``W``, ``X̃``
(and, for equal shapes, identical rounding uniforms).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import time
from dataclasses import dataclass, field

import numpy as np

from .config import CellConfig
from .defaults import setting
from .sources import load_layer

__all__ = ["Cell", "Campaign", "run_cell", "cell_seed", "make_grid", "make_layer"]


def _canon(d) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Cell:
    """One experiment: ``study`` (what it is for) and a JSON configuration."""

    study: str
    config: dict

    def __post_init__(self):
        if not isinstance(self.study, str) or not self.study:
            raise ValueError(f"a cell's study must be a non-empty string, got {self.study!r}")
        CellConfig.from_dict(self.config)  # unknown keys and wrong types are errors (verify.config)

    @property
    def typed(self) -> CellConfig:
        """The typed view of the configuration (:class:`verify.config.CellConfig`)."""
        return CellConfig.from_dict(self.config)

    @property
    def key(self) -> str:
        h = hashlib.sha256(_canon({"study": self.study, **self.config}).encode()).hexdigest()[:16]
        return f"{self.study}:{h}"

    @property
    def seed_key(self) -> str:
        """The key the cell's seed derives from: its own :attr:`key`, or for the cells of one pairing
        group (configuration ``"pair": name``) the group's, so that they draw the same data — common
        random numbers, for comparisons on identical ``X``, ``W`` and ``X̃`` (a λ sweep, the orders,
        OPTQ against Qronos, deterministic against stochastic rounding)."""
        pair = self.config.get("pair")
        return self.key if pair is None else f"{self.study}:pair:{pair}"


@dataclass(frozen=True)
class Campaign:
    """A named, seeded list of cells with the statistical settings of its tests.

    ``alpha``: family-wise false-alarm rate of all statistical tests of the campaign; each test
    runs at ``alpha / n_tests`` (Bonferroni), ``n_tests`` the number of probability and expectation
    checks the campaign can make. ``eta``: the failure probability of the high-probability forms.
    """

    name: str
    seed: int
    cells: tuple
    alpha: float = 1e-3
    eta: float = 0.05
    description: str = ""
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "alpha": self.alpha, "eta": self.eta,
                "description": self.description, "cells": [{"study": c.study, **c.config} for c in self.cells]}

    @property
    def id(self) -> str:
        h = hashlib.sha256(_canon(self.to_dict()).encode()).hexdigest()[:12]
        return f"{self.name}-{h}"

    @property
    def alpha_per_test(self) -> float:
        from theory import CLAIMS

        stat = sum(1 for c in CLAIMS.values() if c.kind in ("probability bound", "expectation bound"))
        stochastic = sum(1 for c in self.cells if c.config.get("rounding") == "stochastic")
        return self.alpha / max(1, stat * max(1, stochastic))


def cell_seed(campaign_seed: int, key: str) -> int:
    """A 63-bit seed from the campaign seed and the cell key (stable across cell lists)."""
    ss = np.random.SeedSequence([int(campaign_seed), int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)])
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# ------------------------------------------------------------------------------------------------
# building data, grids and runs from a configuration
# ------------------------------------------------------------------------------------------------
def make_layer(cfg: dict, rng: np.random.Generator):
    """``(W, X, X_tilde)`` of a cell (``X_tilde`` is None without a mismatch), from the data source
    its configuration selects (:mod:`verify.sources`: a synthetic family, a real model's layer, or
    your own files)."""
    return load_layer(cfg, rng)


def make_grid(spec: dict, W: np.ndarray):
    """An :class:`algorithms.Grid` from a JSON spec.

    ``{"kind": "gptq", "bits": b, "sym": bool, "group_size": g|None, "static": bool}``;
    ``{"kind": "symmetric", "delta_rel": r, "K": K|None}``: ``δ = r·max|W|`` (``K=None``: δZ; ``K="auto"``:
    the smallest K that represents W plus ``K_extra``).
    """
    import algorithms as A

    kind = spec["kind"]
    if kind == "gptq":
        return A.Grid.gptq(int(spec["bits"]), sym=bool(spec.get("sym", True)), group_size=spec.get("group_size"),
                           static_groups=bool(spec.get("static", False)))
    if kind == "symmetric":
        delta = float(spec["delta_rel"]) * float(np.max(np.abs(W)) or 1.0)
        K = spec.get("K")
        if K == "auto":
            K = int(math.ceil(float(np.max(np.abs(W))) / delta - 0.5)) + int(spec.get("K_extra", 0))
            K = max(K, 1)
        return A.Grid.symmetric(delta, None if K is None else int(K))
    raise ValueError(f"unknown grid kind {kind!r}")


def lam_of(cfg: dict, X_loop: np.ndarray) -> dict:
    """Damping keyword: ``lam`` absolute, ``lam_rel`` (× mean ‖X_t‖²) or GPTQ's ``percdamp``."""
    if "percdamp" in cfg:
        return {"percdamp": float(cfg["percdamp"])}
    if "lam" in cfg:
        return {"lam": float(cfg["lam"])}
    mean = float(np.mean(np.sum(np.asarray(X_loop, dtype=np.float64) ** 2, axis=0))) or 1.0
    return {"lam": float(setting(cfg, "lam_rel")) * mean}


def quantize(cfg: dict, W, X, Xt, rng, samples: int | None = None):
    """Run the cell's algorithm; returns ``(result, W_for_claims, X_for_claims, X_tilde_for_claims)``.
    ``samples``: the rows ``X`` stands for when it is a square root of Gram matrices
    (:mod:`verify.stream`)."""
    import algorithms as A

    alg = cfg["algorithm"]
    spec = dict(cfg["grid"])
    if spec.get("K") in ("p1", "t3"):
        spec["K"] = _sized_K(spec, cfg, W, X, Xt, samples)
    grid = make_grid(spec, W)
    common = dict(order=setting(cfg, "order"), rounding=setting(cfg, "rounding"), rng=rng,
                  block_size=int(setting(cfg, "block_size")))
    if alg == "rtn":
        r = A.rtn(W, grid, rounding=common["rounding"], rng=rng)
        return r, W, X, None
    if alg == "optq":
        data = Xt if Xt is not None else X  # OPTQ on mismatched inputs: judged against X (T4)
        r = A.optq(W, data, grid=grid, samples=samples, **lam_of(cfg, data), **common)
        return r, r.W0, X, Xt
    if alg == "qronos":
        if Xt is None:
            raise ValueError("a Qronos cell needs a mismatch")
        r = A.qronos(W, X, Xt, grid=grid, variant=setting(cfg, "variant"), samples=samples, **lam_of(cfg, Xt),
                     **common)
        return r, W, X, Xt
    raise ValueError(f"unknown algorithm {alg!r}")


def _sized_K(spec, cfg, W, X, Xt, samples=None) -> int:
    """The K of a symmetric grid sized by the uniform alphabet condition of P1 (deterministic) or
    T3 (stochastic, η of the campaign, Hoeffding's s = δ/2), computed from the exact drift B of
    the loop's data, λ and order (read from a run on δZ)."""
    import algorithms as A
    import theory

    data = Xt if Xt is not None else X
    delta = float(spec["delta_rel"]) * float(np.max(np.abs(W)) or 1.0)
    probe = A.optq(W[:1], data, grid=A.Grid.integers(delta), order=setting(cfg, "order"),
                   rng=np.random.default_rng(0), samples=samples, **lam_of(cfg, data))
    Bm = theory.B(np.asarray(data, dtype=np.float64), float(probe.lam), np.asarray(probe.order))
    w_over = float(np.max(np.abs(W))) / delta
    if spec["K"] == "p1":  # K + ½ ≥ ‖w‖∞/δ + ½ max_t ‖B_{:,t}‖₁
        need = theory.alphabet.k_needed_p1(w_over, Bm)
    else:  # K ≥ ‖w‖∞/δ + (s/δ) max_t ‖B_{:,t}‖₂ √(2 log(2N/η)), s² = δ²/4
        eta = float(setting(cfg, "eta"))
        need = theory.alphabet.k_needed_t3(w_over, Bm, eta, "hoeffding")
    return max(1, int(math.ceil(need - 1e-12)))


# ------------------------------------------------------------------------------------------------
# one cell
# ------------------------------------------------------------------------------------------------
def run_cell(cell_key: str, study: str, cfg: dict, seed: int, *, alpha: float, eta: float,
             keep_rows: int = 4096) -> dict:
    """Run one cell and evaluate every claim on it; returns the record the store keeps.

    Errors inside the cell (bad configuration, a factorisation failure) are recorded as an
    ``error`` cell rather than raised, so one bad cell does not stop a campaign. The cell runs with
    one BLAS thread whatever executor calls it, so the same cell gives the same bytes in the main
    process, in a worker process and on a Dask worker.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return _run_cell(cell_key, study, cfg, seed, alpha=alpha, eta=eta, keep_rows=keep_rows)


def _run_cell(cell_key, study, cfg, seed, *, alpha, eta, keep_rows):
    import theory

    t0 = time.time()
    rec = {"key": cell_key, "study": study, "config": cfg, "seed": int(seed), "started": t0,
           "worker": f"{socket.gethostname()}:{os.getpid()}", "backend": "numpy"}
    try:
        rng = np.random.default_rng(seed)
        W, X, Xt = make_layer(cfg, rng)
        t1 = time.time()
        res, Wc, Xc, Xtc = quantize(cfg, W, X, Xt, rng)
        t2 = time.time()
        run = theory.Run.from_result(res, Xc, X_tilde=Xtc, W=Wc)
        params = {"eta": eta}
        if "lams" in cfg:
            params["lams"] = cfg["lams"]
        claims = cfg.get("claims") or claims_for(int(cfg["N"]))
        verdicts = theory.check_all(run, claims, alpha=alpha, hypotheses=True, **params)
        t3 = time.time()
        meas = _measurements(res, run, Xc, Xtc, Wc, verdicts, keep_rows)
        rec.update(status="done", verdicts=[_verdict_dict(v) for v in verdicts.values()], measurements=meas,
                   timings={"data": t1 - t0, "quantize": t2 - t1, "check": t3 - t2})
    except Exception as exc:  # noqa: BLE001 - recorded, reported in the summary
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}", verdicts=[], measurements={})
    rec["finished"] = time.time()
    rec["seconds"] = rec["finished"] - t0
    return rec


#: claims whose evaluation costs one SVD per feature: evaluated only up to this N
COSTLY = {"T1.explicit": 96, "T1.c_chain": 96}


def claims_for(N: int) -> list:
    """Every registered claim, without the costly ones above their N limit."""
    import theory

    return [c for c in theory.CLAIMS if N <= COSTLY.get(c, N)]


def _verdict_dict(v) -> dict:
    d = v.to_dict()
    detail = {k: d[k] for k in ("tolerance", "message", "expected", "test", "mean", "range", "alpha", "violations",
                                "power") if k in d}
    return {"claim": d["claim"], "kind": d["kind"], "status": d["status"], "in_scope": d["in_scope"],
            "out_of_scope": d["out_of_scope"], "reasons": d["reasons"], "violated": d["status"] == "violated",
            "worst_ratio": d.get("worst_ratio"), "p_value": d.get("p_value"), "trials": d.get("trials"),
            "exceedances": d.get("exceedances"), "claimed_p": d.get("claimed_p"), "power": d.get("power"),
            "detail": detail}


def _measurements(res, run, X, Xt, W, verdicts, keep_rows) -> dict:
    """Per-row arrays for figures: errors, exact quantities, and each claim's lhs/rhs on its rows."""
    import theory

    Q = np.asarray(res.Q, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    target = X @ W.T
    out = (X @ Q.T) if Xt is None or res.algorithm == "rtn" else (np.asarray(Xt, dtype=np.float64) @ Q.T)
    resid = target - out  # m × n
    n = Q.shape[0]
    rows = slice(0, min(n, keep_rows))
    meas = {
        "err_l2": np.linalg.norm(resid, axis=0)[rows],
        "err_linf": np.max(np.abs(resid), axis=0)[rows],
        "saturated": np.asarray(res.saturated)[rows].astype(np.int8),
        "lam": np.array([float(res.lam)]),
    }
    if res.algorithm != "rtn":
        data = Xt if Xt is not None else X
        order = np.asarray(res.order)
        try:
            c = theory.c(np.asarray(data, dtype=np.float64), float(res.lam), order)
            meas["c"] = c
            meas["sum_c"] = np.array([float(np.sum(c))])
            meas["max_c"] = np.array([float(np.max(c))])
            B = theory.B(np.asarray(data, dtype=np.float64), float(res.lam), order)
            meas["drift_l1_max"] = np.array([theory.alphabet.drift_l1_max(B)])
            meas["drift_l2_max"] = np.array([theory.alphabet.drift_l2_max(B)])
        except Exception:  # noqa: BLE001 - exact quantities unavailable (e.g. singular with λ = 0)
            pass
        scale = np.asarray(res.alphabet.scale, dtype=np.float64)[:, order]
        z = np.asarray(res.z, dtype=np.float64)
        meas["z_over_delta_max"] = np.max(np.abs(z) / scale, axis=1)[rows]
        meas["w_over_delta_max"] = np.max(np.abs(W) / np.asarray(res.alphabet.scale, dtype=np.float64), axis=1)[rows]
        # observed drift max_t |z_t − w_t|/δ_t from the loop's start (OPTQ: W, dead features zeroed;
        # Qronos: ŵ), per row: what P1 (½ max_t‖B_{:,t}‖₁) and T3 bound (figure 5)
        w0p = np.asarray(res.W0, dtype=np.float64)[:, order]
        meas["drift_over_delta_max"] = np.max(np.abs(z - w0p) / scale, axis=1)[rows]
        # T2.tail's variances v_i = Σ_t δ_t² R_it² (sample i, X-block of R; σ_i² = (s²/δ²)·v_i), for
        # stochastic OPTQ when every row has the same steps (the tail-bound curve of figure 3)
        if res.algorithm == "optq" and res.rounding == "stochastic" and np.all(scale == scale[:1]):
            try:
                RX = theory.R(np.asarray(data, dtype=np.float64), float(res.lam), order, block="X")
                meas["tail_v"] = (scale[0] ** 2) @ (RX**2).T
            except Exception:  # noqa: BLE001 - exact quantities unavailable
                pass
    for cid, v in verdicts.items():
        if v.in_scope and np.size(v.lhs):
            k = min(len(v.lhs), keep_rows)
            meas[f"{cid}/lhs"] = np.asarray(v.lhs, dtype=np.float64)[:k]
            meas[f"{cid}/rhs"] = np.asarray(v.rhs, dtype=np.float64)[:k]
    return meas


def machine_meta() -> dict:
    """Versions, machine and git commit recorded with every campaign."""
    import importlib.metadata as md
    import subprocess

    def ver(p):
        try:
            return md.version(p)
        except md.PackageNotFoundError:
            return None

    commit, dirty = None, None
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except Exception:  # noqa: BLE001 - not a git checkout
        pass
    return {
        "python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "host": socket.gethostname(),
        "versions": {p: ver(p) for p in ("provable-ptq", "numpy", "scipy", "sympy", "torch", "brevitas",
                                         "cupy-cuda12x")},
        "git_commit": commit, "git_dirty": dirty,
    }


def provenance(seed=None) -> dict:
    """What produced a report: the same record :func:`machine_meta` stores with every campaign
    (package version, git commit, library versions, Python, platform and machine) plus the ``seed``
    and ``package_version``; written into the JSON of ``check-layer`` and ``audit``."""
    meta = machine_meta()
    return {**meta, "package_version": meta["versions"].get("provable-ptq"),
            "seed": None if seed is None else int(seed)}
