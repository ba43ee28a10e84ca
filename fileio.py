"""File output and file identity used by every layer: atomic writes, sha256, config (de)serialisation.

Cross-cutting like :mod:`crosslocate.errors` and :mod:`crosslocate.progress`, so any layer may import
it (it imports the standard library only; numpy and Pillow when a writer needs them). Nothing here chooses *what* is
written: each caller keeps its own bytes (JSON options, array layout, image format); this module
only decides *how* they reach the disk.

What is atomic
--------------
Every ``*_atomic`` writer (and :func:`atomic_path` / :func:`atomic_write`) goes to a temporary
file ``.<name>.<random>.tmp`` in the destination folder (same file system), flushes and fsyncs
it, moves it over the destination with :func:`os.replace` (atomic on POSIX) and fsyncs the folder
so the rename itself survives a power loss. A reader therefore sees the previous content or the
complete new one, never a part. On any exception (or ``KeyboardInterrupt``) the temporary file is
removed and the destination is left untouched. Written files get mode 0644 (``mkstemp`` would
leave 0600).

What is not
-----------
- One file at a time: writing several files (a manifest and its shards, ``metrics.json`` and
  ``metrics.csv``) is a sequence of atomic steps, not one transaction; callers order the steps so
  every intermediate state is valid (e.g. the manifest lists a shard only after the shard exists).
- A process killed with SIGKILL may leave its temporary file behind (never a partial destination);
  :func:`remove_stale_temps` clears such files.
- Directories are not written through here (the terrain atlas renames a whole temporary folder).

A full disk (``ENOSPC``, ``EDQUOT``, ``EFBIG``) while writing becomes
:class:`~crosslocate.errors.DiskFullError` naming the destination and the space left (the
temporary file removed); :func:`require_free_space` refuses a write that cannot fit before it starts.
Any other refusal by the operating system (``EIO``, ``EROFS``, ``EACCES``, ``EPERM``:
:data:`WRITE_FAILURE_ERRNOS`) becomes :class:`~crosslocate.errors.OutputWriteError` naming the
destination, the OS reason and what to do (:func:`write_error`), again with the temporary file removed.

Config (de)serialisation
------------------------
:func:`config_to_dict` / :func:`config_from_dict` are the one JSON mapping of the frozen settings
dataclasses (``GridConfig``, ``RenderConfig``, ``NetConfig``, ...): enums as their values, tuples
as lists, paths as strings, nested dataclasses as nested dicts; the way back rebuilds tuples, enums,
paths and nested dataclasses from the field annotations and refuses unknown keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import errno
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath
from typing import IO, TYPE_CHECKING, Any, TypeVar

from crosslocate.errors import ConfigError, CrosslocateError, DiskFullError, OutputWriteError, missing_dependency

if TYPE_CHECKING:
    import numpy.typing as npt

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
_C = TypeVar("_C")

#: Suffix of temporary files (their name is ``.<destination name>.<random>.tmp``).
TEMP_SUFFIX = ".tmp"
#: Permissions of written files (mkstemp's 0600 would make databases unreadable to other users).
FILE_MODE = 0o644
#: errno values that mean "no room for this file".
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: errno values of other write failures turned into :class:`~crosslocate.errors.OutputWriteError`,
#: with what the user can do about each.
WRITE_FAILURE_ERRNOS: dict[int, str] = {
    errno.EIO: "the device reported an I/O error; check the disk (e.g. `dmesg`) and rerun",
    errno.EROFS: "the file system is read-only; choose an output folder on a writable one",
    errno.EACCES: "permission denied; choose another output folder or fix its permissions",
    errno.EPERM: "operation not permitted; choose another output folder or fix its permissions",
}
#: Free space kept in reserve by :func:`require_free_space` (file system metadata, the manifest), bytes.
RESERVE_BYTES: int = 1 << 20
#: Block size of :func:`file_sha256` reads, bytes.
SHA256_CHUNK_BYTES: int = 1 << 20
#: Image formats of :func:`save_image_atomic`, by lower-case file suffix.
IMAGE_FORMATS: dict[str, str] = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


# ----------------------------------------------------------------------------------- free space


def free_bytes(path: PathLike) -> int:
    """Bytes available to this user on the file system of ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def require_free_space(path: PathLike, needed: int, what: str = "") -> None:
    """Raise :class:`DiskFullError` when fewer than ``needed`` + :data:`RESERVE_BYTES` bytes are free at ``path``."""
    free = free_bytes(path)
    if free < needed + RESERVE_BYTES:
        raise DiskFullError(
            f"{path}: disk full: {free:,} bytes left, {what or 'this write'} needs about {needed + RESERVE_BYTES:,}"
        )


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError meaning the file system (or quota) is full."""
    return isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS)


def is_write_failure(exc: BaseException) -> bool:
    """True for a plain OSError (not one of ours) that :func:`write_error` turns into a clear error."""
    return (
        isinstance(exc, OSError)
        and not isinstance(exc, CrosslocateError)
        and (exc.errno in DISK_FULL_ERRNOS or exc.errno in WRITE_FAILURE_ERRNOS)
    )


def write_error(path: PathLike, exc: OSError) -> CrosslocateError:
    """The one-line error of an OS failure while writing ``path``.

    :class:`DiskFullError` (with the space left) for a full disk or quota, else
    :class:`OutputWriteError` naming ``path``, the OS reason (errno name) and what to do; when the
    OS named another file than the temporary one (e.g. a source being copied), that file too.
    """
    dst = Path(path)
    why = exc.strerror or str(exc)
    if exc.errno in DISK_FULL_ERRNOS:
        return DiskFullError(f"{dst}: disk full: {free_bytes(dst.parent):,} bytes left on its file system ({why})")
    code = errno.errorcode.get(exc.errno or 0, "unknown errno")
    named = None if exc.filename is None else Path(os.fsdecode(exc.filename))
    other = named is not None and named != dst and not named.name.startswith(f".{dst.name}.")
    where = f" (at {named})" if other else ""
    hint = WRITE_FAILURE_ERRNOS.get(exc.errno or 0, "check the disk and rerun")
    return OutputWriteError(f"{dst}: cannot write: {why} [{code}]{where}; {hint}")


# ---------------------------------------------------------------------------------------- fsync


def fsync_dir(folder: PathLike) -> None:
    """fsync a directory so a rename inside it is durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(os.fspath(folder), os.O_RDONLY)
    except OSError as exc:
        logger.debug("cannot open directory %s for fsync: %s", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems (e.g. certain network mounts) refuse fsync on directories
        logger.debug("fsync of directory %s failed: %s", folder, exc)
    finally:
        os.close(fd)


def fsync_file(path: PathLike) -> None:
    """fsync a closed file by path."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------- atomic writers


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit it replaces ``path`` atomically.

    For writers that need a file name rather than a handle (h5py, rasterio, ``shutil.copyfile``).
    The caller must have closed its handle on the temporary file before the ``with`` block ends.
    The temporary file exists (empty) when the block starts.

    Parameters
    ----------
    path : path
        Destination; its parent folder is created.

    Raises
    ------
    DiskFullError
        The file system filled up while writing (the temporary file is removed).
    OutputWriteError
        The OS refused the write otherwise (:data:`WRITE_FAILURE_ERRNOS`: I/O error, read-only file
        system, permission), also when creating the folder or the temporary file; the temporary
        file is removed.
    """
    dst = Path(path)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=TEMP_SUFFIX, dir=dst.parent)
    except OSError as exc:
        if is_write_failure(exc):
            raise write_error(dst, exc) from exc
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; outputs are ordinary shared files
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, dst)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_write_failure(exc):
            raise write_error(dst, exc) from exc  # type: ignore[arg-type]
        raise
    fsync_dir(dst.parent)


@contextlib.contextmanager
def atomic_write(
    path: PathLike, mode: str = "wb", encoding: str | None = None, newline: str | None = None
) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on clean exit flush, fsync and move it over ``path``.

    Parameters
    ----------
    path : path
        Destination; its parent folder is created.
    mode : str
        ``"wb"`` (default) or ``"w"`` (text; ``encoding`` default utf-8, ``newline`` as for :func:`open`).

    Examples
    --------
    >>> with atomic_write(out / "manifest.json", "w") as fh:  # doctest: +SKIP
    ...     fh.write(text)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs: dict[str, Any] = {} if mode == "wb" else {"encoding": encoding or "utf-8", "newline": newline}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation beyond the platform's); returns the path."""
    with atomic_write(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return Path(path)


def write_json_atomic(path: PathLike, data: Any, **dumps_kwargs: Any) -> Path:
    """Write ``data`` as JSON plus a trailing newline atomically; returns the path.

    Parameters
    ----------
    path : path
        Destination.
    data : JSON-able
        Written with :func:`json.dumps`.
    **dumps_kwargs
        Passed to :func:`json.dumps`, over the defaults ``indent=2, allow_nan=False`` (keys in
        insertion order); e.g. ``default=str`` or ``sort_keys=True``. A caller whose files already
        exist passes what it used before, so their bytes stay the same.
    """
    text = json.dumps(data, **{"indent": 2, "allow_nan": False, **dumps_kwargs}) + "\n"
    return write_text_atomic(path, text)


def save_npy_atomic(path: PathLike, array: npt.ArrayLike) -> Path:
    """Write one array as ``.npy`` (:func:`numpy.save`, no pickle) atomically; returns the path.

    Unlike :func:`numpy.save` on a file name, ``path`` is used as given (no ``.npy`` appended).
    """
    import numpy as np

    with atomic_write(path, "wb") as fh:
        np.save(fh, np.asanyarray(array), allow_pickle=False)
    return Path(path)


def write_npz_atomic(path: PathLike, arrays: Mapping[str, npt.ArrayLike], *, compressed: bool = False) -> Path:
    """Write named arrays as ``.npz`` (:func:`numpy.savez`, or ``savez_compressed``) atomically.

    Members carry the current time as zip timestamps (numpy's behaviour), so two writes of the same
    arrays differ in those bytes; a caller that needs reproducible files writes its own zip through
    :func:`atomic_write` (``Positions.to_npz`` does). Arrays of Python objects are refused (no pickle
    on load), strings must be numpy ``str`` arrays.
    """
    import numpy as np

    save = np.savez_compressed if compressed else np.savez
    with atomic_write(path, "wb") as fh:
        save(fh, **dict(arrays))
    return Path(path)


def _image_format(path: Path, fmt: str | None) -> str:
    if fmt:
        return fmt
    try:
        return IMAGE_FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"{path}: cannot tell the image format from the suffix {path.suffix!r}; use one of "
            f"{sorted(IMAGE_FORMATS)} or pass format="
        ) from None


def save_image_atomic(path: PathLike, image: Any, *, format: str | None = None, **save_kwargs: Any) -> Path:
    """Encode an image and write it to ``path`` atomically; returns the path.

    Parameters
    ----------
    path : path
        Destination; its suffix picks the format (``.png`` PNG, ``.jpg``/``.jpeg`` JPEG) unless
        ``format`` is given.
    image : PIL.Image.Image or ndarray
        A Pillow image (written as it is), or a uint8 array: (H, W) greyscale, (H, W, 3) RGB or
        (H, W, 4) RGBA.
    format : str, optional
        Pillow format name, overriding the suffix.
    **save_kwargs
        Passed to ``Image.save`` (e.g. ``quality=82`` for JPEG).
    """
    import numpy as np

    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - pillow is a core dependency
        raise missing_dependency("pillow") from exc
    dst = Path(path)
    fmt = _image_format(dst, format)
    if not isinstance(image, Image.Image):
        arr = np.asarray(image)
        if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
            raise ValueError(
                f"{dst}: an image array must be uint8 (H, W), (H, W, 3) or (H, W, 4), got {arr.dtype} {arr.shape}"
            )
        image = Image.fromarray(np.ascontiguousarray(arr))
    with atomic_write(dst, "wb") as fh:
        image.save(fh, format=fmt, **save_kwargs)
    return dst


def save_figure_atomic(fig: Any, path: PathLike, *, format: str | None = None, **savefig_kwargs: Any) -> Path:
    """``fig.savefig`` into a temporary file, then move it over ``path`` atomically; returns the path.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        Any object with matplotlib's ``savefig(fname, format=..., **kwargs)`` (matplotlib itself
        is not imported here).
    path : path
        Destination; its suffix (``.png``, ``.pdf``, ``.svg``, ...) is the format unless ``format``
        is given (the temporary file's ``.tmp`` suffix would mean nothing to matplotlib).
    **savefig_kwargs
        Passed to ``savefig`` (``dpi``, ``bbox_inches``, ...).
    """
    dst = Path(path)
    fmt = format or dst.suffix.lower().lstrip(".")
    if not fmt:
        raise ValueError(f"{dst}: no suffix to tell the figure format from; add one or pass format=")
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format=fmt, **savefig_kwargs)
    return dst


def remove_stale_temps(folder: PathLike, stem_glob: str = "*") -> list[Path]:
    """Delete temporary files ``.<stem_glob>.*.tmp`` left in ``folder`` by killed writers; returns them.

    Only call this when no other process writes into ``folder`` (e.g. at the start of a build that
    owns the folder).
    """
    removed = []
    for p in sorted(Path(folder).glob(f".{stem_glob}.*{TEMP_SUFFIX}")):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    if removed:
        logger.info("removed %d stale temporary file(s) in %s", len(removed), folder)
    return removed


# ------------------------------------------------------------------------------------- identity


def file_sha256(path: PathLike, chunk: int = SHA256_CHUNK_BYTES) -> str:
    """Hex sha256 of a file's bytes, read ``chunk`` bytes at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------- config (de)serialisation


def _is_instance_of_dataclass(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _plain(value: Any) -> Any:
    if _is_instance_of_dataclass(value):
        return config_to_dict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


def config_to_dict(obj: Any) -> Any:
    """JSON-able dict of a settings dataclass: every field, in declaration order.

    Enums become their values, tuples (and lists) lists, paths strings, nested dataclasses nested
    dicts (by these same rules); other values are kept as they are. Anything that is not a
    dataclass instance is returned converted by the same rules (``None`` stays ``None``), so a
    caller may pass an optional config.

    Examples
    --------
    >>> from crosslocate.render.config import RenderConfig
    >>> config_to_dict(RenderConfig())["modalities"]
    ['depth', 'silhouette', 'semantic']
    """
    if not _is_instance_of_dataclass(obj):
        return _plain(obj)
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Resolved field annotations of ``cls`` ({} where they cannot be resolved: then lists -> tuples)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a name only imported under TYPE_CHECKING, an unresolvable forward reference
        logger.debug("cannot resolve the annotations of %s; treating its fields as Any", cls.__name__)
        return {}


def _rebuild(tp: Any, value: Any, where: str) -> Any:
    """``value`` (from JSON) as the annotation ``tp`` wants it: tuples, enums, paths, dataclasses."""
    if value is None:
        return None
    if tp is Any or tp is object:  # unannotated, Any or object: frozen configs hold tuples, not lists
        return tuple(_rebuild(Any, v, where) for v in value) if isinstance(value, list) else value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _rebuild(options[0], value, where) if len(options) == 1 else _rebuild(Any, value, where)
    if (origin is tuple or tp is tuple) and isinstance(value, list | tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_rebuild(args[0], v, where) for v in value)
        if args and len(args) == len(value):
            return tuple(_rebuild(a, v, where) for a, v in zip(args, value, strict=True))
        return tuple(_rebuild(Any, v, where) for v in value)
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
            return config_from_dict(tp, value)
        if issubclass(tp, enum.Enum) and not isinstance(value, tp):
            try:
                return tp(value)
            except ValueError:
                raise ConfigError(
                    f"{where}: {value!r} is not a {tp.__name__}; choose one of {[m.value for m in tp]}"
                ) from None
        if issubclass(tp, PurePath) and isinstance(value, str):
            return tp(value)
    return value


def config_from_dict(cls: type[_C], data: Mapping[str, Any]) -> _C:
    """Rebuild the settings dataclass ``cls`` from :func:`config_to_dict` output (e.g. read from JSON).

    Fields missing from ``data`` take their defaults; the class's own ``__post_init__`` validates
    the values. Guided by the field annotations, lists become tuples (also for unannotated fields
    and ``Any``), enum values enums, strings paths, and dicts nested dataclasses (rebuilt by this
    same function).

    Raises
    ------
    ConfigError
        ``data`` is not a dict, has a key that is not a field of ``cls`` (naming the key, the class
        and the known fields), or holds an invalid enum value.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__}.from_dict expects a dict of fields, got {type(data).__name__}")
    known = [f.name for f in dataclasses.fields(cls) if f.init]  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(
            f"{cls.__name__}: unknown keys {unknown} (a typo, or written by another version?); known: {sorted(known)}"
        )
    hints = _field_types(cls)
    kw = {k: _rebuild(hints.get(k, Any), v, f"{cls.__name__}.{k}") for k, v in data.items()}
    return cls(**kw)


__all__ = [
    "DISK_FULL_ERRNOS",
    "FILE_MODE",
    "IMAGE_FORMATS",
    "RESERVE_BYTES",
    "SHA256_CHUNK_BYTES",
    "TEMP_SUFFIX",
    "WRITE_FAILURE_ERRNOS",
    "atomic_path",
    "atomic_write",
    "config_from_dict",
    "config_to_dict",
    "file_sha256",
    "free_bytes",
    "fsync_dir",
    "fsync_file",
    "is_disk_full",
    "is_write_failure",
    "remove_stale_temps",
    "require_free_space",
    "save_figure_atomic",
    "save_image_atomic",
    "save_npy_atomic",
    "write_bytes_atomic",
    "write_error",
    "write_json_atomic",
    "write_npz_atomic",
    "write_text_atomic",
]
