"""Render backends compared on the same positions: views/s, terrain time, memory and agreement.

For each dataset (a real SRTM tile set and the embedded demo region) the same seeded positions are
rendered by every backend: 12 database yaws per position, once depth only and once with all
modalities. Per backend and modality it records views/s (render calls only; terrain build and
``prepare`` are timed separately), peak memory (``ru_maxrss`` of the process and the
``tracemalloc`` peak during a warm-up position), and across backends the depth/sky/class agreement.

``speedup`` is ``views_per_s[pyrender] / views_per_s[cpu]`` (all modalities, SRTM positions): how
many times faster the OpenGL backend renders than the numba CPU marcher on this machine.

Top-level light: heavy modules (numba, pyrender) are imported in :func:`run` only.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from crosslocate.errors import ConfigError, NotBuiltError

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM
    from crosslocate.render.backends.base import RenderBackend
    from crosslocate.render.config import RenderConfig

logger = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRTM = _REPO_ROOT.parent / "shared" / "data" / "srtm3"
DEFAULT_OUT = Path("bench") / "render.json"
#: Camera height above ground for the benchmark positions (GridConfig default), metres.
CAMERA_OFFSET_M = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crosslocate bench render``."""
    parser.add_argument("--srtm", type=Path, default=DEFAULT_SRTM, help="folder of SRTM .hgt(.zip) tiles")
    parser.add_argument("--positions", type=int, default=4, help="positions per dataset (12 views each)")
    parser.add_argument("--size", type=int, default=500, help="image side, px")
    parser.add_argument("--range-km", type=float, default=60.0, help="render range, km")
    parser.add_argument("--backends", default="cpu,pyrender", help="comma-separated backend names")
    parser.add_argument("--datasets", default="srtm,demo", help="comma-separated: srtm, demo")
    parser.add_argument("--gl-platform", default="egl", choices=("egl", "osmesa"), help="OpenGL platform")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position sampler")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output (overwritten atomically)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark described by ``args``; returns ``{"path": json_path, "summary": {...}}``."""
    from crosslocate.pipelines.benchinfo import environment_info, write_json
    from crosslocate.render.backends import available_backends
    from crosslocate.render.config import RenderConfig

    backends = [b.strip() for b in str(args.backends).split(",") if b.strip()]
    unknown = sorted(set(backends) - set(available_backends()))
    if unknown or not backends:
        raise ConfigError(f"--backends {args.backends!r}: unknown {unknown}; choose from {available_backends()}")
    datasets = [d.strip() for d in str(args.datasets).split(",") if d.strip()]
    if not datasets or set(datasets) - {"srtm", "demo"}:
        raise ConfigError(f"--datasets {args.datasets!r}: choose from 'srtm', 'demo'")
    if args.positions < 1:
        raise ConfigError(f"--positions must be >= 1, got {args.positions}")
    cfg = RenderConfig(size_px=int(args.size), range_m=float(args.range_km) * 1000.0, gl_platform=args.gl_platform)
    results = {
        name: bench_dataset(name, _open(name, args.srtm), cfg, backends, args.positions, args.seed) for name in datasets
    }
    primary = results[datasets[0]]
    record: dict[str, Any] = {
        "benchmark": "render",
        "primary_dataset": datasets[0],
        "backends": primary["backends"],
        "speedup": primary.get("speedup"),
        "speedup_definition": "views_per_s[pyrender] / views_per_s[cpu], all modalities",
        "agreement": primary.get("agreement"),
        "terrain_build_s": primary["terrain_build_s"],
        "datasets": results,
        "render_config": cfg.to_dict(),
        "environment": environment_info(),
    }
    path = write_json(args.out, record)
    summary = {
        "views_per_s": {b: v["views_per_s"] for b, v in primary["backends"].items()},
        "speedup": record["speedup"],
        "agreement": record["agreement"],
    }
    return {"path": str(path), "summary": summary, "record": record}


def _open(name: str, srtm: Path) -> DEM:
    from crosslocate.dem.sources import open_dem

    if name == "demo":
        return open_dem("demo")
    return open_dem(str(srtm))


def sample_positions(dem: DEM, n: int, seed: int, margin_deg: float = 0.25) -> list[tuple[float, float, float]]:
    """``n`` seeded ``(lon, lat, alt_m)`` on land inside the DEM (``margin_deg`` from its edges).

    The camera is ``CAMERA_OFFSET_M`` above the DEM surface.
    """
    rng = np.random.default_rng(seed)
    west, south, east, north = dem.bounds_lonlat
    m = min(margin_deg, 0.25 * (east - west), 0.25 * (north - south))
    out: list[tuple[float, float, float]] = []
    for _ in range(200):
        lon = rng.uniform(west + m, east - m, 64)
        lat = rng.uniform(south + m, north - m, 64)
        h = dem.sample(lon, lat)
        ok = np.isfinite(h) & (h > 0.0)
        out.extend(
            (float(a), float(b), float(c) + CAMERA_OFFSET_M) for a, b, c in zip(lon[ok], lat[ok], h[ok], strict=True)
        )
        if len(out) >= n:
            return out[:n]
    raise ConfigError(f"could not find {n} positions with valid elevation in {dem.sources[:3]}")


def bench_dataset(
    name: str, dem: DEM, cfg: RenderConfig, backends: list[str], n_positions: int, seed: int
) -> dict[str, Any]:
    """Benchmark every backend on ``n_positions`` positions of ``dem``; see the module docstring."""
    from crosslocate.datasets.schema import ALL_MODALITIES, Modality
    from crosslocate.dem.poses import DB_YAWS_DEG, Pose

    try:
        from crosslocate.render.terrain import build_terrain, frame_camera
    except ModuleNotFoundError as exc:
        if exc.name != "crosslocate.render.terrain":
            raise
        raise NotBuiltError("bench render needs crosslocate.render.terrain, which is not built yet") from exc

    positions = sample_positions(dem, n_positions, seed)
    terrains, cams, build_s = [], [], []
    for lon, lat, alt in positions:
        t0 = time.perf_counter()
        terrain = build_terrain(dem, lon, lat, cfg)
        build_s.append(time.perf_counter() - t0)
        terrains.append(terrain)
        poses = [Pose(lon=lon, lat=lat, alt_m=alt, yaw_deg=y, fov_deg=cfg.fov_deg) for y in DB_YAWS_DEG]
        cams.append([frame_camera(terrain, p, cfg.size_px) for p in poses])
    logger.info("%s: %d terrains built, %.2f s each", name, len(terrains), float(np.mean(build_s)))
    per_backend: dict[str, Any] = {}
    outputs: dict[str, list[dict[Modality, np.ndarray]]] = {}
    for backend_name in backends:
        stats, views = _bench_backend(replace(cfg, backend=backend_name), terrains, cams, ALL_MODALITIES)
        per_backend[backend_name] = stats
        outputs[backend_name] = views
    out: dict[str, Any] = {
        "dem": {"sources": len(dem.sources), "synthetic": dem.synthetic, "resolution_m": dem.resolution_m},
        "positions": [{"lon": a, "lat": b, "alt_m": c} for a, b, c in positions],
        "views_per_position": len(DB_YAWS_DEG),
        "terrain_build_s": float(np.mean(build_s)),
        "backends": per_backend,
    }
    if "cpu" in outputs and "pyrender" in outputs:
        out["speedup"] = per_backend["pyrender"]["views_per_s"] / per_backend["cpu"]["views_per_s"]
        out["speedup_depth"] = per_backend["pyrender"]["views_per_s_depth"] / per_backend["cpu"]["views_per_s_depth"]
        out["agreement"] = agreement(outputs["cpu"], outputs["pyrender"])
    return out


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _bench_backend(
    cfg: RenderConfig, terrains: list[Any], cams: list[list[Any]], modalities: tuple[Any, ...]
) -> tuple[dict[str, Any], list[dict[Any, np.ndarray]]]:
    """Time one backend: a traced warm-up on position 0, then depth-only and all-modality passes."""
    from crosslocate.datasets.schema import Modality
    from crosslocate.render.backends import open_backend

    depth_only = (Modality.DEPTH,)
    prepare_s, depth_s, all_s = [], [], []
    views: list[dict[Any, np.ndarray]] = []
    t_open = time.perf_counter()
    backend: RenderBackend = open_backend(cfg)
    open_s = time.perf_counter() - t_open
    with backend:
        tracemalloc.start()
        backend.prepare(terrains[0])  # warm-up: JIT compilation, shader compilation, first upload
        backend.render(cams[0], modalities)
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        for terrain, cam in zip(terrains, cams, strict=True):
            t0 = time.perf_counter()
            backend.prepare(terrain)
            prepare_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            backend.render(cam, depth_only)
            depth_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            batch = backend.render(cam, modalities)
            all_s.append(time.perf_counter() - t0)
            views.append(dict(batch.arrays))
    n_views = sum(len(c) for c in cams)
    stats = {
        "views_per_s": n_views / float(np.sum(all_s)),
        "views_per_s_depth": n_views / float(np.sum(depth_s)),
        "n_views": n_views,
        "prepare_s_mean": float(np.mean(prepare_s)),
        "open_s": open_s,
        "peak_rss_mb": _rss_mb(),
        "tracemalloc_peak_mb": traced_peak / 2**20,
    }
    logger.info(
        "%s: %.2f views/s (all), %.2f views/s (depth)", cfg.backend, stats["views_per_s"], stats["views_per_s_depth"]
    )
    return stats, views


def agreement(a: list[dict[Any, np.ndarray]], b: list[dict[Any, np.ndarray]]) -> dict[str, float]:
    """Agreement of two backends' views (same cameras, same order).

    ``median_rel_depth_diff``: median of ``|d_a - d_b| / d_a`` over pixels both see as terrain;
    ``sky_agreement``: fraction of pixels with the same sky/terrain label; ``semantic_agreement``:
    fraction of pixels both see as terrain with the same class.
    """
    from crosslocate.datasets.schema import SKY_DEPTH_M, Modality

    rel, same_sky, n_pix, same_cls, n_both = [], 0, 0, 0, 0
    for va, vb in zip(a, b, strict=True):
        da, db = va[Modality.DEPTH], vb[Modality.DEPTH]
        ta, tb = da != SKY_DEPTH_M, db != SKY_DEPTH_M
        both = ta & tb
        rel.append(np.abs(da[both] - db[both]) / da[both])
        same_sky += int((ta == tb).sum())
        n_pix += da.size
        n_both += int(both.sum())
        if Modality.SEMANTIC in va and Modality.SEMANTIC in vb:
            same_cls += int((va[Modality.SEMANTIC][both] == vb[Modality.SEMANTIC][both]).sum())
    r = np.concatenate(rel) if rel else np.zeros(0)
    return {
        "median_rel_depth_diff": float(np.median(r)) if r.size else float("nan"),
        "p90_rel_depth_diff": float(np.quantile(r, 0.9)) if r.size else float("nan"),
        "sky_agreement": same_sky / max(n_pix, 1),
        "semantic_agreement": same_cls / max(n_both, 1),
        "terrain_fraction_both": n_both / max(n_pix, 1),
    }
