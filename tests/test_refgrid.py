"""The reference side's own min/max fit (verify.refgrid) and the package's (algorithms.grids) are
two implementations of GPTQ's grid fit: they agree, including the edge cases."""

from __future__ import annotations

import numpy as np
import pytest

import algorithms as A
from algorithms.grids import fit_minmax
from verify.refgrid import minmax_fit


@pytest.mark.parametrize("grid", [A.Grid.gptq(4, sym=True), A.Grid.gptq(3, sym=False), A.Grid.gptq(2, sym=False),
                                  A.Grid.gptq(4, sym=False, perchannel=False)], ids=str)
def test_the_two_fits_agree(grid):
    r = np.random.default_rng(0)
    B = r.standard_normal((9, 7))
    B[0] = 0.0  # both ends 0: the ±1 convention
    B[1] = np.abs(B[1])  # all positive: xmin clamps to 0
    B[2] = -np.abs(B[2])  # all negative: xmax clamps to 0
    s, z = minmax_fit(B, grid)
    s_ref, z_ref = (np.asarray(a) for a in fit_minmax(np, B, grid))
    assert np.array_equal(s, s_ref) and np.array_equal(z, z_ref)


def test_the_reference_loop_does_not_import_algorithms_grids():
    import ast
    import inspect

    import verify.mutants as M
    import verify.refgrid as R

    for mod in (M, R):
        names = [n for node in ast.walk(ast.parse(inspect.getsource(mod)))
                 if isinstance(node, ast.ImportFrom) and node.module for n in [node.module]]
        assert "algorithms.grids" not in names, mod.__name__
