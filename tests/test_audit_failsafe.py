"""The audit fails safe: a quantizer that checks nothing never passes, failures are reported with
their cases, conventions are reported as conventions, and the working precision is respected.

Exit codes (``theory.verdicts``): 2 the quantizer cannot be exercised (one line naming the problem
and the fix), 3 nothing exercised, 4 the quantizer failed on some cases, 1 violated, 0 consistent.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import algorithms as A
from verify import audit as AU
from verify.audit import Decline, audit, declare, implied_run
from verify.cli import main

FAST = ("tall",)


def _optq(W, X, *, grid, lam, rng, **kw):
    return A.optq(W, X, grid=grid, lam=lam, rng=rng, **kw).Q


@pytest.fixture
def quant_module(tmp_path, monkeypatch):
    """A user's module of quantizers, loadable as ``path.py:NAME``."""
    monkeypatch.chdir(tmp_path)
    src = textwrap.dedent('''
        import numpy as np
        import algorithms

        def always_value_error(W, X, *, grid, lam, rng):
            raise ValueError("cannot quantize this layer")

        def wrong_signature(W, X, bits):
            return W

        def type_error_inside(*args, **kwargs):
            raise TypeError("f() got an unexpected keyword argument 'grid'")

        def declines_everything(W, X, *, grid, lam, rng):
            raise NotImplementedError("only 8-bit grids are supported")

        def symmetric_crashes(W, X, *, grid, lam, rng):
            if grid.kind == "symmetric":
                raise RuntimeError("no symmetric grids here")
            return algorithms.optq(W, X, grid=grid, lam=lam, rng=rng).Q

        def symmetric_crashes_rest_rtn(W, X, *, grid, lam, rng):
            if grid.kind == "symmetric":
                raise RuntimeError("no symmetric grids here")
            return algorithms.rtn(W, grid).Q

        def good(W, X, *, grid, lam, rng):
            return algorithms.optq(W, X, grid=grid, lam=lam, rng=rng).Q

        def act_order(W, X, *, grid, lam, rng, order="natural"):
            return algorithms.optq(W, X, grid=grid, lam=lam, rng=rng, order=order).Q
    ''')
    (tmp_path / "userq.py").write_text(src)
    return tmp_path / "userq.py"


def _cli(capsys, *args):
    code = main(["audit", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ------------------------------------------------------------------------------------------------
# (a) (b) every case failed: exit 2, one line
# ------------------------------------------------------------------------------------------------
def test_quantizer_raising_everywhere_is_bad_input_in_one_line(quant_module, capsys):
    code, out, err = _cli(capsys, f"{quant_module}:always_value_error", "--families", "tall")
    assert code == 2
    assert out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "raised ValueError on every case" in lines[0] and "cannot quantize this layer" in lines[0]
    assert "NotImplementedError" in lines[0]  # the fix: decline unsupported cases


def test_wrong_signature_is_bad_input_naming_the_signature(quant_module, capsys):
    code, out, err = _cli(capsys, f"{quant_module}:wrong_signature", "--families", "tall")
    assert code == 2 and out == ""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "it must accept f(W, X, *, grid, lam, rng)" in lines[0] and "(W, X, bits)" in lines[0]


def test_type_error_at_every_call_is_bad_input(quant_module, capsys):
    code, out, err = _cli(capsys, f"{quant_module}:type_error_inside", "--families", "tall")
    assert code == 2 and out == ""
    line = err.strip()
    assert "\n" not in line
    assert "raised TypeError on every case" in line and "unexpected keyword argument 'grid'" in line
    assert "it must accept f(W, X, *, grid, lam, rng)" in line


@pytest.mark.parametrize("ret,fragment", [
    (lambda W: None, "returned None"),
    (lambda W: "Q", "returned a str"),
    (lambda W: W.T, "returned shape (24, 12), expected (12, 24)"),
    (lambda W: np.full_like(W, np.nan), "NaN or Inf"),
])
def test_bad_output_on_every_case_is_bad_input(ret, fragment):
    def f(W, X, *, grid, lam, rng):
        return ret(W)

    rep = audit(f, families=FAST, shrink=False)
    assert rep.cases == 0 and rep.exit_code() == 2 and rep.status == "error"
    assert fragment in rep.problem and "\n" not in rep.problem
    assert "n × N array" in rep.problem
    assert len(rep.errors) == rep.planned and all(e["category"] == "output" for e in rep.errors)


# ------------------------------------------------------------------------------------------------
# (c) declined everywhere: not exercised, exit 3; declining some cases is fine
# ------------------------------------------------------------------------------------------------
def test_declining_every_case_is_not_exercised(quant_module, capsys):
    code, out, err = _cli(capsys, f"{quant_module}:declines_everything", "--families", "tall")
    assert code == 3, out + err
    assert "NOT EXERCISED" in out and "no claim or hypothesis violated" not in out
    assert "only 8-bit grids are supported" in out
    rep = audit(AU.load_quantizer(f"{quant_module}:declines_everything"), families=FAST, shrink=False)
    assert rep.status == "not exercised" and rep.cases == 0 and rep.exit_code() == 3
    assert len(rep.declined) == rep.planned and rep.declined[0]["reason"] == "only 8-bit grids are supported"
    assert not rep.errors


def test_declining_some_cases_counts_them_with_their_reason():
    def f(W, X, *, grid, lam, rng):
        if grid.kind == "gptq" and grid.static_groups:
            raise Decline("static groups are not implemented")
        return A.optq(W, X, grid=grid, lam=lam, rng=rng).Q

    rep = audit(f, families=FAST, shrink=False)
    assert rep.exit_code() == 0 and rep.status == "consistent"
    assert len(rep.declined) == 2 and rep.cases == rep.planned - 2
    assert all("gptq-4b-g8-static" in d["case"] and d["reason"] == "static groups are not implemented"
               for d in rep.declined)
    assert "declined by the quantizer: 2 of 8 cases" in rep.format()


# ------------------------------------------------------------------------------------------------
# (d) raising on some cases: reported with the case labels; exit 4 (1 when something is violated)
# ------------------------------------------------------------------------------------------------
def test_errors_on_some_cases_are_reported_with_their_cases(quant_module, capsys):
    code, out, err = _cli(capsys, f"{quant_module}:symmetric_crashes", "--families", "tall")
    assert code == 4, out + err
    assert "ERRORS: the quantizer raised (or returned a bad Q) on 2 of 8 cases" in out
    assert "tall, symmetric, λ=0.01·mean‖X_t‖²: RuntimeError: no symmetric grids here" in out
    assert "no claim or hypothesis violated" in out and "FLAGGED" not in out
    code, out, err = _cli(capsys, f"{quant_module}:symmetric_crashes_rest_rtn", "--families", "tall", "--no-shrink")
    assert code == 1, out + err
    assert "FLAGGED" in out and "RuntimeError: no symmetric grids here" in out


def test_errors_and_declines_are_in_the_json(quant_module, capsys, tmp_path):
    code, out, err = _cli(capsys, f"{quant_module}:symmetric_crashes", "--families", "tall", "--json", tmp_path / "r.json")
    d = json.loads((tmp_path / "r.json").read_text())
    assert code == d["exit_code"] == 4 and d["status"] == "error"
    for key in ("quantizer", "kind", "rounding", "order", "cases", "flagged", "claims", "hypotheses",
                "counterexamples", "declined", "errors", "precision", "conventions", "seconds"):
        assert key in d
    assert [e["case"] for e in d["errors"]] == ["tall, symmetric, λ=0.01·mean‖X_t‖²", "tall, symmetric, λ=1·mean‖X_t‖²"]
    assert d["errors"][0]["type"] == "RuntimeError"


# ------------------------------------------------------------------------------------------------
# (e) --trials must be ≥ 1
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trials", ["0", "-5", "many"])
def test_trials_below_one_is_bad_input(quant_module, capsys, trials):
    with pytest.raises(SystemExit) as ex:
        main(["audit", f"{quant_module}:good", "--rounding", "stochastic", "--trials", trials])
    assert ex.value.code == 2
    assert "--trials" in capsys.readouterr().err


def test_trials_below_one_is_rejected_by_the_api():
    with pytest.raises(ValueError, match="trials must be an integer ≥ 1"):
        audit(_optq, rounding="stochastic", trials=0, families=FAST)


def test_what_was_not_checked_is_said_with_its_reason():
    rep = audit(_optq, families=FAST, shrink=False)
    why = dict(rep.not_checked())
    assert why["hyp.unbiased"] == "deterministic (nearest) rounding declared"
    assert "T2.expectation" in why and "stochastic" in why["T2.expectation"]
    assert "not checked: unbiasedness: deterministic (nearest) rounding declared" in rep.format()


# ------------------------------------------------------------------------------------------------
# (f) dead features rounded instead of zeroed: a convention difference, not a violation
# ------------------------------------------------------------------------------------------------
def _optq_keep(W, X, *, grid, lam, rng):
    return A.optq(W, X, grid=grid, lam=lam, rng=rng, dead="keep").Q


def _optq_then_round_dead(W, X, *, grid, lam, rng):
    """GPTQ's loop, then the dead columns set to the rounded weights (no error feedback is lost:
    a dead feature is decoupled from the others)."""
    r = A.optq(W, X, grid=grid, lam=lam, rng=rng)
    Q = np.array(r.Q)
    dead = np.sum(X * X, axis=0) == 0
    a = r.alphabet
    k = np.clip(np.round(W / a.scale + a.zero), a.qmin, a.qmax)
    Q[:, dead] = (a.scale * (k - a.zero))[:, dead]
    return Q


def test_rounding_dead_features_is_a_convention_not_a_violation():
    rep = audit(_optq_keep, families=("dead",), shrink=False)
    assert not rep.flagged, rep.format()
    assert rep.exit_code() == 0
    assert rep.claims["T1.sum_c"]["status"] == "consistent"
    (conv,) = rep.conventions
    assert conv["convention"] == "dead features" and conv["expected"].startswith("GPTQ zeroes")
    assert conv["found"].startswith("rounds them (") and "dead columns nonzero" in conv["found"]
    assert len(conv["cases"]) == rep.cases == rep.planned
    text = rep.format()
    assert "convention: dead features" in text and "FLAGGED" not in text
    # the same, built by hand from GPTQ's output (grids without groups: the fits do not see dead columns)
    rep = audit(_optq_then_round_dead, families=("dead",), grids=("symmetric", "gptq"), shrink=False)
    assert not rep.flagged and rep.conventions, rep.format()
    # GPTQ's own convention is no convention difference
    rep = audit(_optq, families=("dead",), shrink=False)
    assert not rep.flagged and rep.conventions == [], rep.format()


def test_a_quantizer_that_rounds_dead_features_wrongly_is_still_flagged():
    def f(W, X, *, grid, lam, rng):
        Q = _optq_then_round_dead(W, X, grid=grid, lam=lam, rng=rng)
        dead = np.sum(X * X, axis=0) == 0
        Q[:, dead] += 3 * np.max(np.abs(Q))  # far from the rounded weights
        return Q

    rep = audit(f, families=("dead",), grids=("symmetric",), shrink=False)
    assert rep.flagged and rep.conventions


# ------------------------------------------------------------------------------------------------
# (g) static groups with dead features: fitted from the weights the loop starts from
# ------------------------------------------------------------------------------------------------
def _dead_layer(seed=0, N=24):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((64, N))
    X[:, [1, 5, 9, 17]] = 0.0
    W = rng.standard_normal((6, N))
    W[:, 5] = 4.0  # a dead feature that would dominate its group's scale if it were not zeroed
    return W, X


def test_implied_static_group_scales_are_optq_s_on_dead_features():
    W, X = _dead_layer()
    g = A.Grid.gptq(4, group_size=8, static_groups=True)
    for order in ("natural", "decreasing"):
        r = A.optq(W, X, grid=g, lam=0.5, order=order)
        run = implied_run("optq", W, r.Q, X, grid=g, lam=0.5, order=order)
        np.testing.assert_allclose(run.scale, np.asarray(r.alphabet.scale), rtol=1e-12)
        np.testing.assert_allclose(run.errors, np.asarray(r.errors), atol=1e-10)


def test_static_group_grid_on_dead_family_passes_for_optq():
    rep = audit(_optq, families=("dead",), grids=("gptq-static",), shrink=False)
    assert rep.cases == 2 and not rep.flagged, rep.format()
    assert rep.hypotheses["hyp.on_grid"]["status"] == "consistent"
    assert rep.hypotheses["hyp.nearest"]["status"] == "consistent"


def test_default_plan_has_static_groups_and_act_order_only_when_declared():
    names = {AU._grid_name(c.grid) for c in AU.audit_cases("optq", "nearest")}
    assert names == {"symmetric", "gptq", "gptq-group", "gptq-static"}
    assert {c.order for c in AU.audit_cases("optq", "nearest")} == {"natural"}
    both = AU.audit_cases("optq", "nearest", orders=("natural", "decreasing"))
    assert {c.order for c in both} == {"natural", "decreasing"} and len(both) == 2 * len(AU.audit_cases("optq", "nearest"))


# ------------------------------------------------------------------------------------------------
# (h) act_order declared
# ------------------------------------------------------------------------------------------------
def test_declared_orders_are_passed_and_audited(quant_module, capsys):
    code, out, err = _cli(capsys, f"{quant_module}:act_order", "--orders", "natural,decreasing", "--families", "dead")
    assert code == 0, out + err
    assert "16 of 16 cases ran" in out and "orders natural, decreasing" in out

    seen = []

    @declare(orders=("decreasing",), grids=("gptq", "gptq-static"))
    def f(W, X, *, grid, lam, rng, order):
        seen.append(order)
        return A.optq(W, X, grid=grid, lam=lam, rng=rng, order=order).Q

    rep = audit(f, families=("dead", "tall"), shrink=False)
    assert not rep.flagged and rep.exit_code() == 0, rep.format()
    assert set(seen) == {"decreasing"} and rep.cases == 8 and rep.grids == ("gptq", "gptq-static")


def test_undeclared_order_keyword_is_a_signature_problem():
    rep = audit(_optq_keep, orders=("natural", "decreasing"), families=FAST, shrink=False)
    assert rep.exit_code() == 2 and "order" in rep.problem and rep.cases == 0


def test_act_order_declared_as_the_one_order():
    def f(W, X, *, grid, lam, rng):
        return A.optq(W, X, grid=grid, lam=lam, rng=rng, order="decreasing").Q

    rep = audit(f, order="decreasing", families=("dead",), shrink=False)
    assert not rep.flagged and rep.exit_code() == 0, rep.format()
    rep = audit(f, order="natural", families=("tall",), shrink=False, stop_at_first=True)
    assert rep.flagged  # the order it declares is not the one it uses


# ------------------------------------------------------------------------------------------------
# (i) working precision
# ------------------------------------------------------------------------------------------------
def _optq32(W, X, *, grid, lam, rng):
    return A.optq(np.asarray(W, np.float32), np.asarray(X, np.float32), grid=grid, lam=lam, rng=rng).Q


def test_float32_quantizer_is_judged_in_float32_inferred():
    rep = audit(_optq32, families=("tall", "dead"), shrink=False)
    assert rep.precision == "float32" and rep.precision_source == "inferred from the returned Q's dtype"
    assert not rep.flagged, rep.format()
    assert "precision: float32 (inferred from the returned Q's dtype)" in rep.format()


def test_declared_precision_overrides_the_returned_dtype():
    def f(W, X, *, grid, lam, rng):  # computes in float32, returns float64
        return np.asarray(_optq32(W, X, grid=grid, lam=lam, rng=rng), dtype=np.float64)

    rep = audit(f, families=FAST, precision="float32", shrink=False)
    assert rep.precision == "float32" and rep.precision_source == "declared"
    assert not rep.flagged, rep.format()
    rep = audit(_optq, families=FAST, shrink=False)
    assert rep.precision == "float64"


def test_float32_output_of_a_torch_quantizer_is_inferred():
    torch = pytest.importorskip("torch")

    def f(W, X, *, grid, lam, rng):
        return torch.from_numpy(np.asarray(_optq32(W, X, grid=grid, lam=lam, rng=rng)))

    rep = audit(f, families=FAST, grids=("gptq",), shrink=False)
    assert rep.precision == "float32" and not rep.flagged, rep.format()


def test_float32_rounding_at_half_steps_is_judged_in_float32():
    """Weights a hair below a half step: float32 rounds them up (|e|/δ = 0.5000015 seen in float64).
    Judged in the working precision float32 that is within its arithmetic; the precision travels
    with the run."""
    import theory

    rng = np.random.default_rng(0)
    X = 3.0 * np.eye(8)  # orthogonal features: z = w, nothing propagates
    W = (rng.integers(20, 39, (6, 8)) + 0.5) * 0.1 * (1 - 3e-9)
    W32, d32 = W.astype(np.float32), np.float32(0.1)
    Q32 = np.floor(W32 / d32 + np.float32(0.5)) * d32
    assert np.max(np.abs(W - Q32.astype(np.float64))) / 0.1 > 0.5
    g = A.Grid.symmetric(0.1, 40)
    run = implied_run("optq", W, Q32, X, grid=g, lam=0.1, precision="float32", dtype="float32")
    assert getattr(run, "precision", run.dtype) == "float32"
    v = theory.check_all(run)
    assert not any(x.violated for x in v.values()), {k: x for k, x in v.items() if x.violated}


def test_bad_declarations_are_value_errors():
    with pytest.raises(ValueError, match="grids"):
        declare(grids=("gptq", "int8"))
    with pytest.raises(ValueError, match="either order"):
        audit(_optq, order="natural", orders=("natural",), families=FAST)
    with pytest.raises(ValueError, match="precision"):
        audit(_optq, precision="float8", families=FAST)


# ------------------------------------------------------------------------------------------------
# --help
# ------------------------------------------------------------------------------------------------
def test_help_states_the_contract(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["audit", "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for fragment in ("f(W, X, *, grid, lam, rng)", "NotImplementedError", "gptq-static", "Dead features",
                     "--precision", "--orders", "--grids"):
        assert fragment in out, fragment
