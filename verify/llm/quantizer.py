"""The fixed sequential quantizer that produces X̃ in the real-LLM campaign and in captures.

Every linear layer executed before the one captured is quantized by :func:`sequential_quantizer`
(deterministic OPTQ of :mod:`algorithms`); :func:`quantizer_id` names a spec in cache keys. Kept
apart from :mod:`verify.llm.campaign` so that the capture code (:mod:`verify.llm.hf`) can use it
without depending on the campaign.
"""

from __future__ import annotations

import json

import numpy as np

from ..campaign import make_grid

__all__ = ["SEQUENTIAL_QUANTIZER", "quantizer_id", "sequential_quantizer"]

#: the fixed quantizer of every layer in the sequential pass that produces X̃
SEQUENTIAL_QUANTIZER = {
    "algorithm": "optq",
    "grid": {"kind": "gptq", "bits": 4, "sym": False},
    "percdamp": 0.01,
    "order": "decreasing",
    "rounding": "nearest",
    "inputs": "float",
    "block_size": 128,
}


def _canon(d) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def quantizer_id(spec: dict | None = None) -> str:
    """The identity of a sequential quantizer spec (goes into the cache key)."""
    spec = SEQUENTIAL_QUANTIZER if spec is None else spec
    return "provable-ptq/optq-v1:" + _canon(spec)


def sequential_quantizer(spec: dict | None = None):
    """``quantize(name, W, X, X_tilde) -> Q`` for :func:`verify.llm.sequential_capture`: deterministic
    OPTQ of :mod:`algorithms` with the spec's grid, damping and order, on the float inputs ``X``
    (``inputs="float"``) or on ``X̃`` (``inputs="quantized"``, GPTQ's sequential practice)."""
    import algorithms as A

    spec = dict(SEQUENTIAL_QUANTIZER if spec is None else spec)
    if spec.get("algorithm") != "optq" or spec.get("rounding", "nearest") != "nearest":
        raise ValueError("sequential quantizer: only deterministic OPTQ is supported")
    if spec.get("inputs") not in ("float", "quantized"):
        raise ValueError("sequential quantizer: inputs must be 'float' or 'quantized'")
    grid = make_grid(spec["grid"], None)
    damp = {"percdamp": float(spec["percdamp"])} if "percdamp" in spec else {"lam": float(spec["lam"])}

    def quantize(name, W, X, X_tilde):
        data = X if spec["inputs"] == "float" else X_tilde
        r = A.optq(W, data, grid=grid, order=spec["order"], block_size=int(spec.get("block_size", 128)), **damp)
        return np.asarray(r.Q)

    return quantize
