"""Every statement of SPEC §4 as a frozen :class:`Claim` record, in one registry.

Provenance. The paper ("Provable Post-Training Quantization: Theoretical Analysis of OPTQ and
Qronos", arXiv 2508.04853) was not available to this project. Every claim below was derived
independently from the algorithm definitions (SPEC §2) and checked numerically; none is a
quotation and none carries a theorem number of the paper. The ids (I1, T1, P1, …) are this
project's labels.

A claim is data: the relation ``lhs (=|≤) bound`` between sympy expressions over the named
quantities of :mod:`theory.evaluation`, the hypotheses as predicates on a run (each says in scope
or out of scope, and why), the kind, the failure probability of probabilistic claims, the named
constant, the tolerance model and the provenance. :func:`theory.checker.check` evaluates any
claim on any run.

Conventions: ``δ_t`` are per-entry steps (groups: per column), so the SPEC's ``δ²Σc_t`` appears as
``Σ_t δ_t² c_t``; with one step it is the SPEC's formula. All vectors indexed by ``t`` are in
processing order; "the loop" is OPTQ's column loop (OPTQ on ``X``, or on ``X̃`` from ``ŵ`` in
Qronos' projection variant).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import sympy as sp

from . import constants as K
from .evaluation import NU_MAX, QUANTITIES

__all__ = ["Hypothesis", "Claim", "CLAIMS", "get_claim", "KINDS", "PROVENANCE", "sym"]

KINDS = ("identity", "deterministic bound", "implication", "probability bound", "expectation bound")

PROVENANCE = {
    "derived": "derived from the algorithm definitions; the paper's text was not available",
    "conservative": "derived from the algorithm definitions (the paper's text was not available); "
                    "conservative constant",
    "sharp": "derived from the algorithm definitions (the paper's text was not available); "
             "sharpest constant of the three",
    "added": "added by this project to make a SPEC statement checkable (an intermediate step of its "
             "proof); derived, the paper's text was not available",
}


# ------------------------------------------------------------------------------------------------
# symbols
# ------------------------------------------------------------------------------------------------
_SYMS = {name: sp.Symbol(name, real=True) for name in QUANTITIES}
_LATEX = {_SYMS[name]: q.latex for name, q in QUANTITIES.items()}
_i = sp.Symbol("i", integer=True, positive=True)


def sym(name: str) -> sp.Symbol:
    """The sympy symbol of quantity ``name``."""
    return _SYMS[name]


def latex(expr) -> str:
    """LaTeX of an expression over the named quantities."""
    return sp.latex(expr, symbol_names=_LATEX)


# ------------------------------------------------------------------------------------------------
# hypotheses
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Hypothesis:
    """A checkable hypothesis: ``test(ctx) -> (in_scope, reason)``, ``in_scope`` a bool for the whole
    run or a boolean array with one entry per row; ``reason`` explains an out-of-scope verdict."""

    name: str
    text: str
    test: Callable = field(repr=False, compare=False)


def _alg(*algs, variant=None, text=None):
    def test(ctx):
        r = ctx.run
        ok = r.algorithm in algs and (variant is None or r.algorithm != "qronos" or r.variant == variant)
        what = r.algorithm + (f"/{r.variant}" if r.algorithm == "qronos" else "")
        return ok, f"applies to {text}; this run is {what}"
    return Hypothesis("algorithm", f"the run is {text}", test)


OPTQ = _alg("optq", text="an OPTQ run")
LOOP = _alg("optq", "qronos", variant="projection",
            text="an OPTQ column loop (OPTQ, or Qronos' projection variant: OPTQ on X̃ from ŵ)")
ANY_LOOP = _alg("optq", "qronos", text="an OPTQ or Qronos run (facts about its data, λ and order)")


def _qronos(variant):
    def test(ctx):
        r = ctx.run
        return (r.algorithm == "qronos" and r.variant == variant,
                f"applies to Qronos' {variant} variant; this run is "
                f"{r.algorithm}{'/' + str(r.variant) if r.algorithm == 'qronos' else ''}")
    return Hypothesis("algorithm", f"the run is Qronos, {variant} variant", test)


QRONOS_PROJ = _qronos("projection")
QRONOS_ORIG = _qronos("original")


def _rounding(kind):
    def test(ctx):
        return ctx.run.rounding == kind, f"needs {kind} rounding; this run used {ctx.run.rounding} rounding"
    return Hypothesis("rounding", f"{kind} rounding", test)


NEAREST = _rounding("nearest")
STOCHASTIC = _rounding("stochastic")

NO_SAT = Hypothesis(
    "no saturation",
    "no saturation: the run's clipping record shows no rounding changed by clipping (every z_t within half "
    "a step of the grid's range, so |e_t| ≤ δ_t/2 under nearest rounding)",
    lambda ctx: (ctx.no_sat, "saturation: the run's clipping record shows a rounding changed by clipping"),
)
STEPS_FIXED = Hypothesis(
    "fixed steps",
    "the steps δ_t were fixed before the column loop (not fitted on the fly from the running weights)",
    lambda ctx: (bool(ctx.run.steps_fixed),
                 "group steps fitted on the fly depend on earlier random errors (not covered)"),
)
FINITE = Hypothesis(
    "finite grid", "a finite grid (saturation is possible)",
    lambda ctx: (ctx.run.finite, "infinite grid δZ: saturation cannot occur, the statement is vacuous"),
)
EXPLICIT_SIZE = Hypothesis(
    "size", "N ≤ explicit_max_N (default 65536): ĉ_t is exact (one SVD of X_{>t} per feature) up to N = 256, "
    "above it an upper end ĉ⁺_t ≥ ĉ_t from one QR (σ²_min,+ replaced by a certified lower bound, theory/explicit.py)",
    lambda ctx: (ctx.N <= int(ctx.params.get("explicit_max_N", 65536)),
                 f"N = {ctx.N} > explicit_max_N = {int(ctx.params.get('explicit_max_N', 65536))}: the explicit c_t bound "
                 "was not computed; pass explicit_max_N to force it"),
)
LAM_POS = Hypothesis("λ > 0", "λ > 0", lambda ctx: (ctx.lam > 0, "needs λ > 0; this run has λ = 0"))
def _precise(ctx):
    ok = ctx.precise
    bad = ctx.nu_rel[~ok]
    worst = float(np.max(bad)) if bad.size else 0.0
    why = (f"out of scope for precision: the measured {ctx.precision} deviation explains up to ν/δ = {worst:.3g} "
           f"of a step (> {NU_MAX:g})" if np.isfinite(worst) else
           f"out of scope for precision: {ctx.precision} cannot factor H_λ (or solve ŵ) on these inputs")
    return ok, why


PRECISE = Hypothesis(
    "precision",
    f"the run's working precision explains at most ν ≤ {NU_MAX:g}·δ_t of every z_t (ν measured by the same loop in "
    "that precision on the run's inputs)",
    _precise,
)
RECORDED = Hypothesis(
    "loop record",
    "the run reports its own rounding errors (an identity between them and Q is informative only then)",
    lambda ctx: (not ctx.implied, "the errors were solved from Q (audit): the identity holds by construction"),
)
MISMATCH_OPTQ = Hypothesis(
    "mismatched OPTQ",
    "an OPTQ run computed on X̃ (X_tilde given), judged against the float inputs X",
    lambda ctx: (ctx.run.algorithm == "optq" and ctx.run.X_tilde is not None,
                 "applies to an OPTQ run on mismatched inputs X̃ (X_tilde given); this run has none"),
)
HAS_TILDE = Hypothesis(
    "X̃ given", "mismatched inputs X̃ are given",
    lambda ctx: (ctx.run.X_tilde is not None, "needs mismatched inputs X_tilde; this run has none"),
)
FIRST_LIVE = Hypothesis(
    "first feature live", "the first processed feature of X̃ is not identically zero (else the variant is undefined)",
    lambda ctx: (bool(np.any(ctx.Xq[:, ctx.first] != 0)),
                 "the first processed feature of X̃ is dead: the original variant is undefined"),
)
P1_COND = Hypothesis(
    "P1 condition",
    "for every t: w_t ± ½Σ_j δ_j|B_jt| lies within half a step of the grid's range (implied by the "
    "uniform form K + ½ ≥ ‖w‖∞/δ + ½ max_t ‖B_{:,t}‖₁)",
    lambda ctx: (ctx.p1_condition, "the P1 alphabet condition fails for this row"),
)
T3_COND = Hypothesis(
    "T3 condition",
    "for every t: w_t ± s·√(Σ_j (δ_j/δ)² B_jt²)·√(2 log(2N/η)) lies within the grid's range, s² = δ²/4 "
    "(implied by the uniform form K ≥ ‖w‖∞/δ + (s/δ) max_t ‖B_{:,t}‖₂ √(2 log(2N/η)))",
    lambda ctx: (ctx.t3_condition("hoeffding"), "the T3 alphabet condition fails for this row"),
)
LOGDET_PRECISE = Hypothesis(
    "determinant precision",
    "H_λ is nonsingular and its log-determinant is resolvable in float64 (C_Q·N·eps64·‖H_λ‖·tr(H_λ⁻¹) ≤ 1e-3)",
    lambda ctx: (bool(np.all(ctx.c > 0) and ctx.atol_c * ctx.tr_Hinv <= 1e-3),
                 "H_λ singular or too ill-conditioned for a float64 log-determinant check"),
)
FULL_RANK_OR_LAM = Hypothesis(
    "H_λ nonsingular", "H_λ is positive definite (λ > 0, or X has full column rank)",
    lambda ctx: (bool(np.all(ctx.c > 0)), "H_λ is singular (λ = 0 with dead features)"),
)


# ------------------------------------------------------------------------------------------------
# the record
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Claim:
    """One statement of SPEC §4.

    ``relation`` is ``"="`` (identity) or ``"<="``. Probability bounds state
    ``P(event) ≤ probability`` with the event ``lhs > bound`` (for some feature ``t`` where the
    quantities are per feature), intersected with "no saturation" when ``joint_no_saturation``
    (SPEC T2: never conditioned on it). Expectation bounds state ``E[lhs·1{no saturation}] ≤ bound``
    with ``0 ≤ lhs ≤ range_upper``. ``tolerance`` names the model of :mod:`theory.evaluation`.
    """

    id: str
    title: str
    kind: str
    statement_latex: str
    statement_text: str
    lhs: sp.Expr
    bound: sp.Expr
    hypotheses: tuple
    provenance: str
    tolerance: str
    relation: str = "<="
    probability: sp.Expr | None = None
    range_upper: sp.Expr | None = None
    joint_no_saturation: bool = False
    constant: str | None = None
    per: str = "row"
    params: tuple = ()
    notes: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {KINDS}")
        if self.relation not in ("=", "<="):
            raise ValueError(f"claim {self.id}: relation must be '=' or '<='")

    # -- rendering ------------------------------------------------------------------------------
    @property
    def formula_latex(self) -> str:
        rel = "=" if self.relation == "=" else r"\le"
        core = f"{latex(self.lhs)} {rel} {latex(self.bound)}"
        if self.kind == "probability bound":
            ev = f"{latex(self.lhs)} > {latex(self.bound)}"
            if self.joint_no_saturation:
                ev += r",\ \text{no saturation}"
            return rf"P\left({ev}\right) \le {latex(self.probability)}"
        if self.kind == "expectation bound":
            return (rf"\mathbb{{E}}\left[\left({latex(self.lhs)}\right)\mathbf{{1}}\{{\text{{no saturation}}\}}\right] "
                    rf"\le {latex(self.bound)}")
        return core

    @property
    def symbols(self) -> tuple:
        exprs = [self.lhs, self.bound] + [e for e in (self.probability, self.range_upper) if e is not None]
        names = sorted({s.name for e in exprs for s in e.free_symbols if s.name in QUANTITIES})
        return tuple(names)

    @property
    def constant_name(self) -> str | None:
        return K.CONSTANTS[self.constant].name if self.constant else None

    def to_dict(self) -> dict:
        return {
            "id": self.id, "title": self.title, "kind": self.kind, "statement_latex": self.statement_latex,
            "statement_text": self.statement_text, "formula_latex": self.formula_latex,
            "hypotheses": [h.text for h in self.hypotheses], "provenance": self.provenance,
            "constant": self.constant_name, "tolerance": self.tolerance, "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------
# formulas
# ------------------------------------------------------------------------------------------------
S = sym
HALF = K.HALF_STEP / K.delta  # 1/2: nearest rounding, |e| ≤ δ/2


def _s2(key):
    """``s²/δ²`` of a named constant (exact sympy number)."""
    return sp.nsimplify(K.CONSTANTS[key].s2 / K.delta**2)


def _hp(key, D, samples="m"):
    """``√(2 log(2·samples/η)) · √(s²/δ² · D)``: the high-probability radius (from :func:`constants.hp_radius`)."""
    return K.hp_radius(sp.sqrt(_s2(key) * D), S(samples), S("eta"))


_T2_TAIL_PROB = sp.Sum(K.tail_bound(S("threshold"), sp.sqrt(_s2("hoeffding") * S("v_i"))), (_i, 1, S("m")))

_D = PROVENANCE["derived"]

_claims = [
    # -------------------------------------------------------------------------------- I1
    Claim(
        "I1", "Exact error identity of OPTQ", "identity",
        r"\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2 = \sum_t e_t^2 c_t",
        "For any rounding (nearest or stochastic, clipping allowed): ‖X(w−q)‖² + λ‖w−q‖² = Σ_t e_t² c_t, "
        "w the loop's start. GPTQ's Losses (H = (2/m)XᵀX + damp·I) sum to this divided by m, with λ = damp·m/2.",
        S("E2"), S("sum_e2c"), (LOOP, RECORDED, PRECISE), _D, "sq", relation="=",
        notes="For Qronos' projection variant the identity is on (X̃, λ, ŵ). Dead features: exact under both "
              "Hessian conventions because e_t = 0 there. In float32 the tolerance grows with cond(H_λ)·eps.",
    ),
    # -------------------------------------------------------------------------------- T1
    Claim(
        "T1.sum_c", "Deterministic OPTQ, ℓ2 bound by Σc_t", "deterministic bound",
        r"\|X(w-q)\|_2 \le \sqrt{\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2} \le \tfrac{\delta}{2}\sqrt{\textstyle\sum_t c_t}",
        "Nearest rounding, no saturation: ‖X(w−q)‖ ≤ √(‖X(w−q)‖² + λ‖w−q‖²) ≤ (δ/2)·√(Σ_t c_t). "
        "Attained (orthogonal columns, all |e_t| = δ/2); λ = 0 with full column rank is Babai's nearest-plane bound.",
        S("E"), HALF * sp.sqrt(S("sum_d2c")), (OPTQ, NEAREST, NO_SAT, PRECISE), _D, "norm",
        notes="Checked in the stronger damped form (left side includes λ‖w−q‖²).",
    ),
    Claim(
        "T1.explicit", "Deterministic OPTQ, ℓ2 bound with the explicit data-dependent c_t bound", "deterministic bound",
        r"\sqrt{\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2} \le \tfrac{\delta}{2}\sqrt{\textstyle\sum_t \hat c_t},\ "
        r"\hat c_t = \lambda + \|P^\perp_{X_{>t}}X_t\|_2^2 + \frac{\lambda\|P_{X_{>t}}X_t\|_2^2}{\sigma^2_{\min,+}(X_{>t}) + \lambda}",
        "Nearest rounding, no saturation: the T1 bound with c_t replaced by "
        "ĉ_t = λ + ‖P⊥X_t‖² + λ‖PX_t‖²/(σ²_min,+(X_{>t}) + λ), P the projector onto span X_{>t}.",
        S("E"), HALF * sp.sqrt(S("sum_d2c_explicit")), (OPTQ, NEAREST, NO_SAT, PRECISE, EXPLICIT_SIZE), _D, "norm",
        params=("explicit_max_N",),
    ),
    Claim(
        "T1.frobenius", "Deterministic OPTQ, ℓ2 bound by the Frobenius norm", "deterministic bound",
        r"\sqrt{\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2} \le \tfrac{\delta}{2}\sqrt{\|X\|_F^2 + N\lambda}",
        "Nearest rounding, no saturation: √(‖X(w−q)‖² + λ‖w−q‖²) ≤ (δ/2)·√(‖X‖_F² + Nλ).",
        S("E"), HALF * sp.sqrt(S("sum_d2c_col")), (OPTQ, NEAREST, NO_SAT, PRECISE), _D, "norm",
    ),
    Claim(
        "T1.c_chain", "c_t ≤ ĉ_t ≤ ‖X_t‖² + λ", "deterministic bound",
        r"c_t \le \hat c_t \le \|X_t\|_2^2 + \lambda",
        "For every t: c_t ≤ ĉ_t ≤ ‖X_t‖² + λ (equality c_t = ĉ_t when λ = 0).",
        S("c_lo"), S("c_hi"), (ANY_LOOP, EXPLICIT_SIZE), _D, "c", per="run", params=("explicit_max_N",),
    ),
    # -------------------------------------------------------------------------------- P1
    Claim(
        "P1", "Deterministic alphabet: no saturation", "implication",
        r"K + \tfrac12 \ge \frac{\|w\|_\infty}{\delta} + \tfrac12 \max_t \|B_{:,t}\|_1 \implies \text{no saturation}",
        "Nearest rounding: if K + ½ ≥ ‖w‖∞/δ + ½·max_t ‖B_{:,t}‖₁ then no z_t leaves the grid's range by more "
        "than half a step (K may need to grow like √N). Checked in the sharper entrywise form.",
        S("out_of_range"), sp.Integer(0), (LOOP, NEAREST, FINITE, P1_COND, PRECISE), _D, "exact",
        notes="Entries of B on dead columns are ~1e-17, not 0: the condition carries a margin of the loop accuracy.",
    ),
    Claim(
        "P1.drift", "Deterministic drift bound", "deterministic bound",
        r"|z_t - w_t| \le \tfrac12 \textstyle\sum_j \delta_j |B_{jt}|",
        "Nearest rounding, no saturation: |z_t − w_t| = |Σ_{j<t} e_j B_jt| ≤ ½ Σ_j δ_j |B_jt| for every t "
        "(the step behind P1).",
        S("drift_abs"), S("reach"), (LOOP, NEAREST, NO_SAT, PRECISE), PROVENANCE["added"], "w",
    ),
    # -------------------------------------------------------------------------------- T2
    Claim(
        "T2.tail", "Stochastic OPTQ, ℓ∞ tail bound", "probability bound",
        r"P\big(\|X(w-q)\|_\infty \ge \alpha,\ \text{no saturation}\big) \le \sum_i 2\exp\!\big(-\alpha^2/(2\sigma_i^2)\big),\ "
        r"\sigma_i^2 = s^2 \textstyle\sum_t R_{it}^2",
        "Stochastic rounding (δZ, or a finite grid as a joint event with no saturation): "
        "P(‖X(w−q)‖∞ ≥ α, no saturation) ≤ Σ_i 2exp(−α²/(2σ_i²)), σ_i² = s²Σ_t R_it² (X-block of R), s² = δ²/4. "
        "Never conditioned on no saturation (that is false).",
        S("Einf"), S("threshold"), (OPTQ, STOCHASTIC, STEPS_FIXED, PRECISE), PROVENANCE["sharp"], "inf",
        probability=_T2_TAIL_PROB, joint_no_saturation=True, constant="hoeffding", params=("threshold", "eta"),
        notes="Default threshold: per row the α at which the right side equals η.",
    ),
    *[
        Claim(
            f"T2.hp.{key}", f"Stochastic OPTQ, ℓ∞ bound w.p. 1−η ({K.CONSTANTS[key].name})", "probability bound",
            r"\|X(w-q)\|_\infty \le s\sqrt{2\log(2m/\eta)}\sqrt{\max_t c_t}\ \text{w.p.} \ge 1-\eta,\ " + rf"s^2 = {sp.latex(K.CONSTANTS[key].s2)}",
            f"Stochastic rounding, jointly with no saturation: w.p. ≥ 1−η, ‖X(w−q)‖∞ ≤ s·√(2 log(2m/η))·√(max_t c_t) "
            f"with s² = {K.CONSTANTS[key].name}.",
            S("Einf"), _hp(key, S("max_d2c")), (OPTQ, STOCHASTIC, STEPS_FIXED, PRECISE),
            PROVENANCE["sharp" if K.CONSTANTS[key].sharp else "conservative"], "inf",
            probability=S("eta"), joint_no_saturation=True, constant=key, params=("eta",),
        )
        for key in ("hoeffding", "pi8", "pi2")
    ],
    Claim(
        "T2.hp.explicit", "Stochastic OPTQ, ℓ∞ bound w.p. 1−η by column norms", "probability bound",
        r"\|X(w-q)\|_\infty \le s\sqrt{2\log(2m/\eta)}\sqrt{\max_t \|X_t\|_2^2 + \lambda}\ \text{w.p.} \ge 1-\eta,\ s^2 = \delta^2/4",
        "Stochastic rounding, jointly with no saturation: w.p. ≥ 1−η, ‖X(w−q)‖∞ ≤ s√(2 log(2m/η))·√(max_t ‖X_t‖² + λ), s² = δ²/4.",
        S("Einf"), _hp("hoeffding", S("max_d2c_col")), (OPTQ, STOCHASTIC, STEPS_FIXED, PRECISE), PROVENANCE["sharp"], "inf",
        probability=S("eta"), joint_no_saturation=True, constant="hoeffding", params=("eta",),
    ),
    Claim(
        "T2.expectation", "Stochastic OPTQ, expected squared error", "expectation bound",
        r"\mathbb{E}\big[\|X(w-q)\|_2^2 + \lambda\|w-q\|_2^2\big] \le \tfrac{\delta^2}{4}\textstyle\sum_t c_t",
        "Stochastic rounding on δZ (finite grid: the error times the indicator of no saturation): "
        "E[‖X(w−q)‖² + λ‖w−q‖²] ≤ (δ²/4)Σ_t c_t, from E e_t² = f(1−f)δ² ≤ δ²/4.",
        S("E2"), _s2("hoeffding") * S("sum_d2c"), (OPTQ, STOCHASTIC, STEPS_FIXED, PRECISE), _D, "sq",
        range_upper=S("sum_d2c"), joint_no_saturation=True,
        notes="Tested with Hoeffding's inequality for independent variables in [0, Σ_t δ_t² c_t] (|e_t| < δ_t).",
    ),
    # -------------------------------------------------------------------------------- T3
    Claim(
        "T3.alphabet", "Stochastic alphabet: no saturation w.p. 1−η", "probability bound",
        r"K \ge \frac{\|w\|_\infty}{\delta} + \frac{s}{\delta}\max_t\|B_{:,t}\|_2\sqrt{2\log(2N/\eta)} \implies P(\text{saturation}) \le \eta",
        "Stochastic rounding: if K ≥ ‖w‖∞/δ + (s/δ)·max_t ‖B_{:,t}‖₂·√(2 log(2N/η)) (s² = δ²/4) then w.p. ≥ 1−η there is "
        "no saturation, so K grows like √log N. Checked in the sharper entrywise form.",
        S("sat"), sp.Integer(0), (LOOP, STOCHASTIC, STEPS_FIXED, FINITE, T3_COND, PRECISE), PROVENANCE["sharp"], "exact",
        probability=S("eta"), constant="hoeffding", params=("eta",),
    ),
    Claim(
        "T3.drift_tail", "Stochastic drift tail", "probability bound",
        r"P\big(\exists t: |z_t - w_t| \ge s\|B_{:,t}\|_2\sqrt{2\log(2N/\eta)},\ \text{no saturation}\big) \le \eta",
        "Stochastic rounding, jointly with no saturation: P(some |z_t − w_t| ≥ s·‖B_{:,t}‖₂·√(2 log(2N/η))) ≤ η, "
        "s² = δ²/4 (the step behind T3; checkable on every run).",
        S("drift_abs"), _hp("hoeffding", S("drift_var"), samples="N"), (LOOP, STOCHASTIC, STEPS_FIXED, PRECISE),
        PROVENANCE["added"], "w", probability=S("eta"), joint_no_saturation=True, constant="hoeffding", params=("eta",),
    ),
    Claim(
        "T3.drift_bound", "Drift bound by λ", "deterministic bound",
        r"\|B_{:,t}\|_2^2 \le \frac{\max_j \|X_j\|_2^2}{\lambda}",
        "λ > 0: ‖B_{:,t}‖₂² ≤ max_j ‖X_j‖²/λ for every t (from Σ_j M_jt²/c_j = (H_λ⁻¹)_tt ≤ 1/λ and c_j ≤ λ + max_j ‖X_j‖²; "
        "the looser 1 + max_j‖X_j‖²/λ also holds).",
        S("B2max"), S("X2max") / S("lam"), (ANY_LOOP, LAM_POS), _D, "B", per="run",
    ),
    # -------------------------------------------------------------------------------- T4
    Claim(
        "T4.projection.identity", "Qronos (projection) exact identity", "identity",
        r"\|Xw - \tilde Xq\|_2^2 + \lambda\|w-q\|_2^2 = \rho_\lambda^2 + \sum_t e_t^2 \tilde c_t",
        "Qronos, projection variant, any rounding: ‖Xw − X̃q‖² + λ‖w−q‖² = ρ_λ² + Σ_t e_t² c̃_t.",
        S("F2"), S("rho2") + S("sum_e2c"), (QRONOS_PROJ, RECORDED, PRECISE), _D, "sq", relation="=",
    ),
    Claim(
        "T4.projection.bound", "Qronos (projection) deterministic bound", "deterministic bound",
        r"\|Xw - \tilde Xq\|_2^2 + \lambda\|w-q\|_2^2 \le \rho_\lambda^2 + \tfrac{\delta^2}{4}\sum_t \tilde c_t",
        "Qronos, projection variant, nearest rounding, no saturation: ‖Xw − X̃q‖² + λ‖w−q‖² ≤ ρ_λ² + (δ²/4)Σ_t c̃_t.",
        S("F2"), S("rho2") + HALF**2 * S("sum_d2c"), (QRONOS_PROJ, NEAREST, NO_SAT, PRECISE), _D, "sq",
        notes="Does NOT carry over to the original variant (X = I₂, X̃ = [[1,0],[1,1]], w = (3,0), δ = 1, λ → 0: 1 > 0.5).",
    ),
    Claim(
        "T4.rho_le_mismatch", "ρ_λ is at most the input mismatch", "deterministic bound",
        r"\rho_\lambda \le \|(X - \tilde X)w\|_2",
        "ρ_λ = min_v √(‖Xw − X̃v‖² + λ‖w − v‖²) ≤ ‖(X − X̃)w‖ (take v = w).",
        S("rho"), S("mis"), (ANY_LOOP, HAS_TILDE), _D, "rho",
    ),
    Claim(
        "T4.optq_mismatch", "OPTQ on mismatched inputs", "deterministic bound",
        r"\sqrt{\|Xw - \tilde Xq\|_2^2 + \lambda\|w-q\|_2^2} \le \|(X-\tilde X)w\|_2 + \tfrac{\delta}{2}\sqrt{\textstyle\sum_t \tilde c_t}",
        "OPTQ run on X̃ from w (nearest, no saturation) only gets √(‖Xw − X̃q‖² + λ‖w−q‖²) ≤ ‖(X−X̃)w‖ + (δ/2)√(Σ_t c̃_t), "
        "whereas Qronos (projection) replaces the first term by ρ_λ ≤ ‖(X−X̃)w‖.",
        S("F"), S("mis") + HALF * sp.sqrt(S("sum_d2c")), (OPTQ, MISMATCH_OPTQ, NEAREST, NO_SAT, PRECISE), _D, "norm",
    ),
    Claim(
        "T4.original.identity", "Qronos (original) exact identity", "identity",
        r"\|Xw - \tilde Xq\|_2^2 + \lambda\|w-q\|_2^2 = \rho_\lambda^2 + (\hat w_1 - q_1)^2\tilde c_1 + \sum_{t\ge2} e_t^2 \tilde c_t",
        "Qronos, original variant, any rounding: ‖Xw − X̃q‖² + λ‖w−q‖² = ρ_λ² + (ŵ_1 − q_1)² c̃_1 + Σ_{t≥2} e_t² c̃_t.",
        S("F2"), S("rho2") + S("e1c1") + S("sum_e2c_rest"), (QRONOS_ORIG, FIRST_LIVE, RECORDED, PRECISE), _D, "sq", relation="=",
    ),
    Claim(
        "T4.original.bound", "Qronos (original) deterministic bound", "deterministic bound",
        r"\|Xw - \tilde Xq\|_2^2 + \lambda\|w-q\|_2^2 \le \rho_\lambda^2 + \big(\tfrac{\delta}{2} + |\hat w_1 - y_1|\big)^2\tilde c_1 + \tfrac{\delta^2}{4}\sum_{t\ge2}\tilde c_t",
        "Qronos, original variant, nearest rounding, no saturation: the identity with |ŵ_1 − q_1| ≤ δ/2 + |ŵ_1 − y_1| "
        "(y_1 the least-squares value that is rounded).",
        S("F2"), S("rho2") + (HALF * S("d1") + S("gap1")) ** 2 * S("c1") + HALF**2 * S("sum_d2c_rest"),
        (QRONOS_ORIG, NEAREST, NO_SAT, FIRST_LIVE, PRECISE), _D, "sq",
    ),
    # -------------------------------------------------------------------------------- T5
    Claim(
        "T5.projection", "Stochastic Qronos (projection), ℓ∞ bound w.p. 1−η", "probability bound",
        r"\|Xw - \tilde Xq\|_\infty \le \|Xw - \tilde X\hat w\|_\infty + s\sqrt{2\log(2m/\eta)}\sqrt{\max_t \tilde c_t}\ \text{w.p.} \ge 1-\eta",
        "Qronos, projection variant, stochastic rounding, jointly with no saturation: w.p. ≥ 1−η, "
        "‖Xw − X̃q‖∞ ≤ ‖Xw − X̃ŵ‖∞ + s√(2 log(2m/η))√(max_t c̃_t), s² = δ²/4.",
        S("Finf"), S("hat_inf") + _hp("hoeffding", S("max_d2c")), (QRONOS_PROJ, STOCHASTIC, STEPS_FIXED, PRECISE),
        PROVENANCE["sharp"], "inf", probability=S("eta"), joint_no_saturation=True, constant="hoeffding", params=("eta",),
    ),
    Claim(
        "T5.original", "Stochastic Qronos (original), ℓ∞ bound w.p. 1−η", "probability bound",
        r"\|Xw - \tilde Xq\|_\infty \le \|Xw - \tilde X\hat w\|_\infty + |\hat w_1 - y_1|\,\|\tilde r_1\|_\infty + s\sqrt{2\log(2m/\eta)}\sqrt{\max_t \tilde c_t}\ \text{w.p.} \ge 1-\eta",
        "Qronos, original variant, stochastic rounding, jointly with no saturation: the T5 bound plus the deterministic "
        "offset |ŵ_1 − y_1|·‖r̃_1‖∞ of the first coordinate (without it the bound is false).",
        S("Finf"), S("hat_inf") + S("gap1") * S("r1inf") + _hp("hoeffding", S("max_d2c")),
        (QRONOS_ORIG, STOCHASTIC, STEPS_FIXED, FIRST_LIVE, PRECISE), PROVENANCE["sharp"], "inf",
        probability=S("eta"), joint_no_saturation=True, constant="hoeffding", params=("eta",),
    ),
    # -------------------------------------------------------------------------------- O1
    Claim(
        "O1.det", "Π_t c_t = det H_λ for every order", "identity",
        r"\textstyle\sum_t \log c_t = \log\det H_\lambda",
        "For every processing order, Π_t c_t = det H_λ: ordering only redistributes the c_t.",
        S("sum_log_c"), S("logdet"), (ANY_LOOP, LOGDET_PRECISE), _D, "log", relation="=", per="run",
    ),
    Claim(
        "O1.amgm", "AM–GM lower bound on Σ_t c_t for every order", "deterministic bound",
        r"\textstyle\sum_t c_t \ge N(\det H_\lambda)^{1/N}",
        "For every order, Σ_t c_t ≥ N·(det H_λ)^{1/N} (AM–GM on Π_t c_t = det H_λ). Decreasing column norms do NOT "
        "minimize Σ_t c_t in general (X = [[2,3,2],[−1,−3,3]], λ = 0.1: 18.46 against 9.98): a measured finding, not a claim.",
        S("N") * sp.exp(S("logdet") / S("N")), S("sum_c"), (ANY_LOOP, FULL_RANK_OR_LAM), _D, "c_rel", per="run",
    ),
    # -------------------------------------------------------------------------------- L1
    Claim(
        "L1.monotone", "c_t grows with λ at rate ≥ 1", "deterministic bound",
        r"c_t(\lambda_b) \ge c_t(\lambda_a) + (\lambda_b - \lambda_a)\quad(\lambda_a < \lambda_b)",
        "c_t is nondecreasing in λ, indeed c_t(λ_b) − c_t(λ_a) ≥ λ_b − λ_a (dc_t/dλ ≥ 1): the ℓ2 bound grows at least "
        "like Nλδ²/4.",
        S("L1_lo"), S("L1_hi"), (ANY_LOOP,), _D, "c", per="run", params=("lams",),
    ),
    Claim(
        "L1.concave", "c_t is concave in λ", "deterministic bound",
        r"c_t(\theta\lambda_a + (1-\theta)\lambda_c) \ge \theta c_t(\lambda_a) + (1-\theta)c_t(\lambda_c)",
        "c_t is concave in λ (its second derivative −2‖(A+λI)^{-3/2}b‖² ≤ 0).",
        S("L1_interp"), S("L1_mid"), (ANY_LOOP,), _D, "c", per="run", params=("lams",),
    ),
    Claim(
        "L1.derivative", "dc_t/dλ = 1 + ‖β_t‖²", "identity",
        r"\frac{\partial c_t}{\partial \lambda} = 1 + \|\beta_t\|_2^2,\ \beta_t = \arg\min_v \|X_t - X_{>t}v\|_2^2 + \lambda\|v\|_2^2",
        "dc_t/dλ = 1 + ‖β_t‖² ≥ 1 with β_t the ridge vector of feature t (= row t of B). Checked against the "
        "difference quotients, which bracket the derivative because c_t is concave (λ > 0 so that λ − h ≥ 0).",
        S("dc_exact"), S("dc_fd"), (ANY_LOOP, LAM_POS), _D, "fd", relation="=", per="run",
    ),
]

CLAIMS: "OrderedDict[str, Claim]" = OrderedDict((c.id, c) for c in _claims)
if len(CLAIMS) != len(_claims):  # pragma: no cover - a programming error
    raise RuntimeError("duplicate claim ids")


def get_claim(id: str) -> Claim:
    """The claim with this id (``KeyError`` listing the ids otherwise)."""
    try:
        return CLAIMS[id]
    except KeyError:
        raise KeyError(f"no claim {id!r}; known ids: {', '.join(CLAIMS)}") from None
