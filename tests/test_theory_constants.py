"""Every constant of SPEC §5 re-derived with sympy, each its own test, and compared with the
expression the claims use (theory.constants), so no constant is retyped anywhere."""

from __future__ import annotations

import numpy as np
import sympy as sp

from theory import constants as K
from theory.claims import CLAIMS


def test_rtn_error_is_at_most_half_a_step():
    assert sp.simplify(K.derive_rtn_error() - K.HALF_STEP) == 0
    assert K.HALF_STEP == K.delta / 2


def test_stochastic_rounding_is_unbiased():
    mean, _, _ = K.derive_stochastic_moments()
    assert mean == 0


def test_stochastic_rounding_second_moment():
    _, second, mx = K.derive_stochastic_moments()
    assert sp.simplify(second - K.f * (1 - K.f) * K.delta**2) == 0
    assert sp.simplify(mx - K.CONSTANTS["hoeffding"].s2) == 0  # max_f f(1−f)δ² = δ²/4
    # attained at f = 1/2 only
    assert sp.solve(sp.Eq(second, K.delta**2 / 4), K.f) == [sp.Rational(1, 2)]


def test_chernoff_tail_from_the_gaussian_mgf():
    ts, tail = K.derive_chernoff()
    assert sp.simplify(ts - K.alpha / K.sigma**2) == 0
    assert sp.simplify(tail - K.tail_bound()) == 0


def test_high_probability_radius_inverts_the_union_bound():
    a = K.derive_hp_radius()
    assert sp.simplify(a - K.hp_radius()) == 0
    # plugging it back gives exactly η
    assert sp.simplify(K.m * K.tail_bound(a) - K.eta) == 0


def test_squared_gaussian_mgf_is_sqrt2():
    assert sp.simplify(K.derive_sq_mgf() - K.SQ_MGF) == 0


def test_gaussian_first_absolute_moment():
    assert sp.simplify(K.derive_gaussian_abs_moment() - K.sigma * sp.sqrt(2 / sp.pi)) == 0


def test_convex_order_constants_pi8_and_pi2():
    two_point, bounded = K.derive_convex_order_constants()
    assert sp.simplify(two_point - K.CONSTANTS["pi8"].s2) == 0
    assert sp.simplify(bounded - K.CONSTANTS["pi2"].s2) == 0


def test_hoeffding_proxy_and_its_ordering_against_pi8():
    psi0, dpsi0, d2gap, proxy = K.derive_hoeffding_proxy()
    assert psi0 == 0 and dpsi0 == 0 and d2gap == 0
    assert sp.simplify(proxy - K.CONSTANTS["hoeffding"].s2) == 0
    # 1/4 < π/8 < π/2: the Hoeffding proxy is the sharpest, the others conservative
    assert sp.pi / 8 > sp.Rational(1, 4)
    assert sp.pi / 2 > sp.pi / 8
    assert K.CONSTANTS["hoeffding"].sharp and not K.CONSTANTS["pi8"].sharp and not K.CONSTANTS["pi2"].sharp


def test_gptq_losses_scaling():
    lam_sol, gap1, gap2 = K.derive_gptq_scaling()
    assert sp.simplify(lam_sol - K.damp * K.m / 2) == 0
    assert gap1 == 0 and gap2 == 0


def test_amgm_for_the_ordering_facts():
    d2, d3 = K.derive_amgm()
    assert d2 == 0 and d3 == 0
    # and numerically for larger N, on c_t of an actual factorization
    from theory import ordering, quantities

    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 9))
    for order in ("natural", "decreasing", "increasing"):
        c = quantities.c(X, 0.3, quantities.resolve_order(order, 9, X))
        assert np.sum(c) >= ordering.amgm_floor(X, 0.3) * (1 - 1e-12)


def test_ridge_derivative_and_concavity_in_lambda():
    first, second = K.derive_ridge_derivative()
    assert first == 0
    b = sp.Symbol("b", real=True)
    d = sp.Symbol("d", positive=True)
    assert sp.simplify(second + 2 * b**2 / (d + K.lam) ** 3) == 0


def test_claims_use_the_constants_module():
    """The high-probability claims equal ``(s/δ)·√(2 log(2m/η))·√(max_t δ_t² c_t)`` with ``s²`` their
    named constant, and the expectation claim uses δ²/4."""
    from theory.claims import sym

    for key in ("hoeffding", "pi8", "pi2"):
        cl = CLAIMS[f"T2.hp.{key}"]
        assert cl.constant == key
        expect = sp.sqrt(K.CONSTANTS[key].s2 / K.delta**2) * sp.sqrt(2 * sp.log(2 * sym("m") / sym("eta"))) * sp.sqrt(sym("max_d2c"))
        assert sp.simplify(cl.bound - expect) == 0, key
    e = CLAIMS["T2.expectation"]
    assert sp.simplify(e.bound - K.CONSTANTS["hoeffding"].s2 / K.delta**2 * sym("sum_d2c")) == 0
    assert CLAIMS["T2.hp.pi8"].constant_name == "convex order πδ²/8"
    assert CLAIMS["T2.hp.pi2"].constant_name == "convex order πδ²/2 (conservative)"
    assert CLAIMS["T2.hp.hoeffding"].constant_name == "hoeffding δ²/4 (sharpest)"
