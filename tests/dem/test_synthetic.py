"""Synthetic alpine generator (determinism, relief, lakes, caching) and analytic terrains."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import rasterio
from scipy import ndimage

from crosslocate.dem.landcover import LandCover, rule_landcover
from crosslocate.dem.sources import open_dem
from crosslocate.dem.sources import synthetic as syn
from crosslocate.errors import ConfigError

SMALL = syn.AlpineParams(spacing_m=200.0)  # the demo region at 200 m: 200 x 200 cells


def _sha(z: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(z).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def small():
    return syn.generate_alpine(SMALL)


def test_deterministic_per_seed(small):
    z, _, _ = small
    z2, _, _ = syn.generate_alpine(SMALL)
    assert _sha(z) == _sha(z2)
    z3, _, _ = syn.generate_alpine(syn.AlpineParams(spacing_m=200.0, seed=SMALL.seed + 1))
    assert _sha(z3) != _sha(z)


def _check_relief(z: np.ndarray, spacing_m: float, tags: dict[str, str]) -> None:
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert 450.0 <= z.min() <= 1000.0  # valley floors
    assert z.max() > 3500.0  # high peaks
    assert 1200.0 < np.median(z) < 2600.0  # mostly mountains
    slope = np.degrees(np.arctan(np.hypot(*np.gradient(z.astype(float), spacing_m))))
    assert np.percentile(slope, 90) > 20.0  # steep terrain exists
    # lakes: flat water surfaces (connected cells of identical height, several hectares)
    assert int(tags["lakes"]) >= 2
    lakes = rule_landcover(z, spacing_m) == LandCover.WATER
    labels, _n = ndimage.label(lakes)
    sizes = np.bincount(labels.ravel())[1:] * spacing_m**2
    assert (sizes >= 0.2e6).sum() >= 1


def test_small_relief_statistics(small):
    z, transform, tags = small
    assert z.shape == (200, 200)
    assert transform.a == 200.0 and transform.c == 400_000.0 and transform.f == 5_170_000.0
    assert tags["synthetic"] == "true" and tags["seed"] == str(SMALL.seed)
    _check_relief(z, 200.0, tags)


@pytest.mark.slow
def test_full_demo_region_relief():
    z, _, tags = syn.generate_alpine(syn.AlpineParams())
    assert z.shape == (1333, 1333)
    _check_relief(z, 30.0, tags)


def test_cached_geotiff_is_tagged_and_reused(isolated_cache):
    path = syn.demo_geotiff(SMALL)
    assert path.parent == isolated_cache
    mtime = path.stat().st_mtime_ns
    assert syn.demo_geotiff(SMALL) == path and path.stat().st_mtime_ns == mtime
    with rasterio.open(path) as ds:
        tags = ds.tags()
        assert tags["synthetic"] == "true" and tags["generator_version"] == str(syn.GENERATOR_VERSION)
        assert ds.crs.to_epsg() == 32632
    with open_dem(path) as dem:
        assert dem.synthetic
        assert dem.checksum == open_dem(path).checksum
        w, s, e, n = dem.bounds_lonlat
        assert 7.6 < w < e < 8.3 and 46.2 < s < n < 46.8  # Bernese Alps / Valais
    assert not list(isolated_cache.glob("*.tmp"))


def test_analytic_terrains():
    analytic_dem = syn.analytic_dem
    d = analytic_dem("cone", size_px=41, spacing_m=10.0, apex_m=1500.0, base_m=500.0, radius_m=150.0)
    cx, cy = 400_000.0 + 205.0, 5_170_000.0 - 205.0
    z = d.sample_xy([cx, cx + 75.0, cx + 200.0], [cy, cy, cy])
    np.testing.assert_allclose(z, [1500.0, 1000.0, 500.0], rtol=0, atol=1e-6)
    ridge = analytic_dem("ridge", size_px=40, spacing_m=10.0, height_m=800.0, half_width_m=100.0, azimuth_deg=90.0)
    cx, cy = 400_000.0 + 200.0, 5_170_000.0 - 200.0  # E-W ridge axis through the centre (a cell edge)
    np.testing.assert_allclose(
        ridge.sample_xy([cx + 37.0, cx, cx], [cy + 5.0, cy + 50.0, cy - 150.0]), [760.0, 400.0, 0.0], rtol=0, atol=1e-6
    )
    wall = analytic_dem("wall", size_px=40, spacing_m=10.0, height_m=300.0, distance_m=100.0)
    assert wall.sample_xy([cx], [cy + 150.0])[0] == 300.0 and wall.sample_xy([cx], [cy])[0] == 0.0
    c = analytic_dem("plane", size_px=8, spacing_m=10.0, center_lonlat=(7.5, 46.5))
    lon, lat = c.bounds_lonlat[0::2], c.bounds_lonlat[1::2]
    assert np.mean(lon) == pytest.approx(7.5, abs=1e-6) and np.mean(lat) == pytest.approx(46.5, abs=1e-6)
    with pytest.raises(ConfigError):
        analytic_dem("volcano")
    with pytest.raises(ConfigError):
        syn.AlpineParams(spacing_m=10_000.0)
    assert math.isclose(syn.analytic_height("plane", 10.0, 0.0, slope_east=0.5), 1005.0)
