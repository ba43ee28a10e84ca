"""The meta-structure loader runs no foreign code; the writer stays loadable by numpy 1.x."""

from __future__ import annotations

import io
import os
import pickle

import numpy as np
import pytest

from crosslocate.datasets.crosslocate_meta import load_meta_npy, save_meta_npy
from crosslocate.errors import ForeignFormatError


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
