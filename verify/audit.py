"""Auditing any quantizer against the claims.

A user's quantizer is run over the campaign's data families; each output ``Q`` is turned into a
:class:`theory.Run` and every claim is checked with the one generic checker, together with the
hypotheses the claims rest on (the output lies on the grid; nearest rounding rounds to nearest;
stochastic rounding is unbiased). What the quantizer must do is the contract below (also printed by
``ptq-bounds audit --help``).

Quantizer contract
------------------
Call: ``Q = f(W, X, *, grid, lam, rng)``; Qronos-like quantizers (``--kind qronos-projection``,
``qronos-original``) are called ``f(W, X, *, X_tilde, grid, lam, rng)``. A quantizer that declares
several orders (``--orders natural,decreasing``) is also passed ``order=`` (``"natural"``,
``"decreasing"`` = GPTQ's act_order: by diag(XᵀX) descending, ties by index, or ``"increasing"``);
with ``--order NAME`` it uses that one order and is not told.

* ``W``: n × N float64 NumPy weights (rows are output neurons; a copy: changing it in place is
  harmless); ``X``, ``X_tilde``: m × N float64 NumPy calibration inputs (rows are samples);
  ``lam``: absolute damping, ``H = XᵀX + lam·I`` (``lam > 0`` in every case); ``rng``: a
  ``numpy.random.Generator``, the only source of randomness for stochastic rounding.
* ``grid``: an ``algorithms.Grid``; the audit passes only these (choose with ``--grids``):

  - ``symmetric``: ``Grid.symmetric(δ, K)``, levels ``δ·{−K..K}`` (one scalar δ);
  - ``gptq``: ``Grid.gptq(4, sym=True)``, GPTQ's min/max scale and zero point per row, fitted on
    the original ``W`` (dead features included);
  - ``gptq-group``: ``Grid.gptq(3, sym=False, group_size=8)``, one scale and zero point per group
    of 8 consecutive columns in processing order, fitted on the fly from the current (already
    updated) weights when the loop reaches the group's first column;
  - ``gptq-static``: ``Grid.gptq(4, sym=True, group_size=8, static_groups=True)``, group scales
    fitted once before the loop, in the original feature order, from the weights the loop starts
    from (under GPTQ's convention: with the weights of dead features zeroed).

* Return: ``Q`` (n × N, the dequantized weights in the original feature order, finite): a NumPy,
  CuPy or torch array, or an object with a ``.Q`` attribute. Its dtype is taken as the working
  precision (float32, float16, bfloat16 → that precision; float64 → float64) unless
  ``--precision`` declares it: a quantizer that computes in float32 and returns float64 must
  declare ``--precision float32``.
* Declining a case: raising ``NotImplementedError`` (or ``verify.audit.Decline``, a subclass) means
  "this case is not supported" (a grid, an order, a shape); it is counted as declined, with the
  message as its reason. ANY other exception, and an output that is not a finite n × N array, is an
  error of the quantizer, reported with its case; never counted as declined.
* Declaring: ``--kind``, ``--rounding``, ``--order``/``--orders``, ``--grids``, ``--precision``, or
  in the code with the decorator ``verify.audit.declare(kind=..., rounding=..., orders=...,
  grids=..., precision=...)`` (the command line takes precedence).
* Dead features (``X_t = 0``): GPTQ's convention zeroes their weights (so ``q_t = 0``) and sets
  ``H_tt`` to ``m/2`` (act_order sorts them by that value); static groups are fitted after the
  zeroing, the per-row grid before it. A quantizer that rounds them instead (weights kept,
  ``H_tt = λ``) follows the "keep" convention: reported as a convention difference, not as a
  violation, and every claim is checked under the convention it follows.
* Exit codes: 0 every checked claim and hypothesis holds; 1 one is violated; 2 bad input, including
  a quantizer that cannot be called as above or that failed on every case; 3 nothing was exercised
  (every case declined) or insufficient evidence; 4 the quantizer raised on some cases (and nothing
  was violated), or an internal error.

How ``Q`` is judged
-------------------
The quantizer *declares* what it is (``kind``: ``optq``, ``qronos-projection``, ``qronos-original``;
``rounding``; order(s); grids; precision), on the command line or with :func:`declare`. For an
OPTQ-like column loop at ``(λ, order)`` the rounding errors are determined by ``w − q = Mᵀe``
(``M`` unit upper triangular from the loop's data, λ and order), so ``e`` and ``z = q + e`` are
*implied* by ``Q``: for OPTQ they are the errors it made; for any other ``Q`` they are what an OPTQ
run would have had to make. A quantizer that is not what it declares fails the hypotheses (``Q`` on
the grid, ``|e_t| ≤ δ_t/2`` for nearest rounding, unbiased stochastic rounding) or the bounds.
The hypothesis verdicts are the checker's own (``hyp.*`` of :func:`theory.check_all`). The audit's grid
fit and processing order are written here on their own, never imported from ``algorithms``.

Statuses and exit codes follow :mod:`theory.verdicts`. When a deterministic check fails,
hypothesis searches for a minimal failing layer (shrinking shapes and seeds) and saves it as
``.npz`` (``W, X, X_tilde, Q`` and the configuration).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.linalg

from .data import FAMILIES
from .refgrid import minmax_fit

__all__ = ["KINDS", "FAMILIES", "GRIDS", "LayerBank", "ORDERS", "PRECISIONS", "CONTRACT", "Decline", "declare",
           "AuditCase", "CaseOutcome", "AuditReport", "load_quantizer", "implied_run",
           "audit", "audit_cases", "evaluate_case"]

KINDS = ("optq", "qronos-projection", "qronos-original")


#: the grids of the audit plan, by name (specs for :func:`verify.campaign.make_grid`)
GRIDS = {
    "symmetric": {"kind": "symmetric", "delta_rel": 0.125, "K": "auto", "K_extra": 40},
    "gptq": {"kind": "gptq", "bits": 4, "sym": True},
    "gptq-group": {"kind": "gptq", "bits": 3, "sym": False, "group_size": 8},
    "gptq-static": {"kind": "gptq", "bits": 4, "sym": True, "group_size": 8, "static": True},
}

#: the processing orders a quantizer may declare
ORDERS = ("natural", "decreasing", "increasing")

#: working precisions (``theory.Run.precision``)
PRECISIONS = ("float64", "float32", "float16", "bfloat16")

_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}

#: the quantizer contract (the module docstring's section), for ``ptq-bounds audit --help``
CONTRACT = __doc__.split("Quantizer contract\n------------------\n", 1)[1].split("\nHow ``Q`` is judged", 1)[0].strip()


class Decline(NotImplementedError):
    """Raised by a quantizer for a case it does not support; the message is the reason."""


def declare(*, kind=None, rounding=None, orders=None, order=None, grids=None, precision=None):
    """Decorator: what a quantizer is, read by :func:`audit` (explicit arguments of ``audit`` and
    the command line take precedence)::

        @declare(kind="optq", orders=("natural", "decreasing"), grids=("gptq", "gptq-static"), precision="float32")
        def my_gptq(W, X, *, grid, lam, rng, order="natural"): ...

    ``orders``: the quantizer takes ``order=`` and is audited on each; ``order``: the one order it
    uses (not passed to it).
    """
    decl = {k: v for k, v in dict(kind=kind, rounding=rounding, orders=orders, order=order, grids=grids,
                                  precision=precision).items() if v is not None}
    _check_declaration(decl)

    def wrap(f):
        f.__ptq_audit__ = dict(decl)
        return f

    return wrap


def _check_declaration(d: dict):
    if "kind" in d and d["kind"] not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {d['kind']!r}")
    if "rounding" in d and d["rounding"] not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {d['rounding']!r}")
    if "order" in d and d["order"] not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {d['order']!r}")
    for key, allowed in (("orders", ORDERS), ("grids", tuple(GRIDS))):
        if key in d:
            v = (d[key],) if isinstance(d[key], str) else tuple(d[key])
            bad = [x for x in v if x not in allowed]
            if bad or not v:
                raise ValueError(f"{key} must be a non-empty selection of {allowed}, got {d[key]!r}")
    if "precision" in d and d["precision"] not in PRECISIONS + ("auto",):
        raise ValueError(f"precision must be one of {PRECISIONS} or 'auto', got {d['precision']!r}")


def load_quantizer(spec: str):
    """``"package.module:function"`` (or a file path ``path/to/file.py:function``) → the callable."""
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"quantizer must be given as MODULE:FUNCTION (e.g. mypkg.quant:my_gptq), got {spec!r}")
    mod_name, _, fn_name = spec.rpartition(":")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        s = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ImportError(f"cannot import module {mod_name!r} (is it on PYTHONPATH?): {exc}") from exc
    try:
        fn = getattr(mod, fn_name)
    except AttributeError as exc:
        raise AttributeError(f"module {mod_name!r} has no function {fn_name!r}") from exc
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    return fn


# ------------------------------------------------------------------------------------------------
# the audit's own grid fit and order (independent of ``algorithms``)
# ------------------------------------------------------------------------------------------------
def _loop_diag(D, dead):
    """``diag(DᵀD)`` with GPTQ's value ``m/2`` on dead features under ``dead="zero"`` (what
    act_order sorts by)."""
    d = np.sum(D * D, axis=0)
    if dead == "zero":
        d = np.where(d == 0, D.shape[0] / 2, d)
    return d


def _order(order, D, N, dead="keep", d=None):
    """The processing order a quantizer declaring ``order`` uses (``"decreasing"``: by diag(DᵀD),
    with GPTQ's value m/2 on dead features when ``dead="zero"``, ties by index); an explicit
    permutation is returned as it is (``d``: the diagonal, when already known)."""
    if not isinstance(order, str):
        return np.asarray(order, dtype=np.int64)
    if order == "natural":
        return np.arange(N)
    if order not in ("decreasing", "increasing"):
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    d = _loop_diag(D, dead) if d is None else d
    return np.argsort(-d if order == "decreasing" else d, kind="stable")


def _host(a):
    if a is None:
        return None
    mod = type(a).__module__
    if mod.startswith("cupy"):
        a = a.get()
    elif mod.startswith("torch"):
        a = a.detach().cpu().double().numpy()
    return np.asarray(a, dtype=np.float64)


def _lazy(grid) -> bool:
    return grid.kind == "gptq" and bool(grid.group_size) and not grid.static_groups


def _alphabet(grid, W_fit, W_static, w0_p, E, Mm, perm, Qp=None, snap=0.0):
    """Per-entry step and zero point (original order) and the integer range of ``grid`` on this run.

    Per-row GPTQ grids are fitted on ``W_fit``, static groups on ``W_static`` (original order);
    groups fitted on the fly are refitted from the implied current weights at each group's first
    column. Those are known only to the run's arithmetic: where a step within relative ``snap`` of the
    refit one puts the group's ``Qp`` exactly on the grid, that step is taken (the quantizer's own).
    """
    n, N = w0_p.shape
    if grid.kind == "symmetric":
        d = grid.delta
        d = np.broadcast_to(_host(d).reshape(-1, 1) if hasattr(d, "shape") else float(d), (n, 1))
        K = grid.K
        qmin, qmax = (-math.inf, math.inf) if K is None else (-int(K), int(K))
        return np.broadcast_to(d, (n, N)).astype(np.float64), np.zeros((n, N)), qmin, qmax
    qmin, qmax = 0, 2 ** grid.bits - 1
    if not grid.group_size:
        s, z = minmax_fit(np.asarray(W_fit, dtype=np.float64), grid)
        return np.repeat(s[:, None], N, axis=1), np.repeat(z[:, None], N, axis=1), qmin, qmax
    g = grid.group_size
    S = np.zeros((n, N))
    Z = np.zeros((n, N))
    if grid.static_groups:
        for j in range(0, N, g):
            s, z = minmax_fit(np.asarray(W_static[:, j:j + g], dtype=np.float64), grid)
            S[:, j:j + g], Z[:, j:j + g] = s[:, None], z[:, None]
        return S, Z, qmin, qmax
    for t0 in range(0, N, g):  # processing order
        cur = w0_p[:, t0:t0 + g] - E[:, :t0] @ Mm[:t0, t0:t0 + g]
        s, z = minmax_fit(cur, grid)
        if Qp is not None and snap > 0:
            s = _snap_steps(Qp[:, t0:t0 + g], s, snap)
        S[:, t0:t0 + g], Z[:, t0:t0 + g] = s[:, None], z[:, None]
    inv = np.argsort(perm)
    return S[:, inv], Z[:, inv], qmin, qmax


def _snap_steps(Qg, s, rel):
    """Per row: the step ``s'`` with ``|s'/s − 1| ≤ rel`` that puts every entry of ``Qg`` on an
    integer multiple (within a few ulps), if there is one; else ``s``."""
    r = Qg / s[:, None]
    k = np.round(r)
    j = np.argmax(np.abs(k), axis=1)
    rows = np.arange(Qg.shape[0])
    kj = k[rows, j]
    out = s.copy()
    ok = kj != 0
    s2 = np.where(ok, Qg[rows, j] / np.where(ok, kj, 1.0), s)
    close = ok & (np.abs(s2 / s - 1) <= rel)
    on = np.all(np.abs(Qg / s2[:, None] - k) <= 64 * _EPS["float32"] * (1 + np.abs(k)), axis=1)
    take = close & on
    out[take] = s2[take]
    return out


def _loop_kappa(D, lam, dead):
    """``cond(H_λ)`` of the Hessian the loop factors (dead-feature convention ``dead``)."""
    H = D.T @ D
    if dead == "zero":
        dd = np.diag(H).copy()
        idx = np.flatnonzero(dd == 0)
        H[idx, idx] = D.shape[0] / 2
    H = H + lam * np.eye(H.shape[0])
    w = np.linalg.eigvalsh(H)
    return float(w[-1] / w[0]) if w[0] > 0 else math.inf


def _tau(precision, N, kappa):
    """Accuracy of an OPTQ loop in ``precision``: ``4·eps·(N + κ)`` (relative to the weights)."""
    return 4.0 * _EPS.get(precision or "float64", _EPS["float64"]) * (N + kappa)


# ------------------------------------------------------------------------------------------------
# implied run
# ------------------------------------------------------------------------------------------------
def implied_run(kind: str, W, Q, X, *, grid, lam: float, order="natural", rounding="nearest", X_tilde=None,
                dead: str = "zero", precision: str | None = None, dtype: str | None = None):
    """The :class:`theory.Run` implied by the output ``Q`` of a quantizer that declares ``kind``.

    ``e`` solves ``(w₀ − q)_π = Mᵀe`` (``w₀ = w`` for OPTQ — with the weights of dead features
    zeroed when ``dead="zero"``, GPTQ's convention; ``dead="keep"``: weights kept and the Hessian
    not fixed — and ``ŵ`` for Qronos), ``z = q + e``; for the original Qronos variant the first
    rounded value is ``y₁`` (recomputed here). ``precision``: the quantizer's working precision
    (``theory.Run.precision``; default float64), ``dtype``: the storage dtype of the ``Q`` it returned.
    """
    import theory

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if dead not in ("zero", "keep"):
        raise ValueError(f"dead must be 'zero' or 'keep', got {dead!r}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    W = np.asarray(W, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    Xt = None if X_tilde is None else np.asarray(X_tilde, dtype=np.float64)
    qronos = kind.startswith("qronos")
    D = Xt if (qronos or Xt is not None) else X
    n, N = W.shape
    conv = "keep" if qronos else dead
    perm = _order(order, D, N, dead=conv)
    Mm = theory.M(D, lam, perm)
    if qronos:
        w0 = theory.w_hat(W, X, Xt, lam)
        W_static = W  # Qronos fits its grids on the original weights
    else:
        w0 = W.copy()
        if dead == "zero":
            w0[:, np.sum(D * D, axis=0) == 0] = 0.0
        W_static = w0  # GPTQ: static groups after dead features are zeroed
    w0_p = w0[:, perm]
    Qp = Q[:, perm]
    Delta = w0_p - Qp
    E = scipy.linalg.solve_triangular(Mm.T, Delta.T, lower=True, unit_diagonal=True, check_finite=False).T
    Z = Qp + E
    errors = E.copy()
    y1 = None
    if kind == "qronos-original":
        f = int(perm[0])
        y1 = theory.quantities.y1(W, X, Xt, f)
        Z[:, 0] = y1
        errors[:, 0] = y1 - Q[:, f]
    snap = 0.0
    if _lazy(grid):
        snap = min(8 * _tau(precision, N, _loop_kappa(D, lam, conv)) + 1e-12, 1e-2)
    scale, zero, qmin, qmax = _alphabet(grid, W, W_static, w0_p, E, Mm, perm, Qp=Qp, snap=snap)
    sp_, zp_ = scale[:, perm], zero[:, perm]
    u = Z / sp_ + zp_
    if rounding == "nearest":
        k = np.round(u)
        clipped = (k < qmin) | (k > qmax)
    else:
        clipped = (u < qmin) | (u > qmax)
    prec = precision or "float64"
    extra = {"precision": prec}
    if dtype:
        extra["dtype"] = dtype
    return theory.Run(
        X=X, W=W if qronos else w0, Q=Q, lam=float(lam), order=perm, errors=errors, z=Z, scale=scale, zero=zero,
        qmin=qmin, qmax=qmax, clipped=clipped, saturated=clipped.any(axis=1), rounding=rounding,
        algorithm="qronos" if qronos else "optq", X_tilde=None if (not qronos and Xt is None) else Xt,
        variant=("original" if kind == "qronos-original" else "projection") if qronos else None, y1=y1,
        dead=conv, steps_fixed=not _lazy(grid),
        meta={"implied": True, "kind": kind, "dead_convention": conv, "precision": prec}, **extra,
    )


# ------------------------------------------------------------------------------------------------
# the audit plan
# ------------------------------------------------------------------------------------------------
def _grid_name(spec: dict) -> str:
    if spec["kind"] == "symmetric":
        return "symmetric"
    if spec.get("group_size"):
        return "gptq-static" if spec.get("static") else "gptq-group"
    return "gptq"


@dataclass(frozen=True)
class AuditCase:
    """One layer and setting the quantizer is run on."""

    family: str
    grid: dict
    lam_rel: float
    seed: int
    m: int = 64
    N: int = 24
    n: int = 12
    trials: int = 0  # > 0: stochastic, rows are trials of one weight vector
    mismatch: float = 0.0
    order: str = "natural"
    #: the :class:`LayerBank` a real-layer case (``family`` = one of its names) is sliced from
    bank: "LayerBank | None" = field(default=None, compare=False, repr=False)

    def label(self) -> str:
        g = self.grid["kind"] + (f"-{self.grid.get('bits')}b" if self.grid["kind"] == "gptq" else "")
        if self.grid.get("group_size"):
            g += f"-g{self.grid['group_size']}" + ("-static" if self.grid.get("static") else "")
        if self.bank is not None:
            xt = ", X̃ captured" if self.mismatch else ""
            return (f"{self.family} [m={self.m}, N={self.N}, n={self.n}, slice {self.seed}], {g}, "
                    f"λ={self.lam_rel:g}·mean‖X_t‖²{xt}" + (f", order {self.order}" if self.order != "natural" else ""))
        mm = f", mismatch {self.mismatch}" if self.mismatch else ""
        od = f", order {self.order}" if self.order != "natural" else ""
        return f"{self.family}, {g}, λ={self.lam_rel:g}·mean‖X_t‖²{mm}{od}"


class LayerBank:
    """Real layers to audit on, besides the synthetic families: ``{name: (W, X, X_tilde)}``
    (``X_tilde`` may be ``None``; float32 or float64 arrays, W n × N, X and X_tilde m × N).

    Each real-layer case is a slice: ``m`` calibration rows, ``N`` input features and ``n`` weight
    rows drawn without replacement by the case's seed (a layer restricted to a subset of its
    features and outputs is a layer). Qronos-like quantizers get the captured ``X_tilde`` (the
    inputs after the earlier layers were quantized). Stored as one ``.npz`` (:meth:`save`,
    :meth:`load`) with arrays ``<name>/W``, ``<name>/X``, ``<name>/X_tilde`` and a JSON ``meta``.
    """

    #: the default slice of a case (``case_shape``; N a multiple of the grouped grids' group size 8)
    SLICE = {"m": 256, "N": 64, "n": 16}

    def __init__(self, layers: dict, meta: dict | None = None, case_shape: dict | None = None):
        if not isinstance(layers, dict) or not layers:
            raise ValueError("layers must be a non-empty dict {name: (W, X, X_tilde)}")
        meta = dict(meta or {})
        sl = dict(case_shape or meta.get("slice") or self.SLICE)
        if set(sl) != {"m", "N", "n"} or not all(isinstance(v, int) and v >= 1 for v in sl.values()):
            raise ValueError(f"case_shape must be {{'m': rows, 'N': features, 'n': weight rows}} of positive "
                             f"integers, got {sl!r}")
        if sl["N"] % 8:
            raise ValueError(f"case_shape: N must be a multiple of 8 (the grouped grids' group size), got {sl['N']}")
        meta["slice"] = sl
        #: the slice every case of this bank takes
        self.case_shape = sl
        self.layers = {}
        for name, t in layers.items():
            if not isinstance(name, str) or not name or "/" in name:
                raise ValueError(f"layer names must be non-empty strings without '/', got {name!r}")
            W, X, Xt = (tuple(t) + (None,))[:3]
            W, X = np.asarray(W), np.asarray(X)
            if W.ndim != 2 or X.ndim != 2 or W.shape[1] != X.shape[1]:
                raise ValueError(f"layer {name}: need W (n × N) and X (m × N), got {W.shape} and {X.shape}")
            if Xt is not None and np.shape(Xt) != X.shape:
                raise ValueError(f"layer {name}: X_tilde must have X's shape {X.shape}, got {np.shape(Xt)}")
            if X.shape[0] < sl["m"] or X.shape[1] < sl["N"] or W.shape[0] < sl["n"]:
                raise ValueError(f"layer {name}: needs at least {sl['m']} rows of X, {sl['N']} features and "
                                 f"{sl['n']} weight rows, got X {X.shape}, W {W.shape}")
            self.layers[name] = (W, X, None if Xt is None else np.asarray(Xt))
        self.meta = meta

    def names(self) -> list[str]:
        return list(self.layers)

    def slice(self, name: str, m: int, N: int, n: int, seed: int):
        """``(W, X, X_tilde)`` in float64: ``n`` weight rows, ``N`` features, ``m`` calibration rows
        of layer ``name``, chosen by ``seed`` (features and rows kept in their original order)."""
        W, X, Xt = self.layers[name]
        rng = np.random.default_rng(seed)
        cols = np.sort(rng.choice(X.shape[1], size=min(N, X.shape[1]), replace=False))
        rows = np.sort(rng.choice(X.shape[0], size=min(m, X.shape[0]), replace=False))
        wrows = np.sort(rng.choice(W.shape[0], size=min(n, W.shape[0]), replace=False))
        f = lambda A: np.ascontiguousarray(A[np.ix_(rows, cols)], dtype=np.float64)  # noqa: E731
        return (np.ascontiguousarray(W[np.ix_(wrows, cols)], dtype=np.float64), f(X),
                None if Xt is None else f(Xt))

    def save(self, path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for name, (W, X, Xt) in self.layers.items():
            arrays[f"{name}/W"], arrays[f"{name}/X"] = W, X
            if Xt is not None:
                arrays[f"{name}/X_tilde"] = Xt
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, meta=json.dumps(self.meta, sort_keys=True), **arrays)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path) -> "LayerBank":
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"real layers: no file {path}; build one with `python -m verify.field_audit` "
                             "(SmolLM2 layers) or LayerBank({...}).save(path)")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
                names = sorted({k.rsplit("/", 1)[0] for k in z.files if "/" in k},
                               key=lambda k: [f for f in z.files if f.startswith(k + "/")][0])
                layers = {nm: (z[f"{nm}/W"], z[f"{nm}/X"], z[f"{nm}/X_tilde"] if f"{nm}/X_tilde" in z.files else None)
                          for nm in names}
        except (OSError, ValueError, KeyError) as exc:
            raise ValueError(f"real layers: {path} is not a layer bank ({exc}); it needs arrays <name>/W and "
                             "<name>/X") from None
        order = meta.get("layers")
        if order and set(order) == set(layers):
            layers = {k: layers[k] for k in order}
        return cls(layers, meta)


def audit_cases(kind: str, rounding: str, *, families=FAMILIES, trials: int = 1200, seed: int = 0,
                orders=("natural",), grids=tuple(GRIDS), bank: LayerBank | None = None) -> list[AuditCase]:
    """The plan: every family × grid × λ (× mismatch for Qronos) × order, then the same for every
    real layer of ``bank`` (a slice of each; Qronos on its captured ``X̃``). Both orders of one
    setting share its data (same seed)."""
    mismatches = (0.0,) if kind == "optq" else (0.3, 1.0)
    cases = []
    i = 0
    for fam in families:
        for gname in grids:
            g = GRIDS[gname]
            for lam_rel in (0.01, 1.0):
                for mm in mismatches:
                    m = 16 if fam == "wide" else 64
                    for od in orders:
                        cases.append(AuditCase(fam, g, lam_rel, seed + i, m=m,
                                               trials=trials if rounding == "stochastic" else 0, mismatch=mm, order=od))
                    i += 1
    real = []
    if bank is not None:
        sl = bank.case_shape
        k = 0
        for name in bank.names():
            for gname in grids:
                for lam_rel in (0.01, 1.0):
                    for od in orders:
                        real.append(AuditCase(name, GRIDS[gname], lam_rel, seed + 7919 * (k + 1), m=sl["m"],
                                              N=sl["N"], n=1 if rounding == "stochastic" else sl["n"],
                                              trials=trials if rounding == "stochastic" else 0,
                                              mismatch=0.0 if kind == "optq" else 1.0, order=od, bank=bank))
                    k += 1
    return cases + real


def _case_data(case: AuditCase):
    from .campaign import make_grid
    from .data import make_X, mismatch

    if case.bank is not None:
        W, X, Xt = case.bank.slice(case.family, case.m, case.N, case.n, case.seed)
        if case.trials:  # stochastic: rows are trials of one real weight row
            W = np.repeat(W[:1], case.trials, axis=0)
        if not case.mismatch:
            Xt = None
        elif Xt is None:
            Xt = X.copy()
        grid = make_grid(case.grid, W)
        D = Xt if Xt is not None else X
        lam = case.lam_rel * float(np.mean(np.sum(D * D, axis=0)) or 1.0)
        return W, X, Xt, grid, lam
    rng = np.random.default_rng(case.seed)
    X = make_X(case.family, case.m, case.N, rng, cond=1e6)
    if case.trials:
        w = rng.standard_normal(case.N)
        W = np.repeat(w[None, :], case.trials, axis=0)
    else:
        W = rng.standard_normal((case.n, case.N))
    Xt = mismatch(X, rng, kind="noise", level=case.mismatch) if case.mismatch else None
    grid = make_grid(case.grid, W)
    D = Xt if Xt is not None else X
    lam = case.lam_rel * float(np.mean(np.sum(D * D, axis=0)) or 1.0)
    return W, X, Xt, grid, lam


class _BadOutput(Exception):
    """The quantizer's return value is not a finite n × N array (``what``: a short description)."""

    def __init__(self, message, what):
        super().__init__(message)
        self.what = what


def _dtype_name(dt) -> str:
    return str(dt).split(".")[-1]


def _as_output(out, shape):
    """``(Q as float64 NumPy, name of the returned dtype)``; :class:`_BadOutput` when ``out`` is not a
    finite array of ``shape``."""
    Q = getattr(out, "Q", out)  # a result object
    if Q is None:
        raise _BadOutput("the quantizer returned None", "None")
    if isinstance(Q, (str, bytes)):
        raise _BadOutput(f"the quantizer returned a {type(Q).__name__}, not an array", type(Q).__name__)
    name = _dtype_name(getattr(Q, "dtype", "float64"))
    try:
        A = _host(Q)
    except Exception as exc:  # noqa: BLE001 - any non-numeric object
        raise _BadOutput(f"the quantizer returned {type(Q).__name__}, which is not a numeric array ({exc})",
                         type(Q).__name__) from None
    if A.shape != tuple(shape):
        hint = " (did it return Qᵀ?)" if A.shape == tuple(shape)[::-1] else ""
        raise _BadOutput(f"the quantizer returned shape {A.shape}, expected {tuple(shape)} (n × N, like W){hint}",
                         "shape")
    if np.iscomplexobj(A):
        raise _BadOutput("the quantizer returned complex numbers", "complex")
    if not np.all(np.isfinite(A)):
        raise _BadOutput(f"the quantizer returned NaN or Inf ({int(np.sum(~np.isfinite(A)))} entries)", "NaN")
    return A, name


def _reported_order(out, N):
    """The processing order a quantizer reports it used (``out.order``, or ``out.used["order"]``), or None."""
    p = getattr(out, "order", None)
    if p is None:
        p = (getattr(out, "used", None) or {}).get("order")
    if p is None:
        return None
    try:
        p = np.asarray(_host(p)).astype(np.int64).ravel()
    except Exception:  # noqa: BLE001 - not an order
        return None
    return p if p.shape == (N,) and np.array_equal(np.sort(p), np.arange(N)) else None


def _tie_break(p, order, d) -> int:
    """How many positions of the permutation ``p`` differ from the declared ``order`` (ties by lower
    index) when ``p`` sorts ``d`` the same way and differs only among exactly equal values; 0 otherwise
    (the same order, or not a tie-break of it)."""
    ref = _order(order, None, len(p), d=d)
    if np.array_equal(p, ref):
        return 0
    dp = d[p] if order == "decreasing" else -d[p]
    if np.any(np.diff(dp) > 0):  # not sorted: a different order, judged as declared
        return 0
    return int(np.sum(p != ref)) if np.array_equal(d[p], d[ref]) else 0


def _one_line(msg: str, limit: int = 300) -> str:
    s = " ".join(str(msg).split())
    return s if len(s) <= limit else s[:limit - 1] + "…"


@dataclass
class CaseOutcome:
    """What happened on one case: ``status`` ``"ran"``, ``"declined"`` or ``"error"``."""

    case: AuditCase
    status: str
    claims: dict = field(default_factory=dict)  # id -> theory.Verdict (claims only)
    hypotheses: list = field(default_factory=list)  # Verdicts (hyp.*) or fallback dicts
    fails: list = field(default_factory=list)  # (check id, detail)
    data: dict = field(default_factory=dict)
    reason: str = ""  # declined: the quantizer's message
    error: dict | None = None  # {"case", "category" (raised|output|audit), "type", "message", "traceback"}
    dead: dict | None = None  # {"convention", "dead", "nonzero"} when the loop data has dead features
    precision: str = ""
    dtype: str = ""
    ties: int = 0  # positions where the reported act_order permutation breaks ties of diag H differently
    agreement: dict | None = None  # Q against this package's own algorithm on the same case (see _agreement)


def _call_signature(kind, pass_order):
    extra = "X_tilde, " if kind.startswith("qronos") else ""
    return f"f(W, X, *, {extra}grid, lam, rng{', order' if pass_order else ''})"


def evaluate_case(quantizer, kind, rounding, case: AuditCase, *, alpha: float, eta: float = 0.05,
                  precision: str | None = None, pass_order: bool = False) -> CaseOutcome:
    """Run the quantizer on one case and check everything (see :class:`CaseOutcome`).

    ``precision``: the declared working precision (``None``: inferred from the returned dtype);
    ``pass_order``: call the quantizer with ``order=case.order``."""
    import theory

    W, X, Xt, grid, lam = _case_data(case)
    data = dict(W=W, X=X, X_tilde=Xt, Q=None, lam=lam, grid=grid)
    rng = np.random.default_rng(case.seed + 10_000)
    kw = dict(grid=grid, lam=lam, rng=rng)
    if kind.startswith("qronos"):
        kw["X_tilde"] = Xt.copy()
    if pass_order:
        kw["order"] = case.order
    label = case.label()
    try:
        out = quantizer(W.copy(), X.copy(), **kw)
    except NotImplementedError as exc:
        return CaseOutcome(case, "declined", data=data, reason=_one_line(str(exc) or type(exc).__name__))
    except Exception as exc:  # noqa: BLE001 - any failure of the quantizer is reported with its case
        err = {"case": label, "category": "raised", "type": type(exc).__name__, "message": _one_line(exc),
               "traceback": traceback.format_exc()}
        return CaseOutcome(case, "error", data=data, error=err)
    try:
        Q, qdtype = _as_output(out, W.shape)
    except _BadOutput as exc:
        err = {"case": label, "category": "output", "type": exc.what, "message": _one_line(exc), "traceback": ""}
        return CaseOutcome(case, "error", data=data, error=err)
    data["Q"] = Q
    prec = precision or (qdtype if qdtype in PRECISIONS else "float64")
    oc = CaseOutcome(case, "ran", data=data, precision=prec, dtype=qdtype)
    dead_conv = "zero"
    if kind == "optq":
        Dl = X if Xt is None else Xt
        dead = np.flatnonzero(np.sum(Dl * Dl, axis=0) == 0)
        if dead.size:
            nz = int(np.sum(np.any(Q[:, dead] != 0, axis=0)))
            dead_conv = "keep" if nz else "zero"
            oc.dead = {"convention": dead_conv, "dead": int(dead.size), "nonzero": nz}
    order_used = case.order
    reported = _reported_order(out, N=W.shape[1])
    if reported is not None and case.order in ("decreasing", "increasing"):
        Dl = Xt if (kind.startswith("qronos") or Xt is not None) else X
        ties = _tie_break(reported, case.order, _loop_diag(Dl, "keep" if kind.startswith("qronos") else dead_conv))
        if ties:  # the same order up to how ties of diag H were broken: judge under the one used
            order_used = reported
            oc.ties = ties
    try:
        run = implied_run(kind, W, Q, X, grid=grid, lam=lam, order=order_used, rounding=rounding, X_tilde=Xt,
                          dead=dead_conv, precision=prec, dtype=qdtype if qdtype in PRECISIONS else None)
        verdicts = theory.check_all(run, alpha=alpha, eta=eta)
        hyps = [v for k, v in verdicts.items() if k.startswith("hyp.")]
        claims = {k: v for k, v in verdicts.items() if not k.startswith("hyp.")}
    except Exception as exc:  # noqa: BLE001 - the audit's own failure, reported as an internal error
        oc.status = "error"
        oc.error = {"case": label, "category": "audit", "type": type(exc).__name__, "message": _one_line(exc),
                    "traceback": traceback.format_exc()}
        return oc
    oc.claims = claims
    oc.hypotheses = hyps
    if rounding == "nearest":
        oc.agreement = _agreement(kind, W, Q, X, Xt, grid, lam, order_used, dead_conv, prec)
    for h in hyps:
        d = h.to_dict() if hasattr(h, "to_dict") else h
        if d["status"] == "violated":
            oc.fails.append((d["claim"], d.get("message") or repr(h)))
    oc.fails += [(cid, repr(v)) for cid, v in claims.items() if v.violated]
    return oc


def _agreement(kind, W, Q, X, Xt, grid, lam, order, dead, precision) -> dict | None:
    """How ``Q`` compares with this package's own algorithm (``algorithms.optq`` or ``qronos``, float64,
    nearest rounding) on the same case, grid, λ, order (the permutation the quantizer reported, when
    it broke ties otherwise) and dead-feature convention: the fraction of entries on the same grid
    level (``|q − q_ref| ≤ 1e-5·max|w|`` of the row: far below any level spacing) and whether ``Q``
    equals it bit for bit (meaningful for a float64 quantizer). A report item, not a verdict: the
    verdicts come from the checker alone. ``None`` when the reference cannot run the case."""
    import algorithms as A

    try:
        if kind == "optq":
            ref = A.optq(W, X, grid=grid, lam=lam, order=order, dead=dead)
        else:
            ref = A.qronos(W, X, Xt, grid=grid, lam=lam, order=order,
                           variant="projection" if kind == "qronos-projection" else "original")
    except Exception:  # noqa: BLE001 - a case outside the reference's domain: nothing to compare
        return None
    R = np.asarray(ref.Q, dtype=np.float64)
    tol = 1e-5 * np.max(np.abs(W), axis=1, keepdims=True)
    same = np.abs(Q - R) <= tol
    return {"same_level": float(np.mean(same)), "bitwise": bool(np.array_equal(Q, R)),
            "rows_identical": int(np.sum(np.all(same, axis=1))), "rows": int(Q.shape[0]), "precision": precision}


def summarize_agreement(outcomes) -> dict | None:
    """Aggregate :func:`_agreement` over ``(label, agreement)`` pairs."""
    rows = [(lab, a) for lab, a in outcomes if a is not None]
    if not rows:
        return None
    worst = min(rows, key=lambda r: r[1]["same_level"])
    return {"cases": len(rows), "bitwise_cases": sum(a["bitwise"] for _, a in rows),
            "identical_cases": sum(a["same_level"] == 1.0 for _, a in rows),
            "entries_same_level": float(np.mean([a["same_level"] for _, a in rows])),
            "worst": {"case": worst[0], "same_level": worst[1]["same_level"]}}


# ------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------
_HYP_NAMES = {"hyp.on_grid": "on the grid", "hyp.nearest": "nearest rounding", "hyp.record": "loop record",
              "hyp.unbiased": "unbiasedness", "hyp.stochastic_step": "stochastic step"}


@dataclass
class AuditReport:
    """The outcome of an audit. ``claims``/``hypotheses``: per id the summary of
    :func:`theory.verdicts.aggregate` over the cases that ran (status from its vocabulary), plus
    ``cases_in_scope`` and ``first`` (the first violation). ``errors``: cases on which the quantizer
    (or the audit) failed; ``declined``: cases the quantizer declined, with its reason;
    ``conventions``: convention differences found (dead features); ``precision``: the working
    precision the claims were checked in; ``problem``: one line when the quantizer could not be
    exercised at all (exit code 2)."""

    quantizer: str
    kind: str
    rounding: str
    order: str
    cases: int = 0  # cases that ran
    planned: int = 0
    claims: dict = field(default_factory=dict)
    hypotheses: dict = field(default_factory=dict)
    counterexamples: list = field(default_factory=list)
    declined: list = field(default_factory=list)  # {"case", "reason"}
    errors: list = field(default_factory=list)  # {"case", "category", "type", "message"}
    conventions: list = field(default_factory=list)
    precision: str = ""
    precision_source: str = ""
    precision_cases: dict = field(default_factory=dict)
    orders: tuple = ("natural",)
    grids: tuple = tuple(GRIDS)
    problem: str | None = None
    seconds: float = 0.0
    #: ``Q`` against this package's own algorithm on the same cases (:func:`summarize_agreement`)
    agreement: dict | None = None

    @property
    def flagged(self) -> bool:
        return any(c["status"] == "violated" for c in self.claims.values()) or any(
            h["status"] == "violated" for h in self.hypotheses.values())

    def _statuses(self):
        return [c["status"] for c in self.claims.values()] + [h["status"] for h in self.hypotheses.values()]

    @property
    def status(self) -> str:
        """The audit's status in the vocabulary of :mod:`theory.verdicts`."""
        from theory.verdicts import CONSISTENT, ERROR, INSUFFICIENT, NOT_EXERCISED, VIOLATED

        st = self._statuses()
        if self.problem:
            return ERROR
        if VIOLATED in st:
            return VIOLATED
        if self.errors or ERROR in st:
            return ERROR
        if self.cases == 0 or CONSISTENT not in st:
            return NOT_EXERCISED
        if INSUFFICIENT in st:
            return INSUFFICIENT
        return CONSISTENT

    def exit_code(self) -> int:
        """2 when the quantizer could not be exercised (``problem``); 3 when no case ran; otherwise
        :func:`theory.verdicts.exit_code` of every claim and hypothesis with the failed cases as errors
        (1 violated, 4 some cases failed, 3 insufficient evidence, 0 all consistent)."""
        from theory.verdicts import EXIT, exit_code

        if self.problem:
            return EXIT["bad input"]
        if self.cases == 0 and not self.errors:
            return EXIT["not exercised"]
        return exit_code(self._statuses(), errors=len(self.errors), required_checked=self.cases > 0)

    def not_checked(self) -> list[tuple[str, str]]:
        """``(id, reason)`` of every claim and hypothesis that was not checked in any case."""
        out = []
        for group in (self.hypotheses, self.claims):
            for cid, c in group.items():
                if c["status"] not in ("out of scope", "not exercised"):
                    continue
                if cid == "hyp.unbiased" and self.rounding == "nearest":
                    why = "deterministic (nearest) rounding declared"
                elif cid == "hyp.nearest" and self.rounding == "stochastic":
                    why = "stochastic rounding declared"
                elif c.get("reasons"):
                    why = max(c["reasons"].items(), key=lambda kv: kv[1])[0]
                else:
                    why = "no case ran" if self.cases == 0 else "not in scope in any case"
                out.append((cid, why))
        return out

    def to_dict(self) -> dict:
        return {"quantizer": self.quantizer, "kind": self.kind, "rounding": self.rounding, "order": self.order,
                "orders": list(self.orders), "grids": list(self.grids), "cases": self.cases, "planned": self.planned,
                "status": self.status, "exit_code": self.exit_code(), "flagged": self.flagged, "claims": self.claims,
                "hypotheses": self.hypotheses, "counterexamples": self.counterexamples, "declined": self.declined,
                "errors": [{k: v for k, v in e.items() if k != "traceback"} for e in self.errors],
                "conventions": self.conventions, "precision": self.precision,
                "precision_source": self.precision_source, "precision_cases": self.precision_cases,
                "not_checked": [{"id": i, "reason": r} for i, r in self.not_checked()], "problem": self.problem,
                "seconds": self.seconds, "agreement": self.agreement}

    def format(self) -> str:
        if self.problem:
            return f"audit of {self.quantizer}: {self.problem}"
        lines = [f"audit of {self.quantizer} (declared: {self.kind}, {self.rounding} rounding, "
                 f"order{'s' if len(self.orders) > 1 else ''} {', '.join(self.orders)}; grids {', '.join(self.grids)}): "
                 f"{self.cases} of {self.planned} cases ran, {len(self.declined)} declined, {len(self.errors)} failed, "
                 f"{self.seconds:.1f} s"]
        if self.precision:
            lines.append(f"precision: {self.precision} ({self.precision_source})")
        ag = self.agreement
        if ag:
            lines.append(f"agreement with provable-ptq's {self.kind} (float64, same grid, λ, order): "
                         f"{ag['identical_cases']} of {ag['cases']} cases on the same levels everywhere, "
                         f"{ag['bitwise_cases']} bit for bit; {100 * ag['entries_same_level']:.2f}% of entries "
                         f"(worst case {100 * ag['worst']['same_level']:.1f}%: {ag['worst']['case']})")
        for c in self.conventions:
            lines.append(f"convention: {c['convention']}: expected: {c['expected']}; found: this quantizer {c['found']} "
                         f"in {len(c['cases'])} cases (e.g. {c['cases'][0]}); the claims are checked under its convention "
                         f"({c['checked_as']}), not reported as violations")
        for hid, h in self.hypotheses.items():
            if h["status"] in ("out of scope", "not exercised"):
                continue
            lines.append(f"  hypothesis {hid:18s} {h['status']:22s} {h.get('runs', 0)} cases"
                         + (f"  first failure: {h['first']}" if h.get("first") else ""))
        for cid, c in self.claims.items():
            if c["status"] in ("out of scope", "not exercised"):
                continue
            wr = c.get("worst_ratio")
            extra = f"  worst ratio {wr:.4g}" if isinstance(wr, float) else ""
            extra += f"  first failure: {c['first']}" if c.get("first") else ""
            lines.append(f"  {cid:29s} {c['status']:22s} in scope in {c['cases_in_scope']} cases{extra}")
        by_reason: dict = {}
        if self.cases == 0:
            by_reason["no case ran"] = ["every claim and hypothesis"]
        for cid, why in ([] if self.cases == 0 else self.not_checked()):
            by_reason.setdefault(why, []).append(_HYP_NAMES.get(cid, cid))
        for why, ids in by_reason.items():
            lines.append(f"  not checked: {', '.join(ids)}: {why}")
        if self.declined:
            reasons = Counter(d["reason"] for d in self.declined)
            lines.append(f"declined by the quantizer: {len(self.declined)} of {self.planned} cases ("
                         + "; ".join(f"{r!r} on {k}" for r, k in reasons.most_common(3)) + f"), e.g. {self.declined[0]['case']}")
        if self.errors:
            q = [e for e in self.errors if e["category"] != "audit"]
            a = [e for e in self.errors if e["category"] == "audit"]
            if q:
                lines.append(f"ERRORS: the quantizer raised (or returned a bad Q) on {len(q)} of {self.planned} cases:")
                lines += [f"  {e['case']}: {e['type']}: {e['message']}" for e in q[:10]]
                if len(q) > 10:
                    lines.append(f"  … and {len(q) - 10} more")
            if a:
                lines.append(f"INTERNAL ERRORS of the audit on {len(a)} cases (rerun with --debug for tracebacks):")
                lines += [f"  {e['case']}: {e['type']}: {e['message']}" for e in a[:5]]
        for ce in self.counterexamples:
            lines.append(f"  counterexample for {ce['check']}: {ce['path']} ({ce['shape']})")
        if self.flagged:
            lines.append("FLAGGED: the quantizer violates a claim or a hypothesis")
        elif self.cases == 0:
            lines.append("NOT EXERCISED: no case ran (the quantizer declined every case); nothing was checked")
        elif self.errors:
            lines.append(f"no claim or hypothesis violated on the {self.cases} cases that ran, but "
                         f"{len(self.errors)} of {self.planned} cases failed (see ERRORS)")
        elif self.status == "insufficient evidence":
            lines.append("no claim or hypothesis violated, but some statistical checks had insufficient evidence")
        else:
            lines.append("no claim or hypothesis violated")
        return "\n".join(lines)


def _signature_problem(quantizer, kind, pass_order) -> str | None:
    """One line when ``quantizer`` cannot be called as the contract says (None when it can, or when
    its signature cannot be read)."""
    try:
        sig = inspect.signature(quantizer)
    except (TypeError, ValueError):
        return None
    kw = {"grid": None, "lam": 1.0, "rng": None}
    if kind.startswith("qronos"):
        kw["X_tilde"] = None
    if pass_order:
        kw["order"] = "natural"
    try:
        sig.bind(None, None, **kw)
    except TypeError as exc:
        call = _call_signature(kind, pass_order)
        return (f"the quantizer cannot be called as {call}: its signature is "
                f"{getattr(quantizer, '__name__', 'f')}{sig} ({exc}) — it must accept {call}")
    return None


def _all_failed_problem(errors, declined, planned, kind, pass_order) -> str:
    call = _call_signature(kind, pass_order)
    groups = Counter((e["category"], e["type"]) for e in errors)
    (cat, typ), k = groups.most_common(1)[0]
    first = next(e for e in errors if (e["category"], e["type"]) == (cat, typ))
    scope = "every case" if not declined else f"every case it did not decline ({len(declined)} declined)"
    others = ""
    if len(groups) > 1:
        others = " (" + ", ".join(f"{t} on {n}" for (_, t), n in groups.most_common()) + ")"
    if cat == "output":
        return (f"the quantizer's output was not a finite n × N array on {scope}{others}: {first['message']} — "
                f"it must return Q, a finite n × N array like W (NumPy, CuPy or torch, or an object with .Q)")
    fix = (f"it must accept {call}" if typ == "TypeError" else
           "fix the quantizer, or raise NotImplementedError (verify.audit.Decline) for the cases it does not support")
    return f"the quantizer raised {typ} on {scope}{others}: {first['message']} — {fix}"


def audit(quantizer, *, kind: str | None = None, rounding: str | None = None, order: str | None = None,
          orders=None, grids=None, precision: str | None = None, families=FAMILIES, trials: int = 1200,
          seed: int = 0, alpha: float = 1e-4, eta: float = 0.05, stop_at_first: bool = False, shrink: bool = True,
          out_dir=None, progress: bool = False, name: str | None = None, real_layers=None) -> AuditReport:
    """Audit ``quantizer`` over the campaign's data families (see the module docstring).

    What the quantizer is comes from the arguments, else from its :func:`declare` declaration, else
    the defaults (``optq``, nearest rounding, natural order, every grid of :data:`GRIDS`, precision
    inferred). ``order``: the one order it uses (not passed to it); ``orders``: it takes ``order=``
    and is audited on each. ``precision``: its working precision (``None`` or ``"auto"``: inferred
    per case from the dtype of the returned ``Q``). ``trials``: stochastic rounding, rows per case
    (≥ 1). ``alpha`` is the family-wise false-alarm rate of the statistical checks (split over the
    cases); ``stop_at_first`` stops at the first failing case; ``shrink`` searches a minimal
    counterexample for the first deterministic failure and saves it under ``out_dir`` (default
    ``ptq-audit/``). ``real_layers``: a :class:`LayerBank` (or the path of one saved as ``.npz``)
    whose layers are audited too, after the synthetic families (a slice of each layer per case). Raises ``ValueError`` for bad arguments; problems of the quantizer are reported
    (``problem``, ``errors``), never raised.
    """
    import theory
    from theory.verdicts import aggregate
    from tqdm.auto import tqdm

    if isinstance(quantizer, str):
        name = name or quantizer
        quantizer = load_quantizer(quantizer)
    decl = dict(getattr(quantizer, "__ptq_audit__", None) or {})
    _check_declaration(decl)
    kind = kind or decl.get("kind") or "optq"
    rounding = rounding or decl.get("rounding") or "nearest"
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding must be 'nearest' or 'stochastic', got {rounding!r}")
    if order is not None and orders is not None:
        raise ValueError("give either order (the one order the quantizer uses) or orders (it takes order=), not both")
    if orders is None and order is None:
        orders, order = decl.get("orders"), decl.get("order")
    if orders is not None:
        orders = (orders,) if isinstance(orders, str) else tuple(orders)
        pass_order = True
    else:
        orders = (order or "natural",)
        pass_order = False
    grids = grids if grids is not None else decl.get("grids", tuple(GRIDS))
    grids = (grids,) if isinstance(grids, str) else tuple(grids)
    if precision is None:
        precision = decl.get("precision")
    if precision == "auto":
        precision = None
    _check_declaration({"orders": orders, "grids": grids, **({"precision": precision} if precision else {})})
    families = (families,) if isinstance(families, str) else tuple(families)
    bad_fam = [f for f in families if f not in FAMILIES]
    if bad_fam or (not families and real_layers is None):
        raise ValueError(f"families must be a selection of {FAMILIES} (empty only with real_layers), got {families!r}")
    if rounding == "stochastic" and (isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1):
        raise ValueError(f"trials must be an integer ≥ 1 for stochastic rounding (rows per case), got {trials!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")

    if real_layers is not None and not isinstance(real_layers, LayerBank):
        if not isinstance(real_layers, (str, Path)):
            raise TypeError(f"real_layers must be a LayerBank or the path of one (.npz), got {type(real_layers).__name__}")
        real_layers = LayerBank.load(real_layers)
    cases = audit_cases(kind, rounding, families=families, trials=int(trials), seed=seed, orders=orders, grids=grids,
                        bank=real_layers)
    # Bonferroni over the statistical tests only (deterministic checks raise no false alarms)
    n_stat = sum(c.kind in ("probability bound", "expectation bound") for c in theory.CLAIMS.values()) + 1
    a_case = alpha / max(1, len(cases) * n_stat)
    rep = AuditReport(quantizer=name or getattr(quantizer, "__name__", "quantizer"), kind=kind, rounding=rounding,
                      order=orders[0] if len(orders) == 1 else ",".join(orders), planned=len(cases), orders=orders,
                      grids=grids)
    t0 = time.time()
    rep.problem = _signature_problem(quantizer, kind, pass_order)
    if rep.problem:
        rep.seconds = time.time() - t0
        return rep
    first_det = None
    dead_cases = {"zero": [], "keep": []}
    dead_counts = {"dead": 0, "nonzero": 0}
    tie_cases = []
    precs = Counter()
    agreements = []
    for case in tqdm(cases, desc="audit", unit="case", disable=None if progress else True):
        oc = evaluate_case(quantizer, kind, rounding, case, alpha=a_case, eta=eta, precision=precision,
                           pass_order=pass_order)
        label = case.label()
        if oc.status == "declined":
            rep.declined.append({"case": label, "reason": oc.reason})
            continue
        if oc.status == "error":
            rep.errors.append(oc.error)
            if oc.precision:
                precs[oc.precision] += 1
            continue
        rep.cases += 1
        precs[oc.precision] += 1
        agreements.append((label, oc.agreement))
        if oc.ties:
            tie_cases.append(f"{label} ({oc.ties} positions)")
        if oc.dead:
            dead_cases[oc.dead["convention"]].append(label)
            if oc.dead["convention"] == "keep":
                dead_counts["dead"] += oc.dead["dead"]
                dead_counts["nonzero"] += oc.dead["nonzero"]
        aggregate(oc.hypotheses, source=label, into=rep.hypotheses)
        aggregate(oc.claims.values(), source=label, into=rep.claims)
        for h in oc.hypotheses:
            d = h.to_dict() if hasattr(h, "to_dict") else h
            s = rep.hypotheses[d["claim"]]
            if d["status"] == "violated" and not s.get("first"):
                s["first"] = f"{label}: {d.get('message') or ''}"
            if d["status"] == "violated" and first_det is None and d["claim"] in ("hyp.on_grid", "hyp.nearest"):
                first_det = (d["claim"], case)
        for cid, v in oc.claims.items():
            c = rep.claims[cid]
            if v.violated:
                if not c.get("first"):
                    c["first"] = f"{label}: {v!r}"
                if first_det is None and v.kind in ("identity", "deterministic bound", "implication"):
                    first_det = (cid, case)
        if stop_at_first and oc.fails:
            break
    for group in (rep.hypotheses, rep.claims):
        for s in group.values():
            s["cases_in_scope"] = s.get("runs", 0)
            s.setdefault("first", None)
    for cid, cl in theory.CLAIMS.items():  # claims never evaluated (no case ran)
        if cid not in rep.claims:
            rep.claims[cid] = aggregate([{"claim": cid, "kind": cl.kind, "status": "not exercised", "in_scope": 0}])[cid]
            rep.claims[cid].update(cases_in_scope=0, first=None)
    if dead_cases["keep"]:
        rep.conventions.append({
            "convention": "dead features", "expected": "GPTQ zeroes the weights of dead features (q_t = 0)",
            "found": f"rounds them ({dead_counts['nonzero']} of {dead_counts['dead']} dead columns nonzero)",
            "checked_as": "dead weights kept, H_tt = λ", "cases": dead_cases["keep"],
            "cases_zeroed": len(dead_cases["zero"])})
    if tie_cases:
        rep.conventions.append({
            "convention": "act_order ties", "expected": "GPTQ's order: diag H descending, ties by lower index",
            "found": "breaks ties of diag H otherwise (its reported permutation)",
            "checked_as": "the reported permutation (it sorts diag H the same way)", "cases": tie_cases})
    if precision:
        rep.precision, rep.precision_source = precision, "declared"
    elif precs:
        rep.precision = "/".join(p for p, _ in precs.most_common())
        rep.precision_source = "inferred from the returned Q's dtype" + (
            "" if len(precs) == 1 else ": " + ", ".join(f"{p} on {k} cases" for p, k in precs.most_common()))
    rep.precision_cases = dict(precs)
    rep.agreement = summarize_agreement(agreements)
    quantizer_errors = [e for e in rep.errors if e["category"] != "audit"]
    if rep.cases == 0 and quantizer_errors:
        rep.problem = _all_failed_problem(quantizer_errors, rep.declined, len(cases), kind, pass_order)
    if shrink and first_det is not None:
        ce = shrink_counterexample(quantizer, kind, rounding, None, first_det[0], first_det[1], alpha=a_case,
                                   eta=eta, out_dir=out_dir, precision=precision, pass_order=pass_order)
        if ce:
            rep.counterexamples.append(ce)
    rep.seconds = time.time() - t0
    return rep


# ------------------------------------------------------------------------------------------------
# minimal counterexamples
# ------------------------------------------------------------------------------------------------
def _fails_check(check, quantizer, kind, rounding, case, alpha, eta, precision=None, pass_order=False):
    oc = evaluate_case(quantizer, kind, rounding, case, alpha=alpha, eta=eta, precision=precision,
                       pass_order=pass_order)
    if oc.status != "ran":
        return False, None
    return any(f[0] == check for f in oc.fails), oc.data


def shrink_counterexample(quantizer, kind, rounding, order, check, case: AuditCase, *, alpha, eta, out_dir=None,
                          max_examples: int = 150, precision=None, pass_order=False):
    """Shrink the failing case (smaller N, m, n and other seeds) with hypothesis; save the smallest
    failing layer as ``.npz`` and return its description (None when nothing smaller fails).
    ``order``: unused (the case carries its order)."""
    from hypothesis import HealthCheck, find, settings
    from hypothesis import strategies as st
    from hypothesis.errors import NoSuchExample

    g = int(case.grid.get("group_size") or 1)

    def strat():
        return st.builds(
            lambda k, m, n, seed: AuditCase(case.family, case.grid, case.lam_rel, seed, m=m, N=g * k, n=n,
                                            trials=0, mismatch=case.mismatch, order=case.order, bank=case.bank),
            k=st.integers(max(1, 2 // g), max(1, case.N // g)), m=st.integers(2, case.m), n=st.integers(1, case.n),
            seed=st.integers(0, 10**6),
        )

    def fails(c):
        return _fails_check(check, quantizer, kind, rounding, c, alpha, eta, precision, pass_order)

    best = case
    try:
        best = find(strat(), lambda c: fails(c)[0],
                    settings=settings(max_examples=max_examples, deadline=None, database=None,
                                      suppress_health_check=list(HealthCheck)))
    except NoSuchExample:
        pass
    ok, data = fails(best)
    if not ok:
        return None
    out = Path(out_dir or "ptq-audit")
    out.mkdir(parents=True, exist_ok=True)
    fname = out / f"counterexample-{check.replace(' ', '_').replace('.', '_')}.npz"
    cfg = {"check": check, "kind": kind, "rounding": rounding, "order": best.order, "lam": data["lam"],
           "grid": data["grid"].to_dict(),
           "case": {k: v for k, v in best.__dict__.items() if k != "bank"},
           **({"real_layer": {"name": best.family, **best.bank.meta}} if best.bank is not None else {})}
    arrays = {k: v for k, v in data.items() if isinstance(v, np.ndarray)}
    np.savez(fname, config=json.dumps(cfg, default=str), **arrays)
    return {"check": check, "path": str(fname), "shape": f"W {data['W'].shape}, X {data['X'].shape}",
            "case": best.label()}
