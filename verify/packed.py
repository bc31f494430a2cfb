"""Reading a quantized weight made elsewhere, for ``ptq-bounds check-layer W X --q SPEC``.

Three formats, all returning a :class:`GivenQ`: ``Q`` (float64, ``n × N``, the layout of ``W``), the
grid it lies on (either an :class:`algorithms.Grid` to be fitted on ``W`` like the package's own runs,
or the per-entry ``scale``/``zero`` arrays and integer range read from the file), the group index
``g_idx`` and a record of what was read.

* ``dense``: ``Q`` itself (``.npy``, ``.npz[:key]``, ``.safetensors[:key]``; float64, float32,
  float16 or bfloat16 — bfloat16 from ``.safetensors``), with the grid given on the command line
  (``--bits/--group-size/--asym/--static-groups`` or ``--delta/--K``) or with explicit ``--scales``
  (``n``, ``n × 1``, ``n × G`` or ``n × N``) and optional ``--zeros`` of the same shape (codes
  ``0..2^b−1`` with zeros; ``−2^(b−1)..2^(b−1)−1`` without).
* ``gptq``: the packed format GPTQ libraries write, ``PREFIX.qweight`` (int32, ``N·b/32 × n``: the
  codes of input features packed along the input dimension, value ``k`` of a column at bit offset
  ``k·b`` of the column's words read as one little-endian bit stream, so 3-bit codes straddle words),
  ``PREFIX.qzeros`` (int32, ``G × n·b/32``, zero points packed the same way along the output
  dimension), ``PREFIX.scales`` (float16, ``G × n``) and ``PREFIX.g_idx`` (int32, ``N``: the group of
  each input feature; absent: ``j // (N/G)``). Dequantized as ``Q[i, j] = scales[g, i]·(code − zero)``
  with ``g = g_idx[j]``. Zero points: the classic format stores ``zero − 1`` (``gptq-v1``: read
  ``zero = stored + 1``), the newer one stores ``zero`` (``gptq-v2``); ``auto`` decides from the data
  (symmetric grids store ``2^(b−1) − 1`` resp. ``2^(b−1)`` everywhere), from a
  ``quantize_config.json`` next to the file (``checkpoint_format``), or, given ``W``, by which
  reading lies closer to ``W``; otherwise it asks for ``--zero-convention``.
* ``compressed-tensors`` (``pack-quantized``): ``PREFIX.weight_packed`` (int32, packed along the input
  dimension, code ``+ 2^(b−1)`` stored unsigned: densely, ``n × ⌈N·b/32⌉``, value ``k`` at bit ``k·b``
  of the row's bit stream, as current releases write it; or ``32//b`` codes per word,
  ``n × ⌈N/(32//b)⌉``, as earlier ones did: the word count decides, see :func:`_ct_packing`),
  ``PREFIX.weight_scale`` (``n × G``), optional ``PREFIX.weight_zero_point`` (``n × G``, or packed
  along the output dimension) and ``PREFIX.weight_g_idx``, and ``PREFIX.weight_shape`` (``[n, N]``).
  ``Q = scale·(q − zero_point)`` with signed codes ``q``.

Every number is read exactly and the dequantization is done in float64 (a float16 scale times a small
integer is exact). The unpacking is written here from the formats' definitions. Errors are
``ValueError`` naming the tensor and the fix.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["GivenQ", "FileGrid", "read_q", "read_dense", "read_gptq", "read_compressed_tensors",
           "unpack_stream", "unpack_words", "implied_run_given", "FORMATS", "ZERO_CONVENTIONS"]

FORMATS = ("auto", "dense", "gptq", "compressed-tensors")
ZERO_CONVENTIONS = ("auto", "gptq-v1", "gptq-v2")
_PACK_BITS = (2, 3, 4, 8)
_FLOAT_PRECISION = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


# ------------------------------------------------------------------------------------------------
# result types
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FileGrid:
    """The grid read from a file: per-entry ``scale``/``zero`` (``n × N``) and integer range."""

    scale: np.ndarray
    zero: np.ndarray
    qmin: int
    qmax: int
    bits: int | None = None
    group_size: int | None = None
    source: str = ""

    def to_dict(self) -> dict:
        return {"kind": "from file", "source": self.source, "bits": self.bits, "group_size": self.group_size,
                "qmin": self.qmin, "qmax": self.qmax}

    def describe(self) -> str:
        g = f", group size {self.group_size}" if self.group_size else ", per row"
        return f"{self.source}: {self.bits} bits{g}, codes {self.qmin}..{self.qmax}"


@dataclass
class GivenQ:
    """A quantized weight read from a file (see the module docstring)."""

    Q: np.ndarray
    grid: object  # algorithms.Grid (fitted on W) or FileGrid
    g_idx: np.ndarray | None
    stored_dtype: str  # the dtype Q (dense) or its scales (packed) were stored in
    format: str
    info: dict = field(default_factory=dict)

    @property
    def precision(self) -> str:
        """The default working precision. Dense: the dtype ``Q`` was stored in (a float16/bfloat16 ``Q``
        is judged in that precision). Packed: float32, the precision GPTQ libraries and llm-compressor run
        their column loop in (the codes are exact integers; only the scales are stored in ``stored_dtype``,
        which is passed to the checker as the storage dtype of ``Q``)."""
        if self.format != "dense":
            return "float32"
        return _FLOAT_PRECISION.get(self.stored_dtype, "float64")

    @property
    def precision_reason(self) -> str:
        if self.format != "dense":
            return (f"the precision GPTQ libraries compute in; the codes are exact and the scales were stored "
                    f"in {self.stored_dtype}")
        return f"the dtype Q was stored in ({self.stored_dtype})"


# ------------------------------------------------------------------------------------------------
# files
# ------------------------------------------------------------------------------------------------
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bfloat16", "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "U16": np.uint16,
              "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}


def _split(spec: str):
    for ext in (".npz", ".safetensors"):
        if ext + ":" in spec:
            path, key = spec.split(ext + ":", 1)
            return path + ext, key
    return spec, None


class _Tensors:
    """Lazy access to the arrays of one ``.npy``/``.npz``/``.safetensors`` file (safetensors read
    here, header and the asked-for tensors only, so bfloat16 and large checkpoints work)."""

    def __init__(self, path: str, name: str):
        p = Path(path)
        self.path, self.name = path, name
        if not p.exists():
            raise FileNotFoundError(f"{name}: no such file {path}")
        if p.is_dir():
            raise ValueError(f"{name}: {path} is a directory; pass a .npy, .npz or .safetensors file")
        self.suffix = p.suffix
        if self.suffix == ".safetensors":
            try:
                with open(p, "rb") as fh:
                    (hlen,) = struct.unpack("<Q", fh.read(8))
                    if hlen > 100_000_000:
                        raise ValueError("header too long")
                    self.header = json.loads(fh.read(hlen))
                self.start = 8 + hlen
            except (ValueError, struct.error, UnicodeDecodeError) as exc:
                raise ValueError(f"{name}: {path} is not a readable .safetensors file ({exc})") from None
            self.meta = self.header.pop("__metadata__", None) or {}
            self.keys = sorted(self.header)
        elif self.suffix == ".npz":
            try:
                with np.load(p, allow_pickle=False) as z:
                    self.keys = sorted(z.files)
            except Exception as exc:  # noqa: BLE001 - zipfile and numpy errors
                raise ValueError(f"{name}: {path} is not a readable .npz file ({type(exc).__name__}: {exc})") from None
        elif self.suffix == ".npy":
            self.keys = [""]
        else:
            raise ValueError(f"{name}: unsupported file type {self.suffix!r}; use .npy, .npz or .safetensors")

    def get(self, key: str):
        """``(array, dtype name)``; bfloat16 is returned as float32 (exactly) with dtype ``"bfloat16"``."""
        if key not in self.keys:
            raise ValueError(f"{self.name}: {self.path} has no tensor {key!r} (it has {self.keys[:12]})")
        if self.suffix == ".npy":
            try:
                a = np.load(self.path, allow_pickle=False)
            except ValueError as exc:
                raise ValueError(f"{self.name}: {self.path} is not a readable .npy array ({exc})") from None
            return a, str(a.dtype)
        if self.suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as z:
                a = z[key]
            return a, str(a.dtype)
        h = self.header[key]
        dt = _ST_DTYPES.get(h.get("dtype"))
        if dt is None:
            raise ValueError(f"{self.name}: tensor {key!r} of {self.path} has dtype {h.get('dtype')}, which is "
                             "not read here (use F64, F32, F16, BF16 or an integer dtype)")
        b0, b1 = h["data_offsets"]
        shape = tuple(h["shape"])
        with open(self.path, "rb") as fh:
            fh.seek(self.start + b0)
            raw = fh.read(b1 - b0)
        if dt == "bfloat16":
            u = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            return u.view(np.float32).reshape(shape), "bfloat16"
        dtype = np.dtype(dt).newbyteorder("<")
        if len(raw) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"{self.name}: tensor {key!r} of {self.path} is truncated; write the file again")
        a = np.frombuffer(raw, dtype=dtype).reshape(shape).astype(np.dtype(dt))
        return a, str(a.dtype)


def _prefixes(t: _Tensors, suffix: str):
    return sorted(k[: -len(suffix)].rstrip(".") for k in t.keys if k == suffix or k.endswith("." + suffix))


def _key(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def detect_format(spec: str) -> str:
    """``gptq`` when the file holds ``qweight`` tensors, ``compressed-tensors`` when it holds
    ``weight_packed``, else ``dense``."""
    path, key = _split(spec)
    t = _Tensors(path, "--q")
    keys = [k for k in t.keys if key is None or k == key or k.startswith(key + ".")]
    if any(k.split(".")[-1] == "qweight" for k in keys):
        return "gptq"
    if any(k.split(".")[-1] == "weight_packed" for k in keys):
        return "compressed-tensors"
    return "dense"


def _pick_prefix(t: _Tensors, key, suffix: str, fmt: str) -> str:
    found = _prefixes(t, suffix)
    if key is not None:
        key = key[: -len(suffix)].rstrip(".") if key.endswith(suffix) else key
        if key not in found:
            raise ValueError(f"--q: {t.path} has no {_key(key, suffix)!r} ({fmt} layers in it: {found[:8]})")
        return key
    if len(found) != 1:
        raise ValueError(f"--q: {t.path} holds {len(found)} {fmt} layers ({found[:8]}); say which with "
                         f"{t.path}:PREFIX (the name before .{suffix})")
    return found[0]


# ------------------------------------------------------------------------------------------------
# bit unpacking (from the formats' definitions)
# ------------------------------------------------------------------------------------------------
def _as_u32(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype not in (np.int32, np.uint32):
        raise ValueError(f"{name} must be int32 (packed codes), got dtype {a.dtype}; pass the tensor as the "
                         "quantization library wrote it")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return a.view(np.uint32)


def unpack_stream(words, bits: int, count: int) -> np.ndarray:
    """GPTQ packing along axis 0: the words of each column are one little-endian bit stream and value
    ``k`` sits at bit offset ``k·bits`` (for 3 bits a value may straddle two words). ``count × C`` int64."""
    w = np.asarray(words).view(np.uint32).astype(np.uint64)
    R = w.shape[0]
    k = np.arange(count)
    off = k * bits
    wi, sh = off // 32, (off % 32).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    lo = w[wi] >> sh[:, None]
    nxt = np.minimum(wi + 1, R - 1)
    hi = np.where(((wi + 1) < R)[:, None], w[nxt] << (np.uint64(32) - sh)[:, None], np.uint64(0))
    return ((lo | hi) & mask).astype(np.int64)


def unpack_words(words, bits: int, count: int) -> np.ndarray:
    """compressed-tensors packing along axis 0: ``32 // bits`` values per word, value ``k`` in word
    ``k // (32//bits)`` at bit ``(k mod (32//bits))·bits`` (no value straddles words). ``count × C`` int64."""
    w = np.asarray(words).view(np.uint32).astype(np.uint64)
    pf = 32 // bits
    k = np.arange(count)
    sh = ((k % pf) * bits).astype(np.uint64)
    return ((w[k // pf] >> sh[:, None]) & np.uint64((1 << bits) - 1)).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# dense
# ------------------------------------------------------------------------------------------------
def _float2d(a, dt: str, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array n × N (the layout of W), got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{name} must hold floating-point numbers (float64, float32, float16 or bfloat16), "
                         f"got dtype {dt}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or Inf ({int(np.sum(~np.isfinite(a)))} entries)")
    return a


def _load(spec: str, name: str):
    path, key = _split(spec)
    t = _Tensors(path, name)
    if key is None:
        if len(t.keys) != 1:
            raise ValueError(f"{name}: {path} holds {t.keys[:12]}; say which with {path}:KEY")
        key = t.keys[0]
    return t.get(key)


def _per_entry(a, n: int, N: int, g_idx, name: str) -> np.ndarray:
    """``n × N`` from a per-row (``n``, ``n × 1``), per-group (``n × G``) or per-entry array."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] != n:
        raise ValueError(f"{name} must have one row per output row of W (n = {n}): shape n, n × 1, n × G or "
                         f"n × N, got {a.shape} (a G × n GPTQ layout must be transposed)")
    if a.shape[1] == 1:
        return np.repeat(a, N, axis=1)
    if a.shape[1] == N:
        return a
    G = a.shape[1]
    if g_idx is None:
        if N % G:
            raise ValueError(f"{name} has {G} groups, which do not divide N = {N}; give --g-idx or per-entry values")
        g_idx = np.arange(N) // (N // G)
    if g_idx.max() >= G:
        raise ValueError(f"{name} has {G} groups but g_idx refers to group {int(g_idx.max())}")
    return a[:, g_idx]


def read_dense(spec: str, *, n: int, N: int, grid=None, scales=None, zeros=None, g_idx=None, bits: int = 4):
    """A dense ``Q`` with a ``Grid`` (fitted on ``W`` later) or explicit ``scales``/``zeros`` (specs)."""
    Q, dt = _load(spec, "--q")
    Q = _float2d(Q, dt, "Q (--q)")
    if Q.shape != (n, N):
        raise ValueError(f"Q (--q) is {Q.shape} but W is {(n, N)}; Q must have W's layout n × N"
                         + (" (it looks transposed)" if Q.shape == (N, n) else ""))
    info = {"format": "dense", "spec": spec, "dtype": dt}
    gi = None
    if g_idx is not None:
        gi, gdt = _load(g_idx, "--g-idx")
        gi = _check_gidx(np.asarray(gi).reshape(-1) if np.ndim(gi) == 2 and 1 in np.shape(gi) else gi, N, None,
                         f"g_idx (--g-idx, {gdt})")
    if scales is None:
        if zeros is not None:
            raise ValueError("--zeros needs --scales")
        info["grid"] = grid.describe()
        return GivenQ(Q=Q, grid=grid, g_idx=gi, stored_dtype=dt, format="dense", info=info)
    S, sdt = _load(scales, "--scales")
    if not np.issubdtype(np.asarray(S).dtype, np.floating):
        raise ValueError(f"scales (--scales) must be floating point, got dtype {sdt}")
    G = 1 if np.ndim(S) < 2 else int(np.shape(S)[1])
    S = _per_entry(S, n, N, gi, "scales (--scales)")
    if not np.all(np.isfinite(S) & (S > 0)):
        raise ValueError("scales (--scales) must be finite and positive; "
                         f"{int(np.sum(~(np.isfinite(S) & (S > 0))))} entries are not")
    if zeros is not None:
        Z, _ = _load(zeros, "--zeros")
        Z = _per_entry(Z, n, N, gi, "zeros (--zeros)")
        if not np.all(np.isfinite(Z)):
            raise ValueError("zeros (--zeros) contains NaN or Inf")
        qmin, qmax = 0, 2 ** bits - 1
    else:
        Z = np.zeros((n, N))
        qmin, qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    fg = FileGrid(scale=S, zero=Z, qmin=qmin, qmax=qmax, bits=bits,
                  group_size=(N // G if 1 < G < N and N % G == 0 else None), source="dense Q with --scales")
    info.update(scales=scales, zeros=zeros, scales_dtype=sdt, grid=fg.describe())
    return GivenQ(Q=Q, grid=fg, g_idx=gi, stored_dtype=dt, format="dense", info=info)


# ------------------------------------------------------------------------------------------------
# GPTQ
# ------------------------------------------------------------------------------------------------
def _check_gidx(g, N: int, G, name: str) -> np.ndarray:
    g = np.asarray(g)
    if g.ndim != 1 or g.shape[0] != N:
        raise ValueError(f"{name} must hold one group index per input feature (N = {N}), got shape {g.shape}")
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array (int32), got dtype {g.dtype}")
    g = g.astype(np.int64)
    if g.min() < 0 or (G is not None and g.max() >= G):
        raise ValueError(f"{name} must lie in [0, {G}) (one group per row of the scales), "
                         f"got values in [{int(g.min())}, {int(g.max())}]")
    return g


def _bits_from(rows: int, N: int, zcols: int, n: int, bits, words_of, what: str) -> int:
    cands = [b for b in _PACK_BITS if words_of(N, b) == rows and (zcols is None or words_of(n, b) == zcols)]
    if bits is not None:
        if bits not in _PACK_BITS:
            raise ValueError(f"--bits {bits}: packed formats hold 2, 3, 4 or 8 bits")
        if bits not in cands:
            raise ValueError(f"{what} has {rows} packed words for N = {N} input features, which does not fit "
                             f"{bits} bits ({', '.join(f'{b} bits: {words_of(N, b)}' for b in _PACK_BITS)}); "
                             "check --bits and that W is the layer of this tensor")
        return bits
    if not cands:
        raise ValueError(f"{what} has {rows} packed words for N = {N} input features: no bit width in "
                         f"{_PACK_BITS} fits ({', '.join(f'{b} bits: {words_of(N, b)}' for b in _PACK_BITS)}); "
                         "check that W is the layer of this tensor")
    if len(cands) > 1:
        if 4 in cands:  # check-layer's --bits default: taken where the shapes allow it
            return 4
        raise ValueError(f"{what}: the shapes fit {cands} bits; say which with --bits")
    return cands[0]


def _quantize_config(path: str) -> dict:
    p = Path(path).parent / "quantize_config.json"
    try:
        return json.loads(p.read_text()) if p.is_file() else {}
    except (OSError, ValueError):
        return {}


def read_gptq(spec: str, *, N: int | None = None, W=None, bits: int | None = None,
              zero_convention: str = "auto") -> GivenQ:
    """GPTQ's ``qweight/qzeros/scales/g_idx`` (see the module docstring); ``W`` (``n × N``, optional)
    gives ``N`` and settles an ambiguous zero convention."""
    if zero_convention not in ZERO_CONVENTIONS:
        raise ValueError(f"--zero-convention must be one of {ZERO_CONVENTIONS}, got {zero_convention!r}")
    path, key = _split(spec)
    t = _Tensors(path, "--q")
    pre = _pick_prefix(t, key, "qweight", "GPTQ")
    need = {nm: _key(pre, nm) for nm in ("qweight", "qzeros", "scales")}
    for nm, k in need.items():
        if k not in t.keys:
            raise ValueError(f"--q: {path} has {_key(pre, 'qweight')!r} but no {k!r}; a GPTQ layer needs "
                             "qweight, qzeros and scales (and g_idx)")
    qw, qw_dt = t.get(need["qweight"])
    qz, qz_dt = t.get(need["qzeros"])
    sc, sc_dt = t.get(need["scales"])
    qw = _as_u32(qw, f"qweight ({need['qweight']})")
    qz = _as_u32(qz, f"qzeros ({need['qzeros']})")
    sc = np.asarray(sc)
    if sc.ndim != 2 or not np.issubdtype(sc.dtype, np.floating):
        raise ValueError(f"scales ({need['scales']}) must be a 2-D float array G × n (float16), got shape "
                         f"{sc.shape}, dtype {sc_dt}")
    G, n = sc.shape
    if qw.shape[1] != n:
        raise ValueError(f"qweight ({need['qweight']}) is {qw.shape} but scales is {sc.shape}: qweight must be "
                         f"(N·bits/32) × n with n = {n} output rows (it is W transposed, packed)")
    if qz.shape[0] != G:
        raise ValueError(f"qzeros ({need['qzeros']}) has {qz.shape[0]} rows but scales has {G} groups; both "
                         "must have one row per group")
    gk = _key(pre, "g_idx")
    g_raw = t.get(gk)[0] if gk in t.keys else None
    if N is None:
        if g_raw is None:
            raise ValueError(f"--q: {path} has no {gk!r}; the number of input features N comes from W")
        N = int(np.asarray(g_raw).shape[0])
    if W is not None and np.shape(W) != (n, N):
        raise ValueError(f"qweight/scales ({pre}) hold a layer with n = {n} output rows but W is {np.shape(W)}; "
                         "W must be n × N (PyTorch Linear.weight layout)")
    cfg = _quantize_config(path)
    if bits is None and cfg.get("bits") in _PACK_BITS:
        bits = int(cfg["bits"])
    words = lambda cnt, b: -(-cnt * b // 32)  # noqa: E731
    bits = _bits_from(qw.shape[0], N, qz.shape[1], n, bits, words, f"qweight ({need['qweight']})")
    if g_raw is None:
        if N % G:
            raise ValueError(f"scales ({need['scales']}) has {G} groups, which do not divide N = {N}, and there "
                             f"is no {gk!r}; give the file its g_idx")
        g_idx = np.arange(N) // (N // G)
    else:
        g_idx = _check_gidx(g_raw, N, G, f"g_idx ({gk})")
    S = sc.astype(np.float64)
    if not np.all(np.isfinite(S) & (S > 0)):
        raise ValueError(f"scales ({need['scales']}) must be finite and positive; "
                         f"{int(np.sum(~(np.isfinite(S) & (S > 0))))} entries are not")
    codes = unpack_stream(qw, bits, N).T  # n × N
    stored = unpack_stream(qz.T, bits, n).T  # G × n
    conv, how = _zero_convention(zero_convention, stored, bits, cfg, codes, S, g_idx, W)
    Zg = stored + (1 if conv == "gptq-v1" else 0)
    scale = S[g_idx, :].T
    zero = Zg[g_idx, :].T.astype(np.float64)
    Q = scale * (codes - zero)
    counts = np.bincount(g_idx, minlength=G)
    gs = int(counts.max()) if G > 1 else None
    fg = FileGrid(scale=scale, zero=zero, qmin=0, qmax=2 ** bits - 1, bits=bits, group_size=gs,
                  source="GPTQ qweight/qzeros/scales")
    info = {"format": "gptq", "spec": spec, "prefix": pre, "bits": bits, "groups": G, "group_size": gs,
            "act_order_g_idx": bool(np.any(np.diff(g_idx) < 0)), "zero_convention": conv,
            "zero_convention_from": how, "scales_dtype": sc_dt, "qweight_shape": list(qw.shape),
            "g_idx": "read" if g_raw is not None else "absent: j // (N/G)", "grid": fg.describe()}
    return GivenQ(Q=Q, grid=fg, g_idx=g_idx, stored_dtype=sc_dt, format="gptq", info=info)


def _zero_convention(conv, stored, bits, cfg, codes, S, g_idx, W):
    if conv != "auto":
        return conv, "--zero-convention"
    half = 2 ** (bits - 1)
    if np.all(stored == half - 1):
        return "gptq-v1", (f"every stored zero is {half - 1} = 2^(bits−1) − 1 (a symmetric grid stored as "
                           "zero − 1)")
    if np.all(stored == half):
        return "gptq-v2", f"every stored zero is {half} = 2^(bits−1) (a symmetric grid stored as is)"
    fmt = cfg.get("checkpoint_format")
    if fmt in ("gptq", "gptq_v2"):
        return ("gptq-v1" if fmt == "gptq" else "gptq-v2"), f"quantize_config.json: checkpoint_format = {fmt}"
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        err = {}
        for c, off in (("gptq-v1", 1), ("gptq-v2", 0)):
            Z = (stored + off)[g_idx, :].T
            err[c] = float(np.linalg.norm(S[g_idx, :].T * (codes - Z) - W))
        best, other = sorted(err, key=err.get)
        if err[best] < 0.75 * err[other]:
            return best, (f"W: reading the zeros as {best} puts Q closer to W (‖Q − W‖ = {err[best]:.4g} vs "
                          f"{err[other]:.4g} as {other})")
    raise ValueError("qzeros: cannot tell whether the zero points are stored as zero − 1 (classic GPTQ, "
                     "checkpoint_format gptq) or as is (gptq_v2); say which with --zero-convention gptq-v1|gptq-v2")


# ------------------------------------------------------------------------------------------------
# compressed-tensors (pack-quantized)
# ------------------------------------------------------------------------------------------------
#: word counts of the two compressed-tensors packings of ``cnt`` values of ``b`` bits
_CT_WORDS = {"dense": lambda cnt, b: -(-cnt * b // 32), "per-word": lambda cnt, b: -(-cnt // (32 // b))}


def _ct_packing(cols: int, N: int, n: int, bits, what: str):
    """``(packing, bits)`` of a compressed-tensors ``weight_packed`` with ``cols`` words per row.

    Current releases (e.g. 0.19) pack densely: value ``k`` at bit ``k·b`` of the row's words read as
    one bit stream (3-bit values straddle words, ``⌈N·b/32⌉`` words); earlier ones put ``32//b``
    values in each word (``⌈N/(32//b)⌉`` words). Both are the same when ``b`` divides 32 or when every
    value lies in the first word. The word count decides between them; where it fits both with
    different layouts, the dense (current) packing is read and the choice is recorded."""
    found = {}
    for packing, words in _CT_WORDS.items():
        try:
            found[packing] = _bits_from(cols, N, None, n, bits, words, what)
        except ValueError as exc:
            err = exc
    if not found:
        raise err
    if "dense" in found:  # also where both fit: the current format
        return "dense", found["dense"]
    return "per-word", found["per-word"]


def read_compressed_tensors(spec: str, *, N: int | None = None, n: int | None = None,
                            bits: int | None = None) -> GivenQ:
    """compressed-tensors' ``pack-quantized`` layer (see the module docstring)."""
    path, key = _split(spec)
    t = _Tensors(path, "--q")
    pre = _pick_prefix(t, key, "weight_packed", "compressed-tensors")
    k = lambda nm: _key(pre, nm)  # noqa: E731
    if k("weight_scale") not in t.keys:
        raise ValueError(f"--q: {path} has {k('weight_packed')!r} but no {k('weight_scale')!r}")
    wp = _as_u32(t.get(k("weight_packed"))[0], f"weight_packed ({k('weight_packed')})")
    if k("weight_shape") in t.keys:
        shp = np.asarray(t.get(k("weight_shape"))[0]).reshape(-1)
        if shp.shape != (2,):
            raise ValueError(f"weight_shape ({k('weight_shape')}) must be [n, N], got {shp.tolist()}")
        n_, N_ = int(shp[0]), int(shp[1])
        if (n is not None and n != n_) or (N is not None and N != N_):
            raise ValueError(f"weight_shape ({k('weight_shape')}) says the layer is {n_} × {N_} but W is {n} × {N}")
        n, N = n_, N_
    if n is None or N is None:
        raise ValueError(f"--q: {path} has no {k('weight_shape')!r}; the layer's shape comes from W")
    if wp.shape[0] != n:
        raise ValueError(f"weight_packed ({k('weight_packed')}) is {wp.shape}; it must be n × ⌈N·bits/32⌉ "
                         f"(or n × ⌈N/(32//bits)⌉) with n = {n} rows (packed along the input dimension)")
    what = f"weight_packed ({k('weight_packed')})"
    packing, bits = _ct_packing(wp.shape[1], N, n, bits, what)
    words = _CT_WORDS[packing]
    unpack = unpack_stream if packing == "dense" else unpack_words
    off = 2 ** (bits - 1)
    q = unpack(wp.T, bits, N).T - off  # n × N signed codes
    sc, sc_dt = t.get(k("weight_scale"))
    sc = np.asarray(sc)
    if not np.issubdtype(sc.dtype, np.floating):
        raise ValueError(f"weight_scale ({k('weight_scale')}) must be floating point, got dtype {sc_dt}")
    sc = sc.reshape(n, -1) if sc.ndim <= 1 or (sc.ndim == 2 and sc.shape[0] == n) else sc
    if sc.ndim != 2 or sc.shape[0] != n:
        raise ValueError(f"weight_scale ({k('weight_scale')}) must be n × G (n = {n}), got {sc.shape}")
    G = sc.shape[1]
    gk = k("weight_g_idx")
    if gk in t.keys:
        g_idx = _check_gidx(np.asarray(t.get(gk)[0]).reshape(-1), N, G, f"weight_g_idx ({gk})")
    else:
        if G > 1 and N % G and -(-N // G) * (G - 1) >= N:
            raise ValueError(f"weight_scale ({k('weight_scale')}) has {G} groups, which do not fit N = {N}")
        g_idx = np.arange(N) // (-(-N // G)) if G > 1 else np.zeros(N, dtype=np.int64)
    S = sc.astype(np.float64)
    if not np.all(np.isfinite(S) & (S > 0)):
        raise ValueError(f"weight_scale ({k('weight_scale')}) must be finite and positive")
    if k("weight_zero_point") in t.keys:
        zp, zdt = t.get(k("weight_zero_point"))
        zp = np.asarray(zp)
        if zp.shape == (n, G) or zp.size == n * G and zp.dtype != np.int32:
            Zg = zp.reshape(n, G).astype(np.float64)
            zform = "n × G"
        elif zp.dtype == np.int32 and zp.ndim == 2 and zp.shape == (words(n, bits), G):
            Zg = (unpack(zp, bits, n) - off).astype(np.float64)
            zform = "packed along the output dimension"
        else:
            raise ValueError(f"weight_zero_point ({k('weight_zero_point')}) must be n × G = {(n, G)} (or int32 "
                             f"packed {(words(n, bits), G)}), got {zp.shape} {zdt}")
    else:
        Zg, zform = np.zeros((n, G)), "absent (symmetric)"
    scale, zero = S[:, g_idx], Zg[:, g_idx]
    Q = scale * (q - zero)
    gs = int(np.bincount(g_idx).max()) if G > 1 else None
    fg = FileGrid(scale=scale, zero=zero, qmin=-off, qmax=off - 1, bits=bits, group_size=gs,
                  source="compressed-tensors pack-quantized")
    info = {"format": "compressed-tensors", "spec": spec, "prefix": pre, "bits": bits, "groups": G, "packing": packing,
            "group_size": gs, "zero_point": zform, "scales_dtype": sc_dt, "grid": fg.describe()}
    return GivenQ(Q=Q, grid=fg, g_idx=g_idx, stored_dtype=sc_dt, format="compressed-tensors", info=info)


# ------------------------------------------------------------------------------------------------
# one entry point, and the implied run
# ------------------------------------------------------------------------------------------------
def read_q(spec: str, *, W, fmt: str = "auto", grid=None, scales=None, zeros=None, g_idx=None,
           bits: int | None = None, zero_convention: str = "auto") -> GivenQ:
    """Read ``--q SPEC`` for the layer ``W`` (``n × N``) in format ``fmt`` (``auto``: by the tensors' names)."""
    if fmt not in FORMATS:
        raise ValueError(f"--q-format must be one of {FORMATS}, got {fmt!r}")
    n, N = np.shape(W)
    if fmt == "auto":
        fmt = detect_format(spec)
    if fmt != "dense" and (scales is not None or zeros is not None):
        raise ValueError(f"--scales/--zeros go with a dense Q; a {fmt} file carries its own scales")
    if fmt == "dense":
        return read_dense(spec, n=n, N=N, grid=grid, scales=scales, zeros=zeros, g_idx=g_idx,
                          bits=4 if bits is None else bits)
    if fmt == "gptq":
        return read_gptq(spec, N=N, W=W, bits=bits, zero_convention=zero_convention)
    return read_compressed_tensors(spec, N=N, n=n, bits=bits)


def implied_run_given(kind: str, W, given: GivenQ, X, *, lam: float, order="natural", rounding="nearest",
                      X_tilde=None, precision: str | None = None, static_groups: bool = False):
    """:func:`verify.audit.implied_run` on a :class:`GivenQ`: with a ``Grid`` as it is; with a grid read
    from the file, the run's steps, zero points, integer range and clipping record are the file's."""
    import algorithms as A

    from .audit import implied_run

    prec = precision or given.precision
    if not isinstance(given.grid, FileGrid):
        return implied_run(kind, W, given.Q, X, grid=given.grid, lam=lam, order=order, rounding=rounding,
                           X_tilde=X_tilde, precision=prec, dtype=given.stored_dtype)
    fg = given.grid
    run = implied_run(kind, W, given.Q, X, grid=A.Grid.symmetric(1.0), lam=lam, order=order, rounding=rounding,
                      X_tilde=X_tilde, precision=prec, dtype=given.stored_dtype)
    perm = run.order
    u = run.z / fg.scale[:, perm] + fg.zero[:, perm]
    if rounding == "nearest":
        k = np.round(u)
        clipped = (k < fg.qmin) | (k > fg.qmax)
    else:
        clipped = (u < fg.qmin) | (u > fg.qmax)
    fixed = not (fg.group_size and not static_groups)
    return run.replace(scale=fg.scale, zero=fg.zero, qmin=fg.qmin, qmax=fg.qmax, clipped=clipped,
                       saturated=clipped.any(axis=1), steps_fixed=fixed,
                       meta={**run.meta, "grid": "from file", "format": given.format})
