"""The per-sample quantities of a run, from its calibration rows read again in chunks.

A run may be checked on a stand-in for its data: ``X'`` with ``X'ᵀX' = XᵀX`` (a square root of the
accumulated Gram matrices, :mod:`verify.stream`), which decides every ℓ2 claim but not the ℓ∞
claims (T2, T5): those are about the individual samples ``i`` (``max_i |x_i·(w − q)|``, the
per-sample variances ``σ_i² = s²Σ_t δ_t² R_it²``). Given the rows themselves, as a source of chunks
that can be read again (:class:`SampleRows`), the context of the run computes these quantities in
a second pass over the chunks, with the quantization ``Q`` and the run's factor already fixed:

* ``Einf = ‖X̃(w₀ − q)‖∞`` (loop data, loop start ``w₀``), and for a run with ``X̃``:
  ``Finf = ‖Xw − X̃q‖∞`` and, for Qronos, ``hat_inf = ‖Xw − X̃ŵ‖∞``;
* the float64 evaluation allowances of those maxima (``max_i |x̃_i|·|w₀ − q|``, ``max_i |x_i|·|w|``);
* ``R``'s X-block per sample, ``R_i = x̃_{i,π} Mᵀ`` (processing order), reduced to what the claims
  read: ``‖r̃_1‖∞`` (T5.original) and ``Σ_{t∈k} R_it²`` per class ``k`` of features with the same
  step in every row (``σ_i²`` of T2.tail is ``s²Σ_k δ_k² Σ_{t∈k} R_it²``: ``m × (number of classes)``
  numbers instead of ``m × N``; one class for a per-row grid, one per group for a group grid).

Two passes at most, each only when a claim in scope asks for it: the products with ``W``/``Q``
(``O(m·N·n)``), and ``R`` (``O(m·N²)``, T2.tail and T5.original only). Chunks are processed in
pieces of at most ``piece`` products (default ``2²⁴`` numbers, 128 MiB), so the memory does not
depend on ``m``. The results equal the in-memory ones up to the summation order (tests compare
them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

__all__ = ["SampleRows", "SampleStats", "ResidualStats", "products_pass", "residual_pass"]


@dataclass(frozen=True)
class SampleRows:
    """The calibration rows of a run, readable again in chunks.

    ``chunks``: a callable with no arguments returning an iterable of ``(X_c, X̃_c)`` pairs
    (``m_c × N`` each; ``X̃_c`` ``None`` for data without mismatch), the same rows in the same
    order on every call; ``m``: the total number of rows (checked at every pass). Give it to
    :func:`theory.check_all` as ``sample_rows=`` (with a run on any stand-in with the same Gram
    matrices) and the ℓ∞ claims are evaluated on these rows."""

    chunks: Callable[[], Iterable]
    m: int
    piece: int = 2 ** 24

    def __post_init__(self):
        if not callable(self.chunks):
            raise TypeError("sample_rows.chunks must be a callable returning an iterable of (X_c, X_tilde_c) chunks "
                            f"(e.g. lambda: verify.stream.chunks_of(X, X_tilde)), got {type(self.chunks).__name__}")
        if isinstance(self.m, bool) or not isinstance(self.m, (int, np.integer)) or self.m < 1:
            raise ValueError(f"sample_rows.m must be the number of calibration rows (an integer ≥ 1), got {self.m!r}")
        if int(self.piece) < 1:
            raise ValueError(f"sample_rows.piece must be ≥ 1, got {self.piece!r}")

    def pieces(self, N: int, width: int, *, tilde: bool):
        """``(X_p, X̃_p)`` float64 pieces of at most ``piece // width`` rows; checks shapes and the
        total row count. ``tilde``: the run reads ``X̃`` (``X̃_p`` is then required)."""
        rows = max(1, int(self.piece) // max(1, int(width)))
        seen = 0
        for k, chunk in enumerate(self.chunks()):
            if not isinstance(chunk, tuple) or len(chunk) != 2:
                raise TypeError(f"sample_rows.chunks() must yield (X_c, X_tilde_c) pairs, chunk {k} is "
                                f"{type(chunk).__name__}")
            Xc, Xtc = chunk
            Xc = np.asarray(Xc)
            if Xc.ndim != 2 or Xc.shape[1] != N:
                raise ValueError(f"sample_rows: chunk {k} of X has shape {Xc.shape}, expected m_c × {N}")
            if tilde:
                if Xtc is None:
                    raise ValueError(f"sample_rows: the run has mismatched inputs, chunk {k} gives no X_tilde")
                Xtc = np.asarray(Xtc)
                if Xtc.shape != Xc.shape:
                    raise ValueError(f"sample_rows: chunk {k} of X_tilde has shape {Xtc.shape}, X {Xc.shape}")
            for s in range(0, Xc.shape[0], rows):
                a = np.asarray(Xc[s:s + rows], dtype=np.float64)
                b = np.asarray(Xtc[s:s + rows], dtype=np.float64) if tilde else a
                yield a, b
            seen += Xc.shape[0]
        if seen != int(self.m):
            raise ValueError(f"sample_rows: the chunks gave {seen} rows, m = {self.m} were declared (the rows must be "
                             "those the Gram matrices were accumulated from)")


@dataclass
class SampleStats:
    """What the claims read from the samples, per row of ``W`` (arrays of length ``n``) or per run."""

    Einf: np.ndarray
    ev_loop: np.ndarray  # max_i |x̃_i|·|w₀ − q|
    ev_target: np.ndarray | None = None  # max_i |x_i|·|w|
    Finf: np.ndarray | None = None
    hat_inf: np.ndarray | None = None

    def rows(self, idx) -> "SampleStats":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return SampleStats(self.Einf[idx], self.ev_loop[idx], pick(self.ev_target), pick(self.Finf),
                           pick(self.hat_inf))


def _max_abs(acc, P):
    np.maximum(acc, np.max(np.abs(P), axis=0), out=acc)


def products_pass(ctx, sample_rows: SampleRows) -> SampleStats:
    """One pass: the maxima over the samples of the products with ``W``, ``Q`` (and ``ŵ``)."""
    run = ctx.run
    tilde = run.X_tilde is not None
    qronos = run.algorithm == "qronos"
    D = ctx.w0 - ctx.Q
    absD, n = np.abs(D), ctx.n
    st = SampleStats(Einf=np.zeros(n), ev_loop=np.zeros(n))
    if tilde:
        st.ev_target, st.Finf = np.zeros(n), np.zeros(n)
        absW = np.abs(ctx.W)
        if qronos:
            st.hat_inf = np.zeros(n)
    for Xp, Xqp in sample_rows.pieces(ctx.N, 2 * n, tilde=tilde):
        _max_abs(st.Einf, Xqp @ D.T)
        np.maximum(st.ev_loop, np.max(np.abs(Xqp) @ absD.T, axis=0), out=st.ev_loop)
        if tilde:
            np.maximum(st.ev_target, np.max(np.abs(Xp) @ absW.T, axis=0), out=st.ev_target)
            XW = Xp @ ctx.W.T
            _max_abs(st.Finf, XW - Xqp @ ctx.Q.T)
            if qronos:
                _max_abs(st.hat_inf, XW - Xqp @ ctx.w_hat.T)
    return st


@dataclass
class ResidualStats:
    """``R``'s X-block reduced per sample: ``‖r̃_1‖∞`` and ``Σ_{t∈k} R_it²`` per step class ``k``."""

    r1inf: float
    sq_by_class: np.ndarray  # m × K
    classes: np.ndarray  # n × K: the step δ of each class, per row of W

    def rows(self, idx) -> "ResidualStats":
        return ResidualStats(self.r1inf, self.sq_by_class, self.classes[idx])


def residual_pass(ctx, sample_rows: SampleRows, delta: np.ndarray) -> ResidualStats:
    """One pass: ``R_i = x̃_{i,π} Mᵀ`` per sample, reduced (``delta``: the steps, ``n × N``,
    processing order, whose distinct columns are the classes)."""
    Mt = np.ascontiguousarray(ctx.Mm.T)
    perm = ctx.perm
    steps, inverse = np.unique(delta, axis=1, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    K = steps.shape[1]
    onehot = np.zeros((ctx.N, K))
    onehot[np.arange(ctx.N), inverse] = 1.0
    r1, parts = 0.0, []
    for _, Xqp in sample_rows.pieces(ctx.N, ctx.N, tilde=ctx.run.X_tilde is not None):
        RX = Xqp[:, perm] @ Mt
        r1 = max(r1, float(np.max(np.abs(RX[:, 0]))) if RX.size else 0.0)
        np.square(RX, out=RX)
        parts.append(RX @ onehot if K > 1 else np.sum(RX, axis=1, keepdims=True))
    return ResidualStats(r1inf=r1, sq_by_class=np.concatenate(parts) if parts else np.zeros((0, K)), classes=steps)
