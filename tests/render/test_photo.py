"""Photo-like renderer: haze, shading, sky, determinism and the perturbed DEM against analytic truths."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from crosslocate.dem.landcover import LandCover
from crosslocate.dem.poses import Pose
from crosslocate.errors import ConfigError, RenderError
from crosslocate.render.photo import (
    CLASS_ALBEDO,
    PHOTO_PRESETS,
    PerturbedDEM,
    PhotoConfig,
    compose_photo,
    square_render_geometry,
)

CLEAN = PHOTO_PRESETS["clean"]


def _rays(fov_deg: float, w: int, h: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Hand-built pinhole rays: u, v (H, W) normalised image coordinates and the focal length."""
    f = 0.5 * w / math.tan(math.radians(fov_deg) / 2.0)
    u = (np.arange(w) + 0.5 - w / 2.0) / f
    v = (np.arange(h) + 0.5 - h / 2.0) / f
    uu, vv = np.meshgrid(u, v)
    return uu, vv, f


def _cfg(**kw) -> PhotoConfig:
    return dataclasses.replace(CLEAN, **kw)


@pytest.mark.parametrize("depth_m", [800.0, 12_000.0])
def test_haze_is_exponential_blend_on_constant_depth(depth_m):
    w = h = 24
    fov = 50.0
    vis = 9_000.0
    cfg = _cfg(visibility_m=vis, sun_azimuth_deg=180.0, sun_elevation_deg=30.0, ambient=0.25, haze_rgb=(0.7, 0.8, 0.9))
    pose = Pose(lon=8.0, lat=46.0, alt_m=1000.0, yaw_deg=0.0, fov_deg=fov)  # looks north, level
    img = compose_photo(np.full((h, w), depth_m, np.float32), np.full((h, w), LandCover.ROCK, np.uint8), pose, cfg,
                        np.random.default_rng(0))  # fmt: skip
    # the wall faces south (towards the camera); the sun stands in the south at 30 deg: cos = cos 30
    shade = 0.25 + 0.75 * math.cos(math.radians(30.0))
    uu, vv, _ = _rays(fov, w, h)
    distance = depth_m * np.sqrt(1.0 + uu**2 + vv**2)  # Euclidean range along each ray
    t = np.exp(-distance / vis)[..., None]
    expected = np.asarray(CLASS_ALBEDO[LandCover.ROCK]) * shade * t + np.asarray((0.7, 0.8, 0.9)) * (1.0 - t)
    assert np.abs(img.astype(float) - expected * 255.0).max() <= 0.51


def _plane_depth(n_enu: np.ndarray, x0_cam: np.ndarray, rot: np.ndarray, uu: np.ndarray, vv: np.ndarray) -> np.ndarray:
    """z-depth of the plane through camera-frame point x0 with ENU normal n: z = (n.x0) / (n.ray)."""
    n_cam = rot.T @ n_enu
    ray_dot = n_cam[0] * uu + n_cam[1] * vv + n_cam[2]
    return float(n_cam @ x0_cam) / ray_dot


def test_shading_follows_cosine_law():
    from crosslocate.render.camera import rotation_cam_to_enu

    w, h, fov = 40, 20, 60.0
    el = math.radians(40.0)
    sun_az = 210.0  # SSW, behind the camera that looks north
    cfg = _cfg(visibility_m=1e15, sun_azimuth_deg=sun_az, sun_elevation_deg=40.0, ambient=0.2)
    rot = rotation_cam_to_enu(0.0, 0.0, 0.0)
    uu, vv, _ = _rays(fov, w, h)
    # walls facing azimuth 180+phi: phi=+30 faces SSW (towards the sun), phi=-30 faces SSE (away by 60 deg)
    faces = {}
    for phi in (30.0, -30.0):
        p = math.radians(phi)
        faces[phi] = np.array([-math.sin(p), -math.cos(p), 0.0])
    depth = np.where(
        uu < 0,
        _plane_depth(faces[30.0], np.array([0.0, 0.0, 100.0]), rot, uu, vv),
        _plane_depth(faces[-30.0], np.array([0.0, 0.0, 100.0]), rot, uu, vv),
    )
    assert (depth > 0).all()
    sem = np.full((h, w), LandCover.GLACIER, np.uint8)
    img = compose_photo(depth, sem, Pose(lon=8.0, lat=46.0, alt_m=0.0, fov_deg=fov), cfg, np.random.default_rng(1))
    s = np.array([math.sin(math.radians(sun_az)), math.cos(math.radians(sun_az)), 0.0]) * math.cos(el)
    s[2] = math.sin(el)
    cos_toward, cos_away = faces[30.0] @ s, faces[-30.0] @ s
    assert cos_toward == pytest.approx(math.cos(el)) and cos_away == pytest.approx(0.5 * math.cos(el))
    albedo = np.asarray(CLASS_ALBEDO[LandCover.GLACIER])
    # interiors: 3 px from the crease (one-sided differences + the 2 px normal smoothing radius)
    left = img[:, : w // 2 - 3].reshape(-1, 3).astype(float)
    right = img[:, w // 2 + 3 :].reshape(-1, 3).astype(float)
    assert np.abs(left - 255 * albedo * (0.2 + 0.8 * cos_toward)).max() <= 0.51
    assert np.abs(right - 255 * albedo * (0.2 + 0.8 * cos_away)).max() <= 0.51
    assert left.mean() > right.mean()


def test_face_turned_from_sun_gets_ambient_only():
    w = h = 16
    # camera looks north at a south-facing wall; the sun is in the north (behind the wall)
    cfg = _cfg(visibility_m=1e15, sun_azimuth_deg=0.0, sun_elevation_deg=20.0, ambient=0.3)
    img = compose_photo(np.full((h, w), 50.0), np.full((h, w), LandCover.GLACIER, np.uint8),
                        Pose(lon=8.0, lat=46.0, alt_m=0.0, fov_deg=40.0), cfg, np.random.default_rng(0))  # fmt: skip
    expected = 255 * np.asarray(CLASS_ALBEDO[LandCover.GLACIER]) * 0.3
    assert np.abs(img.reshape(-1, 3) - expected).max() <= 0.51


@pytest.mark.parametrize("pitch", [0.0, 25.0])
def test_sky_gradient_is_monotone_in_row(pitch):
    w, h, fov = 20, 60, 40.0
    cfg = _cfg(sky_horizon_rgb=(0.8, 0.86, 0.93), sky_zenith_rgb=(0.2, 0.4, 0.8), sky_exponent=0.5)
    pose = Pose(lon=8.0, lat=46.0, alt_m=0.0, pitch_deg=pitch, fov_deg=fov)
    img = compose_photo(np.full((h, w), -1.0), np.zeros((h, w), np.uint8), pose, cfg, np.random.default_rng(0))
    col = img[:, w // 2].astype(int)
    assert (np.diff(col, axis=0) >= 0).all()  # every channel is darker towards the zenith (row 0)
    assert (col[0] != col[-1]).any()
    # hand computation of the middle column: elevation of the ray through row v
    uu, vv, _ = _rays(fov, w, h)
    u, v = uu[:, w // 2], vv[:, w // 2]
    # ENU up-component of the ray (u, v, 1) for yaw 0, pitch p: sin p - v cos p; divided by its length
    sin_el = (math.sin(math.radians(pitch)) - v * math.cos(math.radians(pitch))) / np.sqrt(1 + u**2 + v**2)
    t = np.clip(sin_el, 0, 1) ** 0.5
    expected = np.array([0.8, 0.86, 0.93]) + (np.array([0.2, 0.4, 0.8]) - np.array([0.8, 0.86, 0.93])) * t[:, None]
    assert np.abs(col - 255 * expected).max() <= 0.51
    if pitch == 0.0:
        assert (col[h // 2 :] == np.rint(255 * np.array([0.8, 0.86, 0.93]))).all()  # below the horizon


def _scene(w: int = 48, h: int = 36):
    rows = np.arange(h)[:, None] >= h // 2
    depth = np.where(rows, 1500.0 / np.maximum(1, 1 + np.arange(h)[:, None] - h // 2), -1.0) * np.ones((1, w))
    sem = np.full((h, w), LandCover.FOREST, np.uint8)
    sem[:, w // 2 :] = LandCover.WATER
    return depth, sem


def test_same_seed_same_bytes_and_different_seeds_differ():
    depth, sem = _scene()
    pose = Pose(lon=8.0, lat=46.0, alt_m=0.0, yaw_deg=30.0, pitch_deg=-2.0, roll_deg=3.0, fov_deg=55.0)
    cfg = PHOTO_PRESETS["paper"]
    a = compose_photo(depth, sem, pose, cfg, np.random.default_rng(7))
    b = compose_photo(depth, sem, pose, cfg, np.random.default_rng(7))
    c = compose_photo(depth, sem, pose, cfg, np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == (36, 48, 3)
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_compose_rejects_mismatched_views():
    with pytest.raises(RenderError, match="shape"):
        compose_photo(np.ones((4, 5)), np.ones((5, 4), np.uint8), Pose(lon=0, lat=0, alt_m=0), CLEAN,
                      np.random.default_rng(0))  # fmt: skip


def test_square_render_geometry_by_hand():
    assert square_render_geometry(60.0, 640, 480) == (640, pytest.approx(60.0), 80, 0)
    size, fov, r0, c0 = square_render_geometry(60.0, 300, 400)
    f = 150.0 / math.tan(math.radians(30.0))
    assert (size, r0, c0) == (400, 0, 50) and fov == pytest.approx(math.degrees(2 * math.atan(200.0 / f)))


def test_config_validation_and_round_trip():
    cfg = PHOTO_PRESETS["paper"]
    assert PhotoConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="visibility_m"):
        PhotoConfig(visibility_m=0.0)
    with pytest.raises(ConfigError, match="haze_rgb"):
        PhotoConfig(haze_rgb=(1.2, 0.0, 0.0))
    with pytest.raises(ConfigError, match="unknown key"):
        PhotoConfig.from_dict({"fog": 1})


# --------------------------------------------------------------------------- perturbed DEM


@pytest.fixture(scope="module")
def plane_dem():
    from crosslocate.dem.sources.synthetic import analytic_dem

    return analytic_dem("plane", size_px=64, spacing_m=30.0, height_m=1500.0, slope_east=0.1)


def _points(dem, n: int = 4000, pad: float = 0.002):
    w, s, e, nn = dem.bounds_lonlat
    rng = np.random.default_rng(3)
    return rng.uniform(w - pad, e + pad, n), rng.uniform(s - pad, nn + pad, n)


def test_perturbation_is_bounded_smooth_and_keeps_coverage(plane_dem):
    amp = 3.0
    pdem = PerturbedDEM(plane_dem, amp, (100.0, 300.0), seed=5)
    lon, lat = _points(plane_dem)
    base = plane_dem.sample(lon, lat)
    pert = pdem.sample(lon, lat)
    assert (np.isnan(base) == np.isnan(pert)).all() and np.isnan(base).any() and np.isfinite(base).any()
    diff = (pert - base)[np.isfinite(base)]
    assert np.abs(diff).max() <= amp + 1e-9
    assert np.abs(diff).max() > 0.3 * amp and diff.std() > 0.1  # it does change the terrain
    assert (pdem.covers(lon, lat) == plane_dem.covers(lon, lat)).all()
    # smooth: a sum of waves no shorter than 100 m changes by at most amp * 2 pi * step / 100 m
    from pyproj import Geod

    ok = np.isfinite(base)
    azimuth = np.random.default_rng(4).uniform(0.0, 360.0, ok.sum())
    lon2, lat2, _ = Geod(ellps="WGS84").fwd(lon[ok], lat[ok], azimuth, np.full(ok.sum(), 10.0))
    step = pdem.offset_lonlat(lon2, lat2) - pdem.offset_lonlat(lon[ok], lat[ok])
    assert np.abs(step).max() <= amp * 2 * math.pi * 10.0 / 100.0 * 1.01


def test_perturbed_dem_contract(plane_dem):
    a = PerturbedDEM(plane_dem, 2.0, seed=1)
    b = PerturbedDEM(plane_dem, 2.0, seed=2)
    assert len({a.checksum, b.checksum, plane_dem.checksum}) == 3
    assert a.checksum == PerturbedDEM(plane_dem, 2.0, seed=1).checksum
    assert a.bounds_lonlat == plane_dem.bounds_lonlat and a.crs_wkt == plane_dem.crs_wkt
    lon, lat = _points(plane_dem, 50, pad=-0.002)
    assert np.allclose(a.elevation(lon, lat), a.sample(lon, lat))
    x, y = plane_dem.to_native(lon, lat)
    assert np.allclose(a.sample_native(x, y), a.sample(lon, lat), atol=1e-6)
    assert (a.landcover(lon, lat) == plane_dem.landcover(lon, lat)).all()
    assert a.info()["perturbation"]["amplitude_m"] == 2.0
    from crosslocate.errors import OutsideCoverageError

    with pytest.raises(OutsideCoverageError):
        a.elevation([0.0], [0.0])


@pytest.mark.parametrize("size", [(48, 36), (36, 48)])
def test_render_photo_through_view_renderer_puts_horizon_mid_image(size):
    """A level camera 1.7 m above a flat plane: sky above the middle row, meadow below (any W x H)."""
    from crosslocate.dem.sources.synthetic import analytic_dem
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.photo import render_photo

    w, h = size
    flat = analytic_dem("plane", size_px=64, spacing_m=30.0, height_m=1000.0)
    lon, lat = (float(v) for v in np.mean(np.reshape(flat.bounds_lonlat, (2, 2)), axis=0))
    pose = Pose(lon=lon, lat=lat, alt_m=1001.7, yaw_deg=40.0, fov_deg=50.0)
    img = render_photo(flat, pose, w, h, np.random.default_rng(0), CLEAN,
                       render_config=RenderConfig(size_px=8, range_m=3000.0, near_m=1.0))  # fmt: skip
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    rgb = img.astype(int)
    sky, ground = rgb[: h // 2 - 1], rgb[h // 2 + 1 :]
    assert (sky[..., 2] > sky[..., 1]).all() and (sky[..., 2] > sky[..., 0]).all()  # blue sky
    assert (ground[..., 1] > ground[..., 2]).all() and (ground[..., 1] > ground[..., 0]).all()  # green meadow
    with pytest.raises(RenderError, match="below the terrain"):
        render_photo(flat, dataclasses.replace(pose, alt_m=999.0), w, h, np.random.default_rng(0), CLEAN)
