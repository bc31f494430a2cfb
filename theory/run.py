"""``Run``: the arrays a claim is evaluated on (one quantization of one layer, any quantizer).

A run is plain data, so claims can be checked on the package's algorithms, on a user's own
quantizer (audit), or on stored results, without importing the code that produced them.

Rows of a run are independent: each row of ``W`` is quantized on its own (the rows share ``X``),
so rows are the trials of the probabilistic claims (repeat one weight vector to get trials of
the same law, or use different weight vectors: the tests handle row-wise probabilities).

Conventions (shapes: ``n`` rows, ``N`` features, ``m`` samples):

* ``X`` (``m × N``): the float calibration inputs. ``X_tilde`` (``m × N`` or ``None``): the inputs
  the quantizer actually saw (Qronos' mismatched inputs; for an OPTQ run it means OPTQ was run on
  ``X_tilde`` and is judged against ``X``, claim T4.optq_mismatch). The *loop data* is
  ``X_tilde`` when given, else ``X``.
* ``W``: OPTQ/RTN: the weights the column loop started from (a result's ``W0``: GPTQ zeroes the
  weights of dead features); Qronos: the original target weights ``w`` (``ŵ`` is recomputed by
  :func:`theory.quantities.w_hat`, never taken from the quantizer).
* ``Q`` (``n × N``, original order); ``errors`` and ``z`` (``n × N``, **processing order**: column
  ``t`` is feature ``order[t]``); ``scale``, ``zero`` (``n × N``, original order) and the integer
  range ``[qmin, qmax]`` (``±inf`` for ``δZ``): the levels of entry ``(i, j)`` are
  ``scale·(k − zero)``, ``k ∈ [qmin, qmax]``; ``clipped`` (``n × N``, processing order) and
  ``saturated`` (``n``) say where clipping changed a rounding.
* ``dead``: the Hessian convention of the loop on dead features (``"zero"``: GPTQ, diagonal
  ``m/2``; ``"keep"``); only the tolerance depends on it (see :mod:`theory.quantities`).
* ``precision``: the floating-point precision the run was *computed* in (``"float64"``,
  ``"float32"``, ``"float16"``, ``"bfloat16"``): the checker measures what that precision can
  explain on the run's own inputs (:mod:`theory.precision`). It never comes from ``Q``'s dtype:
  a run built directly defaults to ``"float64"`` (the strictest); :meth:`Run.from_result` takes
  the dtype the algorithm computed in. ``dtype`` is the storage dtype of ``Q``.
* ``steps_fixed``: the steps and zero points were fixed before the column loop (symmetric grids,
  per-row or static-group GPTQ grids). ``False`` for GPTQ groups fitted on the fly: their steps
  depend on earlier (random) errors, which the stochastic claims do not cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._array import dtype_name, to_numpy

__all__ = ["Run", "ALGORITHMS", "ROUNDINGS", "VARIANTS", "PRECISIONS"]

ALGORITHMS = ("optq", "qronos", "rtn")
PRECISIONS = ("float64", "float32", "float16", "bfloat16")
ROUNDINGS = ("nearest", "stochastic")
VARIANTS = ("projection", "original")


def _np(a, name, *, ndim=None, dtype=None):
    if a is None:
        return None
    a = np.asarray(to_numpy(a)) if dtype is None else np.asarray(to_numpy(a), dtype=dtype)
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"Run.{name} must be {ndim}-D, got shape {a.shape}")
    return a


def _float_array(a) -> np.ndarray:
    a = np.asarray(a)
    return a if a.dtype in (np.float32, np.float64) else a.astype(np.float64)


@dataclass(frozen=True, eq=False)
class Run:
    """One quantization run (NumPy arrays; see the module docstring for every field)."""

    X: np.ndarray
    W: np.ndarray
    Q: np.ndarray
    lam: float
    order: np.ndarray
    errors: np.ndarray
    z: np.ndarray
    scale: np.ndarray
    zero: np.ndarray
    qmin: float
    qmax: float
    clipped: np.ndarray
    saturated: np.ndarray
    rounding: str
    algorithm: str
    X_tilde: np.ndarray | None = None
    variant: str | None = None
    y1: np.ndarray | None = None
    dead: str = "keep"
    steps_fixed: bool = True
    dtype: str = ""
    precision: str = "float64"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        for k in ("X", "W", "Q", "errors", "z", "scale", "zero"):
            set_(k, _np(getattr(self, k), k, ndim=2))
        set_("X_tilde", _np(self.X_tilde, "X_tilde", ndim=2))
        set_("order", _np(self.order, "order", ndim=1).astype(np.int64))
        set_("clipped", _np(self.clipped, "clipped", ndim=2, dtype=bool))
        set_("saturated", _np(self.saturated, "saturated", ndim=1, dtype=bool))
        set_("y1", _np(self.y1, "y1"))
        if not self.dtype:
            set_("dtype", dtype_name(self.Q.dtype))
        if self.precision not in PRECISIONS:
            raise ValueError(f"Run.precision must be one of {PRECISIONS} (the precision the run was computed in), "
                             f"got {self.precision!r}")
        set_("lam", float(self.lam))
        set_("qmin", float(self.qmin))
        set_("qmax", float(self.qmax))
        n, N = self.Q.shape
        m = self.X.shape[0]
        if self.X.shape[1] != N:
            raise ValueError(f"X has {self.X.shape[1]} columns but Q has {N}: X must be m × N")
        if self.X_tilde is not None and self.X_tilde.shape != self.X.shape:
            raise ValueError(f"X_tilde must have the shape of X {self.X.shape}, got {self.X_tilde.shape}")
        for k in ("W", "errors", "z", "scale", "zero", "clipped"):
            if getattr(self, k).shape != (n, N):
                raise ValueError(f"Run.{k} must be n × N = {(n, N)}, got {getattr(self, k).shape}")
        if self.saturated.shape != (n,):
            raise ValueError(f"Run.saturated must have one entry per row ({n}), got {self.saturated.shape}")
        if not np.array_equal(np.sort(self.order), np.arange(N)):
            raise ValueError("Run.order must be a permutation of range(N)")
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"Run.algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"Run.rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.algorithm == "qronos":
            if self.X_tilde is None:
                raise ValueError("a Qronos run needs X_tilde (the mismatched inputs it quantized against)")
            if self.variant not in VARIANTS:
                raise ValueError(f"a Qronos run needs variant in {VARIANTS}, got {self.variant!r}")
        if self.dead not in ("keep", "zero"):
            raise ValueError(f"Run.dead must be 'keep' or 'zero', got {self.dead!r}")
        if self.algorithm != "rtn" and not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"Run.lam must be a finite number ≥ 0, got {self.lam}")
        if m == 0 or n == 0 or N == 0:
            raise ValueError("a run needs at least one sample, one row and one feature")

    # -- shapes and derived views ----------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.Q.shape[0])

    @property
    def N(self) -> int:
        return int(self.Q.shape[1])

    @property
    def m(self) -> int:
        return int(self.X.shape[0])

    @property
    def data(self) -> np.ndarray:
        """The loop data: ``X_tilde`` when given, else ``X``."""
        return self.X if self.X_tilde is None else self.X_tilde

    @property
    def finite(self) -> bool:
        """Whether the grid has a finite integer range (saturation is possible)."""
        return math.isfinite(self.qmin) or math.isfinite(self.qmax)

    def rows(self, idx) -> "Run":
        """The sub-run of rows ``idx`` (rows are independent)."""
        idx = np.asarray(idx)
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        y1 = self.y1[idx] if self.y1 is not None and np.ndim(self.y1) == 1 else self.y1
        return Run(
            X=self.X, W=self.W[idx], Q=self.Q[idx], lam=self.lam, order=self.order, errors=self.errors[idx],
            z=self.z[idx], scale=self.scale[idx], zero=self.zero[idx], qmin=self.qmin, qmax=self.qmax,
            clipped=self.clipped[idx], saturated=pick(self.saturated), rounding=self.rounding,
            algorithm=self.algorithm, X_tilde=self.X_tilde, variant=self.variant, y1=y1, dead=self.dead,
            steps_fixed=self.steps_fixed, dtype=self.dtype, precision=self.precision, meta=dict(self.meta),
        )

    def replace(self, **kw) -> "Run":
        """A copy with some fields replaced (used by the meta-tests to build wrong runs)."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d.update(kw)
        return Run(**d)

    # -- construction from a result object ---------------------------------------------------------
    @classmethod
    def from_result(cls, result, X, *, X_tilde=None, W=None, steps_fixed=None, meta=None, precision=None) -> "Run":
        """Read a result object by duck typing (``algorithms.QuantResult``/``QronosResult`` or
        anything with the same attributes: ``Q, errors, z, order, saturated, clipped, lam,
        alphabet.scale/zero/qmin/qmax, W0, rounding, algorithm`` and, for Qronos, ``variant``,
        ``y1``; optional ``grid`` and ``options['dead']``).

        ``W``: OPTQ/RTN default ``result.W0`` (the loop's start); Qronos needs the original
        weights (``W0`` holds ``ŵ``). ``X_tilde``: required for Qronos; for OPTQ it says the run
        was computed on ``X_tilde`` (mismatched inputs). ``steps_fixed``: override the inference from
        ``result.grid`` (GPTQ groups fitted on the fly → ``False``); a result without ``grid`` is
        taken to have fixed steps unless told otherwise (pass ``steps_fixed=False`` when auditing a
        quantizer whose steps depend on the running weights). ``precision``: the precision the run
        was computed in (default: ``result.options['precision']``, else the dtype of the loop's
        start ``result.W0``, which the package's algorithms compute in).
        """
        alg = str(getattr(result, "algorithm"))
        if W is None:
            if alg == "qronos":
                raise ValueError(
                    "Run.from_result needs W= for a Qronos run: the original target weights "
                    "(result.W0 holds ŵ, which the checker recomputes itself)"
                )
            W = getattr(result, "W0")
        a = getattr(result, "alphabet")
        scale = to_numpy(a.scale)
        zero = to_numpy(a.zero)
        Qn = to_numpy(result.Q)
        # float32 steps stay float32 (every reader converts with as64, exactly): two n × N float64
        # copies would be the largest per-run arrays of a wide layer
        scale, zero = (np.broadcast_to(_float_array(a), Qn.shape) for a in (scale, zero))
        opts = getattr(result, "options", None) or {}
        dead = opts.get("dead", "keep") if alg == "optq" else "keep"
        grid = getattr(result, "grid", None)
        steps_fixed = True
        if grid is not None and alg != "rtn":
            steps_fixed = not (getattr(grid, "kind", None) == "gptq" and getattr(grid, "group_size", None)
                               and not getattr(grid, "static_groups", False))
        if steps_fixed is not None:
            steps_fixed = bool(steps_fixed)
        md = {"grid": grid.describe() if hasattr(grid, "describe") else None}
        md.update({k: v for k, v in opts.items() if isinstance(v, (str, int, float, bool, type(None)))})
        md.update(meta or {})
        lam = getattr(result, "lam", float("nan"))
        prec = precision or opts.get("precision") or dtype_name(getattr(to_numpy(getattr(result, "W0", None)), "dtype", Qn.dtype))
        if prec not in PRECISIONS:
            prec = "float64" if prec in ("float128", "longdouble") else prec
        return cls(
            X=X, W=W, Q=Qn, lam=float("nan") if lam is None else float(lam), order=to_numpy(result.order),
            errors=to_numpy(result.errors), z=to_numpy(result.z), scale=scale, zero=zero,
            qmin=float(a.qmin), qmax=float(a.qmax), clipped=to_numpy(result.clipped),
            saturated=to_numpy(result.saturated), rounding=str(result.rounding), algorithm=alg,
            X_tilde=X_tilde, variant=getattr(result, "variant", None) if alg == "qronos" else None,
            y1=to_numpy(getattr(result, "y1", None)), dead=dead, steps_fixed=bool(steps_fixed),
            dtype=dtype_name(Qn.dtype), precision=prec, meta=md,
        )
