"""Rule-based land cover on hand-made rasters, flow accumulation, user-raster mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine

from crosslocate.dem import geodesy
from crosslocate.dem.landcover import (
    LANDCOVER_NODATA,
    WORLDCOVER_MAPPING,
    LandCover,
    LandcoverRules,
    flow_accumulation,
    map_codes,
    rule_landcover,
    slope_aspect_deg,
)
from crosslocate.dem.sources.geotiff import write_geotiff
from crosslocate.dem.sources.synthetic import analytic_dem
from crosslocate.errors import ConfigError

SP = 30.0


def tilted(base_m: float, slope_deg: float, n: int = 40, facing: str = "south") -> np.ndarray:
    """A plane rising towards the north (faces south) or towards the south (faces north)."""
    r = np.arange(n, dtype=float)[:, None] * np.ones((1, n))
    rise = math.tan(math.radians(slope_deg)) * SP
    return base_m + (n - 1 - r) * rise if facing == "south" else base_m + r * rise


def centre(cls: np.ndarray) -> int:
    return int(cls[cls.shape[0] // 2, cls.shape[1] // 2])


def test_slope_and_aspect_by_hand():
    slope, aspect = slope_aspect_deg(tilted(1000, 30.0, facing="south"), SP)
    assert slope[20, 20] == pytest.approx(30.0, abs=1e-9)
    assert aspect[20, 20] == pytest.approx(180.0, abs=1e-9)  # downhill towards the south
    _, aspect = slope_aspect_deg(tilted(1000, 30.0, facing="north"), SP)
    assert aspect[20, 20] == pytest.approx(0.0, abs=1e-9)


def test_hand_made_classes():
    assert centre(rule_landcover(np.full((40, 40), 3500.0), SP)) == LandCover.GLACIER  # high flat plateau
    assert centre(rule_landcover(tilted(1000, 60.0), SP)) == LandCover.ROCK  # 60 deg wall, any height
    assert centre(rule_landcover(tilted(800, 20.0), SP)) == LandCover.FOREST  # moderate slope, low
    assert centre(rule_landcover(tilted(2300, 10.0, n=20), SP)) == LandCover.GRASSLAND  # above tree line
    assert centre(rule_landcover(np.full((40, 40), 700.0) + np.arange(40)[None, :] * 0.01, SP)) == LandCover.GRASSLAND
    assert centre(rule_landcover(tilted(2750, 5.0, n=10), SP)) == LandCover.ROCK  # above the rock line


def test_snow_line_depends_on_aspect():
    # at 2750 m on a 20 deg slope: north faces are above their lowered snow line (2600), south faces not (3200)
    north = rule_landcover(tilted(2700, 20.0, n=10, facing="north"), SP)
    south = rule_landcover(tilted(2700, 20.0, n=10, facing="south"), SP)
    assert north[5, 5] == LandCover.GLACIER
    assert south[5, 5] == LandCover.ROCK


def test_low_flat_basin_is_water():
    yy, xx = np.mgrid[0:60, 0:60]
    r = np.hypot(yy - 30, xx - 30)
    bowl = 600.0 + np.maximum(0.0, r - 10.0) * 15.0  # flat floor radius 10 cells, 27 deg walls
    cls = rule_landcover(bowl, SP)
    assert cls[30, 30] == LandCover.WATER
    assert cls[30, 38] == LandCover.WATER
    assert cls[30, 50] == LandCover.FOREST
    # a flat shelf whose southern rim drops away (a terrace, not a closed basin) is not a lake
    shelf = np.where(yy <= 30, bowl, 600.0 - np.maximum(0.0, r - 10.0) * 15.0)
    assert rule_landcover(shelf, SP)[30, 30] != LandCover.WATER


def test_flow_accumulation_on_a_plane_counts_upstream_cells():
    z = tilted(1000, 10.0, n=12)  # rises to the north: every cell drains straight south
    acc = flow_accumulation(z, SP)
    rows = np.arange(12)[:, None]
    np.testing.assert_allclose(acc, np.broadcast_to((rows + 1) * SP * SP, acc.shape))


def test_river_channel_in_a_v_valley():
    n = 200
    yy, xx = np.mgrid[0:n, 0:n]
    z = 800.0 + np.abs(xx - n // 2) * 3.0 + (n - yy) * 0.5  # V valley draining south
    rules = LandcoverRules(channel_min_area_km2=1.0)
    cls = rule_landcover(z, SP, rules)
    # upstream area of the axis at row r ~ (cells in the catchment) * 900 m^2; > 1 km^2 near the outlet
    assert cls[n - 5, n // 2] == LandCover.WATER
    assert cls[1, n // 2] != LandCover.WATER  # ~2 rows x 200 cols upstream = 0.36 km^2


def test_validation():
    with pytest.raises(ConfigError):
        rule_landcover(np.full((5, 5), np.nan), SP)
    with pytest.raises(ConfigError):
        LandcoverRules(lake_closed_fraction=2.0)
    assert LandcoverRules.from_dict(LandcoverRules().to_dict()) == LandcoverRules()


def test_map_codes_and_attached_worldcover(tmp_path):
    codes = np.array([10, 80, 70, 50, 60, 30, 99, np.nan])
    assert map_codes(codes, WORLDCOVER_MAPPING).tolist() == [4, 1, 2, 6, 3, 5, LANDCOVER_NODATA, LANDCOVER_NODATA]
    dem = analytic_dem("plane", size_px=40, spacing_m=30.0, height_m=800.0, slope_east=0.36)
    w, s, e, n = dem.bounds_lonlat
    lon = np.array([w + 0.3 * (e - w), w + 0.7 * (e - w)])
    lat = np.array([0.5 * (s + n)] * 2)
    before = dem.landcover(lon, lat)
    assert before.tolist() == [LandCover.FOREST, LandCover.FOREST]  # 20 deg slope at ~800 m
    assert dem.landcover(lon, lat).tolist() == before.tolist()  # cached, consistent
    # a 2 x 2 WorldCover raster in EPSG:4326: west half water (80), east half code 99 (unmapped)
    t = Affine((e - w) / 2, 0, w, 0, -(n - s) / 2, n)
    raster = write_geotiff(tmp_path / "wc.tif", np.array([[80, 99], [80, 99]], np.uint8), t, "EPSG:4326")
    dem.attach_landcover(raster)
    after = dem.landcover(lon, lat)
    assert after.tolist() == [LandCover.WATER, LandCover.FOREST]  # unmapped code falls back to the rules
    assert geodesy.crs_name(dem.crs_wkt) == "EPSG:32632"


def test_derived_classes_are_cached_on_disk_and_reread_identically(monkeypatch, tmp_path):
    from crosslocate.dem import mosaic
    from crosslocate.dem.sources.synthetic import cache_dir

    monkeypatch.setenv("CROSSLOCATE_CACHE", str(tmp_path))

    dem = analytic_dem("cone", size_px=48, spacing_m=30.0, base_m=900.0, apex_m=2900.0, radius_m=600.0)
    w, s, e, n = dem.bounds_lonlat
    lon = np.linspace(w + 0.01 * (e - w), e - 0.01 * (e - w), 200)
    lat = np.linspace(s + 0.01 * (n - s), n - 0.01 * (n - s), 200)
    first = dem.landcover(lon, lat)
    files = list((cache_dir() / "landcover").glob("lc-*.npy"))
    assert len(files) == 1 and len(set(first.tolist())) > 1  # a cone spans several classes

    def boom(*a, **k):
        raise AssertionError("classes must come from the disk cache")

    monkeypatch.setattr(mosaic, "rule_landcover", boom)
    again = analytic_dem("cone", size_px=48, spacing_m=30.0, base_m=900.0, apex_m=2900.0, radius_m=600.0)
    assert again.landcover(lon, lat).tolist() == first.tolist()
    # another terrain has another key: computed, not read
    other = analytic_dem("cone", size_px=48, spacing_m=30.0, base_m=900.0, apex_m=2500.0, radius_m=600.0)
    with pytest.raises(AssertionError, match="disk cache"):
        other.landcover(lon, lat)
