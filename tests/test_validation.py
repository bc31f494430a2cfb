"""Bad input gets a clear ValueError/TypeError naming the argument and the fix — never a silent
NaN or a traceback from deep inside NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import algorithms as A

rng = np.random.default_rng(0)
X = rng.standard_normal((40, 8))
W = rng.standard_normal((3, 8))
G = A.Grid.gptq(4)
S = A.Grid.symmetric(0.1, 100)


def _nan(a, where=(0, 0), value=np.nan):
    b = a.copy()
    b[where] = value
    return b


def _dead_first():
    Xt = X.copy()
    Xt[:, 0] = 0
    return Xt


def _torch_X():
    torch = pytest.importorskip("torch")
    return torch.from_numpy(X)


CASES = [
    # (id, thunk, exception, fragment that must appear in the message)
    ("W 1-D", lambda: A.optq(W[0], X, grid=G, lam=1.0), ValueError, "W must be 2-D"),
    ("X 3-D", lambda: A.optq(W, X[None], grid=G, lam=1.0), ValueError, "X must be 2-D"),
    ("W list", lambda: A.optq(W.tolist(), X, grid=G, lam=1.0), TypeError, "W must be a 2-D array"),
    ("X transposed", lambda: A.optq(W, X.T, grid=G, lam=1.0), ValueError, "transposed"),
    ("X_tilde shape", lambda: A.qronos(W, X, X[:10], grid=G, lam=1.0), ValueError, "X_tilde must have the same shape"),
    ("W int dtype", lambda: A.optq(W.astype(np.int64), X, grid=G, lam=1.0), TypeError, "float32 or float64"),
    ("X float16", lambda: A.optq(W, X.astype(np.float16), grid=G, lam=1.0), TypeError, "X has dtype float16"),
    ("W complex", lambda: A.optq(W.astype(complex), X, grid=G, lam=1.0), TypeError, "complex"),
    ("W NaN", lambda: A.optq(_nan(W), X, grid=G, lam=1.0), ValueError, "W contains 1 NaN or Inf"),
    ("W Inf", lambda: A.optq(_nan(W, value=np.inf), X, grid=G, lam=1.0), ValueError, "W contains"),
    ("X NaN", lambda: A.optq(W, _nan(X), grid=G, lam=1.0), ValueError, "X contains"),
    ("X_tilde NaN", lambda: A.qronos(W, X, _nan(X), grid=G, lam=1.0), ValueError, "X_tilde contains"),
    ("lam negative", lambda: A.optq(W, X, grid=G, lam=-1.0), ValueError, "lam must be ≥ 0"),
    ("lam NaN", lambda: A.optq(W, X, grid=G, lam=float("nan")), ValueError, "lam must be finite"),
    ("lam string", lambda: A.optq(W, X, grid=G, lam="0.1"), TypeError, "lam must be a real number"),
    ("lam and percdamp", lambda: A.optq(W, X, grid=G, lam=1.0, percdamp=0.01), ValueError, "not both"),
    ("no damping", lambda: A.optq(W, X, grid=G), ValueError, "damping is required"),
    ("percdamp negative", lambda: A.optq(W, X, grid=G, percdamp=-0.1), ValueError, "percdamp must be ≥ 0"),
    ("singular lam=0", lambda: A.optq(W, _dead_first(), grid=G, lam=0.0, dead="keep"), ValueError, "pass lam"),
    ("wide lam=0", lambda: A.optq(W, X[:4], grid=G, lam=0.0), ValueError, "lam"),
    ("empty W", lambda: A.optq(W[:0], X, grid=G, lam=1.0), ValueError, "W is empty"),
    ("empty X", lambda: A.optq(W, X[:0], grid=G, lam=1.0), ValueError, "X is empty"),
    ("mixed backends", lambda: A.optq(W, _torch_X(), grid=G, lam=1.0), TypeError, "one array library"),
    ("bits 0", lambda: A.Grid.gptq(0), ValueError, "bits must be ≥ 1"),
    ("bits 33", lambda: A.Grid.gptq(33), ValueError, "bits must be ≤ 16"),
    ("bits float", lambda: A.Grid.gptq(4.5), TypeError, "bits must be an integer"),
    ("group not dividing", lambda: A.optq(W, X, grid=A.Grid.gptq(4, group_size=3), lam=1.0), ValueError,
     "does not divide"),
    ("group size 0", lambda: A.Grid.gptq(4, group_size=0), ValueError, "group_size must be ≥ 1"),
    ("static without group", lambda: A.Grid.gptq(4, static_groups=True), ValueError, "needs a group_size"),
    ("delta zero", lambda: A.Grid.symmetric(0.0, 4), ValueError, "delta must be a finite positive"),
    ("delta wrong shape", lambda: A.Grid.symmetric(np.ones(3), 4), ValueError, "n x 1"),
    ("delta rows", lambda: A.optq(W, X, grid=A.Grid.symmetric(np.ones((5, 1)), 40), lam=1.0), ValueError,
     "delta has 5 rows but W has 3"),
    ("K zero", lambda: A.Grid.symmetric(0.1, 0), ValueError, "K must be ≥ 1"),
    ("grid too small", lambda: A.optq(W * 100, X, grid=A.Grid.symmetric(0.1, 4), lam=1.0), ValueError,
     "cannot represent the weights"),
    ("grid not a Grid", lambda: A.optq(W, X, grid=4, lam=1.0), TypeError, "grid must be an algorithms.Grid"),
    ("order string", lambda: A.optq(W, X, grid=G, lam=1.0, order="sorted"), ValueError, "order must be one of"),
    ("order length", lambda: A.optq(W, X, grid=G, lam=1.0, order=[0, 1, 2]), ValueError, "permutation of range(8)"),
    ("order duplicates", lambda: A.optq(W, X, grid=G, lam=1.0, order=[0, 0, 1, 2, 3, 4, 5, 6]), ValueError,
     "exactly once"),
    ("order random no rng", lambda: A.optq(W, X, grid=G, lam=1.0, order="random"), ValueError, "needs rng"),
    ("rounding", lambda: A.optq(W, X, grid=G, lam=1.0, rounding="floor"), ValueError, "rounding must be one of"),
    ("stochastic without rng", lambda: A.optq(W, X, grid=G, lam=1.0, rounding="stochastic"), ValueError,
     "needs rng"),
    ("rng wrong type", lambda: A.optq(W, X, grid=G, lam=1.0, rounding="stochastic", rng=42), TypeError,
     "numpy.random.Generator"),
    ("block size", lambda: A.optq(W, X, grid=G, lam=1.0, block_size=0), ValueError, "block_size must be ≥ 1"),
    ("method", lambda: A.optq(W, X, grid=G, lam=1.0, method="fast"), ValueError, "method must be one of"),
    ("variant", lambda: A.qronos(W, X, X, grid=G, lam=1.0, variant="gpfq"), ValueError, "variant must be one of"),
    ("original dead first", lambda: A.qronos(W, X, _dead_first(), grid=G, lam=1.0, variant="original"),
     ValueError, "undefined when the first processed feature"),
    ("qronos singular lam=0", lambda: A.qronos(W, X, _dead_first(), grid=G, lam=0.0), ValueError, "X_tilde"),
    ("rtn grid", lambda: A.rtn(W, grid="4bit"), TypeError, "grid must be an algorithms.Grid"),
]


@pytest.mark.parametrize("thunk,exc,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(thunk, exc, fragment):
    with pytest.raises(exc) as info:
        thunk()
    assert fragment in str(info.value), str(info.value)


def test_at_least_25_cases():
    assert len(CASES) >= 25


def test_singular_error_states_the_lambda_needed():
    Xs = X.copy()
    Xs[:, 3] = Xs[:, 2]  # duplicate column: XᵀX singular
    with pytest.raises(ValueError) as info:
        A.optq(W, Xs, grid=G, lam=0.0)
    msg = str(info.value)
    assert "lam=" in msg and "percdamp" in msg
    # and the suggested λ works
    lam = float(msg.split("lam=")[1].split()[0])
    assert A.optq(W, Xs, grid=G, lam=lam).lam == lam


def test_no_silent_nan_on_nearly_singular_input():
    """λ tiny against a singular Hessian: either a clear error or finite results, never NaN."""
    Xs = X.copy()
    Xs[:, 1] = Xs[:, 0]
    try:
        r = A.optq(W, Xs, grid=G, lam=1e-300)
    except ValueError as exc:
        assert "lam" in str(exc)
    else:
        assert np.all(np.isfinite(r.Q))


BACKEND_CASES = [
    # (id, call with backend arrays, exception, fragment)
    ("NaN in X", lambda xp: A.optq(xp.asarray(W), xp.asarray(_nan(X)), grid=G, lam=1.0), ValueError,
     "X contains 1 NaN or Inf"),
    ("Inf in W", lambda xp: A.optq(xp.asarray(_nan(W, value=np.inf)), xp.asarray(X), grid=G, lam=1.0), ValueError,
     "W contains 1 NaN or Inf"),
    ("X transposed", lambda xp: A.optq(xp.asarray(W), xp.asarray(X.T), grid=G, lam=1.0), ValueError, "transposed"),
    ("W 1-D", lambda xp: A.optq(xp.asarray(W[0]), xp.asarray(X), grid=G, lam=1.0), ValueError, "W must be 2-D"),
    ("negative lam", lambda xp: A.optq(xp.asarray(W), xp.asarray(X), grid=G, lam=-1.0), ValueError, "lam must be ≥ 0"),
    ("X_tilde shape", lambda xp: A.qronos(xp.asarray(W), xp.asarray(X), xp.asarray(X[:5]), grid=G, lam=1.0),
     ValueError, "X_tilde must have the same shape as X"),
]


@pytest.mark.parametrize("thunk,exc,fragment", [c[1:] for c in BACKEND_CASES], ids=[c[0] for c in BACKEND_CASES])
def test_bad_input_is_rejected_on_every_backend(xp, thunk, exc, fragment):
    """The same messages whatever array library the caller uses."""
    with pytest.raises(exc) as info:
        thunk(xp)
    assert fragment in str(info.value), str(info.value)
