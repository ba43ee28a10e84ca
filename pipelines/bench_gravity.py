"""Gravity benchmark: the horizon baseline with the camera's true pitch/roll vs searched vs assumed level.

Geometry only (no photo, no sky detection): ``n_spots`` random photo spots in a region
(:func:`crosslocate.datasets.queries.sample_synthetic_poses`: random yaw, pitch within 10 deg, roll
within 5 deg, FOV 30-70 deg, 1.7 m above the DEM); each spot's query skyline comes from the depth
render of that camera, its database from 12 level views (yaw 0..330, 60 deg FOV) 10 m above the
spot. Every query is ranked against all ``12 n_spots`` views by
:func:`crosslocate.model.baselines.horizon_baseline` with

* ``true``: the query's pitch and roll (what an IMU gives: the benchmark's upper bound),
* ``searched``: pitch/roll searched with the ``EvalConfig`` defaults (``horizon_search_*``),
* ``searched_2deg``: a 2 x 2 deg grid without mean removal (the naive search),
* ``level``: pitch = roll = 0 assumed.

R@N = share of queries whose spot has a view among the first N. JSON via
:func:`crosslocate.pipelines.benchinfo.write_json` (default ``bench/gravity.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from crosslocate.dem.sources import DemSource
    from crosslocate.pipelines.context import RegionSpec

logger = logging.getLogger(__name__)

#: Database yaws at each spot, degrees.
DB_YAWS_DEG: tuple[float, ...] = tuple(float(y) for y in range(0, 360, 30))


def add_arguments(p: argparse.ArgumentParser) -> None:
    from crosslocate.pipelines.commands import add_dem_argument

    p.add_argument("--region", default="demo", help="region name or polygon file (default demo)")
    add_dem_argument(p)
    p.add_argument("--n-spots", type=int, default=40, help="photo spots (default 40)")
    p.add_argument("--size-px", type=int, default=128, help="render size, pixels (default 128)")
    p.add_argument("--range-m", type=float, default=35_000.0, help="render range, metres (default 35000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="bench/gravity.json", help="output JSON (default bench/gravity.json)")


def render_skylines(
    region: RegionSpec, dem_src: DemSource, n_spots: int, size_px: int, range_m: float, seed: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """(query rows (S, W), database rows (12 S, W), query (fov, pitch, roll) (S, 3) degrees) of random spots.

    Rows: the sky/terrain boundary per column (:func:`crosslocate.datasets.derived.horizon_line`) of
    square ``size_px`` depth renders; database view ``12 s + j`` stands at spot ``s`` with yaw ``30 j``.
    """
    from crosslocate.datasets.derived import horizon_line
    from crosslocate.datasets.queries import sample_synthetic_poses
    from crosslocate.datasets.schema import Modality
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.views import render_views

    cfg = RenderConfig(size_px=size_px, range_m=range_m, lod_cells=128, modalities=(Modality.DEPTH,))
    with dem_src.open() as dem:
        queries = sample_synthetic_poses(region, dem, n_spots, np.random.default_rng(seed), margin_m=3000.0)
        db = [
            dataclasses.replace(q, alt_m=q.alt_m - 1.7 + 10.0, yaw_deg=y, pitch_deg=0.0, roll_deg=0.0, fov_deg=60.0)
            for q in queries
            for y in DB_YAWS_DEG
        ]
        q_depth = render_views(dem, queries, cfg).arrays[Modality.DEPTH]
        db_depth = render_views(dem, db, cfg).arrays[Modality.DEPTH]
    pose = np.array([[q.fov_deg, q.pitch_deg, q.roll_deg] for q in queries], np.float64)
    return horizon_line(q_depth), horizon_line(db_depth), pose


def measure(
    q_rows: npt.NDArray[np.float32], db_rows: npt.NDArray[np.float32], pose: npt.NDArray[np.float64], eval_cfg: Any
) -> dict[str, dict[str, Any]]:
    """Per variant: R@1, R@5, gravity candidates and seconds (see the module docstring)."""
    from crosslocate.model.baselines import gravity_grid, horizon_baseline

    n, size = len(q_rows), q_rows.shape[-1]
    spot = np.repeat(np.arange(n), len(DB_YAWS_DEG))
    grid = gravity_grid(
        eval_cfg.horizon_search_pitch_deg,
        eval_cfg.horizon_search_roll_deg,
        eval_cfg.horizon_search_pitch_step_deg,
        eval_cfg.horizon_search_roll_step_deg,
    )
    variants: dict[str, dict[str, Any]] = {
        "true": {"q_pitch_deg": pose[:, 1], "q_roll_deg": pose[:, 2]},
        "searched": {"gravity_search": grid, "subtract_mean": eval_cfg.horizon_search_subtract_mean},
        "searched_2deg": {"gravity_search": gravity_grid(10.0, 5.0, 2.0)},
        "level": {},
    }
    rows: dict[str, dict[str, Any]] = {}
    for name, kw in variants.items():
        t0 = time.perf_counter()
        res = horizon_baseline(
            q_rows, pose[:, 0], size, 5, db_rows=db_rows, db_height_px=size, max_shift_deg=15.0, **kw
        )
        hit = spot[res.indices] == np.arange(n)[:, None]
        rows[name] = {
            "recall@1": float(hit[:, 0].mean()),
            "recall@5": float(hit[:, :5].any(axis=1).mean()),
            "gravity_candidates": res.info["gravity_candidates"],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        logger.info("%s: %s", name, rows[name])
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark and write its JSON; returns ``{"path", "summary"}``."""
    from crosslocate.dem.sources import DemSource
    from crosslocate.model.config import EvalConfig
    from crosslocate.pipelines.benchinfo import environment_info, write_json
    from crosslocate.pipelines.context import resolve_region

    t0 = time.perf_counter()
    dem_src = DemSource.resolve(args.dem, resolve_region(args.region).name)
    q_rows, db_rows, pose = render_skylines(args.region, dem_src, args.n_spots, args.size_px, args.range_m, args.seed)
    render_s = time.perf_counter() - t0
    eval_cfg = EvalConfig()
    rows = measure(q_rows, db_rows, pose, eval_cfg)
    summary = {name: {k: r[k] for k in ("recall@1", "recall@5")} for name, r in rows.items()}
    config = {
        "region": str(args.region),
        "dem": str(dem_src),
        "n_spots": args.n_spots,
        "size_px": args.size_px,
        "range_m": args.range_m,
        "seed": args.seed,
        "eval": eval_cfg.to_dict(),
    }
    record = {
        "benchmark": "gravity",
        "environment": environment_info(),
        "config": config,
        "render_s": round(render_s, 2),
        "results": rows,
        "summary": summary,
    }
    path = write_json(args.out, record)
    return {"path": str(path), "summary": summary}


__all__ = ["DB_YAWS_DEG", "add_arguments", "measure", "render_skylines", "run"]
