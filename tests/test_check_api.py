"""verify.check: the library behind check-layer (the command only parses and prints)."""

from __future__ import annotations

import numpy as np
import pytest

import algorithms as A
from verify.check import check_given, check_layer
from verify.packed import read_q


def _layer(seed=0, n=6, N=16, m=60):
    r = np.random.default_rng(seed)
    return r.standard_normal((n, N)), r.standard_normal((m, N))


def test_check_layer_runs_and_reports():
    W, X = _layer()
    rep = check_layer(W, X, grid=A.Grid.gptq(4), percdamp=0.01)
    assert [r.label for r in rep.runs] == ["optq"] and rep.exit_code == 0 and rep.status == "consistent"
    d = rep.to_dict()
    assert d["shape"] == {"n": 6, "N": 16, "m": 60} and d["runs"][0]["error_fro"] > 0
    assert "no claim violated" in rep.format()
    Xt = X + 0.1 * np.random.default_rng(1).standard_normal(X.shape)
    rep2 = check_layer(W, X, Xt, grid=A.Grid.gptq(4), lam=1.0)
    assert [r.label for r in rep2.runs] == ["optq", "optq on X_tilde", "qronos-projection", "qronos-original"]
    assert rep2.exit_code == 0


def test_check_layer_bad_input():
    W, X = _layer()
    with pytest.raises(ValueError, match="looks transposed"):
        check_layer(W, X.T, grid=A.Grid.gptq(4))
    with pytest.raises(ValueError, match="trials"):
        check_layer(W, X, grid=A.Grid.gptq(4), trials=0)


def test_check_given_flags_a_moved_level(tmp_path):
    W, X = _layer(2)
    lam = 0.5
    Q = np.asarray(A.optq(W, X, grid=A.Grid.gptq(4), lam=lam).Q)
    np.save(tmp_path / "q.npy", Q)
    ok = check_given(read_q(str(tmp_path / "q.npy"), W=W, grid=A.Grid.gptq(4)), W, X, lam=lam)
    assert ok.exit_code == 0 and ok.runs[0].label == "given Q as optq" and ok.q["kind"] == "optq"
    bad = Q.copy()
    bad[1, 3] += np.max(np.abs(W[1])) * 2 / 15  # one level up on the row's 4-bit grid
    np.save(tmp_path / "bad.npy", bad)
    rep = check_given(read_q(str(tmp_path / "bad.npy"), W=W, grid=A.Grid.gptq(4)), W, X, lam=lam)
    assert rep.exit_code == 1 and "VIOLATED" in rep.format()
    with pytest.raises(ValueError, match="needs --x-tilde"):
        check_given(read_q(str(tmp_path / "q.npy"), W=W, grid=A.Grid.gptq(4)), W, X, kind="qronos-original")
