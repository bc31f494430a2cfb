"""The reference GPTQ semantics as a plain PyTorch loop, for ``ptq-bounds bench`` to time side by side
with :func:`algorithms.optq`.

A transcription of the reference algorithm's documented semantics, written independently of the
package (it imports nothing from :mod:`algorithms`) so that it pins the conventions and serves as
the speed reference: min/max quantizer per row (symmetric or asymmetric), GPTQ's Hessian
``H = (2/m)·XᵀX``, dead features (``H_tt = 0``: ``H_tt = 1`` and the weights zeroed), damping
``percdamp · mean(diag H)`` added to the diagonal, the upper Cholesky factor of ``H⁻¹``
(``cholesky_inverse`` then ``cholesky(upper=True)``), lazy batches of ``blocksize`` columns, groups
refitted at each group start or fitted once on the original weights (``static_groups``), and
act_order (columns by decreasing ``diag H``, result un-permuted).

:func:`fasterquant` is the part GPTQ times (from the accumulated ``H`` to ``Q``), in the dtype and
on the device of ``W``; :func:`reference_gptq` forms ``H`` from ``X`` first and returns NumPy.
Needs PyTorch.
"""

from __future__ import annotations

import numpy as np

__all__ = ["reference_gptq", "fasterquant", "hessian", "available", "why_unavailable"]


def why_unavailable() -> str | None:
    """None when PyTorch can be imported, else why not (one line)."""
    try:
        import torch  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken installation
        return f"PyTorch is not importable ({type(exc).__name__}: {exc}); install torch to time the reference"
    return None


def available() -> bool:
    return why_unavailable() is None


def _fit(x, bits, sym):
    import torch

    maxq = 2 ** bits - 1
    lo = torch.clamp(x.min(dim=1).values, max=0.0)
    hi = torch.clamp(x.max(dim=1).values, min=0.0)
    if sym:
        hi = torch.maximum(lo.abs(), hi)
        lo = torch.where(lo < 0, -hi, lo)
    flat = (lo == 0) & (hi == 0)
    lo = torch.where(flat, torch.full_like(lo, -1.0), lo)
    hi = torch.where(flat, torch.full_like(hi, 1.0), hi)
    scale = (hi - lo) / maxq
    zero = torch.full_like(scale, (maxq + 1) / 2) if sym else torch.round(-lo / scale)
    return scale[:, None], zero[:, None], maxq


def _q(x, scale, zero, maxq):
    import torch

    return scale * (torch.clamp(torch.round(x / scale) + zero, 0, maxq) - zero)


def hessian(X):
    """GPTQ's Hessian ``(2/m)·XᵀX`` of a torch tensor ``X`` (``m × N``), in its dtype."""
    return (2.0 / X.shape[0]) * X.T @ X


def fasterquant(W, H, *, bits, sym=True, percdamp=0.01, blocksize=128, groupsize=-1, actorder=False,
                static_groups=False):
    """``Q`` (torch, ``n × N``) from the weights ``W`` and GPTQ's undamped Hessian ``H`` (torch tensors of
    one dtype and device; neither is modified)."""
    import torch

    W = W.clone()
    H = H.clone()
    N = W.shape[1]
    scale, zero, maxq = _fit(W, bits, sym)  # per row, from W as given
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    groups = []
    if static_groups:
        groups = [_fit(W[:, j:j + groupsize], bits, sym) for j in range(0, N, groupsize)]
    perm = None
    if actorder:
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    idx = torch.arange(N, device=H.device)
    H[idx, idx] += percdamp * torch.mean(torch.diag(H))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for b1 in range(0, N, blocksize):
        b2 = min(b1 + blocksize, N)
        Wb = W[:, b1:b2].clone()
        Eb = torch.zeros_like(Wb)
        for i in range(b2 - b1):
            col = b1 + i
            if groupsize != -1:
                if static_groups:
                    scale, zero, maxq = groups[int(perm[col] if actorder else col) // groupsize]
                elif col % groupsize == 0:
                    scale, zero, maxq = _fit(W[:, col:col + groupsize], bits, sym)
            w = Wb[:, i]
            q = _q(w[:, None], scale, zero, maxq)[:, 0]
            Q[:, col] = q
            err = (w - q) / Hinv[col, col]
            Wb[:, i:] -= err[:, None] * Hinv[col, b1 + i:b2][None, :]
            Eb[:, i] = err
        W[:, b2:] -= Eb @ Hinv[b1:b2, b2:]
    if actorder:
        Q = Q[:, torch.argsort(perm)]
    return Q


def reference_gptq(W, X, *, bits, sym=True, percdamp=0.01, blocksize=128, groupsize=-1, actorder=False,
                   static_groups=False, dtype=np.float64) -> np.ndarray:
    """``Q`` (NumPy) of the reference GPTQ on weights ``W`` (``n × N``) and inputs ``X`` (``m × N``), in
    ``dtype`` (default float64)."""
    import torch

    tdt = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}[np.dtype(dtype)]
    Wt = torch.tensor(np.asarray(W), dtype=tdt)
    Xt = torch.tensor(np.asarray(X), dtype=tdt)
    return fasterquant(Wt, hessian(Xt), bits=bits, sym=sym, percdamp=percdamp, blocksize=blocksize,
                       groupsize=groupsize, actorder=actorder, static_groups=static_groups).numpy()
