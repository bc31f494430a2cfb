"""pytest plugin (entry point ``pytest11``): the fixture ``ptq_audit``.

::

    def test_my_gptq(ptq_audit):
        report = ptq_audit(my_gptq, families=("tall", "dead"))

``ptq_audit(quantizer, **options)`` runs :func:`verify.audit.audit` (options forwarded: ``kind``,
``orders``, ``grids``, ``precision``, ``families``, ``seed`` …; ``quantizer`` may also be a
``"module:function"`` string) and returns its report. The test fails, with the report's text, on
the outcomes for which ``ptq-bounds audit`` exits non-zero: a claim or hypothesis violated (exit
code 1), a quantizer that cannot be exercised (2), nothing exercised or insufficient evidence (3),
cases on which the quantizer failed (4). Counterexamples go to the test's ``tmp_path`` unless
``out_dir`` is given. ``ptq_audit.impl("brevitas-gptq", **options)`` audits a third-party
implementation through its adapter (:mod:`verify.adapters`); it skips the test when the library is
not installed.
"""

from __future__ import annotations

import pytest

_WHAT = {1: "a claim or hypothesis is violated", 2: "the quantizer could not be exercised",
         3: "nothing was exercised or the evidence is insufficient", 4: "the quantizer failed on some cases"}


class PtqAudit:
    """The callable the fixture returns."""

    def __init__(self, out_dir):
        self._out_dir = out_dir

    def _judge(self, rep):
        code = rep.exit_code()
        if code != 0:
            pytest.fail(f"ptq audit: {_WHAT.get(code, 'internal error')} (exit code {code})\n{rep.format()}",
                        pytrace=False)
        return rep

    def __call__(self, quantizer, **options):
        from verify.audit import audit

        options.setdefault("out_dir", self._out_dir)
        return self._judge(audit(quantizer, **options))

    def impl(self, name, **options):
        from verify.adapters import audit_adapter, get

        a = get(name)
        why = a.why_unavailable()
        if why:
            pytest.skip(f"{name}: {why}")
        options.setdefault("out_dir", self._out_dir)
        return self._judge(audit_adapter(a, **options))


@pytest.fixture
def ptq_audit(tmp_path):
    """Audit a quantizer against the claims; fails the test unless every checked claim holds."""
    return PtqAudit(tmp_path / "ptq-audit")
