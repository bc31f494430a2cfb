"""AutoGPTQ: GPTQ, ``auto_gptq.quantization.gptq.GPTQ`` (the classic code path, ``fasterquant``).

The adapter builds AutoGPTQ's own ``GPTQ`` object on a ``torch.nn.Linear`` (float32, as AutoGPTQ
holds its layers), feeds the calibration inputs through its ``add_batch`` and runs its
``fasterquant``:

* Grids. AutoGPTQ fits GPTQ's min/max grid itself with its ``Quantizer.find_params`` (configured
  ``perchannel=True``, ``mse=False``): per row on the original weights (before the dead features
  are zeroed), groups on the fly at the group's first column, static groups after the zeroing. An
  on-the-fly group is fitted from ``W`` as it stands at the start of the lazy block (the block's
  updates go to a clone), so those cases run with blocks of one group, where this is the audit's
  fit. Declined: the symmetric ``δ·{−K..K}`` grid (odd number of levels).
* Hessian and damping. ``add_batch`` normalises by the batch dimension (sequences): the inputs are
  fed as ``m`` sequences of one token, so ``H = (2/m)XᵀX``, accumulated in float32. Dead features:
  ``H_tt = 1`` and weights zeroed. Damping ``percdamp·mean(diag H)`` with
  ``percdamp = λ·(2/m)/mean(diag H)``, so that it equals ``λ`` in units of ``XᵀX``.
* Order. ``natural``: ``actorder=False``; ``decreasing``: ``actorder=True``
  (``torch.argsort(diag H, descending=True)``, not stable; recorded and returned in
  ``used["order"]``).
* Precision: float32 (weights ``.float()``, Hessian float32), declared.
* CPU. ``fasterquant`` ends with ``torch.cuda.synchronize()``, which raises on a CPU-only torch; the
  adapter replaces that one call by a no-op while ``fasterquant`` runs (nothing else is changed).
"""

from __future__ import annotations

import numpy as np

from . import Adapter, AdapterResult
from ._gptq_common import class_setup, class_used, patched, percdamp_for, recording_argsort, torch_linear

INSTALL = ("pip install 'provable-ptq[auto-gptq]' (auto-gptq==0.7.1, torch==2.13.0, transformers==4.40.2) in its "
           "own environment: bash benchmarks/field_audit_envs.sh auto-gptq")


def gptq(W, X, *, grid, lam, rng=None, order="natural", blocksize=128):
    """AutoGPTQ's GPTQ (``GPTQ.fasterquant``) on one float32 ``nn.Linear``."""
    import torch
    from auto_gptq.quantization.gptq import GPTQ

    W = np.array(W, dtype=np.float64, copy=True)
    X = np.array(X, dtype=np.float64, copy=True)
    m, N = X.shape
    group, blocksize = class_setup("auto-gptq", grid, order, blocksize, N)
    lin = torch_linear(W, "float32")
    g = GPTQ(lin)
    g.quantizer.configure(int(grid.bits), perchannel=True, sym=bool(grid.sym), mse=False)
    g.add_batch(torch.from_numpy(X).float().reshape(m, 1, N), None)  # m sequences of one token
    d = torch.diagonal(g.H).double().numpy().copy()
    d[d == 0] = 1.0  # AutoGPTQ's dead-feature value
    percdamp = percdamp_for(lam, d, 2.0 / m)
    with recording_argsort(torch) as sorts, patched(torch.cuda, "synchronize", lambda *a, **k: None), \
            torch.no_grad():
        scale, zero, g_idx = g.fasterquant(blocksize=blocksize, percdamp=percdamp, group_size=group,
                                           actorder=order == "decreasing", static_groups=bool(grid.static_groups))
    Q = lin.weight.detach().numpy().copy()  # float32: its working precision
    perm = next((p for p in sorts if p.shape == (N,)), None) if order == "decreasing" else np.arange(N)
    used = class_used(scale=scale, zero=zero, g_idx=g_idx, grid=grid, group=group, percdamp=percdamp, order=order,
                      perm=perm, d=d, D=X, blocksize=blocksize)
    used.update(damping=f"percdamp={percdamp:.6g} of mean diag((2/m)XᵀX) (dead → 1) = λ·2/m",
                hessian="add_batch over m sequences of 1 token (normalised by sequences), float32",
                dead_convention="zeroed, H_tt = 1")
    return AdapterResult(Q=Q, used=used)


ADAPTERS = (
    Adapter(name="autogptq-gptq", library="auto-gptq", module="auto_gptq.quantization.gptq", kind="optq",
            proved=True, quantizer=gptq, install=INSTALL, orders=("natural", "decreasing"),
            grids=("gptq", "gptq-group", "gptq-static", "symmetric"), precision="float32",
            algorithm="auto_gptq.quantization.gptq.GPTQ.fasterquant",
            conventions=(
                ("grids", "fits GPTQ's min/max grid itself (per row before dead zeroing, on-the-fly and static "
                          "groups): all three GPTQ grids run natively"),
                ("hessian", "normalised by the number of sequences (the batch dimension), not tokens; the adapter "
                            "feeds m sequences of one token, so H = (2/m)XᵀX"),
                ("damping", "percdamp × mean diag H (dead → 1); mapped from λ exactly"),
                ("act_order", "desc_act: torch.argsort(diag H, descending=True), not stable; the permutation used is "
                              "reported and judged"),
                ("on-the-fly groups", "fitted from W as of the start of the lazy block (the GPTQ reference's "
                                      "behaviour): run with blocksize = group size, where this is the audit's fit"),
                ("precision", "float32 (weights .float(), Hessian float32)"),
                ("cpu", "fasterquant calls torch.cuda.synchronize(), which raises on a CPU-only torch: replaced by a "
                        "no-op for the call"),
                ("import", "auto-gptq 0.7.1 imports transformers.modeling_utils.no_init_weights, gone from "
                           "transformers ≥ 5: its environment pins transformers 4.40.2"),
            )),
)
