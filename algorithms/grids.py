"""Quantization grids (alphabets).

Three families (SPEC §1):

* ``Grid.symmetric(delta, K)``: the symmetric alphabet ``A_K^δ = δ·{−K, …, K}``; ``delta`` is a
  scalar or a per-row ``n × 1`` array.
* ``Grid.symmetric(delta, K=None)`` (alias ``Grid.integers(delta)``): the infinite grid ``δZ``.
* ``Grid.gptq(bits, sym=..., group_size=..., static_groups=...)``: the practical GPTQ grid with
  per-row (or per-group) scale ``δ`` and integer zero point ``z``; its levels are
  ``δ·({0, …, 2^b − 1} − z)``. Scale and zero point are fitted by min/max exactly as the reference
  GPTQ quantizer does (``xmin = min(w, 0)``, ``xmax = max(w, 0)``, symmetric: ``xmax = max(|xmin|,
  xmax)``, ``xmin = −xmax`` when ``xmin < 0``, ``zero = (maxq + 1)/2``; asymmetric: ``zero =
  round(−xmin/δ)``; an all-zero row gets ``[−1, 1]``).

A :class:`Grid` is a *specification*; fitting it to a weight matrix gives an :class:`Alphabet`,
the realised per-entry step ``scale`` (``δ_t`` per row and column), ``zero`` point and integer
range ``[qmin, qmax]``. Every level of entry ``(i, t)`` is ``scale[i,t]·(k − zero[i,t])`` for an
integer ``k ∈ [qmin, qmax]``.
"""

from __future__ import annotations

from dataclasses import dataclass
import math
import numbers

import numpy as np

from ._backend import namespace, to_numpy
from .validation import check_int

__all__ = ["Grid", "Alphabet", "fit_minmax"]


@dataclass(frozen=True, eq=False)
class Grid:
    """A quantization grid specification; build it with :meth:`symmetric`, :meth:`integers` or :meth:`gptq`."""

    kind: str
    delta: object = None
    K: int | None = None
    bits: int | None = None
    sym: bool = True
    group_size: int | None = None
    static_groups: bool = False
    perchannel: bool = True

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def symmetric(cls, delta, K: int | None = None) -> "Grid":
        """``δ·{−K, …, K}`` (``K=None``: the infinite grid ``δZ``). ``delta``: scalar or ``n × 1`` array."""
        if isinstance(delta, bool):
            raise TypeError("delta must be a positive number or an n x 1 array, got a bool")
        if hasattr(delta, "shape") and tuple(delta.shape) == ():  # a 0-d array or NumPy scalar
            delta = float(to_numpy(delta))
        if isinstance(delta, numbers.Real):
            delta = d = float(delta)
            if not math.isfinite(d) or d <= 0:
                raise ValueError(f"delta must be a finite positive step, got {delta}")
        elif hasattr(delta, "shape"):
            shape = tuple(delta.shape)
            if len(shape) != 2 or shape[1] != 1:
                raise ValueError(
                    f"delta must be a scalar or an n x 1 array (one step per row of W), got shape {shape}; "
                    "reshape a length-n vector with delta.reshape(-1, 1)"
                )
            d = to_numpy(delta)
            if not np.all(np.isfinite(d)) or np.any(d <= 0):
                raise ValueError("every delta must be finite and positive")
        else:
            raise TypeError(f"delta must be a positive number or an n x 1 array, got {type(delta).__name__}")
        if K is not None:
            K = check_int("K", K, lo=1)
        return cls(kind="symmetric", delta=delta, K=K)

    @classmethod
    def integers(cls, delta) -> "Grid":
        """The infinite grid ``δZ`` (no saturation is possible)."""
        return cls.symmetric(delta, None)

    @classmethod
    def gptq(
        cls,
        bits: int,
        *,
        sym: bool = True,
        group_size: int | None = None,
        static_groups: bool = False,
        perchannel: bool = True,
    ) -> "Grid":
        """GPTQ's min/max grid with ``2^bits`` levels, per row (``perchannel``) or per tensor.

        ``group_size``: one scale/zero point per group of that many consecutive input features;
        fitted on the fly from the current (already updated) weights when the group's first
        column is reached in processing order, or, with ``static_groups=True``, once from the
        weights before quantization, in the original feature order (GPTQ's ``static_groups``).
        """
        bits = check_int("bits", bits, lo=1, hi=16)
        if not isinstance(sym, bool):
            raise TypeError(f"sym must be True or False, got {sym!r}")
        if group_size is not None and group_size != -1:
            group_size = check_int("group_size", group_size, lo=1)
        else:
            group_size = None
        if static_groups and group_size is None:
            raise ValueError("static_groups=True needs a group_size")
        if group_size is not None and not perchannel:
            raise ValueError("group_size needs perchannel=True (groups are per row)")
        return cls(kind="gptq", bits=bits, sym=sym, group_size=group_size,
                   static_groups=bool(static_groups), perchannel=bool(perchannel))

    # -- properties ------------------------------------------------------------------------------
    @property
    def maxq(self) -> int:
        return 2 ** self.bits - 1

    @property
    def finite(self) -> bool:
        return not (self.kind == "symmetric" and self.K is None)

    def describe(self) -> str:
        if self.kind == "symmetric":
            d = self.delta if isinstance(self.delta, numbers.Real) else "per-row"
            return f"symmetric(delta={d}, K={'inf' if self.K is None else self.K})"
        g = f", group_size={self.group_size}{' static' if self.static_groups else ''}" if self.group_size else ""
        return f"gptq(bits={self.bits}, {'sym' if self.sym else 'asym'}{g}{'' if self.perchannel else ', per-tensor'})"

    def to_dict(self) -> dict:
        d = {"kind": self.kind}
        if self.kind == "symmetric":
            d["delta"] = float(self.delta) if isinstance(self.delta, numbers.Real) else to_numpy(self.delta).ravel().tolist()
            d["K"] = self.K
        else:
            d.update(bits=self.bits, sym=self.sym, group_size=self.group_size,
                     static_groups=self.static_groups, perchannel=self.perchannel)
        return d

    def check_rows(self, n: int) -> None:
        if self.kind == "symmetric" and hasattr(self.delta, "shape") and self.delta.shape[0] != n:
            raise ValueError(
                f"grid delta has {self.delta.shape[0]} rows but W has {n}; a per-row delta must be n x 1"
            )

    def check_dividing(self, N: int) -> None:
        if self.group_size is not None and N % self.group_size != 0:
            raise ValueError(
                f"group_size={self.group_size} does not divide the number of input features N={N}; "
                f"choose a divisor of {N} (e.g. {', '.join(str(g) for g in _divisors(N)[:6])})"
            )

    # -- levels ----------------------------------------------------------------------------------
    def int_range(self):
        """``(qmin, qmax)`` of the integer codes ``k`` (±inf for ``δZ``)."""
        if self.kind == "symmetric":
            if self.K is None:
                return -math.inf, math.inf
            return -self.K, self.K
        return 0, self.maxq


def _divisors(N: int):
    return [g for g in (32, 64, 128, 16, 8, 96, 192, 256, 4, 2) if N % g == 0] or [1]


def fit_minmax(xp, B, grid: Grid):
    """GPTQ's scale and zero point fitted to the block ``B`` (``n × k``): arrays of shape ``(n,)``.

    Per tensor (``perchannel=False``) the single fitted value is repeated for every row.
    """
    n = B.shape[0]
    if grid.perchannel:
        bmin = xp.min(B, axis=1)
        bmax = xp.max(B, axis=1)
    else:
        bmin = xp.reshape(xp.min(B), (1,))
        bmax = xp.reshape(xp.max(B), (1,))
    zero_ = xp.zeros_like(bmin)
    xmin = xp.minimum(bmin, zero_)
    xmax = xp.maximum(bmax, zero_)
    maxq = float(grid.maxq)
    if grid.sym:
        xmax = xp.maximum(xp.abs(xmin), xmax)
        xmin = xp.where(xmin < 0, -xmax, xmin)
    both0 = (xmin == 0) & (xmax == 0)
    xmin = xp.where(both0, -xp.ones_like(xmin), xmin)
    xmax = xp.where(both0, xp.ones_like(xmax), xmax)
    scale = (xmax - xmin) / maxq
    if grid.sym:
        zero = xp.full_like(scale, (maxq + 1) / 2)
    else:
        zero = xp.round(-xmin / scale)
    if not grid.perchannel:
        scale = xp.broadcast_to(scale, (n,))
        zero = xp.broadcast_to(zero, (n,))
    return scale, zero


@dataclass(frozen=True, eq=False)
class Alphabet:
    """A grid realised on one weight matrix, in the original feature order.

    ``scale[i, t]`` is the step ``δ`` of entry ``(i, t)``, ``zero[i, t]`` its zero point; the
    levels of that entry are ``scale·(k − zero)``, ``k`` an integer in ``[qmin, qmax]``.
    """

    scale: object
    zero: object
    qmin: float
    qmax: float

    @property
    def lower(self):
        """Smallest level of each entry (``-inf`` for ``δZ``)."""
        return self.scale * (self.qmin - self.zero)

    @property
    def upper(self):
        """Largest level of each entry (``+inf`` for ``δZ``)."""
        return self.scale * (self.qmax - self.zero)

    def contains(self, Q, *, rtol: float = 1e-5):
        """True where ``Q`` lies on this alphabet (an integer code in range), to relative ``rtol``."""
        xp = namespace(Q)
        k = Q / self.scale + self.zero
        on = xp.abs(k - xp.round(k)) <= rtol * xp.maximum(xp.abs(k), xp.ones_like(k))
        return on & (xp.round(k) >= self.qmin) & (xp.round(k) <= self.qmax)


class ColumnGrid:
    """Per-column step and zero point during the column loop (internal).

    Holds ``scale_p`` and ``zero_p`` (``N × n``, processing order). Constant grids are filled up
    front; on-the-fly groups are fitted when the loop reaches a group's first column, from the
    current weights of that group (rows ``t … t+g−1`` of the processing-order working matrix).
    """

    def __init__(self, xp, grid: Grid, *, n: int, N: int, order, W_fit, W_static, dtype, device):
        self.xp, self.grid = xp, grid
        self.qmin, self.qmax = grid.int_range()
        self.lazy = grid.kind == "gptq" and grid.group_size is not None and not grid.static_groups
        self.g = grid.group_size
        self.scale_p = xp.zeros((N, n), dtype=dtype, device=device)
        self.zero_p = xp.zeros((N, n), dtype=dtype, device=device)
        if grid.kind == "symmetric":
            d = grid.delta
            if hasattr(d, "shape"):
                d = xp.asarray(to_numpy(d), dtype=dtype, device=device) if not _same_backend(xp, d) else xp.astype(d, dtype)
                if d.shape[0] != n:
                    raise ValueError(f"grid delta has {d.shape[0]} rows but W has {n}; delta must be n x 1")
                self.scale_p[...] = xp.reshape(d, (1, n))
            else:
                self.scale_p[...] = float(d)
        elif not grid.group_size:
            s, z = fit_minmax(xp, xp.astype(W_fit, dtype), grid)
            self.scale_p[...] = s[None, :]
            self.zero_p[...] = z[None, :]
        elif grid.static_groups:
            g = grid.group_size
            S = xp.zeros((N, n), dtype=dtype, device=device)
            Z = xp.zeros((N, n), dtype=dtype, device=device)
            for j in range(0, N, g):
                s, z = fit_minmax(xp, xp.astype(W_static[:, j:j + g], dtype), grid)
                S[j:j + g, :] = s[None, :]
                Z[j:j + g, :] = z[None, :]
            self.scale_p = xp.take(S, order, axis=0)
            self.zero_p = xp.take(Z, order, axis=0)

    def params(self, t: int, Wp):
        if self.lazy and t % self.g == 0:
            s, z = fit_minmax(self.xp, Wp[t:t + self.g, :].T, self.grid)
            self.scale_p[t:t + self.g, :] = s[None, :]
            self.zero_p[t:t + self.g, :] = z[None, :]
        return self.scale_p[t], self.zero_p[t]

    def alphabet(self, invperm) -> Alphabet:
        xp = self.xp
        return Alphabet(
            scale=xp.take(self.scale_p.T, invperm, axis=1),
            zero=xp.take(self.zero_p.T, invperm, axis=1),
            qmin=self.qmin,
            qmax=self.qmax,
        )


def _same_backend(xp, a) -> bool:
    try:
        return namespace(a) is xp or namespace(a).__name__ == xp.__name__
    except TypeError:
        return False
