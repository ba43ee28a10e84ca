"""The region terrain atlas: block maxima, build/cache, and agreement with the per-position renderer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crosslocate.dem import geodesy
from crosslocate.dem.poses import Pose
from crosslocate.render.atlas import (
    BLOCK_CELLS,
    AtlasSpec,
    block_max,
    build_atlas,
    camera_metric,
    ensure_atlas,
    load_atlas,
    near_patch,
    plan_atlas,
)
from crosslocate.render.config import RenderConfig


@pytest.mark.parametrize("shape", [(37, 29), (9, 9), (8, 8), (2, 2), (17, 2)])
def test_block_maxima_cover_their_cells(shape):
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 100.0, shape).astype(np.float32)
    bm = block_max(z, BLOCK_CELLS)
    b = BLOCK_CELLS
    assert bm.shape == (max(-(-(shape[0] - 1) // b), 1), max(-(-(shape[1] - 1) // b), 1))
    for bj in range(bm.shape[0]):
        for bi in range(bm.shape[1]):
            # the block's cells touch nodes bj*b .. bj*b + b (inclusive) in each axis
            assert bm[bj, bi] == z[bj * b : bj * b + b + 1, bi * b : bi * b + b + 1].max()


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def rough_dem():
    """A seeded alpine DEM, 24 x 24 km at 100 m, around 9 E 46 N (UTM 32N)."""
    from crosslocate.dem.mosaic import DEM, ArraySource
    from crosslocate.dem.sources.synthetic import AlpineParams, generate_alpine

    p = AlpineParams(extent_m=24_000.0, spacing_m=100.0, erosion_iterations=2)
    z, transform, _ = generate_alpine(p)
    return DEM([ArraySource(np.asarray(z, np.float64), transform, p.crs, name="<alpine>")])


def _centre(dem):
    w, s, e, n = dem.bounds_lonlat
    return 0.5 * (w + e), 0.5 * (s + n)


# ------------------------------------------------------------------------------------------ planning


def test_plan_splits_wide_areas_into_blocks_that_hold_every_camera():
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(5.0, 16.0, 500), rng.uniform(44.0, 48.0, 500)  # ~850 x 450 km
    specs = plan_atlas(lon, lat, 90.0, 60_000.0, 256, max_block_m=400_000.0)
    assert len(specs) >= 4
    held = np.zeros(lon.size, bool)
    for spec in specs:
        x, y = geodesy.transform_xy(lon, lat, "EPSG:4326", spec.crs_wkt)
        held |= spec.contains(x, y)
        xmin, ymin, xmax, ymax = spec.camera_box
        assert xmax - xmin <= 400_000.0 + 2.0 and ymax - ymin <= 400_000.0 + 2.0
    assert held.all()
    # cameras between the planned ones (anywhere in their hull) are held too: blocks leave no gaps
    i, j, t = rng.integers(0, 500, 3000), rng.integers(0, 500, 3000), rng.random(3000)
    mlon, mlat = lon[i] + t * (lon[j] - lon[i]), lat[i] + t * (lat[j] - lat[i])
    held = np.zeros(mlon.size, bool)
    for spec in specs:
        held |= spec.contains(*geodesy.transform_xy(mlon, mlat, "EPSG:4326", spec.crs_wkt))
    assert held.all()
    assert len(plan_atlas(lon[:3] * 0 + 9.0, lat[:3] * 0 + 46.0, 90.0, 60_000.0, 256)) == 1


def test_camera_metric_measures_convergence_and_scale():
    """East of the frame centre, true north points a little west of grid north (meridians converge
    towards the pole, and the centre meridian is grid north); the metric maps a geodesic 1 km north to
    a grid offset of 1 km, within 1e-4."""
    spec = AtlasSpec(9.0, 46.0, (-1e5, -1e5, 1e5, 1e5), 90.0, 60_000.0, 256)
    lon, lat = 9.6, 46.3
    m = camera_metric(spec, lon, lat, 0.13)
    plon, plat, _ = geodesy.WGS84_GEOD.fwd(lon, lat, 0.0, 1000.0)
    px, py = geodesy.transform_xy(plon, plat, "EPSG:4326", spec.crs_wkt)
    g = np.array([float(px) - m.xy[0], float(py) - m.xy[1]])
    assert g[0] < 0  # true north leans towards the centre meridian
    assert math.degrees(math.atan2(g[0], g[1])) == pytest.approx(-math.degrees(m.convergence_rad), abs=0.01)
    np.testing.assert_allclose(m.to_true @ g, [0.0, 1000.0], atol=0.1)
    # curvature form: a point 20 km due north drops by d^2 / (2 M) minus the refraction lift
    d = 20_000.0 * np.array([-math.sin(m.convergence_rad), math.cos(m.convergence_rad)])
    drop = float(d @ m.curvature @ d)
    r = float(geodesy.local_radius_m(lat))
    assert drop == pytest.approx(20_000.0**2 / (2 * r) * (1 - 0.13), rel=0.01)


# ------------------------------------------------------------------------------------------ build and cache


def test_cache_round_trip_is_memory_mapped_and_keyed(rough_dem, tmp_path):
    lon, lat = _centre(rough_dem)
    spec = plan_atlas([lon], [lat], rough_dem.resolution_m, 20_000.0, 64)[0]
    a = ensure_atlas(rough_dem, spec, 0.13, root=tmp_path)
    folder = tmp_path / f"atlas-{spec.key(rough_dem.checksum)}"
    assert (folder / "atlas.json").is_file() and not list(tmp_path.glob(".atlas-*.tmp-*"))
    b = load_atlas(folder, 0.13)
    assert isinstance(np.load(folder / "z.npy", mmap_mode="r"), np.memmap)
    np.testing.assert_array_equal(np.asarray(a.packed.zf), np.asarray(b.packed.zf))
    np.testing.assert_array_equal(np.asarray(a.packed.cf), np.asarray(b.packed.cf))
    fresh = build_atlas(rough_dem, spec, 0.13)
    np.testing.assert_array_equal(fresh.packed.zf, np.asarray(b.packed.zf))  # deterministic
    other = AtlasSpec(spec.lon0, spec.lat0, spec.camera_box, spec.spacing_m, 25_000.0, spec.lod_cells)
    assert other.key(rough_dem.checksum) != spec.key(rough_dem.checksum)
    assert spec.key("another dem") != spec.key(rough_dem.checksum)


def test_full_disk_while_saving_leaves_no_temporary_folder(rough_dem, tmp_path, monkeypatch):
    """ENOSPC as the atlas files are synced, too little room up front, or any other failure: the
    temporary ``.atlas-*.tmp-PID`` folder is removed and nothing half-written is left to load."""
    import errno
    from collections import namedtuple

    from crosslocate import fileio
    from crosslocate.errors import DiskFullError
    from crosslocate.render import atlas_store as atlas_mod  # the on-disk cache

    lon, lat = _centre(rough_dem)
    spec = plan_atlas([lon], [lat], rough_dem.resolution_m, 20_000.0, 64)[0]
    atlas = build_atlas(rough_dem, spec, 0.13)
    folder = tmp_path / f"atlas-{spec.key(rough_dem.checksum)}"
    synced = []

    def full_after_one_file(path):
        synced.append(path)
        if len(synced) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atlas_mod, "fsync_file", full_after_one_file)
    with pytest.raises(DiskFullError, match=rf"{folder.name}: disk full: [\d,]+ bytes left .*No space left"):
        atlas_mod.save_atlas(atlas, folder)
    assert len(synced) == 2 and list(tmp_path.iterdir()) == []  # files were in the temp folder; all gone
    monkeypatch.setattr(atlas_mod, "fsync_file", lambda p: (_ for _ in ()).throw(RuntimeError("power cut")))
    with pytest.raises(RuntimeError):
        atlas_mod.save_atlas(atlas, folder)
    assert list(tmp_path.iterdir()) == []
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, atlas.nbytes // 2))
    with pytest.raises(DiskFullError, match=rf"the terrain atlas needs about {atlas.nbytes + fileio.RESERVE_BYTES:,}"):
        ensure_atlas(rough_dem, spec, 0.13, root=tmp_path)
    assert [p.suffix for p in tmp_path.iterdir()] == [".lock"]  # only the lock file remains


def test_atlas_levels_hold_dem_elevations(rough_dem):
    lon, lat = _centre(rough_dem)
    spec = plan_atlas([lon], [lat], rough_dem.resolution_m, 20_000.0, 64)[0]
    atlas = build_atlas(rough_dem, spec, 0.13)
    lv = atlas.levels[0]
    ny, nx = lv.shape
    r, c = ny // 2, nx // 3
    x, y = lv.x0 + c * lv.spacing_m, lv.y0 - r * lv.spacing_m
    plon, plat = geodesy.transform_xy(x, y, spec.crs_wkt, "EPSG:4326")
    assert float(lv.z[r, c]) == pytest.approx(float(rough_dem.sample([plon], [plat])[0]), abs=0.05)
    # level 1 is the 2x2 mean of level 0 where level 0 exists
    l1 = atlas.levels[1]
    assert l1.spacing_m == 2 * lv.spacing_m


def test_near_patch_equals_the_per_position_pyramid_near_the_camera(rough_dem):
    from crosslocate.render.terrain import build_terrain

    lon, lat = _centre(rough_dem)
    cfg = RenderConfig(size_px=32, range_m=20_000.0, lod_cells=64)
    ref = build_terrain(rough_dem, lon, lat, cfg).levels[0]
    patch = near_patch(rough_dem, lon, lat, 16, rough_dem.resolution_m, cfg.refraction_k).level(0)
    # the reference node on the camera and its neighbours within 16 cells
    rc = round(ref.y0 / ref.spacing_m)
    cc = round(-ref.x0 / ref.spacing_m)
    n = patch.shape[0] // 2
    np.testing.assert_allclose(patch.z, ref.z[rc - n : rc + n + 1, cc - n : cc + n + 1], atol=0.05)
    np.testing.assert_array_equal(patch.cls, ref.cls[rc - n : rc + n + 1, cc - n : cc + n + 1])


# ------------------------------------------------------------------------------------------ agreement


def test_atlas_views_agree_with_the_per_position_renderer(rough_dem):
    """The issue's bounds on a synthetic alpine DEM: 6 positions x 12 views, atlas vs exact pyramid."""
    from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
    from crosslocate.render.views import ViewRenderer

    cfg = RenderConfig(size_px=96, range_m=15_000.0, lod_cells=64)
    w, s, e, n = rough_dem.bounds_lonlat
    rng = np.random.default_rng(5)
    lon = rng.uniform(w + 0.3 * (e - w), e - 0.3 * (e - w), 6)
    lat = rng.uniform(s + 0.3 * (n - s), n - 0.3 * (n - s), 6)
    atlases = [
        build_atlas(rough_dem, sp, cfg.refraction_k)
        for sp in plan_atlas(lon, lat, rough_dem.resolution_m, cfg.range_m, cfg.lod_cells)
    ]
    rel, sky, sem, px = [], 0, 0, 0
    with ViewRenderer(rough_dem, cfg) as exact, ViewRenderer(rough_dem, cfg, atlases=atlases) as fast:
        for lo, la in zip(lon, lat, strict=True):
            h = float(rough_dem.sample([lo], [la])[0]) + 10.0
            poses = [Pose(lon=lo, lat=la, alt_m=h, yaw_deg=float(y)) for y in range(0, 360, 30)]
            a, b = exact.render(poses).arrays, fast.render(poses).arrays
            da, db = a[Modality.DEPTH], b[Modality.DEPTH]
            both = (da != SKY_DEPTH_M) & (db != SKY_DEPTH_M)
            rel.append(np.abs(db[both] - da[both]) / da[both])
            sky += int(np.count_nonzero((da == SKY_DEPTH_M) == (db == SKY_DEPTH_M)))
            sem += int(np.count_nonzero(a[Modality.SEMANTIC] == b[Modality.SEMANTIC]))
            px += da.size
    r = np.concatenate(rel)
    assert r.size > 0.3 * px
    assert np.median(r) <= 1e-3 and np.percentile(r, 99) <= 1e-2, (np.median(r), np.percentile(r, 99))
    assert sky / px >= 0.999 and sem / px >= 0.995, (sky / px, sem / px)


def test_positions_in_the_dem_edge_band_render(rough_dem):
    """A position the DEM covers but no atlas triangle does (within a node of the DEM's last cell edge)
    still renders: the camera keeps its height above the datum, as in the per-position renderer."""
    from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
    from crosslocate.dem.geodesy import transform_xy
    from crosslocate.render.atlas import camera_height
    from crosslocate.render.views import ViewRenderer

    cfg = RenderConfig(size_px=64, range_m=10_000.0, lod_cells=64)
    # 10 points 5..95 m inside the raster's southern cell edge, in its native CRS (UTM 32N)
    xmin, ymin, xmax, _ = rough_dem.bounds_native
    ys = ymin + np.arange(5.0, 100.0, 10.0)
    lon, lat = transform_xy(np.full(ys.size, 0.5 * (xmin + xmax)), ys, rough_dem.crs_wkt, "EPSG:4326")
    ground = rough_dem.sample(lon, lat)
    assert np.isfinite(ground).all()  # the DEM covers every one (its cell-edge footprint)
    atlases = [build_atlas(rough_dem, sp, cfg.refraction_k) for sp in plan_atlas(lon, lat, 100.0, cfg.range_m, 64)]
    assert len(atlases) == 1
    edge = [
        i
        for i in range(len(lon))
        if not math.isfinite(atlases[0].surface_height(*camera_metric(atlases[0].spec, lon[i], lat[i], 0.13).xy))
    ]
    assert edge, "no position fell in the atlas's uncovered edge band"
    with ViewRenderer(rough_dem, cfg) as exact, ViewRenderer(rough_dem, cfg, atlases=atlases) as fast:
        for i in edge:
            alt = float(ground[i]) + 10.0
            metric = camera_metric(atlases[0].spec, lon[i], lat[i], cfg.refraction_k)
            assert camera_height(atlases[0], rough_dem, metric, lon[i], lat[i], alt) == alt
            poses = [Pose(lon=lon[i], lat=lat[i], alt_m=alt, yaw_deg=0.0)]  # facing into the DEM
            a, b = exact.render(poses).arrays[Modality.DEPTH], fast.render(poses).arrays[Modality.DEPTH]
            assert np.mean((a == SKY_DEPTH_M) == (b == SKY_DEPTH_M)) >= 0.99
