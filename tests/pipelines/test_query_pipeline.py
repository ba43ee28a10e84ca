"""Query-set pipeline: files, CSV round trip, resume (byte-identical), fingerprint refusal, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image
from shapely.geometry import box

from crosslocate.datasets.queries import load_query_csv
from crosslocate.dem.landcover import LandCover
from crosslocate.dem.regions import make_region
from crosslocate.errors import ConfigError, ManifestMismatchError
from crosslocate.pipelines.queries import (
    QUERY_PRESETS,
    QuerySetConfig,
    ensure_query_set,
    image_name,
    resolve_query_config,
)
from crosslocate.render import photo
from crosslocate.render.camera import pixel_rays_cam, rotation_cam_to_enu

AMP = 2.0
CFG = QuerySetConfig(
    n_queries=5,
    width_px=40,
    height_px=30,
    margin_m=150.0,
    range_m=5_000.0,
    seed=3,
    photo=dataclasses.replace(photo.PHOTO_PRESETS["tiny"], perturb_amplitude_m=AMP),
    mosaic_count=4,
    min_sky_fraction=0.0,  # no photo-spot screening here (tested on its own below)
    min_horizon_m=0.0,
)


@pytest.fixture(scope="module")
def cone():
    from crosslocate.dem.sources.synthetic import analytic_dem

    dem = analytic_dem("cone", size_px=64, spacing_m=30.0, base_m=1000.0, apex_m=1400.0, radius_m=900.0)
    w, s, e, n = dem.bounds_lonlat
    return dem, make_region("cone", box(w, s, e, n))


@pytest.fixture
def calls(monkeypatch):
    """Replace the view renderer by flat ground 1.7 m below the camera (grassland, sky beyond 3 km)."""
    log: list[tuple[float, float]] = []

    def views(self, dem, pose, width_px, height_px):
        log.append((pose.lon, pose.lat))
        rays = pixel_rays_cam(pose.fov_deg, width_px, height_px)
        up = (rays @ rotation_cam_to_enu(pose.yaw_deg, pose.pitch_deg, pose.roll_deg).T)[..., 2]
        depth = np.where(up < 0, 1.7 / np.where(up < 0, -up, 1.0), -1.0)
        depth = np.where(depth * np.linalg.norm(rays, axis=-1) > 3000.0, -1.0, depth).astype(np.float32)
        semantic = np.where(depth > 0, LandCover.GRASSLAND, LandCover.SKY).astype(np.uint8)
        return depth, semantic

    monkeypatch.setattr(photo.PhotoRenderer, "views", views)
    return log


def _poses(queries):
    return [q.pose for q in queries]


def test_writes_pngs_and_csv_then_resumes_without_rendering(tmp_path, cone, calls):
    dem, region = cone
    queries = ensure_query_set(region, dem, CFG, tmp_path)
    out = tmp_path / "cone" / "queries"
    assert len(calls) == 5 and len(queries) == 5
    for i, q in enumerate(queries):
        assert q.image == str((out / image_name(i)).resolve())
        with Image.open(q.image) as im:
            assert im.size == (40, 30) and im.mode == "RGB"
    loaded = load_query_csv(out / "queries.csv")
    assert _poses(loaded) == _poses(queries)
    lon = np.array([p.lon for p in _poses(queries)])
    lat = np.array([p.lat for p in _poses(queries)])
    assert region.contains(lon, lat).all()
    fov = np.array([p.fov_deg for p in _poses(queries)])
    assert ((fov >= 30.0) & (fov <= 70.0)).all()
    # cameras stand 1.7 m above the perturbed ground, which is within AMP of the DEM
    above = np.array([p.alt_m for p in _poses(queries)]) - dem.sample(lon, lat)
    assert (np.abs(above - 1.7) <= AMP + 1e-9).all()
    assert (out / "mosaic.png").is_file() and json.loads((out / "queries.json").read_text())["config"]["n_queries"] == 5

    before = {i: (out / image_name(i)).read_bytes() for i in range(5)}
    calls.clear()
    again = ensure_query_set(region, dem, CFG, tmp_path)
    assert calls == [] and _poses(again) == _poses(queries)

    # an interrupted run: one photo and the CSV missing -> exactly that photo, byte-identical
    (out / image_name(2)).unlink()
    (out / "queries.csv").unlink()
    resumed = ensure_query_set(region, dem, CFG, tmp_path)
    assert len(calls) == 1 and _poses(resumed) == _poses(queries)
    assert all((out / image_name(i)).read_bytes() == before[i] for i in range(5))


def test_other_settings_are_refused_unless_overwrite(tmp_path, cone, calls):
    dem, region = cone
    ensure_query_set(region, dem, CFG, tmp_path)
    other = dataclasses.replace(CFG, n_queries=3)
    with pytest.raises(ManifestMismatchError, match="n_queries"):
        ensure_query_set(region, dem, other, tmp_path)
    calls.clear()
    queries = ensure_query_set(region, dem, other, tmp_path, overwrite=True)
    out = tmp_path / "cone" / "queries"
    assert len(queries) == 3 and len(calls) == 3
    assert sorted(p.name for p in out.glob("q*.png")) == [image_name(i) for i in range(3)]


def test_seed_changes_poses(tmp_path, cone, calls):
    dem, region = cone
    a = ensure_query_set(region, dem, CFG, tmp_path / "a")
    b = ensure_query_set(region, dem, dataclasses.replace(CFG, seed=4), tmp_path / "b")
    assert _poses(a) != _poses(b)


def test_config_resolution_and_validation():
    assert resolve_query_config("tiny") is QUERY_PRESETS["tiny"]
    assert resolve_query_config(type("Preset", (), {"name": "cpu"})()) is QUERY_PRESETS["cpu"]
    assert QuerySetConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))) == CFG
    cpu = QUERY_PRESETS["cpu"]
    assert 150 <= cpu.n_queries / cpu.photos_per_spot <= 400 and QUERY_PRESETS["tiny"].n_queries <= 16
    assert QUERY_PRESETS["paper"].photos_per_spot == 1  # one photo per position, like real photographs
    with pytest.raises(ConfigError, match="unknown query preset"):
        resolve_query_config("huge")
    with pytest.raises(ConfigError, match="FOV"):
        QuerySetConfig(fov_min_deg=70.0, fov_max_deg=30.0)


def test_cli_synth_and_show(tmp_path, cone, calls, capsys):
    import rasterio

    from crosslocate.pipelines.cli import main

    dem, region = cone
    tif = tmp_path / "cone.tif"
    tile = dem.tiles[0]
    z = tile.read(0, tile.shape[0], 0, tile.shape[1]).astype(np.float32)
    with rasterio.open(tif, "w", driver="GTiff", width=z.shape[1], height=z.shape[0], count=1, dtype="float32",
                       crs=tile.crs_wkt, transform=tile.transform) as dst:  # fmt: skip
        dst.write(z, 1)
    geojson = tmp_path / "cone.geojson"
    geojson.write_text(json.dumps(region.polygon.__geo_interface__))
    args = ["queries", "synth", "--region", str(geojson), "--dem", str(tif), "--preset", "tiny", "--n", "3",
            "--size", "32x24", "--margin", "150", "--min-sky", "0", "--min-horizon", "0",
            "--work", str(tmp_path / "work")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    csv = tmp_path / "work" / "cone" / "queries" / "queries.csv"
    assert str(csv) in out and "queries    3" in out
    assert len(load_query_csv(csv)) == 3 and len(calls) == 3
    assert main(["queries", "show", str(csv)]) == 0
    shown = capsys.readouterr().out
    assert "queries    3" in shown and "fov_deg" in shown and "q00000.png" in shown
    assert main(["queries", "synth", "--region", str(geojson), "--dem", str(tif), "--size", "12",
                 "--work", str(tmp_path / "work")]) == 2  # fmt: skip


def test_real_renderer_end_to_end(tmp_path, cone, monkeypatch):
    dem, region = cone
    cfg = dataclasses.replace(CFG, n_queries=3)
    queries = ensure_query_set(region, dem, cfg, tmp_path)
    assert len(queries) == 3 and len(load_query_csv(tmp_path / "cone" / "queries" / "queries.csv")) == 3
    for q in queries:
        img = np.asarray(Image.open(q.image))
        assert img.shape == (30, 40, 3) and img.std() > 1.0  # a picture, not a constant

    def boom(*args, **kwargs):
        raise AssertionError("a complete set must not be rendered again")

    monkeypatch.setattr(photo.PhotoRenderer, "views", boom)
    assert _poses(ensure_query_set(region, dem, cfg, tmp_path)) == _poses(queries)


@pytest.mark.parametrize("per_spot", [1, 2])
def test_parallel_rendering_gives_the_serial_bytes(tmp_path, cone, monkeypatch, per_spot):
    """Two worker processes write exactly the photos one process writes (per-photo seeded rng);
    with several photos per spot too (a spot's photos go to one worker together)."""
    from crosslocate.pipelines import queries as qp

    dem, region = cone
    cfg = dataclasses.replace(CFG, n_queries=5, photos_per_spot=per_spot)
    serial = ensure_query_set(region, dem, cfg, tmp_path / "serial")
    assert len({(q.pose.lon, q.pose.lat) for q in serial}) == (5 if per_spot == 1 else 3)
    monkeypatch.setattr(qp, "_PARALLEL_MIN_PHOTOS", 0)
    monkeypatch.setattr(qp.os, "cpu_count", lambda: 2)
    parallel = ensure_query_set(region, dem, cfg, tmp_path / "parallel")
    assert _poses(serial) == _poses(parallel)
    for a, b in zip(serial, parallel, strict=True):
        assert np.array_equal(np.asarray(Image.open(a.image)), np.asarray(Image.open(b.image)))


def test_photo_spot_stats_by_hand():
    from crosslocate.pipelines.queries import photo_spot_stats

    d = np.full((4, 3), 100.0, np.float32)
    d[:2, 0] = -1.0  # column 0: sky rows 0-1, skyline pixel row 2 at 100 m
    d[:1, 1] = -1.0
    d[1, 1] = 5000.0  # column 1: skyline at 5 km
    # column 2: no sky -> not counted
    frac, dist = photo_spot_stats(d)
    assert frac == pytest.approx(3 / 12) and dist == pytest.approx((100.0 + 5000.0) / 2)
    assert photo_spot_stats(np.full((4, 3), 50.0, np.float32)) == (0.0, 0.0)


def test_photo_spots_keep_views_and_refuse_impossible_thresholds():
    """On a 1.9 km flat square seen from 1.7 m, the skyline is the DEM edge (>= ~150 m away, <= ~2.7 km)."""
    from crosslocate.dem.sources.synthetic import analytic_dem
    from crosslocate.pipelines.queries import photo_spot_stats, sample_photo_spots
    from crosslocate.render.views import ViewRenderer

    dem = analytic_dem("plane", size_px=64, spacing_m=30.0, height_m=500.0)
    w, s, e, n = dem.bounds_lonlat
    region = make_region("flat", box(w, s, e, n))
    cfg = dataclasses.replace(CFG, n_queries=3, pitch_deg=0.0, roll_deg=0.0, min_sky_fraction=0.3, min_horizon_m=100.0)
    poses = sample_photo_spots(region, dem, cfg, workers=1)
    assert len(poses) == 3
    with ViewRenderer(dem, cfg.screen_config()) as r:
        for p in poses:
            frac, dist = photo_spot_stats(r.render([p]).arrays["depth"][0])
            assert frac >= 0.3 and 100.0 <= dist <= 2800.0
    assert [p.lon for p in sample_photo_spots(region, dem, cfg, workers=1)] == [p.lon for p in poses]  # seeded
    with pytest.raises(ConfigError, match="min_sky_fraction"):
        sample_photo_spots(region, dem, dataclasses.replace(cfg, n_queries=1, min_horizon_m=20_000.0), workers=1)


def test_several_photos_per_spot_are_screened_and_share_a_position(tmp_path):
    """photos_per_spot=3: every photo passes the screen, spots hold 1..3 photos, seeded; one sparse position each."""
    from crosslocate.dem.config import GridConfig
    from crosslocate.dem.grid import sparse_positions
    from crosslocate.dem.sources.synthetic import analytic_dem
    from crosslocate.pipelines.queries import photo_spot_stats, sample_photo_spots
    from crosslocate.render.views import ViewRenderer

    dem = analytic_dem("plane", size_px=64, spacing_m=30.0, height_m=500.0)
    w, s, e, n = dem.bounds_lonlat
    region = make_region("flat", box(w, s, e, n))
    cfg = dataclasses.replace(
        CFG, n_queries=7, photos_per_spot=3, pitch_deg=4.0, roll_deg=0.0, min_sky_fraction=0.3, min_horizon_m=100.0
    )
    poses = sample_photo_spots(region, dem, cfg, workers=1)
    assert len(poses) == 7
    spots = [(p.lon, p.lat, p.alt_m) for p in poses]
    groups = list(dict.fromkeys(spots))
    counts = [spots.count(g) for g in groups]
    assert max(counts) <= 3 and len(groups) < 7  # some spots gave several photos
    assert spots == sorted(spots, key=groups.index)  # spot by spot
    assert len({p.yaw_deg for p in poses}) == 7  # each photo its own orientation
    with ViewRenderer(dem, cfg.screen_config()) as r:
        for p in poses:
            frac, dist = photo_spot_stats(r.render([p]).arrays["depth"][0])
            assert frac >= 0.25 and dist >= 100.0  # square screen render vs the photo's 4:3 crop
    assert sample_photo_spots(region, dem, cfg, workers=1) == poses
    assert len(sparse_positions(poses, dem, GridConfig(), region)) == len(groups)
    with pytest.raises(ConfigError, match="photos_per_spot"):
        dataclasses.replace(cfg, photos_per_spot=0)


def test_split_limits_cap_val_and_test_spots():
    """max_val_spots / max_test_spots: spots of a full split are passed over until n_queries photos;
    limits never reached give the same poses as no limits; a limit without a split rule is refused."""
    from crosslocate.dem.sources.synthetic import analytic_dem
    from crosslocate.pipelines.queries import sample_photo_spots

    dem = analytic_dem("plane", size_px=64, spacing_m=30.0, height_m=500.0)
    w, s, e, n = dem.bounds_lonlat
    region = make_region("flat", box(w, s, e, n))
    cut = (w + (e - w) / 3, w + 2 * (e - w) / 3)

    def split_of(lon, lat):  # west third test, middle val, east train
        lon = np.asarray(lon, np.float64)
        return np.where(lon < cut[0], 2, np.where(lon < cut[1], 1, 0)).astype(np.uint8)

    base = dataclasses.replace(
        CFG, n_queries=12, pitch_deg=0.0, roll_deg=0.0, min_sky_fraction=0.3, min_horizon_m=100.0
    )
    free = sample_photo_spots(region, dem, base, workers=1)
    assert np.bincount(split_of([p.lon for p in free], None), minlength=3)[1:].min() >= 2  # both splits drawn
    capped_cfg = dataclasses.replace(base, max_val_spots=1, max_test_spots=0)
    capped = sample_photo_spots(region, dem, capped_cfg, workers=1, split_of=split_of)
    codes = split_of([p.lon for p in capped], None)
    assert len(capped) == 12 and int((codes == 1).sum()) == 1 and int((codes == 2).sum()) == 0
    loose = dataclasses.replace(base, max_val_spots=100, max_test_spots=100)
    assert sample_photo_spots(region, dem, loose, workers=1, split_of=split_of) == free
    with pytest.raises(ConfigError, match="split"):
        sample_photo_spots(region, dem, capped_cfg, workers=1)
    with pytest.raises(ConfigError, match="max_test_spots"):
        dataclasses.replace(base, max_test_spots=-1)


def test_zero_limits_everywhere_but_train_make_a_training_only_set():
    """max_val_spots = max_test_spots = max_buffer_spots = 0 (the training-only photos): every kept
    spot lies in the training split, and a region without one is refused naming the full splits."""
    from crosslocate.dem.sources.synthetic import analytic_dem
    from crosslocate.pipelines.queries import sample_photo_spots
    from crosslocate.pipelines.train import TRAINING_PHOTOS_SEED_OFFSET, training_photos_config

    dem = analytic_dem("plane", size_px=64, spacing_m=30.0, height_m=500.0)
    w, s, e, n = dem.bounds_lonlat
    region = make_region("flat", box(w, s, e, n))
    cut = (w + (e - w) / 4, w + (e - w) / 2, w + 3 * (e - w) / 4)

    def split_of(lon, lat):  # west to east: test, val, buffer (255), train
        lon = np.asarray(lon, np.float64)
        return np.select([lon < cut[0], lon < cut[1], lon < cut[2]], [2, 1, 255], 0).astype(np.uint8)

    base = dataclasses.replace(
        CFG, n_queries=12, pitch_deg=0.0, roll_deg=0.0, min_sky_fraction=0.3, min_horizon_m=100.0, seed=4
    )
    free = sample_photo_spots(region, dem, base, workers=1)
    assert set(np.unique(split_of([p.lon for p in free], None))) == {0, 1, 2, 255}  # all four drawn freely
    cfg = training_photos_config(base, 10)
    assert (cfg.n_queries, cfg.seed) == (10, 4 + TRAINING_PHOTOS_SEED_OFFSET)
    assert (cfg.max_val_spots, cfg.max_test_spots, cfg.max_buffer_spots) == (0, 0, 0)
    assert (cfg.width_px, cfg.photo, cfg.photos_per_spot) == (base.width_px, base.photo, base.photos_per_spot)
    only = sample_photo_spots(region, dem, cfg, workers=1, split_of=split_of)
    assert len(only) == 10 and (split_of([p.lon for p in only], None) == 0).all()
    nowhere = dataclasses.replace(cfg, n_queries=2)
    all_val = lambda lon, lat: np.ones(len(lon), np.uint8)  # noqa: E731
    with pytest.raises(ConfigError, match=r"outside the full splits \[\(1, 0\), \(2, 0\), \(255, 0\)\]"):
        sample_photo_spots(region, dem, nowhere, workers=1, split_of=all_val)
    with pytest.raises(ConfigError, match="max_buffer_spots"):
        dataclasses.replace(base, max_buffer_spots=-2)


def test_csv_records_each_photos_split(tmp_path, cone, calls):
    """With the grid's split rule known (a pipeline preset), queries.csv has a ``split`` column equal
    to assign_splits of each photo's position; the reader ignores it."""
    import csv
    import types

    from crosslocate.dem.config import GridConfig
    from crosslocate.dem.splits import assign_splits

    dem, region = cone
    grid = GridConfig(split_method="blocks", split_block_m=300.0, split_buffer_m=0.0)
    queries = ensure_query_set(region, dem, types.SimpleNamespace(queries=CFG, grid=grid), tmp_path)
    rows = list(csv.DictReader((tmp_path / "cone" / "queries" / "queries.csv").read_text().splitlines()))
    codes = assign_splits([q.pose.lon for q in queries], [q.pose.lat for q in queries], region, grid)
    names = {0: "train", 1: "val", 2: "test", 255: "none"}
    assert [r["split"] for r in rows] == [names[int(c)] for c in codes]
    assert _poses(load_query_csv(tmp_path / "cone" / "queries" / "queries.csv")) == _poses(queries)
