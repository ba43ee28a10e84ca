"""atomic_write / atomic_path: the destination holds the old or the complete new content, never a part."""

from __future__ import annotations

import json

import pytest

from crosslocate.datasets.atomic import (
    atomic_path,
    atomic_write,
    remove_stale_temps,
    write_bytes_atomic,
    write_json_atomic,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    dst = tmp_path / "sub" / "out.bin"
    write_bytes_atomic(dst, b"old")
    with atomic_write(dst) as fh:
        fh.write(b"new content")
    assert dst.read_bytes() == b"new content"
    assert _leftovers(dst.parent) == []
    assert oct(dst.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_exception_mid_write_keeps_old_content(tmp_path, error):
    dst = tmp_path / "out.bin"
    write_bytes_atomic(dst, b"old")
    with pytest.raises(type(error)), atomic_write(dst) as fh:
        fh.write(b"half of the new")
        raise error
    assert dst.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_exception_mid_write_creates_nothing(tmp_path):
    dst = tmp_path / "never.json"
    with pytest.raises(ValueError), atomic_write(dst, "w") as fh:
        fh.write('{"partial": ')
        raise ValueError("boom")
    assert not dst.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_for_path_based_writers(tmp_path):
    dst = tmp_path / "x.dat"
    with atomic_path(dst) as tmp:
        assert tmp.parent == tmp_path and tmp != dst
        tmp.write_bytes(b"abc")
        assert not dst.exists()  # invisible until the block ends
    assert dst.read_bytes() == b"abc"
    with pytest.raises(OSError), atomic_path(dst) as tmp:
        tmp.write_bytes(b"zz")
        raise OSError("fail")
    assert dst.read_bytes() == b"abc"
    assert _leftovers(tmp_path) == []


def test_json_and_stale_temp_cleanup(tmp_path):
    p = write_json_atomic(tmp_path / "m.json", {"a": [1, 2]})
    assert json.loads(p.read_text()) == {"a": [1, 2]}
    stale = tmp_path / ".shard-00001.h5.abc123.tmp"
    stale.write_bytes(b"partial")
    keep = tmp_path / "shard-00001.h5"
    keep.write_bytes(b"complete")
    assert remove_stale_temps(tmp_path) == [stale]
    assert keep.exists() and not stale.exists()


def test_full_disk_is_a_disk_full_error_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno
    from collections import namedtuple

    from crosslocate.datasets import atomic
    from crosslocate.errors import DiskFullError

    dst = tmp_path / "out.bin"
    write_bytes_atomic(dst, b"old")

    class FullDisk:
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"out\.bin: disk full: [\d,]+ bytes left .*No space left"):
        with atomic_write(dst) as fh:
            fh.write(b"partial")
            FullDisk().write(b"more")
    assert dst.read_bytes() == b"old" and _leftovers(tmp_path) == []

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: usage(10_000_000, 8_000_000, 2_000_000))
    assert atomic.free_bytes(tmp_path / "not" / "yet") == 2_000_000  # nearest existing parent
    atomic.require_free_space(tmp_path, 951_424)  # + the 1 MiB reserve = exactly the 2,000,000 free
    with pytest.raises(DiskFullError, match=r"2,000,000 bytes left, shard x needs about 2,000,001"):
        atomic.require_free_space(tmp_path, 951_425, "shard x")
