"""render_views / ViewRenderer: grouping by position, terrain cache, order, silhouettes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.datasets.derived import silhouette_from_depth
from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
from crosslocate.dem import geodesy
from crosslocate.dem.poses import Pose
from crosslocate.dem.sources.synthetic import analytic_dem
from crosslocate.errors import ConfigError, OutsideCoverageError, RenderError
from crosslocate.render.config import RenderConfig
from crosslocate.render.views import ViewRenderer, group_by_position, render_views

LON0, LAT0 = 9.0, 46.0


@pytest.fixture(scope="module")
def cone_dem():
    return analytic_dem(
        "cone", size_px=101, spacing_m=100.0, center_lonlat=(LON0, LAT0), apex_m=2000.0, radius_m=3000.0
    )


def west_of_apex(m: float) -> tuple[float, float]:
    cx, cy = geodesy.transform_xy(LON0, LAT0, "EPSG:4326", "EPSG:32632")
    lon, lat = geodesy.transform_xy(float(cx) - m, float(cy), "EPSG:32632", "EPSG:4326")
    return float(lon), float(lat)


def test_groups_by_position_in_first_seen_order():
    a = Pose(lon=9.0, lat=46.0, alt_m=10.0)
    b = Pose(lon=9.01, lat=46.0, alt_m=10.0)
    poses = [a, b, Pose(lon=9.0, lat=46.0, alt_m=10.0, yaw_deg=30.0), Pose(lon=9.0, lat=46.0, alt_m=20.0)]
    assert list(group_by_position(poses).values()) == [[0, 2], [1], [3]]


def test_render_views_order_terrain_cache_and_silhouette(cone_dem):
    cfg = RenderConfig(size_px=24, range_m=8_000.0)
    lon1, lat1 = west_of_apex(4000.0)
    lon2, lat2 = west_of_apex(2000.0)
    poses = [
        Pose(lon=lon1, lat=lat1, alt_m=600.0, yaw_deg=90.0),
        Pose(lon=lon2, lat=lat2, alt_m=1200.0, yaw_deg=90.0),
        Pose(lon=lon1, lat=lat1, alt_m=600.0, yaw_deg=270.0),
    ]
    with ViewRenderer(cone_dem, cfg) as r:
        batch = r.render(poses)
        assert len(r.terrain_build_s) == 2  # one terrain per position
        again = r.render(poses[2:])  # same origin as the last group? no: last was position 1 -> rebuild
        assert len(r.terrain_build_s) == 3
        r.render(poses[2:])
        assert len(r.terrain_build_s) == 3  # cached
    assert set(batch.arrays) == set(cfg.modalities) and len(batch) == 3
    depth = batch.arrays[Modality.DEPTH]
    assert np.array_equal(depth[2], again.arrays[Modality.DEPTH][0])
    # looking east at the cone: terrain in view; looking west the DEM ends 1 km away, where the ground
    # lies atan(600 / 1000) = 31 deg below the horizon, outside the +-30 deg vertical FOV: all sky
    assert (depth[0] > 0).mean() > 0.3 and np.all(depth[2] == SKY_DEPTH_M)
    assert np.array_equal(batch.arrays[Modality.SILHOUETTE], silhouette_from_depth(depth, cfg.silhouette_rel_jump))
    assert batch.render_time_s.shape == (3,) and np.all(batch.render_time_s > 0)
    one = render_views(cone_dem, [poses[1]], cfg)
    assert np.array_equal(one.arrays[Modality.DEPTH][0], depth[1])


def test_modality_subset_and_errors(cone_dem):
    lon, lat = west_of_apex(3000.0)
    cfg = RenderConfig(size_px=16, range_m=5_000.0, modalities=("semantic",))
    b = render_views(cone_dem, [Pose(lon=lon, lat=lat, alt_m=600.0, yaw_deg=90.0)], cfg)
    assert set(b.arrays) == {Modality.SEMANTIC} and b.arrays[Modality.SEMANTIC].dtype == np.uint8
    with ViewRenderer(cone_dem, cfg) as r:
        with pytest.raises(ConfigError, match="unknown modality 'colour'; choose one of depth, silhouette, semantic"):
            r.render([Pose(lon=lon, lat=lat, alt_m=600.0)], modalities=["depth", "colour"])
        with pytest.raises(OutsideCoverageError, match=r"lon=10\.500000, lat=46\.000000"):
            r.render([Pose(lon=10.5, lat=46.0, alt_m=600.0)])
    with pytest.raises(RenderError, match="closed"):
        r.render([Pose(lon=lon, lat=lat, alt_m=600.0)])
    with pytest.raises(ConfigError):
        Pose(lon=lon, lat=lat, alt_m=600.0, fov_deg=180.0)
    for size in (0, 4097, 2.5):
        with pytest.raises(ConfigError, match=r"the view side must be within 1\.\.4096 pixels"):
            RenderConfig(size_px=size)
    assert RenderConfig(size_px=4096).size_px == 4096
    sky = render_views(cone_dem, [Pose(lon=lon, lat=lat, alt_m=600.0, pitch_deg=45.0, fov_deg=10.0)], cfg)
    assert sky.arrays[Modality.SEMANTIC].max() == 0  # looking up: all sky
    depth_cfg = RenderConfig(size_px=16, range_m=5_000.0, modalities=("depth",))
    d = render_views(cone_dem, [Pose(lon=lon, lat=lat, alt_m=600.0, pitch_deg=45.0, fov_deg=10.0)], depth_cfg)
    assert np.all(d.arrays[Modality.DEPTH] == SKY_DEPTH_M)
