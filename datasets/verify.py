"""Check a database folder against its manifest; returns a :class:`VerifyReport` (the CLI maps it to an exit code).

Per shard listed in the manifest: the file exists, its size and sha256 match, HDF5 opens it, the
view and position counts, the array shapes and the table's ``position_id`` range agree with the
manifest, view ids are unique, and (unless ``check_values=False``) every decoded value is physically
possible (:func:`~crosslocate.datasets.schema.invalid_values`). ``positions.npz`` must exist and match
the size and sha256 the manifest records (older manifests without the record: it must load and
hold ``layout.n_positions`` rows). Planned shards not listed yet are counted as *not yet built*,
which is not corruption: an interrupted build resumes them. Shard files on disk that the manifest
does not list (left by a killed build between the rename and the manifest update) are warnings.

Large databases: shards are checked by ``workers`` processes at once, with progress logged; the
value check decodes every view (about 3 TB of arrays for Switzerland at the paper's settings), so
``values_sample`` limits it to that many shards spread over the database while every shard still gets
its sha256, structure and count checks (the report says how many shards had their values checked).

Outcomes and the exit codes of ``crosslocate verify``: :data:`EXIT_OK` (complete and sound),
:data:`EXIT_CORRUPT` (anything listed is missing, damaged or implausible, or the manifest is
unreadable or its fingerprint does not match its content), :data:`EXIT_INCOMPLETE` (everything
built so far is sound, some shards are not built yet). Code 2 stays the CLI's "bad input" code: a
path that is not a database folder at all raises :class:`~crosslocate.errors.ConfigError`.
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.manifest import MANIFEST_NAME, POSITIONS_NAME, Manifest, ShardRecord
from crosslocate.datasets.schema import Modality, first_invalid, parse_modality
from crosslocate.datasets.shards import ShardReader, shard_file_problem
from crosslocate.errors import ConfigError, CrosslocateError
from crosslocate.fileio import file_sha256
from crosslocate.progress import Progress

logger = logging.getLogger(__name__)

#: Views decoded per read while checking values (bounds memory: 16 x 500 x 500 x 4 B = 16 MB).
_BATCH = 16
#: Exit codes of ``crosslocate verify``.
EXIT_OK, EXIT_CORRUPT, EXIT_INCOMPLETE = 0, 1, 3


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding. ``kind``: missing, checksum, unreadable, count, values, positions, manifest, unlisted."""

    kind: str
    path: str
    message: str
    shard_id: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {"kind": self.kind, "path": self.path, "shard_id": self.shard_id, "message": self.message}

    def line(self) -> str:
        """One human-readable line."""
        return f"{self.kind}: {self.path}: {self.message}"


def id_ranges(ids: list[int]) -> str:
    """Sorted ids as ranges: ``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    parts: list[str] = []
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ", ".join(parts)


@dataclass(slots=True)
class VerifyReport:
    """Outcome of :func:`verify_database`.

    Attributes
    ----------
    db_dir : str
        The database folder.
    n_planned, n_listed, n_ok : int
        Planned shards, shards listed in the manifest (built), listed shards that passed every check.
    n_views : int
        Views in the shards that passed.
    n_values_checked : int
        Shards whose every decoded value was range-checked (all listed shards unless sampled).
    not_built : list of int
        Planned shard ids not listed yet (an unfinished build, not corruption).
    problems : list of Problem
        Corruption: damaged or missing listed shards, bad ``positions.npz``, unreadable manifest.
    warnings : list of Problem
        Harmless findings (unlisted shard files).
    """

    db_dir: str
    n_planned: int = 0
    n_listed: int = 0
    n_ok: int = 0
    n_views: int = 0
    n_values_checked: int = 0
    not_built: list[int] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the database is complete and nothing is corrupt (warnings allowed)."""
        return not self.problems and not self.not_built

    @property
    def corrupt(self) -> bool:
        """True when anything built is damaged (or the manifest is unreadable)."""
        return bool(self.problems)

    @property
    def exit_code(self) -> int:
        """:data:`EXIT_OK`, :data:`EXIT_CORRUPT` or :data:`EXIT_INCOMPLETE` (corruption wins)."""
        return EXIT_CORRUPT if self.corrupt else EXIT_INCOMPLETE if self.not_built else EXIT_OK

    def bad_shards(self) -> list[int]:
        """Ids of listed shards that failed a check (missing file, checksum, unreadable, values), sorted."""
        return sorted({p.shard_id for p in self.problems if p.shard_id is not None})

    def bad_files(self) -> list[str]:
        """Names of the corrupt files other than shards (``manifest.json``, ``positions.npz``), sorted."""
        return sorted({Path(p.path).name for p in self.problems if p.shard_id is None})

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict."""
        return {
            "db_dir": self.db_dir,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "n_planned": self.n_planned,
            "n_complete": self.n_ok,
            "n_corrupt": len(self.bad_shards()),
            "n_not_built": len(self.not_built),
            "n_views": self.n_views,
            "n_values_checked": self.n_values_checked,
            "not_built": id_ranges(self.not_built),
            "bad_shards": self.bad_shards(),
            "bad_files": self.bad_files(),
            "problems": [p.to_dict() for p in self.problems],
            "warnings": [p.to_dict() for p in self.warnings],
        }


def _check_values(reader: ShardReader, record: ShardRecord, modalities: tuple[Modality, ...]) -> list[str]:
    """Range checks of every decoded view; returns messages (empty when all is well)."""
    msgs: list[str] = []
    n = record.n_views
    for m in modalities:
        for start in range(0, n, _BATCH):
            idx = np.arange(start, min(n, start + _BATCH))
            bad = first_invalid(m, reader.read_batch(m, idx, check=False), idx)
            if bad is not None:
                msgs.append(bad)
                break
    return msgs


def _check_table(table: npt.NDArray[np.void], record: ShardRecord) -> list[str]:
    """The per-view table against its manifest record (positions, id range, unique views); messages."""
    msgs: list[str] = []
    lo, hi = record.position_ids
    # the record is the table's smallest and largest id (SCHEMA.md), so a widened range is an error too
    span = (int(table["position_id"].min()), int(table["position_id"].max())) if len(table) else (0, -1)
    if span != (lo, hi):
        msgs.append(f"table position_ids span [{span[0]}, {span[1]}], the manifest records [{lo}, {hi}]")
    n_positions = len(np.unique(table["position_id"]))
    if n_positions != record.n_positions:
        msgs.append(f"{n_positions} positions in the table, {record.n_positions} in the manifest")
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

    why = shard_file_problem(path, record)
    if why is not None:
        return problem("checksum" if path.is_file() else "missing", why)
    reader = ShardReader(path)
    try:
        if reader.n_views != record.n_views or len(reader.table()) != record.n_views:
            return problem("count", f"{reader.n_views} views in the file, {record.n_views} in the manifest")
        stored = set(reader.modalities)
        if stored != set(modalities):
            return problem("count", f"modalities {sorted(stored)} differ from the manifest's {sorted(modalities)}")
        if reader.size_px != size_px:
            return problem("count", f"views are {reader.size_px} px, manifest says {size_px} px")
        msgs = _check_table(reader.table(), record)
        if msgs:
            return problem("count", "; ".join(msgs))
        if check_values:
            msgs = _check_values(reader, record, modalities)
            if msgs:
                return problem("values", "; ".join(msgs))
    except (CrosslocateError, OSError, KeyError, ValueError, IndexError) as exc:
        return problem("unreadable", f"{type(exc).__name__}: {exc}")
    finally:
        reader.close()
    return []


def _map_shards(jobs: list[tuple[Any, ...]], workers: int) -> Iterator[list[Problem]]:
    """:func:`verify_shard` of every job, in order; ``workers`` > 1 spreads them over processes."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_verify_one, jobs)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
        yield from pool.map(_verify_one, jobs, chunksize=max(1, min(64, len(jobs) // (8 * workers))))


def verify_positions(db_dir: Path, manifest: Manifest) -> list[Problem]:
    """Problems of ``positions.npz`` (missing, checksum, unreadable, wrong row count); empty when sound."""
    path = db_dir / POSITIONS_NAME
    rec = manifest.positions
    built_by_crosslocate = rec is not None or "positions_sha256" in manifest.layout
    if not path.is_file():
        if built_by_crosslocate:
            return [Problem("positions", str(path), "missing; rerun `crosslocate build` to rewrite it")]
        return []
    if rec is not None:
        size = path.stat().st_size
        if size != int(rec["bytes"]) or file_sha256(path) != rec["sha256"]:
            return [
                Problem(
                    "positions",
                    str(path),
                    f"size or sha256 differs from the manifest's ({size} vs {rec['bytes']} bytes); "
                    "rerun `crosslocate build` to rewrite it",
                )
            ]
    try:  # reading every member checks the zip CRCs (the only check for older manifests)
        with np.load(path, allow_pickle=False) as data:
            n = len(data["position_id"])
            for name in data.files:
                data[name]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        return [Problem("positions", str(path), f"unreadable ({type(exc).__name__}: {exc}); rerun `crosslocate build`")]
    expected = manifest.layout.get("n_positions")
    if expected is not None and n != int(expected):
        return [Problem("positions", str(path), f"{n} positions, the manifest plans {expected}")]
    return []


def values_checked(n_shards: int, check_values: bool, values_sample: int | None) -> npt.NDArray[np.bool_]:
    """(n_shards,) bool: which listed shards get the value check (every one, none, or ``values_sample``
    spread evenly from the first to the last)."""
    if not check_values or n_shards == 0:
        return np.zeros(n_shards, bool)
    if values_sample is None or values_sample >= n_shards:
        return np.ones(n_shards, bool)
    if values_sample < 0:
        raise CrosslocateError(f"values_sample must be >= 0, got {values_sample}")
    out = np.zeros(n_shards, bool)
    out[np.unique(np.linspace(0, n_shards - 1, values_sample).round().astype(np.int64))] = True
    return out


def _verify_one(args: tuple[Path, ShardRecord, tuple[Modality, ...], int, bool]) -> list[Problem]:
    return verify_shard(*args)


def verify_database(
    db_dir: str | os.PathLike[str],
    *,
    check_values: bool = True,
    values_sample: int | None = None,
    workers: int = 1,
) -> VerifyReport:
    """Check every shard of the database in ``db_dir`` against its manifest (see the module docstring).

    Parameters
    ----------
    check_values : bool
        Decode and range-check views (else sha256, structure and counts only).
    values_sample : int or None
        With ``check_values``: range-check only this many shards, spread over the database (None: all).
    workers : int
        Processes checking shards at once (1: in this process).

    A missing, unreadable or damaged manifest (its fingerprint not matching its content) becomes a
    ``manifest`` problem (no exception), so callers always get a report about a database folder.

    Raises
    ------
    ConfigError
        ``db_dir`` is not a database folder at all: it does not exist, is not a folder, or holds
        neither ``manifest.json`` nor any shard file (a mistyped path, not a damaged database).
    """
    db = Path(db_dir)
    if not db.is_dir():
        why = "is a file, not a folder" if db.exists() else "no such database folder"
        raise ConfigError(f"{db}: {why}; pass the folder holding manifest.json and the shard-*.h5 files")
    if not (db / MANIFEST_NAME).exists() and not any(db.glob("shard-*.h5")):
        raise ConfigError(
            f"{db}: not a database folder (no {MANIFEST_NAME}, no shard-*.h5); pass the folder holding them, "
            "e.g. work/demo/db/uniform"
        )
    report = VerifyReport(db_dir=str(db))
    try:
        manifest = Manifest.load(db)
    except CrosslocateError as exc:
        report.problems.append(Problem("manifest", str(db / MANIFEST_NAME), str(exc)))
        return report
    try:
        modalities = tuple(
            parse_modality(m, "manifest render.modalities") for m in manifest.render.get("modalities", [])
        )
    except CrosslocateError as exc:
        report.problems.append(Problem("manifest", str(db / MANIFEST_NAME), str(exc)))
        return report
    size_px = int(manifest.render.get("size_px", 0))
    report.n_planned = manifest.n_planned_shards
    report.n_listed = len(manifest.shards)
    report.problems.extend(verify_positions(db, manifest))
    values = values_checked(len(manifest.shards), check_values, values_sample)
    report.n_values_checked = int(values.sum())
    jobs = [(db, r, modalities, size_px, bool(v)) for r, v in zip(manifest.shards, values, strict=True)]
    with Progress(len(jobs), f"verify {db.name}", "shard") as bar:
        for record, found in zip(manifest.shards, _map_shards(jobs, workers), strict=True):
            bar.update()
            if found:
                report.problems.extend(found)
                logger.debug("%s", found[0].line())
            else:
                report.n_ok += 1
                report.n_views += record.n_views
    listed = {s.shard_id for s in manifest.shards}
    report.not_built = sorted(set(range(report.n_planned)) - listed)
    listed_names = {s.path for s in manifest.shards}
    for path in sorted(db.glob("shard-*.h5")):
        if path.name not in listed_names:
            report.warnings.append(Problem("unlisted", str(path), "shard file not in the manifest (ignored)"))
    return report


__all__ = [
    "EXIT_CORRUPT",
    "EXIT_INCOMPLETE",
    "EXIT_OK",
    "Problem",
    "VerifyReport",
    "id_ranges",
    "values_checked",
    "verify_database",
    "verify_positions",
    "verify_shard",
]
