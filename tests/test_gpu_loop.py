"""The column loop's update forms agree on every backend (NumPy, torch, CuPy via ``xp``).

The blocked (lazy batch, left-looking) loop is the fast path on every backend; the unblocked
Cholesky form and the OBS inverse form are its references. Results agree up to floating point,
which for a rounding algorithm means: the same values until a rounding decision that is a tie to
within rounding error (``z/δ`` half way between two levels, or, stochastically, equal to the
uniform) goes the other way in one of the two runs; after that the row legitimately diverges.
GPTQ's on-the-fly groups make such ties common: a group's extreme weight, when it is the group's
first column, sits exactly at ``±(maxq+1)/2`` steps. :func:`assert_same_run` checks exactly this.
"""

from __future__ import annotations

import numpy as np
import pytest

from algorithms import Grid, optq, qronos
from algorithms._backend import to_numpy as _np

__all__ = ["assert_same_run", "make_layer", "GRIDS"]




def assert_same_run(ref, res, *, uniforms=None, max_diverged=0.35, ztol=None):
    """``res`` equals ``ref`` up to floating point, row by row (see the module docstring).

    For each row, the processing-order values are compared up to the first column where the
    quantized values differ; ``z`` must agree before it, and at it the reference's rounding must
    be a tie (nearest: ``z/δ`` within ``1e3·eps`` of a half-integer or of a clipping edge;
    stochastic: the fractional part within that of the uniform, when ``uniforms`` (``N × n``,
    processing order) are given; otherwise any stochastic decision may differ at FP level).
    At most ``max_diverged`` of the rows may diverge.
    """
    order = _np(ref.order).astype(np.int64)
    assert np.array_equal(order, _np(res.order).astype(np.int64)), "different processing orders"
    Q1, Q2 = (_np(r.Q).astype(np.float64)[:, order] for r in (ref, res))
    z1, z2 = (_np(r.z).astype(np.float64) for r in (ref, res))
    e1, e2 = (_np(r.errors).astype(np.float64) for r in (ref, res))
    c1, c2 = (_np(r.clipped).astype(bool) for r in (ref, res))
    s1 = _np(ref.alphabet.scale).astype(np.float64)[:, order]
    s2 = _np(res.alphabet.scale).astype(np.float64)[:, order]
    dt = _np(ref.Q).dtype
    eps = float(np.finfo(dt).eps)
    n, N = Q1.shape
    scale_W = max(float(np.max(np.abs(z1))), 1e-30)
    ztol = ztol if ztol is not None else 1e3 * eps * max(N, 16) ** 0.5 * scale_W
    tie = 1e3 * eps
    diverged = 0
    for i in range(n):
        bad = np.nonzero(np.abs(Q1[i] - Q2[i]) > 1e-3 * np.abs(s1[i]))[0]
        stop = int(bad[0]) if bad.size else N
        # before the first differing decision the runs agree to floating point
        assert np.allclose(z1[i, :stop], z2[i, :stop], rtol=0, atol=ztol), (
            f"row {i}: z differs before any rounding decision differs "
            f"(max |dz| = {np.max(np.abs(z1[i, :stop] - z2[i, :stop])):.3e}, tol {ztol:.3e})")
        # steps agree up to floating point, at the first differing decision too (on-the-fly group
        # fits see the same current weights up to floating point)
        assert np.allclose(s1[i, :stop + 1], s2[i, :stop + 1], rtol=1e2 * eps, atol=2 * ztol), f"row {i}: steps differ"
        assert np.allclose(e1[i, :stop], e2[i, :stop], rtol=0, atol=ztol + 1e2 * eps * np.max(np.abs(s1[i]))), (
            f"row {i}: errors differ")
        v = z1[i, :stop] / s1[i, :stop]
        edge = np.abs(np.abs(v - np.floor(v) - 0.5)) < tie * np.maximum(1, np.abs(v))
        mism = np.nonzero(c1[i, :stop] != c2[i, :stop])[0]
        assert np.all(edge[mism]), f"row {i}: clip flags differ at non-tie columns {mism[~edge[mism]][:5]}"
        if stop == N:
            continue
        diverged += 1
        t = stop
        v = z1[i, t] / s1[i, t]
        f = v - np.floor(v)
        if ref.rounding == "nearest":
            ok = abs(f - 0.5) < tie * max(1.0, abs(v))
        elif uniforms is not None:
            ok = abs(f - float(uniforms[t, i])) < tie * max(1.0, abs(v))
        else:
            ok = True
        assert ok, (f"row {i}: rounding differs at processing position {t} without a tie "
                    f"(z/δ = {v!r}, q = {Q1[i, t]!r} vs {Q2[i, t]!r})")
    assert diverged <= max(1, max_diverged * n), f"{diverged} of {n} rows diverged at ties: too many"


def make_layer(n, N, m, dtype, seed, *, dead=True):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, N)).astype(dtype)
    X = (rng.standard_normal((m, N)) * rng.uniform(0.2, 3.0, N)).astype(dtype)
    if dead and N > 6:
        X[:, 5] = 0
    Xt = (X + 0.1 * rng.standard_normal((m, N))).astype(dtype)
    return W, X, Xt


def GRIDS(n, N):
    """Name → grid (every family and GPTQ option the loop supports)."""
    g = {
        "sym": Grid.symmetric(0.25, 20),
        "sym-row": Grid.symmetric(np.linspace(0.2, 0.4, n).reshape(-1, 1), 25),
        "dZ": Grid.integers(0.1),
        "gptq4": Grid.gptq(4),
        "gptq3-asym": Grid.gptq(3, sym=False),
        "gptq4-tensor": Grid.gptq(4, perchannel=False),
    }
    for gs in (16, 32, 48):
        if N % gs == 0:
            g[f"g{gs}"] = Grid.gptq(4, group_size=gs)
            g[f"g{gs}-asym"] = Grid.gptq(3, sym=False, group_size=gs)
            g[f"g{gs}-static"] = Grid.gptq(4, group_size=gs, static_groups=True)
    return g


def _run(alg, W, X, Xt, grid, **kw):
    if alg == "optq":
        return optq(W, X, grid=grid, **kw)
    return qronos(W, X, Xt, grid=grid, variant=alg.split("-")[1], **kw)


_COMBOS = [("natural", "nearest"), ("decreasing", "stochastic"), ("random", "nearest")]
_ALL_COMBOS = [(o, r) for o in ("natural", "decreasing", "increasing", "random") for r in ("nearest", "stochastic")]


def _check_forms(xp, dtype, alg, combos, n, N, m, methods):
    W, X, Xt = make_layer(n, N, m, dtype, seed=11)
    Wb, Xb, Xtb = xp.asarray(W), xp.asarray(X), xp.asarray(Xt)
    for gname, grid in GRIDS(n, N).items():
        if gname == "sym-row":
            grid = Grid.symmetric(xp.asarray(np.linspace(0.2, 0.4, n).reshape(-1, 1).astype(dtype)), 25)
        for order, rounding in combos:
            kw = dict(lam=0.5, order=order, rounding=rounding)
            ref = _run(alg, Wb, Xb, Xtb, grid, method="cholesky", rng=np.random.default_rng(4), **kw)
            R = np.random.default_rng(4)
            if order == "random":
                R.permutation(N)
            unif = R.random((N, n)) if rounding == "stochastic" else None
            for method, bs in methods:
                res = _run(alg, Wb, Xb, Xtb, grid, method=method, block_size=bs,
                           rng=np.random.default_rng(4), **kw)
                try:
                    assert_same_run(ref, res, uniforms=unif)
                except AssertionError as exc:
                    raise AssertionError(f"{gname} {order} {rounding} {method} bs={bs}: {exc}") from exc


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("alg", ["optq", "qronos-original", "qronos-projection"])
def test_blocked_equals_unblocked(xp, dtype, alg):
    """Blocked (block/sub-block shapes that do and do not divide N) == unblocked Cholesky form
    == OBS form, for every grid family."""
    if xp.name == "torch" and dtype == "float32":
        pytest.skip("torch runs float64 only here (its per-operation overhead makes this test slow)")
    _check_forms(xp, dtype, alg, _COMBOS, 33, 64, 90, [("blocked", 128), ("blocked", 24), ("inverse", 128)])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("alg", ["optq", "qronos-original", "qronos-projection"])
def test_blocked_equals_unblocked_every_option(xp, dtype, alg):
    """The full cross product (orders × roundings × block sizes × all four forms), N = 96."""
    if xp.name == "torch":
        pytest.skip("the torch backend runs the smaller product above; this one is NumPy (and CuPy)")
    _check_forms(xp, dtype, alg, _ALL_COMBOS, 37, 96, 120,
                 [("blocked", 128), ("blocked", 40), ("blocked", 7), ("inverse", 128), ("ridge", 128)])


def test_result_layout_and_types(xp):
    """Fields keep the backend and dtype of W and the documented shapes; Q is on the grid."""
    W, X, _ = make_layer(9, 64, 80, "float32", seed=2)
    r = optq(xp.asarray(W), xp.asarray(X), grid=Grid.gptq(4, group_size=16), lam=0.1, order="decreasing")
    for f in ("Q", "errors", "z", "clipped"):
        a = getattr(r, f)
        assert type(a).__module__.split(".")[0] == type(xp.asarray(W)).__module__.split(".")[0]
        assert tuple(a.shape) == (9, 64)
    assert str(r.Q.dtype).endswith("float32")
    assert bool(np.all(_np(r.alphabet.contains(r.Q))))
    # errors = z - q in processing order
    order = _np(r.order)
    assert np.allclose(_np(r.errors), _np(r.z) - _np(r.Q)[:, order], atol=1e-6)


def test_qronos_original_first_column(xp):
    """The first processed coordinate is the rounded least-squares value y1; its error is y1 - q1
    while the error propagated is the current weight minus q1 (same on every backend)."""
    W, X, Xt = make_layer(6, 32, 50, "float64", seed=5, dead=False)
    r = qronos(xp.asarray(W), xp.asarray(X), xp.asarray(Xt), grid=Grid.gptq(4), lam=0.2, variant="original")
    f = int(_np(r.order)[0])
    assert np.allclose(_np(r.z)[:, 0], _np(r.y1))
    assert np.allclose(_np(r.errors)[:, 0], _np(r.y1) - _np(r.Q)[:, f])


def test_backend_layout_and_factor_helpers(xp):
    from algorithms import _backend as B

    rng = np.random.default_rng(0)
    A = rng.standard_normal((37, 53))
    T = B.transpose_copy(xp.xp, xp.asarray(A))
    assert np.array_equal(_np(T), A.T) and tuple(T.shape) == (53, 37)
    assert B.is_identity(xp.asarray(np.arange(5))) and not B.is_identity(xp.asarray(np.array([1, 0, 2])))
    X = rng.standard_normal((60, 20))
    H = X.T @ X + 0.1 * np.eye(20)
    L = B.cholesky_lower(xp.xp, xp.asarray(H))
    assert np.allclose(_np(L), np.linalg.cholesky(H))
    Li = B.inv_lower_triangular(xp.xp, L)
    assert np.allclose(_np(Li) @ np.linalg.cholesky(H), np.eye(20), atol=1e-10)
    with pytest.raises(Exception):
        B.cholesky_lower(xp.xp, xp.asarray(-np.eye(3)))
