"""Import direction: figures → verify → {theory, algorithms}; theory and algorithms never import
each other (the bounds are not checked by the code that computes the runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "theory": {"algorithms", "verify", "figures"},
    "algorithms": {"theory", "verify", "figures"},
    "verify": {"figures"},
}


def imported_roots(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                yield arg.value.split(".")[0], node.lineno


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for root, line in imported_roots(path):
            if root in FORBIDDEN[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {root}")
    assert not bad, "\n".join(bad)
