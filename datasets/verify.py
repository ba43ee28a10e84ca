"""Check a database folder against its manifest; returns a :class:`VerifyReport` (the CLI maps it to an exit code).

Per shard listed in the manifest: the file exists, its size and sha256 match, HDF5 opens it, the
view count and array shapes agree with the manifest, and (unless ``check_values=False``) every
decoded value is in range: depth finite and >= 0 or exactly ``SKY_DEPTH_M``, semantic ids in
:class:`~crosslocate.dem.landcover.LandCover`, silhouette in {0, 1}, and table rows with
``position_id`` inside the recorded range. Planned shards not yet recorded are reported as
missing. Shard files on disk that the manifest does not list (left by a killed build between the
rename and the manifest update) are reported as warnings: a rerun of the build redoes them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crosslocate.datasets.manifest import Manifest, ShardRecord, file_sha256, shard_name
from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
from crosslocate.datasets.shards import ShardReader
from crosslocate.dem.landcover import LandCover
from crosslocate.errors import CrosslocateError

logger = logging.getLogger(__name__)

#: Views decoded per read while checking values (bounds memory: 16 x 500 x 500 x 4 B = 16 MB).
_BATCH = 16


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``kind``: missing, checksum, unreadable, count, values, incomplete, manifest, unlisted."""

    kind: str
    path: str
    message: str
    shard_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"kind": self.kind, "path": self.path, "shard_id": self.shard_id, "message": self.message}


@dataclass(slots=True)
class VerifyReport:
    """Outcome of :func:`verify_database`.

    Attributes
    ----------
    db_dir : str
        The database folder.
    n_planned, n_listed, n_ok : int
        Planned shards, shards listed in the manifest, listed shards that passed every check.
    n_views : int
        Views in the shards that passed.
    problems : list of Problem
        Failures (any makes :attr:`ok` false).
    warnings : list of Problem
        Harmless findings (unlisted shard files).
    """

    db_dir: str
    n_planned: int = 0
    n_listed: int = 0
    n_ok: int = 0
    n_views: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when there is no problem (warnings allowed)."""
        return not self.problems

    def bad_shards(self) -> list[int]:
        """Shard ids with a problem (missing, corrupt or incomplete), sorted."""
        return sorted({p.shard_id for p in self.problems if p.shard_id is not None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "db_dir": self.db_dir,
            "ok": self.ok,
            "n_planned": self.n_planned,
            "n_listed": self.n_listed,
            "n_ok": self.n_ok,
            "n_views": self.n_views,
            "bad_shards": self.bad_shards(),
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [p.to_dict() for p in self.warnings],
        }


def _check_values(reader: ShardReader, record: ShardRecord, modalities: tuple[Modality, ...]) -> list[str]:
    """Range checks of every decoded view; returns messages (empty when all is well)."""
    msgs: list[str] = []
    valid_ids = np.array([int(c) for c in LandCover], dtype=np.int64)
    n = record.n_views
    for m in modalities:
        for start in range(0, n, _BATCH):
            idx = np.arange(start, min(n, start + _BATCH))
            a = reader.read_batch(m, idx)
            if m is Modality.DEPTH:
                bad = ~((np.isfinite(a) & (a >= 0)) | (a == SKY_DEPTH_M))
            elif m is Modality.SILHOUETTE:
                bad = a > 1
            else:
                bad = ~np.isin(a, valid_ids)
            if bad.any():
                v, r, c = (int(i) for i in np.argwhere(bad)[0])
                msgs.append(f"{m.value} view {start + v} pixel ({r}, {c}) has invalid value {a[v, r, c]!r}")
                break
    table = reader.table()
    lo, hi = record.position_ids
    if len(table) and (table["position_id"].min() < lo or table["position_id"].max() > hi):
        msgs.append(f"table position_id outside the recorded range [{lo}, {hi}]")
    if len(np.unique(table["view_id"])) != len(table):
        msgs.append("duplicate view_id in the table")
    return msgs


def verify_shard(
    db_dir: Path, record: ShardRecord, modalities: tuple[Modality, ...], size_px: int, check_values: bool = True
) -> list[Problem]:
    """Problems of one listed shard (empty list when it passes)."""
    path = db_dir / record.path
    where = str(path)

    def problem(kind: str, msg: str) -> list[Problem]:
        return [Problem(kind, where, msg, record.shard_id)]

    if not path.is_file():
        return problem("missing", "listed in the manifest but the file does not exist")
    size = path.stat().st_size
    if size != record.bytes:
        return problem("checksum", f"file has {size} bytes, manifest says {record.bytes} (truncated or replaced)")
    digest = file_sha256(path)
    if digest != record.sha256:
        return problem("checksum", f"sha256 {digest[:16]}... differs from the manifest's {record.sha256[:16]}...")
    reader = ShardReader(path)
    try:
        if reader.n_views != record.n_views or len(reader.table()) != record.n_views:
            return problem("count", f"{reader.n_views} views in the file, {record.n_views} in the manifest")
        stored = set(reader.modalities)
        if stored != set(modalities):
            return problem("count", f"modalities {sorted(stored)} differ from the manifest's {sorted(modalities)}")
        if reader.size_px != size_px:
            return problem("count", f"views are {reader.size_px} px, manifest says {size_px} px")
        if check_values:
            msgs = _check_values(reader, record, modalities)
            if msgs:
                return problem("values", "; ".join(msgs))
    except (CrosslocateError, OSError, KeyError, ValueError, IndexError) as exc:
        return problem("unreadable", f"{type(exc).__name__}: {exc}")
    finally:
        reader.close()
    return []


def verify_database(db_dir: str | os.PathLike[str], *, check_values: bool = True) -> VerifyReport:
    """Check every shard of the database in ``db_dir`` against its manifest (see the module docstring).

    A missing or unreadable manifest becomes a ``manifest`` problem (no exception), so callers
    always get a report.
    """
    db = Path(db_dir)
    report = VerifyReport(db_dir=str(db))
    try:
        manifest = Manifest.load(db)
    except CrosslocateError as exc:
        report.problems.append(Problem("manifest", str(db / "manifest.json"), str(exc)))
        return report
    modalities = tuple(Modality(m) for m in manifest.render.get("modalities", []))
    size_px = int(manifest.render.get("size_px", 0))
    report.n_planned = manifest.n_planned_shards
    report.n_listed = len(manifest.shards)
    for record in manifest.shards:
        found = verify_shard(db, record, modalities, size_px, check_values)
        if found:
            report.problems.extend(found)
            logger.warning("%s", found[0].path + ": " + found[0].message)
        else:
            report.n_ok += 1
            report.n_views += record.n_views
    listed = {s.shard_id for s in manifest.shards}
    for sid in sorted(set(range(report.n_planned)) - listed):
        report.problems.append(Problem("incomplete", str(db / shard_name(sid)), "planned shard not built yet", sid))
    listed_names = {s.path for s in manifest.shards}
    for path in sorted(db.glob("shard-*.h5")):
        if path.name not in listed_names:
            report.warnings.append(Problem("unlisted", str(path), "shard file not in the manifest (ignored)"))
    return report


__all__ = ["Problem", "VerifyReport", "verify_database", "verify_shard"]
