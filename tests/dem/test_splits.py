"""Splits: disjointness with a buffer (KD-tree distances), determinism, the paper's Switzerland test split."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import CRS, Geod, Transformer
from scipy.spatial import cKDTree

from crosslocate.datasets.schema import SPLIT_CODES
from crosslocate.dem import splits
from crosslocate.dem.config import GridConfig
from crosslocate.dem.grid import uniform_grid
from crosslocate.dem.regions import get_region
from crosslocate.dem.splits import assign_splits
from crosslocate.errors import ConfigError

TRAIN, VAL, TEST, NONE = (SPLIT_CODES[k] for k in ("train", "val", "test", "none"))


def _square(tmp_path, half_m, lon0=8.0, lat0=46.0):
    laea = CRS.from_proj4(f"+proj=laea +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
    lon, lat = Transformer.from_crs(laea, "EPSG:4326", always_xy=True).transform(
        [-half_m, half_m, half_m, -half_m, -half_m], [-half_m, -half_m, half_m, half_m, -half_m]
    )
    path = tmp_path / f"square{int(half_m)}.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [[[a, b] for a, b in zip(lon, lat, strict=True)]]}))
    return get_region(path)


def _min_dist(a_xy, b_xy):
    if len(a_xy) == 0 or len(b_xy) == 0:
        return np.inf
    d, _ = cKDTree(b_xy).query(a_xy, k=1)
    return float(d.min())


def test_codes_match_schema():
    assert (splits.TRAIN, splits.VAL, splits.TEST, splits.NONE) == (TRAIN, VAL, TEST, NONE)


def test_blocks_on_demo_sized_square_are_disjoint_with_buffer(tmp_path):
    region = _square(tmp_path, 15_000.0)  # 30 x 30 km, the size of a small demo DEM
    cfg = GridConfig(spacing_m=250.0, split_method="blocks", split_block_m=5000.0, split_buffer_m=1000.0)
    p = uniform_grid(region, None, cfg)
    xy = np.column_stack([p.x, p.y])
    parts = {code: xy[p.split == code] for code in (TRAIN, VAL, TEST)}
    assert all(len(v) > 0 for v in parts.values())
    assert _min_dist(parts[TRAIN], parts[TEST]) >= 1000.0
    assert _min_dist(parts[TRAIN], parts[VAL]) >= 1000.0
    assert _min_dist(parts[VAL], parts[TEST]) >= 1000.0
    # the buffer is tight: positions just beyond 1 km of the other split are kept (250 m grid -> < 1.25 km)
    assert _min_dist(parts[TRAIN], parts[TEST]) < 1000.0 + 250.0 * 1.5
    # the same distances measured geodesically on the ellipsoid (independent of the projection)
    geod = Geod(ellps="WGS84")
    tr, te = np.flatnonzero(p.split == TRAIN), np.flatnonzero(p.split == TEST)
    _, j = cKDTree(xy[te]).query(xy[tr], k=1)
    _, _, d = geod.inv(p.lon[tr], p.lat[tr], p.lon[te][j], p.lat[te][j])
    assert d.min() >= 999.0


def test_blocks_without_buffer_give_the_fractions_and_whole_blocks(tmp_path):
    region = _square(tmp_path, 50_000.0)  # 100 x 100 km -> ~400 blocks of 5 km
    cfg = GridConfig(spacing_m=500.0, split_method="blocks", split_block_m=5000.0, split_buffer_m=0.0)
    p = uniform_grid(region, None, cfg)
    assert not (p.split == NONE).any()
    frac = np.bincount(p.split, minlength=3)[:3] / len(p)
    assert frac == pytest.approx([0.6, 0.2, 0.2], abs=0.03)
    # every 5 km block (computed here from x, y in the region frame) carries a single split
    block = np.floor(p.x / 5000.0).astype(int) * 100_000 + np.floor(p.y / 5000.0).astype(int)
    for b in np.unique(block):
        assert len(np.unique(p.split[block == b])) == 1


def test_split_of_a_point_does_not_depend_on_the_others(tmp_path):
    region = _square(tmp_path, 15_000.0)
    cfg = GridConfig(split_method="blocks", split_block_m=5000.0)
    rng = np.random.default_rng(3)
    lon, lat = rng.uniform(7.82, 8.18, 500), rng.uniform(45.88, 46.12, 500)
    full = assign_splits(lon, lat, region, cfg)
    perm = rng.permutation(500)
    assert np.array_equal(assign_splits(lon[perm], lat[perm], region, cfg), full[perm])
    assert np.array_equal(assign_splits(lon[:7], lat[:7], region, cfg), full[:7])
    assert assign_splits([20.0], [10.0], region, cfg)[0] == NONE  # outside the region
    other_seed = assign_splits(lon, lat, region, GridConfig(split_method="blocks", split_block_m=5000.0, split_seed=1))
    assert not np.array_equal(other_seed, full)


def test_alps_test_split_is_switzerland():
    cfg = GridConfig(spacing_m=2000.0)  # auto -> polygon, test = Switzerland
    assert splits.split_areas(get_region("alps"), cfg).method == "polygon"
    # Bern, Zurich, Lugano -> test; Innsbruck, Grenoble, Bolzano -> never test
    lon = [7.447, 8.541, 8.952, 11.394, 5.724, 11.354]
    lat = [46.948, 47.377, 46.004, 47.269, 45.188, 46.498]
    towns = assign_splits(lon, lat, "alps", cfg)
    assert list(towns[:3]) == [TEST] * 3 and TEST not in towns[3:]
    p = uniform_grid("alps", None, cfg)
    ch = get_region("switzerland")
    assert np.array_equal(p.split == TEST, ch.contains(p.lon, p.lat))
    xy = np.column_stack([p.x, p.y])
    assert (p.split == VAL).sum() > 0.1 * len(p)
    assert _min_dist(xy[p.split == TRAIN], xy[p.split == TEST]) >= 1000.0
    assert _min_dist(xy[p.split == TRAIN], xy[p.split == VAL]) >= 1000.0
    assert _min_dist(xy[p.split == VAL], xy[p.split == TEST]) >= 1000.0


def test_switzerland_itself_uses_blocks():
    assert splits.split_areas(get_region("switzerland"), GridConfig()).method == "blocks"


def test_polygon_method_needs_overlap(tmp_path):
    cfg = GridConfig(split_method="polygon")
    with pytest.raises(ConfigError, match="does not overlap"):
        assign_splits([7.0], [40.0], _square(tmp_path, 5000.0, lon0=7.0, lat0=40.0), cfg)


def test_shared_terrain_of_two_rectangles_by_hand():
    """Region 30 x 10 km, test = its right third, 1 km buffer, views reach 5 km (shares by hand):
    train positions fill x < 19 km, so training views see test terrain up to x = 24 km (4 of its
    10 km: 0.4); test views see x >= 15 km, of which 15..19 km (4 of 15 km: 4/15) is train area."""
    from shapely.geometry import Polygon, box

    from crosslocate.dem.splits import SplitAreas, shared_terrain_areas

    region, test = box(0, 0, 30_000, 10_000), box(20_000, 0, 30_000, 10_000)
    near = test.buffer(1_000)
    areas = SplitAreas("polygon", "", region, Polygon(), test, near, near)
    shared = shared_terrain_areas(areas, 5_000.0)
    assert set(shared) == {"test"}  # no val area, no val entry
    assert shared["test"]["area_km2"] == pytest.approx(100.0)
    assert shared["test"]["seen_by_train"] == pytest.approx(0.4, abs=1e-4)
    assert shared["test"]["view_terrain_in_train"] == pytest.approx(4 / 15, abs=1e-4)
    # views that reach less than the buffer share nothing; a negative range is refused
    assert shared_terrain_areas(areas, 500.0)["test"]["seen_by_train"] == 0.0
    with pytest.raises(ConfigError, match="range_m"):
        shared_terrain_areas(areas, -1.0)
