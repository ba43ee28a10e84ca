"""Query sets: photos (or rendered photo-like images) with their camera poses, as a CSV (no torch).

CSV format (UTF-8, header row required, extra columns ignored, column order free)::

    image,lat,lon,alt_m,yaw_deg,pitch_deg,roll_deg,fov_deg
    img/0001.png,46.5,7.9,2104.5,135.0,2.0,-1.0,52.3

* ``image``: path of the image; relative paths are relative to the CSV's folder and are resolved
  to absolute paths on load.
* ``lat``/``lon``: degrees, EPSG:4326. ``alt_m``: camera altitude in metres above the DEM datum;
  may be empty, then the camera is placed ``height_m`` (1.7 m) above the DEM at load time
  (a DEM is needed then). Loaded with a DEM, a given altitude must lie at least
  :data:`~crosslocate.dem.poses.MIN_CAMERA_CLEARANCE_M` above the terrain where the DEM covers the row.
* ``yaw_deg`` (clockwise from north), ``pitch_deg``, ``roll_deg``, ``fov_deg`` (horizontal, within
  :data:`QUERY_FOV_RANGE_DEG`): see :mod:`crosslocate.dem.poses`.

Every malformed row raises :class:`~crosslocate.errors.QueryCSVError` with the path and the
1-based line number (the header is line 1). With ``check_images`` (the default) every image is
opened (header only) and must be a readable image of at least :data:`MIN_IMAGE_SIDE_PX` pixels on
each side; its EXIF orientation is applied when it is read for the network
(:func:`crosslocate.datasets.views.load_rgb`).
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from crosslocate.dem.grid import camera_altitudes, dem_footprint_xy
from crosslocate.dem.poses import MIN_CAMERA_CLEARANCE_M, Pose, check_camera_clearance
from crosslocate.dem.regions import Region, get_region, lonlat_to_xy, xy_to_lonlat
from crosslocate.errors import ConfigError, OutsideCoverageError, QueryCSVError, RenderError
from crosslocate.fileio import atomic_write, file_sha256

logger = logging.getLogger(__name__)

#: Columns of a query CSV, in the order the writer uses.
QUERY_COLUMNS: tuple[str, ...] = ("image", "lat", "lon", "alt_m", "yaw_deg", "pitch_deg", "roll_deg", "fov_deg")
#: Default height of a query camera above the DEM when ``alt_m`` is empty, metres (eye height).
QUERY_HEIGHT_M: float = 1.7
#: Accepted horizontal FOV of a query photo, degrees: narrower shrinks the photo to a few pixels of
#: the database view's canvas, wider is not a pinhole camera.
QUERY_FOV_RANGE_DEG: tuple[float, float] = (5.0, 150.0)
#: Smallest accepted side of a query image, pixels (a 1x1 or 4x4 "photo" shows nothing to match).
MIN_IMAGE_SIDE_PX: int = 8


@dataclass(frozen=True, slots=True)
class Query:
    """One query: an image path and the pose that produced / explains it.

    Attributes
    ----------
    image : str
        Image path (absolute after :func:`load_query_csv`).
    pose : Pose
        Camera position (EPSG:4326 + altitude) and orientation (degrees).
    """

    image: str
    pose: Pose


def load_query_csv(
    path: str | os.PathLike[str],
    *,
    dem: Any | None = None,
    height_m: float = QUERY_HEIGHT_M,
    region: Region | str | None = None,
    check_images: bool = True,
) -> list[Query]:
    """Read a query CSV.

    Parameters
    ----------
    path : path
        The CSV file.
    dem : DEM or None
        Used for rows with an empty ``alt_m``: altitude = DEM elevation + ``height_m``; with
        ``region``, every row must also lie inside the DEM's coverage.
    height_m : float
        Camera height above the DEM for rows without ``alt_m``, metres.
    region : Region, name or None
        When given, every row's position must lie inside the region polygon (a query set for
        training or evaluation in that region), and inside the DEM's coverage when ``dem`` is given.
    check_images : bool
        Open every image (header only) and refuse missing, unreadable or tiny ones.

    Raises
    ------
    QueryCSVError
        Missing file/header/column, non-numeric or out-of-range value, an empty ``alt_m``
        that cannot be filled (no DEM, or outside its coverage), a given ``alt_m`` below or inside
        the DEM's terrain (naming the terrain height there), a position outside ``region`` (or
        its DEM), or (``check_images``) a missing, unreadable or too small image; names the path
        and 1-based line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise QueryCSVError(path, 0, f"cannot read query CSV ({exc})") from exc
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if header is None:
        raise QueryCSVError(path, 1, f"empty file; the first line must be the header {','.join(QUERY_COLUMNS)}")
    header = [h.strip() for h in header]
    missing = [c for c in QUERY_COLUMNS if c not in header]
    if missing:
        raise QueryCSVError(
            path, 1, f"missing column(s) {', '.join(missing)}; the header must contain {','.join(QUERY_COLUMNS)}"
        )
    col = {name: header.index(name) for name in QUERY_COLUMNS}
    rows: list[tuple[int, str, dict[str, float]]] = []
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise QueryCSVError(path, line, f"{len(row)} fields, the header has {len(header)}")
        rows.append((line, row[col["image"]].strip(), _parse_numbers(path, line, row, col)))
    queries = _make_queries(path, rows, dem, height_m)
    lines = [line for line, _, _ in rows]
    if region is not None:
        _check_inside(path, lines, queries, get_region(region), dem)
    if check_images:
        for line, q in zip(lines, queries, strict=True):
            _check_image(path, line, q.image)
    return queries


def _check_inside(path: Path, lines: list[int], queries: list[Query], region: Region, dem: Any | None) -> None:
    """QueryCSVError at the first row outside ``region`` (or outside the DEM coverage, when a DEM is given)."""
    lon, lat = queries_to_lonlat(queries)
    x, y = lonlat_to_xy(lon, lat, region.crs_wkt)
    outside = ~shapely.intersects_xy(region.polygon_xy(region.crs_wkt), x, y)
    where = f"region {region.name!r}"
    if not outside.any() and dem is not None:
        outside, where = ~np.asarray(dem.covers(lon, lat), bool), f"the DEM coverage {tuple(dem.bounds_lonlat)}"
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise QueryCSVError(
            path, lines[k], f"lon {lon[k]!r}, lat {lat[k]!r} lies outside {where} ({int(outside.sum())} row(s) do)"
        )


def photo_problem(image: str | os.PathLike[str]) -> str | None:
    """Why ``image`` cannot be a query photo (missing, unreadable, under :data:`MIN_IMAGE_SIDE_PX` a
    side), or None. Only the header is read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as im:
            w, h = im.size
    except FileNotFoundError:
        return f"image {image} does not exist"
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        return f"image {image} is not a readable image ({exc})"
    if min(w, h) < MIN_IMAGE_SIDE_PX:
        return f"image {image} is {w}x{h} px; a query photo needs at least {MIN_IMAGE_SIDE_PX} px a side"
    return None


def fov_problem(fov_deg: float) -> str | None:
    """Why ``fov_deg`` cannot be a query photo's horizontal FOV (outside :data:`QUERY_FOV_RANGE_DEG`), or None."""
    lo, hi = QUERY_FOV_RANGE_DEG
    if not lo <= fov_deg <= hi:  # NaN fails too
        return f"{fov_deg!r} must be within [{lo:g}, {hi:g}] degrees (horizontal FOV of the photo)"
    return None


def _check_image(path: Path, line: int, image: str) -> None:
    """Raise :class:`QueryCSVError` unless ``image`` opens as an image of at least MIN_IMAGE_SIDE_PX a side."""
    why = photo_problem(image)
    if why is not None:
        raise QueryCSVError(path, line, why)


def query_set_digest(queries: Sequence[Query], extra: bytes = b"") -> str:
    """Hex sha256 identifying a query set: every pose (all seven numbers) and the bytes of every
    image, in order, plus ``extra`` (e.g. the split codes). Independent of where the files lie."""
    import hashlib

    h = hashlib.sha256()
    for q in queries:
        p = q.pose
        h.update(np.array([p.lon, p.lat, p.alt_m, p.yaw_deg, p.pitch_deg, p.roll_deg, p.fov_deg], "<f8").tobytes())
        h.update(bytes.fromhex(file_sha256(q.image)))
    h.update(extra)
    return h.hexdigest()


def _parse_numbers(path: Path, line: int, row: list[str], col: dict[str, int]) -> dict[str, float]:
    values: dict[str, float] = {}
    for name in QUERY_COLUMNS[1:]:
        raw = row[col[name]].strip()
        if name == "alt_m" and raw == "":
            values[name] = math.nan
            continue
        try:
            value = float(raw)
        except ValueError:
            raise QueryCSVError(path, line, f"column {name}: {raw!r} is not a number") from None
        if not math.isfinite(value):
            raise QueryCSVError(path, line, f"column {name}: {raw!r} is not a finite number")
        values[name] = value
    checks = (
        ("lat", -90.0 <= values["lat"] <= 90.0, "must be within [-90, 90] degrees"),
        ("lon", -180.0 <= values["lon"] <= 180.0, "must be within [-180, 180] degrees"),
        ("pitch_deg", -90.0 <= values["pitch_deg"] <= 90.0, "must be within [-90, 90] degrees"),
    )
    for name, ok, why in checks:
        if not ok:
            raise QueryCSVError(path, line, f"column {name}: {values[name]!r} {why}")
    fov = fov_problem(values["fov_deg"])
    if fov is not None:
        raise QueryCSVError(path, line, f"column fov_deg: {fov}")
    return values


def _make_queries(
    path: Path, rows: list[tuple[int, str, dict[str, float]]], dem: Any | None, height_m: float
) -> list[Query]:
    lon = np.array([v["lon"] for _, _, v in rows], np.float64)
    lat = np.array([v["lat"] for _, _, v in rows], np.float64)
    alt = np.array([v["alt_m"] for _, _, v in rows], np.float64)
    given = np.isfinite(alt)
    try:
        ground, alt = camera_altitudes(lon, lat, dem, height_m, alt)
    except OutsideCoverageError:
        k = int(np.flatnonzero(~np.isfinite(alt) & ~_covered(dem, lon, lat))[0])
        why = "no DEM was given to fill it" if dem is None else "the position is outside the DEM coverage"
        raise QueryCSVError(path, rows[k][0], f"alt_m is empty and {why}; fill in alt_m") from None
    low = given & np.isfinite(ground) & ~(alt >= ground + MIN_CAMERA_CLEARANCE_M)
    if low.any():  # an explicit altitude under (or within the clearance of) the terrain
        k = int(np.flatnonzero(low)[0])
        try:
            check_camera_clearance(
                lon[k], lat[k], alt[k], ground[k], fix=f"leave alt_m empty to stand {height_m:g} m above the ground"
            )
        except RenderError as exc:
            raise QueryCSVError(path, rows[k][0], f"alt_m: {exc}") from None
    base = path.resolve().parent
    queries = []
    for (line, image, v), a in zip(rows, alt.tolist(), strict=True):
        if not image:
            raise QueryCSVError(path, line, "column image is empty")
        pose = Pose(
            lon=v["lon"],
            lat=v["lat"],
            alt_m=a,
            yaw_deg=v["yaw_deg"],
            pitch_deg=v["pitch_deg"],
            roll_deg=v["roll_deg"],
            fov_deg=v["fov_deg"],
        )
        queries.append(Query(image=str((base / image).resolve()), pose=pose))
    return queries


def _covered(dem: Any | None, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    if dem is None:
        return np.zeros(lon.shape, bool)
    return np.isfinite(np.asarray(dem.sample(lon, lat), np.float64))


def write_query_csv(
    path: str | os.PathLike[str], queries: Iterable[Query], splits: Sequence[str] | None = None
) -> Path:
    """Write queries as a CSV (header + one row each) atomically (:func:`crosslocate.fileio.atomic_write`).

    Image paths inside the CSV's folder are written relative to it, others absolute; floats are
    written with ``repr`` so :func:`load_query_csv` reads back the same values. ``splits`` (one
    name per query: ``train``, ``val``, ``test``, ``none``) adds a ``split`` column recording each
    photo's split; readers ignore it (the split always follows from the position and the grid's
    split rule).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = path.resolve().parent
    queries = list(queries)
    if splits is not None and len(splits) != len(queries):
        raise ValueError(f"write_query_csv: {len(splits)} splits for {len(queries)} queries")
    with atomic_write(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow([*QUERY_COLUMNS, *(("split",) if splits is not None else ())])
        for i, q in enumerate(queries):
            p = q.pose
            numbers = (p.lat, p.lon, p.alt_m, p.yaw_deg, p.pitch_deg, p.roll_deg, p.fov_deg)
            extra = (str(splits[i]),) if splits is not None else ()
            writer.writerow([_relative_image(q.image, base), *(repr(float(v)) for v in numbers), *extra])
    return path


def _relative_image(image: str, base: Path) -> str:
    p = Path(image)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(base).as_posix()
    except ValueError:
        return str(p)


def sample_synthetic_poses(
    region: Region | str,
    dem: Any,
    n: int,
    rng: np.random.Generator,
    fov_range_deg: tuple[float, float] = (30.0, 70.0),
    pitch_deg: float = 10.0,
    roll_deg: float = 5.0,
    margin_m: float = 1000.0,
    height_m: float = QUERY_HEIGHT_M,
) -> list[Pose]:
    """Random query poses inside ``region`` and the DEM coverage (off the database grid).

    Positions are uniform by area (drawn in the region's equal-area frame) and kept when inside
    the region polygon and when the DEM covers the point and the four points ``margin_m`` north,
    east, south and west of it (a margin from the DEM edge). Altitude: DEM + ``height_m``; yaw
    uniform in [0, 360); pitch uniform in [-pitch_deg, pitch_deg]; roll uniform in
    [-roll_deg, roll_deg]; FOV uniform in ``fov_range_deg``.

    Parameters
    ----------
    region : Region or str
    dem : DEM
        Duck-typed: ``bounds_lonlat``, ``covers``, ``elevation``.
    n : int
        Number of poses.
    rng : numpy.random.Generator
        The only source of randomness (deterministic for a given seed).

    Raises
    ------
    ConfigError
        Bad ``n`` or ranges.
    OutsideCoverageError
        The region and the DEM (less the margin) do not overlap.
    """
    lo, hi = (float(v) for v in fov_range_deg)
    if not 0.0 < lo <= hi < 180.0:
        raise ConfigError(f"fov_range_deg must satisfy 0 < low <= high < 180, got {fov_range_deg!r}")
    if n < 0 or not (0.0 <= pitch_deg <= 90.0) or roll_deg < 0 or margin_m < 0:
        raise ConfigError(
            f"sample_synthetic_poses: need n >= 0, 0 <= pitch_deg <= 90, roll_deg >= 0, margin_m >= 0; "
            f"got n={n}, pitch_deg={pitch_deg}, roll_deg={roll_deg}, margin_m={margin_m}"
        )
    region = get_region(region)
    lon, lat = _sample_positions(region, dem, n, rng, margin_m)
    alt = np.asarray(dem.elevation(lon, lat), np.float64) + height_m
    yaw, pitch, roll, fov = _orientations(rng, n, (lo, hi), pitch_deg, roll_deg)
    return [
        Pose(
            lon=float(lon[k]),
            lat=float(lat[k]),
            alt_m=float(alt[k]),
            yaw_deg=float(yaw[k]),
            pitch_deg=float(pitch[k]),
            roll_deg=float(roll[k]),
            fov_deg=float(fov[k]),
        )
        for k in range(n)
    ]


def _orientations(
    rng: np.random.Generator, n: int, fov_range_deg: tuple[float, float], pitch_deg: float, roll_deg: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(n,) yaw in [0, 360), pitch, roll and FOV (degrees), uniform, drawn in that order."""
    yaw = rng.uniform(0.0, 360.0, n)
    pitch = rng.uniform(-pitch_deg, pitch_deg, n)
    roll = rng.uniform(-roll_deg, roll_deg, n)
    fov = rng.uniform(fov_range_deg[0], fov_range_deg[1], n)
    return yaw, pitch, roll, fov


def sample_orientations(
    pose: Pose,
    n: int,
    rng: np.random.Generator,
    fov_range_deg: tuple[float, float] = (30.0, 70.0),
    pitch_deg: float = 10.0,
    roll_deg: float = 5.0,
) -> list[Pose]:
    """``n`` more photos from the spot of ``pose``: same lon/lat/alt, new random yaw, pitch, roll and FOV.

    The distributions are those of :func:`sample_synthetic_poses` (yaw uniform in [0, 360), pitch in
    [-pitch_deg, pitch_deg], roll in [-roll_deg, roll_deg], FOV uniform in ``fov_range_deg``,
    degrees). The position is copied exactly, so the sparse database (one position per distinct
    query position) renders it once.
    """
    lo, hi = (float(v) for v in fov_range_deg)
    if n < 0 or not 0.0 < lo <= hi < 180.0 or not 0.0 <= pitch_deg <= 90.0 or roll_deg < 0:
        raise ConfigError(
            f"sample_orientations: need n >= 0, 0 < FOV low <= high < 180, 0 <= pitch_deg <= 90, roll_deg >= 0; "
            f"got n={n}, fov_range_deg={fov_range_deg!r}, pitch_deg={pitch_deg}, roll_deg={roll_deg}"
        )
    yaw, pitch, roll, fov = _orientations(rng, n, (lo, hi), pitch_deg, roll_deg)
    return [
        dataclasses.replace(
            pose, yaw_deg=float(yaw[k]), pitch_deg=float(pitch[k]), roll_deg=float(roll[k]), fov_deg=float(fov[k])
        )
        for k in range(n)
    ]


def _sample_positions(
    region: Region, dem: Any, n: int, rng: np.random.Generator, margin_m: float, max_rounds: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """(n,) lon, (n,) lat (degrees) uniform by area inside region and DEM coverage less ``margin_m``."""
    crs = region.crs_wkt
    area_xy = shapely.intersection(region.polygon_xy(crs), dem_footprint_xy(dem, crs))
    if area_xy.is_empty:
        raise OutsideCoverageError(f"region {region.name!r} does not overlap the DEM bounds {tuple(dem.bounds_lonlat)}")
    shapely.prepare(area_xy)
    x0, y0, x1, y1 = area_xy.bounds
    lons: list[np.ndarray] = []
    lats: list[np.ndarray] = []
    have = 0
    for _ in range(max_rounds):
        if have >= n:
            break
        m = max(64, 4 * (n - have))
        x = rng.uniform(x0, x1, m)
        y = rng.uniform(y0, y1, m)
        ok = shapely.contains_xy(area_xy, x, y)
        for dx, dy in ((0.0, 0.0), (0.0, margin_m), (margin_m, 0.0), (0.0, -margin_m), (-margin_m, 0.0)):
            idx = np.flatnonzero(ok)
            lo_, la_ = xy_to_lonlat(x[idx] + dx, y[idx] + dy, crs)
            ok[idx] = np.asarray(dem.covers(lo_, la_), bool)
        lo_, la_ = xy_to_lonlat(x[ok], y[ok], crs)
        lons.append(lo_)
        lats.append(la_)
        have += len(lo_)
    if have < n:
        raise OutsideCoverageError(
            f"could place only {have} of {n} query positions inside region {region.name!r} and the DEM coverage "
            f"(margin {margin_m:g} m); use a DEM that covers the region or a smaller margin"
        )
    return np.concatenate(lons)[:n], np.concatenate(lats)[:n]


def queries_to_lonlat(queries: Sequence[Query]) -> tuple[np.ndarray, np.ndarray]:
    """(N,) lon and (N,) lat (degrees, EPSG:4326) of the queries, e.g. for ``compact_grid``."""
    return (np.array([q.pose.lon for q in queries], np.float64), np.array([q.pose.lat for q in queries], np.float64))


__all__ = [
    "MIN_IMAGE_SIDE_PX",
    "QUERY_COLUMNS",
    "QUERY_FOV_RANGE_DEG",
    "Query",
    "fov_problem",
    "load_query_csv",
    "photo_problem",
    "queries_to_lonlat",
    "query_set_digest",
    "sample_orientations",
    "sample_synthetic_poses",
    "write_query_csv",
]
