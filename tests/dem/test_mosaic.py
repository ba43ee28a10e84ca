"""The lazy DEM mosaic: tile seams, block reads, pickling, CRS checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from affine import Affine

from crosslocate.dem.mosaic import DEM, ArraySource
from crosslocate.dem.sources import open_dem
from crosslocate.errors import DEMReadError


def test_directory_mosaic_is_seamless(make_hgt, global_pattern, tmp_path):
    folder = tmp_path / "tiles"
    for name in ("N46E007", "N46E008", "N45E007"):
        make_hgt(name, folder=folder)
    with open_dem(folder) as dem:
        assert len(dem.sources) == 3
        rng = np.random.default_rng(0)
        lon = rng.uniform(7.0, 9.0, 20_000)
        lat = rng.uniform(46.0, 47.0, 20_000)
        lon[:3] = [8.0, 8.0 + 1e-9, 8.0 - 1e-9]  # on and around the shared tile edge
        np.testing.assert_allclose(dem.sample(lon, lat), global_pattern(lon, lat), atol=1e-6)
        lon2, lat2 = rng.uniform(7.0, 8.0, 1000), rng.uniform(45.0, 47.0, 1000)
        np.testing.assert_allclose(dem.sample(lon2, lat2), global_pattern(lon2, lat2), atol=1e-6)
        # the gap tile N45E008 is not covered
        assert not dem.covers([8.5], [45.5])[0]
        assert np.isnan(dem.sample([8.5], [45.5])[0])
        info = dem.info()
        assert info["shape"] == [2401, 2401] and info["n_tiles"] == 3


def test_multiblock_reads_agree_with_single_block():
    rng = np.random.default_rng(3)
    z = rng.normal(1000, 200, (100, 90))
    t = Affine(25.0, 0, 500_000.0, 0, -25.0, 5_100_000.0)
    whole = DEM([ArraySource(z, t, "EPSG:32632")])
    src = ArraySource(z, t, "EPSG:32632")
    src.block_px = 16  # force many overlapping blocks
    blocky = DEM([src])
    x = rng.uniform(500_000.0, 500_000.0 + 90 * 25, 5000)
    y = rng.uniform(5_100_000.0 - 100 * 25, 5_100_000.0, 5000)
    np.testing.assert_allclose(blocky.sample_xy(x, y), whole.sample_xy(x, y), atol=1e-4)
    lon, lat = np.array([7.01]), np.array([46.0])
    assert whole.landcover(lon, lat)[0] == 255  # outside coverage sentinel


def test_pickle_checksum_and_context_manager(make_hgt):
    dem = open_dem(make_hgt("N46E007"))
    z0 = dem.sample([7.3], [46.3])
    clone = pickle.loads(pickle.dumps(dem))
    assert clone.sample([7.3], [46.3]) == pytest.approx(z0)
    assert clone.checksum == dem.checksum and len(dem.checksum) == 64
    with dem:
        pass
    assert dem.sample([7.3], [46.3]) == pytest.approx(z0)  # closed DEMs re-read lazily


def test_mixed_crs_is_refused():
    t = Affine(30.0, 0, 400_000.0, 0, -30.0, 5_170_000.0)
    a = ArraySource(np.zeros((4, 4)), t, "EPSG:32632", name="a")
    b = ArraySource(np.zeros((4, 4)), t, "EPSG:32633", name="b")
    with pytest.raises(DEMReadError, match="b: CRS EPSG:32633 differs"):
        DEM([a, b])
    with pytest.raises(DEMReadError, match="no DEM tiles"):
        DEM([])
