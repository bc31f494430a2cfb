"""The fused GPU kernel (algorithms/fused_gpu.py) equals the generic column loop.

Three layers, so that most of it is checked on a machine without a GPU:

1. ``nvcc`` compiles the kernel source for sm_90 (skipped when nvcc is absent).
2. The same CUDA C source, compiled for the CPU with ``g++`` (a few macros stand in for
   ``threadIdx``, the IEEE intrinsics and shared memory; threads run one after another, which is
   exact because rows never communicate), is driven by the very host code of the fused path
   (``fused_gpu.drive``) on NumPy arrays and compared with the generic loop: every grid family,
   order, rounding mode, Qronos' first-column override, float32/float64, shapes that do not
   divide the kernel's tiles. With ``rng=SplitMix64(seed)`` the kernel computes the counter stream
   itself; it is checked bit for bit against the generic loop fed the same stream
   (:class:`algorithms.SplitMix64` computed by NumPy), and statistically (unbiased, two-point).
3. On a GPU with CuPy (the device session): the real kernel against the generic loop on CuPy.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import shutil
import subprocess

import numpy as np
import pytest

from algorithms import Grid, SplitMix64, fused_gpu, optq, qronos, streams

from conftest import cupy_ready
from test_gpu_loop import GRIDS, assert_same_run, make_layer

loop_mod = importlib.import_module("algorithms.loop")




needs_gpu = pytest.mark.skipif(not cupy_ready(), reason="CuPy or a GPU is absent")


# -- 1. nvcc ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_kernel_compiles_with_nvcc(tmp_path, dtype):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / f"optq_{dtype}.cu"
    src.write_text(fused_gpu.kernel_source(dtype))
    out = subprocess.run([nvcc, "-arch=sm_90", "--std=c++14", "-cubin", "-Xptxas", "-v", "-o",
                          str(tmp_path / "k.cubin"), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "spill" not in out.stderr or "0 bytes spill stores" in out.stderr, out.stderr


# -- 2. the kernel source on the CPU ---------------------------------------------------------------

_HOST_PRELUDE = r"""
#include <math.h>
#include <stdint.h>
struct ptq_dim3 { unsigned int x, y, z; };
static ptq_dim3 threadIdx, blockIdx, blockDim;
#define __global__
#define __device__
#define __shared__
#define __forceinline__ inline
extern "C" { unsigned char ptq_smem[1 << 20]; }
template <class T> static inline T __ldg(const T* p) { return *p; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
"""

_HOST_LAUNCH = r"""
extern "C" void ptq_launch(int gridx, int R, real* Wp, const real* M, real* Qp, bool* Cp, real* E,
        real* scale_p, real* zero_p, long long sld, const double* Uin, const real* first, long long n, long long N,
        long long i1, int B, int mode, int has_first, int finite, real qmin, real qmax, int group,
        int sym, real maxq, unsigned long long seed) {
    blockDim.x = R; blockDim.y = blockDim.z = 1;
    for (int b = 0; b < gridx; ++b)
        for (int t = 0; t < R; ++t) {
            blockIdx.x = b; threadIdx.x = t;
            optq_block(Wp, M, Qp, Cp, E, scale_p, zero_p, sld, Uin, first, n, N, i1, B, mode, has_first,
                       finite, qmin, qmax, group, sym, maxq, seed);
        }
}
"""


def _build_host(d, dt, kernel_source):
    cxx = shutil.which("g++") or shutil.which("c++")
    src = d / f"k_{dt}.cpp"
    src.write_text(_HOST_PRELUDE + kernel_source + _HOST_LAUNCH)
    so = d / f"k_{dt}.so"
    out = subprocess.run([cxx, "-O2", "-shared", "-fPIC", "-ffp-contract=off", "-Wno-unknown-pragmas",
                          "-o", str(so), str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lib = ctypes.CDLL(str(so))
    real = ctypes.c_float if dt == "float32" else ctypes.c_double
    P = ctypes.c_void_p
    lib.ptq_launch.argtypes = [ctypes.c_int, ctypes.c_int] + [P] * 7 + [ctypes.c_longlong, P, P] + [
        ctypes.c_longlong, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ctypes.c_int, real, real, ctypes.c_int, ctypes.c_int, real, ctypes.c_uint64]
    lib.ptq_launch.restype = None
    return lib


def _need_cxx():
    if (shutil.which("g++") or shutil.which("c++")) is None:
        pytest.skip("no C++ compiler to run the kernel source on the CPU")


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory):
    _need_cxx()
    d = tmp_path_factory.mktemp("ptq_kernel")
    return {dt: _build_host(d, dt, fused_gpu.kernel_source(dt)) for dt in ("float32", "float64")}


def _host_runner(libs, broadcast_rows=False):
    """A stand-in for fused_gpu.run_blocked on NumPy arrays: the real host driver, the kernel
    source compiled for the CPU. ``broadcast_rows``: hand the driver per-row grids as one row
    vector broadcast over the columns (stride 0), as a leaner ColumnGrid could."""

    def run_blocked(xp, Wp, M, cg, Qp, Cp, *, rounding, rng, first, bounds):
        lib = libs[str(Wp.dtype)]
        keep = []
        if broadcast_rows and not cg.lazy and not getattr(cg.grid, "static_groups", False):
            cg.scale_p = np.broadcast_to(cg.scale_p[0], cg.scale_p.shape)
            cg.zero_p = np.broadcast_to(cg.zero_p[0], cg.zero_p.shape)

        def launch(grid, block, args, shmem):
            assert shmem <= 1 << 20
            conv = []
            for a in args:
                if isinstance(a, np.ndarray):
                    assert a.flags.c_contiguous or a.strides[0] == 0
                    keep.append(a)
                    conv.append(a.ctypes.data)
                else:
                    conv.append(a.item())
            lib.ptq_launch(int(grid[0]), int(block[0]), *conv)

        from algorithms._backend import uniforms

        return fused_gpu.drive(np, launch, Wp, M, cg, Qp, Cp, rounding=rounding, rng=rng, first=first,
                               bounds=bounds,
                               host_uniforms=lambda shape: uniforms(xp, rng, shape, like=Wp))

    return run_blocked


@pytest.fixture
def emulated(host_kernels, monkeypatch):
    """Route loop.run_columns' fused branch, for NumPy inputs, to the CPU-compiled kernel."""
    monkeypatch.setattr(fused_gpu, "wanted", lambda xp, kernel, dtype, cg=None: kernel != "generic"
                        and fused_gpu.supported(cg, dtype) is None)
    monkeypatch.setattr(fused_gpu, "run_blocked", _host_runner(host_kernels))
    return monkeypatch


def _run(alg, W, X, Xt, grid, **kw):
    if alg == "optq":
        return optq(W, X, grid=grid, **kw)
    return qronos(W, X, Xt, grid=grid, variant=alg.split("-")[1], **kw)


def _generic(alg, W, X, Xt, grid, **kw):
    return _run(alg, W, X, Xt, grid, kernel="generic", **kw)


SHAPES = [(33, 64, 90), (40, 112, 80), (5, 48, 30), (70, 96, 60)]  # n not a multiple of 32; N = 7·16


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alg", ["optq", "qronos-original", "qronos-projection"])
def test_emulated_kernel_equals_generic_nearest(emulated, dtype, alg):
    for (n, N, m) in SHAPES:
        W, X, Xt = make_layer(n, N, m, dtype, seed=n + N)
        for gname, grid in GRIDS(n, N).items():
            for order, bs in (("natural", 128), ("decreasing", 40)):
                kw = dict(lam=0.5, order=order, block_size=bs)
                ref = _generic(alg, W, X, Xt, grid, **kw)
                res = _run(alg, W, X, Xt, grid, **kw)
                try:
                    assert_same_run(ref, res)
                except AssertionError as exc:
                    raise AssertionError(f"{(n, N, m)} {gname} {order} bs={bs}: {exc}") from exc


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alg", ["optq", "qronos-original"])
def test_emulated_kernel_host_uniforms_equals_generic(emulated, dtype, alg):
    """A numpy Generator: the fused path consumes the generic path's uniforms, entry for entry."""
    for (n, N, m) in SHAPES[:3]:
        W, X, Xt = make_layer(n, N, m, dtype, seed=3 * n + N)
        for gname in ("sym", "dZ", "gptq4", "g16", "g16-asym", "g16-static"):
            grid = GRIDS(n, N)[gname]
            for order in ("natural", "random"):
                kw = dict(lam=0.5, order=order, rounding="stochastic")
                ref = _generic(alg, W, X, Xt, grid, rng=np.random.default_rng(9), **kw)
                res = _run(alg, W, X, Xt, grid, rng=np.random.default_rng(9), **kw)
                R = np.random.default_rng(9)
                if order == "random":
                    R.permutation(N)
                assert_same_run(ref, res, uniforms=R.random((N, n)))


def test_emulated_kernel_broadcast_row_grid(host_kernels, monkeypatch):
    """Per-row grids given as one broadcast row vector (stride 0 over the columns) work too."""
    monkeypatch.setattr(fused_gpu, "wanted", lambda xp, kernel, dtype, cg=None: kernel != "generic")
    monkeypatch.setattr(fused_gpu, "run_blocked", _host_runner(host_kernels, broadcast_rows=True))
    n, N, m = 40, 112, 80
    W, X, Xt = make_layer(n, N, m, "float32", seed=2)
    for gname in ("sym", "sym-row", "gptq4", "gptq3-asym", "g16", "g16-static"):
        grid = GRIDS(n, N)[gname]
        ref = _generic("optq", W, X, Xt, grid, lam=0.5)
        res = _run("optq", W, X, Xt, grid, lam=0.5)
        assert_same_run(ref, res)


def splitmix_uniforms(seed: int, N: int, n: int) -> np.ndarray:
    """NumPy reference of the kernel's counter RNG: U[t, i] from counter k = t·n + i."""
    k = np.arange(N * n, dtype=np.uint64).reshape(N, n)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + (k + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def test_splitmix_stream_is_the_documented_formula():
    """algorithms.SplitMix64 draws are the formula (checked against a plain transcription here),
    consecutive draws continue the sequence, and the kernel's seed for a draw is the stream's."""
    assert streams.GAMMA == 0x9E3779B97F4A7C15
    assert "0x9E3779B97F4A7C15ULL" in fused_gpu.KERNEL_SOURCE
    r = SplitMix64(0xDEADBEEF)
    a, b = r.random((3, 5)), r.random(7)
    full = splitmix_uniforms(0xDEADBEEF, 1, 22).ravel()
    assert np.array_equal(np.concatenate([a.ravel(), b]), full)
    r2 = SplitMix64(0xDEADBEEF)
    r2.take(15)
    assert np.array_equal(splitmix_uniforms(r2.take(7), 1, 7).ravel(), b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alg", ["optq", "qronos-original"])
def test_emulated_counter_stream_equals_generic(emulated, dtype, alg):
    """rng=SplitMix64: the kernel computes U[t, i] from the counter; the generic loop computes the
    same stream with NumPy: the runs agree entry for entry (and a stream reused continues)."""
    n, N, m = 33, 64, 90
    W, X, Xt = make_layer(n, N, m, dtype, seed=1)
    for grid in (Grid.gptq(4), Grid.gptq(4, group_size=16), Grid.integers(0.1)):
        for order in ("natural", "random"):
            kw = dict(lam=0.5, order=order, rounding="stochastic")
            r_gen, r_fused = SplitMix64(21), SplitMix64(21)
            for _ in range(2):  # the second call continues each stream
                ref = _generic(alg, W, X, Xt, grid, rng=r_gen, **kw)
                res = _run(alg, W, X, Xt, grid, rng=r_fused, **kw)
                assert_same_run(ref, res)
            assert r_gen.drawn == r_fused.drawn


def test_splitmix_uniforms_look_uniform():
    U = splitmix_uniforms(0x1234_5678_9ABC_DEF0, 512, 512).ravel()
    from scipy import stats

    assert stats.kstest(U, "uniform").pvalue > 1e-4
    assert abs(np.corrcoef(U[:-1], U[1:])[0, 1]) < 5e-3  # neighbouring counters
    assert U.min() >= 0 and U.max() < 1


def test_emulated_stochastic_rounding_unbiased(emulated):
    """Orthogonal features (no error feedback): q_t is z_t rounded down or up with probability
    the fractional part; R rows of the same weights are R independent trials."""
    from scipy import stats

    R, N = 4000, 16
    rng = np.random.default_rng(3)
    w = rng.uniform(-1, 1, N)
    W = np.tile(w, (R, 1))
    X = np.eye(N) * 2.0
    delta = 0.25
    res = optq(W, X, grid=Grid.integers(delta), lam=0.0 + 1e-9, rounding="stochastic",
               rng=SplitMix64(8))  # the counter stream, computed inside the kernel
    Q = res.Q
    lo = np.floor(w / delta) * delta
    frac = w / delta - np.floor(w / delta)
    assert np.all(np.isclose(Q, lo) | np.isclose(Q, lo + delta))
    ups = np.sum(np.isclose(Q, lo + delta), axis=0)
    for t in range(N):  # exact two-sided binomial test per coordinate at 1e-4
        assert stats.binomtest(int(ups[t]), R, frac[t]).pvalue > 1e-4, (t, ups[t] / R, frac[t])


MUTANTS = {
    "skips the next column's update": ("for (int u = t + 1; u < B; ++u)", "for (int u = t + 2; u < B; ++u)"),
    "off-by-one M column": ("__ldg(Mrow + u)", "__ldg(Mrow + u - 1)"),
    "rounds half away from zero": ("k = ADD(RINT(DIV(z, s)), zp);", "k = ADD(round(DIV(z, s)), zp);"),
    "group fit misses its last column": ("for (int u = 1; u < group; ++u)", "for (int u = 1; u < group - 1; ++u)"),
    "propagates the rounded value's error from first": ("const real e = SUB(w, q);", "const real e = SUB(z, q);"),
}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_emulation_catches_kernel_mutants(name, tmp_path, monkeypatch):
    """Tests that test the tests: each mutant of the kernel source must be caught."""
    _need_cxx()
    old, new = MUTANTS[name]
    src = fused_gpu.kernel_source("float64")
    assert old in src
    lib = _build_host(tmp_path, "float64", src.replace(old, new))
    monkeypatch.setattr(fused_gpu, "wanted", lambda xp, kernel, dtype, cg=None: kernel != "generic")
    monkeypatch.setattr(fused_gpu, "run_blocked", _host_runner({"float64": lib}))
    n, N, m = 33, 64, 90
    W, X, Xt = make_layer(n, N, m, "float64", seed=7)
    X_half = np.eye(N) * 3.0  # orthogonal features: z = w, so exact ties survive
    W_half = (np.floor(W * 4) + 0.5) / 4  # w/δ = odd multiples of 1/2 on δ = 0.25 (exact in binary)
    cases = [("optq", W, X, Xt, Grid.gptq(4, group_size=16)), ("qronos-original", W, X, Xt, Grid.gptq(4)),
             ("optq", W, X, Xt, Grid.symmetric(0.1, 40)), ("optq", W_half, X_half, X_half, Grid.symmetric(0.25, 40))]
    caught = []
    for alg, W_, X_, Xt_, grid in cases:
        ref = _generic(alg, W_, X_, Xt_, grid, lam=0.5)
        res = _run(alg, W_, X_, Xt_, grid, lam=0.5)
        try:
            assert_same_run(ref, res, max_diverged=0.0)
        except AssertionError as exc:
            caught.append(str(exc)[:200])
    assert caught, f"mutant '{name}' survived"


def test_kernel_argument():
    """kernel='generic' never uses the kernel; 'fused' insists (an error saying why); 'auto' uses
    it only for CuPy arrays; bad values are refused by every entry point."""
    import array_api_compat.numpy as xnp

    from algorithms import optq_trials

    assert fused_gpu.wanted(xnp, "auto", np.float32) is False  # not CuPy
    assert fused_gpu.wanted(xnp, "generic", np.float32) is False
    with pytest.raises(RuntimeError, match="not CuPy"):
        fused_gpu.wanted(xnp, "fused", np.float32)
    W, X, Xt = make_layer(4, 8, 12, "float64", seed=0)
    with pytest.raises(RuntimeError, match="kernel='fused' cannot be used: the arrays are not CuPy"):
        optq(W, X, grid=Grid.gptq(4), lam=0.5, kernel="fused")
    for call in (lambda k: optq(W, X, grid=Grid.gptq(4), lam=0.5, kernel=k),
                 lambda k: qronos(W, X, Xt, grid=Grid.gptq(4), lam=0.5, kernel=k),
                 lambda k: optq_trials(W[0], X, grid=Grid.gptq(4), trials=2, rng=np.random.default_rng(0),
                                       lam=0.5, kernel=k)):
        with pytest.raises(ValueError, match="kernel"):
            call("cuda")
    with pytest.raises(ValueError, match="method='blocked'"):
        optq(W, X, grid=Grid.gptq(4), lam=0.5, kernel="fused", method="cholesky")


# -- 3. the real kernel on a GPU -------------------------------------------------------------------

def _cp(a):
    import cupy

    return cupy.asarray(a)


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("alg", ["optq", "qronos-original", "qronos-projection"])
def test_gpu_fused_equals_generic_nearest(dtype, alg):
    for (n, N, m) in SHAPES + [(300, 512, 400)]:
        W, X, Xt = (_cp(a) for a in make_layer(n, N, m, dtype, seed=n + N))
        for gname, grid in GRIDS(n, N).items():
            if N == 512 and gname not in ("sym-row", "dZ", "gptq4", "g32", "g32-asym", "g32-static"):
                continue  # the generic CuPy loop is slow: the big shape checks a few grids
            if gname == "sym-row":
                grid = Grid.symmetric(_cp(np.linspace(0.2, 0.4, n).reshape(-1, 1).astype(dtype)), 25)
            for order in ("natural", "decreasing"):
                for bs in (128, 40):
                    kw = dict(lam=0.5, order=order, block_size=bs)
                    ref = _generic(alg, W, X, Xt, grid, **kw)
                    res = _run(alg, W, X, Xt, grid, kernel="fused", **kw)  # no silent fallback
                    try:
                        assert_same_run(ref, res)
                    except AssertionError as exc:
                        raise AssertionError(f"{(n, N, m)} {gname} {order} bs={bs}: {exc}") from exc


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gpu_fused_host_uniforms_equals_generic(dtype):
    for (n, N, m) in SHAPES[:3]:
        W, X, Xt = (_cp(a) for a in make_layer(n, N, m, dtype, seed=3 * n + N))
        for gname in ("sym", "dZ", "gptq4", "g16", "g16-asym", "g16-static"):
            grid = GRIDS(n, N)[gname]
            for alg in ("optq", "qronos-original"):
                kw = dict(lam=0.5, order="random", rounding="stochastic")
                ref = _generic(alg, W, X, Xt, grid, rng=np.random.default_rng(9), **kw)
                res = _run(alg, W, X, Xt, grid, rng=np.random.default_rng(9), kernel="fused", **kw)
                R = np.random.default_rng(9)
                R.permutation(N)
                assert_same_run(ref, res, uniforms=R.random((N, n)))


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize("alg", ["optq", "qronos-original"])
def test_gpu_counter_stream_equals_generic(alg):
    """rng=SplitMix64: the kernel's in-kernel stream equals CuPy's generic loop on the same stream."""
    n, N, m = 70, 96, 90
    W, X, Xt = (_cp(a) for a in make_layer(n, N, m, "float32", seed=1))
    g = Grid.gptq(4, group_size=32)
    ref = _generic(alg, W, X, Xt, g, lam=0.5, rounding="stochastic", rng=SplitMix64(21))
    res = _run(alg, W, X, Xt, g, lam=0.5, rounding="stochastic", rng=SplitMix64(21), kernel="fused")
    assert_same_run(ref, res)


@needs_gpu
@pytest.mark.gpu
def test_gpu_stochastic_unbiased_every_stream():
    import cupy

    from scipy import stats

    R, N = 20000, 16
    rng = np.random.default_rng(3)
    w = rng.uniform(-1, 1, N)
    W = cupy.asarray(np.tile(w, (R, 1)))
    X = cupy.asarray(np.eye(N) * 2.0)
    delta = 0.25
    for gen in (np.random.default_rng(8), cupy.random.default_rng(8), SplitMix64(8)):
        Q = optq(W, X, grid=Grid.integers(delta), lam=1e-9, rounding="stochastic", rng=gen, kernel="fused").Q.get()
        lo = np.floor(w / delta) * delta
        frac = w / delta - np.floor(w / delta)
        assert np.all(np.isclose(Q, lo) | np.isclose(Q, lo + delta))
        ups = np.sum(np.isclose(Q, lo + delta), axis=0)
        for t in range(N):
            assert stats.binomtest(int(ups[t]), R, frac[t]).pvalue > 1e-4


@needs_gpu
@pytest.mark.gpu
def test_gpu_kernel_argument_selects_the_path(monkeypatch):
    import cupy

    W, X, _ = make_layer(40, 64, 50, "float32", seed=4)
    calls = []
    real = fused_gpu.run_blocked
    monkeypatch.setattr(fused_gpu, "run_blocked", lambda *a, **k: calls.append(1) or real(*a, **k))
    optq(cupy.asarray(W), cupy.asarray(X), grid=Grid.gptq(4), lam=0.5)
    assert calls == [1]
    optq(cupy.asarray(W), cupy.asarray(X), grid=Grid.gptq(4), lam=0.5, kernel="generic")
    assert calls == [1]


@needs_gpu
@pytest.mark.gpu
def test_gpu_large_group_falls_back():
    """On-the-fly groups larger than the kernel's block run on the generic loop (same result)."""
    import cupy

    W, X, _ = make_layer(40, 1024, 300, "float32", seed=4)
    g = Grid.gptq(4, group_size=512)
    assert fused_gpu.supported(type("cg", (), {"lazy": True, "g": 512})(), np.float32) is not None
    r = optq(cupy.asarray(W), cupy.asarray(X), grid=g, lam=0.5)
    ref = optq(W, X, grid=g, lam=0.5)
    assert_same_run(ref, r)
