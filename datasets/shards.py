"""HDF5 shards of rendered views: :class:`ShardWriter` (atomic), :class:`ShardReader` (lazy), :class:`Database`.

Shard layout (``shard-00000.h5``, schema version :data:`~crosslocate.datasets.schema.SCHEMA_VERSION`)::

    /depth        (N, H, W) stored codes (uint16 ``logq16`` or float32), chunk (1, H, W), Blosc
    /silhouette   (N, H, W) uint8 {0, 1}, chunk (1, H, W), Blosc + bit shuffle
    /semantic     (N, H, W) uint8 LandCover ids, chunk (1, H, W), Blosc
    /views        (N,) compound VIEW_DTYPE, one row per view
    attrs: format, schema_version, n_views, size_px, modalities (JSON), plus the writer's extras

Each modality dataset carries its :class:`~crosslocate.datasets.codecs.CodecSpec` as attributes, so
a reader decodes it without the manifest. Only the modalities the database was rendered with exist.

Readers open their HDF5 handle on first use and reopen it in a new process: the handle is never
pickled (dask workers and ``DataLoader`` workers each open their own).

Integrity at read time: a reader given its manifest record (every reader of :class:`Database`)
checks the file's size and sha256 before it first opens it, once per file per process (a forked
worker inherits the result), and its view count against the record's on opening (the view
numbering of a database follows the records), and every decoded batch is checked against physical bounds
(:func:`~crosslocate.datasets.schema.invalid_values`). Either failure raises
:class:`~crosslocate.errors.ShardCorruptError` naming the shard.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import h5py
import hdf5plugin  # registers the Blosc filters with HDF5; must be imported before h5py reads shards
import numpy as np
import numpy.typing as npt

from crosslocate.datasets import codecs
from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.manifest import Manifest, ShardRecord
from crosslocate.datasets.schema import (
    SCHEMA_VERSION,
    VIEW_DTYPE,
    Modality,
    first_invalid,
    modality_spec,
    parse_modalities,
    parse_modality,
)
from crosslocate.errors import ConfigError, NotBuiltError, ShardCorruptError
from crosslocate.fileio import file_sha256, require_free_space, write_bytes_atomic

logger = logging.getLogger(__name__)

#: ``format`` attribute of every shard file.
SHARD_FORMAT = "crosslocate-shard"
_SHUFFLE_CODES = {
    "none": hdf5plugin.Blosc.NOSHUFFLE,
    "byte": hdf5plugin.Blosc.SHUFFLE,
    "bit": hdf5plugin.Blosc.BITSHUFFLE,
}


#: Shard files whose bytes this process has checked: (resolved path, size, mtime_ns, sha256).
_CHECKED: set[tuple[str, int, int, str]] = set()


def shard_file_problem(path: str | os.PathLike[str], record: ShardRecord) -> str | None:
    """Why ``path`` does not hold the shard ``record`` describes (missing, size, sha256), or None."""
    path = Path(path)
    if not path.is_file():
        return "listed in the manifest but the file does not exist"
    size = path.stat().st_size
    if size != record.bytes:
        return f"file has {size} bytes, manifest says {record.bytes} (truncated or replaced)"
    digest = file_sha256(path)
    if digest != record.sha256:
        return f"sha256 {digest[:16]}... differs from the manifest's {record.sha256[:16]}... (corrupt)"
    return None


def check_shard_file(path: str | os.PathLike[str], record: ShardRecord) -> None:
    """Raise :class:`ShardCorruptError` naming the shard unless ``path`` matches ``record`` (size, sha256).

    The file is hashed once per process (again only when its size or mtime changes).
    """
    path = Path(path)
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns, record.sha256)
    except OSError:
        key = None
    if key is not None and key in _CHECKED:
        return
    why = shard_file_problem(path, record)
    if why is not None:
        raise ShardCorruptError(
            f"{path}: shard {record.shard_id}: {why}; run `crosslocate verify` and rerun `crosslocate build` to redo it"
        )
    if key is not None:
        _CHECKED.add(key)


def blosc_filter(spec: codecs.CodecSpec) -> hdf5plugin.Blosc:
    """The hdf5plugin Blosc filter of a dataset (``create_dataset(**blosc_filter(spec))``)."""
    return hdf5plugin.Blosc(cname=spec.compressor, clevel=spec.clevel, shuffle=_SHUFFLE_CODES[spec.shuffle])


class ShardWriter:
    """Builds one shard in memory and writes it atomically only when complete.

    Use as a context manager: views are appended with :meth:`add` to an in-memory HDF5 file (a
    shard is a few MB); :meth:`commit` checks the free space, writes the file image with
    :func:`~crosslocate.fileio.write_bytes_atomic` and returns ``(sha256, bytes, n_views)``.
    HDF5 itself never writes to disk, so a full disk is one clean
    :class:`~crosslocate.errors.DiskFullError` (never an HDF5 crash), and ``path`` never holds a
    partial shard. Entering the block already refuses when the folder has less free space than a
    shard is expected to take: the mean size of the shards this process or earlier runs wrote
    there, or ``expected_bytes`` before any is known (a fresh build's first shard).

    Parameters
    ----------
    path : path
        Destination shard file.
    modalities : sequence of Modality
        Datasets to create.
    size_px : int
        Square view side, pixels.
    cfg : ShardConfig
        Codec and compressor settings.
    attrs : mapping, optional
        Extra file attributes (JSON-serialisable scalars / strings).
    expected_bytes : int
        Expected file size when no shard of the folder is known yet (e.g.
        :func:`crosslocate.pipelines.plan.shard_bytes_estimate`); 0: no check before the first shard.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        modalities: Sequence[Modality | str],
        size_px: int,
        cfg: ShardConfig,
        attrs: Mapping[str, Any] | None = None,
        *,
        expected_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.expected_bytes = int(expected_bytes)
        self.modalities = parse_modalities(modalities)
        self.size_px = int(size_px)
        self.cfg = cfg
        self.attrs = dict(attrs or {})
        self.specs = {m: codecs.codec_spec(m, cfg) for m in self.modalities}
        self.n_views = 0
        self._bio: io.BytesIO | None = None
        self._h5: h5py.File | None = None

    def __enter__(self) -> Self:
        expected = _expected_shard_bytes(self.path.parent)
        if expected:
            require_free_space(self.path, expected, "a shard (the mean size so far)")
        elif self.expected_bytes:
            require_free_space(self.path, self.expected_bytes, "a shard (estimated from the view size)")
        # The file is built in a Python BytesIO (h5py's file-object driver): bytes HDF5 never writes
        # are zeros, and the image is taken after close(), so a shard's bytes depend only on its
        # content. (The in-memory "core" driver's image, taken before close, carried stale heap bytes
        # in unwritten gaps: two workers wrote the same views as different files.)
        self._bio = io.BytesIO()
        self._h5 = h5py.File(self._bio, "w")
        s = self.size_px
        for m, spec in self.specs.items():  # the working file; commit() lays out the final one
            self._h5.create_dataset(
                m.value,
                shape=(0, s, s),
                maxshape=(None, s, s),
                chunks=(1, s, s),
                dtype=np.dtype(spec.stored_dtype),
                track_times=False,
                **blosc_filter(spec),
            )
        self._h5.create_dataset(
            "views", shape=(0,), maxshape=(None,), chunks=(256,), dtype=VIEW_DTYPE, track_times=False
        )
        return self

    def add(self, arrays: Mapping[Modality | str, npt.NDArray[Any]], rows: npt.NDArray[np.void]) -> None:
        """Append views.

        Parameters
        ----------
        arrays : mapping Modality -> (n, H, W) array
            Decoded arrays of every modality of this writer: depth float32 metres (sky
            ``SKY_DEPTH_M``), silhouette uint8 {0, 1}, semantic uint8 ids.
        rows : (n,) VIEW_DTYPE
            Per-view table rows.
        """
        if self._h5 is None:
            raise ShardCorruptError(f"{self.path}: ShardWriter.add outside its `with` block")
        rows = np.asarray(rows, dtype=VIEW_DTYPE).reshape(-1)
        n = len(rows)
        given = {parse_modality(k): v for k, v in arrays.items()}
        missing = set(self.modalities) - set(given)
        if missing:
            raise ConfigError(f"{self.path}: arrays for {sorted(m.value for m in missing)} missing in ShardWriter.add")
        s = self.size_px
        for m in self.modalities:
            a = np.asarray(given[m])
            if a.shape != (n, s, s):
                raise ConfigError(f"{self.path}: {m.value} has shape {a.shape}, expected {(n, s, s)}")
            stored = codecs.encode(self.specs[m], a, self.cfg.depth_max_m)
            ds = self._h5[m.value]
            ds.resize(self.n_views + n, axis=0)
            ds[self.n_views :] = stored
        views = self._h5["views"]
        views.resize(self.n_views + n, axis=0)
        views[self.n_views :] = rows
        self.n_views += n

    def commit(self) -> tuple[str, int, int]:
        """Finish the file and write it into place; returns ``(sha256, bytes, n_views)``.

        Raises :class:`~crosslocate.errors.DiskFullError` (nothing written) when it does not fit.
        """
        if self._h5 is None:
            raise ShardCorruptError(f"{self.path}: ShardWriter.commit outside its `with` block")
        self._h5.close()
        self._h5 = None
        work = self._bio.getvalue() if self._bio is not None else b""
        self._bio = None
        image = self._canonical_image(work)
        require_free_space(self.path, len(image), "this shard")
        write_bytes_atomic(self.path, image)
        _record_shard_bytes(self.path.parent, len(image))
        return hashlib.sha256(image).hexdigest(), len(image), self.n_views

    def _canonical_image(self, work: bytes) -> bytes:
        """The shard's final bytes from the working file: the same compressed chunks, laid out by one
        fixed sequence of HDF5 calls.

        The working file grows by resizes, one position at a time; where HDF5 put its metadata then
        could differ between processes that wrote the same views (a dask worker vs the in-process
        build: same chunks and attributes, chunks at other offsets). Here every dataset is created at
        its final shape (the same chunking and maxshape), its chunks are copied with direct chunk I/O (no recompression, no chunk
        cache) in index order and the attributes are set in a fixed order, so the bytes depend only on
        the content.
        """
        out = io.BytesIO()
        with h5py.File(io.BytesIO(work), "r") as src, h5py.File(out, "w") as dst:
            for name, filt in [*((m.value, blosc_filter(self.specs[m])) for m in self.modalities), ("views", {})]:
                s = src[name]
                d = dst.create_dataset(
                    name, shape=s.shape, maxshape=s.maxshape, chunks=s.chunks, dtype=s.dtype, track_times=False, **filt
                )
                for i in range(s.id.get_num_chunks()):
                    offset = s.id.get_chunk_info(i).chunk_offset
                    mask, chunk = s.id.read_direct_chunk(offset)
                    d.id.write_direct_chunk(offset, chunk, mask)
                if name != "views":
                    d.attrs.update(self.specs[parse_modality(name)].to_attrs())
            dst.attrs["format"] = SHARD_FORMAT
            dst.attrs["schema_version"] = SCHEMA_VERSION
            dst.attrs["n_views"] = self.n_views
            dst.attrs["size_px"] = self.size_px
            dst.attrs["modalities"] = json.dumps([m.value for m in self.modalities])
            for key, value in self.attrs.items():
                dst.attrs[key] = value
        return out.getvalue()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._h5 is not None:  # not committed: the in-memory file is discarded, nothing was written
            self._h5.close()
            self._h5 = None
            if exc is None:
                logger.warning("%s: ShardWriter closed without commit; nothing written", self.path)


#: Per folder: (bytes, count) of the shards this process wrote or found there (expected shard size).
_SHARD_SIZES: dict[str, tuple[int, int]] = {}


def _expected_shard_bytes(folder: Path) -> int:
    """Mean size of the shards in ``folder`` (0 when none is known yet); the folder is listed once per process."""
    key = str(folder.absolute())
    if key not in _SHARD_SIZES:
        sizes = [p.stat().st_size for p in folder.glob("shard-*.h5") if p.is_file()] if folder.is_dir() else []
        _SHARD_SIZES[key] = (sum(sizes), len(sizes))
    total, count = _SHARD_SIZES[key]
    return total // count if count else 0


def _record_shard_bytes(folder: Path, size: int) -> None:
    total, count = _SHARD_SIZES.get(str(folder.absolute()), (0, 0))
    _SHARD_SIZES[str(folder.absolute())] = (total + size, count + 1)


class ShardReader:
    """Lazy reader of one shard (the HDF5 handle opens on first use, once per process).

    Parameters
    ----------
    path : path
        Shard file.
    record : ShardRecord, optional
        Its manifest entry: the file's size and sha256 are checked before the first open in a
        process (:func:`check_shard_file`).
    """

    def __init__(self, path: str | os.PathLike[str], record: ShardRecord | None = None) -> None:
        self.path = Path(path)
        self.record = record
        self._h5: h5py.File | None = None
        self._pid: int | None = None
        self._specs: dict[Modality, codecs.CodecSpec] = {}

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            if self.record is not None:
                check_shard_file(self.path, self.record)
            try:
                h5 = h5py.File(self.path, "r")
            except (OSError, ValueError) as exc:
                raise ShardCorruptError(
                    f"{self.path}: cannot open shard ({exc}); run `crosslocate verify` and rebuild"
                ) from exc
            if h5.attrs.get("format") != SHARD_FORMAT:
                h5.close()
                raise ShardCorruptError(f"{self.path}: not a crosslocate shard (format attribute missing)")
            if int(h5.attrs.get("schema_version", -1)) != SCHEMA_VERSION:
                h5.close()
                raise ShardCorruptError(
                    f"{self.path}: schema version {h5.attrs.get('schema_version')}, expected {SCHEMA_VERSION}; "
                    "rebuild the database"
                )
            stored = int(h5.attrs.get("n_views", -1))
            if self.record is not None and stored != self.record.n_views:
                h5.close()
                raise ShardCorruptError(
                    f"{self.path}: {stored} views in the file, the manifest lists {self.record.n_views}; "
                    "run `crosslocate verify` and rerun `crosslocate build`"
                )
            self._h5, self._pid, self._specs = h5, os.getpid(), {}
        return self._h5

    @property
    def n_views(self) -> int:
        """Views in this shard."""
        return int(self._file().attrs["n_views"])

    @property
    def size_px(self) -> int:
        """Square view side, pixels."""
        return int(self._file().attrs["size_px"])

    @property
    def modalities(self) -> tuple[Modality, ...]:
        """Stored modalities."""
        return tuple(parse_modality(m, str(self.path)) for m in json.loads(str(self._file().attrs["modalities"])))

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes as a plain dict."""
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in self._file().attrs.items()}

    def spec(self, modality: Modality | str) -> codecs.CodecSpec:
        """The codec of a stored modality; :class:`ShardCorruptError` when it is not stored."""
        m = parse_modality(modality)
        if m not in self._specs:
            h5 = self._file()
            if m.value not in h5:
                raise ShardCorruptError(
                    f"{self.path}: modality {m.value!r} not stored (has {[x.value for x in self.modalities]})"
                )
            self._specs[m] = codecs.CodecSpec.from_attrs(h5[m.value].attrs, f"{self.path}:/{m.value}")
        return self._specs[m]

    def table(self) -> npt.NDArray[np.void]:
        """(N,) VIEW_DTYPE per-view table (columns of older shards, e.g. ``render_time_s``, dropped)."""
        raw = self._file()["views"][...]
        if raw.dtype == VIEW_DTYPE:
            return np.asarray(raw)
        out = np.zeros(raw.shape, VIEW_DTYPE)
        try:
            for name in VIEW_DTYPE.names:
                out[name] = raw[name]
        except (KeyError, ValueError) as exc:
            raise ShardCorruptError(f"{self.path}: /views table lacks column {exc}; rebuild this shard") from exc
        return out

    def storage_bytes(self) -> dict[str, int]:
        """Compressed bytes each modality's dataset occupies in the file (chunks only, no metadata)."""
        h5 = self._file()
        return {m.value: int(h5[m.value].id.get_storage_size()) for m in self.modalities}

    def read_stored(self, modality: Modality | str, indices: npt.ArrayLike) -> npt.NDArray[Any]:
        """(n, H, W) stored (encoded) arrays of the given view indices, in the given order."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self.n_views
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"{self.path}: view index out of range [0, {n}): {idx[(idx < 0) | (idx >= n)][0]}")
        self.spec(modality)
        ds = self._file()[parse_modality(modality).value]
        uniq, inverse = np.unique(idx, return_inverse=True)
        try:
            data = ds[uniq] if uniq.size else np.empty((0, *ds.shape[1:]), ds.dtype)
        except (OSError, ValueError) as exc:
            raise ShardCorruptError(f"{self.path}: cannot read {modality} ({exc}); rebuild this shard") from exc
        return data[inverse]

    def read(self, modality: Modality | str, index: int) -> npt.NDArray[Any]:
        """(H, W) decoded view ``index``: depth float32 metres (sky ``SKY_DEPTH_M``), else uint8."""
        return self.read_batch(modality, [index])[0]

    def read_batch(self, modality: Modality | str, indices: npt.ArrayLike, *, check: bool = True) -> npt.NDArray[Any]:
        """(n, H, W) decoded views, in the order of ``indices``.

        With ``check`` (default) a value outside physical bounds raises :class:`ShardCorruptError`.
        """
        decoded = codecs.decode(self.spec(modality), self.read_stored(modality, indices))
        if check:
            bad = first_invalid(modality, decoded, np.asarray(indices, dtype=np.int64).reshape(-1))
            if bad is not None:
                raise ShardCorruptError(
                    f"{self.path}: corrupt shard: {bad}; run `crosslocate verify` and rerun `crosslocate build`"
                )
        return decoded

    def close(self) -> None:
        """Close the handle (a later read reopens it). Idempotent."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid, self._specs = None, None, {}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "record": self.record}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state.get("record"))  # type: ignore[misc]


class Database:
    """A complete database folder: the manifest plus one lazy :class:`ShardReader` per shard.

    Views are numbered shard by shard in ``shard_id`` order (the order of :meth:`table`).
    """

    def __init__(self, db_dir: str | os.PathLike[str], manifest: Manifest) -> None:
        self.db_dir = Path(db_dir)
        self.manifest = manifest
        self.readers = [ShardReader(self.db_dir / s.path, s) for s in manifest.shards]
        counts = np.array([s.n_views for s in manifest.shards], dtype=np.int64)
        #: (n_shards + 1,) int64 view offsets of the shards.
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def n_views(self) -> int:
        """Total views."""
        return int(self.offsets[-1])

    def __len__(self) -> int:
        return self.n_views

    def table(self) -> npt.NDArray[np.void]:
        """(N,) VIEW_DTYPE rows of all views, concatenated in view order.

        Shards this call opens it closes again: an open HDF5 file costs ~0.6 MB, and holding all
        8,238 shards of Switzerland open took 5.3 GB.
        """
        parts = []
        for r in self.readers:
            was_open = r._h5 is not None and r._pid == os.getpid()
            parts.append(r.table())
            if not was_open:
                r.close()
        return np.concatenate(parts) if parts else np.empty(0, VIEW_DTYPE)

    def locate(self, indices: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(shard number, index within the shard) of database view indices."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_views):
            bad = idx[(idx < 0) | (idx >= self.n_views)][0]
            raise IndexError(f"{self.db_dir}: view index {bad} out of range [0, {self.n_views})")
        shard = np.searchsorted(self.offsets, idx, side="right") - 1
        return shard.astype(np.int64), idx - self.offsets[shard]

    def read(self, modality: Modality | str, index: int) -> npt.NDArray[Any]:
        """(H, W) decoded view ``index`` (see :meth:`ShardReader.read`)."""
        return self.read_batch(modality, [index])[0]

    def read_batch(self, modality: Modality | str, indices: npt.ArrayLike) -> npt.NDArray[Any]:
        """(n, H, W) decoded views in the order of ``indices``."""
        shard, local = self.locate(indices)
        size = int(self.manifest.render.get("size_px", 0)) or (self.readers[0].size_px if self.readers else 0)
        out = np.empty((len(shard), size, size), modality_spec(modality).dtype)
        for s in np.unique(shard):
            sel = np.flatnonzero(shard == s)
            out[sel] = self.readers[int(s)].read_batch(modality, local[sel])
        return out

    def close(self) -> None:
        """Close every shard handle. Idempotent."""
        for r in self.readers:
            r.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_database(db_dir: str | os.PathLike[str], *, allow_partial: bool = False) -> Database:
    """Open a database folder for reading.

    Parameters
    ----------
    db_dir : path
        Folder with ``manifest.json`` and the shards.
    allow_partial : bool
        Open an unfinished build (only its complete shards). Default: refuse, since view indices
        of an unfinished database change when it completes.

    Raises
    ------
    NotBuiltError
        No manifest, or (without ``allow_partial``) shards still missing.
    ShardCorruptError
        A listed shard file is missing.
    """
    db_dir = Path(db_dir)
    manifest = Manifest.load(db_dir)
    if not manifest.complete and not allow_partial:
        missing = manifest.n_planned_shards - len(manifest.shards)
        raise NotBuiltError(
            f"{db_dir}: database incomplete ({missing} of {manifest.n_planned_shards} shards missing); "
            "rerun `crosslocate build` to finish it"
        )
    for s in manifest.shards:
        if not (db_dir / s.path).is_file():
            raise ShardCorruptError(
                f"{db_dir / s.path}: listed in the manifest but missing; rerun `crosslocate build` to redo it"
            )
    return Database(db_dir, manifest)


def stored_bytes(spec: codecs.CodecSpec, arrays: npt.NDArray[Any], depth_max_m: float = float("inf")) -> int:
    """Compressed bytes of ``arrays`` (n, H, W) stored with ``spec`` (chunk per view), measured in memory."""
    a = np.asarray(arrays)
    stored = codecs.encode(spec, a, depth_max_m)
    with h5py.File(f"measure-{id(a)}.h5", "w", driver="core", backing_store=False) as h5:
        ds = h5.create_dataset("x", data=stored, chunks=(1, *stored.shape[1:]), track_times=False, **blosc_filter(spec))
        return int(ds.id.get_storage_size())


__all__ = [
    "SHARD_FORMAT",
    "Database",
    "ShardReader",
    "ShardWriter",
    "blosc_filter",
    "check_shard_file",
    "open_database",
    "shard_file_problem",
    "stored_bytes",
]
