"""How sharp is each bound? An adversarial search for the largest empirical/bound ratio.

For every bound claim of :data:`theory.CLAIMS` (identities and implications have no ratio to
maximise) the search looks over the inputs its hypotheses allow: calibration data ``X`` (and the
mismatched ``X̃ = X + E`` for the Qronos and mismatched-OPTQ claims), the weight row ``w`` and the
damping ``λ``, small layers first (``N × m`` = 1×1, 2×2, 3×3, 4×4, 6×6 by default). Three reductions
keep the search space honest and small:

* **the grid is ``δZ`` with ``δ = 1``**: every deterministic bound assumes no saturation, and on a
  non-saturating run a finite grid (symmetric or GPTQ's, with an integer zero point) gives the
  very run of ``δZ``; the stochastic claims are joint events with no saturation, so a finite grid
  can only lower their probability. All claims are homogeneous under ``(X, w, λ, δ) →
  (aX, bw, a²λ, bδ)``, so ``δ = 1`` loses nothing.
* **the order is natural**: processing ``X`` in order ``π`` is processing the column-permuted
  ``X`` naturally, and the search ranges over all ``X``.
* **stochastic claims are judged on their distribution**, never on one draw: each evaluation runs
  ``R`` trials of the same weight row (common random numbers: the same seed at every evaluation,
  so the objective is a deterministic function of the inputs) and uses, for a probability bound
  ``P(lhs > bound) ≤ p``, the ``(1 − p)``-quantile of ``lhs/bound`` (≤ 1 exactly when the
  empirical exceedance frequency is ≤ p), and for the expectation bound the mean of
  ``lhs/bound``. The best case is then re-run with fresh randomness and more trials, and judged by
  the package's checker (exact binomial test, stated power).

Each ratio is the package checker's own (``theory.check``'s ``worst_ratio`` for deterministic
claims). The optimiser is SciPy's differential evolution (a population method; the objective is
discontinuous in ``w`` where a rounding decision flips), then a Nelder–Mead polish from the best
point. For reference, one hand-made input family per algorithm (orthogonal columns, every weight
at a half step: the case where every rounding error has its largest size ``δ/2`` and nothing is
propagated) is evaluated as well and reported separately, so that what the search found and what
was constructed are never confused.

Every deterministic best case is then certified in exact rational arithmetic
(:mod:`theory.exact`): the exact-arithmetic algorithm is run on the very float64 inputs and the
claim decided with no tolerance.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import algorithms as A
import theory
from theory import exact as EX

__all__ = ["TARGETS", "DEFAULT_SIZES", "DEFAULT_BUDGET", "Target", "search", "search_claim", "evaluate",
           "decode", "save_case", "load_case", "replay_case", "summary_markdown", "check_claims"]

DEFAULT_BUDGET = 2400  # objective evaluations per claim (deterministic); stochastic claims get a quarter
DEFAULT_SIZES = ((1, 1), (2, 2), (3, 3), (4, 4), (6, 6))  # (N, m)
DEFAULT_TRIALS = 300  # trials per stochastic evaluation during the search
Z_SEARCH = 2.0  # the search's quantile level is lowered by this many binomial standard errors (see evaluate)
FINAL_TRIALS = 4000  # trials of the final stochastic evaluation
ETA = 0.05
X_BOUND, E_BOUND, W_BOUND, LOGLAM = 2.0, 1.0, 4.0, (-3.0, 1.0)


@dataclass(frozen=True)
class Target:
    """A claim to search: the algorithm family that produces its runs and how its ratio is read."""

    claim: str
    family: str  # "optq", "optq_mismatch", "qronos_projection", "qronos_original"
    rounding: str = "nearest"
    measure: str = "worst"  # "worst" (deterministic), "quantile" (probability bound), "mean" (expectation)

    @property
    def stochastic(self) -> bool:
        return self.rounding == "stochastic"

    @property
    def mismatched(self) -> bool:
        return self.family != "optq"


def _t(claim, family, rounding="nearest", measure="worst"):
    return claim, Target(claim, family, rounding, measure)


TARGETS = dict([
    _t("T1.sum_c", "optq"), _t("T1.explicit", "optq"), _t("T1.frobenius", "optq"), _t("T1.c_chain", "optq"),
    _t("P1.drift", "optq"), _t("T3.drift_bound", "optq"), _t("O1.amgm", "optq"),
    _t("L1.monotone", "optq"), _t("L1.concave", "optq"),
    _t("T4.projection.bound", "qronos_projection"), _t("T4.rho_le_mismatch", "qronos_projection"),
    _t("T4.original.bound", "qronos_original"), _t("T4.optq_mismatch", "optq_mismatch"),
    _t("T2.tail", "optq", "stochastic", "quantile"),
    _t("T2.hp.hoeffding", "optq", "stochastic", "quantile"), _t("T2.hp.pi8", "optq", "stochastic", "quantile"),
    _t("T2.hp.pi2", "optq", "stochastic", "quantile"), _t("T2.hp.explicit", "optq", "stochastic", "quantile"),
    _t("T2.expectation", "optq", "stochastic", "mean"), _t("T3.drift_tail", "optq", "stochastic", "quantile"),
    _t("T5.projection", "qronos_projection", "stochastic", "quantile"),
    _t("T5.original", "qronos_original", "stochastic", "quantile"),
])

#: claims with no ratio to maximise (identities, implications), and why
NOT_SEARCHED = {
    "I1": "identity (ratio 1 by definition); certified exactly in tests/test_exact.py",
    "T4.projection.identity": "identity; certified exactly in tests/test_exact.py",
    "T4.original.identity": "identity; certified exactly in tests/test_exact.py",
    "O1.det": "identity; certified exactly in tests/test_exact.py",
    "L1.derivative": "identity (derivative against difference quotients)",
    "P1": "implication (condition ⇒ no saturation): no ratio; certified exactly in tests/test_exact.py",
    "T3.alphabet": "implication with a probability (condition ⇒ P(saturation) ≤ η): no ratio searched",
}


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
def _dim(target: Target, N: int, m: int) -> int:
    return m * N * (2 if target.mismatched else 1) + N + 1


def bounds(target: Target, N: int, m: int):
    """Box of the search variables: ``X`` entries, ``E = X̃ − X`` entries (mismatched families), ``w``, log10 λ."""
    b = [(-X_BOUND, X_BOUND)] * (m * N)
    if target.mismatched:
        b += [(-E_BOUND, E_BOUND)] * (m * N)
    return b + [(-W_BOUND, W_BOUND)] * N + [LOGLAM]


def decode(target: Target, theta, N: int, m: int) -> dict:
    """The layer of a search point: ``{"X", "X_tilde" (or None), "w", "lam"}`` (float64)."""
    th = np.asarray(theta, dtype=np.float64)
    if th.shape != (_dim(target, N, m),):
        raise ValueError(f"theta must have {_dim(target, N, m)} entries for N={N}, m={m}, got shape {th.shape}")
    i = m * N
    X = th[:i].reshape(m, N)
    Xt = None
    if target.mismatched:
        Xt = X + th[i:i + m * N].reshape(m, N)
        i += m * N
    w = th[i:i + N].copy()
    lam = float(10.0 ** th[i + N])
    return {"X": X, "X_tilde": Xt, "w": w, "lam": lam}


def reference_case(target: Target, N: int) -> dict:
    """The hand-made family (:data:`REFERENCES` for the claims with their own, else :data:`REFERENCE_TEXT`):
    ``X = I`` (orthogonal columns), ``X̃ = X``, every weight at a half step, ``λ = 10⁻³``."""
    if target.claim == "P1.drift":
        return {"X": np.array([[1.0, 1.0], [0.0, 1.0]]), "X_tilde": None, "w": np.array([0.5, 0.0]), "lam": 1e-3}
    if target.claim == "T3.drift_bound":
        # identical columns: the ratio of the last feature is Σ_{k<N} u/(u+k)², u = λ/‖x‖² (NOTES); best u on a grid
        k = np.arange(1, N)
        us = np.arange(0.25, 20.0, 0.25)
        u = float(us[int(np.argmax([np.sum(v / (v + k) ** 2) for v in us]))])
        return {"X": np.ones((1, N)), "X_tilde": None, "w": 0.5 + np.arange(N) % 3 - 1.0, "lam": u}
    X = np.eye(N)
    w = 0.5 + np.arange(N) % 3 - 1.0
    if target.claim == "T4.rho_le_mismatch":
        return {"X": X, "X_tilde": np.zeros((N, N)), "w": w, "lam": 1e-3}
    return {"X": X, "X_tilde": X.copy() if target.mismatched else None, "w": w, "lam": 1e-3}


#: claims whose reference family differs from :data:`REFERENCE_TEXT`
REFERENCES = {
    "P1.drift": "X = [[1, 1], [0, 1]], w = (½, 0), λ = 1e-3: the first error is a tie (|e_1| = δ/2), so "
                "|z_2 − w_2| = ½|B_12| exactly",
    "T4.rho_le_mismatch": "X = I, X̃ = 0, w at half steps, λ = 1e-3: ρ_λ = ‖Xw‖ = ‖(X − X̃)w‖",
    "T3.drift_bound": "identical columns X = (1, …, 1) (one sample), λ = u·‖X_t‖² with the u (grid of step ¼) that "
                      "maximises Σ_{k<N} u/(u+k)²",
}
#: claims attained only in a limit, with the argument
ASYMPTOTIC = {
    "T3.drift_bound": "proof: with identical columns X_j = x and λ = u‖x‖² the ridge vector of feature j has every "
                      "entry ‖x‖²/(λ + ‖x‖²(N−1−j)), so for the last feature λ‖B_{:,N}‖²/‖x‖² = Σ_{k=1}^{N−1} u/(u+k)²; "
                      "as N → ∞ this tends to u·ψ′(u+1), and u·ψ′(u+1) → 1 as u → ∞ (best values 0.25, 0.365, 0.437, "
                      "0.525, 0.647, 0.866, 0.986 for N = 2, 3, 4, 6, 12, 100, 10⁴); for N = 2 the ratio is at most 1/4",
}


# ------------------------------------------------------------------------------------------------
# one evaluation
# ------------------------------------------------------------------------------------------------
def _quantize(target: Target, case: dict, W, rng):
    grid = A.Grid.integers(1.0)
    kw = dict(grid=grid, lam=case["lam"], rounding=target.rounding, rng=rng, method="cholesky")
    if target.family == "optq":
        r = A.optq(W, case["X"], **kw)
        return theory.Run.from_result(r, case["X"])
    if target.family == "optq_mismatch":
        r = A.optq(W, case["X_tilde"], **kw)
        return theory.Run.from_result(r, case["X"], X_tilde=case["X_tilde"])
    variant = target.family.split("_", 1)[1]
    r = A.qronos(W, case["X"], case["X_tilde"], variant=variant, **kw)
    return theory.Run.from_result(r, case["X"], X_tilde=case["X_tilde"], W=W)


def evaluate(target: Target, case: dict, *, trials: int = DEFAULT_TRIALS, seed: int = 0, eta: float = ETA,
             z: float = 0.0) -> dict:
    """The claim's ratio on ``case``: ``{"ratio", "status", "verdict"}`` (``ratio`` 0 when out of scope or
    the algorithm rejects the input). Stochastic targets run ``trials`` rows of the same ``w``; a probability
    bound's ratio is the ``(1 − p)``-quantile of lhs/bound, or with ``z > 0`` the ``(1 − p − z·√(p(1−p)/T))``-
    quantile: a value that ``p·T + z`` standard errors of the trials exceed, so that the search cannot climb on
    the noise of its own trials (at ``p ≈ η`` a point whose true exceedance probability lies just below ``p``
    would otherwise look like a ratio near 1)."""
    W = case["w"][None, :]
    rng = None
    if target.stochastic:
        W = np.repeat(W, trials, axis=0)
        rng = np.random.default_rng(seed)
    try:
        run = _quantize(target, case, W, rng)
        v = theory.check(target.claim, run, eta=eta)
    except (ValueError, np.linalg.LinAlgError, FloatingPointError):
        return {"ratio": 0.0, "status": "rejected", "verdict": None}
    if v.in_scope == 0 or v.status == "out of scope":
        return {"ratio": 0.0, "status": "out of scope", "verdict": v}
    if target.measure == "worst":
        ratio = float(v.worst_ratio)
    elif target.measure == "mean":
        ratio = float(v.mean)
    else:
        p = float(np.mean(v.claimed_p)) if v.claimed_p is not None and v.claimed_p.size else eta
        p = min(max(p, 0.0), 1.0)
        level = 1.0 - p - z * math.sqrt(p * (1 - p) / max(1, v.in_scope))
        ratio = float(np.quantile(np.asarray(v.ratio, dtype=float), min(max(level, 0.0), 1.0)))
    if not math.isfinite(ratio):
        ratio = 0.0 if math.isnan(ratio) else ratio
    return {"ratio": ratio, "status": v.status, "verdict": v}


# ------------------------------------------------------------------------------------------------
# search
# ------------------------------------------------------------------------------------------------
def _optimise(target, N, m, evals, *, seed, trials, tick):
    """Differential evolution (≈80 % of ``evals``) then Nelder–Mead from the best point."""
    from scipy.optimize import differential_evolution, minimize

    bnds = bounds(target, N, m)
    dim = len(bnds)
    count = [0]
    best = [-math.inf, None]

    def f(theta):
        if count[0] >= evals:
            return 0.0
        count[0] += 1
        tick()
        r = evaluate(target, decode(target, theta, N, m), trials=trials, seed=seed, z=Z_SEARCH)["ratio"]
        if r > best[0]:
            best[0], best[1] = r, np.array(theta, dtype=float)
        return -r

    popmult = max(1, min(5, evals // (4 * dim)))
    de_evals = int(0.8 * evals)
    maxiter = max(1, de_evals // (popmult * dim) - 1)
    differential_evolution(f, bnds, popsize=popmult, maxiter=maxiter, tol=0, atol=0, polish=False, seed=seed,
                           init="latinhypercube", updating="immediate")
    if best[1] is not None and count[0] < evals:
        lo = np.array([b[0] for b in bnds])
        hi = np.array([b[1] for b in bnds])
        minimize(lambda th: f(np.clip(th, lo, hi)), best[1], method="Nelder-Mead",
                 options={"maxfev": evals - count[0], "xatol": 1e-9, "fatol": 0.0})
    return best[0], best[1], count[0]


def search_claim(claim: str, *, budget: int = DEFAULT_BUDGET, sizes=DEFAULT_SIZES, seed: int = 0,
                 trials: int = DEFAULT_TRIALS, final_trials: int = FINAL_TRIALS, tick=lambda: None) -> dict:
    """Search one claim; return its result record (best ratio, case, per-size bests, final verdict, certificate)."""
    target = TARGETS[claim]
    evals_total = max(len(sizes), budget // 4 if target.stochastic else budget)
    per = max(1, evals_total // len(sizes))
    t0 = time.perf_counter()
    cands = []  # (source, N, m, case, search ratio)
    per_size, evaluations = {}, 0
    for k, (N, m) in enumerate(sizes):
        r, theta, used = _optimise(target, N, m, per, seed=seed + 1000 * k, trials=trials, tick=tick)
        evaluations += used
        per_size[f"{N}x{m}"] = {"search": float(r) if math.isfinite(r) else None}
        if theta is not None:
            cands.append(("search", N, m, decode(target, theta, N, m), r))
    ref_N = max(n for n, _ in sizes)
    ref = reference_case(target, ref_N)
    rN, rm = ref["X"].shape[1], ref["X"].shape[0]
    cands.append(("reference family", rN, rm, ref, evaluate(target, ref, trials=trials, seed=seed, z=Z_SEARCH)["ratio"]))
    # every candidate is judged afresh (stochastic: new randomness, more trials), so that a search point that
    # only fits the search's own random numbers is not reported; ties prefer the larger layer
    finals = []
    for src, N, m, case, r in cands:
        fin = final_evaluation(target, case, seed=seed + 7, trials=final_trials)
        finals.append(fin)
        if src == "search":
            per_size[f"{N}x{m}"]["final"] = fin["ratio"]
    out = {
        "claim": claim, "family": target.family, "rounding": target.rounding, "measure": target.measure,
        "search_ratio": max((c[4] for c in cands if c[0] == "search"), default=None), "per_size": per_size,
        "evaluations": evaluations,
        "reference_family": {"ratio": finals[-1]["ratio"], "N": int(cands[-1][1]),
                             "description": REFERENCES.get(claim, REFERENCE_TEXT)},
        "seconds": None,
    }
    key = lambda i: (round(finals[i]["ratio"], 12), cands[i][1])  # noqa: E731
    i = max(range(len(cands)), key=key)
    src, N, m, case, _ = cands[i]
    out.update(source=src, N=N, m=m, case=case, final=finals[i], best_ratio=finals[i]["ratio"],
               input=describe_case(case))
    if not target.stochastic:
        out["certificate"] = certify_case(target, case)
    elif claim.startswith("T2.hp.") and claim != "T2.hp.explicit":
        # the measured counterpart of the constant: the s² the best case needs, in units of δ²
        from theory import constants as TC

        s2 = float(TC.CONSTANTS[theory.get_claim(claim).constant].s2 / TC.delta**2)
        out["s2_needed_over_delta2"] = finals[i]["ratio"] ** 2 * s2
        out["s2_claimed_over_delta2"] = s2
    out["seconds"] = time.perf_counter() - t0
    return out


def describe_case(case: dict) -> dict:
    """Scale-free features of an input: relative damping, column-norm spread, conditioning, mismatch, weights."""
    X, lam = case["X"], case["lam"]
    col = np.sum(X**2, axis=0)
    mc = float(np.mean(col)) if np.mean(col) > 0 else 1.0
    H = X.T @ X + lam * np.eye(X.shape[1])
    d = {"lam_over_mean_col_norm2": lam / mc, "cond_H": float(np.linalg.cond(H)),
         "col_norm2_max_over_min": float(np.max(col) / np.min(col)) if np.min(col) > 0 else None,
         "w_frac_distance_to_half": float(np.max(np.abs(np.abs(case["w"] - np.floor(case["w"])) - 0.5)))}
    if case.get("X_tilde") is not None:
        nx = float(np.linalg.norm(X))
        d["mismatch_rel"] = float(np.linalg.norm(case["X_tilde"] - X) / nx) if nx > 0 else None
        nt = np.sum(case["X_tilde"] ** 2, axis=0)
        d["x_tilde_col_norm2_min_over_x"] = float(np.min(nt / np.where(col > 0, col, 1.0)))
    return d


REFERENCE_TEXT = "X = I (orthogonal columns), X̃ = X, every weight at a half step (w_t ∈ ½ + Z), λ = 1e-3"


def final_evaluation(target: Target, case: dict, *, seed: int, trials: int) -> dict:
    """The official judgement of a best case: the checker's verdict (stochastic: ``trials`` fresh trials)."""
    ev = evaluate(target, case, trials=trials, seed=seed)
    v = ev["verdict"]
    d = {"ratio": ev["ratio"], "status": ev["status"], "trials": trials if target.stochastic else 1}
    if v is not None and target.claim.startswith("T5.") and v.in_scope:
        Xw = case["X"] @ case["w"]
        wh = theory.quantities.w_hat(case["w"][None, :], case["X"], case["X_tilde"], case["lam"])[0]
        d["offset_share"] = float(np.max(np.abs(Xw - case["X_tilde"] @ wh)) / float(np.max(v.rhs)))
    if v is not None and target.stochastic:
        d["checker"] = {k: v.to_dict().get(k) for k in ("status", "trials", "exceedances", "expected", "claimed_p",
                                                           "p_value", "mean", "power", "message")}
        if target.measure == "quantile":
            k, T = int(v.exceedances), int(v.trials)
            p = float(np.mean(v.claimed_p)) if v.claimed_p is not None and v.claimed_p.size else ETA
            d["exceedance_frequency"] = k / T if T else None
            d["claimed_probability"] = p
            d["frequency_over_claimed"] = (k / T) / p if T and p > 0 else None
    return d


def certify_case(target: Target, case: dict) -> dict:
    """Exact-arithmetic certificate of a deterministic claim on ``case`` (:mod:`theory.exact`)."""
    if target.claim not in EX.CERTIFIABLE:
        return {"status": "not certifiable", "reason": "the bound involves a singular value (T1.explicit, T1.c_chain) "
                "or c_t at several λ (L1): no exact decision implemented"}
    ex = exact_run(target, case)
    cert = EX.certify(ex, [target.claim])[target.claim]
    float_q = _float_q(target, case)
    return dict(cert.to_dict(), exact_q_equals_float_q=bool(np.array_equal(np.array([float(v) for v in ex.q]), float_q)),
                tie_margin=float(ex.tie_margin))


def exact_run(target: Target, case: dict):
    g = EX.ExactGrid.symmetric(1.0)
    if target.family == "optq":
        return EX.exact_optq(case["X"], case["w"], case["lam"], grid=g)
    if target.family == "optq_mismatch":
        return EX.exact_optq(case["X"], case["w"], case["lam"], grid=g, X_tilde=case["X_tilde"])
    return EX.exact_qronos(case["X"], case["X_tilde"], case["w"], case["lam"], grid=g,
                           variant=target.family.split("_", 1)[1])


def _float_q(target, case):
    t = Target(target.claim, target.family)  # nearest rounding
    run = _quantize(t, case, case["w"][None, :], None)
    return np.asarray(run.Q)[0]


def check_claims(claims) -> list:
    """Validate a list of claim ids for the search (``ValueError`` naming ``--claims`` and the choices)."""
    if claims is None:
        return list(TARGETS)
    out = []
    for c in claims:
        if c in TARGETS:
            out.append(c)
        elif c in NOT_SEARCHED:
            raise ValueError(f"--claims: {c} is not searched ({NOT_SEARCHED[c]}); choose among {', '.join(TARGETS)}")
        else:
            pref = [k for k in TARGETS if k.startswith(c + ".") or k == c]
            if not pref:
                raise ValueError(f"--claims: unknown claim {c!r}; choose among {', '.join(TARGETS)}")
            out.extend(pref)
    return list(dict.fromkeys(out))


def search(claims=None, *, budget: int = DEFAULT_BUDGET, sizes=DEFAULT_SIZES, seed: int = 0, out=None,
           progress: bool = True, trials: int = DEFAULT_TRIALS, final_trials: int = FINAL_TRIALS) -> dict:
    """Run the search for ``claims`` (default: every searchable claim); save the best cases under ``out``
    (a folder) when given, with ``tightness.json``/``.md`` beside it. Returns the summary dict."""
    claims = check_claims(claims)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 4 * len(sizes):
        raise ValueError(f"--budget must be an integer ≥ {4 * len(sizes)} (evaluations per claim), got {budget!r}")
    from tqdm.auto import tqdm

    total = sum(max(len(sizes), (budget // 4) if TARGETS[c].stochastic else budget) // len(sizes) * len(sizes)
                for c in claims)
    bar = tqdm(total=total, desc="tightness", unit="eval", disable=not progress)
    t0 = time.perf_counter()
    results = []
    try:
        for c in claims:
            bar.set_postfix_str(c)
            results.append(search_claim(c, budget=budget, sizes=sizes, seed=seed, trials=trials,
                                        final_trials=final_trials, tick=lambda: bar.update(1)))
    finally:
        bar.close()
    from .campaign import machine_meta

    summary = {
        "description": "adversarial search for the largest empirical/bound ratio of every bound claim "
                       "(verify/tightness.py); ratios are the package checker's",
        "budget": int(budget), "sizes": [list(s) for s in sizes], "seed": int(seed), "trials": int(trials),
        "final_trials": int(final_trials), "eta": ETA, "seconds": time.perf_counter() - t0,
        "machine": machine_meta(),
        "claims": {r["claim"]: _public(r) for r in results},
        "not_searched": NOT_SEARCHED,
    }
    for r in results:
        summary["claims"][r["claim"]]["classification"] = classify(r)
    if out is not None:
        write(summary, results, out)
    return summary


def _public(r: dict) -> dict:
    d = {k: v for k, v in r.items() if k != "case"}
    if r.get("case") is not None:
        d["lam"] = r["case"]["lam"]
    return d


# ------------------------------------------------------------------------------------------------
# classification (measured; proofs only where one is stated)
# ------------------------------------------------------------------------------------------------
#: ratios that follow from a stated argument, not from the search: claim -> (upper limit, argument)
PROVEN_LIMITS = {
    "T2.hp.pi8": (math.sqrt(2 / math.pi), "T2.hp.hoeffding holds (s² = δ²/4), so the (1−η)-quantile of the error is at "
                  "most the Hoeffding radius; the π/8 radius is √((π/8)/(1/4)) = √(π/2) ≈ 1.253 times larger: ratio ≤ "
                  "√(2/π) ≈ 0.798"),
    "T2.hp.pi2": (1 / math.sqrt(2 * math.pi), "as for π/8: the π/2 radius is √(2π) ≈ 2.507 times the Hoeffding "
                  "radius: ratio ≤ 1/√(2π) ≈ 0.399"),
}


_GAUSS = ("for comparison, N = m = 1 (proof): the ratio is at most 2(1 − η)/√(2 log(2/η)) ≈ 0.70 at η = 0.05, approached "
          "as λ → 0: one stochastic error takes the values fδ and (1 − f)δ, so its (1 − η)-quantile is at most (1 − η)δ "
          "(approached as f ↓ η), while the radius is at least (δ/2)√(2 log(2/η))·|x|; larger layers reach the values "
          "listed per size")
#: facts about a claim's ratio stated with their argument (shown beside the measured value)
NOTES = {
    "T3.drift_bound": "for N = 2: ‖B_{:,2}‖² = ⟨X_1,X_2⟩²/(‖X_2‖²+λ)² ≤ ‖X_1‖²·‖X_2‖²/(‖X_2‖²+λ)² ≤ max_j‖X_j‖²/(4λ), "
                      "so the ratio is at most 1/4 there (the search reached 0.25 at 2×2)",
    "T2.hp.hoeffding": _GAUSS, "T2.hp.explicit": _GAUSS, "T2.tail": _GAUSS,
    "T1.c_chain": "attained trivially: for the last processed feature c_N = ĉ_N = ‖X_N‖² + λ",
    "L1.monotone": "attained trivially: the last processed feature has c_N(λ) = ‖X_N‖² + λ, linear in λ",
    "L1.concave": "attained trivially: the last processed feature has c_N(λ) = ‖X_N‖² + λ, linear in λ",
    "O1.amgm": "equality when every c_t is the same (e.g. X = I)",
    "T5.projection": "the bound adds the deterministic offset ‖Xw − X̃ŵ‖∞ to a T2-type radius; see offset_share: where "
                     "the offset makes up most of the bound (mismatch dominating), the ratio approaches 1 through the "
                     "offset alone, and the stochastic part behaves as in T2",
    "P1.drift": "proof of attainment: |Σ_j e_j B_jt| ≤ Σ_j |e_j||B_jt| ≤ ½Σ_j δ|B_jt|, with equality when every "
                "|e_j| = δ/2 (rounding ties) with the signs of B_jt; for N = 2 a single tie suffices (reference family)",
}
NOTES["T5.original"] = NOTES["T5.projection"]


def classify(r: dict) -> dict:
    """Honest classification of one claim's search result."""
    d = _classify(r)
    if r["claim"] in NOTES and d["class"] not in ("violated", "not exercised"):
        d["note"] = NOTES[r["claim"]]
    return d


def _classify(r: dict) -> dict:
    best = r.get("best_ratio")
    if best is None:
        return {"class": "not exercised", "text": "no in-scope input was found"}
    cert = r.get("certificate", {})
    if cert.get("status") == "violated" or r["final"].get("status") == "violated":
        return {"class": "violated", "text": f"the bound is exceeded on the best case (ratio {best:.6g}): a finding"}
    sizes = [v.get("final") for v in r["per_size"].values() if v.get("final") is not None]
    grows = len(sizes) >= 2 and all(b >= a - 1e-9 for a, b in zip(sizes, sizes[1:])) and sizes[-1] > sizes[0] + 1e-3
    per = ", ".join(f"{k}: {v['final']:.3g}" for k, v in r["per_size"].items() if v.get("final") is not None)
    if r["claim"] in ASYMPTOTIC and best < 1 - 1e-9:
        return {"class": "attained asymptotically", "text": f"best {best:.4g} at N = {r.get('N')} "
                f"({'constructed family' if r['source'] != 'search' else 'found by the search'}; per size found by the "
                f"search {per}); the constant is attained as N → ∞, {ASYMPTOTIC[r['claim']]}"}
    if r["claim"] in PROVEN_LIMITS:
        lim, why = PROVEN_LIMITS[r["claim"]]
        return {"class": "provably loose", "factor": 1 / lim,
                "text": f"best {best:.3g}; provably loose: {why}"}
    if best >= 1 - 1e-9:
        how = "exactly (an equality in exact arithmetic)" if cert.get("attained") else "to float precision"
        return {"class": "attained", "text": f"constant attained {how}: ratio {best:.6g} "
                f"({'reference family' if r['source'] != 'search' else 'found by the search'})"}
    if best >= 0.95:
        return {"class": "nearly attained", "text": f"best {best:.4g} (within 5 % of the bound)"
                + ("; grows with N in the search" if grows else "")}
    if grows:
        return {"class": "not attained at these sizes", "text": f"best {best:.3g}, growing with N ({per}): "
                "possibly attained asymptotically; not proven"}
    gap = f"no input within a factor {1 / best:.3g} of the bound (in the claim's own form)" if best > 0 else \
        "no input with a positive ratio"
    return {"class": "not attained", "text": f"best {best:.3g} (per size {per}): the search found {gap}; "
            "looseness not proven"}


# ------------------------------------------------------------------------------------------------
# storage and replay
# ------------------------------------------------------------------------------------------------
def _slug(claim):
    return claim.replace(".", "_")


def save_case(folder, claim: str, case: dict, config: dict) -> tuple:
    """``folder/<claim>.npz`` (X, X_tilde, w, lam) and ``folder/<claim>.json`` (configuration)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / f"{_slug(claim)}.npz"
    arrs = {"X": case["X"], "w": case["w"], "lam": np.array(case["lam"])}
    if case.get("X_tilde") is not None:
        arrs["X_tilde"] = case["X_tilde"]
    np.savez(npz, **arrs)
    js = folder / f"{_slug(claim)}.json"
    js.write_text(json.dumps(config, indent=1, sort_keys=True, default=_json) + "\n")
    return npz, js


def load_case(folder, claim: str) -> tuple:
    folder = Path(folder)
    with np.load(folder / f"{_slug(claim)}.npz") as z:
        case = {"X": z["X"], "w": z["w"], "lam": float(z["lam"]),
                "X_tilde": z["X_tilde"] if "X_tilde" in z.files else None}
    config = json.loads((folder / f"{_slug(claim)}.json").read_text())
    return case, config


def replay_case(claim: str, case: dict, *, seed: int = 12345, trials: int = 2000) -> dict:
    """Re-judge a saved best case: the checker's verdict and, for certifiable claims, the exact certificate."""
    t = TARGETS[claim]
    d = {"float": final_evaluation(t, case, seed=seed, trials=trials)}
    if not t.stochastic:
        d["certificate"] = certify_case(t, case)
    return d


def _json(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o).__name__)


def write(summary: dict, results: list, out) -> None:
    out = Path(out)
    for r in results:
        if r.get("case") is not None:
            save_case(out, r["claim"], r["case"], dict(_public(r), seed=summary["seed"], grid="integers(delta=1)",
                                                       order="natural", classification=classify(r)))
    out.parent.mkdir(parents=True, exist_ok=True)
    (out.parent / f"{out.name}.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=_json) + "\n")
    (out.parent / f"{out.name}.md").write_text(summary_markdown(summary))


def _ordered(summary):
    """The claims of a summary in registry order (JSON files store them sorted)."""
    ids = [c for c in TARGETS if c in summary["claims"]] + [c for c in summary["claims"] if c not in TARGETS]
    return [(c, summary["claims"][c]) for c in ids]


def refresh(out) -> dict:
    """Recompute the stored classifications of a saved run (``<out>.json``, the per-claim JSON files and
    ``<out>.md``) from its stored results, after the classification rules or notes changed; nothing is re-run."""
    out = Path(out)
    summary = json.loads((out.parent / f"{out.name}.json").read_text())
    for cid, r in summary["claims"].items():
        r["classification"] = classify(dict(r, claim=cid))
        js = out / f"{_slug(cid)}.json"
        if js.is_file():
            cfg = json.loads(js.read_text())
            cfg["classification"] = r["classification"]
            js.write_text(json.dumps(cfg, indent=1, sort_keys=True, default=_json) + "\n")
    (out.parent / f"{out.name}.json").write_text(json.dumps(summary, indent=1, sort_keys=True, default=_json) + "\n")
    (out.parent / f"{out.name}.md").write_text(summary_markdown(summary))
    return summary


def summary_markdown(summary: dict) -> str:
    lines = ["# Tightness search", "",
             "Largest empirical/bound ratio found per bound claim (`ptq-bounds tightness`, verify/tightness.py). "
             f"Budget {summary['budget']} evaluations per deterministic claim (a quarter for stochastic ones), sizes "
             f"N×m ∈ {{{', '.join(f'{a}×{b}' for a, b in summary['sizes'])}}}, seed {summary['seed']}, "
             f"{summary['seconds']:.0f} s. Stochastic claims: (1−p)-quantile of lhs/bound over {summary['final_trials']} "
             "trials (probability bounds, p the claimed probability) or the mean (expectation bound). "
             "Certificate: the best case decided in exact rational arithmetic (theory/exact.py).", "",
             "| claim | best ratio | found by | N×m | λ | certificate | classification |", "|---|---|---|---|---|---|---|"]
    for cid, r in _ordered(summary):
        cert = r.get("certificate", {})
        cs = cert.get("status", "— (stochastic)") if cert else "— (stochastic)"
        b = r.get("best_ratio")
        lines.append(f"| {cid} | {'—' if b is None else f'{b:.4g}'} | {r.get('source', '')} | {r.get('N')}×{r.get('m')} | "
                     f"{r.get('lam', float('nan')):.3g} | {cs} | {classify(dict(r, claim=cid))['text']} |")
    lines += ["", "Not searched: " + "; ".join(f"{k}: {v}" for k, v in summary["not_searched"].items()) + ".", ""]
    return "\n".join(lines)


def paper_checks_section(summary: dict) -> str:
    """The tightness section of ``paper_checks.md`` (from ``results/tightness.json``)."""
    a = []
    sizes = ", ".join(f"{n}×{m}" for n, m in summary["sizes"])
    mach = summary.get("machine") or {}
    a += ["## Tightness: the largest ratio an adversarial search found", "",
          "Random and real data show how the bounds behave on typical inputs; this section asks how close *any* input "
          "allowed by a claim's hypotheses comes to its bound. `ptq-bounds tightness` (verify/tightness.py) maximises "
          "the checker's empirical/bound ratio of every bound claim over X, w, λ (and X̃ for the mismatch claims) by "
          "differential evolution and a Nelder–Mead polish, small layers first "
          f"(N×m ∈ {{{sizes}}}), {summary['budget']} evaluations per deterministic claim (a quarter for stochastic "
          f"ones), seed {summary['seed']}; {summary['seconds']:.0f} s on {mach.get('cpu_count', '?')} cores "
          f"(code {(mach.get('git_commit') or 'unknown')[:10]}). The grid is δZ with δ = 1 and the order natural: "
          "without saturation a finite or GPTQ grid gives the same run, the claims are homogeneous in (X, w, λ, δ), and "
          "a processing order is a permutation of X's columns, which the search covers. One constructed input family "
          "per claim is evaluated beside the search and reported as such.", "",
          "* **Deterministic claims**: the ratio is the checker's (squared norms for T3.drift_bound, T4.projection.bound "
          "and T4.original.bound). Every best case is *certified in exact rational arithmetic* (theory/exact.py): OPTQ "
          "or Qronos is re-run on the very float64 inputs with fractions (LDLᵀ form, exact rounding decisions, ties to "
          "even as in the float code) and the claim decided with no tolerance (squares compared exactly; the explicit "
          "bound's singular value enclosed in a rational interval by real-root isolation).",
          f"* **Probability claims** are judged on the distribution, not on a draw: the ratio is the (1 − p)-quantile "
          f"of lhs/bound over {summary['final_trials']} fresh trials of the best input (p the claimed probability; "
          "≤ 1 exactly when the exceedance frequency is ≤ p), the expectation claim on the mean. Their verdict is the "
          "checker's exact binomial (or Bernstein) test on those trials.", "",
          "| claim | best ratio | reached by | N×m | λ / mean‖X_t‖² | exact certificate | classification |",
          "|---|---|---|---|---|---|---|"]
    for cid, r in _ordered(summary):
        b = r.get("best_ratio")
        cert = (r.get("certificate") or {}).get("status")
        cert = "—" if cert is None else cert
        src = r.get("source", "")
        if src == "reference family":
            src = "constructed: " + (r.get("reference_family") or {}).get("description", "")
        else:
            src = "search"
        inp = r.get("input") or {}
        lr = inp.get("lam_over_mean_col_norm2")
        cls = classify(dict(r, claim=cid))
        a.append(f"| {cid} | {'—' if b is None else f'{b:.4g}'} | {src} | {r.get('N')}×{r.get('m')} | "
                 f"{'—' if lr is None else f'{lr:.3g}'} | {cert} | {cls['class']} |")
    a += ["", "Classification: *attained* means a ratio of 1 (certified as an equality in exact arithmetic where the "
          "certificate says so, else to float precision); *nearly attained* within 5 %; *provably loose* gives the "
          "factor with its argument; *not attained* means only that the search found nothing closer: no proof of "
          "looseness is claimed.", ""]
    hp = [(cid, r) for cid, r in _ordered(summary) if "s2_needed_over_delta2" in r]
    if hp:
        a += ["### The three constants of the stochastic bound, measured", "",
              "For T2.hp with each constant: the s² the best input needs (ratio² × s², in units of δ²) against the "
              "claimed s². The sub-Gaussian δ²/4 is the smallest valid constant stated; π/8 and π/2 are larger by "
              "√(π/2) and √(2π) in the radius, so their ratios are provably at most 0.798 and 0.399 of Hoeffding's.", "",
              "| claim | claimed s²/δ² | needed by the best input s²/δ² | best ratio |", "|---|---|---|---|"]
        for cid, r in hp:
            a.append(f"| {cid} | {r['s2_claimed_over_delta2']:.4g} | {r['s2_needed_over_delta2']:.4g} | "
                     f"{r['best_ratio']:.4g} |")
        a.append("")
    a += ["### Notes per claim", ""]
    for cid, r in _ordered(summary):
        cls = classify(dict(r, claim=cid))
        line = f"* **{cid}**: {cls['text']}"
        if cls.get("note"):
            line += f". {cls['note'][0].upper()}{cls['note'][1:]}"
        off = (r.get("final") or {}).get("offset_share")
        if off is not None:
            line += f" (offset share of the bound at the best input: {off:.3g})"
        a.append(line + ".")
    a += ["", "Not searched: " + "; ".join(f"{k} ({v})" for k, v in summary["not_searched"].items()) + ".", ""]
    return "\n".join(a)


# ------------------------------------------------------------------------------------------------
# the store
# ------------------------------------------------------------------------------------------------
def store_summary(summary: dict, store) -> str:
    """Record a search in the result store (a :class:`verify.store.Store`): one campaign
    ``tightness-<hash of its settings>``, one cell per claim (study ``tightness``) whose verdict
    carries the best ratio, the status of the best case and, in ``detail``, its classification and
    exact certificate. Returns the campaign id; a second call with the same settings keeps the
    first record of each claim (cells are stored once)."""
    import hashlib
    import json as _json

    from .campaign import provenance

    cfg = {k: summary[k] for k in ("budget", "sizes", "seed", "trials", "final_trials", "eta")}
    cid = "tightness-" + hashlib.sha256(_json.dumps({**cfg, "claims": sorted(summary["claims"])},
                                                    sort_keys=True).encode()).hexdigest()[:12]
    store.open_campaign(cid, "tightness", cfg, {**provenance(seed=summary["seed"]),
                                                "description": summary["description"]})
    for claim, r in summary["claims"].items():
        final = r.get("final") or {}
        cert = r.get("certificate") or {}
        status = "violated" if cert.get("status") == "violated" else final.get("status", "not exercised")
        verdict = {"claim": claim, "kind": "tightness search", "status": status, "in_scope": 1,
                   "violated": status == "violated", "worst_ratio": r.get("best_ratio"),
                   "trials": final.get("trials"),
                   "detail": {"classification": r.get("classification"), "certificate": cert,
                              "N": r.get("N"), "m": r.get("m"), "source": r.get("source"), "family": r.get("family")}}
        config = {"claim": claim, **cfg}
        key = "tightness:" + hashlib.sha256(_json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        store.put_cell(cid, {"key": key, "study": "tightness", "config": config, "seed": int(summary["seed"]),
                             "status": "done", "seconds": r.get("seconds"), "verdicts": [verdict]})
    return cid
