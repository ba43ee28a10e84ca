"""ShardWriter / ShardReader / open_database on small fake arrays (no renderer involved)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from crosslocate.datasets import codecs
from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.manifest import Manifest, ShardRecord, shard_name
from crosslocate.datasets.schema import ALL_MODALITIES, SKY_DEPTH_M, VIEW_DTYPE, Modality
from crosslocate.datasets.shards import ShardReader, ShardWriter, open_database, stored_bytes
from crosslocate.errors import ConfigError, NotBuiltError, ShardCorruptError

SIZE = 8
CFG = ShardConfig(views_per_shard=4)


def fake_views(n, seed, first_view=0):
    """n views: depth ramps (metres) with a sky band, silhouette and semantic ids, plus table rows."""
    rng = np.random.default_rng(seed)
    depth = rng.uniform(5.0, 50_000.0, (n, SIZE, SIZE)).astype(np.float32)
    depth[:, :2] = SKY_DEPTH_M
    sil = (rng.random((n, SIZE, SIZE)) < 0.2).astype(np.uint8)
    sem = rng.integers(0, 7, (n, SIZE, SIZE), dtype=np.uint8)
    rows = np.zeros(n, VIEW_DTYPE)
    rows["view_id"] = np.arange(first_view, first_view + n)
    rows["position_id"] = rows["view_id"] // 2
    rows["yaw_deg"] = (rows["view_id"] % 2) * 180
    rows["lon"] = 7.5 + rows["view_id"] * 1e-3
    return {Modality.DEPTH: depth, Modality.SILHOUETTE: sil, Modality.SEMANTIC: sem}, rows


def write_shard(path, arrays, rows, cfg=CFG):
    with ShardWriter(path, ALL_MODALITIES, SIZE, cfg, {"shard_id": 0}) as w:
        half = len(rows) // 2  # two add() calls: appending works
        w.add({m: a[:half] for m, a in arrays.items()}, rows[:half])
        w.add({m: a[half:] for m, a in arrays.items()}, rows[half:])
        return w.commit()


def make_db(db_dir, counts=(4, 3), n_planned=None):
    """A database folder with shards of the given view counts; returns the arrays and rows written."""
    db_dir.mkdir(parents=True, exist_ok=True)
    records, all_arrays, all_rows, first = [], [], [], 0
    for sid, n in enumerate(counts):
        arrays, rows = fake_views(n, seed=sid, first_view=first)
        sha, size, nv = write_shard(db_dir / shard_name(sid), arrays, rows)
        ids = rows["position_id"]
        records.append(
            ShardRecord(
                shard_id=sid,
                path=shard_name(sid),
                n_views=nv,
                n_positions=len(set(ids)),
                position_ids=(int(ids.min()), int(ids.max())),
                sha256=sha,
                bytes=size,
            )
        )
        all_arrays.append(arrays)
        all_rows.append(rows)
        first += n
    manifest = Manifest(
        kind="uniform", region={"name": "t"}, dem={"checksum": "x"}, crs_wkt="EPSG:3035", grid={},
        render={"size_px": SIZE, "modalities": [m.value for m in ALL_MODALITIES]}, shard=CFG.to_dict(),
        codecs={}, split={}, layout={"n_shards": n_planned if n_planned is not None else len(counts)},
        shards=tuple(records),
    )  # fmt: skip
    manifest.save(db_dir)
    joined = {m: np.concatenate([a[m] for a in all_arrays]) for m in ALL_MODALITIES}
    return joined, np.concatenate(all_rows)


def test_write_read_roundtrip(tmp_path):
    arrays, rows = fake_views(6, seed=3)
    sha, size, n = write_shard(tmp_path / "s.h5", arrays, rows)
    assert n == 6 and size == (tmp_path / "s.h5").stat().st_size and len(sha) == 64
    with ShardReader(tmp_path / "s.h5") as r:
        assert r.n_views == 6 and r.size_px == SIZE and set(r.modalities) == set(ALL_MODALITIES)
        assert np.array_equal(r.table(), rows)
        for m in (Modality.SILHOUETTE, Modality.SEMANTIC):
            assert np.array_equal(r.read_batch(m, range(6)), arrays[m])
        depth = r.read_batch(Modality.DEPTH, range(6))
        sky = arrays[Modality.DEPTH] == SKY_DEPTH_M
        assert np.all(depth[sky] == SKY_DEPTH_M)
        rel = np.abs(depth[~sky] / arrays[Modality.DEPTH][~sky] - 1)
        assert rel.max() <= codecs.depth_max_relative_error(CFG)
        # unsorted, duplicated indices come back in the requested order
        got = r.read_batch(Modality.SEMANTIC, [5, 0, 5, 2])
        assert np.array_equal(got, arrays[Modality.SEMANTIC][[5, 0, 5, 2]])
        assert np.array_equal(r.read(Modality.SEMANTIC, 4), arrays[Modality.SEMANTIC][4])
        with pytest.raises(IndexError):
            r.read(Modality.DEPTH, 6)


def test_reader_pickles_without_handle(tmp_path):
    arrays, rows = fake_views(2, seed=4)
    write_shard(tmp_path / "s.h5", arrays, rows)
    r = ShardReader(tmp_path / "s.h5")
    r.read(Modality.SEMANTIC, 0)  # opens the handle
    clone = pickle.loads(pickle.dumps(r))
    assert clone._h5 is None
    assert np.array_equal(clone.read(Modality.SEMANTIC, 1), arrays[Modality.SEMANTIC][1])
    r.close()
    clone.close()


def test_failed_writer_leaves_no_file(tmp_path):
    arrays, rows = fake_views(4, seed=5)
    path = tmp_path / "s.h5"
    with pytest.raises(RuntimeError), ShardWriter(path, ALL_MODALITIES, SIZE, CFG) as w:
        w.add({m: a[:2] for m, a in arrays.items()}, rows[:2])
        raise RuntimeError("worker died mid-shard")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="shape"), ShardWriter(path, ALL_MODALITIES, SIZE, CFG) as w:
        w.add({m: a[:, :4] for m, a in arrays.items()}, rows)
    assert list(tmp_path.iterdir()) == []


def test_first_shard_of_a_folder_is_checked_against_the_expected_size(tmp_path, monkeypatch):
    """No shard in the folder yet: ``expected_bytes`` stands in for the mean size, before any view is
    added; once a shard exists its real size is what counts."""
    from collections import namedtuple

    from crosslocate import fileio
    from crosslocate.errors import DiskFullError

    usage = namedtuple("usage", "total used free")
    free = fileio.RESERVE_BYTES + 50_000
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(1 << 30, 1 << 30, free))
    path = tmp_path / "fresh" / shard_name(0)
    with pytest.raises(DiskFullError, match=r"shard-00000\.h5: disk full: .* a shard \(estimated from the view size\)"):
        ShardWriter(path, ALL_MODALITIES, SIZE, CFG, expected_bytes=60_000).__enter__()
    arrays, rows = fake_views(2, seed=1)
    with ShardWriter(path, ALL_MODALITIES, SIZE, CFG, expected_bytes=40_000) as w:  # fits: written
        w.add(arrays, rows)
        _, size, _ = w.commit()
    assert path.stat().st_size == size < 50_000
    with ShardWriter(path.with_name(shard_name(1)), ALL_MODALITIES, SIZE, CFG, expected_bytes=10**9) as w:
        w.add(arrays, rows)  # the folder's real mean size now wins over a wild estimate
        w.commit()


def test_view_count_of_the_record_must_match_the_file(tmp_path):
    """Views are numbered by the manifest's counts: a record claiming another count than the file holds
    (a damaged manifest whose shard checksum still matches) is refused when the shard is opened."""
    from dataclasses import replace

    make_db(tmp_path / "db", counts=(4, 3))
    m = Manifest.load(tmp_path / "db")
    Manifest(**{**{k: getattr(m, k) for k in m.__dataclass_fields__},
                "shards": (replace(m.shards[0], n_views=5), m.shards[1])}).save(tmp_path / "db")  # fmt: skip
    with open_database(tmp_path / "db") as db, pytest.raises(ShardCorruptError, match=r"shard-00000\.h5: 4 views in the file, the manifest lists 5"):  # fmt: skip
        db.read_batch(Modality.DEPTH, [0])


def test_open_database_across_shards(tmp_path):
    arrays, rows = make_db(tmp_path / "db", counts=(4, 3))
    with open_database(tmp_path / "db") as db:
        assert db.n_views == 7 and len(db) == 7
        assert np.array_equal(db.table(), rows)
        idx = [6, 0, 3, 4]  # crosses the shard boundary, unsorted
        assert np.array_equal(db.read_batch("semantic", idx), arrays[Modality.SEMANTIC][idx])
        assert np.array_equal(db.read("silhouette", 5), arrays[Modality.SILHOUETTE][5])
        assert db.read_batch("depth", idx).dtype == np.float32
    clone = pickle.loads(pickle.dumps(db))
    assert np.array_equal(clone.read("semantic", 6), arrays[Modality.SEMANTIC][6])


def test_database_table_leaves_no_shard_open_it_opened(tmp_path):
    make_db(tmp_path / "db", counts=(4, 3))
    with open_database(tmp_path / "db") as db:
        db.read("depth", 5)  # opens the second shard
        assert [r._h5 is not None for r in db.readers] == [False, True]
        assert len(db.table()) == 7
        assert [r._h5 is not None for r in db.readers] == [False, True]  # the first was opened and closed


def test_open_database_refuses_incomplete_or_missing(tmp_path):
    make_db(tmp_path / "db", counts=(2,), n_planned=2)
    with pytest.raises(NotBuiltError, match="1 of 2 shards missing"):
        open_database(tmp_path / "db")
    assert open_database(tmp_path / "db", allow_partial=True).n_views == 2
    (tmp_path / "db" / shard_name(0)).unlink()
    with pytest.raises(ShardCorruptError, match="missing"):
        open_database(tmp_path / "db", allow_partial=True)
    with pytest.raises(NotBuiltError, match="does not exist"):
        open_database(tmp_path / "nothing")


def test_stored_bytes_compresses_smooth_depth():
    spec = codecs.codec_spec("depth", CFG)
    d = np.tile(np.linspace(100, 20_000, 64, dtype=np.float32), (2, 64, 1))
    raw = d.size * 2  # uint16 codes
    assert stored_bytes(spec, d) < raw / 10


def test_flipped_bits_are_refused_naming_the_shard(tmp_path):
    """Any single-bit flip in a listed shard: reading through the database raises, naming the file."""
    rng = np.random.default_rng(0)
    for trial in range(8):
        db = tmp_path / f"db{trial}"
        make_db(db, counts=(4, 3))
        victim = db / shard_name(trial % 2)
        raw = bytearray(victim.read_bytes())
        raw[int(rng.integers(len(raw)))] ^= 1 << int(rng.integers(8))
        victim.write_bytes(bytes(raw))
        with (
            open_database(db) as d,
            pytest.raises(ShardCorruptError, match=rf"{victim.name}: shard {trial % 2}: sha256"),
        ):
            d.read_batch("depth", range(7))


def test_impossible_decoded_values_are_refused(tmp_path):
    import h5py

    arrays, rows = fake_views(2, seed=6)
    path = tmp_path / "s.h5"
    write_shard(path, arrays, rows)
    with h5py.File(path, "r+") as h5:  # forge codes that decode to ~1e28 m (what a bit flip can do)
        forged = h5["depth"][0]
        forged[3, :] = 0
        forged[3, 0] = 65000
        h5["depth"][0] = forged
    with ShardReader(path) as r:
        with pytest.raises(ShardCorruptError, match=r"s\.h5: corrupt shard: depth view 0 pixel \(3, 0\)"):
            r.read_batch("depth", [1, 0])
        assert r.read_batch("depth", [0], check=False)[0, 3, 0] > 1e20  # the raw decode, for verify
        assert np.array_equal(r.read_batch("semantic", [0]), arrays[Modality.SEMANTIC][:1])


def test_legacy_table_column_is_dropped(tmp_path):
    """Shards written with the old ``render_time_s`` column still read, as VIEW_DTYPE."""
    import h5py

    arrays, rows = fake_views(2, seed=7)
    path = tmp_path / "s.h5"
    write_shard(path, arrays, rows)
    legacy = np.dtype([*((n, VIEW_DTYPE[n]) for n in VIEW_DTYPE.names), ("render_time_s", "<f4")])
    old = np.zeros(2, legacy)
    for n in VIEW_DTYPE.names:
        old[n] = rows[n]
    old["render_time_s"] = [0.5, 0.25]
    with h5py.File(path, "r+") as h5:
        del h5["views"]
        h5.create_dataset("views", data=old)
    with ShardReader(path) as r:
        assert r.table().dtype == VIEW_DTYPE and np.array_equal(r.table(), rows)
