"""Calibration data that never has to be in memory at once: accumulated Gram matrices.

OPTQ and Qronos see their calibration data only through inner products: ``H = XᵀX`` (OPTQ),
``H̃ = X̃ᵀX̃`` and ``G = X̃ᵀX`` (Qronos). So do the ℓ2 claims (I1, T1, P1, T3, T4, O1, L1): ``c_t``,
``M``, ``B``, ``‖X(w−q)‖₂``, ``ρ_λ`` and the singular values of ``X_{>t}`` are functions of the
Gram matrix of ``[X, X̃]``. This module

1. accumulates that Gram matrix over row chunks (:class:`GramAccumulator`: float64, any number
   of rows, memory ``(2N)²`` numbers; chunks may be NumPy arrays, or come from Dask arrays);
2. turns it into a *square root* (:func:`square_root`): matrices ``X'`` and ``X̃'`` with at most
   ``2N`` rows such that ``X'ᵀX' = XᵀX``, ``X̃'ᵀX̃' = X̃ᵀX̃`` and ``X̃'ᵀX' = X̃ᵀX`` (from an
   eigendecomposition of the joint Gram matrix; dead features stay exactly zero);
3. quantizes and checks on ``(X', X̃')`` with the same algorithms and the same checker as in
   memory (:func:`check_streamed`; ``samples=m`` tells the algorithms how many rows ``X'`` stands
   for, which GPTQ's dead-feature value ``m/2`` needs).

What a square root cannot give: the individual sample rows. The ℓ∞ claims (``T2.*``, ``T5.*``,
:data:`ROW_CLAIMS`) are about ``max_i |(X(w−q))_i|`` over the samples and the per-sample variances
``σ_i²``. Given the rows again (``check_streamed(..., rows=...)``: a callable that yields the same
chunks once more), they are judged from a *second pass* over the chunks after quantizing
(:mod:`theory.samples`: the maxima of the products with ``W``, ``Q``, ``ŵ``, and ``R``'s rows
reduced per step class; memory independent of ``m``, made only for runs in which such a claim is in
scope, i.e. stochastic rounding). Without the rows, :func:`check_streamed` reports them as not
exercised, with that reason, instead of judging them on the rows of ``X'``. ``m`` enters no other
claim (tests check that every other claim gives the same numbers on ``X`` and on its square root,
and that the second pass gives the in-memory numbers of the ℓ∞ claims).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GramAccumulator", "Grams", "square_root", "check_streamed", "ROW_CLAIMS", "chunks_of", "chunk_products",
           "compare_cell", "agreement", "memory_benchmark"]

#: claims about individual sample rows (ℓ∞ over the samples): not judged from Gram matrices
ROW_CLAIMS = ("T2.", "T5.")


def is_row_claim(cid: str) -> bool:
    return cid.startswith(ROW_CLAIMS)


@dataclass(frozen=True)
class Grams:
    """The accumulated inner products of ``m`` calibration rows (float64): ``H = XᵀX`` and, with
    mismatched inputs, ``H_tilde = X̃ᵀX̃`` and ``G = X̃ᵀX``."""

    H: np.ndarray
    m: int
    H_tilde: np.ndarray | None = None
    G: np.ndarray | None = None

    @property
    def N(self) -> int:
        return int(self.H.shape[0])

    def save(self, path) -> None:
        """Writes the Gram matrices to ``path`` (``.npz``: ``H``, ``m`` and, with mismatch,
        ``H_tilde``, ``G``), the file ``ptq-bounds check-layer W GRAMS.npz --gram`` reads."""
        arrays = {"H": self.H, "m": np.asarray(self.m)}
        if self.H_tilde is not None:
            arrays.update(H_tilde=self.H_tilde, G=self.G)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path) -> "Grams":
        """Reads a file written by :meth:`save`; ``ValueError`` naming what is wrong."""
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"H", "m"} <= keys or ("H_tilde" in keys) != ("G" in keys):
                raise ValueError(f"{path}: a Gram file holds H and m (and H_tilde with G), found {sorted(keys)}; "
                                 "write it with verify.stream.Grams.save")
            H, m = np.asarray(z["H"], dtype=np.float64), int(z["m"])
            Ht = np.asarray(z["H_tilde"], dtype=np.float64) if "H_tilde" in keys else None
            G = np.asarray(z["G"], dtype=np.float64) if "G" in keys else None
        N = H.shape[0] if H.ndim == 2 else -1
        if H.shape != (N, N) or any(A is not None and A.shape != (N, N) for A in (Ht, G)):
            raise ValueError(f"{path}: H, H_tilde and G must be N × N, got {H.shape}"
                             + ("" if Ht is None else f", {Ht.shape}, {G.shape}"))
        if m < 1 or not all(np.all(np.isfinite(A)) for A in (H, Ht, G) if A is not None):
            raise ValueError(f"{path}: m must be ≥ 1 and the matrices finite")
        return cls(H=H, m=m, H_tilde=Ht, G=G)

    def joint(self) -> np.ndarray:
        """The Gram matrix of ``[X, X̃]`` (``2N × 2N``), or ``H`` without mismatch."""
        if self.H_tilde is None:
            return self.H
        return np.block([[self.H, self.G.T], [self.G, self.H_tilde]])


def _chunk(name, A, N):
    A = np.asarray(A)
    if A.ndim != 2 or A.shape[1] != N:
        raise ValueError(f"{name} must be a chunk of rows, m_c × N = m_c × {N}, got shape {A.shape}")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} holds NaN or Inf")
    return A.astype(np.float64, copy=False)


def chunk_products(X, X_tilde, N: int, mismatch: bool) -> tuple:
    """One chunk's ``(XᵀX, X̃ᵀX̃, X̃ᵀX)`` in float64 (the last two ``None`` without mismatch): a
    module-level function, so that a Dask worker receives the chunk and ``N`` only."""
    X = _chunk("X", X, N)
    if not mismatch:
        if X_tilde is not None:
            raise ValueError("X_tilde given to an accumulator made with mismatch=False")
        return X.T @ X, None, None
    if X_tilde is None:
        raise ValueError("X_tilde: this accumulator has mismatch=True, give each chunk's X_tilde")
    Xt = _chunk("X_tilde", X_tilde, N)
    if Xt.shape != X.shape:
        raise ValueError(f"X_tilde chunk has shape {Xt.shape}, X chunk {X.shape}")
    return X.T @ X, Xt.T @ Xt, Xt.T @ X


class GramAccumulator:
    """Accumulates ``XᵀX`` (and ``X̃ᵀX̃``, ``X̃ᵀX``) over row chunks in float64.

    >>> acc = GramAccumulator(N=4096, mismatch=True)
    >>> for X_c, Xt_c in chunks:          # m_c × N each, any dtype
    ...     acc.add(X_c, Xt_c)
    >>> grams = acc.result()

    Chunks are added in order; the result depends only on the chunks, not on where they were
    computed (:meth:`add_dask` computes each chunk's products on a Dask cluster and adds them here,
    in the same order, so it gives the same bits as adding the same chunks locally).
    """

    def __init__(self, N: int, *, mismatch: bool = False):
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise ValueError(f"N must be an integer ≥ 1 (the number of features), got {N!r}")
        self.N, self.mismatch, self.m = int(N), bool(mismatch), 0
        self._H = np.zeros((self.N, self.N))
        self._Ht = np.zeros((self.N, self.N)) if mismatch else None
        self._G = np.zeros((self.N, self.N)) if mismatch else None

    def products(self, X, X_tilde=None) -> tuple:
        """The chunk's contribution ``(XᵀX, X̃ᵀX̃, X̃ᵀX)`` (the last two ``None`` without mismatch)."""
        return chunk_products(X, X_tilde, self.N, self.mismatch)

    def add_products(self, rows: int, H, Ht=None, G=None) -> None:
        self._H += H
        if self.mismatch:
            self._Ht += Ht
            self._G += G
        self.m += int(rows)

    def add(self, X, X_tilde=None) -> None:
        """Adds one chunk of rows (``X``: ``m_c × N``; ``X_tilde`` the same shape, with mismatch)."""
        self.add_products(np.shape(X)[0], *self.products(X, X_tilde))

    def add_dask(self, X, X_tilde=None, *, batch: int = 4) -> None:
        """Adds the rows of Dask arrays ``X`` (and ``X_tilde``) chunk by chunk: each row chunk's
        products are computed where Dask runs (the workers of a ``distributed`` cluster when a
        client is active; ``batch`` chunks at a time, so at most ``batch`` sets of ``N × N``
        products travel back at once), then added here in chunk order: the same bits as adding
        the same chunks locally, whichever worker computed them."""
        import dask

        if X.ndim != 2 or X.shape[1] != self.N:
            raise ValueError(f"X must be m × N = m × {self.N}, got shape {X.shape}")
        if (X_tilde is None) == self.mismatch:
            raise ValueError("X_tilde: give it exactly when the accumulator was made with mismatch=True")
        if X_tilde is not None and X_tilde.shape != X.shape:
            raise ValueError(f"X_tilde has shape {X_tilde.shape}, X {X.shape}")
        Xb = X.rechunk({1: -1}).to_delayed().ravel()
        Xtb = None if X_tilde is None else X_tilde.rechunk({0: X.chunks[0], 1: -1}).to_delayed().ravel()
        jobs = [dask.delayed(chunk_products, pure=True)(Xb[i], None if Xtb is None else Xtb[i], self.N, self.mismatch)
                for i in range(len(Xb))]
        rows = X.chunks[0]
        for s in range(0, len(jobs), batch):
            for r, prods in zip(rows[s:s + batch], dask.compute(*jobs[s:s + batch])):
                self.add_products(r, *prods)

    def result(self) -> Grams:
        if self.m == 0:
            raise ValueError("no rows were added")
        sym = lambda A: (A + A.T) / 2  # noqa: E731 - exact symmetry (each chunk's product is symmetric up to rounding)
        return Grams(H=sym(self._H), m=self.m, H_tilde=None if self._Ht is None else sym(self._Ht), G=self._G)


def chunks_of(X, X_tilde=None, rows: int = 8192):
    """Row chunks ``(X_c, X̃_c)`` of in-memory arrays (for tests and comparisons)."""
    for i in range(0, X.shape[0], rows):
        yield X[i:i + rows], (None if X_tilde is None else X_tilde[i:i + rows])


def square_root(grams: Grams, dtype=np.float64) -> tuple[np.ndarray, np.ndarray | None]:
    """``(X', X̃')`` with ``[X', X̃']ᵀ[X', X̃'] =`` the joint Gram matrix ``A`` of ``grams``, at most
    ``N`` (``2N`` with mismatch) rows. Dead features (zero diagonal) are exact zero columns, as in
    ``X``. On the live features: the Cholesky factor ``R`` (``RᵀR = A``) when ``A`` is positive
    definite, else ``diag(√w) Vᵀ`` from its eigendecomposition ``V diag(w) Vᵀ`` (eigenvalues below
    zero by rounding set to 0; rows of zero eigenvalues dropped)."""
    from scipy.linalg import LinAlgError, cholesky

    A = grams.joint()
    live = np.flatnonzero(np.diag(A) > 0)
    Al = A[np.ix_(live, live)]
    try:
        root = cholesky(Al, lower=False, overwrite_a=True, check_finite=False) if live.size else np.zeros((0, 0))
    except LinAlgError:
        Al = A[np.ix_(live, live)]  # the failed factorization may have overwritten it
        w, V = np.linalg.eigh(Al)
        pos = w > 0
        root = np.sqrt(w[pos])[:, None] * V[:, pos].T
    out = np.zeros((max(root.shape[0], 1), A.shape[0]), dtype=dtype)
    out[: root.shape[0], live] = root
    N = grams.N
    return (out[:, :N], None) if grams.H_tilde is None else (out[:, :N], out[:, N:])


def check_streamed(W, grams: Grams, *, grid, lam=None, percdamp=None, order="natural", rounding: str = "nearest",
                   trials: int = 1, seed: int = 0, alpha: float = 1e-4, eta: float = 0.05, claims=None,
                   row_batch: int | None = None, rows=None, progress: bool = False):
    """Quantize ``W`` (``n × N``) from accumulated Gram matrices and check every claim that the
    Gram matrices decide (all but :data:`ROW_CLAIMS`): OPTQ on ``X`` and, with mismatch, OPTQ on
    ``X̃`` and both Qronos variants, as :func:`verify.check.check_layer` does in memory (stochastic
    rounding: ``trials`` copies of ``W`` as rows, seeded by ``seed``). Returns a
    :class:`verify.check.LayerReport` (``shape["m"]`` the rows accumulated; its notes name the
    claims left out). ``row_batch``: rows of ``W`` checked at once (default: all when ``n·N ≤ 2²²``,
    else ``2¹⁹ // N``; deterministic rounding only), which bounds the memory of the per-row
    quantities (:func:`theory.check_all`).

    ``rows``: the calibration rows again, as a callable with no arguments that returns an iterable
    of ``(X_c, X̃_c)`` chunks (the rows the Gram matrices were accumulated from, in any chunking;
    ``X̃_c`` ``None`` without mismatch), e.g. ``lambda: chunks_of(X, X_tilde)`` or a reader of
    files. With it the row claims are judged too: after quantizing, the per-sample quantities they
    need are computed in a second pass over the chunks (:mod:`theory.samples`), only for runs in
    which such a claim is in scope (stochastic rounding)."""
    import algorithms as A
    import theory
    from theory.claims import CLAIMS

    if not isinstance(grams, Grams):
        raise TypeError(f"grams must be a verify.stream.Grams (GramAccumulator.result()), got {type(grams).__name__}")
    W = np.asarray(W)
    if W.ndim != 2 or W.shape[1] != grams.N:
        raise ValueError(f"W must be n × N = n × {grams.N}, got shape {W.shape}")
    sample_rows = None
    if rows is not None:
        sample_rows = rows if isinstance(rows, theory.SampleRows) else theory.SampleRows(rows, grams.m)
        if sample_rows.m != grams.m:
            raise ValueError(f"rows: {sample_rows.m} rows declared, the Gram matrices hold {grams.m}")
    ids = [c for c in (claims or CLAIMS) if sample_rows is not None or not is_row_claim(c)]
    left = () if sample_rows is not None else tuple(c for c in (claims or CLAIMS) if is_row_claim(c))
    Xs, Xts = square_root(grams)  # float64: the checker reads it as is; the algorithms cast it to W's dtype
    N, m = grams.N, grams.m
    del grams  # from here on only the square root (the caller may drop its reference to save memory)
    damp = {"lam": lam} if lam is not None else {"percdamp": 0.01 if percdamp is None else percdamp}
    if rounding == "stochastic" and trials > 1:
        W = np.tile(W, (int(trials), 1))
    kw = dict(grid=grid, order=order, rounding=rounding, rng=np.random.default_rng(seed), samples=m, **damp)
    plan = [("optq", lambda: A.optq(W, Xs, **kw), {})]
    if Xts is not None:
        plan.append(("optq on X_tilde", lambda: A.optq(W, Xts, **kw), {"X_tilde": Xts}))
        for v in ("projection", "original"):
            plan.append((f"qronos-{v}", lambda v=v: A.qronos(W, Xs, Xts, variant=v, **kw), {"X_tilde": Xts, "W": W}))
    from tqdm.auto import tqdm

    from .check import LayerReport, RunCheck

    report = LayerReport(shape={"n": int(W.shape[0]), "N": N, "m": m}, grid=grid.to_dict(),
                         order=order if isinstance(order, str) else "custom", rounding=rounding, trials=int(trials))
    if left:
        report.notes.append(f"judged from the Gram matrices of {m} calibration rows (verify.stream); not "
                            f"exercised, because they need the individual rows (give rows= for a second pass): "
                            f"{', '.join(left)}")
    else:
        report.notes.append(f"judged from the Gram matrices of {m} calibration rows (verify.stream); the ℓ∞ "
                            "claims from a second pass over the rows")
    if row_batch is None and rounding == "nearest" and W.shape[0] * N > 2 ** 22:
        row_batch = max(1, 2 ** 19 // N)
    from .threads import rebalance

    for label, quantize, extra in tqdm(plan, desc="check (Gram)", unit="run", disable=not progress, leave=False):
        rebalance()  # under a CPU share (check-layer --gram): this process's current share of the CPUs
        r = quantize()
        run = theory.Run.from_result(r, Xs, **extra)
        verdicts = theory.check_all(run, ids, alpha=alpha, eta=eta, hypotheses=True, row_batch=row_batch,
                                    **({} if sample_rows is None else {"sample_rows": sample_rows}))
        report.runs.append(RunCheck.of(label, r, run, Xs, verdicts))
    return report


# ------------------------------------------------------------------------------------------------
# agreement with the in-memory path, cell by cell
# ------------------------------------------------------------------------------------------------
def compare_cell(cfg: dict, seed: int, *, alpha: float = 1e-4, eta: float = 0.05, rows: int = 64,
                 dask: bool = False) -> dict:
    """One campaign cell twice, from the same seed: in memory (as the campaign runs it) and from
    its Gram matrices accumulated over chunks of ``rows`` rows, the ℓ∞ claims from a second pass
    over the same chunks. Returns the verdict statuses of both for every claim and hypothesis,
    and whether ``Q`` is the same. ``dask``: the streamed path's activations are Dask arrays whose
    chunk products are computed where Dask runs (a ``distributed`` cluster when a client is
    active), :meth:`GramAccumulator.add_dask`."""
    import theory
    from threadpoolctl import threadpool_limits

    from .campaign import claims_for, make_layer, quantize

    out = {}
    with threadpool_limits(1):
        for path in ("memory", "streamed"):
            rng = np.random.default_rng(seed)
            W, X, Xt = make_layer(cfg, rng)
            samples, extra = None, {}
            if path == "streamed" and cfg["algorithm"] != "rtn":
                extra["sample_rows"] = theory.SampleRows(lambda X=X, Xt=Xt: chunks_of(X, Xt, rows), X.shape[0])
                acc = GramAccumulator(X.shape[1], mismatch=Xt is not None)
                if dask:
                    import dask.array as da

                    acc.add_dask(da.from_array(X, chunks=(rows, -1)),
                                 None if Xt is None else da.from_array(Xt, chunks=(rows, -1)))
                else:
                    for a, b in chunks_of(X, Xt, rows):
                        acc.add(a, b)
                grams = acc.result()
                X, Xt = square_root(grams, X.dtype)
                samples = grams.m
            res, Wc, Xc, Xtc = quantize(cfg, W, X, Xt, rng, samples=samples)
            run = theory.Run.from_result(res, Xc, X_tilde=Xtc, W=Wc)
            params = {"eta": eta, **({"lams": cfg["lams"]} if "lams" in cfg else {})}
            ids = list(cfg.get("claims") or claims_for(int(cfg["N"])))
            verdicts = theory.check_all(run, ids, alpha=alpha, hypotheses=True, **params, **extra)
            out[path] = {"Q": np.asarray(res.Q), "status": {k: v.status for k, v in verdicts.items()}}
    Qm, Qs = out["memory"]["Q"], out["streamed"]["Q"]
    return {"same_Q": bool(np.array_equal(Qm, Qs)), "Q_entries_equal": float(np.mean(Qm == Qs)),
            "memory": out["memory"]["status"], "streamed": out["streamed"]["status"]}


def agreement(campaign, *, progress: bool = True, dask: bool = False) -> dict:
    """:func:`compare_cell` over every cell of ``campaign`` (a :class:`verify.campaign.Campaign`,
    with its seeds, η and per-test α), summarised: cells, cells with the same ``Q``, verdicts
    compared, and every verdict that differs (with ``Q`` equal or not)."""
    from tqdm.auto import tqdm

    from .campaign import cell_seed
    from .sources import describe

    cells = [c for c in campaign.cells if c.config.get("algorithm") != "rtn"]
    summary = {"campaign": campaign.id, "cells": len(cells), "same_Q": 0, "verdicts": 0, "differ": [],
               "Q_differs": {}, "min_Q_entries_equal": 1.0,
               "note": "Q can differ by rounding decisions that flip with the summation order of XᵀX "
                       "(a flip changes the rest of its row); verdicts are compared on every claim and "
                       "hypothesis, the ℓ∞ claims (T2.*, T5.*) judged from a second pass over the row chunks"}
    for cell in tqdm(cells, desc="stream vs memory", disable=not progress):
        r = compare_cell(cell.config, cell_seed(campaign.seed, cell.seed_key), alpha=campaign.alpha_per_test,
                         eta=campaign.eta, dask=dask)
        summary["same_Q"] += r["same_Q"]
        if not r["same_Q"]:
            where = f"{describe(cell.config)['group']}/{cell.config.get('dtype', 'float64')}"
            summary["Q_differs"][where] = summary["Q_differs"].get(where, 0) + 1
            summary["min_Q_entries_equal"] = min(summary["min_Q_entries_equal"], r["Q_entries_equal"])
        for k, st in r["memory"].items():
            summary["verdicts"] += 1
            if r["streamed"].get(k) != st:
                summary["differ"].append({"cell": cell.key, "claim": k, "memory": st, "streamed": r["streamed"].get(k),
                                          "same_Q": r["same_Q"]})
    return summary


# ------------------------------------------------------------------------------------------------
# the memory benchmark
# ------------------------------------------------------------------------------------------------
def memory_benchmark(N: int = 4096, rows: int = 262144, *, n: int | None = None, chunk: int = 8192, seed: int = 0,
                     bits: int = 4, progress: bool = True) -> dict:
    """A ``n × N`` layer (default ``n = N``) checked from ``rows`` calibration rows that are never in
    memory together: rows are generated chunk by chunk (features with a decaying spectrum and a
    few outlier features, float32, as activations look), accumulated into ``XᵀX``, then OPTQ
    (``bits``-bit GPTQ grid, percdamp 0.01, act_order) and every claim the Gram matrix decides.
    The ℓ∞ claims get the rows again (regenerated from the seed) and are out of scope for nearest
    rounding. Returns timings and the peak resident memory of the process (``ru_maxrss``)."""
    import resource
    import time

    from tqdm.auto import tqdm

    import algorithms as A

    n = N if n is None else int(n)
    rng = np.random.default_rng(seed)
    mix = (rng.standard_normal((N, N)) / np.sqrt(N)) * (0.97 ** np.arange(N) + 0.05)[:, None]
    mix = mix.astype(np.float32)
    scale = np.ones(N, dtype=np.float32)
    scale[rng.choice(N, size=max(1, N // 256), replace=False)] = 20.0  # outlier features
    W = (rng.standard_normal((n, N)) * 0.02).astype(np.float32)
    data_state = rng.bit_generator.state  # the rows can be generated again: a second pass needs no storage

    def row_chunks():
        g = np.random.default_rng()
        g.bit_generator.state = data_state
        for s in range(0, rows, chunk):
            Z = g.standard_normal((min(chunk, rows - s), N), dtype=np.float32)
            yield (Z @ mix) * scale, None

    t0 = time.perf_counter()
    acc = GramAccumulator(N)
    for Xc, _ in tqdm(row_chunks(), total=-(-rows // chunk), desc="accumulate XᵀX", disable=not progress):
        acc.add(Xc)
    box = [acc.result()]
    del acc, Xc  # only the Gram matrix goes on, held by check_streamed alone (it drops it once factored)
    t1 = time.perf_counter()
    # the rows are given again: the ℓ∞ claims are judged too where in scope (not for nearest rounding,
    # so no second pass is made here)
    res = check_streamed(W, box.pop(), grid=A.Grid.gptq(bits), percdamp=0.01, order="decreasing", rows=row_chunks)
    t2 = time.perf_counter()
    verdicts = res.runs[0].verdicts
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {
        "N": N, "n": n, "rows": rows, "chunk": chunk, "bits": bits, "seed": seed,
        "accumulate_s": t1 - t0, "quantize_and_check_s": t2 - t1, "peak_rss_bytes": int(peak),
        "bytes_X_would_take_float32": rows * N * 4,
        "statuses": {k: v.status for k, v in verdicts.items()},
        "not_in_scope": sorted(k for k, v in verdicts.items() if v.status == "out of scope"),
    }


class _dask_client:
    """A ``distributed`` client for ``address`` ('local': a LocalCluster of 2 one-thread worker
    processes), closed on exit."""

    def __init__(self, address: str):
        self.address, self.cluster, self.client = address, None, None

    def __enter__(self):
        from .executor import connect_scheduler

        if self.address == "local":
            from distributed import Client, LocalCluster

            self.cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
            self.client = Client(self.cluster)
        else:
            self.client = connect_scheduler(self.address)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


def main(argv=None) -> int:
    """``python -m verify.stream agreement|bench``."""
    import argparse
    import json
    import os
    import platform
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m verify.stream", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("agreement", help="every cell of a campaign in memory and from its Gram matrices")
    a.add_argument("--campaign", default="default",
                   help="a built-in campaign, or real-llm (its quick SmolLM2 subset, from the capture cache)")
    a.add_argument("--out", default="results/stream-agreement.json")
    a.add_argument("--scheduler", default=None, metavar="ADDRESS|local",
                   help="accumulate the Gram matrices on a Dask cluster (a scheduler address, or 'local' for a "
                        "LocalCluster of 2 worker processes); default: in this process")
    b = sub.add_parser("bench", help="peak memory of a layer checked from streamed rows")
    b.add_argument("--N", type=int, default=4096)
    b.add_argument("--rows", type=int, default=262144)
    b.add_argument("--chunk", type=int, default=8192)
    b.add_argument("--out", default=None, help="JSON path (default benchmarks/results/stream_<N>_<rows>.json)")
    args = p.parse_args(argv)
    if args.cmd == "agreement":
        from .campaigns import get_campaign

        if args.campaign == "real-llm":
            from .llm.campaign import build_campaign

            camp = build_campaign(progress=False)
        else:
            camp = get_campaign(args.campaign)
        if args.scheduler:
            with _dask_client(args.scheduler):
                s = agreement(camp, dask=True)
            s["scheduler"] = args.scheduler
        else:
            s = agreement(camp)
    else:
        s = memory_benchmark(args.N, args.rows, chunk=args.chunk)
        s["machine"] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                        "load_avg": os.getloadavg()}
        args.out = args.out or f"benchmarks/results/stream_{args.N}_{args.rows}.json"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(s, indent=1) + "\n")
    print(json.dumps({k: v for k, v in s.items() if k not in ("statuses", "differ")}, indent=1))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
