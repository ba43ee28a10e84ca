"""The database manifest: ``<db_dir>/manifest.json`` <-> :class:`Manifest`.

A database is a folder::

    manifest.json        this file (written atomically after every completed shard)
    positions.npz        all planned camera positions (:class:`crosslocate.dem.grid.Positions`)
    shard-00000.h5 ...   HDF5 shards (:mod:`crosslocate.datasets.shards`)

The manifest has two parts. The **configuration** (schema version, kind, region, DEM sources and
checksum, CRS, grid / render / shard settings, split definition, codec specs, the planned positions'
digest and shard count) identifies what the database *should* contain; its sha256
(:meth:`Manifest.fingerprint`) is compared before a build resumes, and a different one is refused
(:class:`~crosslocate.errors.ManifestMismatchError`). The **shard list** records what is *complete*:
a shard file counts only when it is listed here with its sha256.

The file carries its fingerprint; loading recomputes it from the configuration part and refuses a
file whose content does not match (edited or damaged: :class:`~crosslocate.errors.ManifestCorruptError`),
as it refuses duplicate shard ids or paths. Every writer goes through :meth:`Manifest.save`, which
writes the fingerprint of what it writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from crosslocate.datasets.schema import SCHEMA_VERSION
from crosslocate.errors import ManifestCorruptError, ManifestMismatchError, NotBuiltError
from crosslocate.fileio import file_sha256, write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"
POSITIONS_NAME = "positions.npz"
#: Identifies crosslocate database manifests.
FORMAT = "crosslocate-db"
#: Keys of the configuration part (everything the fingerprint covers).
CONFIG_KEYS: tuple[str, ...] = (
    "format",
    "schema_version",
    "kind",
    "region",
    "dem",
    "crs_wkt",
    "grid",
    "render",
    "shard",
    "codecs",
    "split",
    "layout",
)


def shard_name(shard_id: int) -> str:
    """File name of shard ``shard_id`` (``shard-00000.h5``)."""
    return f"shard-{shard_id:05d}.h5"


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardRecord:
    """One complete shard.

    Attributes
    ----------
    shard_id : int
        Position of the shard in the database (views are numbered shard by shard).
    path : str
        File name relative to the database folder.
    n_views, n_positions : int
        Views and positions stored.
    position_ids : (2,) list of int
        Smallest and largest ``position_id`` in the shard (ids are not contiguous: shards group
        positions spatially).
    sha256 : str
        Hex digest of the file bytes.
    bytes : int
        File size.
    """

    shard_id: int
    path: str
    n_views: int
    n_positions: int
    position_ids: tuple[int, int]
    sha256: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "shard_id": self.shard_id,
            "path": self.path,
            "n_views": self.n_views,
            "n_positions": self.n_positions,
            "position_ids": list(self.position_ids),
            "sha256": self.sha256,
            "bytes": self.bytes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardRecord:
        """Inverse of :meth:`to_dict`."""
        lo, hi = data["position_ids"]
        return cls(
            shard_id=int(data["shard_id"]),
            path=str(data["path"]),
            n_views=int(data["n_views"]),
            n_positions=int(data["n_positions"]),
            position_ids=(int(lo), int(hi)),
            sha256=str(data["sha256"]),
            bytes=int(data["bytes"]),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class Manifest:
    """Contents of ``manifest.json`` (see the module docstring).

    Attributes
    ----------
    kind : str
        ``sparse`` / ``compact`` / ``uniform``.
    region : dict
        ``name``, ``bounds_lonlat`` (west, south, east, north degrees), ``area_km2``.
    dem : dict
        ``sources`` (list of str), ``checksum`` (sha256), ``synthetic`` (bool).
    crs_wkt : str
        Projected CRS of the ``x``/``y`` columns of the per-view table.
    grid, render, shard : dict
        ``GridConfig`` / ``RenderConfig`` / ``ShardConfig`` as dicts.
    codecs : dict
        Modality -> :class:`~crosslocate.datasets.codecs.CodecSpec` attributes.
    split : dict
        The split definition: ``codes`` (name -> id) and the grid's split settings.
    layout : dict
        ``n_positions``, ``n_views``, ``views_per_position``, ``n_shards`` (planned),
        ``positions_sha256`` (digest of the planned positions) and ``order`` (shard grouping rule).
    shards : tuple of ShardRecord
        Complete shards, sorted by ``shard_id``.
    info : dict
        Free-form, not fingerprinted (preset, schema version).
    positions : dict or None
        The written ``positions.npz``: ``path``, ``sha256`` (file bytes), ``bytes``; None in
        manifests written before it was recorded. Not fingerprinted.
    """

    kind: str
    region: dict[str, Any]
    dem: dict[str, Any]
    crs_wkt: str
    grid: dict[str, Any]
    render: dict[str, Any]
    shard: dict[str, Any]
    codecs: dict[str, Any]
    split: dict[str, Any]
    layout: dict[str, Any]
    shards: tuple[ShardRecord, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)
    positions: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT

    # -- identity -----------------------------------------------------------------------------
    def config_dict(self) -> dict[str, Any]:
        """The configuration part (JSON-normalised), i.e. what :meth:`fingerprint` hashes."""
        raw = {key: getattr(self, key) for key in CONFIG_KEYS}
        normalised: dict[str, Any] = json.loads(json.dumps(raw, sort_keys=True))
        return normalised

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of :meth:`config_dict`."""
        blob = json.dumps(self.config_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def differences(self, other: Manifest) -> list[str]:
        """Human-readable ``key: old -> new`` lines where the configurations differ."""
        return _diff(self.config_dict(), other.config_dict())

    def require_same_config(self, requested: Manifest, db_dir: str | os.PathLike[str]) -> None:
        """Raise :class:`ManifestMismatchError` when ``requested`` has a different configuration."""
        diffs = self.differences(requested)
        if diffs:
            shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 6 else "")
            raise ManifestMismatchError(
                f"{Path(db_dir) / MANIFEST_NAME} was built with a different configuration ({shown}); "
                "pass --overwrite to rebuild it, or choose another --out folder"
            )

    # -- shards -------------------------------------------------------------------------------
    @property
    def n_views(self) -> int:
        """Views in the complete shards."""
        return sum(s.n_views for s in self.shards)

    @property
    def n_planned_shards(self) -> int:
        """Shards the database has when complete."""
        return int(self.layout.get("n_shards", len(self.shards)))

    @property
    def complete(self) -> bool:
        """True when every planned shard is recorded."""
        return {s.shard_id for s in self.shards} == set(range(self.n_planned_shards))

    def with_shard(self, record: ShardRecord) -> Manifest:
        """A copy with ``record`` added (replacing an older record of the same shard id)."""
        rest = [s for s in self.shards if s.shard_id != record.shard_id]
        return replace(self, shards=tuple(sorted([*rest, record], key=lambda s: s.shard_id)))

    def without_shards(self, shard_ids: set[int]) -> Manifest:
        """A copy without the given shard ids."""
        return replace(self, shards=tuple(s for s in self.shards if s.shard_id not in shard_ids))

    def with_positions_file(self, db_dir: str | os.PathLike[str]) -> Manifest:
        """A copy recording the size and sha256 of ``<db_dir>/positions.npz`` (which must exist)."""
        path = Path(db_dir) / POSITIONS_NAME
        record = {"path": POSITIONS_NAME, "sha256": file_sha256(path), "bytes": path.stat().st_size}
        return replace(self, positions=record)

    # -- JSON -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (configuration keys, then ``fingerprint``, ``positions``, ``shards``, ``info``)."""
        out = self.config_dict()
        out["fingerprint"] = self.fingerprint()
        if self.positions is not None:
            out["positions"] = dict(self.positions)
        out["shards"] = [s.to_dict() for s in self.shards]
        out["info"] = dict(self.info)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_NAME) -> Manifest:
        """Inverse of :meth:`to_dict`; raises :class:`ManifestCorruptError` naming ``where`` when invalid,
        when its ``fingerprint`` (if recorded) differs from the one recomputed from its configuration,
        or when two shard records share an id or a file."""
        if data.get("format") != FORMAT:
            raise ManifestCorruptError(f"{where}: not a crosslocate database manifest (format={data.get('format')!r})")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ManifestMismatchError(
                f"{where}: schema version {data.get('schema_version')!r}, this crosslocate reads {SCHEMA_VERSION}; "
                "rebuild the database with --overwrite"
            )
        unknown = sorted(set(data) - set(CONFIG_KEYS) - {"fingerprint", "positions", "shards", "info"})
        if unknown:  # e.g. a flipped bit in a key name: "shards" read as absent would hide every shard
            raise ManifestCorruptError(f"{where}: unknown manifest keys {unknown}; edited or damaged")
        try:
            kw = {key: data[key] for key in CONFIG_KEYS}
            shards = tuple(sorted((ShardRecord.from_dict(s) for s in data["shards"]), key=lambda s: s.shard_id))
            positions = data.get("positions")
            if positions is not None and not {"path", "sha256", "bytes"} <= set(positions):
                raise ValueError(f"positions record {positions!r} lacks path, sha256 or bytes")
            _check_shard_records(shards, int(data["layout"].get("n_shards", len(shards))))
            if positions is not None and positions["path"] != POSITIONS_NAME:
                raise ValueError(f"positions record names {positions['path']!r}, not {POSITIONS_NAME!r}")
            manifest = cls(**kw, shards=shards, info=dict(data.get("info", {})), positions=positions)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ManifestCorruptError(
                f"{where}: invalid manifest ({exc!r}); rebuild the database with --overwrite"
            ) from exc
        recorded = data.get("fingerprint")
        if recorded is not None and recorded != manifest.fingerprint():
            raise ManifestCorruptError(
                f"{where}: fingerprint does not match its content: edited or damaged; "
                "rebuild the database with --overwrite (or restore manifest.json from a copy)"
            )
        return manifest

    def save(self, db_dir: str | os.PathLike[str]) -> Path:
        """Write ``<db_dir>/manifest.json`` atomically; returns its path."""
        return write_json_atomic(Path(db_dir) / MANIFEST_NAME, self.to_dict())

    @classmethod
    def load(cls, db_dir: str | os.PathLike[str]) -> Manifest:
        """Read ``<db_dir>/manifest.json``.

        Raises
        ------
        NotBuiltError
            No manifest in ``db_dir``.
        ManifestCorruptError
            Unreadable or invalid JSON, or a fingerprint that does not match the content.
        ManifestMismatchError
            Another schema version.
        """
        path = Path(db_dir) / MANIFEST_NAME
        if not path.is_file():
            raise NotBuiltError(f"{path} does not exist; build the database first (`crosslocate build ...`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ManifestCorruptError(f"{path}: unreadable manifest ({exc}); rebuild with --overwrite") from exc
        if not isinstance(data, dict):
            raise ManifestCorruptError(f"{path}: manifest is not a JSON object; rebuild with --overwrite")
        return cls.from_dict(data, str(path))


def _check_shard_records(shards: tuple[ShardRecord, ...], n_planned: int) -> None:
    """ValueError unless every record has a planned id of its own and the file name of that id."""
    ids = [s.shard_id for s in shards]
    if len(set(ids)) != len(ids):
        raise ValueError("two shard records have the same shard_id")
    for s in shards:
        if not 0 <= s.shard_id < n_planned:
            raise ValueError(f"shard_id {s.shard_id} outside the planned 0..{n_planned - 1}")
        if s.path != shard_name(s.shard_id):
            raise ValueError(f"shard {s.shard_id} names the file {s.path!r}, not {shard_name(s.shard_id)!r}")


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(f"{name}: {old.get(key, '<absent>')!r:.60} -> {new.get(key, '<absent>')!r:.60}")
            else:
                out.extend(_diff(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix}: {old!r:.60} -> {new!r:.60}"]


__all__ = [
    "CONFIG_KEYS",
    "FORMAT",
    "MANIFEST_NAME",
    "POSITIONS_NAME",
    "Manifest",
    "ShardRecord",
    "shard_name",
]
