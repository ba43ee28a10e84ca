"""``crosslocate build sparse|compact|uniform --region R``: render a database (resumable) and print its folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from crosslocate.datasets.schema import DB_KINDS
from crosslocate.pipelines.commands import add_dem_argument


def add_parser(sub: Any) -> None:
    """Register ``build``."""
    p = sub.add_parser("build", help="render a sparse/compact/uniform database into work/<region>/db/<kind>")
    p.add_argument(
        "kind", choices=DB_KINDS, help="sparse: query positions; compact: grid near training queries; uniform"
    )
    p.add_argument("--region", required=True, help="demo, alps, switzerland, or a GeoJSON/shapefile polygon")
    add_dem_argument(p)
    p.add_argument("--preset", default="cpu", help="paper, cpu or tiny (default: cpu)")
    p.add_argument("--work", default="work", help="work folder (default: work)")
    p.add_argument("--out", default=None, help="database folder (default: WORK/<region>/db/<kind>)")
    p.add_argument(
        "--scheduler", default="local", help="local (LocalCluster, default), sync (in-process) or tcp://host:port"
    )
    p.add_argument("--workers", type=int, default=None, help="local cluster workers (default: available cores)")
    p.add_argument("--memory-limit", default="auto", help="per-worker memory limit of the local cluster (dask syntax)")
    p.add_argument("--views-per-shard", type=int, default=None, help="override the preset's shard size")
    p.add_argument("--spacing-m", type=float, default=None, help="override the preset's grid spacing (metres)")
    p.add_argument("--size-px", type=int, default=None, help="override the preset's view size (pixels, 1..4096)")
    p.add_argument("--clip-to-dem", action="store_true", help="uniform: build only the DEM-covered part of the region")
    p.add_argument("--overwrite", action="store_true", help="replace a database built with another configuration")
    p.add_argument(
        "--dry-run", action="store_true", help="print positions, views, shards, bytes and time; write nothing"
    )
    p.set_defaults(func=run)


def _progress_note(out: Path) -> str:
    """``"N of M shards complete and kept"`` for a build that stopped: the shards its manifest lists
    whose files exist (a manifest the build could not rewrite may still list a shard it removed)."""
    from crosslocate.datasets.manifest import Manifest
    from crosslocate.errors import CrosslocateError

    try:
        m = Manifest.load(out)
    except CrosslocateError:
        return "no shard complete yet"
    kept = sum((out / s.path).is_file() for s in m.shards)
    return f"{kept} of {m.n_planned_shards} shards complete and kept"


def run(args: argparse.Namespace) -> int:
    """Build the database; prints its folder (or the dry-run summary as JSON)."""
    from crosslocate.errors import DiskFullError, OutputWriteError
    from crosslocate.pipelines.build import build_database
    from crosslocate.pipelines.context import RunContext
    from crosslocate.pipelines.presets import get_preset

    preset = get_preset(args.preset).with_overrides(
        shard={"views_per_shard": args.views_per_shard} if args.views_per_shard is not None else None,
        grid={"spacing_m": args.spacing_m} if args.spacing_m is not None else None,
        render={"size_px": args.size_px} if args.size_px is not None else None,
    )
    ctx = RunContext.resolve(region=args.region, dem=args.dem, preset=preset, work=args.work)
    out = Path(args.out) if args.out else ctx.db(args.kind)
    try:
        result = build_database(
            args.kind,
            ctx.preset,
            ctx.region,
            ctx.dem,
            out,
            clip_to_dem=args.clip_to_dem,
            dry_run=args.dry_run,
            overwrite=args.overwrite,
            scheduler=args.scheduler,
            n_workers=args.workers,
            memory_limit=args.memory_limit,
            work=ctx.work,
        )
    except DiskFullError as exc:
        raise DiskFullError(f"{exc}; {_progress_note(out)}; free space and rerun the same command to resume") from exc
    except OutputWriteError as exc:
        raise OutputWriteError(f"{exc}; {_progress_note(out)}; rerun the same command to resume") from exc
    print(json.dumps(result, indent=2, default=str) if args.dry_run else result)
    return 0
