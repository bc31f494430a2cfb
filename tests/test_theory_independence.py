"""theory never imports algorithms or verify (the checker must not depend on the code it checks)."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

THEORY = pathlib.Path(__file__).resolve().parents[1] / "theory"


def test_no_import_of_algorithms_or_verify_in_the_source():
    for path in sorted(THEORY.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                    "import_module", "__import__"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("algorithms", "verify", "figures"), (path.name, name)


def test_importing_theory_loads_neither_package():
    code = ("import sys, theory, theory.ordering, theory.lam, theory.report; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('algorithms', 'verify')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=THEORY.parent)
