"""Conformance suite for render backends against analytic terrains (independent geometric truths).

Every test runs for each backend: ``cpu`` always, ``pyrender`` only with an EGL context (skipped with
the reason otherwise). The scene tests also run the ``cpu`` backend on a region's terrain atlas
(``cpu-atlas``: the exact near patch, then the atlas; ``cpu-atlas0``: the atlas alone), where earth
curvature and refraction are applied per camera instead of being baked into a per-position pyramid. Scenes are analytic DEMs (plane, cone, wall) centred at 9 E, 46 N (UTM 32N);
the camera sits at the DEM centre unless stated. Expected values come from closed-form geometry:
horizon dip ``sqrt(2h / R_eff)`` with ``R_eff = R / (1 - k)``, ray/plane intersections, and the
projection ``row = cy - f tan(elevation)``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from crosslocate.datasets.derived import horizon_line, silhouette_from_depth
from crosslocate.datasets.schema import SKY_CLASS, SKY_DEPTH_M, Modality
from crosslocate.dem import geodesy
from crosslocate.dem.poses import Pose
from crosslocate.dem.sources.synthetic import analytic_dem
from crosslocate.errors import BackendUnavailableError, RenderError
from crosslocate.render.backends import open_backend
from crosslocate.render.camera import pixel_rays_cam
from crosslocate.render.config import RenderConfig
from crosslocate.render.terrain import build_terrain, frame_camera

LON0, LAT0 = 9.0, 46.0
R_EARTH = float(geodesy.local_radius_m(LAT0))
ALL = (Modality.DEPTH, Modality.SILHOUETTE, Modality.SEMANTIC)


@pytest.fixture(params=["cpu", pytest.param("pyrender", marks=pytest.mark.egl)])
def backend_name(request):
    """Backend name; pyrender skips cleanly when its module or an EGL context is missing."""
    return _backend_or_skip(request.param)


@pytest.fixture(params=["cpu", "cpu-atlas", "cpu-atlas0", pytest.param("pyrender", marks=pytest.mark.egl)])
def scene_backend(request):
    """Backend name, or ``cpu-atlas`` / ``cpu-atlas0`` for the cpu backend on a terrain atlas."""
    return _backend_or_skip(request.param)


def _backend_or_skip(name: str) -> str:
    if name == "pyrender":
        pytest.importorskip("crosslocate.render.backends.pyrender_egl", reason="pyrender backend not built")
        try:
            open_backend(RenderConfig(backend="pyrender", size_px=8)).close()
        except (BackendUnavailableError, ImportError) as exc:
            pytest.skip(f"pyrender backend unavailable here: {exc}")
    return name


def focal(fov_deg: float, size_px: int) -> float:
    return 0.5 * size_px / math.tan(math.radians(fov_deg) / 2.0)


def render(backend_name, dem, poses, cfg, mods=ALL):
    """Render poses (all at the first pose's position) with a fresh terrain and backend.

    ``cpu-atlas`` / ``cpu-atlas0``: a terrain atlas planned around the position (with / without the
    near patch), rendered through :class:`~crosslocate.render.views.ViewRenderer` like a database build.
    """
    if backend_name.startswith("cpu-atlas"):
        from crosslocate.render.atlas import build_atlas, plan_atlas
        from crosslocate.render.views import ViewRenderer

        cfg = replace(cfg, backend="cpu", modalities=mods, near_patch_cells=0 if backend_name == "cpu-atlas0" else 64)
        spec = plan_atlas([poses[0].lon], [poses[0].lat], dem.resolution_m, cfg.range_m, cfg.lod_cells)[0]
        atlas = build_atlas(dem, spec, cfg.refraction_k)
        with ViewRenderer(dem, cfg, atlases=[atlas]) as renderer:
            assert renderer.atlases  # the cpu backend renders from the atlas
            return renderer.render(poses)
    cfg = replace(cfg, backend=backend_name)
    terrain = build_terrain(dem, poses[0].lon, poses[0].lat, cfg)
    cams = [frame_camera(terrain, p, cfg.size_px) for p in poses]
    with open_backend(cfg) as be:
        be.prepare(terrain)
        return be.render(cams, mods)


def peak_column(hz: np.ndarray) -> int:
    """Middle column of the highest skyline pixels (smallest horizon row)."""
    cols = np.nonzero(hz == np.nanmin(hz))[0]
    return round(float(cols.mean()))


def offset_lonlat(east_m: float, north_m: float) -> tuple[float, float]:
    """lon/lat of a point east/north (UTM metres) of the DEM centre."""
    cx, cy = geodesy.transform_xy(LON0, LAT0, "EPSG:4326", "EPSG:32632")
    lon, lat = geodesy.transform_xy(float(cx) + east_m, float(cy) + north_m, "EPSG:32632", "EPSG:4326")
    return float(lon), float(lat)


@pytest.fixture(scope="module")
def plane_dem():
    """A level plane at 500 m, 120 km x 120 km, 500 m cells."""
    return analytic_dem("plane", size_px=240, spacing_m=500.0, center_lonlat=(LON0, LAT0), height_m=500.0)


# ------------------------------------------------------------------------------------------ plane


def _dip(h_m: float, k: float) -> float:
    return math.sqrt(2.0 * h_m / (R_EARTH / (1.0 - k)))


def _plane_t(h_m: float, tan_a: float, k: float) -> float:
    """Horizontal distance where a ray descending with slope tan_a meets the curved plane h below."""
    r_eff = R_EARTH / (1.0 - k)
    return r_eff * (tan_a - math.sqrt(tan_a * tan_a - 2.0 * h_m / r_eff))


def test_plane_horizon_at_curvature_dip_and_depth_per_row(scene_backend, plane_dem):
    cfg = RenderConfig(size_px=200, fov_deg=10.0, range_m=60_000.0)
    pose = Pose(lon=LON0, lat=LAT0, alt_m=600.0, yaw_deg=90.0, fov_deg=10.0)
    b = render(scene_backend, plane_dem, [pose], cfg)
    depth, sem = b.arrays[Modality.DEPTH][0], b.arrays[Modality.SEMANTIC][0]
    f, cy = focal(10.0, 200), 100.0
    expected_row = cy + f * math.tan(_dip(100.0, 0.13))  # ~106 (horizon 38 km away)
    hz = horizon_line(depth)
    assert np.all(np.abs(hz - expected_row) < 1.0), (hz.min(), hz.max(), expected_row)
    assert np.all(depth[:100] == SKY_DEPTH_M) and np.all(sem[:100] == SKY_CLASS)
    for row in (112, 130, 160, 199):
        tan_a = (row + 0.5 - cy) / f
        t = _plane_t(100.0, tan_a, 0.13)
        near_centre = depth[row, 99:101]  # columns at +-0.5 px: z-depth == horizontal distance * 0.99999
        assert np.allclose(near_centre, t, rtol=0.01), (row, near_centre, t)
    # bottom rows: flat-earth geometry h / tan(angle), z-depth constant across columns
    tan_a = (199.5 - cy) / f
    assert np.allclose(depth[199], 100.0 / tan_a, rtol=0.01)
    assert np.all(sem[110:] != SKY_CLASS)


@pytest.mark.parametrize("pitch_deg", [5.0, -10.0])
def test_pitch_moves_horizon_by_f_tan_pitch(scene_backend, plane_dem, pitch_deg):
    cfg = RenderConfig(size_px=200, fov_deg=30.0, range_m=60_000.0)
    pose = Pose(lon=LON0, lat=LAT0, alt_m=600.0, yaw_deg=200.0, pitch_deg=pitch_deg, fov_deg=30.0)
    depth = render(scene_backend, plane_dem, [pose], cfg, (Modality.DEPTH,)).arrays[Modality.DEPTH][0]
    f = focal(30.0, 200)
    dip = _dip(100.0, 0.13)
    hz = horizon_line(depth)
    # centre column (x = +-0.5 px): the horizon ray at elevation -dip appears at cy + f tan(pitch + dip)
    expected = 100.0 + f * math.tan(math.radians(pitch_deg) + dip)
    assert abs(float(hz[99]) - expected) < 1.0 and abs(float(hz[100]) - expected) < 1.0, (hz[98:102], expected)


def test_roll_tilts_horizon(scene_backend, plane_dem):
    roll = 5.0
    cfg = RenderConfig(size_px=200, fov_deg=30.0, range_m=60_000.0)
    pose = Pose(lon=LON0, lat=LAT0, alt_m=600.0, yaw_deg=0.0, roll_deg=roll, fov_deg=30.0)
    depth = render(scene_backend, plane_dem, [pose], cfg, (Modality.DEPTH,)).arrays[Modality.DEPTH][0]
    hz = horizon_line(depth)
    u = np.arange(200) + 0.5
    slope, intercept = np.polyfit(u, hz, 1)
    # positive roll (clockwise seen from behind) rotates the content counter-clockwise: the horizon rises
    # to the right with slope -tan(roll); at the centre it sits f tan(dip) / cos(roll) below cy
    assert slope == pytest.approx(-math.tan(math.radians(roll)), abs=0.01)
    f = focal(30.0, 200)
    centre = slope * 100.0 + intercept
    assert centre == pytest.approx(100.0 + f * math.tan(_dip(100.0, 0.13)) / math.cos(math.radians(roll)), abs=1.0)


# ------------------------------------------------------------------------------------------ cone


@pytest.fixture(scope="module")
def cone_dem():
    """A cone (apex 2000 m, radius 5 km) on a plain at 0 m, 30 km x 30 km, 100 m cells (odd size: apex on a cell)."""
    return analytic_dem(
        "cone", size_px=301, spacing_m=100.0, center_lonlat=(LON0, LAT0), apex_m=2000.0, radius_m=5000.0
    )


def test_cone_at_known_distance(scene_backend, cone_dem):
    lon, lat = offset_lonlat(-10_000.0, 0.0)  # 10 km west of the apex, looking east
    cfg = RenderConfig(size_px=200, fov_deg=60.0, range_m=20_000.0)
    pose = Pose(lon=lon, lat=lat, alt_m=500.0, yaw_deg=90.0)
    b = render(scene_backend, cone_dem, [pose], cfg)
    depth, sil = b.arrays[Modality.DEPTH][0], b.arrays[Modality.SILHOUETTE][0]
    f, cy = focal(60.0, 200), 100.0
    d = 10_000.0 * 0.9996  # UTM grid metres -> ground metres near the central meridian (scale 0.9996)
    drop = d * d / (2.0 * R_EARTH) * (1.0 - 0.13)
    expected = cy - f * (2000.0 - drop - 500.0) / d  # ~74.1: top of the apex
    hz = horizon_line(depth)
    top = peak_column(hz)
    assert abs(top + 0.5 - 100.0) <= 1.0, top  # apex straight ahead
    assert abs(float(hz[top]) - expected) < 1.0, (hz[top], expected)
    r = int(hz[top])  # first terrain row of the apex column
    assert sil[r, top] == 1 and sil[r - 1, top] == 0
    assert depth[r, top] == pytest.approx(d, rel=0.05)
    # below the apex the near face: z-depth of the cone surface along the centre column
    row = r + 20
    tan_e = (cy - (row + 0.5)) / f  # elevation of the ray (positive: above the camera's horizon)
    t = (0.4 * d - 1500.0) / (0.4 - tan_e)  # near face z = 2000 (1 - (d - t)/5000), camera at 500 m
    assert depth[row, top] == pytest.approx(t, rel=0.01)
    assert np.all(sil[: r - 1] == 0)


def test_yaw_convention_peak_due_east_at_centre_column(scene_backend, cone_dem):
    lon, lat = offset_lonlat(-5000.0, 0.0)
    cfg = RenderConfig(size_px=100, fov_deg=60.0, range_m=20_000.0)
    poses = [Pose(lon=lon, lat=lat, alt_m=1000.0, yaw_deg=y) for y in (90.0, 70.0, 0.0)]
    depth = render(scene_backend, cone_dem, poses, cfg, (Modality.DEPTH,)).arrays[Modality.DEPTH]
    hz = horizon_line(depth)
    assert abs(peak_column(hz[0]) + 0.5 - 50.0) <= 1.0
    # yaw 70: east is 20 deg to the right of the axis -> column cx + f tan(20 deg)
    f = focal(60.0, 100)
    assert abs(peak_column(hz[1]) + 0.5 - (50.0 + f * math.tan(math.radians(20.0)))) <= 1.0
    # yaw 0 (north) does not see the peak: the skyline is the flat rim, lower than the apex
    assert np.nanmin(hz[2]) > np.nanmin(hz[0]) + 10


# ------------------------------------------------------------------------------------------ wall


def test_wall_depth_constant_across_columns(scene_backend):
    dem = analytic_dem(
        "wall", size_px=121, spacing_m=50.0, center_lonlat=(LON0, LAT0), distance_m=2000.0, height_m=1000.0
    )
    cfg = RenderConfig(size_px=100, fov_deg=60.0, range_m=2_900.0)
    pose = Pose(lon=LON0, lat=LAT0, alt_m=100.0, yaw_deg=0.0)
    depth = render(scene_backend, dem, [pose], cfg, (Modality.DEPTH,)).arrays[Modality.DEPTH][0]
    f, cy = focal(60.0, 100), 50.0
    top = cy - f * (1000.0 - 100.0) / 2000.0  # wall top (first plateau cell 2000 m north)
    rows = np.arange(math.ceil(top) + 2, int(cy - f * (0 - 100.0) / 2000.0) - 2)
    wall = depth[rows]
    # the face is one 50 m cell deep (cell centres 1950 m: 0 m, 2000 m: 1000 m; a heightfield resolves
    # it to a cell): z-depth equals the northing, the same in every column to within that cell
    assert np.all((wall > 1940.0) & (wall < 2010.0)), (wall.min(), wall.max())
    assert float(np.max(wall.max(axis=1) - wall.min(axis=1))) < 50.0
    assert abs(float(np.median(wall)) - 1975.0) < 25.0
    assert np.all(depth[: int(top) - 1] == SKY_DEPTH_M)


# ------------------------------------------------------------------------------------------ curvature


def test_curvature_drop_of_distant_plateau(scene_backend):
    """A plateau edge 30 km away drops by d^2/(2R)(1-k) relative to a flat earth (k -> 1)."""
    dem = analytic_dem(
        "wall", size_px=140, spacing_m=500.0, center_lonlat=(LON0, LAT0),
        azimuth_deg=90.0, distance_m=30_000.0, height_m=150.0,
    )  # fmt: skip
    fov, size = 0.5, 100
    f, cy = focal(fov, size), 50.0
    pose = Pose(lon=LON0, lat=LAT0, alt_m=100.0, yaw_deg=90.0, fov_deg=fov)
    rows = {}
    for k in (0.0, 0.13, 0.99):
        cfg = RenderConfig(size_px=size, fov_deg=fov, range_m=34_000.0, refraction_k=k)
        depth = render(scene_backend, dem, [pose], cfg, (Modality.DEPTH,)).arrays[Modality.DEPTH][0]
        rows[k] = float(np.nanmean(horizon_line(depth)))
    d = 30_250.0 * 0.9996  # first plateau node (cell centre) in ground metres
    shift = f * (0.99 * d * d / (2.0 * R_EARTH)) / d  # k=0 vs k=0.99: ~26 px
    assert rows[0.0] - rows[0.99] == pytest.approx(shift, rel=0.08)
    expected = cy - f * (50.0 - d * d / (2.0 * R_EARTH) * 0.87) / d  # ~54 (k=0: ~58, k=0.99: ~31)
    flat = cy - f * 50.0 / d
    assert abs(rows[0.13] - expected) < 6.0 and abs(rows[0.13] - flat) > 15.0, (rows, expected, flat)


# ------------------------------------------------------------------------------------------ contract


def test_outputs_dtypes_silhouette_and_errors(backend_name, cone_dem):
    lon, lat = offset_lonlat(-10_000.0, 0.0)
    cfg = RenderConfig(size_px=32, range_m=20_000.0, backend=backend_name)
    poses = [Pose(lon=lon, lat=lat, alt_m=500.0, yaw_deg=y) for y in (0.0, 90.0)]
    b = render(backend_name, cone_dem, poses, cfg)
    assert len(b) == 2 and b.render_time_s.dtype == np.float32
    assert b.arrays[Modality.DEPTH].shape == (2, 32, 32) and b.arrays[Modality.DEPTH].dtype == np.float32
    assert b.arrays[Modality.SEMANTIC].dtype == np.uint8 and b.arrays[Modality.SILHOUETTE].dtype == np.uint8
    sky = b.arrays[Modality.DEPTH] == SKY_DEPTH_M
    assert np.array_equal(sky, b.arrays[Modality.SEMANTIC] == SKY_CLASS)
    assert np.array_equal(b.arrays[Modality.SILHOUETTE], silhouette_from_depth(b.arrays[Modality.DEPTH], 0.15))
    with open_backend(cfg) as be, pytest.raises(RenderError, match="prepare"):
        be.render([], (Modality.DEPTH,))


# ------------------------------------------------------------------------------------------ near ground


def test_steep_slope_right_below_the_camera_is_terrain_at_true_depth(backend_name):
    """2 m above a 40-degree slope, looking uphill: the bottom rows see ground 1-3 m away. No near plane
    may clip it (sky) or clamp it: every pixel of the slope is terrain at the ray/plane depth."""
    slope = 0.84  # 40 degrees, rising to the east
    dem = analytic_dem("plane", size_px=100, spacing_m=20.0, center_lonlat=(LON0, LAT0), height_m=1000.0,
                       slope_east=slope)  # fmt: skip
    cfg = RenderConfig(size_px=64, fov_deg=60.0, range_m=900.0)
    pose = Pose(lon=LON0, lat=LAT0, alt_m=1002.0, yaw_deg=90.0)
    terrain = build_terrain(dem, LON0, LAT0, cfg)
    cam = frame_camera(terrain, pose, cfg.size_px)
    with open_backend(replace(cfg, backend=backend_name)) as be:
        be.prepare(terrain)
        depth = be.render([cam], (Modality.DEPTH,)).arrays[Modality.DEPTH][0]
    # the level-0 nodes within 200 m are the plane (curvature < 3 mm): fit it in the terrain frame
    lv = terrain.levels[0]
    ny, nx = lv.z.shape
    gx, gy = np.meshgrid(lv.x0 + np.arange(nx) * lv.spacing_m, lv.y0 - np.arange(ny) * lv.spacing_m)
    near = np.hypot(gx, gy) < 200.0
    a, b, c = np.linalg.lstsq(np.stack([gx[near], gy[near], np.ones(near.sum())], 1), lv.z[near], rcond=None)[0]
    rays = pixel_rays_cam(60.0, 64, 64) @ cam.rotation.T  # per unit z-depth
    p = cam.position
    t = (a * p[0] + b * p[1] + c - p[2]) / (rays[..., 2] - a * rays[..., 0] - b * rays[..., 1])
    hit = t > 0
    hit &= np.hypot(t * rays[..., 0], t * rays[..., 1]) < 150.0  # well inside the range, curvature negligible
    assert float(t[hit].min()) < 2.0 and hit[-1].all()  # the bottom row sees ground closer than 2 m
    assert (depth[hit] != SKY_DEPTH_M).all()
    np.testing.assert_allclose(depth[hit], t[hit], rtol=2e-3)


# ------------------------------------------------------------------------------------------ cpu vs pyrender


def _rough_dem(seed: int = 3):
    """A rough random surface (integrated noise, 0-2500 m), 160 x 160 cells of 100 m around 9 E 46 N."""
    from affine import Affine

    from crosslocate.dem.mosaic import DEM, ArraySource

    rng = np.random.default_rng(seed)
    z = np.cumsum(np.cumsum(rng.normal(0.0, 1.0, (160, 160)), 0), 1)
    z = 2500.0 * (z - z.min()) / (z.max() - z.min())
    cx, cy = geodesy.transform_xy(LON0, LAT0, "EPSG:4326", "EPSG:32632")
    t = Affine(100.0, 0.0, float(cx) - 8000.0, 0.0, -100.0, float(cy) + 8000.0)
    return DEM([ArraySource(z, t, "EPSG:32632", name="<rough>")])


@pytest.mark.egl
def test_cpu_and_pyrender_render_the_same_surface():
    """The cpu caster and the OpenGL mesh describe one surface (same triangles, same level schedule,
    same range cut, nearest-node classes). On a rough terrain with four LOD levels in range they agree
    to float precision on depth, sky and classes, except next to a level boundary, where the mesh
    stitches a fine tile's border onto its coarser neighbour (the caster steps at the circle): pixels
    whose ground point lies within a few cells of a boundary may differ."""
    pytest.importorskip("crosslocate.render.backends.pyrender_egl", reason="pyrender backend not built")
    from crosslocate.render.mesh import MIN_TILE_CELLS

    dem = _rough_dem()
    cfg = RenderConfig(size_px=64, range_m=7000.0)
    terrain = build_terrain(dem, LON0, LAT0, cfg, lod_cells=16)  # levels switch at 1.6, 3.2, 6.4 km
    assert len(terrain.levels) >= 4
    h = float(dem.elevation([LON0], [LAT0])[0])
    poses = [Pose(lon=LON0, lat=LAT0, alt_m=h + 10.0, yaw_deg=y) for y in range(0, 360, 30)]
    cams = [frame_camera(terrain, p, cfg.size_px) for p in poses]
    out = {}
    for name in ("cpu", "pyrender"):
        try:
            be = open_backend(replace(cfg, backend=name))
        except BackendUnavailableError as exc:
            pytest.skip(f"pyrender backend unavailable here: {exc}")
        with be:
            be.prepare(terrain)
            out[name] = be.render(cams, (Modality.DEPTH, Modality.SEMANTIC)).arrays
    a, b = out["cpu"][Modality.DEPTH], out["pyrender"][Modality.DEPTH]
    ta, tb = a != SKY_DEPTH_M, b != SKY_DEPTH_M
    # pixels whose ground point (in either backend) lies in a level-boundary band
    hn = np.stack([np.hypot(*(pixel_rays_cam(60.0, 64, 64) @ c.rotation.T)[..., :2].transpose(2, 0, 1)) for c in cams])
    band = np.zeros(a.shape, bool)
    for lv in terrain.levels[:-1]:
        w = (MIN_TILE_CELLS + 1) * lv.spacing_m
        for d, t in ((a, ta), (b, tb)):
            band |= t & (np.abs(d * hn - lv.max_distance_m) < w)
    assert band.mean() < 0.1
    both = ta & tb
    assert 0.2 < both.mean() < 0.95
    assert (ta == tb).mean() > 0.99
    assert (ta == tb)[~band].mean() > 0.9999
    rel = np.abs(a[both] - b[both]) / a[both]
    # llvmpipe agrees to ~1e-6; a GPU's sub-pixel snapping (1/512 px, see test_pyrender_backend) adds
    # 3.3e-5 at this 64 px size on an NVIDIA H200
    assert np.median(rel) < 1e-4
    # elsewhere only cells split at tile borders and grazing pixels differ a little
    assert np.quantile(rel[~band[both]], 0.99) < 1e-3
    sa, sb = out["cpu"][Modality.SEMANTIC], out["pyrender"][Modality.SEMANTIC]
    assert (sa[both & ~band] == sb[both & ~band]).mean() > 0.999


# ------------------------------------------------------------------------------------------ cpu internals


def test_cpu_silhouette_kernel_is_the_reference_rule():
    from crosslocate.render.backends.heightfield_numba import silhouette

    rng = np.random.default_rng(0)
    d = rng.uniform(1.0, 3.0, (3, 40, 50)).astype(np.float32) ** 4
    d[rng.random(d.shape) < 0.2] = SKY_DEPTH_M
    d[0, 5, 5], d[0, 6, 6], d[1, 0, 0] = np.nan, np.inf, 0.0
    for rel in (0.15, 0.5):
        np.testing.assert_array_equal(silhouette(d, rel), silhouette_from_depth(d, rel))


def test_cpu_batch_of_level_and_tilted_views_equals_single_views(plane_dem):
    """One render() call casts all level views in one parallel launch and tilted ones via the strip:
    the batch result equals rendering each view alone."""
    cfg = RenderConfig(size_px=48, fov_deg=40.0, range_m=30_000.0)
    poses = [
        Pose(lon=LON0, lat=LAT0, alt_m=650.0, yaw_deg=30.0, fov_deg=40.0),
        Pose(lon=LON0, lat=LAT0, alt_m=650.0, yaw_deg=100.0, pitch_deg=-4.0, fov_deg=40.0),
        Pose(lon=LON0, lat=LAT0, alt_m=650.0, yaw_deg=250.0, fov_deg=40.0),
    ]
    batch = render("cpu", plane_dem, poses, cfg)
    assert len(batch) == 3 and (batch.render_time_s > 0).all()
    for i, pose in enumerate(poses):
        one = render("cpu", plane_dem, [pose], cfg)
        for m in ALL:
            np.testing.assert_array_equal(batch.arrays[m][i], one.arrays[m][0])


def test_backend_refuses_a_modality_it_has_no_renderer_for():
    from crosslocate.render.backends import BACKENDS, backend_class
    from crosslocate.render.backends.base import RenderBackend, ViewBatch

    class DepthOnly(RenderBackend):
        name = "depth-only"
        rendered_modalities = (Modality.DEPTH,)

        def prepare(self, terrain):
            pass

        def render(self, cameras, modalities):
            return ViewBatch()

    b = DepthOnly(RenderConfig())
    assert b.requested(("depth",)) == (Modality.DEPTH,)
    with pytest.raises(RenderError, match=r"the depth-only backend does not render semantic \(it renders depth\)"):
        b.requested(("depth", "semantic"))
    with pytest.raises(RenderError, match="no modality requested"):
        b.requested(())
    for name in BACKENDS:  # the shipped backends render every modality
        assert set(backend_class(name).rendered_modalities) == set(Modality)


@pytest.mark.egl
def test_pyrender_shares_a_terrain_between_neighbours_with_the_lift_from_each_camera(plane_dem, monkeypatch):
    """Two positions 1 km apart on a level plane (a sphere once curvature applies): rendered from the
    first one's terrain (beyond its own 2 km near patch), the second position's views equal those
    from its own terrain (the sphere looks the same from everywhere); without the per-camera
    refraction lift they do not."""
    from crosslocate.render.backends.pyrender_egl import PyrenderBackend
    from crosslocate.render.views import ViewRenderer

    _backend_or_skip("pyrender")
    # a near patch of 4 cells (2 km here): the shared pyramid draws 2 km to the horizon (~12 km)
    cfg = RenderConfig(
        size_px=96, range_m=40_000.0, backend="pyrender", modalities=(Modality.DEPTH,), near_patch_cells=4
    )
    east = offset_lonlat(1000.0, 0.0)
    poses = [
        Pose(lon=lon, lat=lat, alt_m=510.0, yaw_deg=yaw, pitch_deg=-2.0, fov_deg=60.0)
        for lon, lat in ((LON0, LAT0), east)
        for yaw in (0.0, 90.0, 180.0, 270.0)
    ]

    def second(backend):
        renderer = ViewRenderer(plane_dem, cfg, backend=backend)
        depth = renderer.render(poses).arrays[Modality.DEPTH][4:]
        return depth, len(renderer.terrain_build_s)

    with PyrenderBackend(cfg) as be:
        be.terrain_reuse_m = 1500.0
        shared, n_shared = second(be)
        be.terrain_reuse_m = 0.0  # a pyramid per position (the default): the reference
        own, n_own = second(be)
        be.terrain_reuse_m = 1500.0
        monkeypatch.setattr(PyrenderBackend, "_lift", lambda self, cam: np.zeros(3))
        unlifted, _ = second(be)
    assert (n_shared, n_own) == (1, 2)  # pyramids (plus one 2 km near patch for the second position)
    sky = own <= 0
    assert ((shared <= 0) == sky).mean() >= 0.999
    rel = np.abs(shared - own)[~sky] / own[~sky]
    assert np.median(rel) < 1e-4 and np.quantile(rel, 0.99) < 1e-3
    # looking east, along the offset, a lift taken from the origin is off by k * 1 km * d / R
    # (0.1 m at 5 km): grazing rays then land tens of metres away
    east_lifted = np.abs(shared[1] - own[1])[~sky[1]] / own[1][~sky[1]]
    east_unlifted = np.abs(unlifted[1] - own[1])[~sky[1]] / own[1][~sky[1]]
    # (lifted, the 99th percentile is the rasteriser's sub-pixel noise: 1.9e-4 on an NVIDIA H200, far
    # less on llvmpipe; unlifted, 3.2e-3 on the H200)
    assert np.quantile(east_unlifted, 0.99) > 10 * max(np.quantile(east_lifted, 0.99), 1e-7)
