"""Bilinear sampling and void filling against analytic planes."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from crosslocate.dem import geodesy, sampling
from crosslocate.dem.sources.synthetic import analytic_dem
from crosslocate.errors import OutsideCoverageError


def test_plane_sampled_exactly_in_xy_and_lonlat():
    sx, sy, h0 = 0.31, -0.17, 1234.5
    dem = analytic_dem("plane", size_px=50, spacing_m=20.0, height_m=h0, slope_east=sx, slope_north=sy)
    west, north = 400_000.0, 5_170_000.0
    cx, cy = west + 500.0, north - 500.0  # raster centre
    rng = np.random.default_rng(0)
    # inside the hull of cell centres (half a cell in from the footprint edge)
    x = rng.uniform(west + 10.0, west + 990.0, 10_000)
    y = rng.uniform(north - 990.0, north - 10.0, 10_000)
    truth = h0 + sx * (x - cx) + sy * (y - cy)
    np.testing.assert_allclose(dem.sample_xy(x, y), truth, rtol=0, atol=1e-6)
    lon, lat = geodesy.transform_xy(x, y, "EPSG:32632", "EPSG:4326")
    np.testing.assert_allclose(dem.sample(lon, lat), truth, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dem.elevation(lon, lat), truth, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dem.sample_xy(lon, lat, crs="EPSG:4326"), truth, rtol=0, atol=1e-6)


def test_outside_and_edge_behaviour():
    dem = analytic_dem("plane", size_px=10, spacing_m=10.0, height_m=100.0, slope_east=1.0)
    west, north = 400_000.0, 5_170_000.0
    z = dem.sample_xy([west + 2.0, west - 1.0, west + 50.0, np.nan], [north - 50.0, north - 50.0, north + 0.1, 0.0])
    assert z[0] == pytest.approx(100.0 - 45.0)  # half-cell border: edge value (centre of col 0 is at -45 m)
    assert np.isnan(z[1]) and np.isnan(z[2]) and np.isnan(z[3])
    lon, lat = geodesy.transform_xy(west - 100.0, north - 50.0, "EPSG:32632", "EPSG:4326")
    with pytest.raises(OutsideCoverageError):
        dem.elevation(lon, lat)


def test_fill_voids_exact_on_plane_and_edges():
    r, c = np.mgrid[0:40, 0:50]
    plane = 3.0 * r - 2.0 * c + 7.0
    z = plane.astype(np.float32).copy()
    z[10:15, 20:26] = np.nan  # interior void: linear interpolation is exact
    z[0:3, 0:4] = np.nan  # corner void: nearest fallback or hull interpolation
    filled, n = sampling.fill_voids(z)
    assert n == 30 + 12
    np.testing.assert_allclose(filled[10:15, 20:26], plane[10:15, 20:26], atol=1e-3)
    assert np.isfinite(filled).all()
    with pytest.raises(ValueError):
        sampling.fill_voids(np.full((3, 3), np.nan))


def test_bilinear_and_indices_by_hand():
    grid = np.array([[0.0, 10.0], [20.0, 30.0]])
    assert sampling.bilinear(grid, np.array([0.5]), np.array([0.5]))[0] == pytest.approx(15.0)
    assert sampling.bilinear(grid, np.array([1.0]), np.array([0.25]))[0] == pytest.approx(22.5)
    t = Affine(2.0, 0, 100.0, 0, -2.0, 50.0)
    row_f, col_f = sampling.centre_indices(t, np.array([101.0]), np.array([49.0]))
    assert (row_f[0], col_f[0]) == (0.0, 0.0)
    r, c = sampling.nearest_index(np.array([0.49, 0.51, 99.0]), np.array([-3.0, 1.2, 0.0]), (2, 2))
    assert r.tolist() == [0, 1, 1] and c.tolist() == [0, 1, 0]
