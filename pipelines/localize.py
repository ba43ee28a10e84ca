"""``crosslocate localize``: top-K candidate positions of one photo in a rendered database.

The photo is FOV-scaled to the database's angular scale (pinhole rule,
:func:`crosslocate.datasets.transforms.fov_scale`), embedded with the trained network and searched
against the database's descriptors, computed once and cached beside the database in
``<db_dir>/descriptors/`` keyed by content (checkpoint, database checksums, modality, input size,
encoding: :mod:`crosslocate.pipelines.descriptors`), so every later photo, whatever its output
folder, reuses them; a read-only database falls back to ``<out>/descriptors/``. Output: ``localize.json`` with the
candidates (rank, lat/lon EPSG:4326, yaw degrees, descriptor distance = L2 between unit
descriptors) and where the wall time went (``timings_s``: loading the network, opening the database,
its descriptors, the photo's, the search, the map), and ``localize_map.png`` (candidates in the
region's metric frame). ``crosslocate bench localize`` times a second photo end to end.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from crosslocate.errors import ConfigError, FileOverwriteError
from crosslocate.fileio import file_sha256, write_json_atomic

logger = logging.getLogger(__name__)


def localize(
    photo: str | os.PathLike[str],
    db_dir: str | os.PathLike[str],
    checkpoint_path: str | os.PathLike[str],
    fov_deg: float,
    *,
    k: int = 10,
    modality: str | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Retrieve the top-``k`` database views of ``photo``; returns candidates and output paths.

    Before the network is loaded or anything is computed, the photo is opened (header only) and must
    be a readable image of at least ``MIN_IMAGE_SIDE_PX`` a side, ``fov_deg`` must lie within
    ``QUERY_FOV_RANGE_DEG`` (the checks of a query CSV), the checkpoint must exist and ``out_dir``
    must not be a file (:class:`~crosslocate.errors.ConfigError`,
    :class:`~crosslocate.errors.FileOverwriteError`).
    """
    from crosslocate.datasets.queries import Query, fov_problem, photo_problem
    from crosslocate.datasets.schema import parse_modality
    from crosslocate.datasets.views import QueryDataset, ViewDataset
    from crosslocate.dem.geodesy import aeqd_crs_wkt
    from crosslocate.dem.poses import Pose
    from crosslocate.model import checkpoint, search
    from crosslocate.model.device import resolve_device
    from crosslocate.model.plots import plot_retrieval_map
    from crosslocate.model.train import ViewPool, extract_descriptors
    from crosslocate.pipelines.descriptors import DESCRIPTORS_DIR, cached_descriptors

    if k < 1:
        raise ConfigError(f"-k must be >= 1, got {k}")
    photo, ckpt = Path(photo), Path(checkpoint_path)
    why = photo_problem(photo)
    if why is not None:
        raise ConfigError(f"photo: {why}")
    why = fov_problem(float(fov_deg))
    if why is not None:
        raise ConfigError(f"--fov: {why}")
    if not ckpt.exists():
        raise ConfigError(f"--checkpoint {ckpt} does not exist")
    if not Path(db_dir).is_dir():
        raise ConfigError(f"--db {db_dir}: no such database folder")
    out = Path(out_dir) if out_dir else photo.parent / f"{photo.stem}_localize"
    if out.exists() and not out.is_dir():
        raise FileOverwriteError(f"--out {out} is an existing file, not a folder; choose another --out")
    clock = _Clock()
    dev = resolve_device(device)
    net, meta = checkpoint.load_network(ckpt, map_location=dev)
    net = net.to(dev)
    clock.lap("load_network")
    mod = parse_modality(modality or (meta or {}).get("modality", "depth"), "--modality").value
    cfg = getattr(net, "config", None)
    views = ViewDataset(db_dir, mod, size_px=getattr(cfg, "input_size_px", None))
    if len(views) == 0:
        raise ConfigError(f"{db_dir}: the database has no views")
    size_px = int(getattr(cfg, "input_size_px", 0) or views.read_raw(0).shape[0])
    fov_scaling = bool(getattr(cfg, "fov_scaling", True))
    db_fov = float(views.table["fov_deg"][0])
    lon0, lat0 = float(np.mean(views.table["lon"])), float(np.mean(views.table["lat"]))
    crs = aeqd_crs_wkt(lon0, lat0)
    pool = ViewPool.of([views], crs_wkt=crs)
    clock.lap("open_database")
    cache_dir = Path(db_dir) / DESCRIPTORS_DIR
    if not os.access(Path(db_dir), os.W_OK):
        cache_dir = out / DESCRIPTORS_DIR
    db_desc = cached_descriptors(net, pool, dev, cache_dir, "db", file_sha256(ckpt), batch_size=32)
    clock.lap("database_descriptors")
    query = Query(str(photo), Pose(lon=lon0, lat=lat0, alt_m=0.0, fov_deg=float(fov_deg)))
    q_desc = extract_descriptors(net, QueryDataset([query], size_px, fov_scaling=fov_scaling, db_fov_deg=db_fov), dev)
    clock.lap("photo_descriptor")
    kk = min(k, len(pool))
    idx = search.ranking(db_desc, q_desc, kk)[0]
    dist = np.linalg.norm(db_desc[idx] - q_desc[0][None], axis=1)
    clock.lap("search")
    candidates = [
        {
            "rank": r + 1,
            "view_index": int(i),
            "lat": float(views.table["lat"][i]),
            "lon": float(views.table["lon"][i]),
            "yaw_deg": float(views.table["yaw_deg"][i]),
            "descriptor_distance": float(d),
        }
        for r, (i, d) in enumerate(zip(idx, dist, strict=True))
    ]
    out.mkdir(parents=True, exist_ok=True)
    map_png = plot_retrieval_map(
        None,
        pool.xy[idx][None],
        out / "localize_map.png",
        database_xy=pool.xy,
        title=f"{photo.name}: top-{kk} candidates (1 = best), metres from the DB centre",
    )
    result = {
        "photo": str(photo),
        "fov_deg": float(fov_deg),
        "database": str(db_dir),
        "checkpoint": str(ckpt),
        "modality": mod,
        "device": str(dev),
        "candidates": candidates,
        "map": str(map_png),
    }
    clock.lap("map")
    result["timings_s"] = clock.laps
    js = out / "localize.json"
    write_json_atomic(js, result)
    result["json"] = str(js)
    return result


class _Clock:
    """Wall seconds of consecutive phases (``lap(name)`` closes the phase that began at the previous lap)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = round(now - self._t, 4)
        self._t = now


__all__ = ["localize"]
