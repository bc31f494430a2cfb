"""Layer-wise post-training quantization algorithms: OPTQ (GPTQ), Qronos and round-to-nearest.

One code path for every array library with the array API (NumPy, CuPy, torch): the backend of
the result is the backend of ``W``. ``W`` is ``n × N`` (rows = output neurons), ``X`` is ``m × N``
(rows = calibration samples).
"""

from .grids import Alphabet, Grid
from .optq import METHODS, ROUNDINGS, optq
from .ordering import ORDERS
from .qronos import VARIANTS, qronos
from .result import QronosResult, QuantResult
from .rtn import rtn
from .streams import SplitMix64
from .trials import optq_trials

OPTQResult = QuantResult

__all__ = [
    "optq",
    "qronos",
    "rtn",
    "optq_trials",
    "SplitMix64",
    "Grid",
    "Alphabet",
    "QuantResult",
    "OPTQResult",
    "QronosResult",
    "ORDERS",
    "METHODS",
    "ROUNDINGS",
    "VARIANTS",
]
