"""The unit of work of a database build: render one shard (runs inside a dask worker or in-process).

:func:`render_shard` takes one picklable :class:`ShardJob` (configs, the DEM *source*, the terrain
atlas specs and the shard's own position arrays) and opens the DEM, the atlas (memory-mapped from
the machine's cache, built there first if a worker on another machine has none) and the render
backend inside the worker, so no file handle or GL context is ever pickled. Views are rendered
position by position (12 yaws at a time) and appended to a
:class:`~crosslocate.datasets.shards.ShardWriter`, so a worker holds at most one position's arrays.
A shard depends only on the job (configs, DEM, positions, atlas specs): a rerun writes a
byte-identical file (render timings go to the build log, never into the shard).
"""

from __future__ import annotations

import contextlib
import logging
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
from crosslocate.dem.mosaic import DEM
from crosslocate.dem.poses import Pose
from crosslocate.dem.sources import DemSource, DemSpec
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
    dem_src : DemSource or DEM
        What the worker opens (once per process, :func:`opened_dem`); an open DEM object is used
        as is (in-process builds).
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
    atlas_specs : tuple of AtlasSpec
        The region's terrain atlases (:mod:`crosslocate.render.atlas`); empty: a pyramid per position.
    threads : int
        Render threads of the worker (a local cluster runs one single-threaded worker per core);
        0: the backend's default (all cores).
    expected_bytes : int
        Estimated shard file size, bytes: the free space is checked against it before rendering when
        no shard of the database is known yet (:class:`~crosslocate.datasets.shards.ShardWriter`).
    """

    db_dir: str
    shard_id: int
    dem_src: DemSource | DEM
    render: RenderConfig
    shard: ShardConfig
    yaws_deg: tuple[float, ...]
    fov_deg: float
    positions: dict[str, npt.NDArray[Any]]
    attrs: dict[str, Any] = field(default_factory=dict)
    atlas_specs: tuple[Any, ...] = ()
    threads: int = 0
    expected_bytes: int = 0

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
_DEM_CACHE: dict[DemSource, DEM] = {}


@contextlib.contextmanager
def opened_dem(src: DemSource | DemSpec | DEM | None, region_name: str | None = None) -> Iterator[DEM]:
    """Yield the DEM of ``src``: a :class:`DemSource` (or anything :meth:`DemSource.resolve` takes,
    with ``region_name`` for its demo default), or an open DEM, yielded as is and left open.

    Sources are opened once per process and kept (:data:`_DEM_CACHE`, the latest source only): a
    worker renders many shards of one DEM, and opening one costs seconds (tile index, land cover).
    The one DEM opener of the pipelines layer.
    """
    if isinstance(src, DEM):
        yield src
        return
    source = DemSource.resolve(src, region_name)
    dem = _DEM_CACHE.get(source)
    if dem is None:
        for old in _DEM_CACHE.values():
            old.close()
        _DEM_CACHE.clear()
        dem = _DEM_CACHE[source] = source.open()
    yield dem


#: Atlases opened by this process, by (DEM checksum, spec key): memory-mapped, shared by its tasks.
_ATLAS_CACHE: dict[tuple[str, str], Any] = {}


def opened_atlases(dem: DEM, specs: Sequence[Any], refraction_k: float) -> list[Any]:
    """The atlases of ``specs`` for ``dem`` (loaded from this machine's cache or built there once)."""
    from crosslocate.render.atlas import ensure_atlas

    out = []
    for spec in specs:
        key = (dem.checksum, spec.key(dem.checksum))
        atlas = _ATLAS_CACHE.get(key)
        if atlas is None or atlas.refraction_k != refraction_k:
            atlas = _ATLAS_CACHE[key] = ensure_atlas(dem, spec, refraction_k)
        out.append(atlas)
    return out


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
    return render_shard_timed(job)[0]


#: glibc ``mallopt`` settings of a rendering process (see :func:`tune_allocator`).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_ALLOCATOR_TUNED = False


def tune_allocator() -> None:
    """Keep view-sized buffers on the heap in this process (glibc; a no-op elsewhere). Idempotent.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also switches off glibc's
    dynamic mmap threshold: every array above 128 KiB (each rendered, encoded or compressed view) is
    then a fresh ``mmap`` whose pages fault in zero-filled, and a shard task costs twice the CPU and
    5x the wall time of the same task in a plain process (measured: 14.7 vs 6.6 ms CPU per 500 px
    view, encode + write 17 vs 3.6 ms). Explicit thresholds (64 MiB mmap, 128 MiB trim) restore the
    plain-process speed; a worker keeps at most that much freed memory.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return
    _ALLOCATOR_TUNED = True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
    except (OSError, AttributeError) as exc:  # not glibc
        logger.debug("allocator not tuned: %s", exc)


def render_shard_timed(job: ShardJob) -> tuple[ShardRecord, dict[str, float]]:
    """:func:`render_shard` plus where its wall time went (seconds).

    Keys: ``open`` (DEM, atlas, backend), ``terrain`` (per-position setup: atlas cameras and near
    patches, or per-position pyramids), ``render`` (the backend, silhouettes included), ``write``
    (encoding, compression, HDF5 writes, fsync, rename, sha256), ``total``.
    """
    from crosslocate.datasets.shards import ShardWriter
    from crosslocate.render.views import ViewRenderer

    tune_allocator()
    t0 = time.perf_counter()
    timings = {"open": 0.0, "terrain": 0.0, "render": 0.0, "write": 0.0}
    pos = job.positions
    with (
        opened_dem(job.dem_src) as dem,
        ViewRenderer(
            dem, job.render, atlases=opened_atlases(dem, job.atlas_specs, job.render.refraction_k)
        ) as renderer,
    ):
        if job.threads and renderer.backend is not None:
            renderer.backend.set_threads(job.threads)
        writer = ShardWriter(
            job.path,
            job.render.modalities,
            job.render.size_px,
            job.shard,
            {"shard_id": job.shard_id, **job.attrs},
            expected_bytes=job.expected_bytes,
        )
        timings["open"] = time.perf_counter() - t0
        with writer:
            for p in range(job.n_positions):
                poses = position_poses(
                    float(pos["lon"][p]), float(pos["lat"][p]), float(pos["alt_m"][p]), job.yaws_deg, job.fov_deg
                )
                t1 = time.perf_counter()
                batch = renderer.render(poses)
                t2 = time.perf_counter()
                writer.add(batch.arrays, view_rows(job, p))
                timings["write"] += time.perf_counter() - t2
                timings["terrain"] += renderer.last_setup_s
                timings["render"] += (t2 - t1) - renderer.last_setup_s
            t3 = time.perf_counter()
            sha, size, n_views = writer.commit()
            timings["write"] += time.perf_counter() - t3
        if job.threads and renderer.backend is not None:
            renderer.backend.set_threads(0)
    ids = pos["position_id"]
    timings["total"] = time.perf_counter() - t0
    logger.debug("shard %d: %d views in %.1f s", job.shard_id, n_views, timings["total"])
    record = ShardRecord(
        shard_id=job.shard_id,
        path=job.path.name,
        n_views=n_views,
        n_positions=job.n_positions,
        position_ids=(int(ids.min()), int(ids.max())) if len(ids) else (0, -1),
        sha256=sha,
        bytes=size,
    )
    return record, timings


def timed_shard_task(job: ShardJob) -> tuple[ShardRecord, dict[str, float]]:
    """A build task that also returns its timings (:func:`render_shard_timed`), the worker's peak RSS
    (``peak_rss_bytes``) and the stored bytes per modality (``bytes_<modality>``)."""
    import resource

    from crosslocate.datasets.shards import ShardReader

    record, timings = render_shard_timed(job)
    with ShardReader(job.path) as reader:
        stored = {f"bytes_{m}": float(b) for m, b in reader.storage_bytes().items()}
    rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return record, {**timings, **stored, "peak_rss_bytes": rss}


def run_timed(
    runner: Any, jobs: Sequence[ShardJob], *, warmup_id: int, progress: Any = None
) -> tuple[list[tuple[ShardRecord, dict[str, float]]], float, float]:
    """Warm every worker of ``runner`` on a one-position copy of ``jobs[0]`` (shard ids from
    ``warmup_id``; JIT compilation, DEM and atlas opening), then run ``jobs`` through
    :func:`timed_shard_task`, all submitted together.

    Returns ``([(record, timings)], wall seconds of the timed jobs, warm-up seconds)``; the first
    failing job's exception is raised. ``progress`` (a :class:`~crosslocate.progress.Progress`) is
    advanced by each finished job's views.
    """
    import dataclasses

    first = jobs[0]
    warm = [
        dataclasses.replace(first, shard_id=warmup_id + i, positions={k: v[:1] for k, v in first.positions.items()})
        for i in range(max(1, int(runner.n_workers)))
    ]
    t0 = time.perf_counter()
    for _, _, err in runner.map_unordered(render_shard, warm):
        if err is not None:
            raise err
    warmup = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = []
    for job, res, err in runner.map_unordered(timed_shard_task, jobs):
        if err is not None:
            raise err
        out.append(res)
        if progress is not None:
            progress.update(job.n_views)
    return out, time.perf_counter() - t1, warmup


def calibrate(runner: Any, job: ShardJob, samples: Sequence[npt.NDArray[np.intp]]) -> dict[str, Any]:
    """Measure a real build on ``runner``: one scratch shard per worker, all at once.

    ``job`` holds (at least) the sampled positions, with the build's atlas specs and worker threads;
    its ``db_dir`` must be a scratch folder the workers can write. Each worker first renders a
    one-position warm-up shard (JIT compilation, DEM and atlas opening; ``warmup_s``), then every
    ``samples[i]`` becomes one shard, all submitted together (several per worker queue up as in a build), so the measured rate includes
    everything a build task pays (render, encode, compress, HDF5, fsync, rename, sha256) and the
    workers' contention for the machine.

    Returns
    -------
    dict
        ``views`` timed, ``views_per_s`` (all workers together, wall clock), ``views_per_s_per_worker``,
        ``bytes_per_view`` (shard files), ``bytes_per_view_by_modality``, ``shares`` (of the workers'
        time: terrain, render, write, other), ``warmup_s``, ``threads``, ``workers``.
    """
    import dataclasses

    def sub(idx: npt.NDArray[np.intp], sid: int) -> ShardJob:
        return dataclasses.replace(
            job, shard_id=sid, positions={k: np.ascontiguousarray(v[idx]) for k, v in job.positions.items()}
        )

    jobs = [sub(np.asarray(s), 991_000 + i) for i, s in enumerate(samples)]
    workers = max(1, min(len(jobs), int(runner.n_workers)))  # the ones kept busy
    out, wall, warmup = run_timed(runner, jobs, warmup_id=990_000)
    for f in Path(job.db_dir).glob("shard-99*.h5"):
        f.unlink()
    views = sum(r.n_views for r, _ in out)
    work = {k: sum(t[k] for _, t in out) for k in ("terrain", "render", "write", "total")}
    shares = {k: work[k] / max(work["total"], 1e-9) for k in ("terrain", "render", "write")}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    mods = sorted({k[6:] for _, t in out for k in t if k.startswith("bytes_")})
    return {
        "views": views,
        "views_per_s": views / max(wall, 1e-9),
        "views_per_s_per_worker": views / max(wall, 1e-9) / workers,
        "bytes_per_view": sum(r.bytes for r, _ in out) / max(views, 1),
        "bytes_per_view_by_modality": {m: sum(t[f"bytes_{m}"] for _, t in out) / max(views, 1) for m in mods},
        "shares": shares,
        "warmup_s": round(warmup, 2),
        "threads": job.threads,
        "workers": workers,
    }


__all__ = [
    "POSITION_FIELDS",
    "ShardJob",
    "calibrate",
    "opened_atlases",
    "opened_dem",
    "position_poses",
    "render_shard",
    "render_shard_timed",
    "run_timed",
    "timed_shard_task",
    "view_rows",
]
