"""Atomic file output: a path holds either its previous content or the complete new one, never a part.

Every writer goes to a temporary file in the destination folder (same file system), flushes and
fsyncs it, moves it over the destination with :func:`os.replace` (atomic on POSIX) and fsyncs the
folder so the rename itself survives a power loss. On any exception (or ``KeyboardInterrupt``) the
temporary file is removed and the destination is left untouched. A process killed with SIGKILL may
leave a temporary file named ``.<name>.<random>.tmp``; :func:`remove_stale_temps` clears them.

A full disk (``ENOSPC``, ``EDQUOT``, ``EFBIG``) while writing becomes
:class:`~crosslocate.errors.DiskFullError` naming the destination and the space left (the
temporary file removed); :func:`require_free_space` refuses a write that cannot fit before it starts.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from crosslocate.errors import DiskFullError

logger = logging.getLogger(__name__)

#: Suffix of temporary files (their name is ``.<destination name>.<random>.tmp``).
TEMP_SUFFIX = ".tmp"
#: Permissions of written files (mkstemp's 0600 would make databases unreadable to other users).
FILE_MODE = 0o644
#: errno values that mean "no room for this file".
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
#: Free space kept in reserve by :func:`require_free_space` (file system metadata, the manifest), bytes.
RESERVE_BYTES: int = 1 << 20


def free_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes available to this user on the file system of ``path`` (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return int(shutil.disk_usage(p).free)


def require_free_space(path: str | os.PathLike[str], needed: int, what: str = "") -> None:
    """Raise :class:`DiskFullError` when fewer than ``needed`` + :data:`RESERVE_BYTES` bytes are free at ``path``."""
    free = free_bytes(path)
    if free < needed + RESERVE_BYTES:
        raise DiskFullError(
            f"{path}: disk full: {free:,} bytes left, {what or 'this write'} needs about {needed + RESERVE_BYTES:,}"
        )


def is_disk_full(exc: BaseException) -> bool:
    """True for an OSError meaning the file system (or quota) is full."""
    return isinstance(exc, DiskFullError) or (isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
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


def fsync_file(path: str | os.PathLike[str]) -> None:
    """fsync a closed file by path."""
    fd = os.open(os.fspath(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on clean exit it replaces ``path`` atomically.

    For writers that need a file name rather than a handle (h5py, rasterio). The caller must have
    closed its handle on the temporary file before the ``with`` block ends.

    Parameters
    ----------
    path : path
        Destination; its parent folder is created.
    """
    dst = Path(path)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=TEMP_SUFFIX, dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, FILE_MODE)  # mkstemp creates 0600; outputs are ordinary shared files
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, dst)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            why = getattr(exc, "strerror", None) or exc
            raise DiskFullError(
                f"{dst}: disk full: {free_bytes(dst.parent):,} bytes left on its file system ({why})"
            ) from exc
        raise
    fsync_dir(dst.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file for writing; on clean exit flush, fsync and move it over ``path``.

    Parameters
    ----------
    path : path
        Destination; its parent folder is created.
    mode : str
        ``"wb"`` (default) or ``"w"`` (text, ``encoding`` default utf-8).

    Examples
    --------
    >>> with atomic_write(out / "manifest.json", "w") as fh:  # doctest: +SKIP
    ...     fh.write(text)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        kwargs: dict[str, Any] = {} if mode == "wb" else {"encoding": encoding or "utf-8"}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON (keys in insertion order, trailing newline) atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def remove_stale_temps(folder: str | os.PathLike[str], stem_glob: str = "*") -> list[Path]:
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
