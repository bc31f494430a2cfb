"""Shared pieces of the GPTQ-family adapters: GPTQ's min/max grid written as a library's fixed
quantization parameters, the damping map, and recording the permutation a library used.

Nothing here imports a third-party library at import time.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..audit import Decline


def minmax(B, bits: int, sym: bool):
    """GPTQ's min/max scale and zero point (unsigned codes ``0..2^b−1``) of each row of ``B``:
    ``xmin = min(w, 0)``, ``xmax = max(w, 0)``; symmetric: ``xmax = max(|xmin|, xmax)`` and
    ``xmin = −xmax`` where ``xmin < 0``; both 0 → ``±1``; zero point ``2^(b−1)`` (symmetric) or
    ``round(−xmin/scale)``."""
    maxq = 2 ** int(bits) - 1
    lo = np.minimum(B.min(axis=1), 0.0)
    hi = np.maximum(B.max(axis=1), 0.0)
    if sym:
        hi = np.maximum(np.abs(lo), hi)
        lo = np.where(lo < 0, -hi, lo)
    flat = (lo == 0) & (hi == 0)
    lo, hi = np.where(flat, -1.0, lo), np.where(flat, 1.0, hi)
    scale = (hi - lo) / maxq
    zero = np.full_like(scale, (maxq + 1) / 2) if sym else np.round(-lo / scale)
    return scale, zero


def dead_mask(X):
    X = np.asarray(X, dtype=np.float64)
    return np.sum(X * X, axis=0) == 0


def fixed_gptq_params(grid, W, X, *, library: str, asym: bool = True):
    """``(scale, zero, group)`` of the audit's GPTQ grid as fixed parameters: per row (``n × 1``,
    fitted on W as given) or static groups (``n × G``, fitted on W with dead features zeroed,
    GPTQ's ``static_groups``). Declines what fixed parameters cannot express: the symmetric
    ``δ·{−K..K}`` grid, per-tensor grids and groups fitted on the fly."""
    n, N = W.shape
    if grid.kind != "gptq":
        raise Decline(f"{library}: only GPTQ's min/max integer grids are mapped (a symmetric grid δ·{{−K..K}} "
                      f"has an odd number of levels, {library}'s b-bit integer grids an even one)")
    if not grid.perchannel:
        raise Decline(f"{library}: per-tensor GPTQ grids are not mapped")
    if grid.group_size and not grid.static_groups:
        raise Decline(f"{library}: groups fitted on the fly (at the group's first column, from the updated weights) "
                      f"cannot be given as fixed parameters; {library} takes its group scales fixed before the loop")
    if not grid.sym and not asym:
        raise Decline(f"{library}: asymmetric grids are not mapped")
    if not grid.group_size:
        s, z = minmax(W, grid.bits, grid.sym)
        return s[:, None], z[:, None], None
    g = int(grid.group_size)
    if N % g:
        raise Decline(f"{library}: N={N} is not a multiple of the group size {g}")
    W0 = np.where(dead_mask(X)[None, :], 0.0, W)
    sz = [minmax(W0[:, j:j + g], grid.bits, grid.sym) for j in range(0, N, g)]
    return np.stack([a for a, _ in sz], axis=1), np.stack([b for _, b in sz], axis=1), g


def percdamp_for(lam: float, diag_H, c: float) -> float:
    """``percdamp`` with ``percdamp·mean(diag H) = c·λ``, for a library whose Hessian is ``H = c·XᵀX``
    (dead features' diagonal already set to the library's value)."""
    return float(lam) * c / float(np.mean(np.asarray(diag_H, dtype=np.float64)))


@contextlib.contextmanager
def patched(obj, name, value):
    """Temporarily set ``obj.name = value`` (a library's module attribute), restoring it after."""
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def recording_argsort(torch):
    """Record ``torch.argsort(..., descending=True)`` results (a library's act_order permutation),
    calling torch's own function."""
    orig = torch.argsort
    seen = []

    def spy(*a, **k):
        r = orig(*a, **k)
        if k.get("descending"):
            seen.append(r.detach().cpu().numpy().astype(np.int64).copy())
        return r

    torch.argsort = spy
    try:
        yield seen
    finally:
        torch.argsort = orig


def stable_decreasing(d):
    """GPTQ's act_order with ties by lower index (the audit's ``decreasing``)."""
    return np.argsort(-np.asarray(d, dtype=np.float64), kind="stable")


def _listed(t):
    """A torch tensor (or None) as a nested float list."""
    return np.asarray(t.detach().double().cpu()).tolist() if hasattr(t, "detach") else None


def class_used(*, scale, zero, g_idx, grid, group, percdamp, order, perm, d, D, blocksize) -> dict:
    """What a GPTQ class that fits its own grid (gptqmodel, AutoGPTQ) was given and used: its scales,
    zero points and ``g_idx``, the grid settings, the damping, act_order and the permutation it ran
    (``perm``) beside the one GPTQ's tie-break gives (``d``: its diag H, dead → 1), the dead features
    of the loop data ``D``; float32."""
    N = D.shape[1]
    return {"scales": _listed(scale), "zero_points": _listed(zero),
            "g_idx": np.asarray(g_idx.cpu()).tolist() if hasattr(g_idx, "cpu") else None,
            "bits": int(grid.bits), "sym": bool(grid.sym), "group_size": group, "static_groups": bool(grid.static_groups),
            "percdamp": percdamp, "desc_act": order == "decreasing", "blocksize": blocksize, "precision": "float32",
            "dead_features": np.flatnonzero(dead_mask(D)).tolist(),
            "order": None if perm is None else [int(i) for i in perm],
            "permutation_expected": stable_decreasing(d).tolist() if order == "decreasing" else list(range(N))}


def class_setup(library: str, grid, order, blocksize: int, N: int):
    """The checks and settings shared by the adapters of GPTQ classes that fit their own grid
    (gptqmodel, AutoGPTQ): natural or decreasing order only, GPTQ's per-row min/max integer grids,
    whole groups. Returns ``(group, blocksize)``: ``group`` in the libraries' convention (``-1``: per
    row), and ``blocksize`` equal to the group for groups fitted on the fly, because these classes fit
    such a group from W as it stands at the start of the lazy block (the GPTQ reference's behaviour),
    which with blocks of one group is the audit's fit from the updated weights."""
    if order not in ("natural", "decreasing"):
        raise Decline(f"order {order!r}: {library} has natural order and desc_act (decreasing) only")
    if grid.kind != "gptq":
        raise Decline(f"{library}: only GPTQ's min/max integer grids are mapped (a symmetric grid δ·{{−K..K}} has "
                      f"an odd number of levels, {library}'s b-bit grids an even one)")
    if not grid.perchannel:
        raise Decline(f"{library}: per-tensor grids are not mapped")
    group = int(grid.group_size) if grid.group_size else -1
    if group > 0 and N % group:
        raise Decline(f"{library}: N={N} is not a multiple of the group size {group}")
    if group > 0 and not grid.static_groups:
        blocksize = group
    return group, blocksize


def torch_linear(W, dtype: str = "float32"):
    """A bias-free ``torch.nn.Linear`` holding ``W`` (``n × N``) in ``dtype`` (``"float32"`` or
    ``"float64"``): the one layer every GPTQ-family library quantizes."""
    import torch

    n, N = W.shape
    lin = torch.nn.Linear(N, n, bias=False, dtype=getattr(torch, dtype))
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.asarray(W, dtype=np.float64)).to(lin.weight.dtype))
    return lin
