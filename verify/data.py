"""Synthetic calibration data in controlled regimes (NumPy only).

Families (``FAMILIES``):

* ``"tall"``: ``m ≥ 2N`` Gaussian rows with anisotropic column scales;
* ``"wide"``: ``m < N`` (``XᵀX`` singular: needs λ > 0);
* ``"rank_deficient"``: ``X = A·B`` of rank ``r < min(m, N)``;
* ``"dead"``: some all-zero columns (dead features);
* ``"duplicate"``: some columns repeated exactly;
* ``"ill_conditioned"``: ``X = U·diag(s)·Vᵀ`` with ``cond(XᵀX)`` equal to ``cond``;
* ``"heavy_tailed"``: Student-t entries (3 degrees of freedom) with a few outlier features.
"""

from __future__ import annotations

import numpy as np

from .defaults import setting

__all__ = ["FAMILIES", "SINGULAR", "make_X", "mismatch", "synthetic_layer"]

#: the synthetic data families (the one definition: campaigns, audit and strategies use it)
FAMILIES = ("tall", "wide", "rank_deficient", "dead", "duplicate", "ill_conditioned", "heavy_tailed")

#: Regimes whose XᵀX is singular, so that λ = 0 is not allowed.
SINGULAR = ("wide", "rank_deficient", "dead", "duplicate")


def make_X(regime: str, m: int, N: int, rng: np.random.Generator, *, cond: float = 1e6) -> np.ndarray:
    """Calibration data of shape ``m × N`` in ``regime`` (float64)."""
    if regime not in FAMILIES:
        raise ValueError(f"regime must be one of {FAMILIES}, got {regime!r}")
    scales = np.exp(rng.uniform(-1.0, 1.0, N))
    if regime in ("tall", "wide"):
        return rng.standard_normal((m, N)) * scales
    if regime == "rank_deficient":
        r = max(1, min(m, N) // 2)
        return (rng.standard_normal((m, r)) @ rng.standard_normal((r, N))) * scales
    if regime == "dead":
        X = rng.standard_normal((m, N)) * scales
        k = max(1, N // 4)
        X[:, rng.choice(N, size=k, replace=False)] = 0.0
        return X
    if regime == "duplicate":
        X = rng.standard_normal((m, N)) * scales
        k = max(1, N // 4)
        src = rng.choice(N, size=k, replace=False)
        dst = rng.choice(np.setdiff1d(np.arange(N), src), size=min(k, N - k), replace=False) if N > k else []
        for s, d in zip(src, dst):
            X[:, d] = X[:, s]
        return X
    if regime == "ill_conditioned":
        k = min(m, N)
        U, _ = np.linalg.qr(rng.standard_normal((m, k)))
        V, _ = np.linalg.qr(rng.standard_normal((N, k)))
        s = np.sqrt(np.logspace(0.0, -np.log10(cond), k))  # singular values: cond(XᵀX) = cond
        return (U * s) @ V.T * np.sqrt(m)
    # heavy_tailed
    X = rng.standard_t(3, size=(m, N)) * scales
    k = max(1, N // 16)
    X[:, rng.choice(N, size=k, replace=False)] *= 20.0
    return X


def mismatch(X: np.ndarray, rng: np.random.Generator, *, kind: str = "noise", level: float = 0.1) -> np.ndarray:
    """Mismatched inputs ``X̃`` for Qronos: ``"noise"`` adds Gaussian noise of relative size
    ``level``; ``"quantized"`` rounds ``X`` to a uniform grid whose step is ``level·max|X|``."""
    if kind == "noise":
        return X + level * rng.standard_normal(X.shape) * np.sqrt(np.mean(X**2) + 1e-300)
    if kind == "quantized":
        step = level * float(np.max(np.abs(X))) or 1.0
        return np.round(X / step) * step
    raise ValueError(f"kind must be 'noise' or 'quantized', got {kind!r}")


def synthetic_layer(cfg: dict, rng: np.random.Generator):
    """``(W, X, X_tilde)`` of a synthetic cell: ``X`` of family ``cfg["family"]`` (``m × N``,
    condition ``cond``), ``n`` weight rows (one row repeated with ``same_w``) scaled by ``w_scale``,
    ``X_tilde`` from ``cfg["mismatch"]``; cast to ``cfg["dtype"]`` (default float64)."""
    fam, m, N = cfg["family"], int(cfg["m"]), int(cfg["N"])
    X = make_X(fam, m, N, rng, cond=float(setting(cfg, "cond")))
    n = int(setting(cfg, "n"))
    scale = float(setting(cfg, "w_scale"))
    if setting(cfg, "same_w"):
        w = rng.standard_normal(N) * scale
        W = np.repeat(w[None, :], n, axis=0)
    else:
        W = rng.standard_normal((n, N)) * scale
    Xt = None
    if cfg.get("mismatch"):
        mm = cfg["mismatch"]
        Xt = mismatch(X, rng, kind=mm["kind"], level=float(mm["level"]))
    dtype = np.dtype(setting(cfg, "dtype"))
    cast = (lambda a: None if a is None else a.astype(dtype))  # noqa: E731
    return cast(W), cast(X), cast(Xt)
