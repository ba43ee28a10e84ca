"""Database build throughput, end to end, over a real shard layout (``make bench-build``).

What it runs is a real build of a few shards of a region's uniform grid: the grid is planned into
shards exactly as ``crosslocate build uniform --clip-to-dem`` does, ``--shards`` of them are taken,
spread evenly over the region, and rendered, encoded, compressed, written atomically and hashed by
:func:`~crosslocate.pipelines.tasks.render_shard_timed` on the same runner a build uses (a dask
``LocalCluster`` of one single-threaded worker per core, by default). Every cost a build pays is in
``end_to_end_views_per_s`` (shard-phase wall time), except two one-offs reported on their own:

* ``atlas_build_s``: the region's terrain atlas, built from scratch (into a scratch cache unless
  ``--reuse-atlas``), once per DEM and settings;
* ``cluster_start_s``: starting the dask workers.

``shares`` says where the workers' time went (terrain setup per position, render, encode + compress +
write, other); ``projected_full_build_s`` = atlas + cluster start + all views of the region at the
measured rate. Peak RSS per worker is the largest ``ru_maxrss`` any task saw.

It also measures the stored bytes per view of every modality under several codec settings
(:func:`crosslocate.datasets.shards.stored_bytes`) on a few rendered views.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM
    from crosslocate.pipelines.presets import Preset

logger = logging.getLogger(__name__)

#: Codec variants measured: label -> ShardConfig overrides.
CODEC_VARIANTS: dict[str, dict[str, Any]] = {
    "logq16-eps5e-4-row-zstd": {},
    "logq16-eps5e-4-none-zstd": {"depth_delta": "none"},
    "logq16-eps5e-4-col-zstd": {"depth_delta": "col"},
    "logq16-eps1e-3-row-zstd": {"depth_rel_error": 1e-3},
    "logq16-eps5e-4-row-lz4": {"compressor": "lz4"},
    "float32-zstd": {"depth_codec": "float32"},
    "bitshuffle-masks-labels-zstd": {"label_shuffle": "bit", "mask_shuffle": "bit"},
    "byteshuffle-masks-labels-zstd": {"label_shuffle": "byte", "mask_shuffle": "byte"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crosslocate bench build``."""
    from crosslocate.pipelines.commands import add_dem_argument

    parser.add_argument("--out", default="bench/build.json", help="JSON output (default bench/build.json)")
    parser.add_argument("--preset", default="paper", help="paper, cpu or tiny (default paper)")
    parser.add_argument("--region", default="switzerland", help="region whose uniform grid is sharded")
    add_dem_argument(parser)
    parser.add_argument("--shards", type=int, default=6, help="shards rendered, spread over the region (default 6)")
    parser.add_argument("--scheduler", default="local", help="local (default), sync or tcp://host:port")
    parser.add_argument("--workers", type=int, default=None, help="local workers (default: one per core)")
    parser.add_argument("--reuse-atlas", action="store_true", help="use the cached atlas instead of timing a build")
    parser.add_argument("--size-px", type=int, default=None, help="override the preset's view size")


def _codec_bytes(
    dem: DEM, preset: Preset, pos: dict[str, np.ndarray], atlases: list[Any]
) -> dict[str, dict[str, float]]:
    """Stored bytes per view of each modality under each :data:`CODEC_VARIANTS` entry (a few positions)."""
    from crosslocate.datasets import codecs
    from crosslocate.datasets.shards import stored_bytes
    from crosslocate.pipelines.tasks import position_poses
    from crosslocate.render.views import ViewRenderer

    totals: dict[str, dict[str, float]] = {}
    views = 0
    with ViewRenderer(dem, preset.render, atlases=atlases) as renderer:
        for p in range(len(pos["lon"])):
            poses = position_poses(
                float(pos["lon"][p]), float(pos["lat"][p]), float(pos["alt_m"][p]),
                preset.grid.yaws_deg, preset.grid.fov_deg,
            )  # fmt: skip
            arrays = renderer.render(poses).arrays
            views += len(poses)
            for label, overrides in CODEC_VARIANTS.items():
                cfg = dataclasses.replace(preset.shard, **overrides)
                acc = totals.setdefault(label, {})
                for m, arr in arrays.items():
                    acc[m.value] = acc.get(m.value, 0.0) + stored_bytes(codecs.codec_spec(m, cfg), arr, cfg.depth_max_m)
    return {
        label: {m: b / views for m, b in per.items()} | {"total": sum(per.values()) / views}
        for label, per in totals.items()
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark, write the JSON; returns ``{"path", "summary"}``."""
    from crosslocate.dem.grid import uniform_grid
    from crosslocate.dem.regions import get_region
    from crosslocate.dem.sources import DemSource
    from crosslocate.dem.sources.synthetic import cache_dir
    from crosslocate.pipelines.build import plan_terrain, shard_jobs, worker_threads
    from crosslocate.pipelines.cluster import open_runner
    from crosslocate.pipelines.plan import plan_shards
    from crosslocate.pipelines.presets import get_preset
    from crosslocate.pipelines.tasks import opened_atlases, opened_dem, run_timed
    from crosslocate.progress import Progress
    from crosslocate.render.atlas import build_atlas, save_atlas

    preset = get_preset(args.preset)
    if args.size_px:
        preset = preset.with_overrides(render={"size_px": int(args.size_px)})
    region = get_region(args.region)
    src = DemSource.resolve(args.dem, region.name)
    scratch = tempfile.TemporaryDirectory(prefix="crosslocate-bench-build-")
    old_cache = os.environ.get("CROSSLOCATE_CACHE")
    try:
        with opened_dem(src) as dem:
            grid = uniform_grid(region, dem, preset.grid)
            plan = plan_shards(
                grid.x, grid.y, grid.position_id,
                views_per_shard=preset.shard.views_per_shard, views_per_position=preset.grid.views_per_position,
            )  # fmt: skip
            specs = plan_terrain(preset, dem, grid)
            atlas_s = 0.0
            if specs and not args.reuse_atlas:
                # a fresh atlas in a scratch cache (land-cover blocks stay in the real cache: they belong to the DEM)
                atlas_dir = Path(scratch.name) / "atlas"
                t0 = time.perf_counter()
                for spec in specs:
                    atlas = build_atlas(dem, spec, preset.render.refraction_k)
                    save_atlas(atlas, atlas_dir / f"atlas-{spec.key(dem.checksum)}")
                atlas_s = time.perf_counter() - t0
                real_cache = cache_dir()
                os.environ["CROSSLOCATE_CACHE"] = scratch.name
                _link_landcover(real_cache, Path(scratch.name))
            atlases = opened_atlases(dem, specs, preset.render.refraction_k)
            atlas_bytes = sum(a.nbytes for a in atlases)
            pick = np.unique(
                np.linspace(0, plan.n_shards - 1, max(1, min(args.shards, plan.n_shards))).round().astype(int)
            )
            sample_pos = {
                k: np.ascontiguousarray(getattr(grid, k)[plan.shard_positions(int(pick[0]))[:2]])
                for k in ("lon", "lat", "alt_m")
            }
            codec = _codec_bytes(dem, preset, sample_pos, atlases)
        db_dir = Path(scratch.name) / "db"
        db_dir.mkdir()
        t0 = time.perf_counter()
        with open_runner(args.scheduler, args.workers) as runner:
            cluster_s = time.perf_counter() - t0
            threads = worker_threads(args.scheduler, args.workers if args.scheduler == "local" else None)
            jobs = list(shard_jobs(plan, grid, [int(s) for s in pick], db_dir, src, preset, "bench", specs, threads))
            views = sum(j.n_views for j in jobs)
            with Progress(views, "bench build", "view") as bar:
                results, wall, _ = run_timed(runner, jobs, warmup_id=10**6, progress=bar)
            description = runner.description
    finally:
        if old_cache is None:
            os.environ.pop("CROSSLOCATE_CACHE", None)
        else:
            os.environ["CROSSLOCATE_CACHE"] = old_cache
        scratch.cleanup()
    work = {k: sum(t[k] for _, t in results) for k in ("terrain", "render", "write", "total")}
    shares = {k: work[k] / work["total"] for k in ("terrain", "render", "write")}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    rate = views / wall
    written = sum(r.bytes for r, _ in results)
    summary = {
        "region": region.name,
        "preset": preset.name,
        "size_px": preset.render.size_px,
        "modalities": [m.value for m in preset.render.modalities],
        "range_m": preset.render.range_m,
        "shards": len(results),
        "views": views,
        "runner": description,
        "end_to_end_views_per_s": round(rate, 2),
        "shares": {k: round(v, 4) for k, v in shares.items()},
        "atlas_build_s": round(atlas_s, 2) if not args.reuse_atlas else None,
        "atlas_bytes": int(atlas_bytes),
        "cluster_start_s": round(cluster_s, 2),
        "region_views": plan.n_views,
        "projected_full_build_s": round(atlas_s + cluster_s + plan.n_views / rate, 1),
        "peak_rss_per_worker_bytes": int(max(t["peak_rss_bytes"] for _, t in results)),
        "shard_file_bytes_per_view": round(written / views, 1),
        "default_codec_bytes_per_view": {k: round(v, 1) for k, v in codec["logq16-eps5e-4-row-zstd"].items()},
    }
    result = {
        "benchmark": "build",
        "summary": summary,
        "bytes_per_view_by_codec": codec,
        "per_shard_timings_s": [t for _, t in results],
        "shard_ids": [int(s) for s in pick],
        "dem": [str(s) for s in (src if isinstance(src, list) else [src])],
        "config": preset.to_dict(),
        "notes": (
            "end_to_end = shard-phase wall time of a real build of these shards on the runner (render, "
            "encode, Blosc compression, HDF5 write, fsync/rename, sha256); the atlas build and the cluster "
            "start are one-offs, reported apart and included in projected_full_build_s"
        ),
    }
    path = _write(Path(args.out), result)
    return {"path": str(path), "summary": summary}


def _link_landcover(real_cache: Path, scratch: Path) -> None:
    """Let the scratch cache see the real cache's derived land-cover blocks (DEM-level, not atlas)."""
    src = real_cache / "landcover"
    try:
        if src.is_dir() and not (scratch / "landcover").exists():
            (scratch / "landcover").symlink_to(src, target_is_directory=True)
    except OSError as exc:  # a cold land-cover cache only makes the first shards slower
        logger.debug("no land-cover cache link: %s", exc)


def _write(path: Path, result: dict[str, Any]) -> Path:
    """Write with the machine info of :mod:`crosslocate.pipelines.benchinfo` (atomic JSON)."""
    from crosslocate.pipelines import benchinfo

    return benchinfo.write_json(path, {**result, "environment": benchinfo.environment_info()})


__all__ = ["CODEC_VARIANTS", "add_arguments", "run"]
