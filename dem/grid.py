"""Camera positions of the databases: uniform grid, compact grid, held-out grid, sparse (query) positions.

Frames and conventions
----------------------
* ``lon``/``lat``: degrees, EPSG:4326. ``x``/``y``: metres in ``Positions.crs_wkt``, the region's
  Lambert azimuthal equal-area frame centred on the centre of the region's lon/lat bounding box
  (:attr:`crosslocate.dem.regions.Region.crs_wkt`), so the spacing is the same everywhere.
* Uniform grid edge rule: nodes sit at **cell centres** ``x = (i + 0.5) * spacing_m``,
  ``y = (j + 0.5) * spacing_m`` (integers ``i, j``) and a node is kept when it lies strictly inside
  the region polygon (``shapely.contains_xy``) and, when a DEM is given, where ``DEM.covers`` is true
  and the elevation is finite. A 10 km x 10 km square centred on the frame origin therefore holds
  exactly 20 x 20 = 400 nodes at 500 m, and the count is ``area / spacing^2`` on average.
* Order: rows north to south, west to east within a row; ``position_id`` is ``0..N-1`` in that
  order (deterministic for a given region, DEM coverage and spacing).
* ``ground_m``: DEM elevation (metres above the DEM's vertical datum) at the position; NaN when no
  DEM was given. ``alt_m``: camera altitude, same datum; grid cameras sit ``camera_offset_m`` above
  the ground, query cameras at their own altitude or ``query_height_m`` above the ground; NaN when
  unknown (no DEM).
* ``split``: ``SPLIT_CODES`` (0 train, 1 val, 2 test, 255 none), see :mod:`crosslocate.dem.splits`.

``DEM`` arguments are duck-typed: anything with ``bounds_lonlat``, ``sample``, ``elevation`` and
``covers`` as in :class:`crosslocate.dem.mosaic.DEM`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from scipy.spatial import cKDTree
from shapely.geometry import box

from crosslocate.dem.config import GridConfig
from crosslocate.dem.geodesy import equal_area_crs_wkt
from crosslocate.dem.poses import DB_FOV_DEG, DB_YAWS_DEG, Pose
from crosslocate.dem.regions import Region, get_region, lonlat_to_xy, project_geometry, xy_to_lonlat
from crosslocate.dem.splits import NONE, TEST, VAL, assign_splits
from crosslocate.errors import ConfigError, OutsideCoverageError
from crosslocate.fileio import atomic_write

logger = logging.getLogger(__name__)

#: Estimated stored size of one database view with the 3 modalities (depth, silhouette, semantic)
#: at 500 x 500 px after compression, bytes. Used only for dry-run estimates.
BYTES_PER_VIEW_ESTIMATE: int = 90_000
#: Grid rows processed per chunk (bounds peak memory for the whole Alps).
_ROWS_PER_CHUNK = 256
#: Version of the ``to_npz`` layout.
_NPZ_VERSION = 1

_FLOAT_FIELDS = ("lon", "lat", "x", "y", "ground_m", "alt_m")


@dataclass(frozen=True, kw_only=True, slots=True, eq=False)
class Positions:
    """A list of camera positions (one database or one query set).

    Attributes
    ----------
    position_id : (N,) int64
        Deterministic ids (``0..N-1`` for a freshly built grid; :meth:`subset` keeps the parent's).
    lon, lat : (N,) float64
        Degrees, EPSG:4326.
    x, y : (N,) float64
        Metres in ``crs_wkt``.
    ground_m : (N,) float64
        DEM elevation at the position, metres (vertical datum of the DEM); NaN = no DEM given.
    alt_m : (N,) float64
        Camera altitude, metres, same datum; NaN = unknown (no DEM given).
    split : (N,) uint8
        ``SPLIT_CODES``: 0 train, 1 val, 2 test, 255 none.
    crs_wkt : str
        WKT of the projected frame of ``x``/``y``.
    """

    position_id: npt.NDArray[np.int64]
    lon: npt.NDArray[np.float64]
    lat: npt.NDArray[np.float64]
    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    ground_m: npt.NDArray[np.float64]
    alt_m: npt.NDArray[np.float64]
    split: npt.NDArray[np.uint8]
    crs_wkt: str

    def __post_init__(self) -> None:
        arrays = {"position_id": np.int64, **dict.fromkeys(_FLOAT_FIELDS, np.float64), "split": np.uint8}
        n = None
        for name, dtype in arrays.items():
            value = np.ascontiguousarray(getattr(self, name), dtype=dtype)
            if value.ndim != 1:
                raise ConfigError(f"Positions.{name} must be 1-D, got shape {value.shape}")
            if n is None:
                n = len(value)
            elif len(value) != n:
                raise ConfigError(f"Positions.{name} has {len(value)} entries, expected {n} (like position_id)")
            object.__setattr__(self, name, value)
        if not isinstance(self.crs_wkt, str) or not self.crs_wkt:
            raise ConfigError("Positions.crs_wkt must be a non-empty WKT string")

    def __len__(self) -> int:
        return int(self.position_id.shape[0])

    def subset(self, mask_or_idx: npt.ArrayLike) -> Positions:
        """Positions selected by a (N,) bool mask or integer indices (ids are kept, not renumbered)."""
        sel = np.asarray(mask_or_idx)
        if sel.dtype == bool and sel.shape != (len(self),):
            raise ConfigError(f"Positions.subset: mask has shape {sel.shape}, expected ({len(self)},)")
        return dataclasses.replace(self, **{name: getattr(self, name)[sel] for name in _ARRAY_FIELDS})

    def renumbered(self) -> Positions:
        """Same positions with ``position_id = 0..N-1`` (for a new, stand-alone position list)."""
        return dataclasses.replace(self, position_id=np.arange(len(self), dtype=np.int64))

    def to_npz(self, path: str | os.PathLike[str]) -> Path:
        """Write all arrays and ``crs_wkt`` to ``path`` (``.npz``) atomically (:func:`crosslocate.fileio.atomic_write`).

        The bytes depend only on the positions (the zip members carry a fixed timestamp), so two
        builds of the same configuration write identical files.
        """
        path = Path(path)
        with atomic_write(path) as fh:
            _savez_deterministic(
                fh,
                {
                    "version": np.int64(_NPZ_VERSION),
                    "crs_wkt": np.str_(self.crs_wkt),
                    **{name: getattr(self, name) for name in _ARRAY_FIELDS},
                },
            )
        return path

    @classmethod
    def from_npz(cls, path: str | os.PathLike[str]) -> Positions:
        """Read a file written by :meth:`to_npz`; raises :class:`ConfigError` naming the file when invalid."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["version"])
                if version != _NPZ_VERSION:
                    raise ConfigError(f"{path}: positions file version {version}, expected {_NPZ_VERSION}; rebuild it")
                kwargs: dict[str, Any] = {name: data[name] for name in _ARRAY_FIELDS}
                kwargs["crs_wkt"] = str(data["crs_wkt"])
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(
                f"{path}: not a readable positions file ({exc}); write one with `crosslocate grid -o`"
            ) from exc
        return cls(**kwargs)


_ARRAY_FIELDS = ("position_id", *_FLOAT_FIELDS, "split")
#: Timestamp of every member of a positions ``.npz`` (``np.savez`` would store the current time).
_NPZ_DATE_TIME = (1980, 1, 1, 0, 0, 0)


def _savez_deterministic(fh: Any, arrays: dict[str, Any]) -> None:
    """``np.savez`` (uncompressed, no pickle) with fixed member timestamps: same arrays, same bytes."""
    with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_NPZ_DATE_TIME)
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def empty_positions(crs_wkt: str) -> Positions:
    """A zero-length :class:`Positions` in ``crs_wkt``."""
    z = np.empty(0)
    return Positions(position_id=z, lon=z, lat=z, x=z, y=z, ground_m=z, alt_m=z, split=z, crs_wkt=crs_wkt)


def uniform_grid(region: Region | str, dem: Any | None, cfg: GridConfig) -> Positions:
    """Regular grid of ``cfg.spacing_m`` over ``region`` (and the DEM coverage when ``dem`` is given).

    Parameters
    ----------
    region : Region or str
        Area to cover (a name or path goes through :func:`get_region`).
    dem : DEM or None
        Clip to ``dem.covers`` and set ``ground_m``/``alt_m`` (``ground + cfg.camera_offset_m``);
        ``None``: clip to the region only, ``ground_m``/``alt_m`` NaN (enough for counting).
    cfg : GridConfig
        ``spacing_m``, ``camera_offset_m`` and the split settings.

    Returns
    -------
    Positions
        In ``region.crs_wkt``, ordered north to south then west to east, see the module docstring.
    """
    region = get_region(region)
    crs = region.crs_wkt
    area_xy = region.polygon_xy(crs)
    if dem is not None:
        area_xy = shapely.intersection(area_xy, dem_footprint_xy(dem, crs))
    if area_xy.is_empty:
        logger.warning("region %s does not overlap the DEM coverage: empty grid", region.name)
        return empty_positions(crs)
    shapely.prepare(area_xy)
    s = float(cfg.spacing_m)
    x0, y0, x1, y1 = area_xy.bounds
    cols = (np.arange(math.floor(x0 / s - 0.5), math.ceil(x1 / s - 0.5) + 1) + 0.5) * s
    rows = (np.arange(math.ceil(y1 / s - 0.5), math.floor(y0 / s - 0.5) - 1, -1) + 0.5) * s  # north first
    xs, ys = [], []
    for start in range(0, len(rows), _ROWS_PER_CHUNK):
        gy, gx = np.meshgrid(rows[start : start + _ROWS_PER_CHUNK], cols, indexing="ij")
        gx, gy = gx.ravel(), gy.ravel()
        inside = shapely.contains_xy(area_xy, gx, gy)
        xs.append(gx[inside])
        ys.append(gy[inside])
    x, y = np.concatenate(xs), np.concatenate(ys)
    lon, lat = xy_to_lonlat(x, y, crs)
    ground = np.full(len(x), np.nan)
    if dem is not None:
        ok = np.asarray(dem.covers(lon, lat), bool)
        ground[ok] = dem.sample(lon[ok], lat[ok])
        keep = np.isfinite(ground)
        x, y, lon, lat, ground = x[keep], y[keep], lon[keep], lat[keep], ground[keep]
    split = assign_splits(lon, lat, region, cfg)
    logger.info("uniform grid over %s at %g m: %d positions", region.name, s, len(x))
    return Positions(
        position_id=np.arange(len(x)),
        lon=lon,
        lat=lat,
        x=x,
        y=y,
        ground_m=ground,
        alt_m=ground + cfg.camera_offset_m,
        split=split,
        crs_wkt=crs,
    )


def dem_footprint_xy(dem: Any, crs_wkt: str) -> Any:
    """The DEM's lon/lat bounding box as a polygon in ``crs_wkt`` (edges densified to 0.01 deg)."""
    west, south, east, north = (float(v) for v in dem.bounds_lonlat)
    outline = shapely.segmentize(box(west, south, east, north), 0.01)
    return project_geometry(outline, crs_wkt)


def compact_grid(uniform: Positions, query_lon: npt.ArrayLike, query_lat: npt.ArrayLike, radius_m: float) -> Positions:
    """Uniform positions within ``radius_m`` of at least one query (the paper's compact database).

    Parameters
    ----------
    uniform : Positions
        The uniform grid.
    query_lon, query_lat : (M,) float
        Query positions, degrees EPSG:4326.
    radius_m : float
        Distance limit in metres, measured in ``uniform.crs_wkt`` (equal-area frame; its scale
        error is below 0.1 % within 500 km of the centre). A position at exactly ``radius_m`` is kept.

    Returns
    -------
    Positions
        The selected positions in uniform order, renumbered ``0..K-1``; ground/alt/split are kept.
    """
    if not (math.isfinite(radius_m) and radius_m >= 0):
        raise ConfigError(f"compact_grid: radius_m must be a finite number >= 0, got {radius_m!r}")
    qlon = np.atleast_1d(np.asarray(query_lon, np.float64))
    qlat = np.atleast_1d(np.asarray(query_lat, np.float64))
    if len(qlon) == 0 or len(uniform) == 0:
        return empty_positions(uniform.crs_wkt)
    qx, qy = lonlat_to_xy(qlon, qlat, uniform.crs_wkt)
    tree = cKDTree(np.column_stack([qx, qy]))
    dist, _ = tree.query(
        np.column_stack([uniform.x, uniform.y]), k=1, distance_upper_bound=radius_m * (1 + 1e-9) + 1e-6
    )
    return uniform.subset(dist <= radius_m).renumbered()


def heldout_grid(
    uniform: Positions,
    query_lon: npt.ArrayLike,
    query_lat: npt.ArrayLike,
    query_split: npt.ArrayLike,
    radius_m: float | None,
    splits: tuple[int, ...] = (VAL, TEST),
) -> Positions:
    """The uniform positions of the held-out splits that validation and the benchmark search.

    Parameters
    ----------
    uniform : Positions
        The uniform grid (its ``split`` column assigned).
    query_lon, query_lat : (M,) float
        Query positions, degrees EPSG:4326.
    query_split : (M,) uint8
        Split code of each query (same rule as the grid's).
    radius_m : float or None
        None: every position of ``splits`` (the paper's test database is all of the test area).
        Otherwise only positions within ``radius_m`` (metres in ``uniform.crs_wkt``, a position at
        exactly ``radius_m`` kept) of a query *of the same split*: on a large region a CPU run
        searches the neighbourhoods of its held-out photos instead of the whole area.
    splits : tuple of int
        Split codes kept (default val and test).

    Returns
    -------
    Positions
        The selected positions in uniform order, renumbered ``0..K-1``.
    """
    keep = np.isin(uniform.split, np.asarray(splits, np.uint8))
    if radius_m is None:
        return uniform.subset(keep).renumbered()
    if not (math.isfinite(radius_m) and radius_m > 0):
        raise ConfigError(f"heldout_grid: radius_m must be None or a finite number > 0, got {radius_m!r}")
    qlon = np.atleast_1d(np.asarray(query_lon, np.float64))
    qlat = np.atleast_1d(np.asarray(query_lat, np.float64))
    qsplit = np.atleast_1d(np.asarray(query_split, np.uint8))
    if not (qlon.shape == qlat.shape == qsplit.shape):
        raise ConfigError(f"heldout_grid: query lon/lat/split lengths differ ({qlon.size}, {qlat.size}, {qsplit.size})")
    near = np.zeros(len(uniform), bool)
    for code in splits:
        mine = qsplit == code
        if not mine.any():
            continue
        qx, qy = lonlat_to_xy(qlon[mine], qlat[mine], uniform.crs_wkt)
        dist, _ = cKDTree(np.column_stack([qx, qy])).query(
            np.column_stack([uniform.x, uniform.y]), k=1, distance_upper_bound=radius_m * (1 + 1e-9) + 1e-6
        )
        near |= (uniform.split == code) & (dist <= radius_m)
    return uniform.subset(keep & near).renumbered()


def camera_altitudes(
    lon: npt.ArrayLike,
    lat: npt.ArrayLike,
    dem: Any | None,
    height_m: float,
    alt_m: npt.ArrayLike | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Ground and camera altitude of points: the given altitude where finite, else ground + ``height_m``.

    Parameters
    ----------
    lon, lat : (N,) float
        Degrees, EPSG:4326.
    dem : DEM or None
        Elevation source; ``None`` gives NaN ground (then every ``alt_m`` must be given).
    height_m : float
        Camera height above the ground for points without an altitude, metres.
    alt_m : (N,) float or None
        Given altitudes (metres above the DEM datum); NaN or ``None`` = not given.

    Returns
    -------
    ground_m, alt_m : (N,) float64
        ``ground_m`` is NaN where unknown.

    Raises
    ------
    OutsideCoverageError
        A point without an altitude lies outside the DEM (or no DEM was given).
    """
    lon = np.atleast_1d(np.asarray(lon, np.float64))
    lat = np.atleast_1d(np.asarray(lat, np.float64))
    given = np.full(lon.shape, np.nan) if alt_m is None else np.atleast_1d(np.asarray(alt_m, np.float64))
    ground = np.full(lon.shape, np.nan) if dem is None else np.asarray(dem.sample(lon, lat), np.float64)
    out = np.where(np.isfinite(given), given, ground + height_m)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        k = bad[0]
        why = "no DEM was given" if dem is None else "it is outside the DEM coverage"
        raise OutsideCoverageError(
            f"cannot place camera {k} at lon={lon[k]:.6f}, lat={lat[k]:.6f}: no altitude given and {why}; "
            "give its altitude or a DEM that covers it"
        )
    return ground, out


def sparse_positions(
    poses: Sequence[Pose], dem: Any | None, cfg: GridConfig, region: Region | str | None = None
) -> Positions:
    """Database positions at the query poses themselves (the paper's sparse database).

    Parameters
    ----------
    poses : sequence of Pose
        Query poses; their ``alt_m`` is the camera altitude (``cfg`` is used for nothing else but
        the split settings). Poses with the same ``(lon, lat, alt_m)`` (several photos taken from
        one spot) share one position.
    dem : DEM or None
        Gives ``ground_m`` (NaN outside coverage or without a DEM).
    cfg : GridConfig
        Split settings.
    region : Region, str or None
        Frame and split source; ``None``: LAEA frame centred on the poses, split ``none``.

    Returns
    -------
    Positions
        One per distinct query position, in order of first appearance, ids ``0..N-1``.
    """
    spots = list(dict.fromkeys(p.spot for p in poses))
    lon = np.array([s[0] for s in spots], np.float64)
    lat = np.array([s[1] for s in spots], np.float64)
    alt = np.array([s[2] for s in spots], np.float64)
    if region is not None:
        region = get_region(region)
        crs = region.crs_wkt
    elif len(lon):
        crs = equal_area_crs_wkt((lon.min() + lon.max()) / 2.0, (lat.min() + lat.max()) / 2.0)
    else:
        crs = equal_area_crs_wkt(0.0, 0.0)
    ground, alt = camera_altitudes(lon, lat, dem, cfg.query_height_m, alt)
    x, y = lonlat_to_xy(lon, lat, crs)
    split = assign_splits(lon, lat, region, cfg) if region is not None else np.full(len(lon), NONE, np.uint8)
    return Positions(
        position_id=np.arange(len(lon)),
        lon=lon,
        lat=lat,
        x=x,
        y=y,
        ground_m=ground,
        alt_m=alt,
        split=split,
        crs_wkt=crs,
    )


def database_poses(
    positions: Positions, yaws_deg: Sequence[float] = DB_YAWS_DEG, fov_deg: float = DB_FOV_DEG
) -> list[Pose]:
    """Database camera poses, position-major: every yaw of position 0, then of position 1, ...

    Pitch and roll are 0 (level cameras, as in the paper). Raises :class:`ConfigError` when a
    position has no altitude (grid built without a DEM).
    """
    missing = np.flatnonzero(~np.isfinite(positions.alt_m))
    if len(missing):
        raise ConfigError(
            f"{len(missing)} positions have no camera altitude (first: id {positions.position_id[missing[0]]}); "
            "build the grid with a DEM"
        )
    yaws = [float(y) for y in yaws_deg]
    fov = float(fov_deg)
    return [
        Pose(lon=lo, lat=la, alt_m=al, yaw_deg=yaw, fov_deg=fov)
        for lo, la, al in zip(positions.lon.tolist(), positions.lat.tolist(), positions.alt_m.tolist(), strict=True)
        for yaw in yaws
    ]


def grid_summary(positions: Positions, cfg: GridConfig, region: Region | str) -> dict[str, Any]:
    """Counts for a dry run: positions, views (``positions x len(cfg.yaws_deg)``), estimated bytes, area.

    ``area_km2`` is the region's geodesic area; ``grid_area_km2`` = positions x spacing^2 (the area
    actually covered, smaller when a DEM clips the grid).

    ``estimated_bytes`` = views x :data:`BYTES_PER_VIEW_ESTIMATE` (90 KB per view: 3 modalities at
    500 x 500 px, compressed).
    """
    region = get_region(region)
    n_views = len(positions) * cfg.views_per_position
    counts = {name: int(np.count_nonzero(positions.split == code)) for name, code in _SPLIT_NAMES.items()}
    return {
        "region": region.name,
        "area_km2": region.area_km2,
        "spacing_m": cfg.spacing_m,
        "positions": len(positions),
        "grid_area_km2": len(positions) * cfg.spacing_m**2 / 1e6,
        "views_per_position": cfg.views_per_position,
        "views": n_views,
        "bytes_per_view_estimate": BYTES_PER_VIEW_ESTIMATE,
        "estimated_bytes": n_views * BYTES_PER_VIEW_ESTIMATE,
        "splits": counts,
    }


_SPLIT_NAMES = {"train": 0, "val": 1, "test": 2, "none": NONE}
