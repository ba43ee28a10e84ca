"""Encodings of stored modalities (numpy; the depth encoder also compiled, :mod:`~crosslocate.datasets.codec_kernels`) and the compressor settings of each dataset.

Depth: ``logq16``
-----------------
Depth is z-depth in metres (float32, sky = ``SKY_DEPTH_M``). Storing it as fp16 would overflow
above 65,504 m and lose metres at 30 km, so depth is stored as **log-quantised uint16 codes**:

* code ``0`` is sky (decodes to exactly ``SKY_DEPTH_M``);
* code ``c >= 1`` decodes to ``d_c = depth_min_m * exp((c - 1) * step)`` with
  ``step = 2 * ln(1 + depth_rel_error)``;
* a depth ``d`` encodes to ``c = 1 + round(ln(max(d, depth_min_m) / depth_min_m) / step)``.

So ``|ln(decoded / d)| <= step / 2 = ln(1 + eps)`` and the **relative error is at most eps**
(``depth_rel_error``) for ``d`` in ``[depth_min_m, depth_max_m]``, plus float32 rounding of the
decoded value (2^-24 relative): :func:`depth_max_relative_error` states the combined bound.
Depths in ``[0, depth_min_m)`` decode to ``depth_min_m`` (absolute error below ``depth_min_m``).
Depths above ``depth_max_m``, NaN, +-inf and negative values other than the sky sentinel are
refused (:class:`~crosslocate.errors.RenderError`): they are renderer bugs, not data.

With the defaults (eps = 5e-4 over 0.5 m .. 1,000 km) the code book has 14,514 entries (14 bits).
A reversible **delta transform** (``depth_delta="row"``: each code minus its left neighbour,
modulo 2^16; ``"col"``: minus the code above) turns smooth terrain into small residuals the Blosc
compressor packs well; decoding is a wrapping cumulative sum, exact.

``float32``: the depth metres as is (lossless, about 12x larger after compression).

Measured on 24 CPU-rendered 500 x 500 views of the synthetic alpine demo region (29 % sky), Blosc
zstd level 5, one chunk per view, bytes per view: depth ``logq16`` eps 5e-4 + row delta + byte
shuffle 30.2 K (no delta 55.0 K, column delta 33.6 K; eps 1e-3: 25.9 K; float32 lossless: 367.5 K);
silhouette bit shuffle 0.7 K; semantic byte shuffle 1.7 K: about 33 KB per view for all three
modalities (goal: < 90 KB). ``crosslocate bench build`` re-measures this on any DEM.

Silhouette ({0, 1} uint8) and semantic (uint8 ids) are stored unchanged (lossless); bit shuffle
packs silhouettes 8 pixels per byte before compression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.schema import SKY_DEPTH_M, Modality, modality_spec
from crosslocate.errors import ConfigError, RenderError, ShardCorruptError

#: Code of sky pixels in ``logq16``.
SKY_CODE: int = 0
#: Relative rounding error of a float32 result (half an ulp).
FLOAT32_REL_ROUNDING: float = 2.0**-24


def depth_step(rel_error: float) -> float:
    """Log step of the ``logq16`` code book for a maximum relative error ``rel_error`` (natural log units)."""
    return 2.0 * math.log1p(rel_error)


def depth_max_relative_error(cfg: ShardConfig) -> float:
    """Stated bound on ``|decoded / true - 1|`` for depths in ``[depth_min_m, depth_max_m]`` (0 for float32)."""
    if cfg.depth_codec == "float32":
        return 0.0
    return cfg.depth_rel_error + 2.0 * FLOAT32_REL_ROUNDING


@dataclass(frozen=True, slots=True)
class CodecSpec:
    """How one modality's dataset is encoded; stored as HDF5 attributes of that dataset.

    Attributes
    ----------
    modality : str
        ``depth`` / ``silhouette`` / ``semantic``.
    codec : str
        ``logq16``, ``float32`` or ``raw`` (uint8 stored unchanged).
    stored_dtype : str
        numpy dtype string of the stored array.
    depth_min_m, step : float
        ``logq16`` code book (metres, natural-log step); 0 otherwise.
    delta : str
        ``none`` / ``row`` / ``col`` (``logq16`` only).
    compressor, clevel, shuffle : str, int, str
        Blosc settings of the dataset.
    """

    modality: str
    codec: str
    stored_dtype: str
    depth_min_m: float = 0.0
    step: float = 0.0
    delta: str = "none"
    compressor: str = "zstd"
    clevel: int = 5
    shuffle: str = "byte"

    def to_attrs(self) -> dict[str, Any]:
        """Flat dict for HDF5 attributes / JSON."""
        return {
            "modality": self.modality,
            "codec": self.codec,
            "stored_dtype": self.stored_dtype,
            "depth_min_m": float(self.depth_min_m),
            "step": float(self.step),
            "delta": self.delta,
            "compressor": self.compressor,
            "clevel": int(self.clevel),
            "shuffle": self.shuffle,
        }

    @classmethod
    def from_attrs(cls, attrs: Any, where: str = "<dataset>") -> CodecSpec:
        """Inverse of :meth:`to_attrs`; raises :class:`ShardCorruptError` naming ``where`` when fields are missing."""
        try:
            return cls(
                modality=str(attrs["modality"]),
                codec=str(attrs["codec"]),
                stored_dtype=str(attrs["stored_dtype"]),
                depth_min_m=float(attrs["depth_min_m"]),
                step=float(attrs["step"]),
                delta=str(attrs["delta"]),
                compressor=str(attrs["compressor"]),
                clevel=int(attrs["clevel"]),
                shuffle=str(attrs["shuffle"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ShardCorruptError(
                f"{where}: codec attributes missing or invalid ({exc}); rebuild this shard"
            ) from exc


def codec_spec(modality: Modality | str, cfg: ShardConfig) -> CodecSpec:
    """The :class:`CodecSpec` of ``modality`` under ``cfg``.

    The codec is the modality's registry default (:attr:`~crosslocate.datasets.schema.ModalitySpec.codec`)
    unless its ``codec_setting`` field of ``cfg`` names another; the Blosc shuffle is its
    ``shuffle_setting`` field of ``cfg``.
    """
    ms = modality_spec(modality)
    name = ms.modality.value
    codec = getattr(cfg, ms.codec_setting) if ms.codec_setting else ms.codec
    shuffle = getattr(cfg, ms.shuffle_setting)
    if codec == "logq16":
        step = depth_step(cfg.depth_rel_error)
        return CodecSpec(
            name, "logq16", "<u2", cfg.depth_min_m, step, cfg.depth_delta, cfg.compressor, cfg.clevel, shuffle
        )
    if codec == "float32":
        return CodecSpec(name, "float32", "<f4", 0.0, 0.0, "none", cfg.compressor, cfg.clevel, shuffle)
    if codec == "raw":
        return CodecSpec(name, "raw", ms.dtype.str, compressor=cfg.compressor, clevel=cfg.clevel, shuffle=shuffle)
    raise ConfigError(f"{name}: unknown codec {codec!r}; choose logq16, float32 or raw")


def _check_depth(depth: npt.NDArray[Any], max_m: float) -> npt.NDArray[np.float64]:
    d = np.asarray(depth, dtype=np.float64)
    sky = d == SKY_DEPTH_M
    bad = ~sky & ~(np.isfinite(d) & (d >= 0.0) & (d <= max_m))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise RenderError(
            f"depth value {d[where]!r} at index {where} cannot be stored: depth must be finite metres in "
            f"[0, {max_m:g}] or exactly SKY_DEPTH_M={SKY_DEPTH_M}; the renderer produced an invalid depth map"
        )
    return d


def lut_shift(step: float) -> int:
    """Right shift of a float32 bit pattern that indexes the ``logq16`` lookup table for ``step``.

    It keeps ``b`` mantissa bits with ``2^-b < step / 2``: a bin spans a relative width below half a
    code step, so it holds at most one code threshold (``b = 12`` for eps = 5e-4).
    """
    bits = min(23, max(4, math.ceil(math.log2(2.0 / step)) + 1))
    return 23 - bits


@lru_cache(maxsize=8)
def _logq16_lut(
    depth_min_m: float, step: float, max_m: float
) -> tuple[int, npt.NDArray[np.uint16], npt.NDArray[np.float32]]:
    """Lookup table of the ``logq16`` encoder: ``(first bin, code at each bin's lower edge, threshold)``.

    Bin ``k`` holds the float32 values whose bit pattern shifted right by :func:`lut_shift` is ``k``.
    ``code(d) = code_lo[k] + (d >= thr[k])``, where ``thr[k]`` is the bin's one code threshold
    ``depth_min_m * exp((c - 0.5) * step)`` (rounded up to float32; +inf when none falls in the bin),
    exactly the rounding of ``1 + rint(ln(d / depth_min_m) / step)``.
    """
    shift = lut_shift(step)
    top = codebook_max_m(depth_min_m, step, max_m)
    k0 = int(np.array(depth_min_m, np.float32).view(np.uint32)) >> shift
    k1 = int(np.array(top, np.float32).view(np.uint32)) >> shift
    k = np.arange(k0, k1 + 1, dtype=np.uint32)
    lo = (k << shift).view(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        hi = ((k + 1) << shift).view(np.float32).astype(np.float64)
    lo = np.maximum(lo, depth_min_m)
    code_lo = 1.0 + np.rint(np.log(lo / depth_min_m) / step)
    t = depth_min_m * np.exp((code_lo + 0.5 - 1.0) * step)  # threshold to the next code
    with np.errstate(over="ignore"):
        t32 = t.astype(np.float32)
    t32 = np.where(t32.astype(np.float64) < t, np.nextafter(t32, np.float32(np.inf)), t32)
    thr = np.where(t < hi, t32, np.float32(np.inf)).astype(np.float32)
    return k0, code_lo.astype(np.uint16), thr


def codebook_max_m(depth_min_m: float, step: float, max_m: float = math.inf) -> float:
    """Largest depth (m, float32-representable) ``logq16`` can encode: ``max_m`` or the code book's end."""
    end = depth_min_m * math.exp((65535 - 1.5) * step)
    return float(np.float32(min(max_m, end, float(np.finfo(np.float32).max))))


def encode_depth_logq16(
    depth: npt.NDArray[np.floating[Any]], depth_min_m: float, step: float, max_m: float = math.inf
) -> npt.NDArray[np.uint16]:
    """Depth metres -> ``logq16`` codes (same shape, uint16; sky -> 0). See the module docstring.

    The float32 depth is encoded through a lookup table on its bit pattern (:func:`_logq16_lut`): one
    shift, two gathers and a comparison per pixel instead of a logarithm, with the same codes.
    """
    d = np.ascontiguousarray(depth, dtype=np.float32)
    if np.asarray(depth).dtype != np.float32 and not np.array_equal(d, np.asarray(depth)):
        _check_depth(depth, max_m)  # float64 input that float32 cannot hold: checked (and refused) exactly
    sky = d == np.float32(SKY_DEPTH_M)
    ok = sky | ((d >= 0.0) & (d <= np.float32(max_m)))
    if not ok.all():
        _check_depth(d, max_m)
    top = codebook_max_m(depth_min_m, step, max_m)
    if top < max_m and (d > np.float32(top)).any():
        raise RenderError(
            f"depth {float(d.max()):g} m exceeds the logq16 code book (depth_min_m={depth_min_m}, step={step})"
        )
    k0, code_lo, thr = _logq16_lut(float(depth_min_m), float(step), float(max_m))
    k = (d.view(np.uint32) >> np.uint32(lut_shift(step))).astype(np.int64) - k0
    np.clip(k, 0, code_lo.size - 1, out=k)
    out = code_lo[k]
    out += d >= thr[k]
    out[sky] = SKY_CODE
    return out


def decode_depth_logq16(codes: npt.NDArray[np.uint16], depth_min_m: float, step: float) -> npt.NDArray[np.float32]:
    """``logq16`` codes -> depth metres, float32 (code 0 -> exactly ``SKY_DEPTH_M``)."""
    c = np.asarray(codes)
    d = depth_min_m * np.exp((c.astype(np.float64) - 1.0) * step)
    return np.where(c == SKY_CODE, SKY_DEPTH_M, d).astype(np.float32)


def encode_depth_fast(
    depth: npt.NDArray[np.floating[Any]], depth_min_m: float, step: float, delta: str, max_m: float = math.inf
) -> npt.NDArray[np.uint16]:
    """``delta_encode(encode_depth_logq16(depth, ...), delta)`` in one compiled pass per pixel
    (:mod:`crosslocate.datasets.codec_kernels`), bit-identical; a value it cannot store is
    refused with :func:`encode_depth_logq16`'s own error."""
    from crosslocate.datasets.codec_kernels import logq16_rows

    if delta not in ("none", "row", "col"):
        raise RenderError(f"unknown depth delta {delta!r}; choose none, row or col")
    d = np.asarray(depth)
    if d.dtype != np.float32 or d.ndim < 1:
        return delta_encode(encode_depth_logq16(d, depth_min_m, step, max_m), delta)
    k0, code_lo, thr = _logq16_lut(float(depth_min_m), float(step), float(max_m))
    limit = min(float(np.float32(max_m)), codebook_max_m(depth_min_m, step, max_m))
    codes, bad = logq16_rows(d, lut_shift(step), k0, code_lo, thr, SKY_DEPTH_M, limit, delta == "row")
    if bad >= 0:  # the reference encoder raises the exact error for the first bad value
        encode_depth_logq16(d, depth_min_m, step, max_m)
        raise RenderError(f"depth value {d.reshape(-1)[bad]!r} (flat index {bad}) cannot be stored")  # unreachable
    return delta_encode(codes, "col") if delta == "col" else codes


def delta_encode(codes: npt.NDArray[np.uint16], delta: str) -> npt.NDArray[np.uint16]:
    """Reversible predictor on (..., H, W) uint16 codes: ``row`` (left neighbour), ``col`` (above), ``none``.

    Differences wrap modulo 2^16, so :func:`delta_decode` restores the input exactly.
    """
    c = np.ascontiguousarray(codes, dtype=np.uint16)
    if delta == "none":
        return c
    axis = {"row": -1, "col": -2}.get(delta)
    if axis is None:
        raise RenderError(f"unknown depth delta {delta!r}; choose none, row or col")
    out = c.copy()
    src = np.moveaxis(c, axis, 0)
    dst = np.moveaxis(out, axis, 0)
    dst[1:] = src[1:] - src[:-1]  # uint16 arithmetic wraps modulo 2^16
    return out


def delta_decode(residuals: npt.NDArray[np.uint16], delta: str) -> npt.NDArray[np.uint16]:
    """Inverse of :func:`delta_encode` (wrapping cumulative sum along the same axis)."""
    r = np.asarray(residuals, dtype=np.uint16)
    if delta == "none":
        return r
    axis = {"row": -1, "col": -2}.get(delta)
    if axis is None:
        raise ShardCorruptError(f"unknown depth delta {delta!r} in shard attributes; rebuild the shard")
    return np.cumsum(r, axis=axis, dtype=np.uint16)


def encode(spec: CodecSpec, array: npt.NDArray[Any], depth_max_m: float = math.inf) -> npt.NDArray[Any]:
    """Decoded (..., H, W) array of ``spec.modality`` -> the stored array (dtype ``spec.stored_dtype``)."""
    if spec.codec == "logq16":
        return encode_depth_fast(array, spec.depth_min_m, spec.step, spec.delta, depth_max_m)
    if spec.codec == "float32":
        return np.ascontiguousarray(_check_depth(array, depth_max_m).astype(np.float32))
    arr = np.asarray(array)
    if arr.dtype != np.dtype(spec.stored_dtype):
        raise RenderError(f"{spec.modality} must be {np.dtype(spec.stored_dtype)}, got {arr.dtype}")
    return np.ascontiguousarray(arr)


def decode(spec: CodecSpec, stored: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """Stored array -> decoded array: depth (..., H, W) float32 metres (sky ``SKY_DEPTH_M``), else uint8."""
    if spec.codec == "logq16":
        return decode_depth_logq16(delta_decode(stored, spec.delta), spec.depth_min_m, spec.step)
    if spec.codec == "float32":
        return np.asarray(stored, dtype=np.float32)
    if spec.codec == "raw":
        try:
            dtype = np.dtype(spec.stored_dtype)
        except TypeError:
            raise ShardCorruptError(
                f"stored_dtype {spec.stored_dtype!r} of {spec.modality} is not a dtype; rebuild the shard"
            ) from None
        return np.asarray(stored, dtype=dtype)
    raise ShardCorruptError(f"unknown codec {spec.codec!r} for {spec.modality}; rebuild the shard")


__all__ = [
    "FLOAT32_REL_ROUNDING",
    "SKY_CODE",
    "CodecSpec",
    "codec_spec",
    "decode",
    "decode_depth_logq16",
    "delta_decode",
    "delta_encode",
    "depth_max_relative_error",
    "depth_step",
    "encode",
    "encode_depth_logq16",
]
