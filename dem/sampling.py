"""Vectorised raster sampling and void filling (pure numpy/scipy, no I/O).

Grid convention: a raster ``z (H, W)`` has row 0 at the north; its affine ``transform`` (rasterio /
GDAL, corner-based) maps pixel *corner* coordinates ``(col, row)`` to native ``(x, y)``. The centre of
cell ``[r, c]`` is at corner coordinates ``(c + 0.5, r + 0.5)``. "Fractional centre indices"
``(row_f, col_f)`` are such that cell ``[r, c]``'s centre is at ``(r, c)`` exactly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from scipy.interpolate import LinearNDInterpolator

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]


def centre_indices(transform: Any, x: Any, y: Any) -> tuple[FloatArray, FloatArray]:
    """Fractional centre indices ``(row_f, col_f)`` (float64) of native coordinates for a north-up grid.

    ``transform`` is an ``affine.Affine`` (``a`` = x pixel size, ``e`` = y pixel size (negative for
    north-up), ``c``/``f`` = x/y of the upper-left corner); rotated grids are not supported.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    col_f = (xa - transform.c) / transform.a - 0.5
    row_f = (ya - transform.f) / transform.e - 0.5
    return row_f, col_f


def inside_footprint(row_f: FloatArray, col_f: FloatArray, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """True where a fractional centre index lies within the cell-edge footprint of a (H, W) grid."""
    h, w = shape
    return (row_f >= -0.5) & (row_f <= h - 0.5) & (col_f >= -0.5) & (col_f <= w - 0.5)


def inside_centres(row_f: FloatArray, col_f: FloatArray, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """True where a fractional centre index lies within the hull of cell centres (no extrapolation)."""
    h, w = shape
    return (row_f >= 0.0) & (row_f <= h - 1) & (col_f >= 0.0) & (col_f <= w - 1)


def bilinear(grid: npt.NDArray[Any], row_f: Any, col_f: Any) -> FloatArray:
    """Bilinear interpolation of ``grid (H, W)`` at fractional centre indices (float64 out, input shape).

    Indices are clamped to the centre hull, so points in the half-cell border around the centres get
    the edge value (constant extrapolation over at most half a cell). NaN cells propagate NaN.
    """
    h, w = grid.shape
    r = np.clip(np.asarray(row_f, dtype=np.float64), 0.0, h - 1.0)
    c = np.clip(np.asarray(col_f, dtype=np.float64), 0.0, w - 1.0)
    r0 = np.minimum(r.astype(np.intp), max(h - 2, 0))
    c0 = np.minimum(c.astype(np.intp), max(w - 2, 0))
    r1 = np.minimum(r0 + 1, h - 1)
    c1 = np.minimum(c0 + 1, w - 1)
    fr = r - r0
    fc = c - c0
    flat = grid.reshape(-1)
    i00 = r0 * w + c0
    v00 = flat[i00].astype(np.float64)
    v01 = flat[r0 * w + c1].astype(np.float64)
    v10 = flat[r1 * w + c0].astype(np.float64)
    v11 = flat[r1 * w + c1].astype(np.float64)
    top = v00 + (v01 - v00) * fc
    bot = v10 + (v11 - v10) * fc
    return np.asarray(top + (bot - top) * fr, np.float64)


def nearest_index(row_f: Any, col_f: Any, shape: tuple[int, int]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Integer ``(row, col)`` of the nearest cell centre, clamped into a (H, W) grid."""
    h, w = shape
    r = np.clip(np.floor(np.asarray(row_f, dtype=np.float64) + 0.5), 0, h - 1).astype(np.intp)
    c = np.clip(np.floor(np.asarray(col_f, dtype=np.float64) + 0.5), 0, w - 1).astype(np.intp)
    return r, c


def fill_voids(z: npt.NDArray[np.floating[Any]]) -> tuple[npt.NDArray[np.floating[Any]], int]:
    """Fill NaN voids of ``z (H, W)`` by linear interpolation from the valid cells around each void.

    The valid cells bordering the voids (a 2-cell ring) are triangulated (Delaunay) and the voids get
    the linear interpolant, so a void inside a plane is filled exactly. Void cells outside the convex
    hull of the ring (voids touching the grid edge) take the nearest valid cell's value.

    Returns
    -------
    filled : (H, W) float32 (float64 when ``z`` is float64), no NaN.
    n_void : int, number of NaN cells that were filled.
    Raises ``ValueError`` when every cell is NaN (callers turn that into ``DEMReadError``).
    """
    src = np.asarray(z)
    out = src.astype(np.float64 if src.dtype == np.float64 else np.float32, copy=True)
    void = ~np.isfinite(out)
    n_void = int(void.sum())
    if n_void == 0:
        return out, 0
    if n_void == out.size:
        raise ValueError("all cells are void")
    ring = ndimage.binary_dilation(void, iterations=2) & ~void
    rr, cc = np.nonzero(ring)
    vr, vc = np.nonzero(void)
    values = out[rr, cc].astype(np.float64)
    filled = np.full(n_void, np.nan)
    if len(rr) >= 3 and np.ptp(rr) > 0 and np.ptp(cc) > 0:
        interp = LinearNDInterpolator(np.column_stack([rr, cc]).astype(np.float64), values)
        filled = interp(np.column_stack([vr, vc]).astype(np.float64))
    missing = ~np.isfinite(filled)
    if missing.any():
        _, (ir, ic) = ndimage.distance_transform_edt(void, return_distances=True, return_indices=True)
        filled[missing] = out[ir[vr[missing], vc[missing]], ic[vr[missing], vc[missing]]]
    out[vr, vc] = filled.astype(out.dtype)
    return out, n_void
