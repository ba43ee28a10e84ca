"""Curvature drop and effective radius against hand formulas and exact ENU geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crosslocate.dem import curvature, geodesy
from crosslocate.errors import ConfigError

A, F = 6378137.0, 1 / 298.257223563
E2 = F * (2 - F)


def test_drop_at_10km_with_ellipsoid_radius():
    lat = 46.0
    w = 1 - E2 * math.sin(math.radians(lat)) ** 2
    radius = A * math.sqrt(1 - E2) / w  # Gaussian radius written out by hand
    drop = float(curvature.curvature_drop_m(10_000.0, geodesy.local_radius_m(lat)))
    assert drop == pytest.approx(10_000.0**2 / (2 * radius) * (1 - 0.13), rel=1e-12)
    assert 6.80 < drop < 6.84  # ~6.83 m with a 6371 km sphere; 6.82 m with the local WGS84 radius


def test_effective_radius_and_zero_refraction():
    assert float(curvature.effective_radius_m(6.4e6, 0.13)) == pytest.approx(6.4e6 / 0.87)
    d = np.array([0.0, 1000.0, 5000.0])
    np.testing.assert_allclose(curvature.curvature_drop_m(d, 6.4e6, k=0.0), d**2 / 12.8e6)
    # drop with k equals the geometric drop on the effective radius
    np.testing.assert_allclose(
        curvature.curvature_drop_m(d, 6.4e6), curvature.curvature_drop_m(d, curvature.effective_radius_m(6.4e6), k=0.0)
    )


def test_geometric_drop_matches_exact_enu():
    """A point 10 km east on the ellipsoid sits d^2/(2N)-ish below the tangent plane (exact via pyproj)."""
    lon0, lat0 = 7.5, 46.5
    _, _, u = geodesy.lonlat_to_enu(lon0, lat0 + 10_000 / 111_150.0, 0.0, lon0, lat0, 0.0)
    e, n, _ = geodesy.lonlat_to_enu(lon0, lat0 + 10_000 / 111_150.0, 0.0, lon0, lat0, 0.0)
    d = math.hypot(float(e), float(n))
    drop = float(curvature.curvature_drop_m(d, geodesy.local_radius_m(lat0), k=0.0))
    assert drop == pytest.approx(-float(u), abs=0.05)  # meridional radius differs from Gaussian by <0.3 %


def test_invalid_k_and_radius():
    with pytest.raises(ConfigError):
        curvature.curvature_drop_m(1.0, 6.4e6, k=1.0)
    with pytest.raises(ConfigError):
        curvature.effective_radius_m(-1.0)
