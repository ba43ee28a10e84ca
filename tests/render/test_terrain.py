"""LocalTerrain: frame conventions, curvature + refraction of node heights, pyramid reduction, cameras."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.dem import geodesy
from crosslocate.dem.landcover import LandCover
from crosslocate.dem.poses import Pose
from crosslocate.dem.sources.synthetic import analytic_dem
from crosslocate.errors import OutsideCoverageError, RenderError
from crosslocate.render.config import RenderConfig
from crosslocate.render.terrain import NODATA_Z_M, build_terrain, frame_camera, level_distances_m

LON0, LAT0 = 9.0, 46.0
R_EARTH = float(geodesy.local_radius_m(LAT0))


def node_xy(level):
    ny, nx = level.shape
    x = level.x0 + np.arange(nx) * level.spacing_m
    y = level.y0 - np.arange(ny) * level.spacing_m
    return np.meshgrid(x, y)


def test_level_distances_double_until_range():
    assert level_distances_m(100.0, 60_000.0, 64) == [6400.0, 12800.0, 25600.0, 51200.0, 60000.0]
    assert level_distances_m(500.0, 60_000.0, 256) == [60000.0]


def test_plane_nodes_carry_curvature_and_refraction():
    """A level plane at 800 m: node z = 800 - d^2/(2R) (1 - k) (sphere of the local radius)."""
    dem = analytic_dem("plane", size_px=100, spacing_m=1000.0, center_lonlat=(LON0, LAT0), height_m=800.0)
    cfg = RenderConfig(range_m=45_000.0, refraction_k=0.13)
    t = build_terrain(dem, LON0, LAT0, cfg)
    lv = t.levels[0]
    assert lv.spacing_m == pytest.approx(dem.resolution_m)
    xx, yy = node_xy(lv)
    d = np.hypot(xx, yy)
    inside = (d < 40_000.0) & (lv.z > NODATA_Z_M)
    expected = 800.0 - d**2 / (2.0 * R_EARTH) * (1.0 - 0.13)  # ~ -105 m of drop at 40 km
    # the ellipsoid's normal sections differ from the Gaussian radius by < 0.4 %: < 0.5 m at 40 km
    assert np.abs(lv.z[inside] - expected[inside]).max() < 0.6
    assert abs(float(lv.z[inside].min()) - 800.0) > 80.0
    # grid: a level-0 node on the origin, row 0 north
    assert lv.x0 / lv.spacing_m % 1.0 == pytest.approx(0.0) and lv.y0 / lv.spacing_m % 1.0 == pytest.approx(0.0)
    assert lv.y0 > 0 > lv.x0
    assert t.refraction_k == 0.13 and t.h0 == 0.0 and t.radius_m == pytest.approx(R_EARTH)


def test_refraction_is_a_lift_of_k_d2_over_2r():
    dem = analytic_dem("plane", size_px=60, spacing_m=1000.0, center_lonlat=(LON0, LAT0), height_m=0.0)
    z = {k: build_terrain(dem, LON0, LAT0, RenderConfig(range_m=25_000.0, refraction_k=k)).levels[0] for k in (0, 0.5)}
    xx, yy = node_xy(z[0])
    d2 = xx**2 + yy**2
    ok = z[0].z > NODATA_Z_M
    assert np.allclose((z[0.5].z - z[0].z)[ok], 0.5 * d2[ok] / (2.0 * R_EARTH), atol=1e-3)


def test_pyramid_levels_are_2x2_means_and_cover_the_range():
    """A tilted plane (linear, so 2x2 means equal the height at the coarse node) with small LOD radius."""
    dem = analytic_dem(
        "plane", size_px=200, spacing_m=100.0, center_lonlat=(LON0, LAT0), height_m=1000.0, slope_east=0.1
    )
    cfg = RenderConfig(range_m=9_000.0, refraction_k=0.0)
    t = build_terrain(dem, LON0, LAT0, cfg, lod_cells=16)
    assert [lv.spacing_m for lv in t.levels] == pytest.approx([100.0 * 2**i for i in range(len(t.levels))])
    assert t.levels[-1].max_distance_m == 9_000.0 and len(t.levels) == 4  # 1.6, 3.2, 6.4, 9 km
    for lv in t.levels:
        xx, yy = node_xy(lv)
        # away from the DEM edge (+-10 km), where 2x2 blocks are partly outside the data
        ok = (np.abs(xx) < 9_900.0 - lv.spacing_m) & (np.abs(yy) < 9_900.0 - lv.spacing_m)
        curv = (xx**2 + yy**2) / (2.0 * R_EARTH)
        # UTM easting = 0.9996 x (aeqd x = ground distance) on the central meridian
        expected = 1000.0 + 0.1 * 0.9996 * xx - curv
        assert np.abs(lv.z[ok] - expected[ok]).max() < 0.5
        # each level reaches its distance (plus margin) unless the DEM ends first
        xmin, _ymin, xmax, _ymax = lv.extent()
        reach = min(lv.max_distance_m, 9_900.0)
        assert xmax >= reach - lv.spacing_m and -xmin >= reach - lv.spacing_m
    # level 1 nodes are the centres of 2x2 blocks of level-0 nodes, with their mean height
    l0, l1 = t.levels[0], t.levels[1]
    r1, c1 = int(l1.y0 // l1.spacing_m) + 3, int(-l1.x0 // l1.spacing_m) - 2  # near the origin
    x1, y1 = l1.x0 + c1 * l1.spacing_m, l1.y0 - r1 * l1.spacing_m
    c0 = round((x1 - 0.5 * l0.spacing_m - l0.x0) / l0.spacing_m)
    r0 = round((l0.y0 - (y1 + 0.5 * l0.spacing_m)) / l0.spacing_m)
    assert l0.x0 + (c0 + 0.5) * l0.spacing_m == pytest.approx(x1)
    assert l0.y0 - (r0 + 0.5) * l0.spacing_m == pytest.approx(y1)
    assert l1.z[r1, c1] == pytest.approx(float(l0.z[r0 : r0 + 2, c0 : c0 + 2].mean()), abs=0.05)


def test_cone_apex_and_classes():
    dem = analytic_dem("cone", size_px=101, spacing_m=100.0, center_lonlat=(LON0, LAT0), apex_m=3000.0, radius_m=3000.0)
    t = build_terrain(dem, LON0, LAT0, RenderConfig(range_m=6_000.0))
    lv = t.levels[0]
    # a level-0 node on the origin = the apex (DEM cell centre, odd size): the full 3000 m
    assert float(lv.z.max()) == pytest.approx(3000.0, abs=0.5)
    valid = {int(c) for c in LandCover if c != LandCover.SKY}
    assert set(np.unique(lv.cls).tolist()) <= valid


def test_outside_coverage_names_the_coordinate():
    dem = analytic_dem("plane", size_px=20, spacing_m=100.0, center_lonlat=(LON0, LAT0))
    with pytest.raises(OutsideCoverageError, match=r"lon=10\.000000, lat=46\.000000"):
        build_terrain(dem, 10.0, 46.0, RenderConfig())


def test_frame_camera_position_and_orientation():
    dem = analytic_dem("plane", size_px=60, spacing_m=500.0, center_lonlat=(LON0, LAT0), height_m=500.0)
    t = build_terrain(dem, LON0, LAT0, RenderConfig(range_m=10_000.0))
    cam = frame_camera(t, Pose(lon=LON0, lat=LAT0, alt_m=501.7, yaw_deg=90.0), 64)
    assert np.allclose(cam.position, [0.0, 0.0, 501.7], atol=1e-6)
    assert np.allclose(cam.rotation[:, 2], [1.0, 0.0, 0.0], atol=1e-9)  # forward = east
    assert np.allclose(cam.rotation[:, 0], [0.0, -1.0, 0.0], atol=1e-9)  # right = south
    assert cam.width_px == cam.height_px == 64 and cam.fov_deg == 60.0
    # 5 km north: aeqd y = geodesic distance, z drops by d^2/(2R)(1-k); orientation rotated to the origin
    lat_n = LAT0 + 5000.0 / 111_150.0
    d = float(geodesy.geodesic_distance_m(LON0, LAT0, LON0, lat_n))
    cam2 = frame_camera(t, Pose(lon=LON0, lat=lat_n, alt_m=600.0, yaw_deg=0.0), 64)
    assert cam2.position[0] == pytest.approx(0.0, abs=1e-6) and cam2.position[1] == pytest.approx(d, abs=1e-3)
    assert cam2.position[2] == pytest.approx(600.0 - d * d / (2.0 * R_EARTH) * 0.87, abs=0.01)
    tilt = d / R_EARTH  # the camera's local horizon is tilted by d/R towards north in the origin frame
    assert cam2.rotation[2, 2] == pytest.approx(-tilt, rel=0.01)
    with pytest.raises(RenderError):
        frame_camera(t, Pose(lon=LON0, lat=LAT0, alt_m=600.0), 0)


def test_grid_transform_matches_pyproj_per_point():
    from crosslocate.render.terrain import grid_transform

    aeqd = geodesy.aeqd_crs_wkt(LON0, LAT0)
    xs = np.arange(-60_000.0, 60_001.0, 300.0)
    ys = np.arange(60_000.0, -60_001.0, -700.0)  # rows north first
    lon, lat = grid_transform(xs, ys, aeqd, "EPSG:4326")
    gx, gy = np.meshgrid(xs, ys)
    lon_ref, lat_ref = geodesy.transform_xy(gx, gy, aeqd, "EPSG:4326")
    assert np.abs(lon - lon_ref).max() * 77_000 < 0.05 and np.abs(lat - lat_ref).max() * 111_000 < 0.05  # < 5 cm
