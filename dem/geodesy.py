"""Geodesy on the WGS84 ellipsoid, with pyproj only (no hand-rolled projections, no spherical Earth).

Frames
------
* ``lon``/``lat``: degrees, EPSG:4326 (lon first, ``always_xy``).
* ``h``: metres above the WGS84 *ellipsoid* for the ECEF/ENU functions. DEM heights (SRTM) are above
  the EGM96 geoid; the geoid undulation (~50 m in the Alps) is nearly constant over a local frame, so
  callers building a local frame may pass DEM heights directly (the constant offset cancels out).
* ECEF: EPSG:4978 metres (x through lon 0 / lat 0, z through the north pole).
* ENU at an origin ``(lon0, lat0, h0)``: metres east, north, up (PROJ ``topocentric`` conversion).

All functions are vectorised: scalars or arrays of any broadcastable shape in, float64 arrays of the
broadcast shape out.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError

from crosslocate.errors import ConfigError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

#: The WGS84 ellipsoid (semi-major axis ``a`` and squared eccentricity ``es`` come from PROJ).
WGS84_GEOD = Geod(ellps="WGS84")


def _f64(*arrays: Any) -> list[FloatArray]:
    out = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in arrays])
    return [np.array(a, dtype=np.float64) for a in out]


@lru_cache(maxsize=64)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


@lru_cache(maxsize=256)
def _enu_transformer(lon0: float, lat0: float, h0: float) -> Transformer:
    pipeline = (
        "+proj=pipeline +step +proj=cart +ellps=WGS84 "
        f"+step +proj=topocentric +ellps=WGS84 +lon_0={lon0!r} +lat_0={lat0!r} +h_0={h0!r}"
    )
    return Transformer.from_pipeline(pipeline)


def _check_lat(lat: FloatArray, name: str = "lat") -> None:
    if np.any(np.abs(lat[np.isfinite(lat)]) > 90.0):
        raise ConfigError(f"{name} must be within [-90, 90] degrees, got max |{name}| = {np.nanmax(np.abs(lat))}")


def lonlat_to_ecef(lon: Any, lat: Any, h: Any) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Geodetic (EPSG:4979: lon/lat degrees, h metres above the ellipsoid) to ECEF (EPSG:4978) metres.

    Returns
    -------
    x, y, z : float64 arrays of the broadcast input shape, metres.
    """
    lon_a, lat_a, h_a = _f64(lon, lat, h)
    _check_lat(lat_a)
    x, y, z = _transformer("EPSG:4979", "EPSG:4978").transform(lon_a, lat_a, h_a)
    return np.asarray(x, np.float64), np.asarray(y, np.float64), np.asarray(z, np.float64)


def ecef_to_lonlat(x: Any, y: Any, z: Any) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ECEF metres (EPSG:4978) to geodetic ``(lon_deg, lat_deg, h_m)`` (EPSG:4979, ellipsoidal h)."""
    xa, ya, za = _f64(x, y, z)
    lon, lat, h = _transformer("EPSG:4978", "EPSG:4979").transform(xa, ya, za)
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64), np.asarray(h, np.float64)


def lonlat_to_enu(
    lon: Any, lat: Any, h: Any, lon0: float, lat0: float, h0: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Geodetic points to the local East-North-Up frame at origin ``(lon0, lat0, h0)``.

    The frame is the exact tangent frame (ECEF translated and rotated), so Earth curvature shows up
    as a negative ``u`` for distant points at the origin's height.

    Returns
    -------
    e, n, u : float64 arrays of the broadcast input shape, metres.
    """
    lon_a, lat_a, h_a = _f64(lon, lat, h)
    _check_lat(lat_a)
    _check_lat(np.asarray([lat0], np.float64), "lat0")
    e, n, u = _enu_transformer(float(lon0), float(lat0), float(h0)).transform(lon_a, lat_a, h_a)
    return np.asarray(e, np.float64), np.asarray(n, np.float64), np.asarray(u, np.float64)


def enu_to_lonlat(
    e: Any, n: Any, u: Any, lon0: float, lat0: float, h0: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Inverse of :func:`lonlat_to_enu`: ENU metres at the origin to ``(lon_deg, lat_deg, h_m)``."""
    ea, na, ua = _f64(e, n, u)
    _check_lat(np.asarray([lat0], np.float64), "lat0")
    lon, lat, h = _enu_transformer(float(lon0), float(lat0), float(h0)).transform(ea, na, ua, direction="INVERSE")
    return np.asarray(lon, np.float64), np.asarray(lat, np.float64), np.asarray(h, np.float64)


def geodesic_distance_m(lon1: Any, lat1: Any, lon2: Any, lat2: Any) -> FloatArray:
    """Geodesic (ellipsoidal, Karney) distance in metres between points given in degrees (EPSG:4326)."""
    a, b, c, d = _f64(lon1, lat1, lon2, lat2)
    _check_lat(b, "lat1")
    _check_lat(d, "lat2")
    _, _, dist = WGS84_GEOD.inv(a, b, c, d)
    return np.asarray(dist, np.float64)


def geodesic_area_km2(polygon_lonlat: Any) -> float:
    """Geodesic area in km² of a polygon in lon/lat degrees.

    Parameters
    ----------
    polygon_lonlat : shapely (Multi)Polygon or (N, 2) array-like
        Exterior ring (lon, lat) in degrees, EPSG:4326; holes are honoured for shapely input.
    """
    if hasattr(polygon_lonlat, "geom_type"):
        area, _ = WGS84_GEOD.geometry_area_perimeter(polygon_lonlat)
        return abs(float(area)) / 1e6
    ring = np.asarray(polygon_lonlat, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[1] != 2 or len(ring) < 3:
        raise ConfigError(f"polygon_lonlat must be (N>=3, 2) lon/lat degrees, got shape {ring.shape}")
    area, _ = WGS84_GEOD.polygon_area_perimeter(ring[:, 0], ring[:, 1])
    return abs(float(area)) / 1e6


@lru_cache(maxsize=256)
def aeqd_crs_wkt(lon0: float, lat0: float) -> str:
    """WKT of an azimuthal-equidistant CRS (WGS84, metres) centred at ``(lon0, lat0)``."""
    return CRS.from_proj4(f"+proj=aeqd +lat_0={float(lat0)!r} +lon_0={float(lon0)!r} +datum=WGS84 +units=m").to_wkt()


@lru_cache(maxsize=64)
def equal_area_crs_wkt(lon0: float, lat0: float) -> str:
    """WKT of a Lambert azimuthal equal-area CRS (WGS84, metres) centred at ``(lon0, lat0)``."""
    return CRS.from_proj4(f"+proj=laea +lat_0={float(lat0)!r} +lon_0={float(lon0)!r} +datum=WGS84 +units=m").to_wkt()


#: UTM latitude band letters, 8 degrees each from 80 S (X spans 72-84 N).
UTM_BANDS: str = "CDEFGHJKLMNPQRSTUVWX"


def utm_zone(lon: float, lat: float) -> tuple[int, str, int]:
    """``(zone number 1..60, latitude band letter, EPSG code)`` of the WGS84 UTM zone holding ``(lon, lat)``.

    Plain 6-degree zones (no Norway/Svalbard exceptions); EPSG 326zz north of the equator, 327zz south.
    """
    zone = int(np.floor((float(lon) + 180.0) / 6.0)) % 60 + 1
    band = UTM_BANDS[int(np.clip(np.floor((float(lat) + 80.0) / 8.0), 0, len(UTM_BANDS) - 1))]
    return zone, band, (32600 if lat >= 0 else 32700) + zone


def utm_crs_wkt(lon: float, lat: float) -> str:
    """WKT of the WGS84 UTM zone containing ``(lon, lat)`` (e.g. EPSG:32632 for the central Alps)."""
    return CRS.from_epsg(utm_zone(lon, lat)[2]).to_wkt()


def transform_xy(x: Any, y: Any, src_crs: Any, dst_crs: Any) -> tuple[FloatArray, FloatArray]:
    """Transform coordinates between two CRSs (anything pyproj accepts: "EPSG:4326", WKT, CRS).

    Geographic CRSs take/give ``(lon, lat)`` degrees (``always_xy``). Returns float64 arrays of the
    broadcast input shape; points a projection cannot represent come back as ``inf``.
    """
    xa, ya = _f64(x, y)
    src = src_crs.to_wkt() if isinstance(src_crs, CRS) else str(src_crs)
    dst = dst_crs.to_wkt() if isinstance(dst_crs, CRS) else str(dst_crs)
    if src == dst:
        return xa, ya
    ox, oy = _transformer(src, dst).transform(xa, ya)
    return np.asarray(ox, np.float64), np.asarray(oy, np.float64)


def local_radius_m(lat: Any) -> FloatArray:
    """Gaussian mean radius of curvature sqrt(M N) of the WGS84 ellipsoid at geodetic latitude (deg).

    ``M`` is the meridional and ``N`` the prime-vertical radius of curvature; ``a`` and ``e²`` come from
    pyproj's WGS84 definition. About 6,378 km at 46° N, 6,335 km at the equator, 6,399 km at the poles.
    """
    (lat_a,) = _f64(lat)
    _check_lat(lat_a)
    a, es = WGS84_GEOD.a, WGS84_GEOD.es
    s2 = np.sin(np.radians(lat_a)) ** 2
    w = 1.0 - es * s2
    return np.asarray(a * np.sqrt(1.0 - es) / w, np.float64)


def enu_basis(lon: Any, lat: Any) -> FloatArray:
    """ENU -> ECEF rotation at geodetic ``(lon, lat)`` degrees: (..., 3, 3), columns are e, n, u in ECEF."""
    lon_a, lat_a = _f64(lon, lat)
    lam, phi = np.radians(lon_a), np.radians(lat_a)
    sl, cl, sp, cp = np.sin(lam), np.cos(lam), np.sin(phi), np.cos(phi)
    zero = np.zeros_like(lam)
    east = np.stack([-sl, cl, zero], axis=-1)
    north = np.stack([-sp * cl, -sp * sl, cp], axis=-1)
    up = np.stack([cp * cl, cp * sl, sp], axis=-1)
    return np.stack([east, north, up], axis=-1)


def enu_rotation(lon_from: float, lat_from: float, lon_to: float, lat_to: float) -> FloatArray:
    """(3, 3) float64 rotation mapping a vector in ENU at ``from`` to the same vector in ENU at ``to``.

    ``v_to = R @ v_from``; both frames are geodetic tangent frames on the WGS84 ellipsoid.
    """
    r_from = enu_basis(lon_from, lat_from)
    r_to = enu_basis(lon_to, lat_to)
    return np.asarray(r_to.T @ r_from, np.float64)


def crs_is_geographic(crs: Any) -> bool:
    """True when ``crs`` (WKT / "EPSG:..." / pyproj CRS) has angular (degree) axes."""
    return bool(CRS.from_user_input(crs).is_geographic)


def crs_is_projected(crs: Any) -> bool:
    """True when ``crs`` (WKT / "EPSG:..." / pyproj CRS) is a projected CRS (planar, linear units)."""
    return bool(CRS.from_user_input(crs).is_projected)


def crs_name(crs: Any) -> str:
    """Short name of a CRS: ``"EPSG:xxxx"`` when it has an EPSG code, else its PROJ name."""
    c = CRS.from_user_input(crs)
    code = c.to_epsg(min_confidence=70)
    return f"EPSG:{code}" if code is not None else str(c.name)


def crs_wkt(crs: Any) -> str:
    """Normalised WKT of any CRS pyproj accepts; raises :class:`ConfigError` on an unknown CRS."""
    try:
        return str(CRS.from_user_input(crs).to_wkt())
    except CRSError as exc:
        raise ConfigError(f"unknown CRS {str(crs)[:80]!r}: {exc}") from exc


def same_crs(a: Any, b: Any) -> bool:
    """True when two CRS definitions (WKT / "EPSG:..." / pyproj CRS) describe the same CRS."""
    return bool(CRS.from_user_input(a).equals(CRS.from_user_input(b), ignore_axis_order=True))


def linear_unit_m(crs: Any) -> float:
    """Metres per unit of the first axis of a projected CRS (1.0 for metre-based CRSs)."""
    c = CRS.from_user_input(crs)
    if c.is_geographic or not c.axis_info:
        raise ConfigError(f"CRS {crs_name(c)} is not projected; it has no linear unit")
    return float(c.axis_info[0].unit_conversion_factor)
