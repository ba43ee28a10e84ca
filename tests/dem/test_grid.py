"""Grids against hand-computed counts, brute-force neighbours, analytic terrain and geodesic spacing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pyproj import CRS, Geod, Transformer

from crosslocate.dem.config import GRID_PRESETS, GridConfig, get_grid_preset
from crosslocate.dem.grid import (
    Positions,
    camera_altitudes,
    compact_grid,
    database_poses,
    heldout_grid,
    sparse_positions,
    uniform_grid,
)
from crosslocate.dem.poses import DB_YAWS_DEG, Pose
from crosslocate.dem.regions import get_region
from crosslocate.errors import ConfigError, OutsideCoverageError

GEOD = Geod(ellps="WGS84")
LON0, LAT0 = 8.0, 46.0


class PlaneDEM:
    """Duck-typed DEM over a lon/lat box: z = 1000 + 200 (lon - 8) + 100 (lat - 46) metres; NaN outside."""

    def __init__(self, bounds=(7.5, 45.5, 8.5, 46.5)):
        self.bounds_lonlat = bounds

    @staticmethod
    def truth(lon, lat):
        return 1000.0 + 200.0 * (np.asarray(lon) - 8.0) + 100.0 * (np.asarray(lat) - 46.0)

    def covers(self, lon, lat):
        w, s, e, n = self.bounds_lonlat
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        return (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)

    def sample(self, lon, lat):
        return np.where(self.covers(lon, lat), self.truth(lon, lat), np.nan)

    def elevation(self, lon, lat):
        z = self.sample(lon, lat)
        if np.isnan(z).any():
            raise OutsideCoverageError("outside")
        return z


def square_geojson(path, half_m, lon0=LON0, lat0=LAT0):
    """A square of side 2*half_m in the LAEA frame centred at (lon0, lat0), written as lon/lat GeoJSON."""
    laea = CRS.from_proj4(f"+proj=laea +lat_0={lat0} +lon_0={lon0} +datum=WGS84 +units=m")
    inv = Transformer.from_crs(laea, "EPSG:4326", always_xy=True)
    xs = np.array([-half_m, half_m, half_m, -half_m, -half_m])
    ys = np.array([-half_m, -half_m, half_m, half_m, -half_m])
    lon, lat = inv.transform(xs, ys)
    ring = [[float(a), float(b)] for a, b in zip(lon, lat, strict=True)]
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return path


@pytest.fixture
def square10(tmp_path):
    return get_region(square_geojson(tmp_path / "sq10.geojson", 5000.0))


@pytest.mark.parametrize(("spacing", "expected"), [(500.0, 400), (1000.0, 100), (3000.0, 16), (4000.0, 4)])
def test_square_count_is_exact(square10, spacing, expected):
    # cell-centre rule: nodes at (k + 1/2) * spacing, a 10 km square centred on the origin holds (10 km / s)^2
    positions = uniform_grid(square10, None, GridConfig(spacing_m=spacing))
    assert len(positions) == expected
    assert np.array_equal(positions.position_id, np.arange(expected))
    assert np.isnan(positions.ground_m).all() and np.isnan(positions.alt_m).all()


def test_neighbours_are_one_spacing_apart_geodesically(square10):
    p = uniform_grid(square10, None, GridConfig(spacing_m=500.0))
    lon, lat = p.lon.reshape(20, 20), p.lat.reshape(20, 20)  # rows north -> south, west -> east
    _, _, d_east = GEOD.inv(lon[:, :-1], lat[:, :-1], lon[:, 1:], lat[:, 1:])
    az, _, d_south = GEOD.inv(lon[:-1], lat[:-1], lon[1:], lat[1:])
    assert np.allclose(d_east, 500.0, rtol=2e-3) and np.allclose(d_south, 500.0, rtol=2e-3)
    assert np.allclose(np.abs(az), 180.0, atol=0.5)  # row order is north to south


def test_switzerland_count_matches_paper():
    # the paper's Switzerland uniform database: 1.98M views / 12 yaws = 165,000 positions at 500 m
    positions = uniform_grid("switzerland", None, GRID_PRESETS["paper"])
    assert abs(len(positions) - 165_000) / 165_000 < 0.03
    assert len(positions) * 0.25 == pytest.approx(get_region("switzerland").area_km2, rel=0.005)


def test_alps_count_is_about_a_million():
    positions = uniform_grid("alps", None, GridConfig(spacing_m=500.0))
    assert len(positions) == pytest.approx(get_region("alps").area_km2 / 0.25, rel=0.005)
    assert 900_000 < len(positions) < 1_100_000


def test_dem_clipping_and_camera_height(square10):
    lon_c, lat_c = square10.center_lonlat
    # DEM covering only the east half of the square (west edge on the region's central meridian x = 0)
    dem = PlaneDEM(bounds=(lon_c, lat_c - 1.0, lon_c + 1.0, lat_c + 1.0))
    p = uniform_grid(square10, dem, GridConfig(spacing_m=500.0, camera_offset_m=10.0))
    assert len(p) == 200
    assert np.allclose(p.ground_m, PlaneDEM.truth(p.lon, p.lat))
    assert np.allclose(p.alt_m, PlaneDEM.truth(p.lon, p.lat) + 10.0)
    assert (p.lon > lon_c).all()


def test_grid_outside_dem_is_empty(square10):
    assert len(uniform_grid(square10, PlaneDEM(bounds=(20.0, 10.0, 21.0, 11.0)), GridConfig())) == 0


def _random_positions(rng, n, crs):
    x = rng.uniform(-10_000, 10_000, n)
    y = rng.uniform(-10_000, 10_000, n)
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    z = np.zeros(n)
    return Positions(
        position_id=np.arange(n), lon=lon, lat=lat, x=x, y=y, ground_m=z, alt_m=z + 10, split=z, crs_wkt=crs
    )


def test_compact_grid_equals_brute_force():
    rng = np.random.default_rng(7)
    crs = CRS.from_proj4(f"+proj=laea +lat_0={LAT0} +lon_0={LON0} +datum=WGS84 +units=m").to_wkt()
    uni = _random_positions(rng, 3000, crs)
    qx, qy = rng.uniform(-9000, 9000, 15), rng.uniform(-9000, 9000, 15)
    qlon, qlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(qx, qy)
    radius = 1000.0
    d = np.hypot(uni.x[:, None] - qx[None, :], uni.y[:, None] - qy[None, :]).min(axis=1)
    expected = np.flatnonzero(d <= radius)
    compact = compact_grid(uni, qlon, qlat, radius)
    assert len(compact) == len(expected) > 0
    assert np.allclose(compact.x, uni.x[expected]) and np.allclose(compact.y, uni.y[expected])
    assert np.array_equal(compact.position_id, np.arange(len(expected)))
    assert len(compact_grid(uni, [], [], radius)) == 0


def test_heldout_grid_equals_brute_force():
    """Val/test positions within the radius of a query of their own split (a train query or a test
    query next to a val position does not keep it); None keeps every val/test position."""
    rng = np.random.default_rng(11)
    crs = CRS.from_proj4(f"+proj=laea +lat_0={LAT0} +lon_0={LON0} +datum=WGS84 +units=m").to_wkt()
    uni = _random_positions(rng, 4000, crs)
    uni = dataclasses.replace(uni, split=rng.choice(np.array([0, 1, 2, 255], np.uint8), len(uni)))
    qx, qy = rng.uniform(-9000, 9000, 30), rng.uniform(-9000, 9000, 30)
    qsplit = rng.choice(np.array([0, 1, 2], np.uint8), 30)
    qlon, qlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(qx, qy)
    radius = 1500.0
    d = np.hypot(uni.x[:, None] - qx[None, :], uni.y[:, None] - qy[None, :])
    same = uni.split[:, None] == qsplit[None, :]
    expected = np.flatnonzero(np.isin(uni.split, [1, 2]) & ((d <= radius) & same).any(axis=1))
    held = heldout_grid(uni, qlon, qlat, qsplit, radius)
    assert len(held) == len(expected) > 50
    assert np.allclose(held.x, uni.x[expected]) and np.array_equal(held.split, uni.split[expected])
    assert np.array_equal(held.position_id, np.arange(len(expected)))
    near_any = (d <= radius).any(axis=1) & np.isin(uni.split, [1, 2])
    assert near_any.sum() > len(expected)  # other splits' queries would have kept more
    every = heldout_grid(uni, qlon, qlat, qsplit, None)
    assert np.array_equal(every.x, uni.x[np.isin(uni.split, [1, 2])])
    with pytest.raises(ConfigError, match="radius_m"):
        heldout_grid(uni, qlon, qlat, qsplit, 0.0)


def test_compact_grid_radius_is_geodesic(square10):
    uni = uniform_grid(square10, None, GridConfig(spacing_m=250.0))
    qlon, qlat = np.array([7.99, 8.02]), np.array([46.01, 45.985])
    compact = compact_grid(uni, qlon, qlat, 1000.0)
    _, _, d = GEOD.inv(np.repeat(uni.lon, 2), np.repeat(uni.lat, 2), np.tile(qlon, len(uni)), np.tile(qlat, len(uni)))
    dmin = d.reshape(-1, 2).min(axis=1)
    sure_in = set(np.round(uni.lon[dmin < 998.0], 9))
    sure_out = set(np.round(uni.lon[dmin > 1002.0], 9))
    got = set(np.round(compact.lon, 9))
    assert sure_in <= got and not (got & sure_out)
    # about pi r^2 / s^2 = 50 positions per query
    assert 2 * 40 < len(compact) < 2 * 60


def test_camera_altitudes_given_or_terrain_plus_height():
    dem = PlaneDEM()
    lon, lat = np.array([7.8, 8.1, 8.2]), np.array([45.9, 46.2, 46.3])
    ground, alt = camera_altitudes(lon, lat, dem, 1.7, np.array([3000.0, np.nan, np.nan]))
    assert alt[0] == 3000.0
    assert alt[1:] == pytest.approx(PlaneDEM.truth(lon[1:], lat[1:]) + 1.7)
    assert ground == pytest.approx(PlaneDEM.truth(lon, lat))
    with pytest.raises(OutsideCoverageError, match=r"lon=9\.500000"):
        camera_altitudes([8.0, 9.5], [46.0, 46.0], dem, 1.7)
    with pytest.raises(OutsideCoverageError, match="no DEM"):
        camera_altitudes([8.0], [46.0], None, 1.7)


def test_sparse_positions_are_the_queries(square10):
    poses = [Pose(lon=8.01, lat=46.0, alt_m=1500.0, yaw_deg=10), Pose(lon=7.99, lat=46.02, alt_m=1600.0)]
    p = sparse_positions(poses, PlaneDEM(), GridConfig(), region=square10)
    assert len(p) == 2 and list(p.alt_m) == [1500.0, 1600.0]
    assert p.ground_m == pytest.approx(PlaneDEM.truth([8.01, 7.99], [46.0, 46.02]))
    assert p.crs_wkt == square10.crs_wkt
    p2 = sparse_positions(poses, None, GridConfig())
    assert np.isnan(p2.ground_m).all() and (p2.split == 255).all()


def test_photos_from_one_spot_share_a_sparse_position(square10):
    a = Pose(lon=8.01, lat=46.0, alt_m=1500.0, yaw_deg=10)
    b = Pose(lon=7.99, lat=46.02, alt_m=1600.0)
    poses = [a, dataclasses.replace(a, yaw_deg=200.0, fov_deg=35.0), b, dataclasses.replace(a, pitch_deg=3.0)]
    p = sparse_positions(poses, PlaneDEM(), GridConfig(), region=square10)
    assert list(p.position_id) == [0, 1] and list(p.lon) == [8.01, 7.99] and list(p.alt_m) == [1500.0, 1600.0]


def test_database_poses_are_position_major(square10):
    p = uniform_grid(square10, PlaneDEM(), GridConfig(spacing_m=2500.0))
    poses = database_poses(p, DB_YAWS_DEG, 60.0)
    assert len(poses) == 16 * 12
    assert [q.yaw_deg for q in poses[:12]] == [30.0 * i for i in range(12)]
    assert all(q.lon == p.lon[k // 12] and q.alt_m == p.alt_m[k // 12] for k, q in enumerate(poses))
    assert all(q.pitch_deg == 0 and q.roll_deg == 0 and q.fov_deg == 60.0 for q in poses)
    with pytest.raises(ConfigError, match="DEM"):
        database_poses(uniform_grid(square10, None, GridConfig(spacing_m=2500.0)))


def test_positions_npz_round_trip_and_subset(tmp_path, square10):
    p = uniform_grid(square10, PlaneDEM(), GridConfig(spacing_m=1000.0))
    path = p.to_npz(tmp_path / "sub" / "pos.npz")
    q = Positions.from_npz(path)
    assert q.crs_wkt == p.crs_wkt and len(q) == len(p) == 100
    for name in ("position_id", "lon", "lat", "x", "y", "ground_m", "alt_m", "split"):
        assert np.array_equal(getattr(q, name), getattr(p, name)) and getattr(q, name).dtype == getattr(p, name).dtype
    sub = p.subset(p.lon > square10.center_lonlat[0])
    assert len(sub) == 50 and (sub.position_id >= 0).all() and not np.array_equal(sub.position_id, np.arange(50))
    assert len(p.subset([3, 5])) == 2 and list(p.subset([3, 5]).position_id) == [3, 5]
    assert [f.name for f in tmp_path.joinpath("sub").iterdir()] == ["pos.npz"]  # no temp left behind
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"bad\.npz"):
        Positions.from_npz(tmp_path / "bad.npz")


def test_positions_validation():
    with pytest.raises(ConfigError, match="lat"):
        Positions(position_id=[0, 1], lon=[0, 1], lat=[0], x=[0, 1], y=[0, 1], ground_m=[0, 1], alt_m=[0, 1],
                  split=[0, 0], crs_wkt="x")  # fmt: skip


def test_grid_config_validation_and_json():
    cfg = GridConfig()
    assert (cfg.spacing_m, cfg.camera_offset_m, cfg.compact_radius_m, cfg.query_height_m) == (500, 10, 1000, 1.7)
    assert cfg.views_per_position == 12 and cfg.fov_deg == 60.0
    assert GridConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert hash(GridConfig(yaws_deg=[0, 90])) and GridConfig(yaws_deg=[0, 90]).yaws_deg == (0.0, 90.0)
    assert set(GRID_PRESETS) == {"paper", "cpu", "tiny"} and get_grid_preset("tiny").spacing_m == 2000.0
    for bad in ({"spacing_m": 0}, {"split_fractions": (0.5, 0.5, 0.5)}, {"split_method": "x"}, {"fov_deg": 180}):
        with pytest.raises(ConfigError):
            dataclasses.replace(cfg, **bad)
    with pytest.raises(ConfigError, match="unknown keys"):
        GridConfig.from_dict({"spacing": 5})
    with pytest.raises(ConfigError, match="paper"):
        get_grid_preset("huge")


@pytest.mark.realdem
def test_switzerland_on_real_srtm(srtm_dir):
    from crosslocate.dem.sources import open_dem

    with open_dem(srtm_dir) as dem:  # tiles N45-N47 E006-E010: most of Switzerland
        p = uniform_grid("switzerland", dem, GridConfig(spacing_m=2000.0))
    assert 0.97 * 41_285 / 4 < len(p) <= 41_436 / 4 * 1.01  # only the far-west tip (< 6.0 E) is uncovered
    # Swiss terrain: Lago Maggiore 193 m .. Dufourspitze 4,634 m (SRTM smooths the summit)
    assert p.ground_m.min() > 150.0 and p.ground_m.max() < 4700.0
    assert np.allclose(p.alt_m - p.ground_m, 10.0)
