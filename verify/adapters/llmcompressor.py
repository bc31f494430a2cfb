"""llm-compressor (vLLM project): GPTQ, ``llmcompressor.modifiers.gptq.gptq_quantize.quantize_weight``.

The adapter calls llm-compressor's own batched ``quantize_weight`` (and its ``accumulate_hessian``)
on one layer, batch of one, with compressed-tensors' ``QuantizationArgs``:

* Grids. compressed-tensors' ``int`` type of ``b`` bits has codes ``−2^(b−1)..2^(b−1)−1``;
  symmetric quantization is ``s·clamp(round(w/s), −2^(b−1), 2^(b−1)−1)``, exactly GPTQ's symmetric
  grid (zero point ``2^(b−1)`` on unsigned codes). ``quantize_weight`` takes the scales fixed
  (the pipeline's observer computes them from the original weights before the loop), so ``gptq``
  (per row, ``strategy="channel"``) and ``gptq-static`` (``strategy="group"``, groups fitted on W
  with dead features zeroed) are written as its ``scale`` argument. Declined: groups fitted on the
  fly and the symmetric ``δ·{−K..K}`` grid (odd number of levels).
* Hessian and damping. ``accumulate_hessian`` on the inputs given as ``m`` sequences of one token
  (the pipeline divides by the number of *sequences*, so this is ``H = (2/m)XᵀX``, GPTQ's
  convention; a real pipeline with sequences of T tokens has ``H = (2/B)XᵀX``, T times larger, which
  percdamp, being relative, does not see). ``factorize_hessian`` sets dead features' ``H_tt = 1``
  and zeroes their weights, then adds ``percdamp·mean(diag H)``; ``percdamp = λ·(2/m)/mean(diag H)``
  (computed from the H llm-compressor holds, in its precision) makes it ``λ`` in units of ``XᵀX``.
* Order. ``natural``: ``actorder=None``; ``decreasing``: ``actorder="weight"`` (argsort of diag H,
  ``descending=True``; not stable). The permutation actually used is recorded by wrapping
  ``apply_activation_ordering`` (llm-compressor's own function is called) and returned in
  ``used["order"]``. With static groups and ``actorder="weight"`` the group index follows the
  original columns (GPTQ's static_groups).
* Precision. llm-compressor works in ``GPTQ_PRECISION = torch.float32``: the adapter runs it as
  shipped and declares float32. ``precision="float64"`` (for the equality tests) sets that module
  constant to ``torch.float64`` for the call and restores it.
* Fallback. When the Cholesky factorisation fails llm-compressor replaces ``H⁻¹`` by the identity
  and rounds to nearest, without raising (it logs a warning in the pipeline): returned in
  ``used["fallback"]``.
"""

from __future__ import annotations

import numpy as np

from ..audit import Decline
from . import Adapter, AdapterResult
from ._gptq_common import dead_mask, fixed_gptq_params, patched, percdamp_for, stable_decreasing

INSTALL = ("pip install 'provable-ptq[llmcompressor]' (llmcompressor==0.14.0.1, torch==2.13.0) in its own "
           "environment: bash benchmarks/field_audit_envs.sh llmcompressor")


def gptq(W, X, *, grid, lam, rng=None, order="natural", precision="float32", blocksize=128):
    """llm-compressor's GPTQ (``quantize_weight``) on one layer."""
    import torch
    from compressed_tensors.quantization import QuantizationArgs

    import llmcompressor.modifiers.gptq.gptq_quantize as gq
    import llmcompressor.modifiers.gptq.helpers as gh

    if order not in ("natural", "decreasing"):
        raise Decline(f"order {order!r}: llm-compressor has natural order and actorder='weight' (decreasing) only")
    dt = {"float32": torch.float32, "float64": torch.float64}[precision]
    W = np.array(W, dtype=np.float64, copy=True)  # quantize_weight works in place on a float buffer
    X = np.array(X, dtype=np.float64, copy=True)
    m, N = X.shape
    n = W.shape[0]
    scale, _zero, group = fixed_gptq_params(grid, W, X, library="llm-compressor", asym=False)
    args = {"num_bits": int(grid.bits), "type": "int", "symmetric": True,
            "strategy": "group" if group else "channel"}
    if group:
        args["group_size"] = group
    if order == "decreasing":
        args["actorder"] = "weight"
    qargs = QuantizationArgs(**args)

    perms = []
    orig_aao = gq.apply_activation_ordering

    def spy(Wt, Ht, actorder):
        out = orig_aao(Wt, Ht, actorder)
        if out[2] is not None:
            perms.append(out[2].detach().cpu().numpy().astype(np.int64).copy())
        return out

    with patched(gq, "GPTQ_PRECISION", dt), patched(gh, "GPTQ_PRECISION", dt), patched(gq, "apply_activation_ordering", spy):
        lin = torch.nn.Linear(N, n, bias=False, dtype=dt)
        H = gh.make_empty_hessian(lin)
        ns = torch.zeros(1, dtype=torch.int64)
        # m sequences of one token each: the pipeline's normalisation by sequences is then by tokens
        H, ns = gh.accumulate_hessian(torch.from_numpy(X).to(dt).reshape(m, 1, N), lin, H, ns)
        H = H / ns.to(H.device)
        d = torch.diagonal(H).detach().double().numpy().copy()
        d[d == 0] = 1.0  # llm-compressor's dead-feature value (factorize_hessian)
        percdamp = percdamp_for(lam, d, 2.0 / m)
        s_t = torch.from_numpy(scale).to(dt)
        Q, losses, fallback = gq.quantize_weight(
            torch.from_numpy(W).to(dt)[None], H[None], s_t[None], torch.zeros_like(s_t, dtype=torch.int8)[None],
            None, qargs, blocksize=blocksize, percdamp=percdamp)
    Q = Q[0].detach().double().numpy().copy()
    used_perm = perms[0][0] if perms else np.arange(N)
    used = {"scales": scale.tolist(), "zero_point": 0, "zero_point_convention":
            f"signed int{grid.bits} codes −2^(b−1)..2^(b−1)−1, zero point 0 (GPTQ's 2^(b−1) on unsigned codes)",
            "strategy": args["strategy"], "group_size": group, "g_idx": (np.arange(N) // group).tolist() if group else None,
            "percdamp": percdamp, "damping": f"percdamp={percdamp:.6g} of mean diag H, H = (2/m)XᵀX (dead → 1): λ·2/m",
            "hessian": "accumulate_hessian over m sequences of 1 token, divided by the number of sequences",
            "blocksize": blocksize, "actorder": args.get("actorder"), "precision": precision,
            "dead_features": np.flatnonzero(dead_mask(X)).tolist(), "dead_convention": "zeroed, H_tt = 1",
            "order": [int(i) for i in used_perm],
            "permutation_expected": stable_decreasing(d).tolist() if order == "decreasing" else list(range(N)),
            "loss": float(losses[0]),
            "fallback": ("round-to-nearest: the Cholesky factorisation of the damped Hessian failed; llm-compressor "
                         "replaced H⁻¹ by the identity without raising") if bool(fallback[0]) else None}
    return AdapterResult(Q=Q, used=used)


ADAPTERS = (
    Adapter(name="llmcompressor-gptq", library="llmcompressor", module="llmcompressor.modifiers.gptq.gptq_quantize",
            kind="optq", proved=True, quantizer=gptq, install=INSTALL, orders=("natural", "decreasing"),
            grids=("gptq", "gptq-static", "symmetric", "gptq-group"), precision="float32",
            algorithm="llmcompressor.modifiers.gptq.gptq_quantize.quantize_weight",
            conventions=(
                ("hessian", "H = 2·Σ xxᵀ / (number of sequences) in the pipeline, not per token; the adapter feeds m "
                            "sequences of one token, so H = (2/m)XᵀX (GPTQ's convention); percdamp is relative, so "
                            "only the dead-feature value H_tt = 1 depends on the normalisation"),
                ("damping", "percdamp × mean diag H (dead → 1); mapped from λ exactly (λ·2/m)"),
                ("dead features", "zeroes their weights and sets H_tt = 1, as GPTQ"),
                ("precision", "GPTQ_PRECISION = float32 (Hessian, factorisation and loop); audited in float32"),
                ("act_order", "actorder='weight': torch.argsort(diag H, descending=True), not stable: tied columns "
                              "may be processed in another order than GPTQ's by-index tie-break; the permutation "
                              "used is reported and judged"),
                ("grids", "scales fixed before the loop (observer on the original weights): per row and static "
                          "groups; on-the-fly groups and odd-level grids declined"),
                ("fallback", "a failed Cholesky silently falls back to round-to-nearest (H⁻¹ = I), flagged only in "
                             "its return value"),
            )),
)
