"""The unit of work of a database build: render one shard (runs inside a dask worker or in-process).

:func:`render_shard` takes one picklable :class:`ShardJob` (configs, the DEM *source* and the
shard's own position arrays) and opens the DEM and the render backend inside the worker, so no
file handle or GL context is ever pickled. Views are rendered position by position (12 yaws at a
time) and appended to a :class:`~crosslocate.datasets.shards.ShardWriter`, so a worker holds at
most one position's arrays. A shard depends only on the job (configs, DEM, positions): a rerun
writes a byte-identical file (render timings go to the build log, never into the shard).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.manifest import ShardRecord, shard_name
from crosslocate.datasets.schema import VIEW_DTYPE
from crosslocate.dem.poses import Pose
from crosslocate.render.config import RenderConfig

logger = logging.getLogger(__name__)

#: Position arrays a job carries (names of :class:`crosslocate.dem.grid.Positions` fields).
POSITION_FIELDS: tuple[str, ...] = ("position_id", "lon", "lat", "alt_m", "x", "y", "split")


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardJob:
    """Everything one shard needs (picklable: configs, a DEM source, small arrays).

    Attributes
    ----------
    db_dir : str
        Database folder; the shard goes to ``db_dir/shard-<id>.h5``.
    shard_id : int
        Shard number.
    dem_src : str, list of str, or DEM
        What :func:`crosslocate.dem.sources.open_dem` opens inside the worker (``"demo"``, a path,
        a list of paths); an open DEM object is used as is (tests, in-process builds).
    render : RenderConfig
        View size, range, backend, modalities.
    shard : ShardConfig
        Codecs and compression.
    yaws_deg : tuple of float
        Yaws rendered at every position, degrees clockwise from north.
    fov_deg : float
        Horizontal FOV, degrees.
    positions : dict str -> (P,) array
        ``position_id`` int64, ``lon``/``lat`` float64 degrees (EPSG:4326), ``alt_m`` float64
        camera altitude (metres, DEM datum), ``x``/``y`` float64 metres (manifest CRS), ``split``
        uint8 (``SPLIT_CODES``), in storage order.
    attrs : dict
        Extra shard file attributes (e.g. the database fingerprint).
    """

    db_dir: str
    shard_id: int
    dem_src: Any
    render: RenderConfig
    shard: ShardConfig
    yaws_deg: tuple[float, ...]
    fov_deg: float
    positions: dict[str, npt.NDArray[Any]]
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_positions(self) -> int:
        """Positions in this shard."""
        return len(self.positions["position_id"])

    @property
    def n_views(self) -> int:
        """Views in this shard."""
        return self.n_positions * len(self.yaws_deg)

    @property
    def path(self) -> Path:
        """Destination shard file."""
        return Path(self.db_dir) / shard_name(self.shard_id)


#: DEMs opened by this process, by source (one entry): a worker renders many shards of one DEM, and
#: opening it costs seconds (tile index, derived land cover), so the handle outlives the task.
_DEM_CACHE: dict[str, Any] = {}


def _dem_key(dem_src: Any) -> str | None:
    if isinstance(dem_src, str | os.PathLike):
        return os.fspath(dem_src)
    if isinstance(dem_src, list | tuple) and all(isinstance(s, str | os.PathLike) for s in dem_src):
        return "\n".join(os.fspath(s) for s in dem_src)
    return None


@contextlib.contextmanager
def opened_dem(dem_src: Any) -> Iterator[Any]:
    """Yield a DEM for ``dem_src``; a DEM-like object (has ``sample``) is yielded as is and left open.

    Path sources are opened once per process and kept (:data:`_DEM_CACHE`, the latest source only).
    """
    if hasattr(dem_src, "sample") and hasattr(dem_src, "checksum"):
        yield dem_src
        return
    from crosslocate.dem.sources import open_dem

    key = _dem_key(dem_src)
    if key is None:
        with open_dem(dem_src) as dem:
            yield dem
        return
    dem = _DEM_CACHE.get(key)
    if dem is None:
        for old in _DEM_CACHE.values():
            old.close()
        _DEM_CACHE.clear()
        dem = _DEM_CACHE[key] = open_dem(dem_src)
    yield dem


def position_poses(lon: float, lat: float, alt_m: float, yaws_deg: Sequence[float], fov_deg: float) -> list[Pose]:
    """The level database cameras of one position, one per yaw (pitch = roll = 0)."""
    return [Pose(lon=lon, lat=lat, alt_m=alt_m, yaw_deg=float(y), fov_deg=fov_deg) for y in yaws_deg]


def view_rows(job: ShardJob, p: int) -> npt.NDArray[np.void]:
    """(len(yaws),) VIEW_DTYPE rows of position ``p`` of the job.

    ``view_id = position_id * len(yaws) + yaw index``: unique and deterministic in the database.
    """
    pos = job.positions
    n = len(job.yaws_deg)
    rows = np.zeros(n, VIEW_DTYPE)
    pid = int(pos["position_id"][p])
    rows["view_id"] = pid * n + np.arange(n)
    rows["position_id"] = pid
    for name in ("lon", "lat", "alt_m", "x", "y"):
        rows[name] = pos[name][p]
    rows["yaw_deg"] = np.asarray(job.yaws_deg, np.float32)
    rows["fov_deg"] = job.fov_deg
    rows["split"] = pos["split"][p]
    return rows


def render_shard(job: ShardJob) -> ShardRecord:
    """Render, encode and atomically write one shard; returns its :class:`ShardRecord`.

    Raises whatever the renderer raises (e.g. :class:`~crosslocate.errors.OutsideCoverageError`
    naming the position); the shard file is then not created.
    """
    from crosslocate.datasets.shards import ShardWriter
    from crosslocate.render.views import ViewRenderer

    t0 = time.perf_counter()
    pos = job.positions
    with opened_dem(job.dem_src) as dem, ViewRenderer(dem, job.render) as renderer:
        writer = ShardWriter(
            job.path, job.render.modalities, job.render.size_px, job.shard, {"shard_id": job.shard_id, **job.attrs}
        )
        with writer:
            for p in range(job.n_positions):
                poses = position_poses(
                    float(pos["lon"][p]), float(pos["lat"][p]), float(pos["alt_m"][p]), job.yaws_deg, job.fov_deg
                )
                batch = renderer.render(poses)
                writer.add(batch.arrays, view_rows(job, p))
            sha, size, n_views = writer.commit()
    ids = pos["position_id"]
    logger.debug("shard %d: %d views in %.1f s", job.shard_id, n_views, time.perf_counter() - t0)
    return ShardRecord(
        shard_id=job.shard_id,
        path=job.path.name,
        n_views=n_views,
        n_positions=job.n_positions,
        position_ids=(int(ids.min()), int(ids.max())) if len(ids) else (0, -1),
        sha256=sha,
        bytes=size,
    )


def calibrate(
    dem_src: Any,
    render: RenderConfig,
    shard: ShardConfig,
    positions: dict[str, npt.NDArray[Any]],
    yaws_deg: Sequence[float],
    fov_deg: float,
) -> dict[str, Any]:
    """Render the given positions once (the first is a warm-up when there are two or more).

    Returns
    -------
    dict
        ``views_per_s`` (render only, one worker), ``bytes_per_view`` (all modalities, stored
        with ``shard``), ``bytes_per_view_by_modality``, ``views`` timed.
    """
    from crosslocate.datasets import codecs
    from crosslocate.datasets.shards import stored_bytes
    from crosslocate.render.views import ViewRenderer

    n = len(positions["lon"])
    timed = range(1, n) if n > 1 else range(n)
    by_mod: dict[str, float] = {}
    views, seconds = 0, 0.0
    with opened_dem(dem_src) as dem, ViewRenderer(dem, render) as renderer:
        for p in range(n):
            poses = position_poses(
                float(positions["lon"][p]), float(positions["lat"][p]), float(positions["alt_m"][p]), yaws_deg, fov_deg
            )
            t0 = time.perf_counter()
            batch = renderer.render(poses)
            dt = time.perf_counter() - t0
            if p not in timed:
                continue
            views += len(poses)
            seconds += dt
            for m, arr in batch.arrays.items():
                by_mod[m.value] = by_mod.get(m.value, 0.0) + stored_bytes(
                    codecs.codec_spec(m, shard), arr, shard.depth_max_m
                )
    per_mod = {k: v / max(views, 1) for k, v in by_mod.items()}
    return {
        "views": views,
        "views_per_s": views / seconds if seconds > 0 else float("inf"),
        "bytes_per_view": float(sum(per_mod.values())),
        "bytes_per_view_by_modality": per_mod,
    }


__all__ = ["POSITION_FIELDS", "ShardJob", "calibrate", "opened_dem", "position_poses", "render_shard", "view_rows"]
