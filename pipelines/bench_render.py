"""Render backends compared on the same positions: views/s per modality, cores, memory and agreement.

For each dataset (a real SRTM tile set and the embedded demo region) the same seeded positions are
rendered by every backend: 12 database yaws per position, once per single modality (depth,
silhouette, semantic) and once with all modalities. Per backend it records views/s per modality
(render calls only, wall clock, each pass repeated to at least ``MIN_PASS_S``; terrain build and
``prepare`` are timed separately), the threads it renders with (numba threads for ``cpu``; Mesa
llvmpipe threads for ``pyrender``), views/s per thread, peak memory (``ru_maxrss`` of the process after the backend ran and the ``tracemalloc`` peak during a
warm-up position), and across backends the depth / sky / class agreement.

``speedup`` is ``views_per_s[cpu] / views_per_s[pyrender]`` (all modalities, first dataset): how many
times faster the numba CPU caster renders than the OpenGL backend on this machine.
``targets`` checks the issue's goals on that dataset: ``speedup >= 20`` and, for every modality and
for all modalities together, ``cpu views/s / cpu threads >= 100`` with all cores in use;
``targets_by_dataset`` does the same for every dataset.

Timings only compare within one run on one otherwise idle machine (``environment`` records it).
Top-level light: heavy modules (numba, pyrender) are imported in :func:`run` only.
"""

from __future__ import annotations

import argparse
import logging
import os
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
#: Goals of the render benchmark: cpu / pyrender views/s, and cpu views/s per core (every modality).
TARGET_SPEEDUP = 20.0
TARGET_CPU_VIEWS_PER_S_PER_CORE = 100.0
#: A (position, modality) pass is repeated until it has taken this long (at most MAX_REPEAT times).
MIN_PASS_S = 0.25
MAX_REPEAT = 20


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
    t_start = time.perf_counter()
    results = {
        name: bench_dataset(name, _open(name, args.srtm), cfg, backends, args.positions, args.seed) for name in datasets
    }
    primary = results[datasets[0]]
    record: dict[str, Any] = {
        "benchmark": "render",
        "primary_dataset": datasets[0],
        "backends": primary["backends"],
        "speedup": primary.get("speedup"),
        "speedup_definition": "views_per_s[cpu] / views_per_s[pyrender], all modalities",
        "speedup_by_modality": primary.get("speedup_by_modality"),
        "agreement": primary.get("agreement"),
        "targets": targets(primary),
        "targets_by_dataset": {name: targets(res) for name, res in results.items()},
        "terrain_build_s": primary["terrain_build_s"],
        "datasets": results,
        "render_config": cfg.to_dict(),
        "bench_wall_s": time.perf_counter() - t_start,
        "environment": environment_info(),
    }
    path = write_json(args.out, record)
    summary = {
        "views_per_s": {b: v["views_per_s"] for b, v in primary["backends"].items()},
        "views_per_s_per_thread": {b: v["views_per_s_per_thread"] for b, v in primary["backends"].items()},
        "speedup": record["speedup"],
        "agreement": record["agreement"],
        "targets": record["targets"],
        "targets_met_by_dataset": {
            name: {"speedup": t["speedup_met"], "cpu_per_core": t["cpu_per_core_met"]}
            for name, t in record["targets_by_dataset"].items()
        },
    }
    return {"path": str(path), "summary": summary, "record": record}


def targets(result: dict[str, Any]) -> dict[str, Any]:
    """The benchmark goals checked on one dataset's result (``None`` where a backend is missing)."""
    out: dict[str, Any] = {
        "speedup_min": TARGET_SPEEDUP,
        "cpu_views_per_s_per_core_min": TARGET_CPU_VIEWS_PER_S_PER_CORE,
    }
    speedup = result.get("speedup")
    out["speedup_met"] = None if speedup is None else bool(speedup >= TARGET_SPEEDUP)
    cpu = result["backends"].get("cpu")
    if cpu is None:
        out["cpu_per_core_met"] = None
        return out
    per_core = {m: v / cpu["threads"] for m, v in cpu["views_per_s_by_modality"].items()}
    out["cpu_views_per_s_per_core"] = per_core
    out["cpu_threads"] = cpu["threads"]
    out["cpu_uses_all_cores"] = bool(cpu["threads"] >= cpu["cores_available"])
    out["cpu_per_core_met"] = bool(min(per_core.values()) >= TARGET_CPU_VIEWS_PER_S_PER_CORE)
    return out


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
        terrain = build_terrain(dem, lon, lat, cfg, lod_cells=cfg.lod_cells)
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
        cpu, gl = per_backend["cpu"], per_backend["pyrender"]
        out["speedup"] = cpu["views_per_s"] / gl["views_per_s"]
        out["speedup_by_modality"] = {
            m: cpu["views_per_s_by_modality"][m] / gl["views_per_s_by_modality"][m]
            for m in cpu["views_per_s_by_modality"]
        }
        out["agreement"] = agreement(outputs["cpu"], outputs["pyrender"])
        logger.info(
            "%s: cpu/pyrender speedup %.1fx; agreement %s",
            name,
            out["speedup"],
            {k: round(v, 6) for k, v in out["agreement"].items()},
        )
    return out


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _cores_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _threads(backend_name: str) -> int:
    """Threads a backend renders with: numba's for ``cpu``; llvmpipe's (``LP_NUM_THREADS``, default
    one per core) for ``pyrender`` on a CPU-only machine."""
    if backend_name == "cpu":
        from crosslocate.render.backends.heightfield_numba import threads_used

        return threads_used()
    lp = os.environ.get("LP_NUM_THREADS")
    return int(lp) if lp and lp.isdigit() and int(lp) > 0 else _cores_available()


def _bench_backend(
    cfg: RenderConfig, terrains: list[Any], cams: list[list[Any]], modalities: tuple[Any, ...]
) -> tuple[dict[str, Any], list[dict[Any, np.ndarray]]]:
    """Time one backend: a traced warm-up on position 0, then one pass per single modality and one with
    all modalities over every position (the all-modality outputs are kept for the agreement)."""
    from crosslocate.render.backends import open_backend

    passes: dict[str, tuple[Any, ...]] = {m.value: (m,) for m in modalities}
    passes["all"] = tuple(modalities)
    prepare_s: list[float] = []
    pass_s: dict[str, float] = dict.fromkeys(passes, 0.0)
    pass_views: dict[str, int] = dict.fromkeys(passes, 0)
    views: list[dict[Any, np.ndarray]] = []
    t_open = time.perf_counter()
    backend: RenderBackend = open_backend(cfg)
    open_s = time.perf_counter() - t_open
    with backend:
        tracemalloc.start()
        t0 = time.perf_counter()
        backend.prepare(terrains[0])  # warm-up: JIT compilation, shader compilation, first upload
        backend.render(cams[0], passes["all"])
        warmup_s = time.perf_counter() - t0
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        for terrain, cam in zip(terrains, cams, strict=True):
            t0 = time.perf_counter()
            backend.prepare(terrain)
            prepare_s.append(time.perf_counter() - t0)
            for key, mods in passes.items():
                # the first render of a pass is the production-like one (12 views of a fresh position);
                # fast backends repeat it until the pass has taken MIN_PASS_S, so timer and scheduler
                # noise stay small against the measured time
                t0 = time.perf_counter()
                batch = backend.render(cam, mods)
                elapsed = time.perf_counter() - t0
                n_rendered = len(cam)
                while elapsed < MIN_PASS_S and n_rendered < MAX_REPEAT * len(cam):
                    t0 = time.perf_counter()
                    backend.render(cam, mods)
                    elapsed += time.perf_counter() - t0
                    n_rendered += len(cam)
                pass_s[key] += elapsed
                pass_views[key] += n_rendered
            views.append(dict(batch.arrays))  # the last pass: all modalities
    n_views = sum(len(c) for c in cams)
    threads = _threads(cfg.backend)
    by_mod = {key: pass_views[key] / s for key, s in pass_s.items()}
    stats = {
        "views_per_s": by_mod["all"],
        "views_per_s_depth": by_mod.get("depth"),
        "views_per_s_by_modality": by_mod,
        "threads": threads,
        "cores_available": _cores_available(),
        "views_per_s_per_thread": by_mod["all"] / threads,
        "n_views": n_views,
        "n_views_timed_by_modality": pass_views,
        "prepare_s_mean": float(np.mean(prepare_s)),
        "open_s": open_s,
        "warmup_s": warmup_s,
        "peak_rss_mb": _rss_mb(),
        "tracemalloc_peak_mb": traced_peak / 2**20,
        "gl_renderer": getattr(backend, "gl_renderer", None),  # which device drew (OpenGL backends)
    }
    logger.info(
        "%s: %s views/s on %d threads (%.1f per thread, all modalities)",
        cfg.backend,
        {k: round(v, 1) for k, v in by_mod.items()},
        threads,
        stats["views_per_s_per_thread"],
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
