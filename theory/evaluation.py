"""Named scalar quantities of a run, and the tolerance model, used by every claim.

A claim's formula is a sympy expression over the symbols of :data:`QUANTITIES`; the generic
checker evaluates each symbol on a :class:`Context` (one run plus parameters) by name. Values are
NumPy arrays whose first axis is the row (``n``) for per-row quantities, or of length 1 for
per-run quantities (facts about ``X``, ``λ`` and the order); further axes (features ``t``,
samples ``i``, pairs of ``λ``) are reduced by the checker.

All quantities are computed in float64 from the run's arrays (float32 inputs convert exactly),
with the *loop data* (``X̃`` when given, else ``X``), the run's order, ``λ`` and the loop's start
(OPTQ: ``W``; Qronos: ``ŵ`` recomputed here). Vectors indexed by ``t`` are in processing order.

Tolerance model (one-sided; measured, not a-priori; see :mod:`theory.precision`)
-----------------------------------------------------------------------------------
* Every claim is judged on the run's output ``Q`` re-evaluated in float64: the implied errors
  ``e*`` (``(w₀ − q)_π = Mᵀe*``) and values ``z* = q + e*``; the left sides (``‖X(w−q)‖`` …) are
  computed from ``Q`` itself.
* The floating-point allowance ``ν`` (``n × N``, weight units) is *measured*: the same column loop
  in the run's working precision (``Run.precision``, never ``Q``'s dtype) with the run's rounding
  decisions given; ``ν = F·(running max of |z_ref − z*|) + ulps``. Hypotheses hold up to ``ν``
  (``|e*_t| ≤ δ_t/2 + ν_t``), so a squared-norm bound gets the slack
  ``Σ_t (2·max(|e*_t|, δ_t/2)·ν_t + ν_t²)·c_t``, a drift bound ``Σ_j ν_j|B_jt|``, an ℓ∞ tail the
  relative slack ``2·max_t ν_t/δ_t``. A row whose ``ν`` exceeds ``NU_MAX`` of a step somewhere is
  out of scope "for precision", with the number.
* float64 evaluation of the exact quantities: each pivot ``c_t`` carries an absolute error below
  ``C_Q·N·eps64·‖H_λ‖₂`` (``atol_c``; Cholesky is backward stable), matrix–vector products
  ``(m + 2)·eps64`` times the same products of absolute values.
* Indicators (saturation) are exact; saturation is read from the run's clipping record.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from . import alphabet as al
from . import precision as pr
from . import quantities as qt
from ._array import as64
from .precision import NU_MAX
from .samples import SampleRows, products_pass, residual_pass

__all__ = ["Quantity", "QUANTITIES", "Context", "C_Q", "NU_MAX"]

#: constant of the float64 quantity tolerance atol_c = C_Q·N·eps64·‖H_λ‖
C_Q = 8.0

EPS64 = float(np.finfo(np.float64).eps)


class ScopeError(ValueError):
    """A run on which the exact quantities cannot be formed (reported as out of scope)."""


@dataclass(frozen=True)
class Quantity:
    """A named quantity: ``name`` (sympy symbol name), ``latex``, plain ``text`` and its evaluator."""

    name: str
    latex: str
    text: str
    fn: Callable
    per: str = "row"  # "row" or "run"


#: the cached attributes of a :class:`Context` that depend only on the data, λ and the order (never
#: on the rows of ``W``): a context of some rows (:meth:`Context.for_rows`) shares them
RUN_ATTRIBUTES = ("X", "Xq", "perm", "gram", "fac", "c", "c_hat", "_c_by_lam", "Bm", "RX", "eig_keep",
                  "H_norm", "kappa_keep", "tr_Hinv", "atol_c", "ref_factor", "ref_w_hat_system", "c_col")


class Context:
    """One run with parameters, and the cached exact quantities the claims need."""

    def __init__(self, run, **params):
        self.run = run
        self.params = dict(params)

    def for_rows(self, idx, *, share: "Context | None" = None) -> "Context":
        """The context of the sub-run of rows ``idx``. ``share``: a context of other rows of the same
        run whose per-run quantities already computed (:data:`RUN_ATTRIBUTES` and the quantities
        declared ``per="run"``) are reused instead of recomputed: what checking a wide layer in row
        batches needs."""
        sub = Context(self.run.rows(idx), **self.params)
        src = self if share is None else share
        for k in RUN_ATTRIBUTES:
            if k in src.__dict__:
                sub.__dict__[k] = src.__dict__[k]
        vals = src.__dict__.get("_values", {})
        sub.__dict__["_values"] = {k: v for k, v in vals.items() if QUANTITIES[k].per == "run"}
        for k in ("samples", "residuals"):  # per-sample passes already made: their rows, no new pass
            if k in self.__dict__ and self.__dict__[k] is not None:
                sub.__dict__[k] = self.__dict__[k].rows(idx)
        return sub

    def run_part(self) -> "Context":
        """A context that holds only this one's per-run quantities (:data:`RUN_ATTRIBUTES` and the
        quantities declared ``per="run"``), for :meth:`for_rows` to share: the per-row arrays of the
        rows it was computed on are not kept alive with it."""
        part = Context(self.run, **self.params)
        for k in RUN_ATTRIBUTES:
            if k in self.__dict__:
                part.__dict__[k] = self.__dict__[k]
        vals = self.__dict__.get("_values", {})
        part.__dict__["_values"] = {k: v for k, v in vals.items() if QUANTITIES[k].per == "run"}
        return part

    # -- parameters ----------------------------------------------------------------------------
    @property
    def eta(self) -> float:
        e = float(self.params.get("eta", 0.05))
        if not 0 < e < 1:
            raise ValueError(f"eta must lie in (0, 1), got {e}")
        return e

    # -- basics -----------------------------------------------------------------------------------
    @cached_property
    def n(self):
        return self.run.n

    @cached_property
    def N(self):
        return self.run.N

    @cached_property
    def sample_rows(self):
        """The calibration rows as a :class:`theory.samples.SampleRows` (parameter ``sample_rows``),
        when the run's data is a stand-in with the same Gram matrices; ``None``: the run's own ``X``."""
        sr = self.params.get("sample_rows")
        if sr is not None and not isinstance(sr, SampleRows):
            raise TypeError(f"sample_rows must be a theory.SampleRows, got {type(sr).__name__}")
        return sr

    @cached_property
    def m(self):
        """The number of samples: the run's rows, or those of ``sample_rows``."""
        return self.run.m if self.sample_rows is None else int(self.sample_rows.m)

    @cached_property
    def samples(self):
        """The per-sample maxima from a pass over ``sample_rows`` (:func:`theory.samples.products_pass`)."""
        return None if self.sample_rows is None else products_pass(self, self.sample_rows)

    @cached_property
    def residuals(self):
        """``R``'s X-block per sample, reduced, from a pass over ``sample_rows``
        (:func:`theory.samples.residual_pass`)."""
        return None if self.sample_rows is None else residual_pass(self, self.sample_rows, self.delta)

    @cached_property
    def v_rows(self):
        """``Σ_t δ_t² R_it²`` for every row of ``W`` and sample ``i`` (``n × m``)."""
        if self.sample_rows is not None:
            r = self.residuals
            return (r.classes**2) @ r.sq_by_class.T
        return (self.delta**2) @ (self.RX**2).T

    @cached_property
    def lam(self):
        return self.run.lam

    @cached_property
    def X(self):
        return as64(self.run.X)

    @cached_property
    def Xq(self):
        """Loop data (``X̃`` when given, else ``X``: then the same array as :attr:`X`), float64, original
        order."""
        return self.X if self.run.data is self.run.X else as64(self.run.data)

    @cached_property
    def perm(self):
        return self.run.order

    @cached_property
    def Q(self):
        return as64(self.run.Q)

    @cached_property
    def W(self):
        return as64(self.run.W)

    @cached_property
    def e(self):
        return as64(self.run.errors)

    @cached_property
    def z(self):
        return as64(self.run.z)

    @cached_property
    def fac(self):
        try:
            return qt.factor(self.Xq, self.lam, self.perm, dead="keep", gram=self.gram)
        except ValueError as exc:
            raise ScopeError(f"exact quantities unavailable: {exc}") from exc

    @cached_property
    def gram(self):
        """``X̃ᵀX̃`` (``XᵀX`` for OPTQ) in float64, once per run: every λ's factor starts from it."""
        return qt.gram(self.Xq)

    @cached_property
    def c(self):
        self.__dict__.setdefault("_c_by_lam", {})[float(self.lam)] = self.fac.c
        return self.fac.c

    @cached_property
    def c_col(self):
        """``‖X_t‖² + λ`` in processing order (:func:`theory.quantities.c_column`; per run)."""
        return qt.c_column(self.Xq, self.lam, self.perm)

    @cached_property
    def c_hat(self):
        """The explicit bound ``ĉ_t`` of T1 (:func:`theory.quantities.c_explicit`, method ``"auto"``)."""
        return qt.c_explicit(self.Xq, self.lam, self.perm, gram=self.gram)

    @property
    def Mm(self):
        """``M = I − B`` (unit upper triangular, processing order): a new array at every use, from
        the cached :attr:`Bm` (one ``N × N`` matrix is kept, not two)."""
        M = np.negative(self.Bm)
        np.fill_diagonal(M, 1.0)
        return M

    @cached_property
    def Bm(self):
        Bm = self.fac.M()  # a new array: B = I − M is −M off the diagonal, 0 on it (M is unit triangular)
        np.negative(Bm, out=Bm)
        np.fill_diagonal(Bm, 0.0)
        return Bm

    @cached_property
    def RX(self):
        return self.fac.R(self.Xq, block="X")

    @cached_property
    def eig_keep(self):
        """Eigenvalues of the true ``H_λ`` (ascending)."""
        return np.linalg.eigvalsh(qt.hessian(self.Xq, self.lam, dead="keep", gram=self.gram))

    @cached_property
    def H_norm(self):
        return float(self.eig_keep[-1])

    @cached_property
    def kappa_keep(self):
        w = self.eig_keep
        return float(w[-1] / w[0]) if w[0] > 0 else float("inf")

    @cached_property
    def precision(self) -> str:
        """The precision the run was computed in (``Run.precision``; never read from ``Q``)."""
        return self.run.precision

    @cached_property
    def tr_Hinv(self):
        """``tr(H_λ⁻¹)`` (``inf`` when singular): the condition of ``log det H_λ``."""
        w = self.eig_keep
        return float(np.sum(1.0 / w)) if w[0] > 0 else float("inf")

    @cached_property
    def atol_c(self):
        return C_Q * self.N * EPS64 * self.H_norm

    # -- weights ----------------------------------------------------------------------------------
    @cached_property
    def w_hat(self):
        try:
            return qt.w_hat(self.W, self.X, self.Xq, self.lam)
        except ValueError as exc:
            raise ScopeError(f"ŵ unavailable: {exc}") from exc

    @cached_property
    def w0(self):
        """The loop's start, original order: Qronos ``ŵ`` (recomputed), otherwise ``W``."""
        return self.w_hat if self.run.algorithm == "qronos" else self.W

    @cached_property
    def w0p(self):
        return self.w0[:, self.perm]

    @cached_property
    def delta(self):
        """Per-entry steps ``δ_t``, processing order (``n × N``)."""
        return as64(self.run.scale)[:, self.perm]

    @cached_property
    def lower(self):
        r = self.run
        with np.errstate(invalid="ignore"):
            lo = as64(r.scale) * (r.qmin - as64(r.zero))
        return lo[:, self.perm]

    @cached_property
    def upper(self):
        r = self.run
        with np.errstate(invalid="ignore"):
            up = as64(r.scale) * (r.qmax - as64(r.zero))
        return up[:, self.perm]

    # -- the float64 re-evaluation and the measured allowance -------------------------------------
    @cached_property
    def Qp(self):
        return self.Q[:, self.perm]

    @cached_property
    def implied(self) -> bool:
        """The run carries no loop record of its own: its ``errors``/``z`` were solved from ``Q``."""
        return bool(self.run.meta.get("implied"))

    @cached_property
    def e_star(self):
        """Implied errors ``e*`` (processing order, float64): ``(w₀ − q)_π = Mᵀe*``. For Qronos'
        original variant the first is ``ŵ_1 − q_1`` (what the loop propagates)."""
        return pr.implied_errors(self.Mm, self.w0p, self.Qp)

    @cached_property
    def z_star(self):
        """``z* = q + e*``: the values an exact-arithmetic loop rounded to produce ``Q``; for Qronos'
        original variant the first is ``y_1`` (the value it rounds)."""
        z = self.Qp + self.e_star
        if self.run.algorithm == "qronos" and self.run.variant == "original":
            z = z.copy()
            z[:, 0] = self.y1
        return z

    @cached_property
    def ref_factor(self):
        """The working-precision update matrix of the loop (:func:`theory.precision.reference_factor`;
        per run)."""
        r = self.run
        return pr.reference_factor(self.Xq, self.lam, self.perm, self.precision,
                                   dead=r.dead if r.algorithm == "optq" else "keep")

    @cached_property
    def ref_w_hat_system(self):
        """The working-precision normal equations of ``ŵ`` (:func:`theory.precision.w_hat_system`; per run)."""
        return pr.w_hat_system(self.X, self.Xq, self.lam, self.precision)

    @cached_property
    def d_ref(self):
        """``|z_ref − (q + e*)|``: the column loop in the working precision with the run's rounding
        decisions given (``None`` when that precision cannot factor ``H_λ`` or solve ``ŵ``)."""
        r = self.run
        first_e = None
        if r.algorithm == "qronos":
            wh = pr.w_hat_in(self.W, self.X, self.Xq, self.lam, self.precision, system=self.ref_w_hat_system)
            if wh is None:
                return None
            start = wh[:, self.perm]
            if r.variant == "original":
                first_e = start[:, 0] - self.Qp[:, 0]
        else:
            start = self.w0p
        zr = pr.reference_z(self.Xq, self.lam, self.perm, start, self.Qp, self.precision,
                            dead=r.dead if r.algorithm == "optq" else "keep", first_e=first_e,
                            factor=self.ref_factor)
        if zr is None:
            return None
        return np.abs(zr - (self.Qp + self.e_star))

    @cached_property
    def nu_ref(self):
        """What the working precision explains (``n × N``, processing order, weight units):
        ``F·(running max of d_ref) + ulps`` (see :mod:`theory.precision`)."""
        nu = pr.allowance(self.d_ref, self.z_star, self.Qp, self.delta, self.precision)
        r = self.run
        if r.algorithm == "qronos" and r.variant == "original":
            # y_1 = w_f + ⟨X̃_f, (X − X̃)w⟩/‖X̃_f‖² in the working precision: the rounding error of the
            # dot product is at most m·eps·⟨|X̃_f|, |(X − X̃)w|⟩/‖X̃_f‖²
            xf = self.Xq[:, self.first]
            g = (np.abs((self.X - self.Xq) @ self.W.T).T @ np.abs(xf)) / max(float(xf @ xf), 1e-300)
            nu = nu.copy()
            nu[:, 0] += pr.U_ULP * (self.m + 2) * pr.eps_of(self.precision) * (g + np.abs(self.W[:, self.first]))
        return nu

    @cached_property
    def nu(self):
        """The allowance ``ν`` the hypotheses and bounds are judged with. A run with its own loop
        record: the measured ``|z_record − z*|`` plus ulps (exact: the loop rounded its own ``z``, so
        ``|e*_t| ≤ |e_t| + |z_t − z*_t|``), provided the record is plausible (hypothesis
        ``record``: within :attr:`nu_ref`); an implied run (no record): :attr:`nu_ref`."""
        if self.implied:
            return self.nu_ref
        ulp = pr.U_ULP * pr.eps_of(self.precision) * (np.abs(self.z_star) + np.abs(self.Qp) + self.delta)
        return np.minimum(self.d_loop, self.nu_ref) + ulp

    @cached_property
    def nu_rel(self):
        """Per row: ``max_t ν_t/δ_t`` (the precision scope)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.max(np.where(self.delta > 0, self.nu / self.delta, np.inf), axis=1)

    @cached_property
    def precise(self):
        """Per row: the measured allowance is at most ``NU_MAX`` of a step everywhere."""
        return self.nu_rel <= NU_MAX

    @cached_property
    def d_loop(self):
        """``|z_record − z*|``: how far the run's own loop record lies from the re-evaluation."""
        return np.abs(self.z - self.z_star)

    @cached_property
    def A_sq(self):
        """Slack of a squared-norm quantity from the allowance: ``Σ_t (2·max(|e*_t|, δ_t/2)·ν_t + ν_t²)·c_t``."""
        nu = np.where(np.isfinite(self.nu), self.nu, 0.0)
        return ((2 * np.maximum(np.abs(self.e_star), self.delta / 2) * nu + nu**2)) @ self.c

    @cached_property
    def eval_E2(self):
        """float64 evaluation error of ``‖X_λ(w₀ − q)‖²``: ``2(m+2)·eps64·‖ |X_λ| |w₀ − q| ‖²``."""
        d = np.abs(self.w0 - self.Q)
        a = np.abs(self.Xq) @ d.T
        return 2 * (self.m + 2) * EPS64 * (np.sum(a**2, axis=0) + self.lam * np.sum(d**2, axis=1))

    @cached_property
    def eval_F2(self):
        """float64 evaluation error of ``‖Xw − X̃q‖² + λ‖w − q‖²`` and of ``ρ_λ²`` (Qronos)."""
        a = np.abs(self.X) @ np.abs(self.W).T + np.abs(self.Xq) @ (np.abs(self.Q) + np.abs(self.w_hat)).T
        d = np.abs(self.W) + np.abs(self.Q) + np.abs(self.w_hat)
        return 4 * (self.m + 2) * EPS64 * (np.sum(a**2, axis=0) + self.lam * np.sum(d**2, axis=1))

    # -- scope helpers ------------------------------------------------------------------------------
    @cached_property
    def no_sat(self):
        """Per row: the run's clipping record says no rounding was changed by clipping and no
        ``z_t`` fell outside the grid's range (SPEC's "no saturation")."""
        if not self.run.finite:
            return np.ones(self.n, dtype=bool)
        return ~(self.run.saturated | np.any(self.run.clipped, axis=1) | np.any(self.clip_star, axis=1))

    @cached_property
    def u_star(self):
        """``z*`` in grid units (``z*/δ + zero``, processing order)."""
        S = self.delta
        return self.z_star / np.where(S > 0, S, 1.0) + as64(self.run.zero)[:, self.perm]

    @cached_property
    def k_q(self):
        """The integer level of each ``q`` (processing order)."""
        S = self.delta
        return np.round(self.Qp / np.where(S > 0, S, 1.0) + as64(self.run.zero)[:, self.perm])

    @cached_property
    def clip_star(self):
        """Clipping recomputed from ``Q`` against the grid: ``q`` farther from ``z*`` than rounding
        allows (half a step for nearest, a step for stochastic rounding) beyond the allowance."""
        if not self.run.finite:
            return np.zeros((self.n, self.N), dtype=bool)
        S = self.delta
        nu = np.where(np.isfinite(self.nu), self.nu, np.inf)
        slack = 2 * nu / np.where(S > 0, S, 1.0) + 1e-9
        reach = 0.5 if self.run.rounding == "nearest" else 1.0
        edge = (self.k_q <= self.run.qmin) | (self.k_q >= self.run.qmax)
        with np.errstate(invalid="ignore"):
            return edge & (np.abs(self.u_star - self.k_q) > reach + slack)

    @cached_property
    def no_sat_z(self):
        """Per row: every ``z*_t`` within half a step of the grid's range, up to the allowance ``ν``
        (P1's conclusion, judged on the re-evaluation)."""
        if not self.run.finite:
            return np.ones(self.n, dtype=bool)
        z, nu = self.z_star, self.nu
        with np.errstate(invalid="ignore"):
            ok = (z <= self.upper + self.delta / 2 + nu) & (z >= self.lower - self.delta / 2 - nu)
        return np.all(ok, axis=1)

    @cached_property
    def reach(self):
        """``r_t = ½ Σ_j δ_j |B_jt|``: the largest drift ``|z_t − w_t|`` when every ``|e_j| ≤ δ_j/2``."""
        return al.reach(self.delta, self.Bm)

    @cached_property
    def drift_var(self):
        """``Σ_j δ_j² B_jt²`` (``n × N``)."""
        return al.drift_var(self.delta, self.Bm)

    @cached_property
    def atol_w(self):
        """Slack of a weight-unit quantity ``|z*_t − w_t|``: the allowance carried through the drift,
        ``Σ_j ν_j |B_jt|``, plus the float64 evaluation of ``z*``."""
        nu = np.where(np.isfinite(self.nu), self.nu, 0.0)
        ev = C_Q * self.N * EPS64 * (np.abs(self.z_star) + np.abs(self.w0p) + 2 * self.reach + self.delta)
        return nu @ np.abs(self.Bm) + ev

    @cached_property
    def margin_w(self):
        """Margin of the alphabet conditions: ``atol_w + ν_t`` (so that precision cannot place ``z_t``
        on the edge of the grid's range)."""
        return self.atol_w + np.where(np.isfinite(self.nu), self.nu, 0.0)

    @cached_property
    def p1_condition(self):
        """Entrywise P1 condition ``[w_t − r_t, w_t + r_t] ⊂ [lower_t − δ_t/2, upper_t + δ_t/2]`` with the
        margin of the measured allowance (:func:`theory.alphabet.p1_condition`)."""
        return al.p1_condition(self.w0p, self.reach, self.lower, self.upper, self.delta, self.margin_w)

    def t3_radius(self, constant="hoeffding"):
        """``a_t = (s/δ)·√(Σ_j δ_j² B_jt²) · √(2 log(2N/η))`` (:func:`theory.alphabet.t3_radius_from_var`)."""
        return al.t3_radius_from_var(self.drift_var, self.N, self.eta, constant)

    def t3_condition(self, constant="hoeffding"):
        return al.t3_condition(self.w0p, self.t3_radius(constant), self.lower, self.upper, self.margin_w)

    @cached_property
    def tail_threshold(self):
        """T2.tail's threshold ``α`` per row: ``params['threshold']`` (scalar or per row), or the
        ``α`` at which ``Σ_i 2exp(−α²/(2σ_i²)) = η`` (Hoeffding proxy)."""
        th = self.params.get("threshold")
        if th is not None:
            return np.broadcast_to(np.asarray(th, dtype=np.float64), (self.n,)).copy()
        from scipy.optimize import brentq

        from .constants import CONSTANTS

        s2 = CONSTANTS["hoeffding"].factor * self.v_rows  # n × m
        out = np.zeros(self.n)
        for r in range(self.n):
            v = s2[r][s2[r] > 0]
            if v.size == 0:
                continue
            g = lambda a: np.log(np.sum(2 * np.exp(-a * a / (2 * v)))) - np.log(self.eta)  # noqa: E731
            hi = np.sqrt(np.max(v)) * al.hp_multiplier(v.size, self.eta) + 1e-300
            lo = 0.0
            out[r] = brentq(g, lo, hi * 1.0000001 + 1e-300, xtol=1e-14 * hi, rtol=1e-13) if g(lo) > 0 else 0.0
        return out

    # -- Qronos -----------------------------------------------------------------------------------
    @cached_property
    def resid_target(self):
        """``Xw − X̃q`` per row (``n × m``) and the damping part ``w − q``."""
        return (self.X @ self.W.T - self.Xq @ self.Q.T).T

    @cached_property
    def F2(self):
        d = self.W - self.Q
        return np.sum(self.resid_target**2, axis=1) + self.lam * np.sum(d**2, axis=1)

    @cached_property
    def rho2(self):
        return qt.rho2(self.W, self.X, self.Xq, self.lam, W_hat=self.w_hat)

    @cached_property
    def first(self):
        return int(self.perm[0])

    @cached_property
    def y1(self):
        try:
            return qt.y1(self.W, self.X, self.Xq, self.first)
        except ValueError as exc:
            raise ScopeError(str(exc)) from exc

    @cached_property
    def e_prop(self):
        """The propagated errors (processing order): for Qronos' original variant the first one is
        ``ŵ_1 − q_1`` (the loop rounds ``y_1`` but propagates from ``ŵ_1``), otherwise ``e``."""
        e = self.e.copy()
        if self.run.algorithm == "qronos" and self.run.variant == "original":
            e[:, 0] = self.w_hat[:, self.first] - self.Q[:, self.first]
        return e


# ------------------------------------------------------------------------------------------------
# the quantity table
# ------------------------------------------------------------------------------------------------
def _row(x):
    return np.asarray(x, dtype=np.float64)


def _run(x):
    return np.atleast_1d(np.asarray(x, dtype=np.float64))[None, ...] if np.ndim(x) else np.array([float(x)])


def _E2(ctx):
    """``‖X(w−q)‖² + λ‖w−q‖²`` per row (one ``m × N × n`` product, remembered on the context)."""
    if "_E2" not in ctx.__dict__:
        d = ctx.w0 - ctx.Q
        ctx.__dict__["_E2"] = np.sum((ctx.Xq @ d.T) ** 2, axis=0) + ctx.lam * np.sum(d**2, axis=1)
    return ctx.__dict__["_E2"]


def _Einf(ctx):
    if ctx.sample_rows is not None:
        return ctx.samples.Einf
    d = ctx.w0 - ctx.Q
    return np.max(np.abs(ctx.Xq @ d.T), axis=0)


def _Finf(ctx):
    if ctx.sample_rows is not None:
        return ctx.samples.Finf
    return np.max(np.abs(ctx.resid_target), axis=1)


def _hat_inf(ctx):
    if ctx.sample_rows is not None:
        return ctx.samples.hat_inf
    return np.max(np.abs(ctx.X @ ctx.W.T - ctx.Xq @ ctx.w_hat.T), axis=0)


def _r1inf(ctx):
    r1 = ctx.residuals.r1inf if ctx.sample_rows is not None else float(np.max(np.abs(ctx.RX[:, 0])))
    return np.full(ctx.n, r1)


def _c_chain(ctx):
    ce = ctx.c_hat
    cc = ctx.c_col
    return np.concatenate([ctx.c, ce])[None, :], np.concatenate([ce, cc])[None, :]


def _lam_grid(ctx):
    """λ grid of the L1 checks: ``params['lams']`` or ``λ_0·{1/4, 1/2, 1, 2, 4}`` with ``λ_0`` the run's
    λ (or 1% of the mean ``‖X_t‖²`` when the run's λ is 0), always including the run's λ."""
    lams = ctx.params.get("lams")
    if lams is None:
        l0 = ctx.lam if ctx.lam > 0 else 0.01 * float(np.mean(np.sum(ctx.Xq**2, axis=0)) or 1.0)
        lams = l0 * np.array([0.25, 0.5, 1.0, 2.0, 4.0])
        lams = np.union1d(lams, [ctx.lam])
    lams = np.unique(np.asarray(lams, dtype=np.float64))
    if np.any(lams < 0):
        raise ValueError("lams must be ≥ 0")
    return lams


def _c_of(ctx, lam):
    """``c_t`` at damping ``lam`` (one Cholesky of ``X̃ᵀX̃ + λI``, remembered per λ on the context)."""
    memo = ctx.__dict__.setdefault("_c_by_lam", {})
    if float(lam) == float(ctx.lam):
        return ctx.c
    if float(lam) not in memo:
        memo[float(lam)] = qt.factor(ctx.Xq, lam, ctx.perm, dead="keep", gram=ctx.gram).c
    return memo[float(lam)]


def _L1_pairs(ctx):
    lams = _lam_grid(ctx)
    C = np.array([_c_of(ctx, l) for l in lams])  # (L, N)
    lo = C[:-1] + (lams[1:] - lams[:-1])[:, None]
    hi = C[1:]
    return lo.reshape(1, -1), hi.reshape(1, -1)


def _L1_concave(ctx):
    lams = _lam_grid(ctx)
    C = np.array([_c_of(ctx, l) for l in lams])
    if len(lams) < 3:
        return np.zeros((1, 0)), np.zeros((1, 0))
    a, b, cc = lams[:-2], lams[1:-1], lams[2:]
    th = ((cc - b) / (cc - a))[:, None]
    interp = th * C[:-2] + (1 - th) * C[2:]
    return interp.reshape(1, -1), C[1:-1].reshape(1, -1)


def _L1_derivative(ctx):
    """Exact ``1 + ‖β_t‖²`` against the central difference at the run's λ > 0. Because ``c_t`` is
    concave, ``(c(λ+h) − c(λ))/h ≤ c'(λ) ≤ (c(λ) − c(λ−h))/h``; the half-width of this bracket plus
    the rounding error ``4·atol_c/h`` is the tolerance. ``h = min(1e-4·(λ + mean‖X_t‖²), λ/2)``."""
    lam = ctx.lam
    h = min(1e-4 * (lam + float(np.mean(np.sum(ctx.Xq**2, axis=0)))), lam / 2)
    d = 1.0 + np.sum(ctx.Bm**2, axis=1)
    c0 = ctx.c
    fwd = (_c_of(ctx, lam + h) - c0) / h
    bwd = (c0 - _c_of(ctx, lam - h)) / h
    mid = (fwd + bwd) / 2
    half = np.abs(bwd - fwd) / 2 + 4 * ctx.atol_c / h
    return d[None, :], mid[None, :], half[None, :]


def _logdet_lu(ctx):
    H = qt.hessian(ctx.Xq, ctx.lam, dead="keep", gram=ctx.gram)
    sign, ld = np.linalg.slogdet(H)
    return ld if sign > 0 else -np.inf


def _q(name, latex, text, fn, per="row"):
    return Quantity(name, latex, text, fn, per)


QUANTITIES = {q.name: q for q in [
    # -- loop (OPTQ, or Qronos on X̃ from ŵ)
    _q("E2", r"\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2", "‖X(w−q)‖² + λ‖w−q‖² (loop data, loop start w)", _E2),
    _q("E", r"\sqrt{\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2}", "√(‖X(w−q)‖² + λ‖w−q‖²)", lambda c: np.sqrt(_E2(c))),
    _q("Einf", r"\|X(w-q)\|_\infty", "‖X(w−q)‖∞", _Einf),
    _q("sum_e2c", r"\sum_t e_t^2 c_t", "Σ_t e_t² c_t", lambda c: (c.e_prop**2) @ c.c),
    _q("sum_d2c", r"\sum_t \delta_t^2 c_t", "Σ_t δ_t² c_t", lambda c: (c.delta**2) @ c.c),
    _q("sum_d2c_explicit", r"\sum_t \delta_t^2 \hat c_t", "Σ_t δ_t² ĉ_t (explicit bound of c_t)",
       lambda c: (c.delta**2) @ c.c_hat),
    _q("sum_d2c_col", r"\sum_t \delta_t^2 (\|X_t\|_2^2 + \lambda)", "Σ_t δ_t² (‖X_t‖² + λ)",
       lambda c: (c.delta**2) @ c.c_col),
    _q("max_d2c", r"\max_t \delta_t^2 c_t", "max_t δ_t² c_t", lambda c: np.max(c.delta**2 * c.c[None, :], axis=1)),
    _q("max_d2c_col", r"\max_t \delta_t^2 (\|X_t\|_2^2 + \lambda)", "max_t δ_t² (‖X_t‖² + λ)",
       lambda c: np.max(c.delta**2 * c.c_col[None, :], axis=1)),
    _q("v_i", r"\sum_t \delta_t^2 R_{it}^2", "Σ_t δ_t² R_it² (sample i)", lambda c: c.v_rows),
    _q("threshold", r"\alpha", "the threshold α", lambda c: c.tail_threshold),
    _q("m", "m", "number of samples", lambda c: np.array([float(c.m)]), "run"),
    _q("N", "N", "number of features", lambda c: np.array([float(c.N)]), "run"),
    _q("eta", r"\eta", "failure probability η", lambda c: np.array([c.eta]), "run"),
    _q("sat", r"\mathbf{1}\{\text{saturation}\}", "1 if clipping changed a rounding", lambda c: c.run.saturated.astype(float)),
    _q("out_of_range", r"\mathbf{1}\{\exists t: z_t \notin [\ell_t - \delta_t/2, u_t + \delta_t/2]\}",
       "1 if some z_t lies more than half a step outside the grid's range", lambda c: (~c.no_sat_z).astype(float)),
    _q("drift_abs", r"|z_t - w_t|", "|z*_t − w_t| (per t; z* re-evaluated from Q)", lambda c: np.abs(c.z_star - c.w0p)),
    _q("reach", r"\tfrac12 \sum_j \delta_j |B_{jt}|", "½ Σ_j δ_j |B_jt| (per t)", lambda c: c.reach),
    _q("drift_var", r"\sum_j \delta_j^2 B_{jt}^2", "Σ_j δ_j² B_jt² (per t)", lambda c: c.drift_var),
    _q("B2max", r"\max_t \|B_{:,t}\|_2^2", "max_t ‖B_{:,t}‖²", lambda c: np.array([np.max(np.sum(c.Bm**2, axis=0))]), "run"),
    _q("X2max", r"\max_j \|X_j\|_2^2", "max_j ‖X_j‖²", lambda c: np.array([np.max(np.sum(c.Xq**2, axis=0))]), "run"),
    _q("lam", r"\lambda", "λ", lambda c: np.array([c.lam]), "run"),
    # -- Qronos
    _q("F2", r"\|Xw - \tilde X q\|_2^2 + \lambda\|w-q\|_2^2", "‖Xw − X̃q‖² + λ‖w−q‖²", lambda c: c.F2),
    _q("F", r"\sqrt{\|Xw - \tilde X q\|_2^2 + \lambda\|w-q\|_2^2}", "√(‖Xw − X̃q‖² + λ‖w−q‖²)", lambda c: np.sqrt(c.F2)),
    _q("Finf", r"\|Xw - \tilde X q\|_\infty", "‖Xw − X̃q‖∞", _Finf),
    _q("hat_inf", r"\|Xw - \tilde X \hat w\|_\infty", "‖Xw − X̃ŵ‖∞", _hat_inf),
    _q("rho2", r"\rho_\lambda^2", "ρ_λ² = min_v ‖Xw − X̃v‖² + λ‖w − v‖²", lambda c: c.rho2),
    _q("rho", r"\rho_\lambda", "ρ_λ", lambda c: np.sqrt(c.rho2)),
    _q("mis", r"\|(X - \tilde X)w\|_2", "‖(X − X̃)w‖", lambda c: np.linalg.norm((c.X - c.Xq) @ c.W.T, axis=0)),
    _q("e1c1", r"(\hat w_1 - q_1)^2 \tilde c_1", "(ŵ_1 − q_1)² c̃_1",
       lambda c: (c.w_hat[:, c.first] - c.Q[:, c.first]) ** 2 * c.c[0]),
    _q("sum_e2c_rest", r"\sum_{t\ge2} e_t^2 \tilde c_t", "Σ_{t≥2} e_t² c̃_t", lambda c: (c.e[:, 1:] ** 2) @ c.c[1:]),
    _q("sum_d2c_rest", r"\sum_{t\ge2} \delta_t^2 \tilde c_t", "Σ_{t≥2} δ_t² c̃_t", lambda c: (c.delta[:, 1:] ** 2) @ c.c[1:]),
    _q("gap1", r"|\hat w_1 - y_1|", "|ŵ_1 − y_1|", lambda c: np.abs(c.w_hat[:, c.first] - c.y1)),
    _q("d1", r"\delta_1", "δ_1 (step of the first processed feature)", lambda c: c.delta[:, 0]),
    _q("c1", r"\tilde c_1", "c̃_1", lambda c: np.full(c.n, c.c[0])),
    _q("r1inf", r"\|\tilde r_1\|_\infty", "‖r̃_1‖∞ (first column of the X-block of R̃)", _r1inf),
    # -- O1 / L1 / T1 chain (per run)
    _q("sum_log_c", r"\sum_t \log c_t", "Σ_t log c_t (Cholesky, run's order)",
       lambda c: np.array([np.sum(np.log(c.c)) if np.all(c.c > 0) else -np.inf]), "run"),
    _q("logdet", r"\log\det H_\lambda", "log det H_λ (LU, independent of the order)", lambda c: np.array([_logdet_lu(c)]), "run"),
    _q("sum_c", r"\sum_t c_t", "Σ_t c_t", lambda c: np.array([np.sum(c.c)]), "run"),
    _q("c_lo", r"(c_t,\ \hat c_t)", "c_t, then ĉ_t (all t)", lambda c: _c_chain(c)[0], "run"),
    _q("c_hi", r"(\hat c_t,\ \|X_t\|_2^2 + \lambda)", "ĉ_t, then ‖X_t‖² + λ (all t)", lambda c: _c_chain(c)[1], "run"),
    _q("L1_lo", r"c_t(\lambda_a) + (\lambda_b - \lambda_a)", "c_t(λ_a) + (λ_b − λ_a), consecutive λ_a < λ_b of the grid",
       lambda c: _L1_pairs(c)[0], "run"),
    _q("L1_hi", r"c_t(\lambda_b)", "c_t(λ_b)", lambda c: _L1_pairs(c)[1], "run"),
    _q("L1_interp", r"\theta c_t(\lambda_a) + (1-\theta) c_t(\lambda_c)",
       "chord of c_t between λ_a < λ_b < λ_c at λ_b", lambda c: _L1_concave(c)[0], "run"),
    _q("L1_mid", r"c_t(\lambda_b)", "c_t(λ_b)", lambda c: _L1_concave(c)[1], "run"),
    _q("dc_exact", r"1 + \|\beta_t\|_2^2", "1 + ‖β_t‖² (β_t: ridge vector of feature t)", lambda c: _L1_derivative(c)[0], "run"),
    _q("dc_fd", r"\frac{\partial c_t}{\partial\lambda}", "dc_t/dλ (central difference)", lambda c: _L1_derivative(c)[1], "run"),
    _q("dc_half", r"h_t", "half-width of the concavity bracket plus rounding", lambda c: _L1_derivative(c)[2], "run"),
]}


def value(ctx: Context, name: str):
    """Evaluate quantity ``name`` on ``ctx`` (first axis = rows, or length 1 per run); cached."""
    cache = ctx.__dict__.setdefault("_values", {})
    if name not in cache:
        q = QUANTITIES[name]
        v = np.asarray(q.fn(ctx), dtype=np.float64)
        if v.ndim == 0:
            v = v[None]
        cache[name] = v
    return cache[name]
