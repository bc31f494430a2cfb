"""Frozen results returned by every algorithm."""

from __future__ import annotations

from dataclasses import dataclass, field

from .grids import Alphabet, Grid

__all__ = ["QuantResult", "QronosResult"]


@dataclass(frozen=True, eq=False)
class QuantResult:
    """What one quantization run produced.

    Shapes: ``W`` is ``n × N`` (rows = output neurons, columns = input features).

    Attributes
    ----------
    Q : quantized weights, ``n × N``, original feature order, same backend and dtype as ``W``.
    errors : rounding errors ``e_t = z_t − q_t``, ``n × N``, **processing order** (column ``t`` is
        feature ``order[t]``).
    z : the values ``z_t`` that were rounded (current, already updated weights), processing order.
    order : the permutation used: ``order[t]`` is the feature processed at position ``t``.
    saturated : per row, whether clipping to the grid's range changed any rounding.
    clipped : per entry (processing order), whether clipping changed that rounding.
    lam : the damping λ actually used, in units of ``XᵀX`` (``H_λ = XᵀX + λI``).
    grid : the grid specification; ``alphabet`` its realisation (per-entry step and zero point).
    W0 : the weights the column loop started from, original order (OPTQ: ``W`` with dead
        features zeroed as GPTQ does; Qronos: ``ŵ``).
    dead : features whose calibration column is identically zero.
    rounding : ``"nearest"`` or ``"stochastic"``.
    algorithm : ``"optq"``, ``"qronos"`` or ``"rtn"``.
    hinv_diag : the diagonal ``U_tt`` of the inverse Cholesky factor, processing order
        (GPTQ's ``d``; ``None`` for RTN). Kept for GPTQ-compatible ``losses`` only.
    m : number of calibration samples (rows of ``X``).
    """

    Q: object
    errors: object
    z: object
    order: object
    saturated: object
    clipped: object
    lam: float
    grid: Grid
    alphabet: Alphabet
    W0: object
    dead: object
    rounding: str
    algorithm: str
    hinv_diag: object = None
    m: int = 0
    options: dict = field(default_factory=dict)

    @property
    def shape(self):
        return tuple(self.Q.shape)

    @property
    def dtype(self):
        return self.Q.dtype

    @property
    def losses(self):
        """GPTQ's ``Losses`` (per entry, processing order): ``(w − q)²/d²/2`` with GPTQ's
        ``H = (2/m)XᵀX + damp·I``; equal to ``e_t² c_t / m``, so the total is the exact identity
        divided by ``m``."""
        if self.hinv_diag is None:
            raise AttributeError("losses are defined for OPTQ/Qronos runs, not RTN")
        return self.errors ** 2 / (self.m * self.hinv_diag[None, :] ** 2)


@dataclass(frozen=True, eq=False)
class QronosResult(QuantResult):
    """A Qronos run: also ``W_hat`` (``ŵ``, the least-squares target on ``X̃``, original order),
    the ``variant`` and, for the original variant, ``y1`` (the least-squares value rounded for the
    first processed feature)."""

    W_hat: object = None
    variant: str = "projection"
    y1: object = None
