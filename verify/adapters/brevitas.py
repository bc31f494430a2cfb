"""brevitas (AMD/Xilinx): GPTQ (``brevitas.graph.gptq.gptq_mode``), Qronos
(``brevitas.graph.qronos.Qronos`` through ``gpfq_mode``) and GPFQ (``brevitas.graph.gpfq.gpfq_mode``).

Mapping of the audit's configuration to brevitas:

* Grids. brevitas' weight quantizer is ``s·clamp(round(w/s), −2^(b−1), 2^(b−1)−1)`` (signed,
  not narrow) with a per-row (``ScalingPerOutputType.CHANNEL``) or per-group (``GROUP``, groups of
  consecutive columns in the original order) scale parameter. GPTQ's symmetric min/max grid with
  zero point ``2^(b−1)`` is exactly that grid, so ``gptq`` (per row, fitted on W as given) and
  ``gptq-static`` (groups fitted once on the weights the loop starts from) are set as fixed scale
  parameters (written into brevitas' scale parameter and read back: they must come out equal).
  Declined: asymmetric grids (brevitas' zero points are fitted by its own statistics), groups fitted
  on the fly (brevitas' group scales are fixed, or recomputed from the current weights at every
  column), and a symmetric grid ``δ·{−K..K}`` unless ``K + 1`` is a power of two (narrow range).
* Damping. GPTQ: ``H = (2/m)XᵀX``, dead features ``H_tt = 1`` and weights zeroed, damping
  ``percdamp·mean(diag H)``; ``percdamp = λ·(2/m)/mean(diag H)`` gives ``λ`` in units of ``XᵀX``.
  Qronos: ``H = X̃ᵀX̃/m``, damping ``alpha·λ̂_max(H)`` with brevitas' own power-iteration estimate
  ``λ̂_max`` (deterministic, seed 42), so ``alpha = λ/(m·λ̂_max)`` evaluated with brevitas' own
  function. GPFQ has no damping (λ is not used).
* Order. ``natural``; ``decreasing`` = ``act_order=True`` (``torch.argsort(diag H, descending)``,
  not stable: ties, e.g. between dead features, may be processed in another order).
* Precision: the layer and brevitas' buffers in float64.
"""

from __future__ import annotations

import math
import warnings
from functools import partialmethod

import numpy as np

from ..audit import Decline
from . import Adapter, AdapterResult
from ._gptq_common import recording_argsort

INSTALL = "pip install 'provable-ptq[brevitas]' (brevitas==0.13.4, torch==2.13.0)"


def _torch():
    import torch

    return torch


def _scales(grid, W, X):
    """``(quantizer spec, scale array, used)`` for ``grid``: per-row ``n × 1`` or per-group ``n × G``
    steps of brevitas' signed ``b``-bit grid."""
    n, N = W.shape
    if grid.kind == "symmetric":
        K = grid.K
        if K is None or (K + 1) & K:
            raise Decline(f"brevitas' integer grids have 2^(b-1)-1 levels each side (narrow range); "
                          f"δ·{{-K..K}} with K={K} is not one")
        bits = int(math.log2(K + 1)) + 1
        d = np.broadcast_to(np.asarray(grid.delta, dtype=np.float64).reshape(-1, 1), (n, 1)).copy()
        return {"bits": bits, "narrow": True, "group": None}, d, {"grid": f"narrow signed int{bits}, step δ per row"}
    if grid.kind != "gptq":
        raise Decline(f"grid kind {grid.kind!r} is not supported")
    if not grid.sym:
        raise Decline("asymmetric grids: brevitas fits zero points with its own statistics; GPTQ's min/max "
                      "zero point cannot be imposed")
    if not grid.perchannel:
        raise Decline("per-tensor GPTQ grids are not mapped")
    if grid.group_size and not grid.static_groups:
        raise Decline("groups fitted on the fly: brevitas' group scales are fixed parameters or recomputed "
                      "from the current weights at every column, not at the group's first column")
    b = int(grid.bits)
    maxq = 2 ** b - 1

    def fit(B):
        # GPTQ's symmetric min/max: xmin = min(w, 0), xmax = max(|xmin|, max(w, 0)); xmin = −xmax only
        # where xmin < 0 (a row or group with no negative weight keeps xmin = 0); both 0 → ±1
        lo = np.minimum(B.min(axis=1), 0.0)
        hi = np.maximum(np.abs(lo), np.maximum(B.max(axis=1), 0.0))
        lo = np.where(lo < 0, -hi, lo)
        flat = (lo == 0) & (hi == 0)
        lo, hi = np.where(flat, -1.0, lo), np.where(flat, 1.0, hi)
        return (hi - lo) / maxq

    if not grid.group_size:
        s = fit(W)[:, None]
        return {"bits": b, "narrow": False, "group": None}, s, {"grid": f"signed int{b} per row (zero point 2^{b - 1})"}
    g = int(grid.group_size)
    if N % g:
        raise Decline(f"brevitas' groupwise quantizer needs N divisible by the group size ({N} % {g} ≠ 0)")
    dead = np.sum(X * X, axis=0) == 0
    W0 = np.where(dead[None, :], 0.0, W)  # GPTQ: static groups after dead features are zeroed
    s = np.stack([fit(W0[:, j:j + g]) for j in range(0, N, g)], axis=1)
    return {"bits": b, "narrow": False, "group": g}, s, {
        "grid": f"signed int{b}, static groups of {g} (fitted on W with dead features zeroed)",
        "g_idx": (np.arange(N) // g).tolist()}


def _layer(spec, scale, W):
    """A ``QuantLinear`` with brevitas' own weight quantizer whose scale parameter holds ``scale``."""
    torch = _torch()
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType, ScalingPerOutputType
    from brevitas.quant.scaled_int import Int8WeightPerChannelFloat

    attrs = {"bit_width": spec["bits"], "narrow_range": spec["narrow"],
             "scaling_impl_type": ScalingImplType.PARAMETER_FROM_STATS}
    if spec["group"]:
        from brevitas.proxy.groupwise_int_parameter_quant import GroupwiseWeightQuantProxyFromInjector

        attrs.update(proxy_class=GroupwiseWeightQuantProxyFromInjector, group_size=spec["group"],
                     scaling_per_output_type=ScalingPerOutputType.GROUP)
    Wq = type("AuditWeightQuant", (Int8WeightPerChannelFloat,), attrs)
    n, N = W.shape
    layer = qnn.QuantLinear(N, n, bias=False, weight_quant=Wq, dtype=torch.float64)
    layer.weight.data = torch.from_numpy(np.array(W, dtype=np.float64, copy=True))  # brevitas updates it in place
    layer.train()
    with torch.no_grad():
        layer(torch.zeros(1, N, dtype=torch.float64))  # initialise the scale from statistics
    layer.eval()
    params = dict(layer.weight_quant.named_parameters())
    p = params["tensor_quant.scaling_impl.value"]
    max_int = 2 ** (spec["bits"] - 1) - (1 if spec["narrow"] else 0)
    with torch.no_grad():
        p.copy_(torch.from_numpy(scale * max_int).reshape(p.shape))  # brevitas divides by max |int|
        got = layer.quant_weight().scale.detach().double().numpy()
    want = np.repeat(scale, spec["group"], axis=1) if spec["group"] else scale
    if got.shape != want.shape:
        got = got.reshape(want.shape)
    if not np.array_equal(got, want):
        raise Decline(f"brevitas' scale parameter does not reproduce the grid's step exactly "
                      f"(max rel. diff {np.max(np.abs(got / want - 1)):.2e})")
    return layer


def _order_flag(order):
    if order not in ("natural", "decreasing"):
        raise Decline(f"order {order!r}: brevitas has natural order and act_order (decreasing) only")
    return order == "decreasing"


def _used_common(spec, scale, layer, extra):
    zero = 2 ** (spec["bits"] - 1)
    used = {"scales": scale.tolist(), "zero_point": None if spec["narrow"] else zero,
            "zero_point_convention": "signed integers (GPTQ's zero point 2^(b-1) on unsigned codes)",
            "bits": spec["bits"], "narrow_range": spec["narrow"]}
    used.update(extra)
    return used


def _run_modes(mode, layer, X, Xt, **kw):
    """Run one of brevitas' graph modes on a one-layer model; the layer receives ``Xt`` while weight
    quantization is enabled and ``X`` when brevitas disables it (gpfq_mode's float pass)."""
    torch = _torch()

    class Feed(torch.nn.Module):
        def forward(self, _):
            return torch.from_numpy(Xt if layer.weight_quant.is_quant_enabled else X)

    model = torch.nn.Sequential(Feed(), layer)
    caught = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with torch.no_grad(), mode(model, dtype=torch.float64, **kw) as g:
            for _ in range(g.num_layers):
                g.model(torch.zeros(1))
                g.update()
        caught = [str(x.message) for x in w if "brevitas" in (x.filename or "") or "Failed" in str(x.message)]
    Q = layer.quant_weight().value.detach().double().numpy().copy()
    return Q, [c for c in caught if "Failed" in c]


def gptq(W, X, *, grid, lam, rng=None, order="natural"):
    """brevitas' GPTQ (``gptq_mode``) on one QuantLinear layer."""
    from brevitas.graph.gptq import GPTQ, gptq_mode

    act_order = _order_flag(order)
    W = np.asarray(W, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    m, N = X.shape
    spec, scale, used = _scales(grid, W, X)
    layer = _layer(spec, scale, W)
    Hg = (2.0 / m) * (X.T @ X)
    d = np.diag(Hg).copy()
    d[d == 0] = 1.0  # brevitas' dead-feature value
    percdamp = float(lam) * (2.0 / m) / float(d.mean())
    num_blocks = max(1, math.ceil(N / 128))
    cls = type("GPTQAtDamping", (GPTQ,), {"single_layer_update": partialmethod(GPTQ.single_layer_update,
                                                                               percdamp=percdamp)})
    import torch

    with recording_argsort(torch) as sorts:
        Q, failed = _run_modes(gptq_mode, layer, X, X, act_order=act_order, num_blocks=num_blocks, gptq_class=cls)
    dead = np.flatnonzero(np.sum(X * X, axis=0) == 0)
    perm = np.argsort(-d, kind="stable") if act_order else np.arange(N)
    # the permutation brevitas actually used: its own descending argsort of diag H (unstable among ties)
    used_perm = next((p for p in sorts if p.shape == (N,)), None) if act_order else np.arange(N)
    used = _used_common(spec, scale, layer, used)
    used.update(percdamp=percdamp, damping=f"percdamp={percdamp:.6g} of mean diag((2/m)XᵀX) (dead → 1) = λ·2/m",
                blocksize=math.ceil(N / num_blocks), act_order=act_order,
                permutation="torch.argsort(diag H, descending=True) (ties unordered)" if act_order else "identity",
                permutation_expected=perm.tolist(), dead_features=dead.tolist(), dead_convention="zeroed, H_tt = 1",
                order=None if used_perm is None else [int(i) for i in used_perm],
                fallback="no GPTQ applied (Hessian inverse failed): Q is round-to-nearest" if failed else None)
    return AdapterResult(Q=Q, used=used)


def _qronos_alpha(Xt, lam, act_order):
    """``alpha`` such that brevitas' damping ``alpha·power_iteration(H)`` equals ``λ/m`` (H = X̃ᵀX̃/m,
    accumulated as brevitas does), with brevitas' own power iteration. brevitas runs it on H *after*
    the act_order permutation, and 30 steps from a fixed start vector do not converge, so the estimate
    depends on the order: it is evaluated on the same permuted H here."""
    torch = _torch()
    from brevitas.graph.utils import power_iteration

    m = Xt.shape[0]
    inp = torch.from_numpy(np.ascontiguousarray(Xt.T))[None] / math.sqrt(m)
    H = inp.bmm(inp.transpose(2, 1))[0]
    if act_order:
        perm = torch.argsort(torch.diag(H), descending=True)
        H = H[perm, :][:, perm]
    est = float(power_iteration(H, 30))
    return float(lam) / (m * est), est


def qronos(W, X, *, X_tilde, grid, lam, rng=None, order="natural"):
    """brevitas' Qronos (``gpfq_mode(algorithm_impl=Qronos)``) on one QuantLinear layer; ``X`` the
    float inputs, ``X_tilde`` the (quantized) inputs the layer will see."""
    from brevitas.graph.gpfq import gpfq_mode
    from brevitas.graph.qronos import Qronos

    act_order = _order_flag(order)
    W = np.asarray(W, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    Xt = np.ascontiguousarray(X_tilde, dtype=np.float64)
    m, N = X.shape
    spec, scale, used = _scales(grid, W, Xt)
    if spec["group"]:
        raise Decline("Qronos with static groups: the audit fits them on the original W, brevitas on its "
                      "own statistics; not mapped")
    layer = _layer(spec, scale, W)
    alpha, est = _qronos_alpha(Xt, lam, act_order)
    num_blocks = max(1, math.ceil(N / 128))
    algo = type("QronosAtDamping", (Qronos,), {"__init__": partialmethod(Qronos.__init__, num_blocks=num_blocks,
                                                                          alpha=alpha)})
    Q, failed = _run_modes(gpfq_mode, layer, X, Xt, act_order=act_order, algorithm_impl=algo)
    used = _used_common(spec, scale, layer, used)
    used.update(alpha=alpha, power_iteration_lambda_max=est,
                damping=f"alpha={alpha:.6g} × power-iteration λmax(X̃ᵀX̃/m)={est:.6g} = λ/m",
                act_order=act_order, variant="original (y₁ from G, then OPTQ on the projected weights)",
                fallback="error correction skipped (inverse failed)" if failed else None)
    return AdapterResult(Q=Q, used=used)


def gpfq(W, X, *, grid, lam, rng=None, order="natural"):
    """brevitas' GPFQ (``gpfq_mode``) with matched inputs (``X̃ = X``); ``lam`` is not used (GPFQ has
    no damping)."""
    from brevitas.graph.gpfq import GPFQ, gpfq_mode

    act_order = _order_flag(order)
    W = np.asarray(W, dtype=np.float64)
    X = np.ascontiguousarray(X, dtype=np.float64)
    spec, scale, used = _scales(grid, W, X)
    layer = _layer(spec, scale, W)
    Q, _ = _run_modes(gpfq_mode, layer, X, X, act_order=act_order, algorithm_impl=GPFQ)
    used = _used_common(spec, scale, layer, used)
    used.update(damping="none (GPFQ has no damping; the audit's λ is not used)", act_order=act_order)
    return AdapterResult(Q=Q, used=used)


_GPTQ_CONV = (
    ("dead features", "zeroes their weights and sets H_tt = 1 in units of (2/m)XᵀX, as GPTQ"),
    ("damping", "percdamp × mean diag((2/m)XᵀX); mapped from λ exactly (λ·2/m)"),
    ("act_order", "torch.argsort(diag H, descending=True) is not stable: tied columns (duplicate features) are "
                  "processed in another order than GPTQ's by-index tie-break; the adapter records the permutation "
                  "brevitas used and the audit judges under it (its Q then equals OPTQ's under that permutation "
                  "bit for bit): a convention difference, not a bound's violation"),
    ("grids", "fixed scale parameters only: per-row and static groups; no asymmetric, no on-the-fly groups"),
)

ADAPTERS = (
    Adapter(name="brevitas-gptq", library="brevitas", module="brevitas", kind="optq", proved=True, quantizer=gptq,
            install=INSTALL, orders=("natural", "decreasing"), grids=("gptq", "gptq-static", "symmetric"),
            algorithm="brevitas.graph.gptq.gptq_mode", conventions=_GPTQ_CONV),
    Adapter(name="brevitas-qronos", library="brevitas", module="brevitas", kind="qronos-original",
            audit_kind="qronos-original", proved=True, quantizer=qronos, install=INSTALL,
            orders=("natural", "decreasing"), grids=("gptq", "symmetric"),
            algorithm="brevitas.graph.qronos.Qronos via gpfq_mode",
            conventions=(("damping", "alpha × a 30-step power-iteration estimate of λmax(X̃ᵀX̃/m), run on H after the "
                                     "act_order permutation (so the estimate, and the damping, depend on the order); "
                                     "mapped with brevitas' own estimate on the same permuted H so that it is λ/m"),
                         ("dead features", "zeroes the weights of features dead in X̃ before the loop"),
                         ("act_order", "by diag(X̃ᵀX̃), torch.argsort (not stable)"))),
    Adapter(name="brevitas-gpfq", library="brevitas", module="brevitas", kind="other", audit_kind="optq",
            proved=False, quantizer=gpfq, install=INSTALL, orders=("natural", "decreasing"),
            grids=("gptq", "gptq-static", "symmetric"), algorithm="brevitas.graph.gpfq.GPFQ via gpfq_mode",
            conventions=(("algorithm", "greedy path following (GPFQ), not OPTQ: audited with matched inputs "
                                       "against OPTQ's claims as empirical questions"),
                         ("damping", "none: λ is not used"))),
)
