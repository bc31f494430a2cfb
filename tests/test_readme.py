"""The README's set-up is two commands: install and run `ptq-bounds verify`, then run the tests;
`.ci/run` executes exactly that block."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- setup:begin -->\n```bash\n(.*?)```\n<!-- setup:end -->", text, re.S)
    assert block, "README.md must hold the set-up block between <!-- setup:begin --> and <!-- setup:end -->"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_two_setup_commands():
    cmds = setup_commands()
    assert len(cmds) == 2
    assert "pip install" in cmds[0] and cmds[0].rstrip().endswith("ptq-bounds verify")
    assert cmds[1] == "python -m pytest"


def test_ci_runs_the_readme_block():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "setup:begin" in ci and "README.md" in ci and "venv" in ci
    # the install command comes from the README; the test command is checked against it and run
    assert re.search(r"^python -m pytest$", ci, re.M)
    assert 'bash -euo pipefail -c "$install_cmd"' in ci


def python_blocks():
    """Every ```python block of README.md, in order."""
    return re.findall(r"^```python\n(.*?)^```", (ROOT / "README.md").read_text(), re.S | re.M)


def test_readme_python_examples_run_as_written():
    """The README's Python examples run as written, in order, in one namespace (later blocks use the
    names earlier ones define)."""
    blocks = python_blocks()
    assert len(blocks) >= 2
    ns: dict = {"__name__": "readme"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md python block {i + 1}", "exec"), ns)
        except Exception as exc:  # pragma: no cover - the message says which block failed
            raise AssertionError(f"README.md python block {i + 1} raised {type(exc).__name__}: {exc}") from exc
