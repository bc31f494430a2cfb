"""The import rules are a declarative contract (``.importlinter``, checked with import-linter):
figures → verify → {theory, algorithms}; theory and algorithms never import each other; no import
cycles between the modules of a package (module-level and function-level imports alike)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _lint(config: Path, cwd: Path):
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    return subprocess.run([exe, "--config", str(config), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": str(Path(sys.executable).parent)})


def test_the_package_keeps_its_contracts():
    r = _lint(ROOT / ".importlinter", ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "2 kept, 0 broken" in r.stdout


def test_the_contracts_catch_a_cycle_and_a_wrong_direction(tmp_path):
    """The same contracts on a copy of the layout with one function-level import that closes a
    cycle inside ``verify`` and one import of ``algorithms`` from ``theory``: both broken."""
    for pkg, files in {
        "algorithms": {"__init__.py": "", "optq.py": ""},
        "theory": {"__init__.py": "", "checker.py": "def f():\n    import algorithms.optq\n"},
        "verify": {"__init__.py": "", "campaign.py": "def load():\n    from .llm import campaign\n",
                   "llm/__init__.py": "", "llm/campaign.py": "from .. import campaign\n"},
        "figures": {"__init__.py": ""},
    }.items():
        for name, text in files.items():
            p = tmp_path / pkg / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(textwrap.dedent(text))
    r = _lint(ROOT / ".importlinter", tmp_path)
    assert r.returncode == 1, r.stdout
    assert "0 kept, 2 broken" in r.stdout and "theory.checker -> algorithms.optq" in r.stdout, r.stdout[-3000:]
