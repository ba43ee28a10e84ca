"""Preview mosaics read only the shards they need (a 2-million-view database opens a handful of files)."""

import numpy as np

from crosslocate.datasets.shards import open_database
from crosslocate.pipelines.preview import leading_table, pick_position, save_database_preview

from .conftest import build_db


def test_leading_table_is_a_prefix_holding_enough_positions(tmp_path):
    db_dir = build_db(tmp_path)  # 2 shards x 8 positions x 4 yaws
    with open_database(db_dir) as db:
        full = db.table()
        few = leading_table(db, 3)
        assert len(few) == 32 and np.array_equal(few, full[:32])  # first shard only: 8 positions > 3
        assert np.array_equal(leading_table(db, 8), full)  # 8 is not > 8 positions: the next shard is read
        assert np.array_equal(leading_table(db, 99), full)


def test_preview_shows_the_position_picked_from_the_whole_table(tmp_path, caplog):
    db_dir = build_db(tmp_path)  # 16 positions < 24 candidates: the leading table is the whole table
    caplog.set_level("INFO", logger="crosslocate.pipelines.preview")
    assert save_database_preview(db_dir, tmp_path / "p.png").is_file()
    with open_database(db_dir) as db:
        pid = pick_position(db.table(), lambda i: db.read("depth", i), 24)
    assert f"preview of position {pid} " in caplog.text
