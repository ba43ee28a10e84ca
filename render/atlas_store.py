"""The terrain atlas's on-disk cache: atomic save, memory-mapped load, build-once under a file lock.

Folders ``$CROSSLOCATE_CACHE/atlas/atlas-<key>/`` hold ``z.npy``, ``cls.npy``, ``bmax.npy`` (the
packed levels of :class:`crosslocate.render.atlas.PackedLevels`) and ``atlas.json`` (version, key,
spec, DEM checksum, level tables). Re-exported by :mod:`crosslocate.render.atlas`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from crosslocate.errors import RenderError
from crosslocate.fileio import fsync_dir, fsync_file, is_write_failure, require_free_space, write_error
from crosslocate.render.atlas import ATLAS_VERSION, AtlasSpec, PackedLevels, TerrainAtlas, build_atlas

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM

logger = logging.getLogger("crosslocate.render.atlas")


def atlas_root() -> Path:
    """``$CROSSLOCATE_CACHE/atlas`` (or ``~/.cache/crosslocate/atlas``)."""
    from crosslocate.dem.sources.synthetic import cache_dir

    return cache_dir() / "atlas"


def save_atlas(atlas: TerrainAtlas, folder: Path) -> Path:
    """Write ``atlas`` to ``folder`` atomically (temporary folder, then rename); returns ``folder``.

    An existing complete ``folder`` (another process won the race) is kept and ours discarded.
    A whole folder, so not through :mod:`crosslocate.fileio`'s file writers: its files are written
    plainly inside the private temporary folder, fsynced, and the folder renamed (then its parent
    fsynced, so the rename survives a power loss). Too little free space for ``atlas.nbytes`` is
    refused before writing; any failure removes the temporary folder, and a full disk or another
    refused write becomes one clear error naming ``folder``
    (:class:`~crosslocate.errors.DiskFullError`, :class:`~crosslocate.errors.OutputWriteError`).
    """
    folder = Path(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        require_free_space(folder.parent, atlas.nbytes, "the terrain atlas")
        tmp.mkdir()
        _write_atlas_files(atlas, tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "atlas.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
            return folder
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_failure(exc):
            raise write_error(folder, exc) from exc  # type: ignore[arg-type]
        raise
    fsync_dir(folder.parent)
    return folder


def _write_atlas_files(atlas: TerrainAtlas, tmp: Path) -> None:
    """The arrays and ``atlas.json`` of ``atlas`` into the folder ``tmp``, each file fsynced."""
    p = atlas.packed
    for name, arr in (("z", p.zf), ("cls", p.cf), ("bmax", p.bz)):
        np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr))
    meta = {
        "version": ATLAS_VERSION,
        "key": atlas.spec.key(atlas.dem_checksum),
        "spec": asdict(atlas.spec),
        "dem_checksum": atlas.dem_checksum,
        "lv_int": p.lv_int.tolist(),
        "lv_flt": p.lv_flt.tolist(),
        "build_time_s": atlas.build_time_s,
        "nbytes": atlas.nbytes,
    }
    (tmp / "atlas.json").write_text(json.dumps(meta, indent=1))
    for f in tmp.iterdir():
        fsync_file(f)


def load_atlas(folder: str | Path, refraction_k: float, *, mmap: bool = True) -> TerrainAtlas:
    """Open a saved atlas (arrays memory-mapped read-only unless ``mmap=False``).

    Raises
    ------
    RenderError
        Missing, incomplete or other-version atlas folder.
    """
    folder = Path(folder)
    try:
        meta = json.loads((folder / "atlas.json").read_text())
    except (OSError, ValueError) as exc:
        raise RenderError(f"{folder}: not a terrain atlas ({exc}); delete it to rebuild") from exc
    if meta.get("version") != ATLAS_VERSION:
        raise RenderError(f"{folder}: terrain atlas version {meta.get('version')}, expected {ATLAS_VERSION}")
    mode = "r" if mmap else None
    arrays = {n: np.asarray(np.load(folder / f"{n}.npy", mmap_mode=mode)) for n in ("z", "cls", "bmax")}
    packed = PackedLevels(
        arrays["z"], arrays["cls"], arrays["bmax"], np.array(meta["lv_int"], np.int64), np.array(meta["lv_flt"])
    )
    sp = meta["spec"]
    spec = AtlasSpec(
        float(sp["lon0"]), float(sp["lat0"]), tuple(sp["camera_box"]), float(sp["spacing_m"]),
        float(sp["range_m"]), int(sp["lod_cells"]),
    )  # fmt: skip
    if spec.key(meta["dem_checksum"]) != meta["key"]:
        raise RenderError(f"{folder}: terrain atlas metadata does not match its key; delete it to rebuild")
    return TerrainAtlas(
        spec, packed, float(refraction_k), meta["dem_checksum"], float(meta["build_time_s"]), str(folder)
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_atlas(
    dem: DEM, spec: AtlasSpec, refraction_k: float, root: str | Path | None = None, progress: Any = None
) -> TerrainAtlas:
    """Load the cached atlas of ``(dem, spec)`` or build and cache it (once per machine: file lock)."""
    base = Path(root) if root is not None else atlas_root()
    folder = base / f"atlas-{spec.key(dem.checksum)}"
    if (folder / "atlas.json").is_file():
        return load_atlas(folder, refraction_k)
    with _locked(base / f".atlas-{spec.key(dem.checksum)}.lock"):
        if not (folder / "atlas.json").is_file():
            logger.info("building the terrain atlas %s (once per DEM and settings)", folder.name)
            save_atlas(build_atlas(dem, spec, refraction_k, progress), folder)
    return load_atlas(folder, refraction_k)


__all__ = ["atlas_root", "ensure_atlas", "load_atlas", "save_atlas"]
