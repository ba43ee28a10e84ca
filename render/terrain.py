"""The local terrain frame: a DEM around one origin as a heightfield pyramid with curvature and refraction.

Frame
-----
A :class:`LocalTerrain` lives in a local metric frame around ``(lon0, lat0, h0)`` (``h0 = 0``, the
DEM's vertical datum), axes x east, y north, z up, metres:

* **Horizontal** ``(x, y)``: the local azimuthal-equidistant projection (WGS84) around the origin
  (:func:`crosslocate.dem.geodesy.aeqd_crs_wkt`), so ``hypot(x, y)`` is the geodesic distance from
  the origin. Heightfield nodes sit on a regular grid in it.
* **Vertical** ``z``: the *exact* up coordinate of the DEM point in the ENU frame at the origin
  (ECEF -> ENU via pyproj, :func:`crosslocate.dem.geodesy.lonlat_to_enu`), i.e. elevation minus the
  earth-curvature drop (``~ d^2 / (2R)`` at distance ``d``), **plus** the refraction lift
  ``k d^2 / (2R)`` with ``R = local_radius_m(lat0)``. The net apparent drop is ``d^2/(2R) (1 - k)``,
  which is the drop over a sphere of *effective radius* ``R / (1 - k)``: refraction bends sight lines
  down with curvature ``k / R``, and straightening them (rendering with straight rays) is equivalent to
  lifting every point by ``k d^2 / (2R)``. Because the ENU frame is a rigid transform of ECEF, the
  curvature term is exact (no spherical approximation); the horizontal grid neglects the lean of
  distant verticals (``z d / R``, < 40 m at 60 km for a 4 km summit, 0.06 % of the distance).

Refraction is exact for cameras at the origin; a camera ``c`` metres from the origin sees points at
distance ``p`` with a lift error of about ``k |c| |p| / R`` (1.2 m for c = 1 km, p = 60 km).

Levels of detail
----------------
``levels[0]`` has the DEM's ground spacing ``s0`` (``dem.resolution_m`` unless overridden); level
``L`` has spacing ``s0 2^L`` and is meant for distances up to ``lod_cells * s0 * 2^L``
(:attr:`TerrainLevel.max_distance_m`; the last level reaches ``range_m``). Node ``[r, c]`` of a level
sits at ``(x0 + c * s, y0 - r * s)``. Level 0 has a node on the origin, so the ground under a camera
at the origin is the DEM's own bilinear height there (a camera 1.7 m above ground on a steep slope
stays above the terrain); level ``L`` nodes are the centres of 2x2 blocks of level ``L-1`` nodes
(:func:`level_offset_m`).
Level ``L >= 1`` heights are the 2x2 mean of level ``L-1`` heights where that level exists and the 2x2
mean of bilinear DEM samples at spacing ``s0 2^(L-1)`` elsewhere (a box filter, so far summits
are smoothed rather than aliased). Each level is clipped to the DEM's footprint and to its distance
(plus a 2-node margin), so every level holds about ``(2 lod_cells)^2`` nodes at most.

Sentinels
---------
Nodes without DEM data (outside coverage) hold ``NODATA_Z_M`` (far below any view: they never occlude
and never appear above terrain) and class ``NODATA_CLASS``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.dem import geodesy
from crosslocate.dem.landcover import LANDCOVER_NODATA, LandCover
from crosslocate.errors import OutsideCoverageError, RenderError
from crosslocate.render.backends.base import FrameCamera
from crosslocate.render.camera import rotation_cam_to_enu, validate_camera

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM
    from crosslocate.dem.poses import Pose
    from crosslocate.render.config import RenderConfig

logger = logging.getLogger(__name__)

#: Height (m, frame z) of nodes without DEM data: far below every camera, never visible.
NODATA_Z_M: float = -10_000.0
#: Class of nodes without data (or with an unmapped land-cover code); such nodes are never visible.
NODATA_CLASS: int = int(LandCover.ROCK)
#: Default LOD radius in cells: level L serves distances up to ``LOD_CELLS * spacing_L``.
LOD_CELLS: int = 256
#: Extra nodes around each level's extent (bilinear support and camera offsets).
MARGIN_NODES: int = 2
WGS84_LONLAT = "EPSG:4326"
#: pyproj projects every node of a lattice of about this spacing (metres), the others are interpolated.
LATTICE_M: float = 1000.0


@dataclass(frozen=True, slots=True)
class TerrainLevel:
    """One regular heightfield of the pyramid, in the terrain frame.

    Attributes
    ----------
    z : (ny, nx) float32
        Frame up coordinate of each node, metres (elevation minus curvature drop plus refraction lift);
        ``NODATA_Z_M`` where the DEM has no data.
    cls : (ny, nx) uint8
        :class:`~crosslocate.dem.landcover.LandCover` id of the nearest DEM cell (``NODATA_CLASS``
        where there is no data).
    x0, y0 : float
        East / north (m) of node ``[0, 0]`` (its centre); row 0 is north. Node ``[r, c]`` is at
        ``(x0 + c * spacing_m, y0 - r * spacing_m)``.
    spacing_m : float
        Node spacing, metres.
    max_distance_m : float
        Horizontal distance from the origin up to which this level is meant to be used, metres.
    """

    z: npt.NDArray[np.float32]
    cls: npt.NDArray[np.uint8]
    x0: float
    y0: float
    spacing_m: float
    max_distance_m: float

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        return (int(self.z.shape[0]), int(self.z.shape[1]))

    def extent(self) -> tuple[float, float, float, float]:
        """``(xmin, ymin, xmax, ymax)`` of the node lattice, metres."""
        ny, nx = self.shape
        s = self.spacing_m
        return (self.x0, self.y0 - (ny - 1) * s, self.x0 + (nx - 1) * s, self.y0)


@dataclass(frozen=True, slots=True)
class LocalTerrain:
    """A DEM around one origin, as a pyramid of heightfields in the local frame (module docstring).

    Attributes
    ----------
    lon0, lat0 : float
        Frame origin, degrees EPSG:4326.
    h0 : float
        Origin height, metres above the DEM datum (0: frame ``z`` is close to elevation).
    levels : tuple of TerrainLevel
        Finest first; ``levels[i].spacing_m == levels[0].spacing_m * 2**i``.
    range_m : float
        Distance up to which terrain exists in the frame, metres.
    refraction_k : float
        Refraction coefficient applied (effective radius ``radius_m / (1 - k)``).
    radius_m : float
        Local earth radius at the origin used for the refraction lift, metres.
    crs_wkt : str
        WKT of the azimuthal-equidistant CRS whose ``(x, y)`` are the frame's horizontal axes.
    build_time_s : float
        Wall time spent in :func:`build_terrain`.
    """

    lon0: float
    lat0: float
    h0: float
    levels: tuple[TerrainLevel, ...]
    range_m: float
    refraction_k: float
    radius_m: float
    crs_wkt: str
    build_time_s: float = 0.0

    def lift_m(self, distance_m: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Refraction lift ``k d^2 / (2R)`` (metres, float64) at horizontal distance ``d`` from the origin."""
        d = np.asarray(distance_m, dtype=np.float64)
        return np.asarray(self.refraction_k * d * d / (2.0 * self.radius_m), np.float64)

    def to_frame(
        self, lon: npt.ArrayLike, lat: npt.ArrayLike, h: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Map geodetic points (degrees, metres above the DEM datum) into the frame exactly like nodes.

        Returns
        -------
        x, y, z : float64 arrays of the broadcast input shape, metres (aeqd east/north, ENU up + lift).
        """
        lon_a, lat_a, h_a = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (lon, lat, h)))
        x, y = geodesy.transform_xy(lon_a, lat_a, WGS84_LONLAT, self.crs_wkt)
        _, _, u = geodesy.lonlat_to_enu(lon_a, lat_a, h_a, self.lon0, self.lat0, self.h0)
        return x, y, u + self.lift_m(np.hypot(x, y))


# ----------------------------------------------------------------------------------------- building


def level_distances_m(spacing0_m: float, range_m: float, lod_cells: int = LOD_CELLS) -> list[float]:
    """Distance up to which each level serves: ``lod_cells * s0 * 2^L`` until ``range_m`` is reached.

    Returns a list with one entry per level (the last clipped to ``range_m``), metres.
    """
    out: list[float] = []
    d = lod_cells * spacing0_m
    while True:
        if d >= range_m:
            out.append(float(range_m))
            return out
        out.append(float(d))
        d *= 2.0


def _dem_box_aeqd(dem: DEM, aeqd_wkt: str) -> tuple[float, float, float, float]:
    """Bounding box ``(xmin, ymin, xmax, ymax)`` of the DEM footprint in the aeqd frame (metres)."""
    xmin, ymin, xmax, ymax = dem.bounds_native
    s = np.linspace(0.0, 1.0, 65)
    xs = np.concatenate([xmin + (xmax - xmin) * s, np.full(65, xmax), xmax - (xmax - xmin) * s, np.full(65, xmin)])
    ys = np.concatenate([np.full(65, ymin), ymin + (ymax - ymin) * s, np.full(65, ymax), ymax - (ymax - ymin) * s])
    x, y = geodesy.transform_xy(xs, ys, dem.crs_wkt, aeqd_wkt)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(x[ok].min()), float(y[ok].min()), float(x[ok].max()), float(y[ok].max())


def level_offset_m(spacing0_m: float, level: int) -> float:
    """Coordinate of node 0 of ``level`` (metres, east and north): ``s0 (2^L - 1) / 2``.

    Level 0 has a node on the origin; level ``L`` nodes are the centres of 2x2 blocks of level ``L-1``
    nodes, node ``i`` of level ``L`` at ``offset_L + i * s0 2^L``.
    """
    return 0.5 * spacing0_m * (2.0**level - 1.0)


def _index_range(lo_m: float, hi_m: float, spacing_m: float, offset_m: float) -> tuple[int, int]:
    """Node indices ``i`` (node at ``offset + i s``) covering ``[lo, hi]`` plus the margin; inclusive."""
    i0 = math.floor((lo_m - offset_m) / spacing_m) - MARGIN_NODES
    i1 = math.ceil((hi_m - offset_m) / spacing_m) + MARGIN_NODES
    return i0, i1


def _segments(
    v: npt.NDArray[np.float64], lattice: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:
    """Segment index and linear weight of each ``v`` in the increasing or decreasing ``lattice``."""
    step = 1.0 if lattice[-1] >= lattice[0] else -1.0
    k = np.clip(np.searchsorted(step * lattice, step * v, side="right") - 1, 0, lattice.size - 2)
    w = (v - lattice[k]) / (lattice[k + 1] - lattice[k])
    return k, w


def grid_transform(
    xs: npt.NDArray[np.float64], ys: npt.NDArray[np.float64], src_crs: str, dst_crs: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Transform the regular grid ``xs`` x ``ys`` (1-D evenly spaced axes, metres in ``src_crs``) to ``dst_crs``.

    pyproj transforms a sub-lattice of every ``stride``-th node (and the last) with a spacing of at
    most :data:`LATTICE_M`; the nodes between are bilinear interpolations of it
    (:func:`lattice_map`). For the smooth projections used here (aeqd <-> lon/lat or UTM, within
    60 km of the aeqd origin) the error is about 2 cm x (lattice spacing / 1 km)^2, while the build
    gets ~5x faster.

    Returns
    -------
    X, Y : (len(ys), len(xs)) float64 in ``dst_crs`` (degrees lon/lat for EPSG:4326).
    """
    return lattice_map(xs, ys, lambda gx, gy: geodesy.transform_xy(gx, gy, src_crs, dst_crs))


def lattice_map(
    xs: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    fn: Any,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``fn(X, Y) -> (U, V)`` over the grid ``xs`` x ``ys``, evaluated exactly on a sub-lattice of at
    most :data:`LATTICE_M` spacing (every ``stride``-th node and the last) and bilinearly elsewhere.

    Returns ``U, V`` of shape (len(ys), len(xs)), float64.
    """
    step = max(abs(float(xs[1] - xs[0])) if xs.size > 1 else 0.0, abs(float(ys[1] - ys[0])) if ys.size > 1 else 0.0)
    stride = int(LATTICE_M // step) if step > 0.0 else 1
    if xs.size < 2 or ys.size < 2 or stride <= 1:
        gx, gy = np.meshgrid(xs, ys)
        u, v = fn(gx, gy)
        return np.asarray(u, np.float64), np.asarray(v, np.float64)
    ix = np.unique(np.r_[np.arange(0, xs.size, stride), xs.size - 1])
    iy = np.unique(np.r_[np.arange(0, ys.size, stride), ys.size - 1])
    lx, ly = np.meshgrid(xs[ix], ys[iy])
    lat_x, lat_y = fn(lx, ly)
    kx, wx = _segments(xs, xs[ix])
    ky, wy = _segments(ys, ys[iy])
    out = []
    for lat in (np.asarray(lat_x, np.float64), np.asarray(lat_y, np.float64)):
        a = lat[:, kx] * (1.0 - wx) + lat[:, kx + 1] * wx
        out.append(a[ky] * (1.0 - wy)[:, None] + a[ky + 1] * wy[:, None])
    return out[0], out[1]


def _sample_heights(
    dem: DEM,
    aeqd_wkt: str,
    xs: npt.NDArray[np.float64],
    ys: npt.NDArray[np.float64],
    mask: npt.NDArray[np.bool_] | None = None,
) -> npt.NDArray[np.float64]:
    """Bilinear DEM heights (m, float64, (len(ys), len(xs))) at the aeqd grid ``xs`` x ``ys``.

    NaN outside the DEM and, when ``mask`` is given, where ``mask`` is False (not sampled).
    """
    nx_, ny_ = grid_transform(xs, ys, aeqd_wkt, dem.crs_wkt)
    if mask is None:
        return np.asarray(dem.sample_native(nx_.ravel(), ny_.ravel()), np.float64).reshape(nx_.shape)
    out = np.full(nx_.shape, np.nan)
    out[mask] = dem.sample_native(nx_[mask], ny_[mask])
    return out


def _reduce2x2(fine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """2x2 mean of a (2a, 2b) array ignoring NaN (all-NaN blocks stay NaN); returns (a, b) float64."""
    a, b = fine.shape[0] // 2, fine.shape[1] // 2
    blocks = fine.reshape(a, 2, b, 2)
    valid = np.isfinite(blocks)
    total = np.where(valid, blocks, 0.0).sum(axis=(1, 3))
    count = valid.sum(axis=(1, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _level_heights(
    dem: DEM,
    aeqd_wkt: str,
    xr: tuple[int, int],
    yr: tuple[int, int],
    s: float,
    o: float,
    finer: tuple[npt.NDArray[np.float64], tuple[int, int], tuple[int, int]] | None,
) -> npt.NDArray[np.float64]:
    """Elevations (m above datum, NaN = no data) of the level nodes; rows north first.

    ``xr``/``yr`` are inclusive node index ranges (node at ``o + i s``). ``finer`` is the previous
    level's ``(h, xr, yr)``; ``None`` for level 0 (point samples of the DEM).
    """
    ix = np.arange(xr[0], xr[1] + 1, dtype=np.int64)
    iy = np.arange(yr[1], yr[0] - 1, -1, dtype=np.int64)  # north first
    if finer is None:
        return _sample_heights(dem, aeqd_wkt, o + ix * s, o + iy * s)
    hf, fxr, fyr = finer
    fs = s / 2.0
    fo = o - 0.5 * fs  # node 0 of the finer lattice
    jx = np.arange(2 * xr[0], 2 * xr[1] + 2, dtype=np.int64)
    jy = np.arange(2 * yr[1] + 1, 2 * yr[0] - 1, -1, dtype=np.int64)  # north first
    fine = np.full((jy.size, jx.size), np.nan)
    # copy the overlap with the finer level
    cx0, cx1 = max(jx[0], fxr[0]), min(jx[-1], fxr[1])
    cy0, cy1 = max(jy[-1], fyr[0]), min(jy[0], fyr[1])
    have = np.zeros(fine.shape, bool)
    if cx0 <= cx1 and cy0 <= cy1:
        dst = np.s_[jy[0] - cy1 : jy[0] - cy0 + 1, cx0 - jx[0] : cx1 - jx[0] + 1]
        src = np.s_[fyr[1] - cy1 : fyr[1] - cy0 + 1, cx0 - fxr[0] : cx1 - fxr[0] + 1]
        fine[dst] = hf[src]
        have[dst] = True
    todo = ~have
    if todo.any():
        fine[todo] = _sample_heights(dem, aeqd_wkt, fo + jx * fs, fo + jy * fs, todo)[todo]
    return _reduce2x2(fine)


def _finish_level(
    dem: DEM,
    terrain_kw: dict[str, float | str],
    h: npt.NDArray[np.float64],
    xr: tuple[int, int],
    yr: tuple[int, int],
    s: float,
    o: float,
    dmax: float,
) -> TerrainLevel:
    """Heights -> frame z (ENU up + lift) and classes for one level."""
    lon0, lat0, k, radius = (float(terrain_kw[n]) for n in ("lon0", "lat0", "k", "radius"))
    aeqd = str(terrain_kw["aeqd"])
    x = o + np.arange(xr[0], xr[1] + 1, dtype=np.float64) * s
    y = o + np.arange(yr[1], yr[0] - 1, -1, dtype=np.float64) * s
    xx, yy = np.meshgrid(x, y)
    lon_g, lat_g = grid_transform(x, y, aeqd, WGS84_LONLAT)
    valid = np.isfinite(h)
    z = np.full(h.shape, NODATA_Z_M, np.float32)
    cls = np.full(h.shape, NODATA_CLASS, np.uint8)
    if valid.any():
        lon, lat = lon_g[valid], lat_g[valid]
        _, _, u = geodesy.lonlat_to_enu(lon, lat, h[valid], lon0, lat0, 0.0)
        d2 = xx[valid] ** 2 + yy[valid] ** 2
        z[valid] = (u + k * d2 / (2.0 * radius)).astype(np.float32)
        c = np.asarray(dem.landcover(lon, lat), np.uint8)
        c[c == LANDCOVER_NODATA] = NODATA_CLASS
        cls[valid] = c
    return TerrainLevel(z=z, cls=cls, x0=float(x[0]), y0=float(y[0]), spacing_m=float(s), max_distance_m=float(dmax))


def build_terrain(
    dem: DEM,
    lon0: float,
    lat0: float,
    cfg: RenderConfig,
    *,
    spacing_m: float | None = None,
    lod_cells: int = LOD_CELLS,
) -> LocalTerrain:
    """Build the heightfield pyramid of ``dem`` around ``(lon0, lat0)`` out to ``cfg.range_m``.

    Parameters
    ----------
    dem : DEM
        Elevation source (metres above its vertical datum) with land cover.
    lon0, lat0 : float
        Frame origin, degrees EPSG:4326 (normally the camera position). Must lie inside the DEM.
    cfg : RenderConfig
        Uses ``range_m`` and ``refraction_k``.
    spacing_m : float, optional
        Level-0 node spacing, metres; default ``dem.resolution_m``.
    lod_cells : int
        Level ``L`` serves distances up to ``lod_cells * spacing_m * 2^L`` (module docstring).

    Raises
    ------
    OutsideCoverageError
        The origin has no DEM data.
    RenderError
        Non-positive spacing or ``lod_cells < 4``.
    """
    t0 = time.perf_counter()
    s0 = float(dem.resolution_m if spacing_m is None else spacing_m)
    if not (math.isfinite(s0) and s0 > 0.0) or lod_cells < 4:
        raise RenderError(f"terrain spacing_m must be > 0 and lod_cells >= 4, got {s0}, {lod_cells}")
    h_origin = dem.sample([lon0], [lat0])
    if not np.isfinite(h_origin[0]):
        w, s, e, n = dem.bounds_lonlat
        raise OutsideCoverageError(
            f"position lon={lon0:.6f}, lat={lat0:.6f} is outside the DEM coverage "
            f"(lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f}); add tiles or choose a position inside the DEM"
        )
    aeqd = geodesy.aeqd_crs_wkt(lon0, lat0)
    radius = float(geodesy.local_radius_m(lat0))
    bx0, by0, bx1, by1 = _dem_box_aeqd(dem, aeqd)
    kw: dict[str, float | str] = {"lon0": lon0, "lat0": lat0, "k": cfg.refraction_k, "radius": radius, "aeqd": aeqd}
    levels: list[TerrainLevel] = []
    finer: tuple[npt.NDArray[np.float64], tuple[int, int], tuple[int, int]] | None = None
    for i, dmax in enumerate(level_distances_m(s0, cfg.range_m, lod_cells)):
        s = s0 * 2.0**i
        o = level_offset_m(s0, i)
        xr = _index_range(max(-dmax, bx0), min(dmax, bx1), s, o)
        yr = _index_range(max(-dmax, by0), min(dmax, by1), s, o)
        if xr[0] > xr[1] or yr[0] > yr[1]:
            break
        h = _level_heights(dem, aeqd, xr, yr, s, o, finer)
        levels.append(_finish_level(dem, kw, h, xr, yr, s, o, dmax))
        finer = (h, xr, yr)
    elapsed = time.perf_counter() - t0
    logger.debug("terrain at (%.5f, %.5f): %d levels, %.2f s", lon0, lat0, len(levels), elapsed)
    return LocalTerrain(
        lon0=float(lon0),
        lat0=float(lat0),
        h0=0.0,
        levels=tuple(levels),
        range_m=float(cfg.range_m),
        refraction_k=float(cfg.refraction_k),
        radius_m=radius,
        crs_wkt=aeqd,
        build_time_s=elapsed,
    )


def frame_camera(terrain: LocalTerrain, pose: Pose, size_px: int) -> FrameCamera:
    """The camera of ``pose`` in ``terrain``'s frame (square image of ``size_px``).

    The orientation is the pose's own ENU orientation (:func:`rotation_cam_to_enu`) rotated into the
    ENU frame at the origin (:func:`crosslocate.dem.geodesy.enu_rotation`). The position is mapped
    exactly like terrain nodes (:meth:`LocalTerrain.to_frame`: aeqd east/north, ENU up from
    :func:`~crosslocate.dem.geodesy.lonlat_to_enu`, plus the refraction lift), so a camera 1.7 m above
    the ground stays 1.7 m above its own terrain wherever it is in the frame.

    Raises
    ------
    RenderError
        Bad FOV or size (see :func:`crosslocate.render.camera.validate_camera`).
    """
    validate_camera(pose.fov_deg, size_px, size_px)
    r_enu = rotation_cam_to_enu(pose.yaw_deg, pose.pitch_deg, pose.roll_deg)
    rot = geodesy.enu_rotation(pose.lon, pose.lat, terrain.lon0, terrain.lat0) @ r_enu
    x, y, z = terrain.to_frame(pose.lon, pose.lat, pose.alt_m)
    pos = np.array([float(x), float(y), float(z)], dtype=np.float64)
    return FrameCamera(
        position=pos,
        rotation=np.asarray(rot, np.float64),
        fov_deg=float(pose.fov_deg),
        width_px=size_px,
        height_px=size_px,
    )
