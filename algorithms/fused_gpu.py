"""Fused GPU kernel for the OPTQ column loop (CuPy only; the generic loop is the reference).

The column loop of :func:`algorithms.loop.run_columns` (``method="blocked"``) is launch-bound
on a GPU when written with array operations: each column costs ~10 small kernels. Rows of ``W``
are independent inside a block of columns, so this module processes a whole block of ``B``
columns in one kernel:

* the block's rows of the working matrix first receive every earlier error as one GEMM
  (cuBLAS through CuPy's matmul): ``Wp[i1:i2] -= M[:i1, i1:i2]ᵀ E[:i1]`` ("left-looking", the
  same lazy batch update as the generic loop);
* then one CUDA thread per row of ``W`` (32 rows per thread block) walks the block's columns in
  order, with the row's ``B`` current weights in shared memory: it fits the group's scale and
  zero point at an on-the-fly group's first column (GPTQ's min/max rule of
  :func:`algorithms.grids.fit_minmax`, same operations), rounds (nearest, ties to even; or
  stochastic), clips, stores ``q``, the clip flag and the propagated error ``e``, and applies
  ``w_s -= e·M_ts`` to the row's later columns of the block.

Kernel blocks are the blocks of the generic loop (:func:`algorithms.loop.block_bounds`, whole
on-the-fly groups) with ``block_size`` capped at :data:`MAX_BLOCK` = 256 columns (blocking changes
results only at floating-point level), so groups larger than 256 columns run on the generic loop. Steps and zero points are read from the
``N × n`` arrays of :class:`algorithms.grids.ColumnGrid`, or from one per-row vector broadcast
over the columns (stride 0), which the kernel also accepts.

The rounding arithmetic uses the IEEE round-to-nearest intrinsics (``__fdiv_rn``, ``__fadd_rn``,
...) in the same order as :mod:`algorithms.rounding`, so that it is never contracted into an FMA
and equals the generic path for the same inputs; the updates may use FMA (floating point only).

Stochastic rounding reads the uniforms the caller's ``rng`` defines (:mod:`algorithms.streams`),
so the kernel and the generic loop give the same result for the same ``rng``:

* a ``numpy.random.Generator`` (or ``cupy.random.Generator``): the ``N × n`` array
  ``rng.random((N, n))``, drawn up front as the generic loop draws it;
* an :class:`algorithms.SplitMix64`: ``U[t, i]`` computed in the kernel from the counter
  ``t·n + i`` (``(splitmix64(s + (t·n + i + 1)·γ) >> 11)·2⁻⁵³``, ``s`` the draw's seed), with no
  ``N × n`` array in memory.

Kernel choice: the algorithms' ``kernel`` argument (``"auto"``: this kernel for CuPy arrays when it
supports the grid and dtype, the generic loop otherwise or, with a warning, when it cannot be
compiled; ``"fused"``: this kernel or a ``RuntimeError``; ``"generic"``: the array-API loop).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from array_api_compat import is_cupy_namespace

from ._backend import dtype_name, uniforms
from .streams import SplitMix64

__all__ = ["wanted", "supported", "run_blocked", "drive", "kernel_source",
           "KERNEL_SOURCE", "ROWS", "MAX_BLOCK"]

ROWS = 32  # rows of W per thread block (one warp)
MAX_BLOCK = 256  # most columns per kernel: 256 × 32 × 8 bytes = 64 KiB of shared memory (float64)

KERNEL_SOURCE = r"""
// OPTQ: one block of B columns for all rows; one thread per row. `real` is float or double.
#define SPLITMIX_GAMMA 0x9E3779B97F4A7C15ULL

__device__ __forceinline__ double ptq_uniform(unsigned long long seed, unsigned long long k) {
    unsigned long long z = seed + (k + 1ULL) * SPLITMIX_GAMMA;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z = z ^ (z >> 31);
    return (double)(z >> 11) * 1.1102230246251565e-16;  // 2^-53
}

extern "C" __global__ void optq_block(
    real* __restrict__ Wp,            // N x n working matrix, processing order (row t = column t)
    const real* __restrict__ M,       // N x N unit upper triangular D^-1 U, row-major
    real* __restrict__ Qp,            // N x n quantized values
    bool* __restrict__ Cp,            // N x n clip flags
    real* __restrict__ E,             // N x n propagated errors
    real* __restrict__ scale_p,       // steps: row t at scale_p + t*sld (read; written for on-the-fly groups)
    real* __restrict__ zero_p,        // zero points, same layout
    const long long sld,              // n, or 0 when every column shares one per-row vector
    const double* __restrict__ Uin,   // N x n uniforms (mode 2 only)
    const real* __restrict__ first,   // n values rounded at position 0 (has_first only)
    const long long n, const long long N, const long long i1, const int B,
    const int mode,                   // 0 nearest, 1 stochastic (counter RNG), 2 stochastic (Uin)
    const int has_first, const int finite, const real qmin, const real qmax,
    const int group, const int sym, const real maxq,
    const unsigned long long seed)
{
    extern __shared__ unsigned char ptq_smem[];
    real* ws = reinterpret_cast<real*>(ptq_smem);   // ws[t * R + tid]: column t of this thread's row
    const int tid = threadIdx.x;
    const int R = blockDim.x;
    const long long i = (long long)blockIdx.x * R + tid;
    if (i >= n) return;               // rows are independent: no barrier below
    for (int t = 0; t < B; ++t) ws[t * R + tid] = Wp[(i1 + t) * n + i];

    real s = (real)1, zp = (real)0;
    for (int t = 0; t < B; ++t) {
        const long long gt = i1 + t;
        const long long idx = gt * n + i;
        if (group > 0) {
            if (gt % group == 0) {    // GPTQ min/max fit on the group's current weights
                real bmin = ws[t * R + tid], bmax = bmin;
                for (int u = 1; u < group; ++u) {
                    const real v = ws[(t + u) * R + tid];
                    bmin = FMIN(bmin, v);
                    bmax = FMAX(bmax, v);
                }
                real xmin = FMIN(bmin, (real)0), xmax = FMAX(bmax, (real)0);
                if (sym) {
                    xmax = FMAX(FABS(xmin), xmax);
                    if (xmin < (real)0) xmin = -xmax;
                }
                if (xmin == (real)0 && xmax == (real)0) { xmin = (real)-1; xmax = (real)1; }
                s = DIV(SUB(xmax, xmin), maxq);
                zp = sym ? DIV(ADD(maxq, (real)1), (real)2) : RINT(DIV(-xmin, s));
                for (int u = 0; u < group; ++u) {
                    scale_p[(gt + u) * sld + i] = s;
                    zero_p[(gt + u) * sld + i] = zp;
                }
            }
        } else {
            s = scale_p[gt * sld + i];
            zp = zero_p[gt * sld + i];
        }
        const real w = ws[t * R + tid];
        const real z = (has_first && gt == 0) ? first[i] : w;
        real k;
        if (mode == 0) {
            k = ADD(RINT(DIV(z, s)), zp);
        } else {
            const real v = DIV(z, s);
            const real f = FLOOR(v);
            const double U = (mode == 2) ? Uin[idx] : ptq_uniform(seed, (unsigned long long)idx);
            const real up = (U < (double)SUB(v, f)) ? (real)1 : (real)0;
            k = ADD(ADD(f, up), zp);
        }
        real kc = k;
        if (finite) kc = FMIN(FMAX(k, qmin), qmax);
        const real q = MUL(s, SUB(kc, zp));
        const real e = SUB(w, q);
        Qp[idx] = q;
        // saturation: clipping changed k; for nearest rounding only when z lies more than half a
        // step outside the range (a tie exactly half a step out is not saturation: rounding.py)
        Cp[idx] = (kc != k) && (mode != 0 || FABS(SUB(ADD(DIV(z, s), zp), kc)) > (real)0.5);
        E[idx] = e;
        const real* Mrow = M + gt * N + i1;
        #pragma unroll 4
        for (int u = t + 1; u < B; ++u) ws[u * R + tid] -= e * __ldg(Mrow + u);
    }
    for (int t = 0; t < B; ++t) Wp[(i1 + t) * n + i] = ws[t * R + tid];
}
"""

_PRELUDE = {
    "float32": (
        "typedef float real;\n#define DIV __fdiv_rn\n#define ADD __fadd_rn\n#define SUB __fsub_rn\n"
        "#define MUL __fmul_rn\n#define RINT rintf\n#define FLOOR floorf\n#define FMIN fminf\n"
        "#define FMAX fmaxf\n#define FABS fabsf\n"
    ),
    "float64": (
        "typedef double real;\n#define DIV __ddiv_rn\n#define ADD __dadd_rn\n#define SUB __dsub_rn\n"
        "#define MUL __dmul_rn\n#define RINT rint\n#define FLOOR floor\n#define FMIN fmin\n"
        "#define FMAX fmax\n#define FABS fabs\n"
    ),
}


def kernel_source(dtype_name: str) -> str:
    """The CUDA C source of the kernel for ``float32`` or ``float64`` (also compiled by the tests
    with ``nvcc`` when it is installed)."""
    return _PRELUDE[dtype_name] + KERNEL_SOURCE


def supported(cg, dtype) -> str | None:
    """``None`` when the kernel handles this grid and dtype, else the reason it does not."""
    if dtype_name(dtype) not in _PRELUDE:
        return f"dtype {dtype} (float32 and float64 only)"
    if cg.lazy and cg.g > MAX_BLOCK:
        return f"on-the-fly groups of {cg.g} > {MAX_BLOCK} columns"
    return None


def wanted(xp, kernel: str, dtype, cg=None) -> bool:
    """Whether :func:`algorithms.loop.run_columns` runs this kernel, for the algorithms' ``kernel``
    argument (see the module docstring).

    ``"auto"``: CuPy arrays whose grid and dtype the kernel supports; a kernel that fails to compile
    (an unusual CUDA toolchain) gives a warning and the generic loop (nothing has been modified at
    that point). ``"fused"``: the kernel, or a ``RuntimeError`` that says why not.
    """
    if kernel == "generic":
        return False
    strict = kernel == "fused"
    reason = "the arrays are not CuPy arrays" if not is_cupy_namespace(xp) else (
        supported(cg, dtype) if cg is not None else None)
    if reason is not None:
        if strict:
            raise RuntimeError(f"kernel='fused' cannot be used: {reason}")
        return False
    try:
        _kernel(dtype_name(dtype))
    except Exception as exc:
        if strict:
            raise
        warnings.warn(f"the fused GPU kernel could not be built ({type(exc).__name__}: {exc}); "
                      "using the generic loop", RuntimeWarning, stacklevel=3)
        return False
    return True


_CACHE: dict = {}


def _kernel(name: str):
    import cupy

    dev = cupy.cuda.Device().id
    key = (name, dev)
    if key not in _CACHE:
        mod = cupy.RawModule(code=kernel_source(name), options=("--std=c++14",))
        _CACHE[key] = mod.get_function("optq_block")
    return _CACHE[key]


def _shared_row_layout(cg, n):
    """``n`` when ``scale_p``/``zero_p`` are C-contiguous ``N × n``; ``0`` when both are one
    per-row vector broadcast over the columns (stride 0 along ``t``); ``None`` otherwise."""
    S, Z = cg.scale_p, cg.zero_p
    if S.flags.c_contiguous and Z.flags.c_contiguous:
        return n
    if not cg.lazy and all(A.strides[0] == 0 and A.strides[1] == A.itemsize for A in (S, Z)):
        return 0
    return None


def run_blocked(xp, Wp, M, cg, Qp, Cp, *, rounding, rng, first, bounds):
    """The fused loop on CuPy arrays over the column blocks ``bounds`` (``[0, …, N]``, at most
    :data:`MAX_BLOCK` columns each, whole on-the-fly groups: :func:`algorithms.loop.block_bounds`).
    Fills ``Qp``, ``Cp``, updates ``Wp`` to ``z`` (and, for on-the-fly groups,
    ``cg.scale_p``/``cg.zero_p``); returns the propagated errors ``E`` (``N × n``)."""
    import cupy

    kern = _kernel(dtype_name(Wp.dtype))

    def launch(grid, block, args, shmem):
        if shmem > 48 * 1024:
            kern.max_dynamic_shared_size_bytes = shmem
        kern(grid, block, args, shared_mem=shmem)

    return drive(cupy, launch, Wp, M, cg, Qp, Cp, rounding=rounding, rng=rng, first=first,
                 bounds=bounds, host_uniforms=lambda shape: uniforms(xp, rng, shape, like=Wp))


def drive(ap, launch, Wp, M, cg, Qp, Cp, *, rounding, rng, first, bounds, host_uniforms):
    """Host side of the fused loop, written for an array module ``ap`` (``cupy``; NumPy when the
    tests run the kernel's C source compiled for the CPU) and a kernel ``launch(grid, block,
    args, shared_bytes)``."""
    N, n = Wp.shape
    real = np.float32 if dtype_name(Wp.dtype) == "float32" else np.float64
    for name, A in (("Wp", Wp), ("Qp", Qp), ("Cp", Cp)):
        if not A.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous for the fused kernel")
    M = ap.ascontiguousarray(M)
    E = ap.empty((N, n), dtype=Wp.dtype)
    sld = _shared_row_layout(cg, n)
    if sld is None:
        cg.scale_p, cg.zero_p = ap.ascontiguousarray(cg.scale_p), ap.ascontiguousarray(cg.zero_p)
        sld = n
    mode, seed = 0, 0
    Uin = ap.zeros((1,), dtype=ap.float64)
    if rounding == "stochastic":
        if isinstance(rng, SplitMix64):  # the counter stream, computed in the kernel
            mode = 1
            seed = rng.take(N * n)
        else:  # the generic loop's N × n uniforms
            mode = 2
            Uin = ap.ascontiguousarray(ap.asarray(host_uniforms((N, n)), dtype=ap.float64))
    has_first = first is not None
    fv = ap.ascontiguousarray(ap.asarray(first, dtype=Wp.dtype)) if has_first else ap.zeros((1,), dtype=Wp.dtype)
    finite = not (math.isinf(cg.qmin) and math.isinf(cg.qmax))
    qmin = real(cg.qmin if finite else 0)
    qmax = real(cg.qmax if finite else 0)
    group = int(cg.g) if cg.lazy else 0
    sym = int(bool(cg.grid.sym)) if cg.grid.kind == "gptq" else 1
    maxq = real(cg.grid.maxq if cg.grid.kind == "gptq" else 1)
    if any(b - a > MAX_BLOCK for a, b in zip(bounds[:-1], bounds[1:])):
        raise ValueError(f"kernel blocks hold at most {MAX_BLOCK} columns")
    grid = ((n + ROWS - 1) // ROWS,)
    itemsize = np.dtype(real).itemsize
    for i1, i2 in zip(bounds[:-1], bounds[1:]):
        if i1 > 0:
            Wp[i1:i2] -= M[:i1, i1:i2].T @ E[:i1]
        B = i2 - i1
        launch(grid, (ROWS,), (
            Wp, M, Qp, Cp, E, cg.scale_p, cg.zero_p, np.int64(sld), Uin, fv,
            np.int64(n), np.int64(N), np.int64(i1), np.int32(B),
            np.int32(mode), np.int32(has_first), np.int32(finite), qmin, qmax,
            np.int32(group), np.int32(sym), maxq, np.uint64(seed),
        ), B * ROWS * itemsize)
    return E
