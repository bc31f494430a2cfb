"""``ptq-bounds check-layer W.npy X.npy [--x-tilde Xt.npy]``: every applicable claim on your own layer.

``W`` is ``n × N`` (PyTorch ``Linear.weight`` layout), ``X`` is ``m × N`` (rows are calibration
samples). Files: ``.npy``, ``.npz`` (one array, or ``file.npz:key``) or ``.safetensors``
(``file.safetensors:key``; one tensor needs no key). The layer is quantized with OPTQ (and, with
``--x-tilde``, Qronos in both variants and OPTQ on ``X̃``); every claim is checked on each run.
Stochastic rounding repeats the layer ``--trials`` times (the rows are the trials). Text report,
optional JSON. Exit codes (:func:`theory.verdicts.exit_code`): 0 every checked claim holds; 1 a claim
is violated; 2 bad input; 3 no claim was in scope on this layer, or a statistical check lacked the
power it needs (insufficient evidence).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np

from ..cli import check_writable_file, nonneg_int, open_unit_interval, positive_int


def add_arguments(p):
    p.add_argument("W", nargs="?", help="weights n × N (.npy, .npz[:key], .safetensors[:key])")
    p.add_argument("X", nargs="?", help="calibration inputs m × N (with --gram: a Gram file of verify.stream)")
    p.add_argument("--gram", action="store_true",
                   help="X is a file of accumulated Gram matrices (verify.stream.Grams.save: H = XᵀX, m, and "
                        "with mismatch H_tilde, G): calibration data that never was in memory at once; the ℓ∞ "
                        "claims (T2, T5) need the rows and are not exercised")
    p.add_argument("--x-tilde", dest="x_tilde", default=None, help="mismatched inputs m × N (enables Qronos)")
    p.add_argument("--bits", type=int, default=4, help="bits of the GPTQ grid (default 4)")
    p.add_argument("--asym", action="store_true", help="asymmetric grid (default symmetric)")
    p.add_argument("--group-size", type=int, default=None, help="one scale per group of input features")
    p.add_argument("--static-groups", action="store_true")
    p.add_argument("--delta", type=float, default=None,
                   help="use the symmetric grid δ·{−K..K} with this δ instead of a GPTQ grid (with --K)")
    p.add_argument("--K", type=int, default=None, help="with --delta: K (default: infinite grid δZ)")
    damp = p.add_mutually_exclusive_group()
    damp.add_argument("--lam", type=float, default=None, help="absolute damping λ (H = XᵀX + λI)")
    damp.add_argument("--percdamp", type=float, default=None, help="GPTQ's relative damping (default 0.01)")
    p.add_argument("--order", default="natural", choices=("natural", "decreasing", "increasing"))
    p.add_argument("--rounding", default="nearest", choices=("nearest", "stochastic"))
    p.add_argument("--trials", type=positive_int, default=1, help="stochastic rounding: repetitions of the layer")
    p.add_argument("--eta", type=open_unit_interval, default=0.05,
                   help="failure probability of the high-probability forms, in (0, 1) (default 0.05)")
    p.add_argument("--alpha", type=open_unit_interval, default=1e-3,
                   help="false-alarm rate of the statistical tests, in (0, 1) (default 1e-3)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the stochastic rounding (an integer ≥ 0)")
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="BLAS threads (default: $PTQ_BLAS_THREADS, else this process's share of the CPUs among the "
                        "ptq-bounds processes running, re-evaluated at every run; see verify/threads.py)")
    p.add_argument("--batch", default=None, metavar="LIST",
                   help="check several layers in one process instead of W X: a text file with one layer a line, "
                        "'W X [X_TILDE]' (same options for all; '#' starts a comment); each layer runs in a worker "
                        "with one BLAS thread")
    p.add_argument("--jobs", type=positive_int, default=None,
                   help="--batch: workers (default: the CPUs this process may use)")
    q = p.add_argument_group("checking a Q made elsewhere (verify.packed)")
    q.add_argument("--q", default=None, metavar="SPEC",
                   help="check this quantized weight instead of quantizing: a dense Q n × N (.npy, .npz[:key], "
                        ".safetensors[:key]; float64/32/16, bfloat16) on the grid of --bits/--group-size/--asym or "
                        "--delta/--K or --scales/--zeros; or a GPTQ (qweight/qzeros/scales/g_idx) or "
                        "compressed-tensors (weight_packed/weight_scale/...) layer: FILE[:PREFIX]")
    q.add_argument("--q-format", default="auto", choices=("auto", "dense", "gptq", "compressed-tensors"),
                   help="format of --q (default: by the tensors' names)")
    q.add_argument("--q-kind", default="optq", choices=("optq", "qronos-projection", "qronos-original"),
                   help="the algorithm Q claims to be the output of (default optq; qronos-* need --x-tilde)")
    q.add_argument("--precision", default=None, choices=("float64", "float32", "float16", "bfloat16"),
                   help="working precision Q was computed in (default: the dtype Q, or its scales, were stored in)")
    q.add_argument("--scales", default=None, help="dense Q: per-row (n), per-group (n × G) or per-entry steps")
    q.add_argument("--zeros", default=None, help="dense Q with --scales: zero points (codes 0..2^bits−1)")
    q.add_argument("--g-idx", dest="g_idx", default=None, help="dense Q with per-group --scales: group of each feature")
    q.add_argument("--zero-convention", default="auto", choices=("auto", "gptq-v1", "gptq-v2"),
                   help="GPTQ qzeros: stored as zero − 1 (gptq-v1, classic) or as is (gptq-v2); default: detect")


def load_array(spec: str, name: str) -> np.ndarray:
    """An array from ``file.npy``, ``file.npz[:key]`` or ``file.safetensors[:key]``."""
    path, key = spec, None
    for ext in (".npz", ".safetensors"):
        if ext + ":" in spec:
            path, key = spec.split(ext + ":", 1)
            path += ext
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name}: no such file {path}")
    if p.is_dir():
        raise ValueError(f"{name}: {path} is a directory; pass an array file (.npy, .npz or .safetensors)")
    try:
        return _check_array(_read(p, path, key, name), name, spec)
    except (ValueError, TypeError, ImportError):
        raise
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path} ({exc.strerror or exc})") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file: zipfile, safetensors and numpy errors
        raise ValueError(f"{name}: {path} is not a readable {p.suffix} file ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:160]}); write it again with {_WRITERS[p.suffix]}") from None


_WRITERS = {".npy": "numpy.save", ".npz": "numpy.savez", ".safetensors": "safetensors.numpy.save_file"}


def _read(p: Path, path: str, key, name: str):
    if p.suffix == ".npy":
        with open(p, "rb") as fh:
            if fh.read(6) != b"\x93NUMPY":
                raise ValueError(f"{name}: {path} is not an .npy file (no NumPy header); save a float array "
                                 "with numpy.save(path, array)")
        try:
            return np.load(p, allow_pickle=False)
        except ValueError as exc:  # not an .npy file, or an object array (pickled)
            raise ValueError(f"{name}: {path} is not a readable .npy array ({' '.join(str(exc).split())[:160]}); "
                             "save a float array with numpy.save(path, array)") from None
    if p.suffix == ".npz":
        with np.load(p, allow_pickle=False) as z:
            keys = list(z.files)
            if key is None:
                if len(keys) != 1:
                    raise ValueError(f"{name}: {path} holds {keys}; say which with {path}:KEY")
                key = keys[0]
            if key not in keys:
                raise ValueError(f"{name}: {path} has no array {key!r} (it has {keys})")
            try:
                return z[key]
            except ValueError as exc:
                raise ValueError(f"{name}: {path}:{key} is not a readable array ({exc}); save a float array "
                                 "with numpy.savez") from None
    if p.suffix == ".safetensors":
        try:
            from safetensors.numpy import load_file
        except ImportError as exc:
            raise ImportError("reading .safetensors needs the safetensors package (the llm extra)") from exc
        d = load_file(str(p))
        if key is None:
            if len(d) != 1:
                raise ValueError(f"{name}: {path} holds {sorted(d)}; say which with {path}:KEY")
            key = next(iter(d))
        if key not in d:
            raise ValueError(f"{name}: {path} has no tensor {key!r} (it has {sorted(d)})")
        return d[key]
    raise ValueError(f"{name}: unsupported file type {p.suffix!r}; use .npy, .npz or .safetensors")


def _check_array(a, name: str, spec: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {a.shape} from {spec}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point numbers, got dtype {a.dtype}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf ({int(np.sum(~np.isfinite(a)))} entries)")
    return a


def run(args) -> int:
    from theory.verdicts import EXIT

    from ..threads import fixed_threads, shared_blas

    try:
        threads = args.threads if getattr(args, "threads", None) else fixed_threads()
    except ValueError as exc:
        print(f"ptq-bounds check-layer: {exc}", file=sys.stderr)
        return EXIT["bad input"]
    if getattr(args, "batch", None):
        if args.W or args.X:
            print("ptq-bounds check-layer: give either W X or --batch LIST, not both", file=sys.stderr)
            return EXIT["bad input"]
        return _run_batch(args)
    if not (args.W and args.X):
        print("ptq-bounds check-layer: W and X are required (or --batch LIST)", file=sys.stderr)
        return EXIT["bad input"]
    with shared_blas(threads):  # None: this process's share of the CPUs, re-evaluated at every run
        return _run(args)


def read_batch(path: str) -> list[tuple]:
    """The layers of a ``--batch`` file: ``(W, X, X_tilde or None)`` per non-empty line."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ValueError(f"--batch: cannot read {path} ({exc.strerror or exc})") from None
    out = []
    for i, line in enumerate(lines, 1):
        f = line.split("#", 1)[0].split()
        if not f:
            continue
        if len(f) not in (2, 3):
            raise ValueError(f"--batch: {path}:{i}: expected 'W X [X_TILDE]', got {line.strip()!r}")
        out.append((f[0], f[1], f[2] if len(f) == 3 else None))
    if not out:
        raise ValueError(f"--batch: {path} lists no layer; write one 'W X [X_TILDE]' a line")
    return out


def _batch_one(spec, args):
    """One layer of a batch, in a worker (one BLAS thread): its exit code, text and JSON."""
    import contextlib
    import io

    a = copy.copy(args)
    a.W, a.X, a.x_tilde = spec
    a.batch, a.json, a.no_progress = None, None, True
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        collect = []
        code = _run(a, collect)
    return code, out.getvalue() + err.getvalue(), collect[0] if collect else None


def _run_batch(args) -> int:
    """``--batch``: every listed layer in a pool of ``--jobs`` one-thread workers; exit code of them all."""
    from concurrent.futures import ProcessPoolExecutor

    from theory.verdicts import EXIT

    from ..executor import _one_blas_thread
    from ..threads import available_cpus

    try:
        specs = read_batch(args.batch)
        if args.json:
            check_writable_file(args.json, "--json")
    except ValueError as exc:
        print(f"ptq-bounds check-layer: {exc}", file=sys.stderr)
        return EXIT["bad input"]
    jobs = min(args.jobs or available_cpus(), len(specs))
    with ProcessPoolExecutor(max_workers=jobs, initializer=_one_blas_thread) as ex:
        results = list(ex.map(_batch_one, specs, [args] * len(specs)))
    codes, docs = [], []
    for spec, (code, text, doc) in zip(specs, results):
        print(f"\n##### {' '.join(s for s in spec if s)}: exit {code}\n{text.rstrip()}")
        codes.append(code)
        docs.append({"W": spec[0], "X": spec[1], "X_tilde": spec[2], "exit_code": code, **(doc or {})})
    code = _batch_code(codes)
    print(f"\n{len(specs)} layers, {jobs} workers: exit {code}")
    if args.json:
        Path(args.json).write_text(json.dumps({"layers": docs, "exit_code": code}, indent=1, sort_keys=True,
                                              default=str))
    return code


def _batch_code(codes) -> int:
    """One exit code for several layers: violated (1) over internal error (4) over bad input (2) over
    not exercised (3) over 0."""
    for c in (1, 4, 2, 3):
        if c in codes:
            return c
    return 0


def _run(args, collect=None) -> int:
    from theory.verdicts import EXIT

    from ..check import check_given, check_layer

    try:
        if args.json:  # before any work: a long run must not fail at its very end
            check_writable_file(args.json, "--json")
        dt = np.dtype(args.dtype)
        W = load_array(args.W, "W").astype(dt)
        if getattr(args, "gram", False):
            return _run_gram(args, W, collect)
        X = load_array(args.X, "X").astype(dt)
        Xt = load_array(args.x_tilde, "X_tilde").astype(dt) if args.x_tilde else None
        if args.trials < 1:
            raise ValueError("--trials must be ≥ 1")
        grid = _grid(args)
        if getattr(args, "q", None):  # a Q made elsewhere: read it (and its grid) instead of quantizing
            from .. import packed

            if args.rounding == "stochastic" and args.trials > 1:
                raise ValueError("--trials repeats the package's own quantization; with --q give one Q (repeat its "
                                 "rows for trials)")
            given = packed.read_q(args.q, W=W, fmt=args.q_format, grid=grid, scales=args.scales, zeros=args.zeros,
                                  g_idx=args.g_idx, bits=None if args.bits == 4 else args.bits,
                                  zero_convention=args.zero_convention)
            report = check_given(given, W, X, Xt, kind=args.q_kind, lam=args.lam, percdamp=args.percdamp,
                                 order=args.order, rounding=args.rounding, precision=args.precision,
                                 static_groups=args.static_groups, alpha=args.alpha, eta=args.eta, source=args.q)
        else:
            report = check_layer(W, X, Xt, grid=grid, lam=args.lam, percdamp=args.percdamp, order=args.order,
                                 rounding=args.rounding, trials=args.trials, seed=args.seed, alpha=args.alpha,
                                 eta=args.eta, progress=not args.no_progress)
    except (OSError, ValueError, TypeError, ImportError) as exc:
        print(f"ptq-bounds check-layer: {exc}", file=sys.stderr)
        return EXIT["bad input"]
    return _report(args, report, collect)


def _grid(args):
    import algorithms as A

    if args.delta is not None:
        return A.Grid.symmetric(args.delta, args.K)
    return A.Grid.gptq(args.bits, sym=not args.asym, group_size=args.group_size, static_groups=args.static_groups)


def _run_gram(args, W, collect=None) -> int:
    """``--gram``: the claims the Gram matrices decide (verify.stream.check_streamed)."""
    from theory.verdicts import EXIT

    from ..stream import Grams, check_streamed

    try:
        if args.x_tilde or getattr(args, "q", None):
            raise ValueError("--gram: the Gram file holds X̃'s products itself (H_tilde, G) and --q is not "
                             "supported with it; leave --x-tilde and --q out")
        report = check_streamed(W, Grams.load(args.X), grid=_grid(args), lam=args.lam, percdamp=args.percdamp,
                                order=args.order, rounding=args.rounding, trials=args.trials, seed=args.seed,
                                alpha=args.alpha, eta=args.eta, progress=not args.no_progress)
    except (OSError, ValueError, TypeError) as exc:
        print(f"ptq-bounds check-layer: {exc}", file=sys.stderr)
        return EXIT["bad input"]
    return _report(args, report, collect)


def _report(args, report, collect=None) -> int:
    """Prints the report, writes its JSON, returns the exit code."""
    from theory.verdicts import EXIT, INSUFFICIENT

    print(report.format())
    code = report.exit_code
    if collect is not None:
        collect.append(report.to_dict())
    if args.json:
        from ..campaign import provenance

        doc = {"W": args.W, "X": args.X, "X_tilde": args.x_tilde, **report.to_dict(),
               # what produced the report: the same record verify stores with a campaign, plus the seed
               "provenance": provenance(seed=args.seed)}
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(doc, indent=1, sort_keys=True, default=str))
        except OSError as exc:
            print(f"ptq-bounds check-layer: --json: cannot write {args.json} ({exc.strerror or exc}); "
                  "give a path in an existing, writable directory", file=sys.stderr)
            return EXIT["bad input"]
    if code == EXIT["not exercised"]:
        print("ptq-bounds check-layer: not exercised: "
              + ("insufficient evidence (raise --trials)" if INSUFFICIENT in report.statuses else "no claim in scope"),
              file=sys.stderr)
    return code
