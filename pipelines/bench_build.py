"""Database build throughput: end-to-end views/s (render + encode + compress + write) vs render only.

Renders the same positions twice in one process: once through the renderer alone, once through
:func:`~crosslocate.pipelines.tasks.render_shard` (which also encodes, compresses, writes the HDF5
shard atomically and hashes it). The ratio of the two rates is the storage overhead. It also
measures the stored bytes per view of every modality under several codec settings
(:func:`crosslocate.datasets.shards.stored_bytes`) and the real shard file size per view. The first
position is rendered once beforehand as a warm-up (numba JIT, DEM block cache) and not timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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
    parser.add_argument("--out", default="bench/build.json", help="JSON output (default bench/build.json)")
    parser.add_argument("--preset", default="cpu", help="paper, cpu or tiny (default cpu)")
    parser.add_argument("--region", default="demo", help="region whose uniform grid supplies the positions")
    parser.add_argument("--dem", nargs="+", default=None, help="DEM (default: the embedded demo DEM)")
    parser.add_argument("--positions", type=int, default=4, help="timed positions (x12 views), default 4")
    parser.add_argument("--size-px", type=int, default=None, help="override the preset's view size")


def _positions(region: str, dem: Any, preset: Any, n: int) -> dict[str, np.ndarray]:
    """The first ``n + 1`` uniform-grid positions in shard (Morton) order, as ``ShardJob.positions`` arrays."""
    from crosslocate.dem.grid import uniform_grid
    from crosslocate.errors import ConfigError
    from crosslocate.pipelines.plan import spatial_order
    from crosslocate.pipelines.tasks import POSITION_FIELDS

    grid = uniform_grid(region, dem, preset.grid)
    if len(grid) < 2:
        raise ConfigError(f"region {region!r} has {len(grid)} grid positions; need at least 2 for the benchmark")
    order = spatial_order(grid.x, grid.y, grid.position_id, 100.0)[: n + 1]
    return {name: np.ascontiguousarray(getattr(grid, name)[order]) for name in POSITION_FIELDS}


def _codec_bytes(arrays: dict[Any, np.ndarray], base: Any) -> dict[str, dict[str, int]]:
    """Stored bytes of each modality under each :data:`CODEC_VARIANTS` entry (summed over views)."""
    from crosslocate.datasets import codecs
    from crosslocate.datasets.shards import stored_bytes

    out: dict[str, dict[str, int]] = {}
    for label, overrides in CODEC_VARIANTS.items():
        cfg = dataclasses.replace(base, **overrides)
        out[label] = {
            m.value: stored_bytes(codecs.codec_spec(m, cfg), arr, cfg.depth_max_m) for m, arr in arrays.items()
        }
    return out


def _render_only(dem: Any, preset: Any, pos: dict[str, np.ndarray]) -> tuple[float, int, dict[str, dict[str, int]]]:
    """Seconds and views of rendering positions 1.. (position 0 is the warm-up), plus codec byte counts."""
    from crosslocate.pipelines.tasks import position_poses
    from crosslocate.render.views import ViewRenderer

    yaws, fov = preset.grid.yaws_deg, preset.grid.fov_deg
    totals: dict[str, dict[str, int]] = {}
    seconds, views = 0.0, 0
    with ViewRenderer(dem, preset.render) as renderer:
        for p in range(len(pos["lon"])):
            poses = position_poses(float(pos["lon"][p]), float(pos["lat"][p]), float(pos["alt_m"][p]), yaws, fov)
            t0 = time.perf_counter()
            batch = renderer.render(poses)
            dt = time.perf_counter() - t0
            if p == 0:
                continue
            seconds += dt
            views += len(poses)
            for label, per_mod in _codec_bytes(batch.arrays, preset.shard).items():
                acc = totals.setdefault(label, {})
                for m, b in per_mod.items():
                    acc[m] = acc.get(m, 0) + b
    return seconds, views, totals


def _end_to_end(dem: Any, preset: Any, pos: dict[str, np.ndarray]) -> tuple[float, Any]:
    """Seconds of :func:`render_shard` over positions 1.. and the written shard's record."""
    from crosslocate.pipelines.tasks import ShardJob, render_shard

    timed = {k: v[1:] for k, v in pos.items()}
    with tempfile.TemporaryDirectory(prefix="crosslocate-bench-build-") as tmp:
        job = ShardJob(
            db_dir=tmp,
            shard_id=0,
            dem_src=dem,
            render=preset.render,
            shard=preset.shard,
            yaws_deg=tuple(preset.grid.yaws_deg),
            fov_deg=float(preset.grid.fov_deg),
            positions=timed,
        )
        t0 = time.perf_counter()
        record = render_shard(job)
        return time.perf_counter() - t0, record


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark, write the JSON; returns ``{"path", "summary"}``."""
    from crosslocate.dem.regions import get_region
    from crosslocate.pipelines.build import resolve_dem_src
    from crosslocate.pipelines.presets import get_preset
    from crosslocate.pipelines.tasks import opened_dem

    preset = get_preset(args.preset)
    if args.size_px:
        preset = preset.with_overrides(render={"size_px": int(args.size_px)})
    region = get_region(args.region)
    dem_arg = None if args.dem is None else (args.dem[0] if len(args.dem) == 1 else list(args.dem))
    src = resolve_dem_src(region.name, dem_arg)
    with opened_dem(src) as dem:
        pos = _positions(args.region, dem, preset, max(1, int(args.positions)))
        render_s, views, codec_bytes = _render_only(dem, preset, pos)
        e2e_s, record = _end_to_end(dem, preset, pos)
    per_view = {
        label: {m: b / views for m, b in per_mod.items()} | {"total": sum(per_mod.values()) / views}
        for label, per_mod in codec_bytes.items()
    }
    render_rate, e2e_rate = views / render_s, record.n_views / e2e_s
    summary = {
        "size_px": preset.render.size_px,
        "views": views,
        "render_only_views_per_s": round(render_rate, 3),
        "end_to_end_views_per_s": round(e2e_rate, 3),
        "overhead_ratio": round(render_rate / e2e_rate, 4),
        "shard_file_bytes_per_view": round(record.bytes / record.n_views, 1),
        "default_codec_bytes_per_view": {k: round(v, 1) for k, v in per_view["logq16-eps5e-4-row-zstd"].items()},
    }
    result = {
        "benchmark": "build",
        "summary": summary,
        "bytes_per_view_by_codec": per_view,
        "timings_s": {"render_only": render_s, "end_to_end": e2e_s},
        "positions": int(len(pos["lon"]) - 1),
        "region": region.name,
        "dem": [str(s) for s in dem.sources],
        "config": preset.to_dict(),
        "notes": "end-to-end = render + encode + Blosc compression + HDF5 write + fsync/rename + sha256, one process",
    }
    path = _write(Path(args.out), result)
    return {"path": str(path), "summary": summary}


def _write(path: Path, result: dict[str, Any]) -> Path:
    """Write with the machine info of :mod:`crosslocate.pipelines.benchinfo` (atomic JSON)."""
    try:
        from crosslocate.pipelines import benchinfo
    except ImportError:  # benchinfo not part of this build: plain atomic JSON without machine info
        from crosslocate.datasets.atomic import write_json_atomic

        logger.warning("crosslocate.pipelines.benchinfo missing: writing %s without machine info", path)
        return write_json_atomic(path, result)
    return benchinfo.write_json(path, {**result, "environment": benchinfo.environment_info()})


__all__ = ["CODEC_VARIANTS", "add_arguments", "run"]
