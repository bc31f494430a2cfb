"""Executable statements of the error bounds of OPTQ (GPTQ) and Qronos (SPEC §3–§5).

* :mod:`theory.quantities`: the exact quantities (``c_t``, ``M``, ``B``, ``R``, ``ŵ``, ``ρ_λ``, …);
* :mod:`theory.explicit`: T1's explicit bound ``ĉ_t`` for all features from one QR (an enclosure);
* :mod:`theory.claims`: every statement as a :class:`Claim` record, registry :data:`CLAIMS`;
* :mod:`theory.run`: the :class:`Run` record claims are evaluated on;
* :mod:`theory.samples`: the per-sample quantities of the ℓ∞ claims from rows read again in chunks
  (:class:`SampleRows`, for runs judged on a stand-in with the same Gram matrices);
* :mod:`theory.checker`: :func:`check` (one generic checker) and the statistics;
* :mod:`theory.constants`: the constants and their sympy derivations;
* :mod:`theory.ordering` (O1) and :mod:`theory.lam` (L1): order and λ helpers, ``recommend_lambda``;
* :mod:`theory.report`: ``render_paper_checks`` (the Markdown of ``paper_checks.md``).

``theory`` never imports ``algorithms`` or ``verify``: the checker does not depend on the code it checks.
Provenance: the paper's text was not available; every claim was derived from the algorithm
definitions (see each claim's ``provenance``).
"""

from . import alphabet, constants, precision, quantities, samples, stats, verdicts
from .checker import (
    DEFAULT_ALPHA,
    HYPOTHESES,
    Verdict,
    check,
    check_all,
    check_hypotheses,
    poisson_binomial_sf,
    trials_for_power,
    trials_for_power_expectation,
)
from .claims import CLAIMS, Claim, Hypothesis, get_claim
from .constants import CONSTANTS
from .lam import LambdaScan, recommend_lambda
from .ordering import compare_orders
from .report import aggregate_evidence, render_paper_checks
from .quantities import B, M, R, c, c_column, c_explicit, c_tilde, dc_dlam, drift, factor, logdet, rho2, w_hat
from .run import Run
from .samples import SampleRows

__all__ = [
    "CLAIMS", "Claim", "Hypothesis", "get_claim", "CONSTANTS",
    "Run", "SampleRows", "Verdict", "check", "check_all", "check_hypotheses", "HYPOTHESES", "DEFAULT_ALPHA",
    "trials_for_power", "trials_for_power_expectation", "poisson_binomial_sf",
    "c", "M", "B", "R", "factor", "logdet", "drift", "dc_dlam", "w_hat", "rho2", "c_tilde", "c_explicit", "c_column",
    "recommend_lambda", "LambdaScan", "compare_orders", "render_paper_checks", "aggregate_evidence",
    "alphabet", "constants", "quantities", "precision", "samples", "stats", "verdicts",
]
