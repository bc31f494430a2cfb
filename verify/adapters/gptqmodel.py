"""GPTQModel (ModelCloud): GPTQ, ``gptqmodel.quantization.gptq.GPTQ``.

The adapter builds gptqmodel's own ``GPTQ`` object on a ``torch.nn.Linear``, feeds the calibration
inputs through its ``add_batch`` and runs its ``hf_quantize`` (the entry point it keeps for HF
optimum), which calls its ``quantize``:

* Grids. gptqmodel fits GPTQ's min/max grid itself (its ``Quantizer.find_params``, the GPTQ
  reference's): per row on the original weights (before dead features are zeroed), groups on the
  fly at the group's first column from the updated weights, or static groups (fitted after the
  zeroing). So ``gptq``, ``gptq-group`` and ``gptq-static`` are passed as configuration (bits, sym,
  group_size, static_groups), not as parameters; the scales it used are returned in ``used``.
  Declined: the symmetric ``δ·{−K..K}`` grid (odd number of levels).
* Hessian and damping. ``add_batch`` counts tokens: ``H = (2/m)XᵀX`` (accumulated in float32).
  Dead features: ``H_tt = 1`` and weights zeroed. Damping ``damp_percent·mean(diag H)``;
  ``damp_percent = λ·(2/m)/mean(diag H)`` gives ``λ``. ``damp_auto_increment = 0``: no automatic
  increase; gptqmodel may still add a diagonal floor when the factorisation fails (logged), which
  is reported in ``used["fallback"]`` when the damping it returns differs from the one given.
* Order. ``natural``: ``desc_act=False, act_group_aware=False`` (gptqmodel's default GAR ordering
  is switched off); ``decreasing``: ``desc_act=True`` (``torch.argsort(diag H, descending=True)``,
  not stable; recorded and returned in ``used["order"]``).
* Precision: float32 (the weights are cloned with ``.float()``, H is float32), declared.
"""

from __future__ import annotations

import numpy as np

from . import Adapter, AdapterResult
from ._gptq_common import class_setup, class_used, percdamp_for, recording_argsort, torch_linear

INSTALL = ("pip install 'provable-ptq[gptqmodel]' (gptqmodel==7.7.0, torch==2.14.1) in its own environment: "
           "bash benchmarks/field_audit_envs.sh gptqmodel")


def _quantize(g, lin, D, lam, grid, group, blocksize, order):
    """Run gptqmodel's ``hf_quantize`` on ``g`` (a GPTQ or GPTAQ holding the Hessian of the loop data
    ``D``), with λ mapped to its ``damp_percent``; ``(Q, used)`` with what was actually applied."""
    import torch

    m, N = D.shape
    # the diagonal gptqmodel will hold (float32, dead → 1), for the damping map
    H32 = (torch.from_numpy(D).float().T @ torch.from_numpy(D).float()) * (2.0 / m)
    d = torch.diagonal(H32).double().numpy().copy()
    d[d == 0] = 1.0
    percdamp = percdamp_for(lam, d, 2.0 / m)
    with recording_argsort(torch) as sorts, torch.no_grad():
        scale, zero, g_idx, _dur, avg_loss, damp_used = g.hf_quantize(
            blocksize=blocksize, percdamp=percdamp, damp_auto_increment=0.0, group_size=group,
            actorder=order == "decreasing", static_groups=bool(grid.static_groups), act_group_aware=False)
    Q = lin.weight.detach().double().numpy().copy()
    perm = next((p for p in sorts if p.shape == (N,)), None) if order == "decreasing" else np.arange(N)
    fallback = None
    if float(damp_used) != float(percdamp):
        fallback = f"damping changed by gptqmodel: damp_percent {percdamp:.6g} → {float(damp_used):.6g}"
    used = class_used(scale=scale, zero=zero, g_idx=g_idx, grid=grid, group=group, percdamp=percdamp, order=order,
                      perm=perm, d=d, D=D, blocksize=blocksize)
    used.update(damp_percent_used=float(damp_used), avg_loss=float(avg_loss), fallback=fallback)
    return Q, used


def gptq(W, X, *, grid, lam, rng=None, order="natural", blocksize=128):
    """gptqmodel's GPTQ (``GPTQ.hf_quantize``) on one ``nn.Linear``."""
    import torch
    from gptqmodel.quantization import QuantizeConfig
    from gptqmodel.quantization.gptq import GPTQ

    W = np.array(W, dtype=np.float64, copy=True)
    X = np.array(X, dtype=np.float64, copy=True)
    m, N = X.shape
    group, blocksize = class_setup("gptqmodel", grid, order, blocksize, N)
    lin = torch_linear(W, "float64")
    qcfg = QuantizeConfig(bits=int(grid.bits), group_size=group, sym=bool(grid.sym), desc_act=order == "decreasing",
                          act_group_aware=False)
    g = GPTQ(lin, qcfg)
    g.quantizer.configure(perchannel=True)  # as gptqmodel's GPTQProcessor does
    g.add_batch(torch.from_numpy(X)[None], None)
    Q, used = _quantize(g, lin, X, lam, grid, group, blocksize, order)
    used.update(damping=f"damp_percent={used['percdamp']:.6g} of mean diag((2/m)XᵀX) (dead → 1) = λ·2/m",
                act_group_aware=False)
    return AdapterResult(Q=Q, used=used)


def gptaq(W, X, *, X_tilde, grid, lam, rng=None, order="natural", blocksize=128, alpha=None):
    """gptqmodel's GPTAQ (``gptqmodel.quantization.gptaq.GPTAQ``, through ``hf_quantize``) on one
    ``nn.Linear``: ``X_tilde`` the inputs of the quantized model (what ``add_batch`` receives),
    ``X`` the float model's (its native inputs); ``alpha`` gptqmodel's default (0.25) unless given.

    Mapping as :func:`gptq`: ``H = (2/B)·X̃ᵀX̃`` normalised by the number of *requests* ``B`` (fed as
    ``m`` requests of one token: ``(2/m)X̃ᵀX̃``), ``ΔXX̃ᵀ = (2/m)(X − X̃)ᵀX̃``; the per-row grid fitted
    on W before the dead features are zeroed, static groups after; act_order by
    ``torch.argsort(diag H, descending=True)``, the column order restored for every grid; an
    on-the-fly group is fitted from W as of the start of the lazy block (``W1`` is a clone), so
    groups fitted on the fly run with blocks of one group."""
    import torch
    from gptqmodel.looper.named_module import NamedModule
    from gptqmodel.looper.native_processor import NATIVE_INPUTS_STATE_KEY
    from gptqmodel.quantization import QuantizeConfig
    from gptqmodel.quantization.config import GPTAQConfig
    from gptqmodel.quantization.gptaq import GPTAQ

    W = np.array(W, dtype=np.float64, copy=True)
    X = np.array(X, dtype=np.float64, copy=True)
    Xt = np.array(X_tilde, dtype=np.float64, copy=True)
    m, N = Xt.shape
    group, blocksize = class_setup("gptqmodel", grid, order, blocksize, N)
    lin = torch_linear(W, "float64")
    named = NamedModule(lin, name="layer", full_name="model.layers.0.layer", layer_index=0)
    named.state[NATIVE_INPUTS_STATE_KEY] = [torch.from_numpy(X).reshape(m, 1, N)]
    qcfg = QuantizeConfig(bits=int(grid.bits), group_size=group, sym=bool(grid.sym), desc_act=order == "decreasing",
                          act_group_aware=False,
                          gptaq=GPTAQConfig(**({} if alpha is None else {"alpha": float(alpha)})))
    g = GPTAQ(named, qcfg)
    g.quantizer.configure(perchannel=True)
    g.add_batch(torch.from_numpy(Xt).reshape(m, 1, N), None)  # m requests of one token
    Q, used = _quantize(g, lin, Xt, lam, grid, group, blocksize, order)
    used.update(alpha=float(qcfg.gptaq.alpha),
                damping=f"damp_percent={used['percdamp']:.6g} of mean diag((2/m)X̃ᵀX̃) (dead → 1) = λ·2/m",
                hessian="H = (2/m)X̃ᵀX̃, dXXT = (2/m)(X − X̃)ᵀX̃ over m requests of 1 token, float32")
    return AdapterResult(Q=Q, used=used)


ADAPTERS = (
    Adapter(name="gptqmodel-gptq", library="gptqmodel", module="gptqmodel.quantization.gptq", kind="optq",
            proved=True, quantizer=gptq, install=INSTALL, orders=("natural", "decreasing"),
            grids=("gptq", "gptq-group", "gptq-static", "symmetric"), precision="float32",
            algorithm="gptqmodel.quantization.gptq.GPTQ.hf_quantize",
            conventions=(
                ("grids", "fits GPTQ's min/max grid itself (per row before dead zeroing, on-the-fly and static "
                          "groups): all three GPTQ grids run natively"),
                ("damping", "damp_percent × mean diag((2/m)XᵀX) (per token; dead → 1); mapped from λ exactly; "
                            "damp_auto_increment set to 0"),
                ("act_order", "desc_act: torch.argsort(diag H, descending=True), not stable; its default "
                              "act_group_aware (GAR) ordering is switched off for the natural order"),
                ("precision", "float32 (weights cloned with .float(), Hessian float32)"),
                ("on-the-fly groups", "fitted from W as it stands at the start of the 128-column lazy block (the GPTQ "
                                      "reference's behaviour), not from the weights updated inside the block: with "
                                      "the default blocksize its Q is off the audit's grid (~35-40% of entries agree "
                                      "with optq on 8×32 layers); run with blocksize = group size, where both "
                                      "conventions coincide (then 100% agree)"),
            )),
    Adapter(name="gptqmodel-gptaq", library="gptqmodel", module="gptqmodel.quantization.gptaq", kind="other",
            audit_kind="qronos-projection", proved=False, quantizer=gptaq, install=INSTALL,
            orders=("natural", "decreasing"), grids=("gptq", "gptq-group", "gptq-static", "symmetric"),
            precision="float32", algorithm="gptqmodel.quantization.gptaq.GPTAQ.quantize (via hf_quantize)",
            conventions=(
                ("algorithm", "GPTAQ (asymmetric calibration, GPTQv2; alpha = 0.25): GPTQ's loop on H = (2/m)X̃ᵀX̃ with "
                              "an extra correction P = alpha·triu₁(ΔXX̃ᵀ·Uᵀ)·U (U the upper Cholesky factor of H⁻¹); not OPTQ "
                              "nor Qronos: audited with mismatched inputs against qronos-projection's claims as "
                              "empirical questions"),
                ("hessian", "normalised by the number of calibration requests (batches), not tokens; the adapter "
                            "feeds m requests of one token, so H = (2/m)X̃ᵀX̃"),
                ("damping", "damp_percent × mean diag((2/m)X̃ᵀX̃) (dead → 1); mapped from λ exactly; "
                            "damp_auto_increment set to 0"),
                ("grids", "fits GPTQ's min/max grid itself (per row before dead zeroing, static groups after)"),
                ("act_order", "desc_act: torch.argsort(diag H, descending=True), not stable; no GAR ordering in GPTAQ"),
                ("on-the-fly groups", "fitted from W as of the start of the lazy block (W1 is a clone): run with "
                                      "blocksize = group size, where this is the audit's fit"),
                ("precision", "float32 (weights cloned with .float(), Hessian float32)"),
            )),
)
