"""A region's terrain prepared once: a heightfield + land-cover pyramid in one metric frame, on disk.

Why
---
:func:`crosslocate.render.terrain.build_terrain` resamples the DEM into a pyramid *around one
camera* (its own azimuthal frame, curvature and refraction baked into the heights): about a second
per position, 50x the cost of rendering that position's 12 views. A :class:`TerrainAtlas` is built
once per DEM, area and settings, stored under ``$CROSSLOCATE_CACHE/atlas`` and memory-mapped by
every process (dask workers on one machine share its pages); each camera is then rendered straight
from it, with earth curvature and refraction applied per camera by the backend.

Frame
-----
One azimuthal-equidistant projection (WGS84) around the atlas centre ``(lon0, lat0)``: ``x`` east,
``y`` north, metres (the *grid* frame). Heights are plain elevations (metres above the DEM datum,
``NODATA_Z_M`` where there is no data), not reduced for curvature. Within ``rho`` of the centre the
frame's scale departs from 1 by at most ``rho^2 / (6 R^2)`` (1e-4 at 160 km); :func:`atlas_camera`
measures it per camera (and the grid convergence) with pyproj and hands the backend an exact local
metric, so depths come out in true metres and yaws stay true azimuths.

Curvature per camera
--------------------
For a camera at grid position ``c``, a terrain point at grid offset ``g = p - c`` and elevation ``h``
is rendered at height ``h - g^T Q g - q_h h |g|^2`` in the camera's level frame, where ``Q`` (2x2) is
the earth-curvature drop ``north^2 / (2M) + east^2 / (2N)`` (Euler's normal-section radii ``M``, ``N``
at the camera's latitude) minus the refraction lift ``k d^2 / (2 R)`` (``R`` the Gaussian radius, as
in :mod:`crosslocate.render.terrain`), both expressed in grid metres through the camera's local
metric, and ``q_h = 1 / (2 R^2)`` the growth of the drop with the point's own height. This is the
second-order expansion of the exact ENU up coordinate that the per-position frame uses (the fourth
order term is 2 mm at 60 km), so a view rendered from the atlas sees the same curved, refracted earth.

Levels
------
The same schedule and lattice rules as the per-position pyramid (:func:`level_distances_m`,
:func:`level_offset_m`): level ``L`` has spacing ``s0 2^L`` (``s0`` = the DEM's resolution), its nodes
are the centres of 2x2 blocks of level ``L-1`` nodes, its heights are the 2x2 mean of level ``L-1``
(or of bilinear DEM samples where that level does not reach), classes are the land cover of the
nearest DEM cell. Level ``L`` covers the camera area grown by its serving distance (so level 0 only
surrounds the cameras, the coarsest level reaches ``range_m`` beyond them), clipped to the DEM.

Storage
-------
``<cache>/atlas/atlas-<key>/``: ``z.npy`` (float32, all levels flattened and concatenated), ``cls.npy``
(uint8, same layout), ``bmax.npy`` (float32, per-level maxima of ``BLOCK_CELLS`` x ``BLOCK_CELLS`` cell
blocks, for empty-space skipping) and ``atlas.json`` (version, key, frame, level shapes and offsets,
build time). The folder is written under a temporary name and renamed into place, and concurrent
builders on one machine serialise on a lock file, so a reader sees a complete atlas or none.
``key`` = sha256 of the DEM checksum, the spec (centre, camera area, spacing, range, LOD) and
:data:`ATLAS_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.dem import geodesy
from crosslocate.dem.landcover import LANDCOVER_NODATA
from crosslocate.errors import OutsideCoverageError, RenderError
from crosslocate.render.backends.base import FrameCamera
from crosslocate.render.camera import rotation_cam_to_enu, validate_camera
from crosslocate.render.terrain import (
    NODATA_CLASS,
    NODATA_Z_M,
    WGS84_LONLAT,
    TerrainLevel,
    _dem_box_aeqd,
    _index_range,
    _level_heights,
    _sample_heights,
    grid_transform,
    lattice_map,
    level_distances_m,
    level_offset_m,
)

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM
    from crosslocate.dem.poses import Pose

logger = logging.getLogger(__name__)

#: Bumped whenever the atlas content for the same inputs changes (invalidates caches).
ATLAS_VERSION: int = 1
#: Cells per side of an empty-space-skipping block (the ``cpu`` kernel's max-mipmap).
BLOCK_CELLS: int = 8
#: Rows of level nodes sampled per chunk while building (bounds the build's memory).
CHUNK_ROWS: int = 256
#: Widest camera area (metres) one atlas frame serves; wider areas are split into blocks.
MAX_BLOCK_M: float = 400_000.0
#: Distance (fraction of the range) at which the per-camera metric is measured.
METRIC_DISTANCE_FRACTION: float = 0.5
#: Azimuths used to measure the per-camera metric.
METRIC_AZIMUTHS: int = 8


@dataclass(frozen=True, slots=True)
class AtlasSpec:
    """What an atlas covers and at which detail.

    Attributes
    ----------
    lon0, lat0 : float
        Frame centre, degrees EPSG:4326.
    camera_box : (xmin, ymin, xmax, ymax)
        Grid-frame box (metres) holding every camera the atlas serves.
    spacing_m : float
        Level-0 node spacing, metres.
    range_m : float
        Render range, metres (terrain is kept out to this distance beyond the camera box).
    lod_cells : int
        Level ``L`` serves distances up to ``lod_cells * spacing_m * 2^L``.
    """

    lon0: float
    lat0: float
    camera_box: tuple[float, float, float, float]
    spacing_m: float
    range_m: float
    lod_cells: int

    def key(self, dem_checksum: str) -> str:
        """Cache key: sha256 (first 24 hex digits) of the DEM checksum, this spec and the version."""
        payload = json.dumps({"dem": dem_checksum, "spec": asdict(self), "version": ATLAS_VERSION}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    @property
    def crs_wkt(self) -> str:
        """WKT of the frame's azimuthal-equidistant CRS."""
        return geodesy.aeqd_crs_wkt(self.lon0, self.lat0)

    def contains(self, x: npt.ArrayLike, y: npt.ArrayLike, tol_m: float = 1.0) -> npt.NDArray[np.bool_]:
        """Grid points inside the camera box (plus ``tol_m``)."""
        xmin, ymin, xmax, ymax = self.camera_box
        xa, ya = np.asarray(x, np.float64), np.asarray(y, np.float64)
        return (xa >= xmin - tol_m) & (xa <= xmax + tol_m) & (ya >= ymin - tol_m) & (ya <= ymax + tol_m)


@dataclass(frozen=True, slots=True)
class PackedLevels:
    """Pyramid levels flattened for a render kernel (the atlas's on-disk layout).

    Attributes
    ----------
    zf : (sum ny*nx,) float32
        Node heights of all levels, row-major, finest first (metres; meaning depends on the pyramid:
        frame ``z`` for a :class:`~crosslocate.render.terrain.LocalTerrain`, elevation for an atlas).
    cf : (sum ny*nx,) uint8
        Node classes, same layout.
    bz : (sum bny*bnx,) float32
        Maximum node height of every ``BLOCK_CELLS`` x ``BLOCK_CELLS`` cell block of each level (nodes on
        a block line belong to both blocks).
    lv_int : (L, 6) int64
        ``(offset, nx, ny, block_offset, block_nx, block_ny)`` per level.
    lv_flt : (L, 5) float64
        ``(x0, y0, spacing_m, max_distance_m, max height of this and all coarser levels)``.
    """

    zf: npt.NDArray[np.float32]
    cf: npt.NDArray[np.uint8]
    bz: npt.NDArray[np.float32]
    lv_int: npt.NDArray[np.int64]
    lv_flt: npt.NDArray[np.float64]

    def level(self, i: int) -> TerrainLevel:
        """Level ``i`` as a :class:`TerrainLevel` (views into the flat arrays, no copy)."""
        off, nx, ny = (int(v) for v in self.lv_int[i, :3])
        x0, y0, s, dmax = (float(v) for v in self.lv_flt[i, :4])
        z = self.zf[off : off + nx * ny].reshape(ny, nx)
        c = self.cf[off : off + nx * ny].reshape(ny, nx)
        return TerrainLevel(z=z, cls=c, x0=x0, y0=y0, spacing_m=s, max_distance_m=dmax)

    @property
    def n_levels(self) -> int:
        """Number of levels."""
        return int(self.lv_int.shape[0])


def block_max(z: npt.NDArray[np.float32], bsz: int = BLOCK_CELLS) -> npt.NDArray[np.float32]:
    """(bny, bnx) float32 maximum node height of every ``bsz`` x ``bsz`` cell block of (ny, nx) ``z``.

    Block ``(bj, bi)`` spans nodes ``bj*bsz .. bj*bsz + bsz`` (rows) and likewise columns, both ends
    included, so a node on a block line counts for the blocks on both sides; ``bny = (ny - 2) // bsz + 1``.
    """
    ny, nx = z.shape
    bny = max((ny - 2) // bsz + 1, 1)
    bnx = max((nx - 2) // bsz + 1, 1)
    zp = np.full((bny * bsz + 1, bnx * bsz + 1), -np.inf, np.float32)
    zp[: min(ny, zp.shape[0]), : min(nx, zp.shape[1])] = z[: zp.shape[0], : zp.shape[1]]
    rows = np.maximum(zp[:-1].reshape(bny, bsz, -1).max(axis=1), zp[bsz::bsz])
    out = np.maximum(rows[:, :-1].reshape(bny, bnx, bsz).max(axis=2), rows[:, bsz::bsz])
    return np.ascontiguousarray(out, np.float32)


def pack_levels(levels: tuple[TerrainLevel, ...] | list[TerrainLevel]) -> PackedLevels:
    """Flatten pyramid levels into :class:`PackedLevels` (block maxima included)."""
    if not levels:
        raise RenderError("terrain has no levels (the DEM does not overlap the render range)")
    zs, cs, bs, lv_int = [], [], [], []
    off = boff = 0
    for lv in levels:
        ny, nx = lv.z.shape
        if ny < 2 or nx < 2:
            raise RenderError(f"terrain level with spacing {lv.spacing_m} m has fewer than 2x2 nodes")
        z = np.ascontiguousarray(lv.z, np.float32)
        bm = block_max(z)
        zs.append(z.ravel())
        cs.append(np.ascontiguousarray(lv.cls, np.uint8).ravel())
        bs.append(bm.ravel())
        lv_int.append([off, nx, ny, boff, bm.shape[1], bm.shape[0]])
        off += z.size
        boff += bm.size
    zmax = np.array([float(np.max(lv.z)) for lv in levels])
    zmax_from = np.maximum.accumulate(zmax[::-1])[::-1]
    lv_flt = np.array(
        [[lv.x0, lv.y0, lv.spacing_m, lv.max_distance_m, zmax_from[i]] for i, lv in enumerate(levels)], np.float64
    )
    return PackedLevels(np.concatenate(zs), np.concatenate(cs), np.concatenate(bs), np.array(lv_int, np.int64), lv_flt)


@dataclass(frozen=True, slots=True)
class TerrainAtlas:
    """A region's elevation + land-cover pyramid in one grid frame (module docstring).

    Attributes
    ----------
    spec : AtlasSpec
        Centre, camera area, spacing, range, LOD.
    packed : PackedLevels
        The levels (heights are elevations in metres above the DEM datum, ``NODATA_Z_M`` = no data);
        memory-mapped when loaded from the cache.
    refraction_k : float
        Refraction coefficient the cameras apply (not baked into the heights; not part of the key).
    dem_checksum : str
        Checksum of the DEM it was built from.
    build_time_s : float
        Wall time of the build (0 when loaded from the cache and not recorded).
    path : str
        Cache folder it lives in ('' when in memory only).
    """

    spec: AtlasSpec
    packed: PackedLevels
    refraction_k: float
    dem_checksum: str
    build_time_s: float = 0.0
    path: str = ""

    @property
    def levels(self) -> tuple[TerrainLevel, ...]:
        """The levels as :class:`TerrainLevel` views, finest first."""
        return tuple(self.packed.level(i) for i in range(self.packed.n_levels))

    @property
    def range_m(self) -> float:
        """Render range, metres."""
        return self.spec.range_m

    @property
    def nbytes(self) -> int:
        """Bytes of the node and block arrays."""
        p = self.packed
        return int(p.zf.nbytes + p.cf.nbytes + p.bz.nbytes)

    def surface_height(self, x: float, y: float) -> float:
        """Height (m) of the triangulated level-0 surface at grid ``(x, y)`` (the kernel's rule); NaN
        outside, or where a corner of the triangle has no DEM data (blending a no-data node would
        put the ground hundreds of metres off at the DEM's edge)."""
        lv = self.packed.level(0)
        ny, nx = lv.shape
        fx, fy = (x - lv.x0) / lv.spacing_m, (lv.y0 - y) / lv.spacing_m
        if not (0.0 <= fx <= nx - 1 and 0.0 <= fy <= ny - 1):
            return float("nan")
        i, j = min(int(fx), nx - 2), min(int(fy), ny - 2)
        ax, ay = fx - i, fy - j
        z = lv.z
        if ax + ay <= 1.0:
            corners = (z[j, i], z[j, i + 1], z[j + 1, i])
            v = z[j, i] + ax * (z[j, i + 1] - z[j, i]) + ay * (z[j + 1, i] - z[j, i])
        else:
            corners = (z[j + 1, i + 1], z[j + 1, i], z[j, i + 1])
            v = (
                z[j + 1, i + 1]
                + (1.0 - ax) * (z[j + 1, i] - z[j + 1, i + 1])
                + (1.0 - ay) * (z[j, i + 1] - z[j + 1, i + 1])
            )
        return float(v) if min(corners) > NODATA_Z_M / 2 else float("nan")


# ------------------------------------------------------------------------------------------ planning


def plan_atlas(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    spacing_m: float,
    range_m: float,
    lod_cells: int,
    *,
    max_block_m: float = MAX_BLOCK_M,
) -> list[AtlasSpec]:
    """Atlas specs serving cameras at ``lon``/``lat`` (degrees): one frame, or a few for a wide area.

    The cameras' bounding box is measured in an aeqd frame at its centre; an area wider than
    ``max_block_m`` is cut into a grid of blocks, each with its own frame at its centre, so no
    camera is more than ``max_block_m / sqrt(2)`` plus the range from its frame's centre.
    """
    lo = np.atleast_1d(np.asarray(lon, np.float64))
    la = np.atleast_1d(np.asarray(lat, np.float64))
    if lo.size == 0:
        raise RenderError("no camera positions to plan a terrain atlas for")
    lon_c, lat_c = _centre(lo, la)
    frame = geodesy.aeqd_crs_wkt(lon_c, lat_c)
    x, y = geodesy.transform_xy(lo, la, WGS84_LONLAT, frame)
    nbx = max(1, math.ceil((x.max() - x.min()) / max_block_m))
    nby = max(1, math.ceil((y.max() - y.min()) / max_block_m))
    if nbx == nby == 1:
        return [_spec_for(lo, la, spacing_m, range_m, lod_cells)]
    ex = np.linspace(x.min(), x.max(), nbx + 1)
    ey = np.linspace(y.min(), y.max(), nby + 1)
    bx = np.clip(np.searchsorted(ex, x, side="right") - 1, 0, nbx - 1)
    by = np.clip(np.searchsorted(ey, y, side="right") - 1, 0, nby - 1)
    specs = []
    for b in sorted(set(zip(bx.tolist(), by.tolist(), strict=True))):
        sel = (bx == b[0]) & (by == b[1])
        # the whole bin rectangle, so neighbouring blocks leave no gap between their camera boxes
        gx, gy = np.meshgrid(np.linspace(ex[b[0]], ex[b[0] + 1], 5), np.linspace(ey[b[1]], ey[b[1] + 1], 5))
        rlon, rlat = geodesy.transform_xy(gx.ravel(), gy.ravel(), frame, WGS84_LONLAT)
        specs.append(_spec_for(np.r_[lo[sel], rlon], np.r_[la[sel], rlat], spacing_m, range_m, lod_cells))
    return specs


def _centre(lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Centre of the lon/lat bounding box, rounded to 1e-6 degrees (stable cache keys)."""
    return round(0.5 * (float(lon.min()) + float(lon.max())), 6), round(0.5 * (float(lat.min()) + float(lat.max())), 6)


def _spec_for(lon: Any, lat: Any, spacing_m: float, range_m: float, lod_cells: int) -> AtlasSpec:
    lon0, lat0 = _centre(lon, lat)
    x, y = geodesy.transform_xy(lon, lat, WGS84_LONLAT, geodesy.aeqd_crs_wkt(lon0, lat0))
    box = tuple(float(round(v, 1)) for v in (x.min() - 1.0, y.min() - 1.0, x.max() + 1.0, y.max() + 1.0))
    return AtlasSpec(lon0, lat0, box, float(spacing_m), float(range_m), int(lod_cells))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ building


def build_atlas(dem: DEM, spec: AtlasSpec, refraction_k: float, progress: Any = None) -> TerrainAtlas:
    """Resample ``dem`` into the atlas pyramid of ``spec`` (in memory).

    Parameters
    ----------
    dem : DEM
        Elevation + land-cover source.
    spec : AtlasSpec
        Frame, camera area, spacing, range, LOD.
    refraction_k : float
        Refraction coefficient the cameras will apply.
    progress : callable(int), optional
        Called with the number of level nodes finished (for a progress bar).

    Raises
    ------
    OutsideCoverageError
        The DEM does not overlap the area.
    """
    t0 = time.perf_counter()
    s0 = spec.spacing_m
    if not (math.isfinite(s0) and s0 > 0.0) or spec.lod_cells < 4:
        raise RenderError(f"atlas spacing_m must be > 0 and lod_cells >= 4, got {s0}, {spec.lod_cells}")
    aeqd = spec.crs_wkt
    bx0, by0, bx1, by1 = _dem_box_aeqd(dem, aeqd)
    cx0, cy0, cx1, cy1 = spec.camera_box
    levels: list[TerrainLevel] = []
    finer: tuple[npt.NDArray[np.float64], tuple[int, int], tuple[int, int]] | None = None
    for i, dmax in enumerate(level_distances_m(s0, spec.range_m, spec.lod_cells)):
        s, o = s0 * 2.0**i, level_offset_m(s0, i)
        xr = _index_range(max(cx0 - dmax, bx0), min(cx1 + dmax, bx1), s, o)
        yr = _index_range(max(cy0 - dmax, by0), min(cy1 + dmax, by1), s, o)
        if xr[0] > xr[1] or yr[0] > yr[1]:
            break
        h = _atlas_heights(dem, aeqd, xr, yr, s, o, finer)
        levels.append(_atlas_level(dem, aeqd, h, xr, yr, s, o, dmax))
        finer = (h, xr, yr)
        if progress is not None:
            progress(h.size)
    if not levels or not np.any(levels[0].z > NODATA_Z_M / 2):
        w, s_, e, n = dem.bounds_lonlat
        raise OutsideCoverageError(
            f"terrain atlas around lon={spec.lon0:.5f}, lat={spec.lat0:.5f} has no DEM data "
            f"(DEM covers lon {w:.5f}..{e:.5f}, lat {s_:.5f}..{n:.5f})"
        )
    elapsed = time.perf_counter() - t0
    packed = pack_levels(levels)
    logger.info(
        "terrain atlas: %d levels, %.1f M nodes (%.0f MB) in %.1f s",
        len(levels),
        packed.zf.size / 1e6,
        (packed.zf.nbytes + packed.cf.nbytes + packed.bz.nbytes) / 1e6,
        elapsed,
    )
    return TerrainAtlas(spec, packed, float(refraction_k), dem.checksum, elapsed)


def _atlas_heights(
    dem: DEM,
    aeqd: str,
    xr: tuple[int, int],
    yr: tuple[int, int],
    s: float,
    o: float,
    finer: tuple[npt.NDArray[np.float64], tuple[int, int], tuple[int, int]] | None,
) -> npt.NDArray[np.float64]:
    """Elevations (NaN = no data) of one level's nodes, rows north first; sampled in row chunks."""
    if finer is not None:
        return _level_heights(dem, aeqd, xr, yr, s, o, finer)
    xs = o + np.arange(xr[0], xr[1] + 1, dtype=np.float64) * s
    ys = o + np.arange(yr[1], yr[0] - 1, -1, dtype=np.float64) * s
    out = np.empty((ys.size, xs.size), np.float64)
    for r0 in range(0, ys.size, CHUNK_ROWS):
        out[r0 : r0 + CHUNK_ROWS] = _sample_heights(dem, aeqd, xs, ys[r0 : r0 + CHUNK_ROWS])
    return out


def _atlas_level(
    dem: DEM,
    aeqd: str,
    h: npt.NDArray[np.float64],
    xr: tuple[int, int],
    yr: tuple[int, int],
    s: float,
    o: float,
    dmax: float,
) -> TerrainLevel:
    """Elevations -> float32 heights with the no-data sentinel, and nearest-cell classes (chunked)."""
    xs = o + np.arange(xr[0], xr[1] + 1, dtype=np.float64) * s
    ys = o + np.arange(yr[1], yr[0] - 1, -1, dtype=np.float64) * s
    z = np.where(np.isfinite(h), h, NODATA_Z_M).astype(np.float32)
    cls = np.full(h.shape, NODATA_CLASS, np.uint8)
    for r0 in range(0, ys.size, CHUNK_ROWS):
        valid = np.isfinite(h[r0 : r0 + CHUNK_ROWS])
        if not valid.any():
            continue
        lon, lat = grid_transform(xs, ys[r0 : r0 + CHUNK_ROWS], aeqd, WGS84_LONLAT)
        c = np.asarray(dem.landcover(lon[valid], lat[valid]), np.uint8)
        c[c == LANDCOVER_NODATA] = NODATA_CLASS
        block = cls[r0 : r0 + CHUNK_ROWS]
        block[valid] = c
    return TerrainLevel(z=z, cls=cls, x0=float(xs[0]), y0=float(ys[0]), spacing_m=float(s), max_distance_m=float(dmax))


# ------------------------------------------------------------------------------------------ cameras


@dataclass(frozen=True, slots=True)
class CameraMetric:
    """The atlas frame around one camera position (see :func:`camera_metric`).

    Attributes
    ----------
    xy : (2,) float64
        Camera position in the grid frame, metres.
    to_true : (2, 2) float64
        Maps a grid offset (metres) to the true local (east, north) offset (metres) near the camera.
    convergence_rad : float
        Rotation from true (east, north) axes to grid axes at the camera (counter-clockwise).
    curvature : (2, 2) float64
        ``Q``: drop (m) of a point at grid offset ``g`` is ``g^T Q g`` (curvature minus refraction).
    curvature_h : float
        ``q_h``: the drop grows by ``q_h h |to_true g|^2`` for a point at elevation ``h`` (1/m^2).
    """

    xy: npt.NDArray[np.float64]
    to_true: npt.NDArray[np.float64]
    convergence_rad: float
    curvature: npt.NDArray[np.float64]
    curvature_h: float


def camera_metric(spec: AtlasSpec, lon: float, lat: float, refraction_k: float) -> CameraMetric:
    """Measure the grid frame at ``(lon, lat)``: position, local metric, convergence, curvature form.

    Geodesic points at ``METRIC_DISTANCE_FRACTION * range_m`` in ``METRIC_AZIMUTHS`` true azimuths
    (pyproj ``Geod.fwd``) are projected into the frame; the least-squares linear map from true
    offsets to grid offsets is the mean metric along a ray (its departure from a rotation is the
    aeqd scale error, 1e-4 at 160 km from the centre). The curvature form follows from Euler's
    radii ``M`` (meridian) and ``N`` (prime vertical) at ``lat``.
    """
    aeqd = spec.crs_wkt
    cx, cy = geodesy.transform_xy(lon, lat, WGS84_LONLAT, aeqd)
    dist = METRIC_DISTANCE_FRACTION * spec.range_m
    az = np.arange(METRIC_AZIMUTHS) * (360.0 / METRIC_AZIMUTHS)
    plon, plat, _ = geodesy.WGS84_GEOD.fwd(np.full(az.size, lon), np.full(az.size, lat), az, np.full(az.size, dist))
    px, py = geodesy.transform_xy(plon, plat, WGS84_LONLAT, aeqd)
    true = dist * np.stack([np.sin(np.radians(az)), np.cos(np.radians(az))], axis=1)
    grid = np.stack([px - cx, py - cy], axis=1)
    a_t, *_ = np.linalg.lstsq(true, grid, rcond=None)  # grid = true @ a_t
    a = a_t.T  # grid = A @ true
    to_true = np.linalg.inv(a)
    gamma = math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])
    geod = geodesy.WGS84_GEOD
    s2 = math.sin(math.radians(lat)) ** 2
    w = 1.0 - geod.es * s2
    m_rad = geod.a * (1.0 - geod.es) / w**1.5
    n_rad = geod.a / math.sqrt(w)
    r_gauss = float(geodesy.local_radius_m(lat))
    lift = refraction_k / (2.0 * r_gauss)
    core = np.diag([1.0 / (2.0 * n_rad) - lift, 1.0 / (2.0 * m_rad) - lift])
    q = to_true.T @ core @ to_true
    return CameraMetric(
        xy=np.array([float(cx), float(cy)]),
        to_true=to_true,
        convergence_rad=float(gamma),
        curvature=0.5 * (q + q.T),
        curvature_h=1.0 / (2.0 * r_gauss * r_gauss),
    )


def _enu_up(
    lon: npt.NDArray[np.float64], lat: npt.NDArray[np.float64], h: npt.NDArray[np.float64], lon0: float, lat0: float
) -> npt.NDArray[np.float64]:
    """Exact up coordinate (m) of geodetic points in the ENU frame at ``(lon0, lat0, 0)`` (WGS84, numpy)."""
    geod = geodesy.WGS84_GEOD

    def ecef(lo: Any, la: Any, hh: Any) -> npt.NDArray[np.float64]:
        lam, phi = np.radians(lo), np.radians(la)
        n = geod.a / np.sqrt(1.0 - geod.es * np.sin(phi) ** 2)
        return np.stack(
            [
                (n + hh) * np.cos(phi) * np.cos(lam),
                (n + hh) * np.cos(phi) * np.sin(lam),
                (n * (1.0 - geod.es) + hh) * np.sin(phi),
            ]
        )

    p0 = ecef(np.float64(lon0), np.float64(lat0), 0.0)
    lam0, phi0 = math.radians(lon0), math.radians(lat0)
    up = np.array([math.cos(phi0) * math.cos(lam0), math.cos(phi0) * math.sin(lam0), math.sin(phi0)])
    p = ecef(lon, lat, h)
    return np.asarray(np.tensordot(up, p - p0.reshape(3, *([1] * (p.ndim - 1))), axes=1), np.float64)


def near_patch(dem: DEM, lon: float, lat: float, cells: int, spacing_m: float, refraction_k: float) -> PackedLevels:
    """The exact per-position pyramid's finest level within ``cells`` nodes of a camera, packed.

    Nodes sit at true offsets ``(i s, j s)`` east/north of the camera (``|i|, |j| <= cells + 2``), i.e.
    on the azimuthal-equidistant lattice of :func:`crosslocate.render.terrain.build_terrain` (found
    with ``Geod.fwd``), with heights as there: exact ENU up at the camera's ground point plus the
    refraction lift, and nearest-cell classes. It serves distances up to ``cells * s``, where the
    triangulation under a camera a few metres above steep ground decides most of the image; farther
    out the atlas takes over.
    """
    from crosslocate.render.terrain import MARGIN_NODES

    n = int(cells) + MARGIN_NODES
    offs = np.arange(-n, n + 1, dtype=np.float64) * spacing_m
    xx, yy = np.meshgrid(offs, offs[::-1])
    dist = np.hypot(xx, yy)

    def geodesic(gx: npt.NDArray[np.float64], gy: npt.NDArray[np.float64]) -> tuple[Any, Any]:
        az = np.degrees(np.arctan2(gx, gy)).ravel()
        lo, la, _ = geodesy.WGS84_GEOD.fwd(np.full(az.size, lon), np.full(az.size, lat), az, np.hypot(gx, gy).ravel())
        return np.reshape(lo, gx.shape), np.reshape(la, gx.shape)

    # the same sub-lattice interpolation as the per-position pyramid (grid_transform), so the nodes agree
    plon2, plat2 = lattice_map(offs, offs[::-1], geodesic)
    plon, plat = plon2.ravel(), plat2.ravel()
    h = np.asarray(dem.sample(plon, plat), np.float64)
    valid = np.isfinite(h)
    z = np.full(h.shape, NODATA_Z_M, np.float64)
    radius = float(geodesy.local_radius_m(lat))
    d2 = dist.ravel()[valid] ** 2
    z[valid] = _enu_up(plon[valid], plat[valid], h[valid], lon, lat) + refraction_k * d2 / (2.0 * radius)
    cls = np.full(h.shape, NODATA_CLASS, np.uint8)
    if valid.any():
        c = np.asarray(dem.landcover(plon[valid], plat[valid]), np.uint8)
        c[c == LANDCOVER_NODATA] = NODATA_CLASS
        cls[valid] = c
    side = 2 * n + 1
    level = TerrainLevel(
        z=z.reshape(side, side).astype(np.float32), cls=cls.reshape(side, side), x0=float(offs[0]),
        y0=float(offs[-1]), spacing_m=float(spacing_m), max_distance_m=float(cells * spacing_m),
    )  # fmt: skip
    return pack_levels([level])


def atlas_camera(
    atlas: TerrainAtlas,
    pose: Pose,
    size_px: int,
    metric: CameraMetric,
    z_m: float,
    patch: PackedLevels | None = None,
) -> FrameCamera:
    """The camera of ``pose`` in the atlas grid frame (square image of ``size_px``).

    ``metric`` comes from :func:`camera_metric` at the pose's position (shared by its yaws); ``z_m``
    is the camera height in the frame (see :func:`camera_height`); ``patch`` the position's
    :func:`near_patch` (shared by its yaws), in whose frame the camera stands at ``pose.alt_m``. The
    orientation is the pose's ENU orientation turned by the grid convergence, so a level pose stays level.
    """
    validate_camera(pose.fov_deg, size_px, size_px)
    g = metric.convergence_rad
    rz = np.array([[math.cos(g), -math.sin(g), 0.0], [math.sin(g), math.cos(g), 0.0], [0.0, 0.0, 1.0]])
    rot = rz @ rotation_cam_to_enu(pose.yaw_deg, pose.pitch_deg, pose.roll_deg)
    return FrameCamera(
        position=np.array([metric.xy[0], metric.xy[1], float(z_m)]),
        rotation=rot,
        fov_deg=float(pose.fov_deg),
        width_px=size_px,
        height_px=size_px,
        curvature=metric.curvature,
        curvature_h=metric.curvature_h,
        to_true=metric.to_true,
        patch=patch,
        patch_z=float(pose.alt_m),
    )


def camera_height(atlas: TerrainAtlas, dem: DEM, metric: CameraMetric, lon: float, lat: float, alt_m: float) -> float:
    """Frame height of a camera at ``alt_m`` (m above the DEM datum): its height above the DEM kept.

    The atlas surface under the camera is a resampling of the DEM and may differ from the DEM's own
    bilinear height there by metres on steep slopes; the camera is placed ``alt_m - dem(lon, lat)``
    above the atlas surface, the height above ground the pose was made with.

    Within one level-0 node of the DEM's edge the atlas surface may have no node on the far side
    (nodes lie on the atlas lattice, the DEM's last cell edge elsewhere) while the DEM still has a
    height: the camera is then placed at ``alt_m``, as the per-position renderer places it, so every
    position the DEM covers renders (the grid keeps exactly those).

    Raises
    ------
    OutsideCoverageError
        The position has no DEM data.
    """
    ground = float(dem.sample([lon], [lat])[0])
    surf = atlas.surface_height(float(metric.xy[0]), float(metric.xy[1]))
    if math.isfinite(ground) and not math.isfinite(surf):
        surf = ground  # the DEM's edge band: no atlas triangle under the camera
    if not math.isfinite(ground):
        w, s, e, n = dem.bounds_lonlat
        raise OutsideCoverageError(
            f"position lon={lon:.6f}, lat={lat:.6f} is outside the DEM coverage or the terrain atlas "
            f"(DEM lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f}); add tiles or choose a position inside the DEM"
        )
    return float(alt_m) - ground + surf


__all__ = [
    "ATLAS_VERSION",
    "BLOCK_CELLS",
    "AtlasSpec",
    "CameraMetric",
    "PackedLevels",
    "TerrainAtlas",
    "atlas_camera",
    "atlas_root",
    "block_max",
    "build_atlas",
    "camera_height",
    "camera_metric",
    "ensure_atlas",
    "load_atlas",
    "near_patch",
    "pack_levels",
    "plan_atlas",
    "save_atlas",
]

# the on-disk cache lives in its own module; re-exported here, where callers have always found it
from crosslocate.render.atlas_store import atlas_root, ensure_atlas, load_atlas, save_atlas  # noqa: E402
