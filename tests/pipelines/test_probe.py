"""Probe of issue 15 ("nothing silently wrong"): each case a demanding user found, run as that user would.

Every probe states the case and checks that it now fails loudly (exit code, a message naming the
file, row or value) or behaves; ``make probe`` runs this file alone. The detailed tests of each
mechanism live beside their modules (test_fileio, test_shards, test_manifest, test_verify,
test_descriptors, test_queries, test_poses, test_cmd_render, test_build, test_atlas, test_bench_localize).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from crosslocate.datasets.manifest import Manifest, shard_name
from crosslocate.datasets.shards import open_database
from crosslocate.errors import ShardCorruptError
from crosslocate.pipelines.build import build_database
from crosslocate.pipelines.cli import main
from crosslocate.pipelines.presets import get_preset

#: The probes' preset: 4 yaws, 1.5 km grid, 8 views per shard, 32 px (8 shards on the tiny world).
_PROBE_PRESET = get_preset("tiny").with_overrides(
    grid={"yaws_deg": (0.0, 90.0, 180.0, 270.0), "spacing_m": 1500.0},
    shard={"views_per_shard": 8},
    render={"size_px": 32},
)


@pytest.fixture(scope="module")
def tiny_db(tiny_world, tmp_path_factory):
    """A complete 8-shard database (built once for every probe)."""
    dem, region, _ = tiny_world
    out = tmp_path_factory.mktemp("probe") / "db"
    return build_database("uniform", _PROBE_PRESET, region, dem, out, scheduler="sync")


@pytest.fixture
def db(tiny_db, tmp_path):
    """A private copy of the database to damage."""
    return shutil.copytree(tiny_db, tmp_path / "db")


def test_probe_2_flipped_bits_never_decode_silently(db, capsys):
    """40 random single-bit flips across the shards: each one is a clear error naming the shard."""
    rng = np.random.default_rng(15)
    shards = sorted(db.glob("shard-*.h5"))
    for _ in range(40):
        victim = shards[int(rng.integers(len(shards)))]
        pristine = victim.read_bytes()
        raw = bytearray(pristine)
        raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
        victim.write_bytes(bytes(raw))
        with open_database(db) as d, pytest.raises(ShardCorruptError, match=victim.name):
            d.read_batch("depth", range(d.n_views))
        victim.write_bytes(pristine)
    assert main(["verify", str(db), "--no-values"]) == 0
    capsys.readouterr()


def test_probe_2_positions_file_damaged_or_deleted(db, capsys):
    raw = bytearray((db / "positions.npz").read_bytes())
    raw[len(raw) // 2] ^= 0x10
    (db / "positions.npz").write_bytes(bytes(raw))
    assert main(["verify", str(db), "--no-values"]) == 1
    assert "8 of 8 shards complete, 0 not yet built, 0 corrupt, positions.npz corrupt;" in capsys.readouterr().out
    (db / "positions.npz").unlink()
    assert main(["verify", str(db), "--no-values"]) == 1
    out = capsys.readouterr().out
    assert "0 corrupt, positions.npz missing;" in out and "positions.npz: missing" in out


def test_probe_2_flipped_bits_in_the_manifest(db, capsys):
    """200 random single-bit flips in manifest.json: each one is refused (invalid JSON, a fingerprint
    that does not match the content, an impossible shard record) or found by verify (a shard or
    positions.npz no longer matching its record), unless it only touched the free-form ``info`` or
    left the parsed content unchanged (e.g. ``1e-05`` -> ``1E-05``)."""
    import json

    from crosslocate.datasets.verify import verify_database

    path = db / "manifest.json"
    pristine = path.read_bytes()
    original, info_at = json.loads(pristine), pristine.index(b'"info"')
    rng = np.random.default_rng(215)
    for _ in range(200):
        raw = bytearray(pristine)
        k = int(rng.integers(len(raw)))
        raw[k] ^= 1 << int(rng.integers(8))
        path.write_bytes(bytes(raw))
        report = verify_database(db, check_values=False)
        if report.exit_code != 1:
            assert report.exit_code == 0 and (k > info_at or json.loads(bytes(raw)) == original), bytes(
                raw[k - 40 : k + 40]
            )
    path.write_bytes(pristine)
    raw = bytearray(pristine)
    raw[pristine.index(b'"spacing_m": 1500.0') + 14] ^= 0x01  # 1500.0 -> 1501.0
    path.write_bytes(bytes(raw))
    assert main(["verify", str(db), "--no-values"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"CORRUPT: {db}: manifest.json corrupt; no shard checked")
    assert "fingerprint does not match its content: edited or damaged" in out
    for key in (b'"shards"', b'"positions"', b'"fingerprint"'):  # a flipped key name hides what it holds
        raw = bytearray(pristine)
        raw[pristine.index(key) + 5] ^= 0x04
        path.write_bytes(bytes(raw))
        assert main(["verify", str(db), "--no-values"]) == 1
        assert "unknown manifest keys" in capsys.readouterr().out


def test_probe_7_partial_database_report_is_readable(db, capsys):
    m = Manifest.load(db)
    Manifest(**{**{k: getattr(m, k) for k in m.__dataclass_fields__}, "shards": m.shards[:3]}).save(db)
    for sid in range(3, 8):
        (db / shard_name(sid)).unlink()
    assert main(["verify", str(db), "--no-values"]) == 3  # incomplete: every built shard is sound
    out = capsys.readouterr().out
    assert out.startswith("INCOMPLETE") and "3 of 8 shards complete, 5 not yet built, 0 corrupt" in out
    assert "not yet built: shards 3-7" in out and len(out.splitlines()) == 2


def _resume(db, world, monkeypatch):
    """Rerun the build of ``db`` through the CLI; returns the exit code.

    The CLI cannot set the yaws, so its preset is swapped for :data:`_PROBE_PRESET` (the database's).
    """
    from crosslocate.pipelines.presets import Preset

    monkeypatch.setattr(Preset, "with_overrides", lambda self, **kw: _PROBE_PRESET)
    dem, region, _ = world
    return main(["build", "uniform", "--region", region, "--dem", dem, "--preset", "tiny", "--spacing-m", "1500",
                 "--size-px", "32", "--views-per-shard", "8", "--scheduler", "sync", "--out", str(db)])  # fmt: skip


def test_probe_6_resumed_shard_is_byte_identical(db, tiny_world, monkeypatch, database_difference):
    """A shard lost (as after kill -9) and rebuilt by a resumed build has the very same bytes."""
    before = {p.name: p.read_bytes() for p in db.glob("*") if p.is_file() and p.name != "preview.png"}
    keep = db.parent / "before"
    shutil.copytree(db, keep)
    (db / shard_name(5)).unlink()
    assert _resume(db, tiny_world, monkeypatch) == 0
    after = {p.name: p.read_bytes() for p in db.glob("*") if p.is_file() and p.name != "preview.png"}
    assert after == before, database_difference(keep, db)


def test_probe_1_full_disk_before_a_shard(db, tiny_world, monkeypatch, capsys):
    """No room for the next shard: exit 2 and one message (path, space left, shards kept, how to resume)."""
    from collections import namedtuple

    from crosslocate import fileio

    (db / shard_name(6)).unlink()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, 300_000))
    assert _resume(db, tiny_world, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "shard-00006.h5: disk full: 300,000 bytes left" in err
    assert err.endswith("7 of 8 shards complete and kept; free space and rerun the same command to resume")
    assert not list(db.glob(".*.tmp")) and main(["verify", str(db)]) == 3  # what was built still verifies


@pytest.mark.parametrize(
    ("code", "victim"), [("EIO", "shard-00006.h5"), ("EROFS", "manifest.json"), ("EACCES", "shard-00006.h5")]
)
def test_probe_1_other_write_failures(db, tiny_world, monkeypatch, capsys, code, victim):
    """An I/O error, a read-only file system or a refused permission while a shard or the manifest is
    written: exit 2 and one line naming the file and the OS reason; no temporary file, no traceback."""
    import errno
    import os
    from pathlib import Path

    from crosslocate import fileio

    (db / shard_name(6)).unlink()
    real = fileio.fsync_file
    number = getattr(errno, code)

    def failing(path):
        if Path(path).name.startswith(f".{victim}."):
            raise OSError(number, os.strerror(number))
        real(path)

    monkeypatch.setattr(fileio, "fsync_file", failing)
    assert _resume(db, tiny_world, monkeypatch) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert f"{db / victim}: cannot write: {os.strerror(number)} [{code}]; " in last, last
    assert last.endswith("7 of 8 shards complete and kept; rerun the same command to resume")
    assert "Traceback" not in err and not list(db.glob(".*.tmp"))


def test_probe_1_file_too_large_outside_our_writers(monkeypatch, capsys):
    """EFBIG (a file over the file system's size limit) raised anywhere is the disk-full line, exit 2."""
    import errno

    from crosslocate.pipelines.commands import verify

    def too_large(args):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(verify, "run", too_large)
    assert main(["verify", "anything"]) == 2
    assert "error: disk full: [Errno 27] File too large; free space and rerun" in capsys.readouterr().err


def test_probe_5_camera_underground_and_huge_views(tiny_world, tmp_path, capsys):
    from crosslocate.dem.sources import open_dem

    dem, _, _ = tiny_world
    with open_dem(dem) as d:
        w, s, e, n = d.bounds_lonlat
        lon, lat = (w + e) / 2, (s + n) / 2
        ground = float(d.elevation([lon], [lat])[0])
    base = ["render-view", "--dem", dem, "--lon", str(lon), "--lat", str(lat), "-o", str(tmp_path / "o")]
    assert main([*base, "--alt", str(ground - 300.0), "--size", "8"]) == 2
    assert f"the terrain, which is at {ground:.1f} m there" in capsys.readouterr().err
    assert main([*base, "--size", "100000"]) == 2 and "1..4096" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    _, region, _ = tiny_world
    for size in ("100000", "0"):  # a database of huge (or empty) views: refused before anything is written
        args = ["build", "uniform", "--region", region, "--dem", dem, "--preset", "tiny", "--size-px", size,
                "--scheduler", "sync", "--out", str(tmp_path / "db")]  # fmt: skip
        assert main(args) == 2 and f"size_px {size}: the view side must be within 1..4096" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()


def test_probe_5_query_row_under_the_terrain(tiny_world, tmp_path):
    """A query CSV row whose alt_m lies 300 m under the DEM's terrain is refused naming the file, the row and the
    terrain height there (the DEM's own elevation); an empty alt_m stands on the ground."""
    from crosslocate.datasets.queries import load_query_csv
    from crosslocate.dem.sources import open_dem
    from crosslocate.errors import QueryCSVError

    dem, _, _ = tiny_world
    header = "image,lat,lon,alt_m,yaw_deg,pitch_deg,roll_deg,fov_deg\n"
    with open_dem(dem) as d:
        w, s, e, n = d.bounds_lonlat
        lon, lat = (w + e) / 2, (s + n) / 2
        ground = float(d.elevation([lon], [lat])[0])
        (tmp_path / "q.csv").write_text(
            header + f"p.png,{lat!r},{lon!r},,0,0,0,50\np.png,{lat!r},{lon!r},{ground - 300.0!r},0,0,0,50\n"
        )
        with pytest.raises(
            QueryCSVError, match=rf"q\.csv:3: alt_m: .* is below the terrain, which is at {ground:.1f} m there"
        ):
            load_query_csv(tmp_path / "q.csv", dem=d, check_images=False)


def test_probe_5_bogus_scheduler_writes_nothing(tiny_world, tmp_path, capsys):
    dem, region, _ = tiny_world
    out = tmp_path / "never"
    for bogus in ("tcp://127.0.0.1:1", "mycluster", "tcp://nohost"):
        args = ["build", "uniform", "--region", region, "--dem", dem, "--preset", "tiny", "--scheduler", bogus,
                "--out", str(out)]  # fmt: skip
        assert main(args) == 2
        assert "scheduler" in capsys.readouterr().err and not out.exists()


def test_probe_4_query_csv_with_bad_photos(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    header = "image,lat,lon,alt_m,yaw_deg,pitch_deg,roll_deg,fov_deg\n"
    cases = {
        "ok.png,46,8,1000,0,0,0,60\nmissing.png,46,8,1000,0,0,0,60\n": ":3: image .*missing.png does not exist",
        "dot.png,46,8,1000,0,0,0,60\n": ":2: image .*dot.png is 1x1 px",
        "ok.png,46,8,1000,0,0,0,0.5\n": ":2: column fov_deg: 0.5 must be within",
    }
    import re

    for rows, needle in cases.items():
        (tmp_path / "q.csv").write_text(header + rows)
        assert main(["queries", "show", str(tmp_path / "q.csv")]) == 2
        assert re.search(needle, capsys.readouterr().err)


def test_probe_4_localize_checks_the_photo_and_fov_before_any_work(tmp_path, capsys, monkeypatch):
    """localize opens and size-checks its photo and bounds --fov (as a query CSV row is checked) before
    the network is loaded: a garbage checkpoint is never read, nothing is written."""
    from PIL import Image

    from crosslocate.model import checkpoint

    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    (tmp_path / "text.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    (tmp_path / "db").mkdir()
    loads = []
    monkeypatch.setattr(checkpoint, "load_network", lambda *a, **k: loads.append(a))
    cases = {
        ("dot.png", "50"): "photo: image .*dot.png is 1x1 px; a query photo needs at least 8 px a side",
        ("text.jpg", "50"): "photo: image .*text.jpg is not a readable image",
        ("nope.png", "50"): "photo: image .*nope.png does not exist",
        ("ok.png", "2"): r"--fov: 2.0 must be within \[5, 150\] degrees",
        ("ok.png", "170"): r"--fov: 170.0 must be within \[5, 150\] degrees",
        ("ok.png", "nan"): r"--fov: nan must be within \[5, 150\] degrees",
    }
    import re

    out = tmp_path / "out"
    for (photo, fov), needle in cases.items():
        args = ["localize", str(tmp_path / photo), "--db", str(tmp_path / "db"), "--checkpoint",
                str(tmp_path / "ckpt.pt"), "--fov", fov, "--out", str(out)]  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(needle, err[0]), err
    assert loads == [] and not out.exists()


def test_probe_6_existing_output_file_is_never_clobbered(tiny_world, tmp_path, capsys, monkeypatch):
    """render-view -o and localize --out naming an existing file (or render-view a non-empty folder):
    exit 2 before any work, the file untouched."""
    from PIL import Image

    from crosslocate.model import checkpoint

    dem, _, _ = tiny_world
    keep = tmp_path / "results.txt"
    keep.write_text("keep me")
    loads = []
    monkeypatch.setattr(checkpoint, "load_network", lambda *a, **k: loads.append(a))
    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    (tmp_path / "db").mkdir()
    args = ["localize", str(tmp_path / "ok.png"), "--db", str(tmp_path / "db"), "--checkpoint",
            str(tmp_path / "ckpt.pt"), "--fov", "50", "--out", str(keep)]  # fmt: skip
    assert main(args) == 2 and "is an existing file" in capsys.readouterr().err and loads == []
    view = ["render-view", "--dem", dem, "--lat", "0", "--lon", "0", "--size", "8"]  # refused before the DEM is read
    assert main([*view, "-o", str(keep)]) == 2 and "is an existing file" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "yaw000_depth.npy").write_bytes(b"earlier result")
    assert main([*view, "-o", str(tmp_path / "full")]) == 2 and "--overwrite" in capsys.readouterr().err
    assert keep.read_text() == "keep me" and (tmp_path / "full" / "yaw000_depth.npy").read_bytes() == b"earlier result"


def test_probe_4_sideways_phone_photo_is_read_upright(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 reaches the network exactly as the same photo
    stored upright (detailed case: tests/datasets/test_queries.py::test_exif_orientation_is_applied)."""
    from PIL import Image

    from crosslocate.datasets.queries import Query
    from crosslocate.datasets.views import QueryDataset
    from crosslocate.dem.poses import Pose

    rng = np.random.default_rng(4)
    upright = np.repeat(np.repeat(rng.integers(0, 255, (12, 8, 3), dtype=np.uint8), 8, 0), 8, 1)  # 96 x 64
    Image.fromarray(upright).save(tmp_path / "upright.png")
    img = Image.fromarray(np.ascontiguousarray(np.rot90(upright, 1)))  # as the sensor stored it (sideways)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    img.save(tmp_path / "phone.png", exif=exif)
    pose = Pose(lon=7.5, lat=46.5, alt_m=2000.0, fov_deg=40.0)
    qs = QueryDataset([Query(str(tmp_path / n), pose) for n in ("upright.png", "phone.png")], 32)
    assert qs.photo(0).shape == qs.photo(1).shape and np.array_equal(qs.photo(0), qs.photo(1))


def test_probe_6_descriptor_cache_never_crosses_modality_or_database(tiny_db, tmp_path):
    """Descriptors cached for one modality or database are never served for another: each request
    equals a fresh, uncached computation (detailed case: tests/pipelines/test_descriptors.py)."""
    from dataclasses import replace

    import torch
    from torch import nn

    from crosslocate.datasets.views import ViewDataset
    from crosslocate.model.train import extract_descriptors
    from crosslocate.pipelines import descriptors as D

    class Mean(nn.Module):
        def forward(self, x):
            return nn.functional.normalize(torch.cat([x.mean(dim=(2, 3)), torch.ones(len(x), 1)], dim=1), dim=1)

    other = shutil.copytree(tiny_db, tmp_path / "other")  # another database: shards 0 and 1 swapped
    (other / shard_name(0)).rename(other / "swap")
    (other / shard_name(1)).rename(other / shard_name(0))
    (other / "swap").rename(other / shard_name(1))
    m = Manifest.load(other)
    s0, s1 = (
        replace(m.shards[1], shard_id=0, path=shard_name(0)),
        replace(m.shards[0], shard_id=1, path=shard_name(1)),
    )
    Manifest(**{**{k: getattr(m, k) for k in m.__dataclass_fields__}, "shards": (s0, s1, *m.shards[2:])}).save(other)
    net, dev, cache = Mean(), torch.device("cpu"), tmp_path / "cache"
    seen = []
    for db, modality in ((tiny_db, "depth"), (tiny_db, "semantic"), (other, "depth"), (tiny_db, "depth")):
        ds = ViewDataset(db, modality, size_px=16)
        got = D.cached_descriptors(net, ds, dev, cache, "db", "ckpt", batch_size=8)
        assert np.array_equal(got, extract_descriptors(net, ds, dev, batch_size=8))
        seen.append(got)
    assert not np.array_equal(seen[0], seen[1]) and not np.array_equal(seen[0], seen[2])
    assert len(list(cache.glob("db-*.npy"))) == 3  # the last request was served from the first entry


def test_probe_6_two_fresh_builds_are_byte_identical(tiny_db, tiny_world, tmp_path, database_difference):
    """Building the same database again from nothing gives the very same bytes (manifest, positions, shards)."""
    dem, region, _ = tiny_world
    again = build_database("uniform", _PROBE_PRESET, region, dem, tmp_path / "again", scheduler="sync")
    names = sorted(p.name for p in tiny_db.glob("*") if p.is_file() and p.name != "preview.png")
    assert names == sorted(p.name for p in again.glob("*") if p.is_file() and p.name != "preview.png")
    assert all((tiny_db / n).read_bytes() == (again / n).read_bytes() for n in names), database_difference(
        tiny_db, again
    )
