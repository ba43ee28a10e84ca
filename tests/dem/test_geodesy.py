"""Geodesy against independent truths: WGS84 constants, Vincenty, closed-form ellipsoid formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crosslocate.dem import geodesy
from crosslocate.errors import ConfigError

A = 6378137.0  # WGS84 semi-major axis (definition)
F = 1 / 298.257223563  # WGS84 flattening (definition)
B = A * (1 - F)
E2 = F * (2 - F)


def vincenty_inverse(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    """Vincenty (1975) inverse on WGS84, written from the paper; accurate to ~0.5 mm."""
    L = math.radians(lon2 - lon1)
    u1 = math.atan((1 - F) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - F) * math.tan(math.radians(lat2)))
    su1, cu1, su2, cu2 = math.sin(u1), math.cos(u1), math.sin(u2), math.cos(u2)
    lam = L
    for _ in range(200):
        sl, cl = math.sin(lam), math.cos(lam)
        ss = math.hypot(cu2 * sl, cu1 * su2 - su1 * cu2 * cl)
        cs = su1 * su2 + cu1 * cu2 * cl
        sigma = math.atan2(ss, cs)
        sa = cu1 * cu2 * sl / ss
        c2a = 1 - sa * sa
        c2sm = cs - 2 * su1 * su2 / c2a
        C = F / 16 * c2a * (4 + F * (4 - 3 * c2a))
        lam_new = L + (1 - C) * F * sa * (sigma + C * ss * (c2sm + C * cs * (-1 + 2 * c2sm * c2sm)))
        if abs(lam_new - lam) < 1e-13:
            lam = lam_new
            break
        lam = lam_new
    u_sq = c2a * (A * A - B * B) / (B * B)
    AA = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
    BB = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
    ds = BB * ss * (c2sm + BB / 4 * (cs * (-1 + 2 * c2sm**2) - BB / 6 * c2sm * (-3 + 4 * ss**2) * (-3 + 4 * c2sm**2)))
    return B * AA * (sigma - ds)


def test_ecef_known_values():
    x, y, z = geodesy.lonlat_to_ecef(0.0, 0.0, 0.0)
    assert float(x) == pytest.approx(A, abs=1e-6) and abs(float(y)) < 1e-6 and abs(float(z)) < 1e-6
    x, y, z = geodesy.lonlat_to_ecef(90.0, 0.0, 100.0)
    assert float(y) == pytest.approx(A + 100.0, abs=1e-6)
    _, _, z = geodesy.lonlat_to_ecef(0.0, 90.0, 0.0)
    assert float(z) == pytest.approx(B, abs=1e-6)


def test_ecef_matches_closed_form_and_round_trips():
    rng = np.random.default_rng(0)
    lon, lat, h = rng.uniform(-180, 180, 500), rng.uniform(-89, 89, 500), rng.uniform(-500, 9000, 500)
    x, y, z = geodesy.lonlat_to_ecef(lon, lat, h)
    phi, lam = np.radians(lat), np.radians(lon)
    n = A / np.sqrt(1 - E2 * np.sin(phi) ** 2)
    np.testing.assert_allclose(x, (n + h) * np.cos(phi) * np.cos(lam), atol=1e-6)
    np.testing.assert_allclose(z, (n * (1 - E2) + h) * np.sin(phi), atol=1e-6)
    lon2, lat2, h2 = geodesy.ecef_to_lonlat(x, y, z)
    np.testing.assert_allclose(lon2, lon, atol=1e-9)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    np.testing.assert_allclose(h2, h, atol=1e-5)


def test_enu_axes_and_round_trip():
    lon0, lat0, h0 = 7.65, 46.55, 1500.0
    e, n, u = geodesy.lonlat_to_enu(lon0, lat0, h0 + 100.0, lon0, lat0, h0)
    assert abs(float(e)) < 1e-6 and abs(float(n)) < 1e-6 and float(u) == pytest.approx(100.0, abs=1e-6)
    # a point due north has e ~ 0, n > 0; due east has n ~ 0 (to first order), e > 0
    e, n, _ = geodesy.lonlat_to_enu(lon0, lat0 + 0.01, h0, lon0, lat0, h0)
    assert abs(float(e)) < 1e-6 and float(n) > 1000
    rng = np.random.default_rng(1)
    lon = lon0 + rng.uniform(-0.5, 0.5, 100)
    lat = lat0 + rng.uniform(-0.5, 0.5, 100)
    h = rng.uniform(0, 4000, 100)
    back = geodesy.enu_to_lonlat(*geodesy.lonlat_to_enu(lon, lat, h, lon0, lat0, h0), lon0, lat0, h0)
    np.testing.assert_allclose(back[0], lon, atol=1e-9)
    np.testing.assert_allclose(back[1], lat, atol=1e-9)
    np.testing.assert_allclose(back[2], h, atol=1e-5)


def test_enu_equals_rotated_ecef_difference():
    lon0, lat0, h0 = 8.0, 46.0, 500.0
    lon, lat, h = 8.2, 46.1, 2500.0
    p = np.array(geodesy.lonlat_to_ecef(lon, lat, h)) - np.array(geodesy.lonlat_to_ecef(lon0, lat0, h0))
    phi, lam = math.radians(lat0), math.radians(lon0)
    east = np.array([-math.sin(lam), math.cos(lam), 0])
    north = np.array([-math.sin(phi) * math.cos(lam), -math.sin(phi) * math.sin(lam), math.cos(phi)])
    up = np.array([math.cos(phi) * math.cos(lam), math.cos(phi) * math.sin(lam), math.sin(phi)])
    enu = geodesy.lonlat_to_enu(lon, lat, h, lon0, lat0, h0)
    np.testing.assert_allclose([float(v) for v in enu], [p @ east, p @ north, p @ up], atol=1e-6)


def test_known_geodesic_distances():
    assert float(geodesy.geodesic_distance_m(0, 0, 0, 1)) == pytest.approx(110_574.0, abs=1.0)
    zurich, geneva = (8.5417, 47.3769), (6.1432, 46.2044)
    d = float(geodesy.geodesic_distance_m(*zurich, *geneva))
    truth = vincenty_inverse(*zurich, *geneva)
    assert 220_000 < d < 228_000
    assert d == pytest.approx(truth, abs=1e-3)  # Vincenty is good to 0.5 mm


def test_geodesic_area_of_an_equatorial_degree_cell():
    e = math.sqrt(E2)

    def q(phi: float) -> float:
        s = math.sin(phi)
        return s / (1 - E2 * s * s) + math.log((1 + e * s) / (1 - e * s)) / (2 * e)

    truth_km2 = B * B * math.radians(1.0) / 2 * (q(math.radians(1.0)) - q(0.0)) / 1e6
    ring = [(0, 0), (1, 0), (1, 1), (0, 1)]
    assert geodesy.geodesic_area_km2(ring) == pytest.approx(truth_km2, rel=1e-4)
    with pytest.raises(ConfigError):
        geodesy.geodesic_area_km2([(0, 0), (1, 1)])


def test_local_radius_closed_form():
    assert float(geodesy.local_radius_m(0.0)) == pytest.approx(B, abs=1e-3)  # sqrt(M N) = b at the equator
    assert float(geodesy.local_radius_m(90.0)) == pytest.approx(A * A / B, abs=1e-3)  # a^2 / b at the poles
    r46 = float(geodesy.local_radius_m(46.0))
    assert 6_370_000 < r46 < 6_390_000
    with pytest.raises(ConfigError):
        geodesy.local_radius_m(91.0)


def test_enu_rotation_maps_up_vectors():
    r = geodesy.enu_rotation(7.0, 46.0, 7.0, 46.0)
    np.testing.assert_allclose(r, np.eye(3), atol=1e-12)
    r = geodesy.enu_rotation(7.0, 46.0, 8.0, 47.0)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    # "up" at `from` expressed in ENU at `to`, from pyproj ECEF differences
    up_from = np.array(geodesy.lonlat_to_ecef(7.0, 46.0, 1000.0)) - np.array(geodesy.lonlat_to_ecef(7.0, 46.0, 0.0))
    up_from /= np.linalg.norm(up_from)
    expected = np.array(
        geodesy.lonlat_to_enu(
            *geodesy.ecef_to_lonlat(*(np.array(geodesy.lonlat_to_ecef(8.0, 47.0, 0.0)) + up_from)), 8.0, 47.0, 0.0
        )
    )
    np.testing.assert_allclose(r @ np.array([0.0, 0.0, 1.0]), expected.ravel(), atol=1e-6)


def test_projected_crs_helpers():
    lon0, lat0 = 7.5, 46.5
    aeqd = geodesy.aeqd_crs_wkt(lon0, lat0)
    x, y = geodesy.transform_xy(8.3, 46.9, "EPSG:4326", aeqd)
    assert math.hypot(float(x), float(y)) == pytest.approx(
        float(geodesy.geodesic_distance_m(lon0, lat0, 8.3, 46.9)), abs=0.01
    )
    laea = geodesy.equal_area_crs_wkt(lon0, lat0)
    ring = np.array([(7.0, 46.0), (8.0, 46.0), (8.0, 47.0), (7.0, 47.0)])
    dense = np.concatenate([np.linspace(ring[i], ring[(i + 1) % 4], 200, endpoint=False) for i in range(4)])
    px, py = geodesy.transform_xy(dense[:, 0], dense[:, 1], "EPSG:4326", laea)
    shoelace = 0.5 * abs(np.dot(px, np.roll(py, 1)) - np.dot(py, np.roll(px, 1))) / 1e6
    assert shoelace == pytest.approx(geodesy.geodesic_area_km2(ring), rel=1e-4)
    assert geodesy.crs_name(geodesy.utm_crs_wkt(7.5, 46.5)) == "EPSG:32632"
    with pytest.raises(ConfigError):
        geodesy.crs_wkt("EPSG:999999999")
