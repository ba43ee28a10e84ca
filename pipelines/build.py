"""Build a rendered database (sparse, compact, uniform or heldout) as a resumable dask graph of shard tasks.

``build_database`` plans the positions, writes ``manifest.json`` (configuration, no shards yet) and
``positions.npz``, then runs one :func:`~crosslocate.pipelines.tasks.render_shard` task per shard
that is not already complete, adding the finished shards (name, view count, sha256) to the manifest
atomically, in batches that keep its rewrites near 2 % of the build and at most 30 s apart
(:func:`run_shards`). A rerun after a crash or ``kill -9`` checks every listed shard (size and
sha256) and renders only the missing or corrupt ones (a shard finished after the last manifest
save is rendered again, to the same bytes); the manifest's configuration must match
(:class:`~crosslocate.errors.ManifestMismatchError` otherwise, unless ``overwrite``).

Kinds (CrossLocate, section 4):

* ``sparse``: one position per query (the query set's poses), 12 level views each;
* ``compact``: the uniform grid within ``grid.compact_radius_m`` (1 km) of any *training* query;
* ``uniform``: the whole region on a ``grid.spacing_m`` grid. The region must lie inside the DEM
  (:class:`~crosslocate.errors.OutsideCoverageError` names the uncovered part) unless
  ``clip_to_dem``;
* ``heldout``: the uniform grid's val and test positions, all of them (``eval.database_radius_m``
  None: the paper's test database is the whole test area) or those within that distance of a
  query of the same split (:func:`crosslocate.dem.grid.heldout_grid`). Validation and the
  benchmark search it; building only the held-out splits keeps the paper-preset Alps benchmark at
  the test area's 1.98 M views instead of the region's 12 M. Coverage as for ``uniform``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets import codecs
from crosslocate.datasets.manifest import MANIFEST_NAME, POSITIONS_NAME, Manifest, ShardRecord
from crosslocate.datasets.schema import DB_KINDS, SCHEMA_VERSION, SPLIT_CODES
from crosslocate.dem.mosaic import DEM
from crosslocate.dem.regions import Region
from crosslocate.dem.sources import DemSource, DemSpec
from crosslocate.errors import (
    ConfigError,
    DiskFullError,
    FileOverwriteError,
    ManifestMismatchError,
    NotBuiltError,
    OutputWriteError,
    OutsideCoverageError,
    ShardCorruptError,
)
from crosslocate.fileio import file_sha256, remove_stale_temps
from crosslocate.pipelines.context import RegionSpec, resolve_region
from crosslocate.pipelines.plan import ShardPlan, estimate, plan_shards, shard_bytes_estimate
from crosslocate.pipelines.presets import Preset, get_preset
from crosslocate.pipelines.tasks import POSITION_FIELDS, ShardJob, calibrate, opened_dem, render_shard

if TYPE_CHECKING:
    from crosslocate.datasets.queries import Query
    from crosslocate.dem.grid import Positions

logger = logging.getLogger(__name__)

#: Uncovered share of the region area tolerated before ``uniform`` refuses (projection slivers).
COVERAGE_TOLERANCE: float = 1e-4


def check_coverage(region: Region, dem: DEM) -> None:
    """Raise :class:`OutsideCoverageError` naming the part of ``region`` outside the DEM's lon/lat bounds."""
    from shapely.geometry import box

    uncovered = region.polygon.difference(box(*dem.bounds_lonlat))
    if uncovered.is_empty or uncovered.area <= COVERAGE_TOLERANCE * region.polygon.area:
        return
    w, s, e, n = uncovered.bounds
    share = 100.0 * uncovered.area / region.polygon.area
    raise OutsideCoverageError(
        f"region {region.name!r} is not covered by the DEM {list(dem.sources)[:3]}: {share:.1f}% of it "
        f"(lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f}) lies outside the DEM bounds {tuple(round(v, 4) for v in dem.bounds_lonlat)}; "
        "add the missing tiles with --dem, or pass --clip-to-dem to build only the covered part"
    )


def database_positions(kind: str, preset: Preset, region: Region, dem: DEM, queries: list[Query] | None) -> Positions:
    """The positions of a database kind (:class:`crosslocate.dem.grid.Positions`, region CRS)."""
    from crosslocate.dem.grid import compact_grid, heldout_grid, sparse_positions, uniform_grid

    if kind == "uniform":
        return uniform_grid(region, dem, preset.grid)
    if queries is None:
        raise ConfigError(f"a {kind} database needs the query set")
    sparse = sparse_positions([q.pose for q in queries], dem, preset.grid, region)
    if kind == "sparse":
        return sparse
    if kind == "heldout":
        radius = preset.eval.database_radius_m
        return heldout_grid(uniform_grid(region, dem, preset.grid), sparse.lon, sparse.lat, sparse.split, radius)
    train = sparse.split == SPLIT_CODES["train"]
    if not train.any():
        logger.warning("no training-split queries among %d: the compact database is empty", len(queries))
    return compact_grid(
        uniform_grid(region, dem, preset.grid), sparse.lon[train], sparse.lat[train], preset.grid.compact_radius_m
    )


def _log_clipped(region: Region, preset: Preset, n_covered: int) -> None:
    """Say how much of the region's grid the DEM covers (``--clip-to-dem`` builds only that part)."""
    from crosslocate.dem.grid import uniform_grid

    n_region = len(uniform_grid(region, None, preset.grid))
    logger.info(
        "--clip-to-dem: the DEM covers %d of the %d grid positions of %s (%.1f%%); the rest is left out",
        n_covered,
        n_region,
        region.name,
        100.0 * n_covered / max(n_region, 1),
    )


def positions_digest(positions: Positions) -> str:
    """sha256 over the planned positions (ids, lon/lat/alt, x/y, split, CRS)."""
    h = hashlib.sha256(positions.crs_wkt.encode("utf-8"))
    for name in POSITION_FIELDS:
        h.update(np.ascontiguousarray(getattr(positions, name)).tobytes())
    return h.hexdigest()


def make_manifest(
    kind: str, preset: Preset, region: Region, dem: DEM, positions: Positions, plan: ShardPlan
) -> Manifest:
    """The configuration part of a database's manifest (no shards yet)."""
    grid = preset.grid
    return Manifest(
        kind=kind,
        region={"name": region.name, "bounds_lonlat": list(region.bounds_lonlat), "area_km2": region.area_km2},
        dem={"sources": [str(s) for s in dem.sources], "checksum": dem.checksum, "synthetic": bool(dem.synthetic)},
        crs_wkt=positions.crs_wkt,
        grid=grid.to_dict(),
        render=preset.render.to_dict(),
        shard=preset.shard.to_dict(),
        codecs={m.value: codecs.codec_spec(m, preset.shard).to_attrs() for m in preset.render.modalities},
        split={
            "codes": dict(SPLIT_CODES),
            "method": grid.split_method,
            "buffer_m": grid.split_buffer_m,
            "block_m": grid.split_block_m,
            "fractions": list(grid.split_fractions),
            "seed": grid.split_seed,
            "test_region": grid.split_test_region,
        },
        layout={**plan.to_dict(), "positions_sha256": positions_digest(positions)},
        info={
            "preset": preset.name,
            "schema_version": SCHEMA_VERSION,
            **({"database_radius_m": preset.eval.database_radius_m} if kind == "heldout" else {}),
        },
    )


def shard_is_valid(db_dir: Path, record: ShardRecord) -> bool:
    """True when the recorded shard file exists with the recorded size and sha256."""
    path = db_dir / record.path
    return path.is_file() and path.stat().st_size == record.bytes and file_sha256(path) == record.sha256


def prepare_db_dir(db_dir: Path, requested: Manifest, overwrite: bool) -> Manifest:
    """Create or resume ``db_dir``: returns the manifest to continue from (valid shards only).

    An existing manifest with another configuration raises :class:`ManifestMismatchError`, unless
    ``overwrite`` (then the old shards, positions and manifest are deleted). A non-empty folder
    without a manifest is refused (:class:`FileOverwriteError`) unless ``overwrite``.
    """
    db_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(db_dir)
    existing: Manifest | None = None
    has_manifest = (db_dir / MANIFEST_NAME).is_file()
    if has_manifest:
        try:
            existing = Manifest.load(db_dir)
        except (ManifestMismatchError, ShardCorruptError):
            if not overwrite:
                raise
    if existing is not None:
        if existing.fingerprint() != requested.fingerprint():
            if not overwrite:
                existing.require_same_config(requested, db_dir)
            logger.warning("%s: configuration changed, --overwrite given: deleting the old database", db_dir)
            _clear(db_dir)
            existing = requested
    else:
        if not has_manifest and any(db_dir.iterdir()) and not overwrite:
            raise FileOverwriteError(
                f"{db_dir} is not empty and holds no {MANIFEST_NAME}; choose an empty --out folder or pass --overwrite"
            )
        _clear(db_dir)
        existing = requested
    bad = {s.shard_id for s in existing.shards if not shard_is_valid(db_dir, s)}
    if bad:
        logger.warning("%s: %d shard(s) missing or corrupt, will redo: %s", db_dir, len(bad), sorted(bad))
    manifest = Manifest(**{**_fields(requested), "shards": existing.without_shards(bad).shards})
    manifest.save(db_dir)
    return manifest


def _fields(m: Manifest) -> dict[str, Any]:
    return {name: getattr(m, name) for name in m.__dataclass_fields__}


def _clear(db_dir: Path) -> None:
    """Delete the database files of ``db_dir`` (manifest, positions, shards; nothing else)."""
    for p in [db_dir / MANIFEST_NAME, db_dir / POSITIONS_NAME, *db_dir.glob("shard-*.h5")]:
        if p.is_file():
            p.unlink()
    for p in db_dir.iterdir():
        if p.is_dir() and p.name.startswith("shard-"):
            shutil.rmtree(p)


def plan_terrain(preset: Preset, dem: DEM, positions: Positions) -> tuple[Any, ...]:
    """The terrain atlas specs of a build (:func:`crosslocate.render.atlas.plan_atlas`), or ``()`` when
    the preset renders a pyramid per position (``render.atlas`` off, or a backend without atlases)."""
    from crosslocate.render.atlas import plan_atlas
    from crosslocate.render.backends import uses_atlas

    if len(positions) == 0 or not uses_atlas(preset.render):
        return ()
    r = preset.render
    return tuple(plan_atlas(positions.lon, positions.lat, dem.resolution_m, r.range_m, r.lod_cells))


def prepare_terrain(dem: DEM, specs: tuple[Any, ...], preset: Preset) -> dict[str, Any]:
    """Build (or find in the cache) every atlas of ``specs``; returns what it cost (logged too)."""
    from crosslocate.render.atlas import atlas_root, ensure_atlas

    t0 = time.perf_counter()
    sizes = []
    for i, spec in enumerate(specs):
        folder = atlas_root() / f"atlas-{spec.key(dem.checksum)}"
        cached = (folder / "atlas.json").is_file()
        atlas = ensure_atlas(dem, spec, preset.render.refraction_k)
        sizes.append(atlas.nbytes)
        logger.info(
            "terrain atlas %d/%d (%s, %.0f MB): %s",
            i + 1,
            len(specs),
            folder.name,
            atlas.nbytes / 1e6,
            "cached" if cached else f"built in {atlas.build_time_s:.1f} s",
        )
    return {"atlases": len(specs), "atlas_bytes": int(sum(sizes)), "atlas_s": round(time.perf_counter() - t0, 2)}


def worker_threads(target: Any, n_workers: int | None) -> int:
    """Render threads per task: a local cluster runs one worker per core (1 thread each, no
    oversubscription); in-process builds use every core (0); remote workers keep their default (0)."""
    if target == "local":
        return max(1, _cores() // max(1, int(n_workers or _cores())))
    return 0


def shard_jobs(
    plan: ShardPlan,
    positions: Positions,
    shard_ids: list[int],
    db_dir: Path,
    dem_src: DemSource | DEM,
    preset: Preset,
    fp: str,
    atlas_specs: tuple[Any, ...] = (),
    threads: int = 0,
) -> Any:
    """Generator of :class:`ShardJob` for ``shard_ids`` (each carries only its own positions and its
    estimated size, :func:`~crosslocate.pipelines.plan.shard_bytes_estimate`)."""
    for sid in shard_ids:
        idx = plan.shard_positions(sid)
        yield ShardJob(
            db_dir=str(db_dir),
            shard_id=sid,
            dem_src=dem_src,
            render=preset.render,
            shard=preset.shard,
            yaws_deg=tuple(preset.grid.yaws_deg),
            fov_deg=float(preset.grid.fov_deg),
            positions={name: np.ascontiguousarray(getattr(positions, name)[idx]) for name in POSITION_FIELDS},
            attrs={"db_fingerprint": fp},
            atlas_specs=atlas_specs,
            threads=threads,
            expected_bytes=shard_bytes_estimate(plan.shard_views(sid), preset.render.size_px),
        )


def _progress(total: int, desc: str) -> Any:
    from crosslocate.progress import Progress

    return Progress(total, desc, "view")


#: The manifest is saved again once this many times its last save's cost has passed: rewriting it
#: after every shard costs O(shards) each time, 15 % of a core at 6,000 shards (Switzerland), far
#: more for the Alps; this keeps its share of the build near 2 %.
MANIFEST_SAVE_COST_FACTOR: float = 50.0
#: ... and at least this often (seconds): a killed build loses at most this much finished work (its
#: shard files are complete but unlisted; the rerun renders them again, to the same bytes).
MANIFEST_SAVE_MAX_S: float = 30.0


def run_shards(runner: Any, jobs: Any, manifest: Manifest, db_dir: Path, total_views: int, desc: str) -> Manifest:
    """Run the jobs, recording the finished shards in the manifest (saved atomically, in batches:
    :data:`MANIFEST_SAVE_COST_FACTOR`, :data:`MANIFEST_SAVE_MAX_S`; always at the end, also after a
    failure).

    Failed shards are logged and the first failure is re-raised after the others finished (the
    completed ones stay recorded, so a rerun redoes only the failed shards).
    """
    failures: list[tuple[int, BaseException]] = []
    t0 = time.perf_counter()
    done_views = 0
    unsaved, last_save, save_cost = 0, time.perf_counter(), 0.0
    try:
        with _progress(total_views, desc) as bar:
            for job, record, error in runner.map_unordered(render_shard, jobs):
                if error is not None:
                    if isinstance(error, DiskFullError | OutputWriteError):  # every later shard fails alike: stop
                        raise error
                    logger.error("shard %d failed: %s: %s", job.shard_id, type(error).__name__, error)
                    failures.append((job.shard_id, error))
                    continue
                manifest = manifest.with_shard(record)
                unsaved += 1
                now = time.perf_counter()
                if now - last_save >= min(MANIFEST_SAVE_MAX_S, MANIFEST_SAVE_COST_FACTOR * save_cost):
                    manifest.save(db_dir)
                    unsaved, last_save = 0, time.perf_counter()
                    save_cost = last_save - now
                done_views += record.n_views
                bar.update(record.n_views)
    finally:
        if unsaved:
            _save_finished(manifest, db_dir)
    elapsed = time.perf_counter() - t0
    if done_views:
        logger.info("%s: %d views in %.1f s (%.2f views/s)", desc, done_views, elapsed, done_views / max(elapsed, 1e-9))
    if failures:
        ids = sorted(sid for sid, _ in failures)
        logger.error("%d shard(s) failed: %s; rerun the same command to retry them", len(ids), ids)
        raise failures[0][1]
    return manifest


def _save_finished(manifest: Manifest, db_dir: Path) -> None:
    """Save the manifest with every finished shard when a build stops (a full disk or a refused write
    only logs, so the error that stopped the build is the one reported: the shards not recorded then
    are rendered again by the rerun)."""
    try:
        manifest.save(db_dir)
    except (DiskFullError, OutputWriteError) as exc:
        logger.warning("could not record the last finished shards in the manifest: %s", exc)


def _load_queries(
    kind: str, preset: Preset, region: Region, dem_src: DemSource | DEM, work: Path | None, dry_run: bool
) -> list[Query] | None:
    """The query set a sparse/compact/heldout database needs (built first via ``ensure_query_set`` if missing)."""
    if kind == "uniform":
        return None
    from crosslocate.pipelines.queries import CSV_NAME, ensure_query_set, query_dir

    if work is None:
        raise ConfigError(f"a {kind} database is placed by a query set: pass `queries` or the `work` folder holding it")
    if dry_run and not (query_dir(work, region) / CSV_NAME).is_file():
        raise NotBuiltError(
            f"the {kind} database is placed by the query set, which is not built yet "
            f"({query_dir(work, region) / CSV_NAME}); run `crosslocate queries` first, or build without --dry-run"
        )
    logger.info("%s database: making sure the query set exists under %s", kind, work)
    return ensure_query_set(region, dem_src, preset, work)


#: Shards per worker a dry run renders and writes to calibrate (spread over the whole plan), and
#: the most positions taken from each: whole shards of the plan, so the calibration has the build's
#: spatial locality (a shard's neighbouring positions share DEM blocks; scattered single positions
#: each paid a cold DEM read and made the Alps estimate 36% pessimistic).
CALIBRATION_SHARDS: int = 2
CALIBRATION_SHARD_POSITIONS: int = 20


def calibration_samples(plan: ShardPlan, n_shards: int, max_positions: int) -> list[npt.NDArray[np.int64]]:
    """Position indices of ``n_shards`` of the plan's shards, evenly spread over its storage order
    (which is spatial), each cut to its first ``max_positions`` positions; fewer when the plan has
    fewer shards."""
    ids = np.unique(np.linspace(0, plan.n_shards - 1, max(1, min(n_shards, plan.n_shards))).round().astype(int))
    order = np.asarray(plan.order, np.int64)
    return [order[plan.bounds[i] : min(plan.bounds[i + 1], plan.bounds[i] + max_positions)] for i in ids]


def dry_run_summary(
    kind: str,
    preset: Preset,
    region: Region,
    dem: DEM,
    dem_src: DemSource | DEM,
    positions: Positions,
    plan: ShardPlan,
    target: Any,
    n_workers: int | None,
    memory_limit: str | int,
    scratch_parent: Path,
) -> dict[str, Any]:
    """Counts plus bytes and time estimated from a calibration build on the build's own runner.

    The terrain atlases are prepared (a one-off, cached for the real build and reported apart as
    ``terrain``); then every worker of the runner the build would use (``target``: ``sync``,
    ``local`` or a scheduler) writes ``CALIBRATION_SHARDS`` scratch shards, copies of the plan's own
    shards spread over the region (at most ``CALIBRATION_SHARD_POSITIONS`` positions each), all at once (:func:`~crosslocate.pipelines.tasks.calibrate`), into a temporary
    folder beside the database that is removed afterwards. The measured rate of all workers
    together gives ``estimated_s`` (plus the runner's start, ``calibration.start_s``). Assumed: the
    rest of the region renders like the sampled positions; ``assumptions`` in the result says so.
    """
    import shutil
    import tempfile

    from crosslocate.pipelines.cluster import open_runner

    summary: dict[str, Any] = {"kind": kind, "region": region.name, "preset": preset.name}
    if plan.n_positions == 0:
        return {**summary, **estimate(plan, 0.0, 1.0, 1), "calibration": None}
    specs = plan_terrain(preset, dem, positions)
    terrain = prepare_terrain(dem, specs, preset) if specs else {"atlases": 0, "atlas_bytes": 0, "atlas_s": 0.0}
    scratch_parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".crosslocate-calibrate-", dir=scratch_parent))
    try:
        t0 = time.perf_counter()
        with open_runner(target, n_workers, memory_limit) as runner:
            start_s = time.perf_counter() - t0
            workers = runner.n_workers
            threads = worker_threads(target, n_workers)
            samples = calibration_samples(plan, CALIBRATION_SHARDS * workers, CALIBRATION_SHARD_POSITIONS)
            k = int(sum(len(x) for x in samples))
            job = next(iter(shard_jobs(plan, positions, [0], tmp, dem_src, preset, "dry-run", specs, threads)))
            job = dataclasses.replace(
                job, positions={name: np.ascontiguousarray(getattr(positions, name)) for name in POSITION_FIELDS}
            )
            cal = calibrate(runner, job, samples)
            cal["start_s"] = round(start_s, 2)
            cal["runner"] = runner.description
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    splits = {name: int(np.count_nonzero(positions.split == code)) for name, code in SPLIT_CODES.items()}
    est = estimate(plan, cal["bytes_per_view"], cal["views_per_s_per_worker"], cal["workers"])
    est["estimated_s"] = round(est["estimated_s"] + cal["start_s"], 1)
    return {
        **summary,
        **est,
        "splits": splits,
        "terrain": terrain,
        "calibration": cal,
        "assumptions": (
            f"{cal['runner']}, {threads or 'all'} render thread(s) per worker; the rate is that of "
            f"{cal['views']} views at {k} positions in {len(samples)} of the plan's shards spread over the "
            "region, rendered by all workers at once "
            "end to end (render, encoding, compression, writes); the terrain atlas is prepared once "
            "(terrain.atlas_s, then cached)"
        ),
    }


def build_database(
    kind: str,
    preset: Preset | str,
    region: RegionSpec,
    dem_src: DemSource | DemSpec | DEM | None,
    out_dir: str | Path,
    queries: list[Query] | None = None,
    client: Any = None,
    *,
    clip_to_dem: bool = False,
    dry_run: bool = False,
    overwrite: bool = False,
    scheduler: str = "local",
    n_workers: int | None = None,
    memory_limit: str | int = "auto",
    work: str | Path | None = None,
) -> Any:
    """Build (or resume, or reuse) a database; returns its folder, or the dry-run summary dict.

    Parameters
    ----------
    kind : {"sparse", "compact", "uniform", "heldout"}
        See the module docstring.
    preset : Preset or str
        Grid, render and shard settings (a name goes through :func:`get_preset`).
    region : str or Region
        ``demo``, ``alps``, ``switzerland`` or a polygon file.
    dem_src : DemSource, path(s), ``"demo"``, an open DEM, or None
        The DEM (:meth:`crosslocate.dem.sources.DemSource.resolve`; None: the embedded DEM of the
        demo region).
    out_dir : path
        Database folder (the CLI uses ``work/<region>/db/<kind>``).
    queries : list of Query, optional
        The query set (sparse/compact); default: ``ensure_query_set(region, dem_src, preset, work)``.
    client : distributed.Client, optional
        Run on this client; otherwise ``scheduler``/``n_workers``/``memory_limit`` choose
        (:func:`crosslocate.pipelines.cluster.open_runner`). With at most one shard to render the
        build runs in-process.
    clip_to_dem : bool
        ``uniform``/``heldout``: build only the DEM-covered part instead of raising ``OutsideCoverageError``.
    dry_run : bool
        Plan and calibrate only; nothing is written. Returns a dict (positions, views, shards,
        estimated bytes and seconds).
    overwrite : bool
        Replace a database built with another configuration.
    work : path, optional
        Work folder holding the query set (sparse/compact without ``queries``).

    Returns
    -------
    pathlib.Path or dict
        The database folder (complete and checksummed), or the dry-run summary.
    """
    if kind not in DB_KINDS:
        raise ConfigError(f"unknown database kind {kind!r}; choose one of {', '.join(DB_KINDS)}")
    if client is None and not dry_run:  # a bogus scheduler is refused before anything is written
        from crosslocate.pipelines.cluster import check_scheduler

        check_scheduler(scheduler)
    preset = get_preset(preset) if isinstance(preset, str) else preset
    reg = resolve_region(region)
    db_dir = Path(out_dir)
    src = dem_src if isinstance(dem_src, DEM) else DemSource.resolve(dem_src, reg.name)
    if queries is None and kind != "uniform":
        queries = _load_queries(kind, preset, reg, src, None if work is None else Path(work), dry_run)
    with opened_dem(src) as dem:
        if kind in ("uniform", "heldout") and not clip_to_dem:
            check_coverage(reg, dem)
        positions = database_positions(kind, preset, reg, dem, queries)
        if kind == "uniform" and clip_to_dem:
            _log_clipped(reg, preset, len(positions))
        plan = plan_shards(
            positions.x,
            positions.y,
            positions.position_id,
            views_per_shard=preset.shard.views_per_shard,
            views_per_position=preset.grid.views_per_position,
        )
        logger.info(
            "%s database: %d positions, %d views, %d shards", kind, plan.n_positions, plan.n_views, plan.n_shards
        )
        if dry_run:
            target = client if client is not None else scheduler
            return dry_run_summary(
                kind, preset, reg, dem, src, positions, plan, target, n_workers, memory_limit, db_dir.parent
            )
        manifest = prepare_db_dir(db_dir, make_manifest(kind, preset, reg, dem, positions, plan), overwrite)
        specs = plan_terrain(preset, dem, positions) if len(manifest.shards) < plan.n_shards else ()
        if specs:
            prepare_terrain(dem, specs, preset)
    positions.to_npz(db_dir / POSITIONS_NAME)  # same bytes on every run; its checksum goes to the manifest
    manifest = manifest.with_positions_file(db_dir)
    manifest.save(db_dir)
    done = {s.shard_id for s in manifest.shards}
    todo = [sid for sid in range(plan.n_shards) if sid not in done]
    if not todo:
        logger.info("%s database complete: %s (%d views)", kind, db_dir, manifest.n_views)
        return db_dir
    logger.info(
        "%s database: %d of %d shards to render (%d already complete)", kind, len(todo), plan.n_shards, len(done)
    )
    target = client if client is not None else ("sync" if len(todo) <= 1 else scheduler)
    threads = worker_threads(target, n_workers)
    jobs = shard_jobs(plan, positions, todo, db_dir, src, preset, manifest.fingerprint(), specs, threads)
    views = sum(plan.shard_views(s) for s in todo)
    from crosslocate.pipelines.cluster import open_runner

    with open_runner(target, n_workers, memory_limit) as runner:
        logger.info("running on %s", runner.description)
        manifest = run_shards(runner, jobs, manifest, db_dir, views, f"build {kind}")
    if not manifest.complete:
        raise NotBuiltError(f"{db_dir}: build finished but shards are missing; rerun the same command")
    _write_preview(db_dir)
    return db_dir


def _write_preview(db_dir: Path) -> None:
    """``preview.png`` of a finished database (a picture to look at; failures only log)."""
    from crosslocate.pipelines.preview import save_database_preview

    try:
        save_database_preview(db_dir)
    except Exception as exc:  # a preview must never fail a finished build
        logger.warning("could not write the preview of %s: %s: %s", db_dir, type(exc).__name__, exc)


def _cores() -> int:
    from crosslocate.pipelines.cluster import available_cores

    return available_cores()


__all__ = [
    "DB_KINDS",
    "build_database",
    "check_coverage",
    "database_positions",
    "dry_run_summary",
    "make_manifest",
    "prepare_db_dir",
    "run_shards",
    "shard_jobs",
]
