"""The pytest plugin (entry point ``pytest11``): a fresh project's test suite uses the fixture
``ptq_audit`` without any conftest."""

from __future__ import annotations

pytest_plugins = ["pytester"]

_QUANTIZERS = '''
import numpy as np
import algorithms as A
from verify.audit import declare

OPTS = dict(families=("tall",), grids=("gptq",), shrink=False)

def good(W, X, *, grid, lam, rng):
    return A.optq(W, X, grid=grid, lam=lam).Q

def rtn(W, X, *, grid, lam, rng):
    return A.rtn(W, grid).Q  # declared OPTQ but no error feedback

def declines(W, X, *, grid, lam, rng):
    raise NotImplementedError("nothing supported")
'''


def test_plugin_in_a_fresh_project(pytester):
    pytester.makepyfile(quants=_QUANTIZERS)
    pytester.makepyfile(test_user='''
from quants import OPTS, good, rtn, declines

def test_good(ptq_audit):
    rep = ptq_audit(good, **OPTS)
    assert rep.exit_code() == 0 and rep.cases > 0

def test_rtn(ptq_audit):
    ptq_audit(rtn, **OPTS)

def test_declines(ptq_audit):
    ptq_audit(declines, **OPTS)
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "-q")
    res.assert_outcomes(passed=1, failed=2)
    text = res.stdout.str()
    assert "a claim or hypothesis is violated (exit code 1)" in text and "FLAGGED" in text
    assert "nothing was exercised" in text and "NOT EXERCISED" in text


def test_plugin_impl_skips_or_runs(pytester):
    pytester.makepyfile(test_impl='''
def test_brevitas(ptq_audit):
    ptq_audit.impl("brevitas-gptq", families=("tall",), grids=("gptq",), orders=("natural",), shrink=False)
''')
    res = pytester.runpytest("-p", "no:cacheprovider", "-q", "-rs")
    try:
        import brevitas  # noqa: F401
    except ImportError:
        res.assert_outcomes(skipped=1)
        assert "provable-ptq[brevitas]" in res.stdout.str()
    else:
        res.assert_outcomes(passed=1)
