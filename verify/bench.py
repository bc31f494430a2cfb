"""``ptq-bounds bench``: time OPTQ against the BLAS-3 floor of the same device, in the same run.

For each shape ``n × N`` (``W`` is ``n × N``: n output features, N input features; ``H`` is
``N × N``) it measures, as the median of ``--repeats`` runs:

* **OPTQ**, from the damped Hessian to the result (the scope of GPTQ's ``fasterquant``, whose
  timings the targets quote): processing order, permutation, the factor ``U`` of ``H_λ⁻¹``
  (Cholesky + triangular inverse), the column loop and the result fields. ``H = XᵀX`` is
  formed beforehand (untimed; ``X`` has ``--samples`` rows). Three cases: ``deterministic``
  (4-bit per-row GPTQ grid, natural order), ``stochastic`` (same grid, stochastic rounding) and
  ``act_order+g128`` (decreasing order, on-the-fly groups of 128 columns);
* the **BLAS-3 floor**, the four dense operations of the reference GPTQ implementation on the
  same device and dtype: (1) Cholesky ``H = LLᵀ``; (2) ``H⁻¹`` from ``L`` (CPU: LAPACK ``potri``;
  GPU: ``L⁻¹`` by a triangular solve, then ``L⁻ᵀL⁻¹`` as one GEMM); (3) the Cholesky factor of
  ``H⁻¹`` (GPTQ's ``cholesky(..., upper=True)``); (4) one dense product ``W·U``. The floor is
  their sum and the ratio is OPTQ / floor;
* the **reference GPTQ** (:mod:`verify.bench_reference`, a plain PyTorch transcription of the
  reference loop, independent of :mod:`algorithms`) on the same ``W`` and ``X``, from GPTQ's Hessian
  ``(2/m)·XᵀX`` (formed beforehand, untimed) to ``Q``, for the cases it has (``deterministic`` and
  ``act_order+g128``; GPTQ has no stochastic rounding), in the same dtype and on the same device;
  reported with ``optq / reference`` and ``reference / floor`` (``--no-reference`` skips it; skipped
  with the reason when PyTorch is missing);
* **Monte Carlo throughput**: ``--mc-trials`` stochastic trials of one weight vector at
  ``N = --mc-n`` as rows of batched runs (:func:`algorithms.trials.optq_trials`, including its
  Hessian and factorization), in trials per second;
* peak memory of one deterministic run (GPU: CuPy memory-pool allocations during the call;
  CPU: ``tracemalloc`` of NumPy's allocations), also as a multiple of the bytes of ``W`` + ``H``.

Results are printed and stored as JSON (``--out``, default ``benchmarks/results/``) with the
device, CPU model, core count, load average, library versions, BLAS, git commit and time.
Nothing here is asserted: timings depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._atomic import atomic_path

SHAPES = ["1024x1024", "4096x4096", "11008x4096", "4096x11008", "8192x8192"]
QUICK_SHAPES = ["256x256", "512x1024"]
CASES = ["deterministic", "stochastic", "act_order+g128"]
TARGETS = {
    "H100": {"optq_4096x4096_s": 0.05, "optq_8192x8192_s": 0.2, "mc_trials_per_s_N4096": 5e4,
             "memory_8192x8192_fp32_x_W_plus_H": 4.0},
    "2-core CPU": {"optq_4096x4096_s": 12.0, "optq_1024x1024_s": 0.1},
}
REPO = Path(__file__).resolve().parent.parent
FLOOR_DEFINITION = (
    "sum of four operations on the same device and dtype, each the median of the repeats: "
    "cholesky(H) [CPU: LAPACK potrf; GPU: cupy.linalg.cholesky]; H^-1 from the factor [CPU: LAPACK "
    "potri; GPU: triangular solve L^-1 (cuBLAS trsm via cupyx.scipy.linalg.solve_triangular) + one GEMM "
    "L^-T L^-1]; Cholesky factor of H^-1 (GPTQ's upper factor; computed as the lower factor of the "
    "same triangle, same flops); one dense GEMM W @ U (n x N times N x N)"
)


DEFINITIONS = {
    "optq": "algorithms.loop from the damped Hessian (order, permutation, Cholesky + "
            "triangular inverse, column loop, result fields); H = XᵀX untimed",
    "floor": FLOOR_DEFINITION,
    "ratio": "optq median / floor total (cpu_ratio_to_floor: the same with process CPU seconds)",
    "reference": "verify.bench_reference.fasterquant: the reference GPTQ loop transcribed in PyTorch "
                 "(min/max 4-bit symmetric grid, percdamp 0.01, lazy blocks of --block-size; act_order+g128: "
                 "act_order and groups refitted at each group start), from GPTQ's H = (2/m)XᵀX (untimed) "
                 "to Q, same W, X, dtype and device; ratio_to_reference = optq median / reference median, "
                 "reference ratio_to_floor = reference median / floor total",
    "monte_carlo": "algorithms.trials.optq_trials(w, X, trials=R, batch_rows=B), whole call "
                   "(Hessian of X with m = N rows, factorization, R stochastic runs); trials/s = R / median; "
                   "setup_s = the same call with one trial; marginal_trials_per_s = (R - 1) / (median - setup_s)",
    "memory": "peak bytes allocated during one deterministic run (GPU: CuPy pool mallocs; CPU: "
              "tracemalloc), excluding the inputs W and H; ratio_incl_inputs = (peak + bytes(W) + "
              "bytes(H)) / (bytes(W) + bytes(H))",
    "stochastic_stream": "the rng of stochastic rounding: generator = numpy.random.default_rng(seed) "
                         "(N × n uniforms drawn up front), splitmix = algorithms.SplitMix64(seed) "
                         "(counter stream, computed inside the fused GPU kernel)",
}


def add_arguments(p):
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu",
                   help="cpu: NumPy (SciPy LAPACK); gpu: CuPy with the fused kernel (default cpu)")
    p.add_argument("--shapes", default=None,
                   help=f"comma-separated n x N shapes of W, e.g. 4096x4096,11008x4096 "
                        f"(default: {','.join(SHAPES)})")
    p.add_argument("--quick", action="store_true",
                   help=f"small shapes for CI-like machines ({','.join(QUICK_SHAPES)}; MC at N=512, 256 trials)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per measurement (default cpu 3, gpu 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (default cpu 0, gpu 1)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--samples", type=int, default=None,
                   help="rows m of X (H = XᵀX, untimed); default m = N")
    p.add_argument("--block-size", type=int, default=128)
    p.add_argument("--mc-n", type=int, default=None, help="N of the Monte Carlo measurement (default 4096)")
    p.add_argument("--mc-trials", type=int, default=None,
                   help="Monte Carlo trials (default cpu 2048, gpu 65536; 0 skips)")
    p.add_argument("--mc-batch", type=int, default=None,
                   help="Monte Carlo rows per batched run (default cpu 2048, gpu 16384)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    p.add_argument("--no-floor", action="store_true", help="skip the floor measurement")
    p.add_argument("--no-reference", action="store_true",
                   help="skip the reference GPTQ loop (verify.bench_reference, PyTorch) timed side by side")
    p.add_argument("--kernel", choices=("auto", "fused", "generic"), default="auto",
                   help="the algorithms' kernel argument: auto (the fused GPU kernel on --device gpu), "
                        "fused, or generic (the array-API loop, for the kernel's speed-up)")
    p.add_argument("--stream", choices=("generator", "splitmix"), default=None,
                   help="rng of the stochastic case (default cpu generator, gpu splitmix)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results"),
                   help="directory of the JSON results (default benchmarks/results/)")
    p.add_argument("--json", default=None, help="exact JSON path (overrides --out)")
    p.add_argument("--no-save", action="store_true", help="print only")
    p.add_argument("--claims", action="store_true",
                   help="also time check-layer's claim evaluation (theory.check_all on the OPTQ run) against the "
                        "quantization it checks (optq from X, float64 as check-layer), once per shape")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- devices -------------------------------------------------------------------------------------------


class _CPU:
    kind = "cpu"

    def __init__(self):
        import array_api_compat.numpy as xp

        self.xp = xp

    def sync(self):
        pass

    def randn(self, rng, shape, dtype):
        return rng.standard_normal(shape, dtype=np.float64).astype(dtype)

    def nbytes(self, a):
        return int(a.nbytes)

    def name(self):
        return _cpu_model()

    def floor_ops(self, H, W):
        from scipy.linalg import lapack

        potrf, potri = lapack.get_lapack_funcs(("potrf", "potri"), (H,))
        st = {}

        def chol():
            L, info = potrf(H, lower=1, clean=1)
            assert info == 0, f"potrf info {info}"
            st["L"] = L

        def cholinv():
            Hi, info = potri(st["L"], lower=1)
            assert info == 0, f"potri info {info}"
            st["Hi"] = Hi

        def chol_upper():
            L2, info = potrf(st["Hi"], lower=1, clean=1)
            assert info == 0, f"potrf(H^-1) info {info}"
            st["U"] = L2.T

        def gemm():
            st["P"] = W @ st["U"]

        return [("cholesky", chol), ("cholesky_inverse", cholinv), ("cholesky_upper", chol_upper), ("W@U", gemm)]

    def memory_peak(self, fn):
        import tracemalloc

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            out = fn()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
        return peak, out

    def info(self):
        return {"kind": "cpu", "name": _cpu_model(), "cores": os.cpu_count()}

    def to_torch(self, a):
        import torch

        return torch.from_numpy(np.ascontiguousarray(a))


class _GPU:
    kind = "gpu"

    def __init__(self):
        import cupy

        self.cp = cupy
        import array_api_compat.cupy as xp

        self.xp = xp
        cupy.cuda.runtime.getDeviceCount()  # raises without a GPU

    def sync(self):
        self.cp.cuda.Device().synchronize()

    def randn(self, rng, shape, dtype):
        g = self.cp.random.default_rng(int(rng.integers(0, 2 ** 31)))
        return g.standard_normal(shape, dtype=self.cp.float64).astype(dtype)

    def nbytes(self, a):
        return int(a.nbytes)

    def name(self):
        p = self.cp.cuda.runtime.getDeviceProperties(self.cp.cuda.Device().id)
        n = p["name"]
        return n.decode() if isinstance(n, bytes) else str(n)

    def floor_ops(self, H, W):
        cp = self.cp
        import cupyx.scipy.linalg as cl

        st = {}
        eye = cp.eye(H.shape[0], dtype=H.dtype)

        def chol():
            st["L"] = cp.linalg.cholesky(H)

        def cholinv():
            Li = cl.solve_triangular(st["L"], eye, lower=True)
            st["Hi"] = Li.T @ Li

        def chol_upper():
            st["U"] = cp.linalg.cholesky(st["Hi"]).T

        def gemm():
            st["P"] = W @ st["U"]

        return [("cholesky", chol), ("cholesky_inverse", cholinv), ("cholesky_upper", chol_upper), ("W@U", gemm)]

    def memory_peak(self, fn):
        cp = self.cp
        class Peak(cp.cuda.MemoryHook):
            name = "ptq_peak"

            def __init__(self):
                self.cur = 0
                self.peak = 0

            # keyword names differ between CuPy versions: read mem_size only
            def malloc_postprocess(self, **kw):
                self.cur += int(kw.get("mem_size", kw.get("size", 0)))
                self.peak = max(self.peak, self.cur)

            def free_postprocess(self, **kw):
                self.cur -= int(kw.get("mem_size", 0))

        self.sync()
        hook = Peak()
        with hook:
            out = fn()
            self.sync()
        return hook.peak, out

    def info(self):
        cp = self.cp
        dev = cp.cuda.Device()
        p = cp.cuda.runtime.getDeviceProperties(dev.id)
        return {
            "kind": "gpu", "name": self.name(), "memory_bytes": int(p.get("totalGlobalMem", 0)),
            "compute_capability": dev.compute_capability, "cuda_runtime": cp.cuda.runtime.runtimeGetVersion(),
            "cuda_driver": cp.cuda.runtime.driverGetVersion(), "cpu_model": _cpu_model(), "cores": os.cpu_count(),
        }

    def to_torch(self, a):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("this PyTorch has no CUDA support")
        return torch.from_dlpack(self.cp.ascontiguousarray(a))


def _make_device(kind):
    if kind == "cpu":
        return _CPU()
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            "ptq-bounds bench: --device gpu needs CuPy and a CUDA GPU, but CuPy is not installed "
            f"({exc}). Install it with `pip install cupy-cuda12x` (or the wheel matching your CUDA), "
            "or run `ptq-bounds bench --device cpu`."
        ) from None
    try:
        return _GPU()
    except Exception as exc:  # CuPy present but no usable GPU/driver
        raise SystemExit(
            f"ptq-bounds bench: --device gpu: CuPy cannot use a GPU here ({type(exc).__name__}: {exc}). "
            "Run on a machine with a CUDA GPU, or use --device cpu."
        ) from None


# -- environment ---------------------------------------------------------------------------------------


def _cpu_model():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git():
    try:
        c = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True, timeout=10)
        if c.returncode != 0:
            return {"commit": None}
        return {"commit": c.stdout.strip(), "dirty": bool(d.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None}


def _versions(dev):
    import array_api_compat
    import scipy

    v = {"python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
         "array_api_compat": array_api_compat.__version__}
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        v["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # pragma: no cover - old NumPy
        pass
    if dev.kind == "gpu":
        v["cupy"] = dev.cp.__version__
    try:
        from importlib.metadata import version

        v["provable_ptq"] = version("provable-ptq")
    except Exception:  # pragma: no cover
        pass
    return v


def _env():
    keys = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUPY_TF32", "CUDA_VISIBLE_DEVICES")
    return {k: os.environ[k] for k in keys if k in os.environ}


def _load():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


# -- measurements --------------------------------------------------------------------------------------


def _parse_shapes(text):
    out = []
    for tok in text.split(","):
        tok = tok.strip().lower().replace("×", "x")
        if not tok:
            continue
        try:
            n, N = (int(v) for v in tok.split("x"))
        except ValueError:
            raise ValueError(f"shape {tok!r} is not n x N (e.g. 4096x4096)") from None
        if n < 1 or N < 1:
            raise ValueError(f"shape {tok!r} must be positive")
        out.append((n, N))
    if not out:
        raise ValueError("no shapes given")
    return out


def _group_for(N):
    for g in (128, 64, 32, 16, 8, 4, 2, 1):
        if N % g == 0:
            return g
    return 1  # pragma: no cover


def _case_spec(case, N):
    from algorithms import Grid

    if case == "deterministic":
        return Grid.gptq(4), "natural", "nearest"
    if case == "stochastic":
        return Grid.gptq(4), "natural", "stochastic"
    if case == "act_order+g128":
        return Grid.gptq(4, group_size=_group_for(N)), "decreasing", "nearest"
    raise ValueError(f"unknown case {case!r}; choose from {', '.join(CASES)}")


def _timeit(dev, fn, repeats, warmup):
    """Wall-clock seconds of ``repeats`` runs, and the process CPU seconds of each (all threads;
    on a shared machine, single-threaded CPU seconds are the steadier figure)."""
    for _ in range(warmup):
        fn()
        dev.sync()
    ts, cs = [], []
    for _ in range(repeats):
        dev.sync()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        dev.sync()
        ts.append(time.perf_counter() - t0)
        cs.append(time.process_time() - c0)
    return ts, cs


def _entry(ts, cs):
    return {"median_s": _median(ts), "times_s": ts, "cpu_median_s": _median(cs), "cpu_times_s": cs}


def _layer(dev, n, N, m, dtype, seed, reference=False):
    """W (n × N) and the damped Hessian with GPTQ's percdamp = 0.01 (untimed); with ``reference``,
    also ``(W, (2/m)·XᵀX)`` as torch tensors of the same data for the reference loop (or the reason
    it cannot run, a string)."""
    from algorithms.cholesky import prepare_hessian

    rng = np.random.default_rng(seed)
    W = dev.randn(rng, (n, N), dtype) * dtype(0.02)
    X = dev.randn(rng, (m, N), dtype)
    H, lam, _, diagH = prepare_hessian(dev.xp, X, lam=None, percdamp=0.01, dead="zero", dtype=W.dtype)
    ref = None
    if reference:
        from . import bench_reference

        ref = bench_reference.why_unavailable()
        if ref is None:
            try:
                ref = (dev.to_torch(W), bench_reference.hessian(dev.to_torch(X)))
            except Exception as exc:  # noqa: BLE001 - e.g. a PyTorch without CUDA next to CuPy
                ref = f"PyTorch cannot take the {dev.kind} arrays ({type(exc).__name__}: {exc})"
    del X
    return W, H, lam, diagH, ref


#: the reference GPTQ options of each bench case (GPTQ has no stochastic rounding)
REFERENCE_CASES = {"deterministic": dict(actorder=False, group=False),
                   "act_order+g128": dict(actorder=True, group=True)}


def _reference(ref, case, block_size):
    from .bench_reference import fasterquant

    W, H = ref
    spec = REFERENCE_CASES[case]
    return fasterquant(W, H, bits=4, sym=True, percdamp=0.01, blocksize=block_size,
                       groupsize=_group_for(W.shape[1]) if spec["group"] else -1, actorder=spec["actorder"])


def _rng(opts, seed):
    from algorithms import SplitMix64

    return SplitMix64(seed) if opts.stream == "splitmix" else np.random.default_rng(seed)


def _optq_from_hessian(dev, W, H, lam, diagH, case, rng_seed, opts):
    from algorithms import loop
    from algorithms.ordering import resolve_order

    grid, order, rounding = _case_spec(case, W.shape[1])
    rng = _rng(opts, rng_seed)
    xp = dev.xp
    perm = resolve_order(xp, order, diagH, W.shape[1], rng=rng, device=getattr(W, "device", None))
    F = loop.factor(xp, loop.permute(xp, H, perm), lam, method="blocked")
    cols = loop.run_columns(xp, W, F, perm, grid, rounding=rounding, rng=rng, block_size=opts.block_size,
                            W_fit=W, W_static=W, kernel=opts.kernel)
    return loop.unpermute(xp, cols, perm)


def _median(ts):
    return float(statistics.median(ts)) if ts else None


@dataclass(frozen=True)
class Options:
    """What one bench run measures (from the command line, validated)."""

    shapes: list
    cases: list
    ref_cases: list
    repeats: int
    warmup: int
    dtype: type
    samples: int | None
    block_size: int
    kernel: str
    stream: str
    mc_n: int
    mc_trials: int
    mc_batch: int
    floor: bool
    memory: bool
    seed: int
    claims: bool = False


def options(args, dev_kind: str) -> Options:
    """The run's :class:`Options`; ``ValueError`` naming the option on bad input."""
    try:
        shapes = _parse_shapes(args.shapes or ",".join(QUICK_SHAPES if args.quick else SHAPES))
    except ValueError as exc:
        raise ValueError(f"--shapes: {exc}") from None
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            raise ValueError(f"--cases: unknown case {c!r}; choose from {', '.join(CASES)}")
    for name in ("repeats", "warmup", "samples", "mc_n", "mc_trials", "mc_batch"):
        v = getattr(args, name)
        lo = 0 if name in ("warmup", "mc_trials") else 1
        if v is not None and v < lo:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ {lo}, got {v}")
    if args.block_size < 1:
        raise ValueError(f"--block-size must be ≥ 1, got {args.block_size}")
    gpu = dev_kind == "gpu"
    return Options(
        shapes=shapes, cases=cases,
        ref_cases=[] if args.no_reference else [c for c in cases if c in REFERENCE_CASES],
        repeats=args.repeats or (5 if gpu else 3), warmup=args.warmup if args.warmup is not None else (1 if gpu else 0),
        dtype=np.float32 if args.dtype == "float32" else np.float64, samples=args.samples,
        block_size=args.block_size, kernel=args.kernel,
        stream=args.stream or ("splitmix" if gpu else "generator"),
        mc_n=args.mc_n or (512 if args.quick else 4096),
        mc_trials=args.mc_trials if args.mc_trials is not None else (256 if args.quick else (65536 if gpu else 2048)),
        mc_batch=args.mc_batch or (16384 if gpu else 2048),
        floor=not args.no_floor, memory=not args.no_memory, seed=args.seed, claims=bool(getattr(args, "claims", False)),
    )


def run(args) -> int:
    """``ptq-bounds bench``: measure, print, store (the record is rewritten after every shape)."""
    try:  # bad input: exit 2, one line naming the argument
        opts = options(args, args.device)
        dev = _make_device(args.device)
    except (ValueError, SystemExit) as exc:  # SystemExit: --device gpu without CuPy or a usable GPU
        msg = str(exc)
        print(msg if msg.startswith("ptq-bounds") else f"ptq-bounds bench: {msg}", file=sys.stderr)
        return 2

    from tqdm.auto import tqdm

    per_shape = int(opts.floor) + len(opts.cases) + len(opts.ref_cases) + int(opts.memory) + int(opts.claims)
    bar = tqdm(total=len(opts.shapes) * per_shape + (1 if opts.mc_trials else 0), desc="bench",
               disable=args.no_progress, file=sys.stderr)
    record = _header(dev, opts, args.dtype)
    path = None
    if not args.no_save:
        path = Path(args.json) if args.json else Path(args.out) / (
            f"bench_{dev.kind}_{record['timestamp_utc'].replace(':', '').replace('-', '')}.json")
    lines = []
    for (n, N) in opts.shapes:
        res = measure_shape(dev, opts, n, N, bar)
        record["results"].append(res)
        if path is not None:
            _save(path, record)
        lines.append(_format_shape(res))
    if opts.mc_trials:
        bar.set_postfix_str(f"Monte Carlo N={opts.mc_n}")
        record["monte_carlo"] = _monte_carlo(dev, opts)
        bar.update(1)
    bar.close()
    record["host"]["load_avg_after"] = _load()
    _print_summary(record, dev, opts, args.dtype, lines)
    if path is not None:
        record["complete"] = True
        _save(path, record)
        print(f"results written to {path}")
    return 0


def _header(dev, opts: Options, dtype_name: str) -> dict:
    """The record before any measurement: machine, versions, configuration, definitions."""
    record = {
        "schema": "ptq-bounds-bench/1",
        "timestamp_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git": _git(),
        "device": dev.info(),
        "host": {"cpu_model": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                 "load_avg_before": _load()},
        "versions": _versions(dev),
        "env": _env(),
        "config": {"dtype": dtype_name, "repeats": opts.repeats, "warmup": opts.warmup, "block_size": opts.block_size,
                   "samples": opts.samples or "N", "bits": 4, "percdamp": 0.01, "seed": opts.seed,
                   "cases": opts.cases, "statistic": "median seconds", "kernel": opts.kernel,
                   "stochastic_stream": opts.stream},
        "definitions": DEFINITIONS,
        "targets": TARGETS,
        "results": [],
        "complete": False,
    }
    if dev.kind == "gpu":
        from algorithms import fused_gpu

        record["config"]["fused_rows_per_block"] = fused_gpu.ROWS
    if opts.ref_cases:
        from . import bench_reference

        why = bench_reference.why_unavailable()
        if why is None:
            import torch

            record["versions"]["torch"] = torch.__version__
            record["config"]["torch_threads"] = torch.get_num_threads()
        record["config"]["reference"] = why or "verify.bench_reference (PyTorch)"
    return record


def measure_shape(dev, opts: Options, n: int, N: int, bar) -> dict:
    """Floor, OPTQ cases, reference GPTQ and peak memory at one shape ``n × N``."""
    m = opts.samples or N
    W, H, lam, diagH, ref = _layer(dev, n, N, m, opts.dtype, opts.seed, reference=bool(opts.ref_cases))
    res = {"shape": [n, N], "samples": m, "lam": lam}

    def timed(label, fn):
        bar.set_postfix_str(f"{n}x{N} {label}")
        return _entry(*_timeit(dev, fn, opts.repeats, opts.warmup))

    def vs_floor(entry):
        if "floor" in res:
            entry["ratio_to_floor"] = entry["median_s"] / res["floor"]["total_s"]
            entry["cpu_ratio_to_floor"] = entry["cpu_median_s"] / res["floor"]["cpu_total_s"]
        return entry

    if opts.floor:
        floor = {name: timed("floor", fn) for name, fn in dev.floor_ops(H, W)}
        floor["total_s"] = sum(v["median_s"] for v in floor.values())
        floor["cpu_total_s"] = sum(v["cpu_median_s"] for k, v in floor.items() if k != "total_s")
        res["floor"] = floor
        bar.update(1)
    res["optq"] = {}
    for case in opts.cases:
        calls = iter(range(1, 1 << 62))  # a fresh seed per timed call
        entry = timed(case, lambda: _optq_from_hessian(dev, W, H, lam, diagH, case, opts.seed + next(calls), opts))
        if case == "act_order+g128":
            entry["group_size"] = _group_for(N)
        res["optq"][case] = vs_floor(entry)
        bar.update(1)
    if opts.ref_cases:
        res["reference"] = {"skipped": ref} if isinstance(ref, str) else {}
        for case in opts.ref_cases:
            if not isinstance(ref, str):
                entry = vs_floor(timed(f"reference {case}", lambda: _reference(ref, case, opts.block_size)))
                res["reference"][case] = entry
                if case in res["optq"]:
                    res["optq"][case]["ratio_to_reference"] = res["optq"][case]["median_s"] / entry["median_s"]
            bar.update(1)
    if opts.claims:
        bar.set_postfix_str(f"{n}x{N} claims")
        res["claims"] = _claims(n, N, m, opts.seed)
        bar.update(1)
    if opts.memory:
        bar.set_postfix_str(f"{n}x{N} memory")
        peak, _ = dev.memory_peak(lambda: _optq_from_hessian(dev, W, H, lam, diagH, "deterministic", opts.seed, opts))
        inputs = dev.nbytes(W) + dev.nbytes(H)
        res["memory"] = {"peak_bytes_during_call": int(peak), "bytes_W_plus_H": inputs,
                         "ratio_excl_inputs": peak / inputs, "ratio_incl_inputs": (peak + inputs) / inputs}
        bar.update(1)
    return res


def _print_summary(record, dev, opts: Options, dtype_name: str, lines) -> None:
    print(f"ptq-bounds bench on {record['device']['name']} ({dev.kind}, {os.cpu_count()} cores), {dtype_name}, "
          f"median of {opts.repeats}; load average {record['host']['load_avg_before']} -> {record['host']['load_avg_after']}")
    print("\n".join(lines))
    if opts.mc_trials:
        mc = record["monte_carlo"]
        marg = mc["marginal_trials_per_s"]
        print(f"Monte Carlo N={mc['N']}: {mc['trials']} trials in {mc['median_s']:.3f} s = "
              f"{mc['trials_per_s']:.4g} trials/s (batches of {mc['batch_rows']}; one call's setup "
              f"{mc['setup_s']:.3f} s, beyond it {marg if marg is None else f'{marg:.4g}'} trials/s)")


def _claims(n, N, m, seed):
    """check-layer's cost on one OPTQ run: ``quantize_s`` (``optq`` from ``X``, float64, GPTQ grid 4 bits,
    percdamp 0.01), ``check_s`` (``theory.check_all`` on it: every claim and hypothesis), their ratio,
    and the status of the explicit claims (evaluated by one QR above N = 256)."""
    import algorithms as A
    import theory

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, N)) * rng.lognormal(0.0, 1.0, N)
    W = 0.02 * rng.standard_normal((n, N))
    t0 = time.perf_counter()
    r = A.optq(W, X, grid=A.Grid.gptq(4), percdamp=0.01)
    tq = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = theory.check_all(theory.Run.from_result(r, X), alpha=1e-4, eta=0.05)
    tc = time.perf_counter() - t0
    return {"quantize_s": tq, "check_s": tc, "ratio": tc / tq, "samples": m, "dtype": "float64",
            "T1.explicit": v["T1.explicit"].status, "T1.c_chain": v["T1.c_chain"].status,
            "violated": sorted(k for k, x in v.items() if x.status == "violated")}


def _save(path, record):
    """Atomic write (the file is rewritten after every shape, so a run cut short keeps its data)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")


def _format_shape(res):
    n, N = res["shape"]
    parts = [f"{n}x{N}:"]
    if "floor" in res:
        f = res["floor"]
        parts.append(f"floor {f['total_s']:.4f} s (chol {f['cholesky']['median_s']:.4f}, inv "
                     f"{f['cholesky_inverse']['median_s']:.4f}, upper {f['cholesky_upper']['median_s']:.4f}, "
                     f"W@U {f['W@U']['median_s']:.4f})")
    for case, e in res["optq"].items():
        r = f" = {e['ratio_to_floor']:.2f}x floor" if "ratio_to_floor" in e else ""
        rr = f", {e['ratio_to_reference']:.2f}x reference" if "ratio_to_reference" in e else ""
        parts.append(f"\n    optq      {case:15s} {e['median_s']:.4f} s{r}{rr}"
                     f"   (process CPU {e['cpu_median_s']:.4f} s)")
    ref = res.get("reference") or {}
    if "skipped" in ref:
        parts.append(f"\n    reference skipped: {ref['skipped']}")
    for case, e in ref.items():
        if case == "skipped":
            continue
        r = f" = {e['ratio_to_floor']:.2f}x floor" if "ratio_to_floor" in e else ""
        parts.append(f"\n    reference {case:15s} {e['median_s']:.4f} s{r}   (process CPU {e['cpu_median_s']:.4f} s)")
    if "memory" in res:
        mem = res["memory"]
        parts.append(f"\n    memory peak {mem['peak_bytes_during_call'] / 2 ** 20:.0f} MiB during the call; "
                     f"(peak + W + H)/(W + H) = {mem['ratio_incl_inputs']:.2f}")
    if "claims" in res:
        c = res["claims"]
        parts.append(f"\n    claims (check-layer, m = {c['samples']}): check {c['check_s']:.2f} s vs quantize "
                     f"{c['quantize_s']:.2f} s = {c['ratio']:.1f}x; T1.explicit {c['T1.explicit']}")
    return " ".join(parts)


def _monte_carlo(dev, opts: Options):
    from algorithms import Grid
    from algorithms.trials import optq_trials

    N, trials = opts.mc_n, opts.mc_trials
    rng = np.random.default_rng(opts.seed + 1)
    X = dev.randn(rng, (N, N), opts.dtype)
    w = dev.randn(rng, (N,), opts.dtype) * opts.dtype(0.02)
    calls = iter(range(1, 1 << 62))

    def call(R):
        return lambda: optq_trials(w, X, grid=Grid.gptq(4), trials=R, rng=_rng(opts, opts.seed + next(calls)),
                                   percdamp=0.01, batch_rows=opts.mc_batch, block_size=opts.block_size,
                                   kernel=opts.kernel)

    reps = max(1, min(opts.repeats, 3))
    e = _entry(*_timeit(dev, call(trials), reps, min(opts.warmup, 1)))
    setup = _entry(*_timeit(dev, call(1), reps, 0))  # Hessian, factorization and one trial
    marginal = (trials - 1) / max(e["median_s"] - setup["median_s"], 1e-12) if trials > 1 else None
    return {"N": N, "samples": N, "trials": trials, "batch_rows": opts.mc_batch, **e,
            "trials_per_s": trials / e["median_s"], "setup_s": setup["median_s"],
            "marginal_trials_per_s": marginal, "grid": "gptq 4-bit per row, stochastic"}
