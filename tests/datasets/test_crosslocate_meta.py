"""The meta-structure loader runs no foreign code; the writer stays loadable by numpy 1.x; yaw conventions."""

from __future__ import annotations

import io
import math
import os
import pickle

import numpy as np
import pytest

from crosslocate.datasets.crosslocate_meta import (
    DEFAULT_YAW_CONVENTION,
    YAW_CONVENTIONS,
    load_meta_npy,
    save_meta_npy,
    to_our_yaw_deg,
    yaw_grid,
)
from crosslocate.errors import ConfigError, ForeignFormatError
from crosslocate.pipelines.commands.queries import YAW_CONVENTIONS as CLI_YAW_CONVENTIONS


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def _npy_with_pickle(path, obj):
    holder = np.empty((), dtype=object)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(holder))
    path.write_bytes(buf.getvalue() + pickle.dumps(obj, protocol=3))


def test_refuses_globals_other_than_numpy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _npy_with_pickle(tmp_path / "evil.npy", {"qImageFns": [_Evil()]})
    with pytest.raises(ForeignFormatError, match=r"refusing to load posix\.system|refusing to load os\.system"):
        load_meta_npy(tmp_path / "evil.npy")
    assert not (tmp_path / "pwned").exists()


def test_round_trip_and_numpy1_names(tmp_path):
    meta = {"qImageFns": ["a.png"], "qWGS": [[7.5, 46.5]], "qIDs": [3], "utmEPSG": 32632}
    path = save_meta_npy(tmp_path / "m.npy", meta)
    raw = path.read_bytes()
    assert b"numpy._core" not in raw and b"cnumpy.core.multiarray\n_reconstruct\n" in raw  # numpy 1.16 can import it
    assert load_meta_npy(path) == meta
    assert np.load(path, allow_pickle=True).item() == meta  # CrossLocate's own loading call
    np.save(
        tmp_path / "n.npy", {"x": np.arange(3.0), "y": np.float32(2)}, allow_pickle=True
    )  # numpy 2 names, arrays, scalars
    back = load_meta_npy(tmp_path / "n.npy")
    assert back["x"].tolist() == [0.0, 1.0, 2.0] and back["y"] == 2


def test_not_a_npy_file_is_one_line_naming_the_file(tmp_path):
    for name, raw in (("zip.npy", b"PK\x03\x04" + bytes(range(64))), ("short.npy", b"\x93NU")):
        path = tmp_path / name
        path.write_bytes(raw)
        with pytest.raises(ForeignFormatError) as err:
            load_meta_npy(path)
        assert str(err.value).startswith(f"{path}: not a .npy file (") and "\n" not in str(err.value)


def test_yaw_conventions_by_hand():
    # a view due east: 90 clockwise from north, -90 (270) counter-clockwise from north, 0 counter-clockwise from east
    east = {"cw-north": math.pi / 2, "ccw-north": 3 * math.pi / 2, "ccw-east": 0.0}
    for convention, yaw in east.items():
        assert to_our_yaw_deg([yaw], convention)[0] == pytest.approx(90.0)
    assert to_our_yaw_deg([math.pi / 2], "ccw-east")[0] == pytest.approx(0.0)  # north
    assert to_our_yaw_deg([-math.pi / 6], "cw-north")[0] == pytest.approx(330.0)  # wrapped to [0, 360)
    with pytest.raises(ConfigError, match="--yaw-convention 'math'"):
        to_our_yaw_deg([0.0], "math")
    assert set(YAW_CONVENTIONS) == set(CLI_YAW_CONVENTIONS) and CLI_YAW_CONVENTIONS[0] == DEFAULT_YAW_CONVENTION


def test_yaw_grid():
    rad = np.radians
    assert yaw_grid(rad(np.arange(12) * 30.0)) == 12  # CrossLocate's databases
    assert yaw_grid(rad([0.0, 90.0, 180.0, 270.0])) == 12  # ours, 4 yaws: a part of it
    assert yaw_grid(rad(np.arange(12) * 30.0 - 180.0)) == 12  # any wrap
    assert yaw_grid(rad(np.arange(8) * 45.0)) == 8  # an even grid from 0 of another size
    assert yaw_grid(rad(np.arange(12) * 30.0 + 15.0)) is None  # another origin
    assert yaw_grid(rad([0.0, 30.0, 61.0])) is None
