"""Manifest JSON round trip, fingerprint semantics and refusal of a different configuration."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from crosslocate.datasets.manifest import MANIFEST_NAME, Manifest, ShardRecord
from crosslocate.errors import ManifestMismatchError, NotBuiltError, ShardCorruptError


def manifest(**kw):
    base = {
        "kind": "uniform", "region": {"name": "demo", "bounds_lonlat": [7.0, 46.0, 8.0, 47.0]},
        "dem": {"sources": ["a.tif"], "checksum": "abc"}, "crs_wkt": "EPSG:3035",
        "grid": {"spacing_m": 500.0, "yaws_deg": [0.0, 30.0]}, "render": {"size_px": 64, "range_m": 20_000.0},
        "shard": {"views_per_shard": 24}, "codecs": {}, "split": {"codes": {"train": 0}},
        "layout": {"n_shards": 2, "positions_sha256": "p"},
    }  # fmt: skip
    base.update(kw)
    return Manifest(**base)


def record(sid):
    return ShardRecord(
        shard_id=sid, path=f"shard-{sid:05d}.h5", n_views=12, n_positions=1, position_ids=(sid, sid),
        sha256="0" * 64, bytes=100,
    )  # fmt: skip


def test_roundtrip_and_shard_bookkeeping(tmp_path):
    m = manifest().with_shard(record(1)).with_shard(record(0)).with_shard(record(1))
    assert [s.shard_id for s in m.shards] == [0, 1] and m.n_views == 24 and m.complete
    m.save(tmp_path)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert data["shards"][0]["path"] == "shard-00000.h5" and data["fingerprint"] == m.fingerprint()
    back = Manifest.load(tmp_path)
    assert back == m
    assert not back.without_shards({0}).complete


def test_fingerprint_covers_config_not_shards():
    a = manifest()
    assert a.fingerprint() == a.with_shard(record(0)).fingerprint()
    assert a.fingerprint() == replace(a, info={"built_s": 3}).fingerprint()
    b = manifest(render={"size_px": 128, "range_m": 20_000.0})
    assert a.fingerprint() != b.fingerprint()
    assert a.differences(b) == ["render.size_px: 64 -> 128"]


def test_mismatch_is_refused_with_the_difference_named(tmp_path):
    old = manifest()
    new = manifest(dem={"sources": ["a.tif"], "checksum": "def"})
    old.require_same_config(manifest(), tmp_path)  # same config: fine
    with pytest.raises(ManifestMismatchError, match=r"dem\.checksum: 'abc' -> 'def'.*--overwrite"):
        old.require_same_config(new, tmp_path)


def test_load_errors(tmp_path):
    with pytest.raises(NotBuiltError):
        Manifest.load(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ShardCorruptError, match="unreadable"):
        Manifest.load(tmp_path)
    data = manifest().to_dict()
    data["schema_version"] = 99
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestMismatchError, match="schema version 99"):
        Manifest.load(tmp_path)


def test_content_not_matching_its_fingerprint_is_refused(tmp_path):
    """manifest.json records the sha256 of its configuration: a value edited or damaged in the file
    (an independent sha256 over the edited configuration differs) is refused on load, naming the file."""
    import hashlib

    from crosslocate.datasets.manifest import CONFIG_KEYS
    from crosslocate.errors import ManifestCorruptError

    m = manifest().with_shard(record(0))
    m.save(tmp_path)
    path = tmp_path / MANIFEST_NAME
    data = json.loads(path.read_text())
    config = {k: data[k] for k in CONFIG_KEYS}
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    assert data["fingerprint"] == hashlib.sha256(blob).hexdigest()  # the documented recipe
    for edit in (
        lambda d: d["grid"].update(spacing_m=501.0),
        lambda d: d["dem"].update(checksum="abd"),
        lambda d: d.update(fingerprint=d["fingerprint"][:-1] + "0"),
    ):
        changed = json.loads(json.dumps(data))
        edit(changed)
        path.write_text(json.dumps(changed))
        with pytest.raises(ManifestCorruptError, match=rf"{MANIFEST_NAME}: fingerprint does not match its content: edited or damaged"):  # fmt: skip
            Manifest.load(tmp_path)
    legacy = {k: v for k, v in data.items() if k != "fingerprint"}  # written before it was recorded: accepted
    path.write_text(json.dumps(legacy))
    assert Manifest.load(tmp_path) == m
    assert issubclass(ManifestCorruptError, ShardCorruptError)  # callers catching the old class still do


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"shard_id": 0}, "two shard records have the same shard_id"),
        ({"shard_id": 2, "path": "shard-00002.h5"}, "shard_id 2 outside the planned 0..1"),
        ({"path": "shard-00000.h5"}, "shard 1 names the file 'shard-00000.h5'"),
    ],
)
def test_shard_records_must_be_planned_and_distinct(tmp_path, change, needle):
    from crosslocate.errors import ManifestCorruptError

    data = manifest().with_shard(record(0)).with_shard(record(1)).to_dict()
    data["shards"][1].update(change)
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestCorruptError, match=needle):
        Manifest.load(tmp_path)
