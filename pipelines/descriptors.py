"""Descriptor caches keyed by content: what was embedded, by which network, how it was encoded.

A cache entry is ``<folder>/<kind>-<key sha256[:16]>.npy`` ((N, D) float32 descriptors) plus
``<kind>-<...>.json`` (the full key). The key (:func:`descriptor_key`) holds:

* ``network``: the checkpoint file's sha256 (or a name for an untrained network and its config);
* ``encoding``: :data:`~crosslocate.datasets.transforms.INPUT_ENCODING`;
* ``source``: for database views, per database the sha256 of its manifest fingerprint and shard
  checksums, the modality, the network input side and the sha256 of the selected view indices;
  for query photos, the input side, FOV scaling, database FOV and the sha256 of every image's
  bytes with its FOV.

An entry is used only when its JSON key equals the requested key and the row count matches, so a
different checkpoint, database, modality, view subset, input setting or encoding can never reuse
it. ``localize`` keeps database descriptors in ``<db_dir>/descriptors/`` (found by every later
call with any output folder); ``benchmark`` keeps them under ``<run>/descriptors/``. The entry
files (:func:`cache_files`, :func:`read_cache_entry`, :func:`write_cache_entry`) also hold the horizon
baselines' rankings (:func:`crosslocate.pipelines.refine.horizon_rankings`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.fileio import file_sha256, save_npy_atomic, write_json_atomic

logger = logging.getLogger(__name__)

#: Folder name of descriptor caches (inside a database or a run folder).
DESCRIPTORS_DIR = "descriptors"


def sha256_json(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces): the digest of every cache key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def database_digest(manifest: Any) -> str:
    """sha256 over a database's configuration fingerprint and every shard's checksum."""
    shards = [[s.shard_id, s.sha256] for s in manifest.shards]
    return sha256_json({"fingerprint": manifest.fingerprint(), "shards": shards})


def source_identity(source: Any) -> dict[str, Any]:
    """JSON-able identity of what ``source`` feeds the network (a ViewPool, ViewDataset or QueryDataset)."""
    from crosslocate.datasets.views import QueryDataset, ViewDataset

    if isinstance(source, QueryDataset):
        photos = [[file_sha256(q.image), float(q.pose.fov_deg)] for q in source.queries]
        return {
            "queries": sha256_json(photos),
            "size_px": source.size_px,
            "fov_scaling": source.fov_scaling,
            "db_fov_deg": source.db_fov_deg,
        }
    datasets = [source] if isinstance(source, ViewDataset) else list(source.datasets)
    views = []
    for ds in datasets:
        if ds.transform is not None:
            raise ValueError("descriptor caches need the default view encoding (transform=None)")
        views.append({**views_identity(ds), "modality": ds.modality.value, "size_px": ds.size_px})
    return {"views": views}


def views_identity(ds: Any) -> dict[str, str]:
    """Which views of which database a ViewDataset selects, whatever it reads of them: the database's
    :func:`database_digest` and the sha256 of the selected indices (int64)."""
    return {
        "database": database_digest(ds.manifest),
        "indices": hashlib.sha256(np.ascontiguousarray(ds.indices, np.int64).tobytes()).hexdigest(),
    }


def descriptor_key(network: str, source: Any) -> dict[str, Any]:
    """The cache key of ``source`` embedded by ``network`` (see the module docstring)."""
    from crosslocate.datasets.transforms import INPUT_ENCODING

    return {"network": network, "encoding": INPUT_ENCODING, "source": source_identity(source)}


def cache_files(folder: Path, kind: str, key: dict[str, Any]) -> tuple[Path, Path]:
    """(``.npy``, ``.json``) paths of a cache entry."""
    stem = f"{kind}-{sha256_json(key)[:16]}"
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def read_cache_entry(npy: Path, meta: Path, what: str) -> tuple[npt.NDArray[Any], Any] | None:
    """(array, JSON) of the cache entry ``npy`` + ``meta``, or None when either is missing or unreadable
    (a warning naming the ``what`` cache). The caller checks that the entry is the one it asked for."""
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        stored = json.loads(meta.read_text(encoding="utf-8"))
        arr = np.load(npy, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable %s cache %s (%s)", what, npy, exc)
        return None
    return arr, stored


def write_cache_entry(npy: Path, meta: Path, arr: npt.NDArray[Any], stored: Any, what: str) -> None:
    """Write a cache entry atomically, the array before its JSON (what a reader checks last); a cache
    that cannot be written only warns, since the entry is then computed again next time."""
    try:
        save_npy_atomic(npy, arr)
        write_json_atomic(meta, stored)
    except OSError as exc:
        logger.warning(
            "cannot write the %s cache in %s (%s); it will be computed again next time", what, npy.parent, exc
        )


def cached_descriptors(
    net: Any,
    source: Any,
    device: Any,
    folder: str | os.PathLike[str],
    kind: str,
    network: str,
    *,
    batch_size: int,
    num_workers: int = 0,
) -> npt.NDArray[np.float32]:
    """(N, D) float32 descriptors of ``source`` from the cache in ``folder``, or computed and cached.

    Parameters
    ----------
    net : nn.Module
        The network (already on ``device``).
    source : ViewPool, ViewDataset or QueryDataset
        What to embed.
    folder : path
        Cache folder; when it cannot be written the descriptors are still returned (a warning).
    kind : str
        File name prefix (``db``, ``queries``).
    network : str
        Identity of ``net``: the checkpoint's sha256, or a name for an untrained network.
    """
    from crosslocate.model.train import extract_descriptors

    key = descriptor_key(network, source)
    npy, meta = cache_files(Path(folder), kind, key)
    if (got := read_cache_entry(npy, meta, "descriptor")) is not None:
        arr, stored_key = got
        if stored_key == key and arr.ndim == 2 and len(arr) == len(source):
            logger.info("descriptors from cache %s", npy)
            return np.ascontiguousarray(arr, dtype=np.float32)
        logger.warning("ignoring descriptor cache %s: made for other inputs", npy)
    arr = extract_descriptors(net, source, device, batch_size=batch_size, num_workers=num_workers, desc=kind)
    write_cache_entry(npy, meta, arr, key, "descriptor")
    return arr


__all__ = [
    "DESCRIPTORS_DIR",
    "cache_files",
    "cached_descriptors",
    "database_digest",
    "descriptor_key",
    "read_cache_entry",
    "sha256_json",
    "source_identity",
    "views_identity",
    "write_cache_entry",
]
