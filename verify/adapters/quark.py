"""AMD Quark (``amd-quark``): GPTQ, GPTAQ and Qronos, ``quark.torch.algorithm.{gptq,gptaq,qronos}``.

Each adapter builds Quark's own per-layer algorithm object (``GPTQ``, ``Gptaq``, ``Qronos``, the
classes its ``*Processor`` instantiates for every ``nn.Linear`` of a decoder layer) on a one-layer
``torch.nn.Linear`` that carries a Quark weight quantizer (``FakeQuantizeBase.get_fake_quantize``
of a ``QTensorConfig``, as Quark attaches to a quantized linear), feeds the calibration inputs
through the object's ``add_batch_quantized`` / ``add_batch_nonquantized`` hooks and calls its
``quantize`` with the arguments the processor takes from Quark's ``GPTQConfig`` / ``GPTAQConfig`` /
``QronosConfig`` (built here, so that Quark's own validation applies).

* Grids. Quark's ``int{b}`` weight quantizer with ``PerChannelMinMaxObserver`` (per row) or
  ``PerGroupMinMaxObserver`` (groups; Quark observes each group with a per-channel quantizer):
  symmetric ``scale = max|w|/((2^b−1)/2)`` on codes ``−2^(b−1)..2^(b−1)−1``, asymmetric
  ``scale = (max(w,0) − min(w,0))/(2^b−1)`` with an integer zero point, rounding half to even: GPTQ's
  min/max grid, except that GPTQ's symmetric fit keeps ``xmin = 0`` for a row (group) without a
  negative weight (scale ``max/(2^b−1)``, twice finer than Quark's): such cases are declined.
  Quark fits the grid itself: per row *after* zeroing the weights of dead features (GPTQ and the
  audit fit it before), so a per-row case whose grid changes by that zeroing is declined, and the
  difference is reported as a convention; static groups (fitted after the zeroing, as GPTQ) and
  groups fitted on the fly (at the group's first column, from the updated weights) run natively.
  Declined: the symmetric ``δ·{−K..K}`` grid (odd number of levels), per-tensor grids, bit widths
  Quark has no integer type for.
* Hessian and damping. GPTQ/GPTAQ: ``add_batch_quantized`` normalises by the number of *batches*
  (sequences); the inputs are fed as ``m`` sequences of one token, so ``H = (2/m)XᵀX`` (float32).
  Dead features ``H_tt = 1`` and weights zeroed; damping ``damp_percent·mean(diag H)`` with
  ``damp_percent = λ·(2/m)/mean(diag H)`` (from the H Quark holds) gives ``λ``. Qronos:
  ``H = X̃ᵀX̃/m``, ``G = XᵀX̃/m``, damping ``alpha·λ̂_max(H)`` with Quark's own 30-step power
  iteration (``Qronos.power_iteration``) on H after the act_order permutation, so
  ``alpha = λ/(m·λ̂_max)``; Quark adds the same damping to G (``(X̃ᵀX + λI)``, as published).
* Order. ``natural``: ``desc_act=False``; ``decreasing``: ``desc_act=True``
  (``torch.argsort(diag H, descending=True)``, not stable; recorded and returned in
  ``used["order"]``). Quark's configs reject ``desc_act=True`` with ``static_groups=False``, and its
  algorithms restore the original column order only when ``static_groups`` is set: with the per-row
  grid ``static_groups=True`` is passed (it changes nothing else there), and act_order with groups
  fitted on the fly is declined.
* Precision: float32 (the weight is cast with ``.float()``, H and G are float32), declared.
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..audit import Decline
from . import Adapter, AdapterResult
from ._gptq_common import (
    dead_mask,
    minmax,
    patched,
    percdamp_for,
    recording_argsort,
    stable_decreasing,
    torch_linear,
)

INSTALL = ("pip install 'provable-ptq[amd-quark]' (amd-quark==0.13, torch==2.13.0, transformers==5.17.0) in its "
           "own environment: bash benchmarks/field_audit_envs.sh amd-quark")

_DTYPES = {2: "int2", 3: "int3", 4: "int4", 8: "int8"}


@contextlib.contextmanager
def _quiet_and_watch(module):
    """Quark's INFO logging and ``module``'s tqdm bars off (its warnings stay); yields a list that
    receives one entry per failed Cholesky factorisation (``torch.linalg.cholesky`` raising
    ``LinAlgError``, after which Quark's GPTQ retries with extra diagonal regularisation)."""
    import functools
    import logging

    import torch
    from quark.common.utils.log import ScreenLogger

    level = ScreenLogger._shared_level
    ScreenLogger.set_shared_level(max(level, logging.WARNING))
    failures = []
    orig = torch.linalg.cholesky

    def spy(*a, **k):
        try:
            return orig(*a, **k)
        except torch.linalg.LinAlgError as exc:
            failures.append(" ".join(str(exc).split())[:160])
            raise

    bar = getattr(module, "tqdm", None)
    with contextlib.ExitStack() as st:
        if bar is not None:
            st.enter_context(patched(module, "tqdm", functools.partial(bar, disable=True)))
        st.enter_context(patched(torch.linalg, "cholesky", spy))
        st.callback(ScreenLogger.set_shared_level, level)
        yield failures


def _check_grid(grid, W, X, order):
    """Decline what Quark cannot represent; returns the group size (or None)."""
    n, N = W.shape
    if grid.kind != "gptq":
        raise Decline("quark: only GPTQ's min/max integer grids are mapped (a symmetric grid δ·{−K..K} has an odd "
                      "number of levels, Quark's b-bit integer grids an even one)")
    if not grid.perchannel:
        raise Decline("quark: per-tensor GPTQ grids are not mapped")
    if int(grid.bits) not in _DTYPES:
        raise Decline(f"quark: no integer type of {grid.bits} bits (int2, int3, int4, int8)")
    g = int(grid.group_size) if grid.group_size else None
    if g and N % g:
        raise Decline(f"quark: N={N} is not a multiple of the group size {g}")
    if order == "decreasing" and g and not grid.static_groups:
        raise Decline("quark: act_order (desc_act=True) with groups fitted on the fly: Quark's configs reject "
                      "desc_act=True with static_groups=False, and its algorithms called directly never restore "
                      "the column order then")
    dead = dead_mask(X)
    W0 = np.where(dead[None, :], 0.0, W)
    if not g:
        if dead.any():
            s0, z0 = minmax(W0, grid.bits, grid.sym)
            s1, z1 = minmax(W, grid.bits, grid.sym)
            if not (np.array_equal(s0, s1) and np.array_equal(z0, z1)):
                raise Decline("quark: fits the per-row grid after zeroing the weights of dead features (GPTQ fits it "
                              "before); on this layer the two grids differ")
        blocks = [W0]
    elif grid.static_groups:
        blocks = [W0[:, j:j + g] for j in range(0, N, g)]
    else:
        blocks = []  # fitted on the fly from the updated weights: not known in advance
    if grid.sym:
        for B in blocks:
            if np.any((B.min(axis=1) >= 0) & (B.max(axis=1) > 0)):
                raise Decline("quark: a row (group) without a negative weight: GPTQ's symmetric min/max keeps xmin = 0 "
                              "there (scale max/(2^b−1)), Quark's symmetric observer uses max|w|/((2^b−1)/2)")
    return g


def _layer(W, grid, g):
    """A one-layer ``nn.Linear`` (float32) carrying Quark's weight quantizer for ``grid``."""
    import torch
    from quark.torch.quantization.config.config import QTensorConfig
    from quark.torch.quantization.config.type import Dtype, QSchemeType, RoundType, ScaleType
    from quark.torch.quantization.observer.observer import PerChannelMinMaxObserver, PerGroupMinMaxObserver
    from quark.torch.quantization.tensor_quantize import FakeQuantizeBase

    n, N = W.shape
    common = dict(dtype=getattr(Dtype, _DTYPES[int(grid.bits)]), symmetric=bool(grid.sym), scale_type=ScaleType.float,
                  round_method=RoundType.half_even, is_dynamic=False)
    if g:
        spec = QTensorConfig(qscheme=QSchemeType.per_group, observer_cls=PerGroupMinMaxObserver, group_size=g,
                             ch_axis=1, **common)
    else:
        spec = QTensorConfig(qscheme=QSchemeType.per_channel, observer_cls=PerChannelMinMaxObserver, ch_axis=0,
                             **common)
    lin = torch_linear(W, "float32")
    lin._weight_quantizer = FakeQuantizeBase.get_fake_quantize(spec, torch.device("cpu"))
    return lin, spec


def _seqs(A):
    """``m × N`` inputs as ``m`` sequences of one token (Quark normalises by the number of sequences)."""
    import torch

    A = np.ascontiguousarray(A, dtype=np.float64)
    return torch.from_numpy(A).float().reshape(A.shape[0], 1, A.shape[1])


def _finish(lin, algo_or_quantizer, W, X, grid, g, order, sorts, diag, extra):
    Q = lin.weight.detach().double().numpy().copy()
    N = W.shape[1]
    perm = next((p for p in sorts if p.shape == (N,)), None) if order == "decreasing" else np.arange(N)
    wq = lin._weight_quantizer
    sc = getattr(wq, "scale", None)
    zp = getattr(wq, "zero_point", None)
    n = W.shape[0]
    used = {"scales": None if sc is None else np.asarray(sc.detach().double().cpu()).reshape(n, -1).tolist(),
            "zero_points": None if zp is None else np.asarray(zp.detach().double().cpu()).reshape(n, -1).tolist(),
            "zero_point_convention": f"signed int{grid.bits} codes −2^(b−1)..2^(b−1)−1 "
                                     "(GPTQ's zero point minus 2^(b−1))",
            "bits": int(grid.bits), "sym": bool(grid.sym), "group_size": g, "static_groups": bool(grid.static_groups),
            "desc_act": order == "decreasing", "precision": "float32",
            "dead_features": np.flatnonzero(dead_mask(X)).tolist(),
            "dead_convention": "zeroed (grid fitted after), H_tt = 1",
            "order": None if perm is None else [int(i) for i in perm],
            "permutation_expected": stable_decreasing(diag).tolist() if order == "decreasing" else list(range(N))}
    used.update(extra)
    return AdapterResult(Q=Q, used=used)


def _fallback(failed):
    if not failed:
        return None
    return (f"the Cholesky factorisation failed {len(failed)} time(s) ({failed[0]}); Quark retried with extra "
            "diagonal regularisation (GPTQ) or let the error propagate")


def _config(cls, order, grid, g, **kw):
    static = bool(grid.static_groups) or (order == "decreasing" and not g)
    cfg = cls(desc_act=order == "decreasing", static_groups=static, inside_layer_modules=["layer"],
              model_decoder_layers="model.layers", **kw)
    return cfg


def _orders(order):
    if order not in ("natural", "decreasing"):
        raise Decline(f"order {order!r}: Quark has natural order and desc_act (decreasing) only")


def gptq(W, X, *, grid, lam, rng=None, order="natural", blocksize=128):
    """Quark's GPTQ (``quark.torch.algorithm.gptq.gptq.GPTQ.quantize``) on one ``nn.Linear``."""
    import torch
    import quark.torch.algorithm.gptq.gptq as mod
    from quark.torch.algorithm.gptq.gptq import GPTQ
    from quark.torch.quantization.config.config import GPTQConfig

    _orders(order)
    W = np.array(W, dtype=np.float64, copy=True)
    X = np.array(X, dtype=np.float64, copy=True)
    m, N = X.shape
    g = _check_grid(grid, W, X, order)
    cfg = _config(GPTQConfig, order, grid, g, block_size=blocksize)
    lin, _spec = _layer(W, grid, g)
    algo = GPTQ(lin)
    algo.add_batch_quantized(_seqs(X), None, "layer")
    d = torch.diagonal(algo.H).detach().double().numpy().copy()
    d[d == 0] = 1.0  # Quark's dead-feature value
    percdamp = percdamp_for(lam, d, 2.0 / m)
    with _quiet_and_watch(mod) as failed, recording_argsort(torch) as sorts, torch.no_grad():
        algo.quantize(cfg.block_size, percdamp, g if g else -1, cfg.desc_act, cfg.static_groups,
                      use_cuda_graphs=False, graphs={})
    return _finish(lin, algo, W, X, grid, g, order, sorts, d, {
        "percdamp": percdamp, "damping": f"damp_percent={percdamp:.6g} of mean diag((2/m)XᵀX) (dead → 1) = λ·2/m",
        "hessian": "add_batch_quantized over m sequences of 1 token: H = (2/m)XᵀX, float32",
        "fallback": _fallback(failed), "blocksize": cfg.block_size,
        "config": {"desc_act": cfg.desc_act, "static_groups": cfg.static_groups}})


def _mismatch_inputs(W, X, X_tilde, grid, order):
    """``(W, X, X̃, group size)`` in float64 copies, after checking the order and the grid (the
    start that Quark's Qronos and GPTAQ share)."""
    _orders(order)
    W = np.array(W, dtype=np.float64, copy=True)
    X = np.array(X, dtype=np.float64, copy=True)
    Xt = np.array(X_tilde, dtype=np.float64, copy=True)
    return W, X, Xt, _check_grid(grid, W, Xt, order)


def _observed(algo, X, Xt):
    """``algo`` after it has seen the quantized-model inputs ``X̃`` and the float inputs ``X``."""
    algo.add_batch_quantized(_seqs(Xt), None, "layer")
    algo.add_batch_nonquantized(_seqs(X), None, "layer")
    return algo


def qronos(W, X, *, X_tilde, grid, lam, rng=None, order="natural", blocksize=128):
    """Quark's Qronos (``quark.torch.algorithm.qronos.qronos.Qronos.quantize``) on one ``nn.Linear``:
    ``X`` the float inputs, ``X_tilde`` the inputs of the quantized model."""
    import torch
    import quark.torch.algorithm.qronos.qronos as mod
    from quark.torch.algorithm.qronos.qronos import Qronos
    from quark.torch.quantization.config.config import QronosConfig

    W, X, Xt, g = _mismatch_inputs(W, X, X_tilde, grid, order)
    m = Xt.shape[0]
    if g and not grid.static_groups:
        raise Decline("quark: its Qronos with groups fitted on the fly (static_groups=False) quantizes the first "
                      "column with a quantizer that has observed no weights (q = 0) and then raises ValueError "
                      "(torch.cat of an empty scale list): not run")
    lin, _spec = _layer(W, grid, g)
    algo = _observed(Qronos(lin), X, Xt)
    # alpha such that alpha·power_iteration(H) = λ/m, with Quark's own power iteration on the H it will use
    H = algo.H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    d = torch.diagonal(H).detach().double().numpy().copy()
    if order == "decreasing":
        p = torch.argsort(torch.diag(H), descending=True)
        H = H[p][:, p]
    est = float(Qronos.power_iteration(H, 30))
    alpha = float(lam) / m / est
    cfg = _config(QronosConfig, order, grid, g, block_size=blocksize, alpha=alpha)
    with _quiet_and_watch(mod) as failed, recording_argsort(torch) as sorts, torch.no_grad():
        algo.quantize(cfg.block_size, cfg.alpha, cfg.beta, g if g else -1, cfg.desc_act, cfg.static_groups)
    return _finish(lin, algo, W, Xt, grid, g, order, sorts, d, {
        "alpha": alpha, "beta": cfg.beta, "power_iteration_lambda_max": est,
        "damping": f"alpha={alpha:.6g} × power-iteration λmax(X̃ᵀX̃/m)={est:.6g} = λ/m (also added to G = XᵀX̃/m)",
        "hessian": "H = X̃ᵀX̃/m, G = XᵀX̃/m over m sequences of 1 token, float32",
        "fallback": _fallback(failed), "blocksize": cfg.block_size,
        "config": {"desc_act": cfg.desc_act, "static_groups": cfg.static_groups}})


def gptaq(W, X, *, X_tilde, grid, lam, rng=None, order="natural", blocksize=128, alpha=None):
    """Quark's GPTAQ (``quark.torch.algorithm.gptaq.gptaq.Gptaq.quantize``) on one ``nn.Linear``, with
    its default ``alpha`` (0.25) unless given."""
    import torch
    import quark.torch.algorithm.gptaq.gptaq as mod
    from quark.torch.algorithm.gptaq.gptaq import Gptaq
    from quark.torch.quantization.config.config import GPTAQConfig

    W, X, Xt, g = _mismatch_inputs(W, X, X_tilde, grid, order)
    if g and not grid.static_groups:
        raise Decline("quark: its GPTAQ with groups fitted on the fly (static_groups=False) never records a group's "
                      "scale (its group counter is not carried between columns: it refits at every column) and then "
                      "raises ValueError (torch.cat of an empty scale list): not run")
    kw = {} if alpha is None else {"alpha": float(alpha)}
    cfg = _config(GPTAQConfig, order, grid, g, block_size=blocksize, **kw)
    lin, _spec = _layer(W, grid, g)
    algo = _observed(Gptaq(lin), X, Xt)
    d = torch.diagonal(algo.H).detach().double().numpy().copy()
    d[d == 0] = 1.0
    percdamp = percdamp_for(lam, d, 2.0 / Xt.shape[0])
    with _quiet_and_watch(mod) as failed, recording_argsort(torch) as sorts, torch.no_grad():
        algo.quantize(cfg.block_size, percdamp, cfg.alpha, g if g else -1, cfg.desc_act, cfg.static_groups)
    return _finish(lin, algo, W, Xt, grid, g, order, sorts, d, {
        "percdamp": percdamp, "alpha": cfg.alpha,
        "damping": f"damp_percent={percdamp:.6g} of mean diag((2/m)X̃ᵀX̃) (dead → 1) = λ·2/m",
        "hessian": "H = (2/m)X̃ᵀX̃, ΔXX̃ᵀ = (2/m)(X − X̃)ᵀX̃ over m sequences of 1 token, float32",
        "fallback": _fallback(failed), "blocksize": cfg.block_size,
        "config": {"desc_act": cfg.desc_act, "static_groups": cfg.static_groups}})


_GRIDS = ("gptq", "gptq-group", "gptq-static", "symmetric")
_COMMON = (
    ("grids", "fits GPTQ's min/max grid itself with its int{b} observers: per row, static groups and groups fitted on "
              "the fly; a row (group) without a negative weight gets a symmetric scale max|w|/((2^b−1)/2) where "
              "GPTQ's has max/(2^b−1) (declined)"),
    ("per-row grid and dead features", "fits the per-row grid AFTER zeroing the weights of dead features (GPTQ fits "
                                       "it before): cases where this changes the grid are declined"),
    ("act_order", "desc_act: torch.argsort(diag H, descending=True), not stable; its configs reject desc_act with "
                  "static_groups=False, and called directly it restores the column order only when static_groups "
                  "is set (passed for the per-row grid; act_order with on-the-fly groups declined)"),
    ("precision", "float32 (weight cast with .float(), Hessian float32)"),
)

ADAPTERS = (
    Adapter(name="quark-gptq", library="amd-quark", module="quark.torch.algorithm.gptq.gptq", kind="optq",
            proved=True, quantizer=gptq, install=INSTALL, orders=("natural", "decreasing"), grids=_GRIDS,
            precision="float32", algorithm="quark.torch.algorithm.gptq.gptq.GPTQ.quantize",
            conventions=_COMMON + (
                ("hessian", "H = 2·Σ xxᵀ / (number of sequences), not per token; the adapter feeds m sequences of "
                            "one token, so H = (2/m)XᵀX (GPTQ's convention)"),
                ("damping", "damp_percent × mean diag H (dead → 1); mapped from λ exactly (λ·2/m)"),
                ("dead features", "zeroes their weights and sets H_tt = 1, as GPTQ"),
            )),
    Adapter(name="quark-qronos", library="amd-quark", module="quark.torch.algorithm.qronos.qronos",
            kind="qronos-original", audit_kind="qronos-original", proved=True, quantizer=qronos, install=INSTALL,
            orders=("natural", "decreasing"), grids=_GRIDS, precision="float32",
            algorithm="quark.torch.algorithm.qronos.qronos.Qronos.quantize",
            conventions=_COMMON + (
                ("variant", "Qronos as published (first coordinate by the least-squares correction, the rest "
                            "re-solved by the damped ridge step, then GPTQ on X̃): the package's "
                            "qronos(variant='original')"),
                ("damping", "alpha × a 30-step power-iteration estimate of λmax(X̃ᵀX̃/m) on H after the act_order "
                            "permutation; mapped with Quark's own estimate so that it is λ/m; the same damping is "
                            "added to G = XᵀX̃/m"),
                ("dead features", "zeroes the weights of features dead in X̃ and sets H_tt = 1 (the package's "
                                  "Qronos keeps them)"),
            )),
    Adapter(name="quark-gptaq", library="amd-quark", module="quark.torch.algorithm.gptaq.gptaq", kind="other",
            audit_kind="qronos-projection", proved=False, quantizer=gptaq, install=INSTALL,
            orders=("natural", "decreasing"), grids=_GRIDS, precision="float32",
            algorithm="quark.torch.algorithm.gptaq.gptaq.Gptaq.quantize",
            conventions=_COMMON + (
                ("algorithm", "GPTAQ (asymmetric calibration, alpha = 0.25): GPTQ's loop on H = (2/m)X̃ᵀX̃ with an "
                              "extra correction P = alpha·triu₁(ΔXX̃ᵀ·L)·Lᵀ (L = Uᵀ, U the upper Cholesky factor "
                              "of H⁻¹); not OPTQ nor Qronos: audited with mismatched inputs against "
                              "qronos-projection's claims as empirical questions"),
                ("damping", "damp_percent × mean diag((2/m)X̃ᵀX̃) (dead → 1); mapped from λ exactly"),
                ("on-the-fly groups", "its group counter is never carried between columns: the group is refitted at "
                                      "every column from W as of the start of the lazy block (W1 is a clone), no group "
                                      "scale is recorded, and quantize then raises ValueError (torch.cat of an empty "
                                      "list): declined"),
            )),
)
