"""build_database on a tiny synthetic DEM: verify, resume, corruption repair, refusal, coverage, determinism.

The DEM is an 8 km x 8 km seeded alpine raster at 100 m (built while the tests run); the region is
its central 80 %. Builds use the ``tiny`` preset with 4 yaws, a 1.5 km grid and 2 positions per
shard (16 positions, 64 views of 64 px, 8 shards) and run in-process (``sync``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crosslocate.datasets.manifest import Manifest, shard_name
from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
from crosslocate.datasets.shards import open_database
from crosslocate.datasets.verify import verify_database
from crosslocate.errors import ManifestMismatchError, OutsideCoverageError
from crosslocate.pipelines.build import build_database, calibration_samples
from crosslocate.pipelines.cli import main
from crosslocate.pipelines.plan import shard_bytes_estimate
from crosslocate.pipelines.presets import get_preset

YAWS = (0.0, 90.0, 180.0, 270.0)


def tiny_preset(**render):
    return get_preset("tiny").with_overrides(
        grid={"yaws_deg": YAWS, "spacing_m": 1500.0}, shard={"views_per_shard": 8}, render=render or None
    )


def build(world, out, **kw):
    dem, region, _ = world
    kw.setdefault("scheduler", "sync")
    return build_database("uniform", kw.pop("preset", tiny_preset()), region, dem, out, **kw)


def arrays_of(db_dir):
    with open_database(db_dir) as db:
        idx = np.arange(db.n_views)
        return db.table(), {m: db.read_batch(m, idx) for m in Modality}


def test_build_verify_resume_and_repair(tiny_world, tmp_path):
    out = build(tiny_world, tmp_path / "db")
    assert out == tmp_path / "db"
    report = verify_database(out)
    assert report.ok and report.n_ok == 8 and report.n_views == 64
    table, arrays = arrays_of(out)
    assert len(np.unique(table["view_id"])) == 64
    assert set(np.unique(table["yaw_deg"]).tolist()) == set(YAWS)
    assert np.all(np.bincount(table["position_id"]) == 4)  # 4 yaws of every position
    depth = arrays[Modality.DEPTH]
    assert depth.shape == (64, 64, 64) and np.all((depth >= 0) | (depth == SKY_DEPTH_M))
    assert (depth > 0).mean() > 0.3 and (depth == SKY_DEPTH_M).mean() > 0.05  # terrain and sky in view

    # the first-shard size estimate (free-space check before any shard exists) is generous, not wild
    sizes = [p.stat().st_size for p in out.glob("shard-*.h5")]
    assert max(sizes) <= shard_bytes_estimate(8, 64) <= 3 * min(sizes)

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.h5")}
    build(tiny_world, out)  # complete: nothing is rendered again
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.h5")} == mtimes

    victim = out / shard_name(3)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 3] ^= 0x5A
    victim.write_bytes(bytes(raw))
    (out / shard_name(5)).unlink()
    assert verify_database(out).bad_shards() == [3, 5]
    build(tiny_world, out)  # redoes exactly the corrupt and the missing shard
    assert verify_database(out).ok
    now = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.h5")}
    assert {n for n in now if now[n] != mtimes.get(n)} == {shard_name(3), shard_name(5)}
    table2, arrays2 = arrays_of(out)
    for m in Modality:
        assert np.array_equal(arrays2[m], arrays[m])
    assert np.array_equal(table2, table)


def test_other_config_refused_unless_overwrite(tiny_world, tmp_path):
    out = build(tiny_world, tmp_path / "db")
    with pytest.raises(ManifestMismatchError, match=r"render\.size_px: 64 -> 32.*--overwrite"):
        build(tiny_world, out, preset=tiny_preset(size_px=32))
    build(tiny_world, out, preset=tiny_preset(size_px=32), overwrite=True)
    assert Manifest.load(out).render["size_px"] == 32 and verify_database(out).ok


def database_bytes(db_dir):
    """{file name: bytes} of a database's manifest, positions and shards."""
    names = ["manifest.json", "positions.npz", *sorted(p.name for p in Path(db_dir).glob("shard-*.h5"))]
    return {n: (Path(db_dir) / n).read_bytes() for n in names}


def test_same_config_gives_identical_bytes(tiny_world, tmp_path, database_difference):
    a, b = build(tiny_world, tmp_path / "a"), build(tiny_world, tmp_path / "b")
    t1, a1 = arrays_of(a)
    t2, a2 = arrays_of(b)
    for m in Modality:
        assert np.array_equal(a1[m], a2[m])
    assert np.array_equal(t1, t2)
    bytes_a, bytes_b = database_bytes(a), database_bytes(b)
    assert len(bytes_a) == 2 + 8
    assert bytes_a == bytes_b, database_difference(a, b)


def test_coverage_error_and_clip(tiny_world, tmp_path, caplog):
    import logging
    import re

    from crosslocate.dem.grid import uniform_grid

    dem, _, halfout = tiny_world
    with pytest.raises(OutsideCoverageError, match=r"halfout.*outside the DEM.*--clip-to-dem"):
        build_database("uniform", tiny_preset(), halfout, dem, tmp_path / "db", scheduler="sync")
    assert not (tmp_path / "db").exists()
    with caplog.at_level(logging.INFO, logger="crosslocate.pipelines.build"):
        out = build_database(
            "uniform", tiny_preset(), halfout, dem, tmp_path / "db", scheduler="sync", clip_to_dem=True
        )
    assert verify_database(out).ok
    # the log states covered vs region positions, counted independently here
    m = re.search(r"covers (\d+) of the (\d+) grid positions", caplog.text)
    from crosslocate.dem.regions import get_region
    from crosslocate.dem.sources import open_dem

    reg = get_region(halfout)
    with open_dem(dem) as d:
        n_covered = len(uniform_grid(reg, d, tiny_preset().grid))
    n_region = len(uniform_grid(reg, None, tiny_preset().grid))
    assert m and (int(m[1]), int(m[2])) == (n_covered, n_region) and 0 < n_covered < n_region


def test_dry_run_writes_nothing(tiny_world, tmp_path):
    summary = build(tiny_world, tmp_path / "db", dry_run=True)
    assert not (tmp_path / "db").exists() and list(tmp_path.iterdir()) == []  # the scratch shards are gone
    assert (summary["n_positions"], summary["n_views"], summary["n_shards"]) == (16, 64, 8)
    assert summary["estimated_bytes"] > 0 and summary["estimated_s"] > 0
    cal = summary["calibration"]
    # the sync runner has one worker: 2 of the plan's shards (2 positions each), x 4 yaws, end to end
    assert cal["workers"] == 1 and cal["views"] == 2 * 2 * len(YAWS)
    assert abs(sum(cal["shares"].values()) - 1.0) < 1e-9 and cal["shares"]["render"] > 0
    assert summary["estimated_s"] == pytest.approx(64 / cal["views_per_s"] + cal["start_s"], abs=0.1)
    assert summary["terrain"]["atlases"] == 1 and "shards spread over the" in summary["assumptions"]


def test_calibration_takes_whole_shards_spread_over_the_plan():
    from crosslocate.pipelines.plan import ShardPlan

    plan = ShardPlan(order=np.arange(12)[::-1].copy(), bounds=np.array([0, 3, 6, 9, 12]), views_per_position=12)
    got = calibration_samples(plan, 2, 2)  # shards 0 and 3, their first 2 positions in storage order
    assert [g.tolist() for g in got] == [[11, 10], [2, 1]]
    assert [g.tolist() for g in calibration_samples(plan, 9, 5)] == [[11, 10, 9], [8, 7, 6], [5, 4, 3], [2, 1, 0]]
    assert [g.tolist() for g in calibration_samples(plan, 1, 20)] == [[11, 10, 9]]


def test_sparse_and_compact_from_given_queries(tiny_world, tmp_path):
    from crosslocate.datasets.queries import Query
    from crosslocate.dem.geodesy import geodesic_distance_m
    from crosslocate.dem.poses import Pose
    from crosslocate.dem.sources import open_dem

    dem_path, region, _ = tiny_world
    with open_dem(dem_path) as dem:
        w, s, e, n = dem.bounds_lonlat
        lon = np.array([w + 0.4 * (e - w), w + 0.6 * (e - w), w + 0.5 * (e - w)])
        lat = np.array([s + 0.4 * (n - s), s + 0.5 * (n - s), s + 0.6 * (n - s)])
        ground = dem.sample(lon, lat)
    queries = [Query(image=f"q{i}.png", pose=Pose(lon=lo, lat=la, alt_m=g + 1.7, yaw_deg=10.0, fov_deg=45.0))
               for i, (lo, la, g) in enumerate(zip(lon, lat, ground, strict=True))]  # fmt: skip
    pre = tiny_preset()
    sparse = build_database("sparse", pre, region, dem_path, tmp_path / "s", queries=queries, scheduler="sync")
    t, _ = arrays_of(sparse)
    assert len(t) == 12 and np.allclose(np.unique(t["lon"]), np.sort(lon))
    assert np.allclose(t["alt_m"][::4], ground + 1.7)  # queries' own altitudes
    compact = build_database("compact", pre, region, dem_path, tmp_path / "c", queries=queries, scheduler="sync")
    t, _ = arrays_of(compact)
    if len(t):  # every compact position lies within the radius of a (training) query
        d = np.min([geodesic_distance_m(t["lon"], t["lat"], q.pose.lon, q.pose.lat) for q in queries], axis=0)
        assert d.max() <= pre.grid.compact_radius_m + 1.0
    assert verify_database(compact).ok


def test_heldout_database_is_the_val_and_test_grid_near_their_photos(tiny_world, tmp_path):
    """kind heldout: without a radius every val/test position of the uniform grid; with
    eval.database_radius_m only those within it (geodesic, 1 m slack) of a photo of their own split."""
    from crosslocate.datasets.queries import Query
    from crosslocate.dem.geodesy import geodesic_distance_m
    from crosslocate.dem.grid import uniform_grid
    from crosslocate.dem.poses import Pose
    from crosslocate.dem.sources import open_dem
    from crosslocate.dem.splits import assign_splits

    dem_path, region, _ = tiny_world
    pre = tiny_preset().with_overrides(grid={"split_block_m": 2000.0, "split_buffer_m": 0.0, "split_method": "blocks"})
    with open_dem(dem_path) as dem:
        w, s, e, n = dem.bounds_lonlat
        lon, lat = (a.ravel() for a in np.meshgrid(np.linspace(w + 0.25 * (e - w), w + 0.75 * (e - w), 4),
                                                   np.linspace(s + 0.25 * (n - s), s + 0.75 * (n - s), 4)))  # fmt: skip
        ground = dem.sample(lon, lat)
        uni = uniform_grid(region, dem, pre.grid)
    queries = [Query(image=f"q{i}.png", pose=Pose(lon=lo, lat=la, alt_m=g + 1.7, yaw_deg=10.0, fov_deg=45.0))
               for i, (lo, la, g) in enumerate(zip(lon, lat, ground, strict=True))]  # fmt: skip
    qsplit = assign_splits(lon, lat, region, pre.grid)
    assert {1, 2} <= set(qsplit.tolist()) and {1, 2} <= set(uni.split.tolist())
    every = build_database("heldout", pre, region, dem_path, tmp_path / "all", queries=queries, scheduler="sync")
    t, _ = arrays_of(every)
    held = np.isin(uni.split, [1, 2])
    assert np.allclose(np.unique(t["lon"]), np.unique(uni.lon[held])) and set(t["split"].tolist()) == {1, 2}
    near = pre.with_overrides(eval={"database_radius_m": 250.0})
    some = build_database("heldout", near, region, dem_path, tmp_path / "near", queries=queries, scheduler="sync")
    t2, _ = arrays_of(some)
    assert 0 < len(t2) < len(t)
    for code in (1, 2):
        rows = t2["split"] == code
        mine = qsplit == code
        d = np.min([geodesic_distance_m(t2["lon"][rows], t2["lat"][rows], lo, la)
                    for lo, la in zip(lon[mine], lat[mine], strict=True)], axis=0)  # fmt: skip
        assert d.max() <= 251.0
    assert Manifest.load(some).info["database_radius_m"] == 250.0 and verify_database(some).ok


def test_cli_build_and_verify(tiny_world, tmp_path, capsys):
    dem, region, _ = tiny_world
    out = tmp_path / "db"
    args = ["build", "uniform", "--region", region, "--dem", dem, "--preset", "tiny", "--spacing-m", "2000",
            "--size-px", "32", "--scheduler", "sync", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert main(["verify", str(out)]) == 0
    assert (out / "preview.png").is_file()  # written when the build completed
    from PIL import Image

    from crosslocate.datasets.shards import open_database

    with open_database(out) as db:
        pid = int(db.table()["position_id"][0])
    assert main(["verify", str(out), "--preview", str(tmp_path / "p.png"), "--position", str(pid)]) == 0
    w, h = Image.open(tmp_path / "p.png").size
    assert w > 2 * h  # 12 yaw columns x 3 modality rows
    assert main([*args[:-2], "--out", str(out), "--size-px", "48"]) == 2  # mismatch -> CLI error code
    assert "--overwrite" in capsys.readouterr().err


def test_kill_and_resume_equals_uninterrupted(tiny_world, tmp_path, database_difference):
    """A CLI build killed with SIGKILL mid-build, rerun, verifies and equals an uninterrupted build."""
    dem, region, _ = tiny_world
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "crosslocate.pipelines.cli", "-q", "build", "uniform", "--region", region,
           "--dem", dem, "--preset", "tiny", "--spacing-m", "1000", "--size-px", "32", "--views-per-shard", "12",
           "--scheduler", "sync", "--out", str(out)]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if (out / "manifest.json").exists() and len(Manifest.load(out).shards) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"build exited with {proc.returncode} before it could be killed")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed = Manifest.load(out)
    assert 3 <= len(killed.shards) < killed.n_planned_shards, "the build finished before the kill"
    assert subprocess.run(cmd, timeout=300, check=False).returncode == 0
    assert verify_database(out).ok
    ref = tmp_path / "ref"
    assert subprocess.run([*cmd[:-1], str(ref)], timeout=300, check=False).returncode == 0
    assert database_bytes(out) == database_bytes(ref), database_difference(out, ref)  # shards and manifest alike


def _cli_build(world, out, *extra):
    dem, region, _ = world
    return ["build", "uniform", "--region", region, "--dem", dem, "--preset", "tiny", "--spacing-m", "1500",
            "--size-px", "32", "--views-per-shard", "12", "--scheduler", "sync", "--out", str(out), *extra]  # fmt: skip


def test_disk_full_mid_write_is_one_error_and_resumes(tiny_world, tmp_path, monkeypatch, capsys):
    """ENOSPC while the third shard is written: exit 2, one message, no temp file, built shards verify, rerun finishes."""
    import errno
    import re

    from crosslocate import fileio

    out = tmp_path / "db"
    real, shards = fileio.fsync_file, []

    def full_from_the_third_shard(path):
        if Path(path).name.startswith(".shard-"):
            shards.append(path)
            if len(shards) >= 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path)

    monkeypatch.setattr(fileio, "fsync_file", full_from_the_third_shard)
    assert main(_cli_build(tiny_world, out)) == 2
    err = capsys.readouterr().err
    m = re.search(r"error: \S+shard-00002\.h5: disk full: [\d,]+ bytes left on its file system \(No space left on "
                  r"device\); 2 of (\d+) shards complete and kept; free space and rerun the same command to resume",
                  err)  # fmt: skip
    assert m, err
    assert "Traceback" not in err and list(out.glob(".*.tmp")) == [] and not (out / shard_name(2)).exists()
    report = verify_database(out)
    assert report.problems == [] and report.n_ok == 2 and report.exit_code == 3  # incomplete, not corrupt
    monkeypatch.setattr(fileio, "fsync_file", real)
    assert main(_cli_build(tiny_world, out)) == 0 and verify_database(out).ok
    assert len(Manifest.load(out).shards) == int(m[1])


def test_free_space_checked_before_each_shard(tiny_world, tmp_path, monkeypatch, capsys):
    """A fresh build with less room than its first shard needs: refused before any view is rendered
    (until a shard exists, the expected size is the estimate from the view size), and no shard byte is written."""
    from collections import namedtuple

    from crosslocate import fileio
    from crosslocate.render.views import ViewRenderer

    out = tmp_path / "db"
    usage = namedtuple("usage", "total used free")
    free = fileio.RESERVE_BYTES + 40_000  # less than one 12-view shard of 32 px (~50 KB written)
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(4 << 20, 3 << 20, free))
    writes, rendered = [], []
    monkeypatch.setattr(fileio, "fsync_file", lambda p: writes.append(Path(p).name))
    real_render = ViewRenderer.render
    monkeypatch.setattr(
        ViewRenderer, "render", lambda self, poses: rendered.append(len(poses)) or real_render(self, poses)
    )
    assert main(_cli_build(tiny_world, out)) == 2
    err = capsys.readouterr().err
    assert f"shard-00000.h5: disk full: {free:,} bytes left, a shard (estimated from the view size) needs about" in err
    assert "0 of " in err and "free space and rerun" in err
    assert rendered == [] and not [w for w in writes if w.startswith(".shard-")]


def test_manifest_saved_in_batches_and_whenever_the_build_stops(tmp_path):
    """Rewriting the manifest costs O(shards): it is saved after the first shard, then once 50 times its
    last save cost has passed (here: not again within 40 fast shards), and always when the build ends
    or stops, with every finished shard."""
    from types import SimpleNamespace

    from crosslocate.errors import DiskFullError
    from crosslocate.pipelines import build

    saves = []

    class FakeManifest:
        def __init__(self, shards=()):
            self.shards = tuple(shards)

        def with_shard(self, record):
            return FakeManifest((*self.shards, record))

        def save(self, db_dir):
            time.sleep(0.02)  # next save not before 50 x 20 ms = 1 s
            saves.append(len(self.shards))

    def runner(n, fail_at=None):
        def map_unordered(fn, jobs):
            for i in range(n):
                time.sleep(0.002)
                if i == fail_at:
                    yield SimpleNamespace(shard_id=i), None, DiskFullError("disk full")
                yield SimpleNamespace(shard_id=i), SimpleNamespace(shard_id=i, n_views=2), None

        return SimpleNamespace(map_unordered=map_unordered)

    out = build.run_shards(runner(40), [], FakeManifest(), tmp_path, 80, "t")
    assert len(out.shards) == 40 and saves[0] == 1 and saves[-1] == 40 and len(saves) <= 3
    saves.clear()
    with pytest.raises(DiskFullError):
        build.run_shards(runner(40, fail_at=25), [], FakeManifest(), tmp_path, 80, "t")
    assert saves[-1] == 25  # the 25 finished shards are recorded before the error surfaces
