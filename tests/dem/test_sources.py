"""SRTM/GeoTIFF readers on tiles built in the test (raw big-endian int16 written with numpy)."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from crosslocate.dem.sources import open_dem
from crosslocate.dem.sources.geotiff import write_geotiff
from crosslocate.errors import DEMReadError, OutsideCoverageError


def test_zipped_hgt_origin_values_and_filled_void(make_hgt, global_pattern):
    path = make_hgt("N46E007", voids=[(slice(100, 104), slice(200, 204))])
    with open_dem(path) as dem:
        # SW cell centre on whole degrees (pixel-is-point): row 1200, col 0 -> 0 + 2*1200
        assert dem.sample([7.0], [46.0])[0] == pytest.approx(2400.0, abs=1e-6)
        assert dem.sample([7.5], [46.5])[0] == pytest.approx(1800.0, abs=1e-6)
        # void cells (row 100..103, col 200..203) come back linearly filled: value = col + 2 row
        lon = 7.0 + np.array([200, 203, 201.5]) / 1200
        lat = 47.0 - np.array([100, 103, 102.25]) / 1200
        np.testing.assert_allclose(dem.sample(lon, lat), global_pattern(lon, lat), atol=1e-3)
        info = dem.info()
        assert info["void_count"] == 16
        assert info["shape"] == [1201, 1201]
        w, s, e, n = info["bounds_lonlat"]
        half = 0.5 / 1200
        assert (w, s, e, n) == pytest.approx((7 - half, 46 - half, 8 + half, 47 + half), abs=1e-9)
        assert not dem.synthetic


def test_plain_hgt_and_southern_western_name(make_hgt):
    data = np.full((1201, 1201), 123, np.int16)
    path = make_hgt("S12W077", zipped=False, data=data)
    with open_dem(path) as dem:
        assert dem.bounds_lonlat[0] == pytest.approx(-77 - 0.5 / 1200)
        assert dem.bounds_lonlat[1] == pytest.approx(-12 - 0.5 / 1200)
        assert dem.sample([-76.5], [-11.5])[0] == 123.0


def test_truncated_tile_names_file_and_sizes(make_hgt):
    path = make_hgt("N46E007", truncate_to=1_048_576)
    with pytest.raises(DEMReadError, match=r"N46E007\.hgt: 1,048,576 bytes, expected 2,884,802 \(3\"\) or 25,934,402"):
        open_dem(path)


def test_bad_name_corrupt_zip_and_all_void(make_hgt, tmp_path):
    bad = tmp_path / "tile.hgt"
    bad.write_bytes(b"\0" * 2_884_802)
    with pytest.raises(DEMReadError, match="not an SRTM tile name"):
        open_dem(bad)
    junk = tmp_path / "N46E007.hgt.zip"
    junk.write_bytes(b"PK not a zip")
    with pytest.raises(DEMReadError, match="N46E007.hgt.zip"):
        open_dem(junk)
    void = make_hgt("N45E007", data=np.full((1201, 1201), -32768, np.int16))
    with pytest.raises(DEMReadError, match="N45E007.*nodata"):
        open_dem(void).sample([7.5], [45.5])
    with pytest.raises(DEMReadError, match="no such file"):
        open_dem(tmp_path / "missing.tif")


def test_outside_coverage(make_hgt):
    with open_dem(make_hgt("N46E007")) as dem:
        assert np.isnan(dem.sample([9.0], [46.5])[0])
        with pytest.raises(OutsideCoverageError, match="lon=9.000000, lat=46.500000"):
            dem.elevation([7.5, 9.0], [46.5, 46.5])
        np.testing.assert_array_equal(dem.covers([7.5, 9.0, 8.0002], [46.5, 46.5, 46.5]), [True, False, True])


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_utm_nodata_and_missing_crs(tmp_path):
    z = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    z[5, 7] = -9999.0
    t = Affine(10.0, 0, 400_000.0, 0, -10.0, 5_170_000.0)
    path = write_geotiff(tmp_path / "a.tif", z, t, "EPSG:32632", nodata=-9999.0)
    with open_dem(path) as dem:
        # centre of cell [5, 7] is x = 400000 + 75, y = 5170000 - 55; value filled linearly = 5*30 + 7
        assert dem.sample_xy([400_075.0], [5_169_945.0])[0] == pytest.approx(157.0, abs=1e-4)
        assert dem.info()["void_count"] == 1
        assert dem.crs_wkt and dem.resolution_m == pytest.approx(10.0)
    with rasterio.open(tmp_path / "nocrs.tif", "w", driver="GTiff", height=4, width=4, count=1, dtype="float32") as ds:
        ds.write(np.ones((4, 4), np.float32), 1)
    with pytest.raises(DEMReadError, match="nocrs.tif: raster has no CRS"):
        open_dem(tmp_path / "nocrs.tif")


@pytest.mark.realdem
def test_real_srtm_tile_matches_raw_bytes(srtm_dir):
    import zipfile

    path = srtm_dir / "N46E007.SRTMGL3.hgt.zip"
    raw = np.frombuffer(zipfile.ZipFile(path).read("N46E007.hgt"), ">i2").reshape(1201, 1201)
    valid = raw != -32768
    with open_dem(path) as dem:
        info = dem.info()
        assert info["elevation_min_m"] == raw[valid].min() and info["elevation_max_m"] == raw[valid].max()
        assert info["void_count"] == int((~valid).sum())
        assert info["shape"] == [1201, 1201]
        assert info["bounds_lonlat"] == pytest.approx([7 - 1 / 2400, 46 - 1 / 2400, 8 + 1 / 2400, 47 + 1 / 2400])
        rng = np.random.default_rng(0)
        r, c = rng.integers(0, 1201, 200), rng.integers(0, 1201, 200)
        ok = valid[r, c]
        z = dem.sample(7.0 + c / 1200, 47.0 - r / 1200)
        np.testing.assert_allclose(z[ok], raw[r, c][ok], atol=1e-6)


def test_dem_source_resolves_demo_only_for_the_demo_region(tmp_path):
    """The one place that decides 'no --dem means the embedded DEM': only for the demo region."""
    from crosslocate.dem.sources import DemSource
    from crosslocate.errors import ConfigError

    assert DemSource.resolve(None, "demo") == DemSource() and DemSource().demo and DemSource().spec == "demo"
    assert DemSource.resolve(["demo"], "alps").demo  # asked for explicitly
    with pytest.raises(ConfigError, match=r"region 'alps' needs a DEM: pass --dem"):
        DemSource.resolve(None, "alps")
    with pytest.raises(ConfigError, match="cannot be combined"):
        DemSource.resolve(["demo", str(tmp_path)], "alps")
    src = DemSource.resolve([tmp_path / "a.tif", str(tmp_path / "b")], "alps")
    assert src.paths == (str(tmp_path / "a.tif"), str(tmp_path / "b")) and not src.demo
    assert DemSource.resolve(src) is src and hash(src) == hash(DemSource(src.paths))  # picklable cache key
    assert DemSource.resolve(str(tmp_path)).spec == [str(tmp_path)]
