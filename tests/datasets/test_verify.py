"""verify_database finds missing, truncated, corrupted and out-of-range shards; the CLI maps it to exit codes."""

from __future__ import annotations

import numpy as np

from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.manifest import Manifest, ShardRecord, shard_name
from crosslocate.datasets.schema import ALL_MODALITIES, SKY_DEPTH_M, VIEW_DTYPE, Modality
from crosslocate.datasets.shards import ShardWriter
from crosslocate.datasets.verify import verify_database
from crosslocate.pipelines.cli import main

SIZE = 8


def build_db(db_dir, n_shards=3, bad_silhouette_in=None):
    """A hand-written database of ``n_shards`` shards of 2 views (valid values unless told otherwise)."""
    db_dir.mkdir(parents=True)
    records = []
    for sid in range(n_shards):
        depth = np.full((2, SIZE, SIZE), 1234.5, np.float32)
        depth[:, 0] = SKY_DEPTH_M
        sil = np.zeros((2, SIZE, SIZE), np.uint8)
        if sid == bad_silhouette_in:
            sil[1, 3, 4] = 7  # not a {0, 1} mask value
        sem = np.full((2, SIZE, SIZE), 4, np.uint8)
        rows = np.zeros(2, VIEW_DTYPE)
        rows["view_id"] = [2 * sid, 2 * sid + 1]
        rows["position_id"] = sid
        arrays = {Modality.DEPTH: depth, Modality.SILHOUETTE: sil, Modality.SEMANTIC: sem}
        with ShardWriter(db_dir / shard_name(sid), ALL_MODALITIES, SIZE, ShardConfig()) as w:
            w.add(arrays, rows)
            sha, size, n = w.commit()
        records.append(ShardRecord(shard_id=sid, path=shard_name(sid), n_views=n, n_positions=1,
                                   position_ids=(sid, sid), sha256=sha, bytes=size))  # fmt: skip
    Manifest(
        kind="uniform", region={}, dem={}, crs_wkt="EPSG:3035", grid={}, shard={}, codecs={}, split={},
        render={"size_px": SIZE, "modalities": [m.value for m in ALL_MODALITIES]}, layout={"n_shards": n_shards},
        shards=tuple(records),
    ).save(db_dir)  # fmt: skip
    return db_dir


def test_sound_database(tmp_path, capsys):
    db = build_db(tmp_path / "db")
    report = verify_database(db)
    assert report.ok and report.n_ok == 3 and report.n_views == 6 and report.problems == []
    assert main(["verify", str(db)]) == 0
    assert "OK" in capsys.readouterr().out


def test_missing_corrupt_truncated_and_unlisted(tmp_path, capsys):
    db = build_db(tmp_path / "db", n_shards=4)
    (db / shard_name(0)).unlink()
    raw = bytearray((db / shard_name(1)).read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte, same size
    (db / shard_name(1)).write_bytes(bytes(raw))
    (db / shard_name(2)).write_bytes((db / shard_name(2)).read_bytes()[:100])
    (db / shard_name(9)).write_bytes(b"stray")
    report = verify_database(db)
    kinds = {p.shard_id: p.kind for p in report.problems}
    assert kinds == {0: "missing", 1: "checksum", 2: "checksum"}
    assert report.bad_shards() == [0, 1, 2] and report.n_ok == 1
    assert [w.kind for w in report.warnings] == ["unlisted"]
    assert main(["verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("CORRUPT") and "1 of 4 shards complete, 0 not yet built, 3 corrupt" in out
    assert "corrupt shards: 0-2;" in out


def test_table_disagreeing_with_its_record_is_found_without_decoding(tmp_path):
    """The position count and id range of a shard record are checked against its table even with
    --no-values (a damaged record must not go unseen)."""
    from dataclasses import replace

    db = build_db(tmp_path / "db", n_shards=3)
    m = Manifest.load(db)
    lo, hi = m.shards[2].position_ids
    bad = (
        replace(m.shards[0], n_positions=2),
        replace(m.shards[1], position_ids=(5, 5)),  # moved away from the table's ids
        replace(m.shards[2], position_ids=(lo, hi + 8)),  # widened: still covers the table, still wrong
    )
    Manifest(**{**{k: getattr(m, k) for k in m.__dataclass_fields__}, "shards": bad}).save(db)
    report = verify_database(db, check_values=False)
    found = {p.shard_id: (p.kind, p.message) for p in report.problems}
    one = m.shards[1].position_ids
    assert found == {
        0: ("count", "1 positions in the table, 2 in the manifest"),
        1: ("count", f"table position_ids span [{one[0]}, {one[1]}], the manifest records [5, 5]"),
        2: ("count", f"table position_ids span [{lo}, {hi}], the manifest records [{lo}, {hi + 8}]"),
    }


def test_out_of_range_values_detected(tmp_path):
    db = build_db(tmp_path / "db", bad_silhouette_in=1)
    report = verify_database(db)
    assert [(p.shard_id, p.kind) for p in report.problems] == [(1, "values")]
    assert "silhouette view 1 pixel (3, 4) has invalid value 7 (expected 0 or 1)" in report.problems[0].message
    assert verify_database(db, check_values=False).ok


def test_unknown_manifest_modality_is_a_manifest_problem(tmp_path):
    db = build_db(tmp_path / "db", n_shards=1)
    m = Manifest.load(db)
    render = {**m.render, "modalities": ["depth", "rgb"]}
    Manifest(**{**{k: getattr(m, k) for k in m.__dataclass_fields__}, "render": render}).save(db)
    report = verify_database(db)
    assert [p.kind for p in report.problems] == ["manifest"] and report.exit_code == 1
    assert "unknown modality 'rgb'; choose one of depth, silhouette, semantic" in report.problems[0].message


def replan(db, n_shards):
    """Pretend the build planned ``n_shards`` shards (the extra ones are not built yet)."""
    m = Manifest.load(db)
    Manifest(**{**{k: getattr(m, k) for k in m.__dataclass_fields__}, "layout": {"n_shards": n_shards}}).save(db)


def test_incomplete_and_no_manifest(tmp_path, capsys):
    db = build_db(tmp_path / "db", n_shards=2)
    replan(db, 3)
    report = verify_database(db)
    assert report.problems == [] and report.not_built == [2] and not report.ok and report.exit_code == 3
    assert main(["verify", str(db)]) == 3  # incomplete, not corrupt
    assert "INCOMPLETE" in capsys.readouterr().out


def test_not_a_database_folder_is_bad_input(tmp_path, capsys):
    """A mistyped, missing or empty folder is bad input (exit 2, one line), not a corrupt database."""
    import pytest

    from crosslocate.errors import ConfigError

    with pytest.raises(ConfigError, match="nothing: no such database folder"):
        verify_database(tmp_path / "nothing")
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("crosslocate verify: error: ") and "no such database folder" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["verify", str(tmp_path / "empty")]) == 2
    assert "not a database folder (no manifest.json, no shard-*.h5)" in capsys.readouterr().err
    db = build_db(tmp_path / "db", n_shards=2)
    (db / "manifest.json").unlink()  # shards without their manifest: a damaged database
    report = verify_database(db)
    assert [p.kind for p in report.problems] == ["manifest"] and report.exit_code == 1
    assert main(["verify", str(db)]) == 1
    assert capsys.readouterr().out.startswith(f"CORRUPT: {db}: manifest.json missing; no shard checked")


def test_manifest_edited_or_damaged_is_reported_by_name(tmp_path, capsys):
    """A value changed inside manifest.json (here a codec setting, one bit): the fingerprint recorded in the
    file no longer matches its content; verify says so and names the file."""
    import json

    db = build_db(tmp_path / "db", n_shards=1)
    data = json.loads((db / "manifest.json").read_text())
    data["render"]["size_px"] = SIZE ^ 1  # one flipped bit in a number
    (db / "manifest.json").write_text(json.dumps(data, indent=2))
    report = verify_database(db)
    assert [p.kind for p in report.problems] == ["manifest"] and report.exit_code == 1
    assert "fingerprint does not match its content: edited or damaged" in report.problems[0].message
    assert main(["verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"CORRUPT: {db}: manifest.json corrupt; no shard checked")
    assert "manifest.json: fingerprint does not match its content: edited or damaged" in out


def test_partial_build_report_is_short(tmp_path, capsys):
    """Thousands of unbuilt shards and many corrupt ones: counts, ranges, the first 5 lines, --all for the rest."""
    db = build_db(tmp_path / "db", n_shards=9)
    for sid in range(1, 9):
        (db / shard_name(sid)).unlink()
    replan(db, 8216)
    assert main(["verify", str(db)]) == 1  # corruption beats incompleteness
    out = capsys.readouterr().out
    assert "1 of 8216 shards complete, 8207 not yet built, 8 corrupt" in out
    assert "not yet built: shards 9-8215;" in out and "corrupt shards: 1-8;" in out
    assert out.count("missing: ") == 5 and "3 more line(s); --all" in out
    assert len(out) < 2000
    assert main(["verify", str(db), "--all"]) == 1
    assert capsys.readouterr().out.count("missing: ") == 8


def test_positions_file_checked(tmp_path, capsys):
    from crosslocate.dem.grid import Positions

    db = build_db(tmp_path / "db", n_shards=1)
    z = np.zeros(3)
    Positions(position_id=np.arange(3), lon=z, lat=z, x=z, y=z, ground_m=z, alt_m=z, split=z,
              crs_wkt="EPSG:3035").to_npz(db / "positions.npz")  # fmt: skip
    Manifest.load(db).with_positions_file(db).save(db)
    assert verify_database(db).ok
    raw = bytearray((db / "positions.npz").read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one flipped bit
    (db / "positions.npz").write_bytes(bytes(raw))
    report = verify_database(db)
    assert [p.kind for p in report.problems] == ["positions"] and report.exit_code == 1
    assert main(["verify", str(db)]) == 1
    assert "1 of 1 shards complete, 0 not yet built, 0 corrupt, positions.npz corrupt;" in capsys.readouterr().out
    (db / "positions.npz").unlink()
    assert main(["verify", str(db)]) == 1
    out = capsys.readouterr().out
    assert "0 corrupt, positions.npz missing;" in out and "positions: " in out
    assert "missing" in verify_database(db).problems[0].message


def test_id_ranges():
    from crosslocate.datasets.verify import id_ranges

    assert id_ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8" and id_ranges([]) == "" and id_ranges([4]) == "4"


def test_values_sample_picks_shards_spread_evenly():
    from crosslocate.datasets.verify import values_checked

    assert values_checked(5, True, None).all() and not values_checked(5, False, None).any()
    assert np.flatnonzero(values_checked(9, True, 3)).tolist() == [0, 4, 8]  # first, middle, last
    assert np.flatnonzero(values_checked(10, True, 1)).tolist() == [0] and values_checked(4, True, 99).all()


def test_parallel_and_sampled_verify(tmp_path, capsys):
    """Two processes find what one finds; a sampled value check finds a bad value only in a sampled
    shard, while every shard's checksum is still checked."""
    db = tmp_path / "db"
    build_db(db, n_shards=5, bad_silhouette_in=2)
    one, two = verify_database(db), verify_database(db, workers=2)
    assert one.to_dict() == two.to_dict() and one.bad_shards() == [2] and one.n_values_checked == 5
    assert verify_database(db, values_sample=3, workers=2).bad_shards() == [2]  # shards 0, 2, 4 sampled
    missed = verify_database(db, values_sample=2)  # shards 0 and 4: the bad value goes unseen ...
    assert missed.ok and missed.n_values_checked == 2 and missed.n_ok == 5
    (db / shard_name(3)).write_bytes(b"flipped")  # ... but a damaged file never does
    assert verify_database(db, values_sample=2).bad_shards() == [3]
    assert main(["verify", str(db), "--values-sample", "2", "--workers", "2"]) == 1
    assert "values range-checked in 2 shards" in capsys.readouterr().out
