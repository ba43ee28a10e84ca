"""The ``cpu`` backend: a numba-compiled heightfield ray marcher (voxel-space style) over the LOD pyramid.

This is the only module of crosslocate that imports numba.

Algorithm
---------
A camera with pitch 0 and roll 0 in the terrain frame maps every image column to a vertical plane
through the camera. Each column is rendered independently (``numba.prange`` over columns, so all
cores are used): march outward along the column's horizontal direction from ``near_m`` to
``range_m``; the step is ``step_cells`` node spacings of the pyramid level that serves the current
distance (:attr:`TerrainLevel.max_distance_m`), so it grows with distance; at each step the bilinear
height ``z(t)`` projects to the continuous row ``v = cy - f' (z - z_cam) / t``. Rows are filled
bottom-up only where the terrain rises above the running occlusion horizon (the highest row filled so
far). Row ``r`` (centre ``r + 0.5``) is covered once ``r + 0.5 >= v``; its hit distance is the linear
interpolation of the crossing between the previous and the current step (exact on planar terrain),
its class that of the nearest node. Rows never covered are sky (``SKY_DEPTH_M`` / ``SKY_CLASS``). A
column stops early when all rows are filled or when even the highest node of the remaining levels
cannot rise above the horizon.

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
semantic uint8 LandCover ids (sky ``SKY_CLASS``), silhouette from the depth via
:func:`crosslocate.datasets.derived.silhouette_from_depth`.
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
from crosslocate.render.backends.base import FrameCamera, RenderBackend, ViewBatch

if TYPE_CHECKING:
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.terrain import LocalTerrain

logger = logging.getLogger(__name__)

#: Default march step in node spacings of the level in use.
STEP_CELLS: float = 1.0
#: Strip resolution relative to the target camera's focal length (general pitch / roll path).
STRIP_OVERSAMPLE: float = 1.25
#: Largest |ray elevation| rendered by the strip path, degrees.
MAX_ELEVATION_DEG: float = 85.0
#: A camera counts as level (fast path) when its tilt moves the image by less than this many pixels.
LEVEL_TOL_PX: float = 0.02


@numba.njit(cache=True, inline="always")
def _height(
    zf: npt.NDArray[np.float32], off: int, nx: int, ny: int, x0: float, y0: float, s: float, x: float, y: float
) -> float:
    """Bilinear height of one level at frame ``(x, y)``; NaN outside the level's lattice."""
    fx = (x - x0) / s
    fy = (y0 - y) / s
    i = math.floor(fx)
    j = math.floor(fy)
    if i < 0 or j < 0 or i >= nx - 1 or j >= ny - 1:
        return math.nan
    ax = fx - i
    ay = fy - j
    b = off + j * nx + i
    return (zf[b] * (1.0 - ax) + zf[b + 1] * ax) * (1.0 - ay) + (zf[b + nx] * (1.0 - ax) + zf[b + nx + 1] * ax) * ay


@numba.njit(cache=True, parallel=True, fastmath=True, nogil=True)
def _march_columns(
    zf: npt.NDArray[np.float32],
    cf: npt.NDArray[np.uint8],
    lv_off: npt.NDArray[np.int64],
    lv_nx: npt.NDArray[np.int64],
    lv_ny: npt.NDArray[np.int64],
    lv_geo: npt.NDArray[np.float64],
    cam: npt.NDArray[np.float64],
    near_m: float,
    range_m: float,
    step_cells: float,
    cols: npt.NDArray[np.float64],
    depth_out: npt.NDArray[np.float32],
    cls_out: npt.NDArray[np.uint8],
    sky_depth: float,
    sky_cls: int,
) -> None:
    """March every column; ``cols[c] = (dir_x, dir_y, f', cy, zscale)``; outputs are (ncol, nrows).

    ``lv_geo[L] = (x0, y0, spacing, max_distance, zmax of levels >= L)``; level L nodes are
    ``zf[lv_off[L] + r * lv_nx[L] + c]``.
    """
    ncol = cols.shape[0]
    nrows = depth_out.shape[1]
    nlev = lv_off.shape[0]
    cx, cy_, cz = cam[0], cam[1], cam[2]
    for c in numba.prange(ncol):
        dx, dy, fc, cyc, zs = cols[c, 0], cols[c, 1], cols[c, 2], cols[c, 3], cols[c, 4]
        top = nrows
        t = near_m
        lev = 0
        while lev < nlev and t >= lv_geo[lev, 3]:
            lev += 1
        t_prev = -1.0
        dz_prev = 0.0
        while lev < nlev and t <= range_m and top > 0:
            x0, y0, s = lv_geo[lev, 0], lv_geo[lev, 1], lv_geo[lev, 2]
            nx, ny, off = lv_nx[lev], lv_ny[lev], lv_off[lev]
            fx = (cx + dx * t - x0) / s
            fy = (y0 - (cy_ + dy * t)) / s
            i = math.floor(fx)
            j = math.floor(fy)
            if i >= 0 and j >= 0 and i < nx - 1 and j < ny - 1:
                ax = fx - i
                ay = fy - j
                b = off + j * nx + i
                z = (zf[b] * (1.0 - ax) + zf[b + 1] * ax) * (1.0 - ay) + (
                    zf[b + nx] * (1.0 - ax) + zf[b + nx + 1] * ax
                ) * ay
                dz = z - cz
                vs = cyc - fc * dz / t
                rnew = top
                if vs - 0.5 < top:
                    rnew = max(math.ceil(vs - 0.5), 0)
                if rnew < top:
                    ci = i + 1 if ax >= 0.5 else i
                    cj = j + 1 if ay >= 0.5 else j
                    k = cf[off + cj * nx + ci]
                    # one extra sample halfway back refines the crossings (piecewise-linear over 3 samples)
                    tm = 0.5 * (t_prev + t)
                    dzm = _height(zf, off, nx, ny, x0, y0, s, cx + dx * tm, cy_ + dy * tm) - cz
                    for r in range(rnew, top):
                        th = t
                        if t_prev > 0.0:
                            m = (cyc - (r + 0.5)) / fc
                            g0 = dz_prev - m * t_prev
                            g1 = dz - m * t
                            gm = dzm - m * tm
                            if not math.isfinite(gm):
                                if g0 < 0.0 and g1 > g0:
                                    th = t_prev + (t - t_prev) * (-g0) / (g1 - g0)
                            elif gm >= 0.0:
                                if g0 < 0.0:
                                    th = t_prev + (tm - t_prev) * (-g0) / (gm - g0)
                                else:
                                    th = t_prev
                            elif g1 > gm:
                                th = tm + (t - tm) * (-gm) / (g1 - gm)
                        depth_out[c, r] = th * zs
                        cls_out[c, r] = k
                    top = rnew
                dz_prev = dz
                t_prev = t
            else:
                t_prev = -1.0
            if top == 0:
                break
            m_top = (cyc - (top - 0.5)) / fc
            hz = lv_geo[lev, 4] - cz
            bound = hz / t if hz >= 0.0 else hz / range_m
            if bound < m_top:
                break
            t += s * step_cells
            while lev < nlev and t >= lv_geo[lev, 3]:
                lev += 1
        for r in range(top):
            depth_out[c, r] = sky_depth
            cls_out[c, r] = sky_cls


class _Pyramid:
    """The terrain levels packed into flat arrays for the kernel."""

    def __init__(self, terrain: LocalTerrain) -> None:
        if not terrain.levels:
            raise RenderError("terrain has no levels (the DEM does not overlap the render range)")
        zs, cs, off = [], [], [0]
        for lv in terrain.levels:
            zs.append(np.ascontiguousarray(lv.z, np.float32).ravel())
            cs.append(np.ascontiguousarray(lv.cls, np.uint8).ravel())
            off.append(off[-1] + zs[-1].size)
        self.zf = np.concatenate(zs)
        self.cf = np.concatenate(cs)
        self.off = np.array(off[:-1], np.int64)
        self.nx = np.array([lv.z.shape[1] for lv in terrain.levels], np.int64)
        self.ny = np.array([lv.z.shape[0] for lv in terrain.levels], np.int64)
        zmax = np.array([float(np.max(lv.z)) for lv in terrain.levels])
        zmax_from = np.maximum.accumulate(zmax[::-1])[::-1]
        self.geo = np.array(
            [[lv.x0, lv.y0, lv.spacing_m, lv.max_distance_m, zmax_from[i]] for i, lv in enumerate(terrain.levels)],
            np.float64,
        )
        self.range_m = float(terrain.range_m)


def _is_level(cam: FrameCamera, f: float) -> bool:
    """True when the camera's right and forward axes are horizontal in the frame (pitch 0, roll 0)."""
    r = cam.rotation
    return abs(r[2, 0]) * f < LEVEL_TOL_PX and abs(r[2, 2]) * f < LEVEL_TOL_PX


def _focal(cam: FrameCamera) -> float:
    return 0.5 * cam.width_px / math.tan(math.radians(cam.fov_deg) / 2.0)


def _level_columns(cam: FrameCamera, f: float) -> npt.NDArray[np.float64]:
    """(W, 5) column parameters of a level camera (module docstring)."""
    right = cam.rotation[:2, 0]
    fwd = cam.rotation[:2, 2]
    right = right / np.hypot(*right)
    fwd = fwd / np.hypot(*fwd)
    xc = (np.arange(cam.width_px) + 0.5 - cam.width_px / 2.0) / f
    n = np.sqrt(1.0 + xc * xc)
    d = (xc[:, None] * right[None, :] + fwd[None, :]) / n[:, None]
    return np.stack([d[:, 0], d[:, 1], f * n, np.full_like(n, cam.height_px / 2.0), 1.0 / n], axis=1)


class HeightfieldBackend(RenderBackend):
    """Numba heightfield marcher (module docstring). Thread count: ``NUMBA_NUM_THREADS``.

    Parameters
    ----------
    config : RenderConfig
        Uses ``near_m`` and ``silhouette_rel_jump`` (the range comes from the terrain).
    step_cells : float
        March step in node spacings of the level in use (smaller: slower, more exact).
    oversample : float
        Strip resolution of the general pitch / roll path relative to the focal length.
    """

    name = "cpu"

    def __init__(self, config: RenderConfig, *, step_cells: float = STEP_CELLS, oversample: float = STRIP_OVERSAMPLE):
        super().__init__(config)
        if not (step_cells > 0.0 and oversample >= 1.0):
            raise RenderError(f"need step_cells > 0 and oversample >= 1, got {step_cells}, {oversample}")
        self.step_cells = float(step_cells)
        self.oversample = float(oversample)
        self._pyr: _Pyramid | None = None

    def prepare(self, terrain: LocalTerrain) -> None:
        """Pack the terrain pyramid for the kernel."""
        self._pyr = _Pyramid(terrain)

    def close(self) -> None:
        """Drop the prepared terrain."""
        self._pyr = None

    def _run(
        self, cam_pos: npt.NDArray[np.float64], cols: npt.NDArray[np.float64], nrows: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """Run the kernel; returns (ncol, nrows) depth (``t * zscale``) and classes."""
        p = self._pyr
        if p is None:
            raise RenderError("no terrain prepared: call backend.prepare(terrain) before render()")
        depth = np.empty((cols.shape[0], nrows), np.float32)
        cls = np.empty((cols.shape[0], nrows), np.uint8)
        _march_columns(
            p.zf, p.cf, p.off, p.nx, p.ny, p.geo, np.ascontiguousarray(cam_pos, np.float64),
            float(self.config.near_m), p.range_m, self.step_cells, np.ascontiguousarray(cols),
            depth, cls, float(SKY_DEPTH_M), int(SKY_CLASS),
        )  # fmt: skip
        return depth, cls

    def render_one(self, cam: FrameCamera) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """Render one camera; returns (H, W) float32 z-depth (m, sky ``SKY_DEPTH_M``), (H, W) uint8 classes."""
        f = _focal(cam)
        if _is_level(cam, f):
            depth_t, cls_t = self._run(cam.position, _level_columns(cam, f), cam.height_px)
            return np.ascontiguousarray(depth_t.T), np.ascontiguousarray(cls_t.T)
        return self._render_strip(cam, f)

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
        cols = np.stack([np.sin(az), np.cos(az), np.full(ncs, fs), np.full(ncs, cy_s), np.ones(ncs)], axis=1)
        strip_t, strip_c = self._run(cam.position, cols, nrs)
        kc = np.clip(np.rint((daz - az_lo) * fs).astype(np.int64), 0, ncs - 1)
        kr = np.clip(np.floor(cy_s - tan_el * fs).astype(np.int64), 0, nrs - 1)
        t = strip_t[kc, kr]
        sky = t == np.float32(SKY_DEPTH_M)
        depth = np.where(sky, np.float32(SKY_DEPTH_M), (t / hn).astype(np.float32)).astype(np.float32)
        return depth, strip_c[kc, kr]

    def render(self, cameras: list[FrameCamera], modalities: tuple[Modality, ...]) -> ViewBatch:
        """Render the cameras of the prepared terrain.

        Returns
        -------
        ViewBatch
            ``depth`` (N, H, W) float32 z-depth metres along the optical axis (sky ``SKY_DEPTH_M``);
            ``semantic`` (N, H, W) uint8 LandCover ids (sky ``SKY_CLASS``); ``silhouette`` (N, H, W)
            uint8 {0, 1} from the depth; only those requested. ``render_time_s`` per view.
        """
        mods = tuple(Modality(m) for m in modalities)
        if not mods:
            raise RenderError("no modality requested")
        if self._pyr is None:
            raise RenderError("no terrain prepared: call backend.prepare(terrain) before render()")
        sizes = {(c.height_px, c.width_px) for c in cameras}
        if len(sizes) > 1:
            raise RenderError(f"all cameras of one render() call must share a size, got {sorted(sizes)}")
        h, w = sizes.pop() if sizes else (1, 1)
        n = len(cameras)
        depth = np.empty((n, h, w), np.float32)
        sem = np.empty((n, h, w), np.uint8)
        times = np.empty(n, np.float32)
        for i, cam in enumerate(cameras):
            t0 = time.perf_counter()
            depth[i], sem[i] = self.render_one(cam)
            times[i] = time.perf_counter() - t0
        arrays: dict[Modality, np.ndarray] = {}
        if Modality.DEPTH in mods:
            arrays[Modality.DEPTH] = depth
        if Modality.SILHOUETTE in mods:
            from crosslocate.datasets.derived import silhouette_from_depth

            arrays[Modality.SILHOUETTE] = silhouette_from_depth(depth, self.config.silhouette_rel_jump)
        if Modality.SEMANTIC in mods:
            arrays[Modality.SEMANTIC] = sem
        return ViewBatch(arrays, times)
