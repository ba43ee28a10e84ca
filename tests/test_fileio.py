"""crosslocate.fileio: atomic writers (old or complete new content, never a part), sha256, config dicts."""

from __future__ import annotations

import enum
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from crosslocate import fileio
from crosslocate.errors import ConfigError, DiskFullError, OutputWriteError
from crosslocate.fileio import (
    atomic_path,
    atomic_write,
    config_from_dict,
    config_to_dict,
    file_sha256,
    remove_stale_temps,
    save_figure_atomic,
    save_image_atomic,
    save_npy_atomic,
    write_bytes_atomic,
    write_json_atomic,
    write_npz_atomic,
)


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------------------------ atomicity


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
    assert p.read_text() == '{\n  "a": [\n    1,\n    2\n  ]\n}\n'  # indent 2, trailing newline
    with pytest.raises(ValueError):  # NaN refused by default ...
        write_json_atomic(p, {"x": float("nan")})
    assert json.loads(p.read_text()) == {"a": [1, 2]}  # ... before anything was written
    write_json_atomic(p, {"x": float("nan"), "b": 1}, allow_nan=True, sort_keys=True, indent=None)
    assert p.read_text() == '{"b": 1, "x": NaN}\n'  # the caller's json.dumps options win
    stale = tmp_path / ".shard-00001.h5.abc123.tmp"
    stale.write_bytes(b"partial")
    keep = tmp_path / "shard-00001.h5"
    keep.write_bytes(b"complete")
    assert remove_stale_temps(tmp_path) == [stale]
    assert keep.exists() and not stale.exists()


def test_full_disk_is_a_disk_full_error_and_leaves_no_temp(tmp_path, monkeypatch):
    import errno
    from collections import namedtuple

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
    monkeypatch.setattr(fileio.shutil, "disk_usage", lambda p: usage(10_000_000, 8_000_000, 2_000_000))
    assert fileio.free_bytes(tmp_path / "not" / "yet") == 2_000_000  # nearest existing parent
    fileio.require_free_space(tmp_path, 951_424)  # + the 1 MiB reserve = exactly the 2,000,000 free
    with pytest.raises(DiskFullError, match=r"2,000,000 bytes left, shard x needs about 2,000,001"):
        fileio.require_free_space(tmp_path, 951_425, "shard x")


@pytest.mark.parametrize(
    ("code", "reason", "hint"),
    [
        ("EIO", "Input/output error", "I/O error; check the disk"),
        ("EROFS", "Read-only file system", "read-only; choose an output folder"),
        ("EACCES", "Permission denied", "permission denied; choose another output folder"),
    ],
)
@pytest.mark.parametrize("stage", ["write", "fsync", "rename"])
def test_other_os_write_failures_are_one_clear_error(tmp_path, monkeypatch, code, reason, hint, stage):
    """EIO, EROFS or EACCES while writing, syncing or renaming: OutputWriteError naming the destination,
    the OS reason and what to do; the old content stays, no temporary file is left."""
    import errno
    import os

    dst = tmp_path / "manifest.json"
    write_bytes_atomic(dst, b"old")
    err = OSError(getattr(errno, code), reason)

    def fail(*args, **kwargs):
        raise err

    if stage == "fsync":
        monkeypatch.setattr(fileio, "fsync_file", fail)
    elif stage == "rename":
        monkeypatch.setattr(fileio.os, "replace", fail)
    with pytest.raises(OutputWriteError) as info, atomic_write(dst) as fh:
        fh.write(b"new")
        if stage == "write":
            fail()
    monkeypatch.setattr(fileio.os, "replace", os.replace)
    msg = str(info.value)
    assert msg.startswith(f"{dst}: cannot write: {reason} [{code}]; ") and hint in msg and "\n" not in msg
    assert isinstance(info.value, OSError) and info.value.__cause__ is err
    assert dst.read_bytes() == b"old" and _leftovers(tmp_path) == []


def test_write_failure_creating_the_temporary_file_names_the_folder(tmp_path, monkeypatch):
    import errno

    def refuse(*args, dir=None, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(dir))

    monkeypatch.setattr(fileio.tempfile, "mkstemp", refuse)
    with pytest.raises(
        OutputWriteError, match=rf"out\.bin: cannot write: Read-only file system \[EROFS\] \(at {tmp_path}\)"
    ):
        write_bytes_atomic(tmp_path / "out.bin", b"x")
    assert list(tmp_path.iterdir()) == []


def test_file_too_large_is_disk_full_and_other_errors_pass_through(tmp_path):
    import errno

    with (
        pytest.raises(DiskFullError, match=r"big\.bin: disk full: .*File too large"),
        atomic_write(tmp_path / "big.bin"),
    ):
        raise OSError(errno.EFBIG, "File too large")
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "x.bin"):  # not a write failure: unchanged
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "elsewhere")
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ format writers


def test_npy_and_npz_round_trip_with_numpys_bytes(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    p = save_npy_atomic(tmp_path / "a.npy", a)
    ref = io.BytesIO()
    np.save(ref, a, allow_pickle=False)
    assert p.read_bytes() == ref.getvalue()  # exactly what numpy writes
    arrays = {"ranking": np.arange(6, dtype=np.int64).reshape(2, 3), "name": np.array(["a", "bc"]), "m": np.array("x")}
    for compressed in (False, True):
        q = write_npz_atomic(tmp_path / f"r{compressed}.npz", arrays, compressed=compressed)
        with np.load(q, allow_pickle=False) as z:
            assert sorted(z.files) == sorted(arrays)
            for k, v in arrays.items():
                np.testing.assert_array_equal(z[k], v)
    assert _leftovers(tmp_path) == []


def test_image_round_trip_by_suffix(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    png = save_image_atomic(tmp_path / "x.png", rgb)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
    grey = save_image_atomic(tmp_path / "g.png", rgb[..., 0])
    with Image.open(grey) as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), rgb[..., 0])
    jpg = save_image_atomic(tmp_path / "x.JPEG", Image.fromarray(rgb), quality=90)  # a PIL image, upper-case suffix
    with Image.open(jpg) as im:
        assert im.format == "JPEG" and im.size == (7, 5)
    forced = save_image_atomic(tmp_path / "x.bin", rgb, format="PNG")
    assert forced.read_bytes() == png.read_bytes()
    with pytest.raises(ValueError, match="suffix"):
        save_image_atomic(tmp_path / "x.tiffy", rgb)
    with pytest.raises(ValueError, match="uint8"):
        save_image_atomic(tmp_path / "f.png", rgb.astype(np.float32))
    assert not (tmp_path / "f.png").exists() and _leftovers(tmp_path) == []


def test_figure_round_trip_and_failure_keeps_old(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    fig = Figure(figsize=(2, 1), dpi=50)
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([0, 1], [1, 0])
    png = save_figure_atomic(fig, tmp_path / "f.png")
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (100, 50)
    pdf = save_figure_atomic(fig, tmp_path / "f.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    old = png.read_bytes()
    with pytest.raises(ValueError):  # matplotlib refuses the format: the old picture stays
        save_figure_atomic(fig, png, format="no-such-format")
    assert png.read_bytes() == old and _leftovers(tmp_path) == []


def test_file_sha256_matches_hashlib(tmp_path):
    p = write_bytes_atomic(tmp_path / "abc", b"abc")
    assert file_sha256(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # FIPS 180-2 vector
    data = bytes(range(256)) * 41
    q = write_bytes_atomic(tmp_path / "big", data)
    assert file_sha256(q, chunk=7) == file_sha256(q) == hashlib.sha256(data).hexdigest()
    assert file_sha256(write_bytes_atomic(tmp_path / "empty", b"")) == hashlib.sha256(b"").hexdigest()


# ------------------------------------------------------------------------------- config dicts


def test_render_config_dict_is_the_former_hand_written_one():
    from crosslocate.render.config import RenderConfig

    cfg = RenderConfig(size_px=64, modalities=("depth", "semantic"))
    d = config_to_dict(cfg)
    assert list(d.items()) == [  # key order and values of the former RenderConfig.to_dict (manifests)
        ("size_px", 64),
        ("fov_deg", 60.0),
        ("range_m", 60_000.0),
        ("refraction_k", 0.13),
        ("near_m", 5.0),
        ("backend", "cpu"),
        ("gl_platform", "egl"),
        ("silhouette_rel_jump", 0.15),
        ("modalities", ["depth", "semantic"]),
        ("lod_cells", 256),
        ("near_patch_cells", 64),
        ("atlas", True),
    ]
    back = config_from_dict(RenderConfig, json.loads(json.dumps(d)))
    assert back == cfg and RenderConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match=r"RenderConfig\.modalities: 'colour' is not a Modality"):
        config_from_dict(RenderConfig, {**d, "modalities": ["colour"]})


def test_nested_config_round_trip_and_unknown_keys():
    from crosslocate.pipelines.queries import QUERY_PRESETS, QuerySetConfig
    from crosslocate.render.photo import PhotoConfig

    cfg = QUERY_PRESETS["cpu"]
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert isinstance(d["photo"], dict)
    back = config_from_dict(QuerySetConfig, d)
    assert back == cfg and isinstance(back.photo, PhotoConfig)
    assert isinstance(d["photo"]["haze_rgb"], list) and isinstance(back.photo.haze_rgb, tuple)  # hashable again
    with pytest.raises(ConfigError, match=r"QuerySetConfig: unknown keys \['n_querys'\]"):
        config_from_dict(QuerySetConfig, {**d, "n_querys": 3})
    with pytest.raises(ConfigError, match=r"PhotoConfig: unknown keys \['fog'\]"):  # names the nested class
        config_from_dict(QuerySetConfig, {**d, "photo": {**d["photo"], "fog": 1}})
    with pytest.raises(ConfigError, match="expects a dict"):
        config_from_dict(QuerySetConfig, [("n_queries", 3)])  # type: ignore[arg-type]


def test_preset_dict_is_json_and_missing_only_when_missing():
    from crosslocate.pipelines.presets import get_preset

    preset = get_preset("tiny")
    d = preset.to_dict()
    assert list(d)[:4] == ["name", "grid", "render", "shard"] and "missing" not in d
    assert json.loads(json.dumps(d)) == d  # plain JSON values only (tuples already lists)
    assert d["render"] == preset.render.to_dict() and d["grid"]["yaws_deg"] == list(preset.grid.yaws_deg)


class _Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class _Inner:
    xy: tuple[float, float] = (0.0, 1.0)


@dataclass(frozen=True)
class _Outer:
    path: Path = Path("a/b")
    colour: _Colour = _Colour.RED
    maybe: _Colour | None = None
    inner: _Inner = field(default_factory=_Inner)
    many: tuple[_Inner, ...] = ()
    free: object = None


def test_generic_rules_enum_path_optional_nested_tuples():
    cfg = _Outer(colour=_Colour.BLUE, maybe=_Colour.RED, many=(_Inner((2.0, 3.0)),), free=((1, 2), 3))
    d = config_to_dict(cfg)
    assert d == {
        "path": "a/b",
        "colour": "blue",
        "maybe": "red",
        "inner": {"xy": [0.0, 1.0]},
        "many": [{"xy": [2.0, 3.0]}],
        "free": [[1, 2], 3],
    }
    assert config_from_dict(_Outer, json.loads(json.dumps(d))) == cfg
    assert config_from_dict(_Outer, {}) == _Outer()  # missing keys take the defaults
    assert config_to_dict(None) is None
