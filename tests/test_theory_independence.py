"""theory never imports algorithms or verify at run time (the checker must not depend on the code it
checks); the static rule is the import contract (tests/test_import_direction.py)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

THEORY = pathlib.Path(__file__).resolve().parents[1] / "theory"


def test_importing_theory_loads_neither_package():
    code = ("import sys, theory, theory.ordering, theory.lam, theory.report; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('algorithms', 'verify')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=THEORY.parent)
