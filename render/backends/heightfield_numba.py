"""The ``cpu`` backend: a numba-compiled exact ray caster over the triangulated LOD heightfield pyramid.

This is the only module of crosslocate that imports numba.

Surface
-------
The rendered surface is the one the ``pyrender`` backend rasterises (:mod:`crosslocate.render.mesh`):
every cell of a pyramid level is split into two triangles along its south-west / north-east diagonal,
and level ``L`` is used for horizontal distances (from the camera) in
``[max_distance_m[L-1], max_distance_m[L])`` (:attr:`TerrainLevel.max_distance_m`), up to the render
range; where a ray leaves a level's lattice early, the next level takes over. Terrain is rendered at
every distance from the camera (there is no near clipping plane), and nothing beyond ``range_m``
(horizontal distance from the camera, the same cut as the OpenGL backend's per-fragment test).
The two backends differ only next to a level boundary: the caster steps from one level's surface to
the next at the boundary circle (a vertical wall where the coarser one is higher), the mesh changes
level at tile borders within a few cells of the circle and stitches the finer border onto the coarser.

Algorithm
---------
A camera with pitch 0 and roll 0 in the terrain frame maps every image column to a vertical plane
through the camera. Each column is cast independently; one parallel region per ``render`` call
covers all its views (``numba.prange`` over (view, block of ``COLUMN_BLOCK`` adjacent columns) tasks,
handed out one at a time, so all cores are busy, a preempted thread delays nothing but its own task,
and each thread writes whole cache lines).
Along the column's horizontal direction the height of the triangulated surface is piecewise linear in
the distance ``t``, with breakpoints where the ray crosses a cell edge (``x`` or ``y`` node line) or a
cell diagonal; the caster visits exactly these breakpoints (a 3-stream DDA), so between two of them
the surface is a straight segment and the crossing with the ray of every image row is solved exactly
(no step size, no missed peaks, exact depth at any distance, however close).
A row ``r`` (centre ``r + 0.5``, ray slope ``m_r = (cy - r - 0.5) / f'``) is covered by the first
segment that rises above its ray; rows are filled bottom-up, the highest filled row is the running
occlusion horizon, and rows never covered are sky (``SKY_DEPTH_M`` / ``SKY_CLASS``). The class is that
of the node nearest to the hit point.

Empty space is skipped with a max-mipmap: each level keeps the maximum node height of every
``BLOCK_CELLS`` x ``BLOCK_CELLS`` cell block, and a block whose maximum stays below the lowest
uncovered row's ray over the block's distance interval is crossed in one step. A column stops when
all rows are filled or when even the highest node of the remaining levels cannot reach that ray.

For a pitch-0 column through camera x-coordinate ``x_c = (u + 0.5 - W/2) / f`` the horizontal
direction is ``(x_c right + forward) / n`` with ``n = sqrt(1 + x_c^2)``, ``f' = f n``, and the z-depth
(distance along the optical axis) of a hit at horizontal distance ``t`` is ``t / n``.

General pitch / roll (queries) take the **cylindrical strip** path: the azimuth / elevation range of
all pixel rays is rendered as a pitch-0 cylindrical panorama (columns uniform in azimuth, rows uniform
in ``tan(elevation)``, both with spacing ``1 / (oversample f)``) whose cells store the horizontal hit
distance ``t``; each target pixel then looks up its ray's (azimuth, tan elevation) cell (nearest) and
converts to z-depth ``t / |ray_horizontal|`` (rays normalised to camera z = 1). Row/column errors are
at most half a strip cell (0.4 px at the default oversample 1.25). Ray elevations are clipped to
+-85 degrees.

Outputs follow :mod:`crosslocate.datasets.schema`: depth float32 z-depth metres (sky ``SKY_DEPTH_M``),
semantic uint8 LandCover ids (sky ``SKY_CLASS``), silhouette from the depth with exactly the rule of
:func:`crosslocate.datasets.derived.silhouette_from_depth` (computed here in parallel).

Threads: ``numba`` uses ``NUMBA_NUM_THREADS`` threads (default: all cores); :func:`threads_used`.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING

import numba
import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import SKY_CLASS, SKY_DEPTH_M, Modality
from crosslocate.errors import RenderError
from crosslocate.render.atlas import BLOCK_CELLS, PackedLevels, TerrainAtlas, pack_levels
from crosslocate.render.backends.base import FrameCamera, RenderBackend, ViewBatch

if TYPE_CHECKING:
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.terrain import LocalTerrain

logger = logging.getLogger(__name__)

#: Adjacent image columns cast by one parallel task (16 float32 = one 64-byte cache line per row).
COLUMN_BLOCK: int = 16
#: Strip resolution relative to the target camera's focal length (general pitch / roll path).
STRIP_OVERSAMPLE: float = 1.25
#: Largest |ray elevation| rendered by the strip path, degrees.
MAX_ELEVATION_DEG: float = 85.0
#: A camera counts as level (fast path) when its tilt moves the image by less than this many pixels.
LEVEL_TOL_PX: float = 0.02
#: Smallest reported hit distance, metres (a camera inside the terrain still sees terrain, not sky).
MIN_HIT_M: float = 1e-3
_BIG: float = 1e300
#: LLVM fast-math flags of the caster: FMA contraction, reciprocals, reassociation; not no-NaN / no-Inf.
_FASTMATH = {"contract", "arcp", "nsz", "afn", "reassoc"}


def threads_used() -> int:
    """Number of threads the numba kernels run on (``NUMBA_NUM_THREADS`` / ``numba.set_num_threads``)."""
    return int(numba.get_num_threads())


# ------------------------------------------------------------------------------------------ kernels


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _tri_height(zf: npt.NDArray[np.float32], off: int, nx: int, ny: int, fx: float, fy: float) -> float:
    """Height of the triangulated level surface at lattice coordinates ``(fx, fy)`` (clamped inside).

    Cell ``(i, j)`` (column ``i`` east, row ``j`` south) is split along ``ax + ay = 1`` (its south-west /
    north-east diagonal) like the mesh; the surface is continuous, so points on an edge may use either
    neighbouring triangle.
    """
    if fx < 0.0:
        fx = 0.0
    elif fx > nx - 1.0:
        fx = nx - 1.0
    if fy < 0.0:
        fy = 0.0
    elif fy > ny - 1.0:
        fy = ny - 1.0
    i = min(int(fx), nx - 2)
    j = min(int(fy), ny - 2)
    ax = fx - i
    ay = fy - j
    b = off + j * nx + i
    if ax + ay <= 1.0:
        z00 = np.float64(zf[b])
        return z00 + ax * (zf[b + 1] - z00) + ay * (zf[b + nx] - z00)
    z11 = np.float64(zf[b + nx + 1])
    return z11 + (1.0 - ax) * (zf[b + nx] - z11) + (1.0 - ay) * (zf[b + 1] - z11)


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _height(h: float, t: float, cz: float, c2: float, c3: float) -> float:
    """Height of a node / surface value ``h`` at horizontal distance ``t`` relative to the camera height,
    with the per-column earth-curvature drop ``c2 t^2 + c3 h t^2`` (zero for a LocalTerrain)."""
    return h * (1.0 - c3 * t * t) - cz - c2 * t * t


@numba.njit(cache=True, inline="always", fastmath=_FASTMATH)
def _gap_max(hmax: float, m: float, cz: float, c2: float, c3: float, ta: float, tb: float) -> float:
    """Upper bound over ``t`` in ``[ta, tb]`` of (height of any point <= ``hmax``) minus the ray ``m t``.

    Negative: nothing below ``hmax`` reaches the ray there. ``hmax - cz - c2 t^2 - m t`` is concave in
    ``t``, so its maximum is at the vertex clipped into the interval; the ``c3`` term only lowers
    non-negative heights and raises negative ones by at most ``|hmax| c3 tb^2``.
    """
    if c2 > 0.0:
        ts = -m / (2.0 * c2)
    else:
        ts = tb if m < 0.0 else ta
    ts = min(max(ts, ta), tb)
    g = hmax - cz - c2 * ts * ts - m * ts
    if hmax < 0.0:
        g -= hmax * c3 * tb * tb
    return g


@numba.njit(cache=True, inline="always")
def _next_crossing(f0: float, g: float, ig: float, t: float) -> tuple[float, float, float]:
    """First integer line of ``f(t) = f0 + g t`` strictly after ``t``: returns (k, step, t_k)."""
    if g > 0.0:
        k = math.floor(f0 + g * t) + 1.0
        return k, 1.0, (k - f0) * ig
    if g < 0.0:
        k = math.ceil(f0 + g * t) - 1.0
        return k, -1.0, (k - f0) * ig
    return 0.0, 0.0, _BIG


@numba.njit(cache=True, fastmath=_FASTMATH)
def _cast_levels(
    zf: npt.NDArray[np.float32],
    cf: npt.NDArray[np.uint8],
    bz: npt.NDArray[np.float32],
    lv_int: npt.NDArray[np.int64],
    lv_flt: npt.NDArray[np.float64],
    cam: npt.NDArray[np.float64],
    col: npt.NDArray[np.float64],
    c: int,
    depth_out: npt.NDArray[np.float32],
    cls_out: npt.NDArray[np.uint8],
    top: int,
    t_start: float,
) -> int:
    """Cast column ``c`` through one pyramid from distance ``t_start`` (frame metres) to the column's
    range (module docstring); fills rows ``< top`` that the surface covers, returns the new ``top``."""
    nlev = lv_int.shape[0]
    cx, cy, cz = cam[0], cam[1], cam[2]
    dx, dy, fc, cyc, zs = col[0], col[1], col[2], col[3], col[4]
    c2, c3, range_m = col[5], col[6], col[7]
    inv_f = 1.0 / fc
    t_a = t_start
    dz_a = 0.0
    bsz = float(BLOCK_CELLS)
    done = False
    for lev in range(nlev):
        if done or top == 0:
            break
        off, nx, ny = lv_int[lev, 0], lv_int[lev, 1], lv_int[lev, 2]
        boff, bnx, bny = lv_int[lev, 3], lv_int[lev, 4], lv_int[lev, 5]
        x0, y0, s, dmax, zmax_from = lv_flt[lev, 0], lv_flt[lev, 1], lv_flt[lev, 2], lv_flt[lev, 3], lv_flt[lev, 4]
        m_top = (cyc + 0.5 - top) * inv_f
        if _gap_max(zmax_from, m_top, cz, c2, c3, t_a, range_m) < 0.0:
            break  # nothing at this or any coarser level reaches the lowest uncovered ray
        t_end = min(dmax, range_m)
        if t_end <= t_a:
            continue
        gx = dx / s
        gy = -dy / s
        fx0 = (cx - x0) / s
        fy0 = (y0 - cy) / s
        t_lo = t_a
        t_hi = t_end
        # clip to the part of the ray inside the level's lattice
        empty = False
        for f0, g, n in ((fx0, gx, nx), (fy0, gy, ny)):
            if g != 0.0:
                ta_ = -f0 / g
                tb_ = (n - 1.0 - f0) / g
                if ta_ > tb_:
                    ta_, tb_ = tb_, ta_
                t_lo = max(t_lo, ta_)
                t_hi = min(t_hi, tb_)
            elif f0 < 0.0 or f0 > n - 1.0:
                empty = True
        if empty or t_hi <= t_lo:
            continue
        # entry point of this level: a vertical step from the previous surface (or a gap) at t_lo
        t_a = t_lo
        dz_a = _height(_tri_height(zf, off, nx, ny, fx0 + gx * t_a, fy0 + gy * t_a), t_a, cz, c2, c3)
        if t_a > 0.0 and dz_a >= m_top * t_a:
            rnew = max(math.ceil(cyc - 0.5 - fc * dz_a / t_a), 0)
            th = max(t_a, MIN_HIT_M)
            ci = min(max(int(fx0 + gx * th + 0.5), 0), nx - 1)
            cj = min(max(int(fy0 + gy * th + 0.5), 0), ny - 1)
            k = cf[off + cj * nx + ci]
            for r in range(rnew, top):
                depth_out[r, c] = th * zs
                cls_out[r, c] = k
            top = min(top, rnew)
            if top == 0:
                break
        igx = 1.0 / gx if gx != 0.0 else 0.0
        igy = 1.0 / gy if gy != 0.0 else 0.0
        gd = gx + gy
        igd = 1.0 / gd if gd != 0.0 else 0.0
        fd0 = fx0 + fy0
        # block streams (block lines are multiples of BLOCK_CELLS in lattice coordinates)
        kbx, sbx, tbx = _next_crossing(fx0 / bsz, gx / bsz, igx * bsz, t_a)
        kby, sby, tby = _next_crossing(fy0 / bsz, gy / bsz, igy * bsz, t_a)
        stale = False
        while t_a < t_hi:
            t_bexit = min(tbx, tby, t_hi)
            tm = 0.5 * (t_a + t_bexit)
            bi = min(max(int((fx0 + gx * tm) / bsz), 0), bnx - 1)
            bj = min(max(int((fy0 + gy * tm) / bsz), 0), bny - 1)
            hb = bz[boff + bj * bnx + bi]
            m_top = (cyc + 0.5 - top) * inv_f
            if _gap_max(hb, m_top, cz, c2, c3, t_a, t_bexit) >= 0.0:
                if stale:
                    dz_a = _height(_tri_height(zf, off, nx, ny, fx0 + gx * t_a, fy0 + gy * t_a), t_a, cz, c2, c3)
                    stale = False
                kx, sx, tx = _next_crossing(fx0, gx, igx, t_a)
                ky, sy, ty = _next_crossing(fy0, gy, igy, t_a)
                kd, sd, td = _next_crossing(fd0, gd, igd, t_a)
                while True:
                    t_b = min(tx, ty, td)
                    last = t_b >= t_bexit
                    if last:
                        t_b = t_bexit
                    else:
                        if tx <= t_b:
                            kx += sx
                            tx = (kx - fx0) * igx
                        if ty <= t_b:
                            ky += sy
                            ty = (ky - fy0) * igy
                        if td <= t_b:
                            kd += sd
                            td = (kd - fd0) * igd
                    fxb = fx0 + gx * t_b
                    fyb = fy0 + gy * t_b
                    dz_b = _height(_tri_height(zf, off, nx, ny, fxb, fyb), t_b, cz, c2, c3)
                    if dz_b >= m_top * t_b:
                        # rows rnew .. top-1 cross the segment (t_a, dz_a) -> (t_b, dz_b)
                        rnew = max(math.ceil(cyc - 0.5 - fc * dz_b / t_b), 0)
                        for r in range(rnew, top):
                            m = (cyc - 0.5 - r) * inv_f
                            ga = dz_a - m * t_a
                            if ga >= 0.0:
                                th = t_a
                            else:
                                gb = dz_b - m * t_b
                                th = t_a + (t_b - t_a) * (-ga) / (gb - ga) if gb > ga else t_b
                                th = min(th, t_b)
                            th = max(th, MIN_HIT_M)
                            ci = min(max(int(fx0 + gx * th + 0.5), 0), nx - 1)
                            cj = min(max(int(fy0 + gy * th + 0.5), 0), ny - 1)
                            depth_out[r, c] = th * zs
                            cls_out[r, c] = cf[off + cj * nx + ci]
                        top = min(top, rnew)
                        if top == 0:
                            break
                        m_top = (cyc + 0.5 - top) * inv_f
                        if _gap_max(hb, m_top, cz, c2, c3, t_b, t_bexit) < 0.0:
                            stale = True  # the rest of this block cannot reach the new horizon
                            break
                    t_a = t_b
                    dz_a = dz_b
                    if last:
                        break
                if top == 0:
                    break
            else:
                stale = True
            t_a = t_bexit
            if t_bexit >= t_hi:
                break
            while tbx <= t_bexit:
                kbx += sbx
                tbx = (kbx * bsz - fx0) * igx
            while tby <= t_bexit:
                kby += sby
                tby = (kby * bsz - fy0) * igy
            m_top = (cyc + 0.5 - top) * inv_f
            if _gap_max(zmax_from, m_top, cz, c2, c3, t_a, range_m) < 0.0:
                done = True
                break
    return top


@numba.njit(cache=True, fastmath=_FASTMATH)
def _cast_column(
    zf: npt.NDArray[np.float32],
    cf: npt.NDArray[np.uint8],
    bz: npt.NDArray[np.float32],
    lv_int: npt.NDArray[np.int64],
    lv_flt: npt.NDArray[np.float64],
    cam: npt.NDArray[np.float64],
    col: npt.NDArray[np.float64],
    pzf: npt.NDArray[np.float32],
    pcf: npt.NDArray[np.uint8],
    pbz: npt.NDArray[np.float32],
    plv_int: npt.NDArray[np.int64],
    plv_flt: npt.NDArray[np.float64],
    pcam: npt.NDArray[np.float64],
    pcol: npt.NDArray[np.float64],
    c: int,
    depth_out: npt.NDArray[np.float32],
    cls_out: npt.NDArray[np.uint8],
    sky_depth: float,
    sky_cls: int,
) -> None:
    """Cast image column ``c``: through the near patch (if it has levels) out to its range, then through
    the main pyramid from there; rows left uncovered are sky. Writes ``depth_out[:, c]``, ``cls_out[:, c]``.

    The patch works in true metres (``pcol``: zscale ``1/n``), the main pyramid in frame metres
    (``col``: zscale ``scale/n``), so the hand-over distance is ``pcol[7] * pcol[4] / col[4]``.
    """
    top = depth_out.shape[0]
    t0 = 0.0
    if plv_int.shape[0] > 0:
        top = _cast_levels(pzf, pcf, pbz, plv_int, plv_flt, pcam, pcol, c, depth_out, cls_out, top, 0.0)
        t0 = pcol[7] * pcol[4] / col[4]
    if top > 0:
        top = _cast_levels(zf, cf, bz, lv_int, lv_flt, cam, col, c, depth_out, cls_out, top, t0)
    for r in range(top):
        depth_out[r, c] = sky_depth
        cls_out[r, c] = sky_cls


@numba.njit(cache=True, parallel=True, nogil=True)
def _cast_columns(
    zf: npt.NDArray[np.float32],
    cf: npt.NDArray[np.uint8],
    bz: npt.NDArray[np.float32],
    lv_int: npt.NDArray[np.int64],
    lv_flt: npt.NDArray[np.float64],
    cams: npt.NDArray[np.float64],
    cols: npt.NDArray[np.float64],
    pzf: npt.NDArray[np.float32],
    pcf: npt.NDArray[np.uint8],
    pbz: npt.NDArray[np.float32],
    plv_int: npt.NDArray[np.int64],
    plv_flt: npt.NDArray[np.float64],
    pcams: npt.NDArray[np.float64],
    pcols: npt.NDArray[np.float64],
    depth_out: npt.NDArray[np.float32],
    cls_out: npt.NDArray[np.uint8],
    sky_depth: float,
    sky_cls: int,
) -> None:
    """Cast every column of every view in one parallel region; outputs are (N, nrows, ncol).

    ``p*``: the near patch (packed like the main pyramid, no levels = none) with its own camera
    positions ``pcams`` and column parameters ``pcols`` (same layout as ``cams`` / ``cols``).

    ``cams[i]`` is view ``i``'s camera position, ``cols[i, c] = (dir_x, dir_y, f', cy, zscale, c2, c3,
    range)``: horizontal frame direction, focal length and centre row of the column's vertical plane,
    depth per unit of frame distance, curvature drop coefficients and the range in frame metres.
    ``lv_int[L] = (off, nx, ny, block_off, block_nx, block_ny)``, ``lv_flt[L] = (x0, y0, spacing,
    max_distance, zmax of levels >= L)``; level L nodes are ``zf[off + r * nx + c]``, its block maxima
    ``bz[block_off + br * block_nx + bc]``. The tasks are (view, block of ``COLUMN_BLOCK`` columns).
    """
    nview, ncol = cols.shape[0], cols.shape[1]
    nblk = (ncol + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    for task in numba.prange(nview * nblk):
        i = task // nblk
        b = task % nblk
        d_i = depth_out[i]
        c_i = cls_out[i]
        for c in range(b * COLUMN_BLOCK, min(ncol, (b + 1) * COLUMN_BLOCK)):
            _cast_column(
                zf, cf, bz, lv_int, lv_flt, cams[i], cols[i, c], pzf, pcf, pbz, plv_int, plv_flt, pcams[i], pcols[i, c],
                c, d_i, c_i, sky_depth, sky_cls,
            )  # fmt: skip


@numba.njit(cache=True, parallel=True, nogil=True)
def _silhouette(depth: npt.NDArray[np.float32], scale: np.float32, out: npt.NDArray[np.uint8]) -> None:
    """:func:`crosslocate.datasets.derived.silhouette_from_depth` for (N, H, W) float32, bit for bit.

    ``scale = float32(1 + rel_jump)``; a terrain pixel is marked when a 4-neighbour is farther than
    ``scale`` times its depth; sky (depth <= 0 or non-finite) is infinitely far and never marked.
    Rows are processed in parallel through branch-free "farness" rows (0 outside the image).
    """
    n, h, w = depth.shape
    inf = np.float32(np.inf)
    zero = np.float32(0.0)
    for q in numba.prange(n * h):
        i = q // h
        r = q % h
        far_u = np.empty(w, np.float32)
        far_m = np.empty(w, np.float32)
        far_d = np.empty(w, np.float32)
        for c in range(w):
            e = depth[i, r, c]
            far_m[c] = e if e > 0.0 else inf  # NaN, <= 0 -> sky (inf); +inf stays inf
            e = depth[i, r - 1, c] if r > 0 else zero
            far_u[c] = (e if e > 0.0 else inf) if r > 0 else zero
            e = depth[i, r + 1, c] if r + 1 < h else zero
            far_d[c] = (e if e > 0.0 else inf) if r + 1 < h else zero
        for c in range(w):
            d = far_m[c]
            sc = d * scale
            left = far_m[c - 1] if c > 0 else zero
            right = far_m[c + 1] if c + 1 < w else zero
            hit = (left > sc) | (right > sc) | (far_u[c] > sc) | (far_d[c] > sc)
            out[i, r, c] = hit & (d < inf)


# ------------------------------------------------------------------------------------------ backend


#: The kernel's stand-in for "no near patch": a pyramid with no levels.
_NO_PATCH = PackedLevels(
    np.zeros(1, np.float32),
    np.zeros(1, np.uint8),
    np.zeros(1, np.float32),
    np.zeros((0, 6), np.int64),
    np.zeros((0, 5), np.float64),
)


def _is_level(cam: FrameCamera, f: float) -> bool:
    """True when the camera's right and forward axes are horizontal in the frame (pitch 0, roll 0)."""
    r = cam.rotation
    return abs(r[2, 0]) * f < LEVEL_TOL_PX and abs(r[2, 2]) * f < LEVEL_TOL_PX


def _focal(cam: FrameCamera) -> float:
    return 0.5 * cam.width_px / math.tan(math.radians(cam.fov_deg) / 2.0)


def _column_metric(
    cam: FrameCamera, d: npt.NDArray[np.float64], range_m: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-column ``(true metres per frame metre, c2, c3, range in frame metres)`` for (K, 2) unit
    frame directions ``d``: the camera's curvature form and metric (identity / zero without them)."""
    k = d.shape[0]
    if cam.to_true is None:
        scale = np.ones(k)
    else:
        scale = np.hypot(*(np.asarray(cam.to_true, np.float64) @ d.T))
    if cam.curvature is None:
        c2 = np.zeros(k)
    else:
        c2 = np.einsum("ki,ij,kj->k", d, np.asarray(cam.curvature, np.float64), d)
    return scale, c2, float(cam.curvature_h) * scale * scale, range_m / scale


def _level_columns(cam: FrameCamera, f: float, range_m: float) -> npt.NDArray[np.float64]:
    """(W, 8) column parameters of a level camera (module docstring, :func:`_cast_columns`)."""
    right = cam.rotation[:2, 0]
    fwd = cam.rotation[:2, 2]
    right = right / np.hypot(*right)
    fwd = fwd / np.hypot(*fwd)
    xc = (np.arange(cam.width_px) + 0.5 - cam.width_px / 2.0) / f
    n = np.sqrt(1.0 + xc * xc)
    d = (xc[:, None] * right[None, :] + fwd[None, :]) / n[:, None]
    scale, c2, c3, trange = _column_metric(cam, d, range_m)
    return np.stack(
        [d[:, 0], d[:, 1], f * n / scale, np.full_like(n, cam.height_px / 2.0), scale / n, c2, c3, trange], axis=1
    )


def _patch_columns(cam: FrameCamera, cols: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Near-patch parameters of main-pyramid columns ``cols`` (K, 8): true directions and metres, no
    curvature (baked into the patch), the patch radius as range; zeros without a patch."""
    if cam.patch is None:
        return np.zeros_like(cols)
    d = cols[:, :2]
    t = d @ np.asarray(cam.to_true, np.float64).T if cam.to_true is not None else d
    scale = np.hypot(t[:, 0], t[:, 1])
    out = cols.copy()
    out[:, 0], out[:, 1] = t[:, 0] / scale, t[:, 1] / scale
    out[:, 2] = cols[:, 2] * scale  # f' in true metres
    out[:, 4] = cols[:, 4] / scale  # 1 / n
    out[:, 5] = out[:, 6] = 0.0
    out[:, 7] = float(cam.patch.lv_flt[0, 3])
    return out


def silhouette(depth: npt.NDArray[np.float32], rel_jump: float) -> npt.NDArray[np.uint8]:
    """Parallel :func:`~crosslocate.datasets.derived.silhouette_from_depth` of (N, H, W) float32 depth."""
    if not rel_jump > 0.0:
        raise RenderError(f"rel_jump must be > 0, got {rel_jump}")
    d = np.ascontiguousarray(depth, np.float32)
    out = np.empty(d.shape, np.uint8)
    _silhouette(d, np.float32(1.0 + rel_jump), out)
    return out


class HeightfieldBackend(RenderBackend):
    """Numba ray caster over the triangulated heightfield pyramid (module docstring).

    Thread count: ``NUMBA_NUM_THREADS`` (see :func:`threads_used`).

    Parameters
    ----------
    config : RenderConfig
        Uses ``silhouette_rel_jump`` (the range comes from the terrain; terrain is rendered at every
        distance, ``near_m`` is not a clipping plane here).
    oversample : float
        Strip resolution of the general pitch / roll path relative to the focal length.
    """

    name = "cpu"
    supports_atlas = True
    rendered_modalities = (Modality.DEPTH, Modality.SILHOUETTE, Modality.SEMANTIC)

    def __init__(self, config: RenderConfig, *, oversample: float = STRIP_OVERSAMPLE):
        super().__init__(config)
        if not oversample >= 1.0:
            raise RenderError(f"need oversample >= 1, got {oversample}")
        self.oversample = float(oversample)
        self._pyr: PackedLevels | None = None
        self._range_m = float(config.range_m)
        self._prepared: object = None

    def prepare(self, terrain: LocalTerrain | TerrainAtlas) -> None:
        """Use ``terrain``: a per-position :class:`LocalTerrain` (packed here) or a region's
        :class:`TerrainAtlas` (already packed, memory-mapped; cameras carry their curvature)."""
        if terrain is self._prepared:
            return
        self._pyr = terrain.packed if isinstance(terrain, TerrainAtlas) else pack_levels(terrain.levels)
        self._range_m = float(terrain.range_m)
        self._prepared = terrain

    def set_threads(self, n: int) -> None:
        """Render on ``n`` numba threads from the calling thread on (0: ``NUMBA_NUM_THREADS``)."""
        numba.set_num_threads(int(n) if n > 0 else numba.config.NUMBA_NUM_THREADS)

    def close(self) -> None:
        """Drop the prepared terrain."""
        self._pyr = None
        self._prepared = None

    def _run(
        self,
        cams: list[FrameCamera],
        cols: npt.NDArray[np.float64],
        depth: npt.NDArray[np.float32],
        cls: npt.NDArray[np.uint8],
    ) -> None:
        """Run the kernel for N views ``cams`` sharing one near patch (or none): ``cols`` (N, ncol, 8),
        into (N, nrows, ncol) ``depth`` (``t * zscale``) and ``cls``."""
        p = self._pyr
        if p is None:
            raise RenderError("no terrain prepared: call backend.prepare(terrain) before render()")
        patch = cams[0].patch
        if any(c.patch is not patch for c in cams):
            raise RenderError("cameras of one kernel launch must share their near patch")
        if patch is None:
            patch = _NO_PATCH
            pcams = np.zeros((len(cams), 3))
            pcols = np.zeros_like(cols)
        else:
            pcams = np.array([[0.0, 0.0, c.patch_z] for c in cams], np.float64)
            pcols = np.stack([_patch_columns(c, cols[i]) for i, c in enumerate(cams)])
        pos = np.ascontiguousarray(np.stack([c.position for c in cams]), np.float64)
        # tasks differ a lot in cost (sky, early exits) and threads may be preempted: hand them out
        # one at a time
        old_chunk = numba.set_parallel_chunksize(1)
        try:
            _cast_columns(
                p.zf, p.cf, p.bz, p.lv_int, p.lv_flt, pos, np.ascontiguousarray(cols, np.float64),
                patch.zf, patch.cf, patch.bz, patch.lv_int, patch.lv_flt, pcams, np.ascontiguousarray(pcols),
                depth, cls, float(SKY_DEPTH_M), int(SKY_CLASS),
            )  # fmt: skip
        finally:
            numba.set_parallel_chunksize(old_chunk)

    def render_one(self, cam: FrameCamera) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """Render one camera; returns (H, W) float32 z-depth (m, sky ``SKY_DEPTH_M``), (H, W) uint8 classes."""
        depth = np.empty((1, cam.height_px, cam.width_px), np.float32)
        cls = np.empty((1, cam.height_px, cam.width_px), np.uint8)
        self._render_into([cam], depth, cls)
        return depth[0], cls[0]

    def _render_into(
        self, cams: list[FrameCamera], depth: npt.NDArray[np.float32], cls: npt.NDArray[np.uint8]
    ) -> npt.NDArray[np.float64]:
        """Render ``cams`` into (N, H, W) ``depth`` / ``cls``; returns the wall time per view (s).

        Level cameras share one kernel launch (their time is split evenly); the others take the strip
        path one by one.
        """
        times = np.zeros(len(cams))
        level_all = [i for i, cam in enumerate(cams) if _is_level(cam, _focal(cam))]
        groups: dict[int, list[int]] = {}
        for i in level_all:
            groups.setdefault(id(cams[i].patch), []).append(i)
        for level in groups.values():
            t0 = time.perf_counter()
            cols = np.stack([_level_columns(cams[i], _focal(cams[i]), self._range_m) for i in level])
            if len(level) == len(cams):
                self._run(cams, cols, depth, cls)
            else:
                d = np.empty((len(level), *depth.shape[1:]), np.float32)
                k = np.empty((len(level), *cls.shape[1:]), np.uint8)
                self._run([cams[i] for i in level], cols, d, k)
                depth[level], cls[level] = d, k
            times[level] = (time.perf_counter() - t0) / len(level)
        in_level = set(level_all)
        for i, cam in enumerate(cams):
            if i not in in_level:
                t0 = time.perf_counter()
                depth[i], cls[i] = self._render_strip(cam, _focal(cam))
                times[i] = time.perf_counter() - t0
        return times

    def _render_strip(self, cam: FrameCamera, f: float) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """General pitch / roll via a cylindrical strip (module docstring)."""
        w, h = cam.width_px, cam.height_px
        u = (np.arange(w) + 0.5 - w / 2.0) / f
        v = (np.arange(h) + 0.5 - h / 2.0) / f
        rays = (
            cam.rotation[:, 0][None, None, :] * u[None, :, None] + cam.rotation[:, 1][None, None, :] * v[:, None, None]
        )
        rays = rays + cam.rotation[:, 2][None, None, :]
        hn = np.maximum(np.hypot(rays[..., 0], rays[..., 1]), 1e-12)
        tmax = math.tan(math.radians(MAX_ELEVATION_DEG))
        tan_el = np.clip(rays[..., 2] / hn, -tmax, tmax)
        fwd = cam.rotation[:, 2]
        a0 = (
            math.atan2(fwd[0], fwd[1])
            if math.hypot(fwd[0], fwd[1]) > 1e-9
            else math.atan2(-cam.rotation[0, 1], -cam.rotation[1, 1])
        )
        daz = np.mod(np.arctan2(rays[..., 0], rays[..., 1]) - a0 + math.pi, 2.0 * math.pi) - math.pi
        fs = f * self.oversample
        az_lo, az_hi = float(daz.min()), float(daz.max())
        t_lo, t_hi = float(tan_el.min()), float(tan_el.max())
        ncs = math.floor((az_hi - az_lo) * fs) + 2
        nrs = math.floor((t_hi - t_lo) * fs) + 2
        if ncs * nrs > 64 * w * h:
            raise RenderError(
                f"camera too steep for the cpu backend: its cylindrical strip would be {ncs}x{nrs} cells (> 64x the "
                f"image); keep ray elevations within about +-60 deg (|pitch| + vertical FOV / 2) or use the pyrender backend"
            )
        az = a0 + az_lo + np.arange(ncs) / fs
        cy_s = 0.5 + t_hi * fs
        d = np.stack([np.sin(az), np.cos(az)], axis=1)
        scale, c2, c3, trange = _column_metric(cam, d, self._range_m)
        cols = np.stack([d[:, 0], d[:, 1], fs / scale, np.full(ncs, cy_s), scale, c2, c3, trange], axis=1)
        strip_t = np.empty((1, nrs, ncs), np.float32)
        strip_c = np.empty((1, nrs, ncs), np.uint8)
        self._run([cam], cols[None], strip_t, strip_c)
        strip_t, strip_c = strip_t[0], strip_c[0]
        kc = np.clip(np.rint((daz - az_lo) * fs).astype(np.int64), 0, ncs - 1)
        kr = np.clip(np.floor(cy_s - tan_el * fs).astype(np.int64), 0, nrs - 1)
        t = strip_t[kr, kc]
        sky = t == np.float32(SKY_DEPTH_M)
        depth = np.where(sky, np.float32(SKY_DEPTH_M), (t / hn).astype(np.float32)).astype(np.float32)
        return depth, strip_c[kr, kc]

    def render(self, cameras: list[FrameCamera], modalities: tuple[Modality, ...]) -> ViewBatch:
        """Render the cameras of the prepared terrain.

        Returns
        -------
        ViewBatch
            ``depth`` (N, H, W) float32 z-depth metres along the optical axis (sky ``SKY_DEPTH_M``);
            ``semantic`` (N, H, W) uint8 LandCover ids (sky ``SKY_CLASS``); ``silhouette`` (N, H, W)
            uint8 {0, 1} from the depth; only those requested. ``render_time_s`` per view: the level
            views' shared kernel launch and the batch's silhouette pass are split evenly.
        """
        mods = self.requested(modalities)
        if self._pyr is None:
            raise RenderError("no terrain prepared: call backend.prepare(terrain) before render()")
        sizes = {(c.height_px, c.width_px) for c in cameras}
        if len(sizes) > 1:
            raise RenderError(f"all cameras of one render() call must share a size, got {sorted(sizes)}")
        h, w = sizes.pop() if sizes else (1, 1)
        n = len(cameras)
        depth = np.empty((n, h, w), np.float32)
        sem = np.empty((n, h, w), np.uint8)
        times = self._render_into(cameras, depth, sem).astype(np.float32)
        arrays: dict[Modality, np.ndarray] = {}
        if Modality.DEPTH in mods:
            arrays[Modality.DEPTH] = depth
        if Modality.SILHOUETTE in mods:
            t0 = time.perf_counter()
            arrays[Modality.SILHOUETTE] = silhouette(depth, self.config.silhouette_rel_jump)
            if n:
                times += np.float32((time.perf_counter() - t0) / n)
        if Modality.SEMANTIC in mods:
            arrays[Modality.SEMANTIC] = sem
        return ViewBatch({m: arrays[m] for m in mods}, times)
