"""The region terrain atlas against the exact per-position pyramid: accuracy and cost per position.

``crosslocate bench terrain`` (``make bench-terrain``) picks positions on real SRTM tiles by kind:
**summits** and **valleys** (highest / lowest points of their 3 km neighbourhood among seeded
candidates), **ridges** (high points whose neighbourhood drops on two opposite sides), **tile
corners** and **tile borders** (within a few hundred metres of whole-degree lines, where tiles are
stitched), and **random** ones. Each position's 12 database views (paper preset unless told) are
rendered twice with the ``cpu`` backend: from a per-position pyramid
(:func:`~crosslocate.render.terrain.build_terrain`, today's exact renderer) and from the region's
atlas (:mod:`crosslocate.render.atlas`, what builds use). It reports, over all views and per kind:

* the relative depth difference where both see terrain (median, p99), the sky agreement and the
  semantic agreement over all pixels, against the issue's bounds (1e-3, 1e-2, 99.9 %, 99.5 %);
* the cost per position, each part labelled: terrain (pyramid build, or the atlas cameras and near
  patch), render, and their sum (render-only and terrain + render ratios side by side), plus the
  atlas's one-off build time for the area.

Costs are wall clock on one process using every core (numba threads), measured after a warm-up.

``pyrender`` (with an EGL context, ``--pyrender-per-kind`` positions per kind, 0 to skip): the mesh
backend can reuse one pyramid for neighbouring positions (``RenderBackend.terrain_reuse_m``, off by
default; the refraction lift is taken from each camera). For each position, its neighbours 500 m
east and 1 km north-east are rendered from the position's pyramid and from pyramids of their own;
the same agreement statistics against the same bounds, by depth band too, and the terrain cost per
position both ways: what sharing would save and what it costs in accuracy.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM

logger = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SRTM = _REPO_ROOT.parent / "shared" / "data" / "srtm3"
#: The issue's accuracy bounds (atlas vs per-position pyramid).
BOUNDS = {"median_rel_depth": 1e-3, "p99_rel_depth": 1e-2, "sky_agreement": 0.999, "semantic_agreement": 0.995}
#: Positions per kind.
PER_KIND = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``crosslocate bench terrain``."""
    parser.add_argument("--srtm", type=Path, default=DEFAULT_SRTM, help="folder of SRTM .hgt(.zip) tiles")
    parser.add_argument("--out", default="bench/terrain.json", help="JSON output (default bench/terrain.json)")
    parser.add_argument("--preset", default="paper", help="render settings of this preset (default paper)")
    parser.add_argument("--per-kind", type=int, default=PER_KIND, help=f"positions per kind (default {PER_KIND})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the candidate positions")
    parser.add_argument(
        "--pyrender-per-kind",
        type=int,
        default=1,
        help="positions per kind for the pyrender shared-pyramid check (0: skip; skipped without EGL)",
    )
    parser.add_argument("--size-px", type=int, default=None, help="override the view size")
    parser.add_argument("--near-patch-cells", type=int, default=None, help="override RenderConfig.near_patch_cells")


def pick_positions(dem: DEM, per_kind: int, seed: int = 0) -> list[tuple[str, float, float]]:
    """``(kind, lon, lat)`` of summits, valleys, ridges, tile corners, tile borders and random points.

    Candidates are seeded uniform points at least 0.1 degrees inside the DEM's bounds; the relief kinds
    compare each candidate with 8 points 3 km around it.
    """
    rng = np.random.default_rng(seed)
    w, s, e, n = dem.bounds_lonlat
    w, s, e, n = w + 0.1, s + 0.1, e - 0.1, n - 0.1
    lon = rng.uniform(w, e, 4000)
    lat = rng.uniform(s, n, 4000)
    h = dem.sample(lon, lat)
    ok = np.isfinite(h)
    lon, lat, h = lon[ok], lat[ok], h[ok]
    ang = np.radians(np.arange(8) * 45.0)
    dlat = 3000.0 / 111_320.0 * np.cos(ang)
    dlon = 3000.0 / (111_320.0 * np.cos(np.radians(lat)))[:, None] * np.sin(ang)[None, :]
    ring = dem.sample((lon[:, None] + dlon).ravel(), (lat[:, None] + dlat[None, :]).ravel()).reshape(-1, 8)
    good = np.isfinite(ring).all(axis=1)
    rel = h - np.nanmean(ring, axis=1)
    ridge = np.minimum(h[:, None] - ring[:, :4], h[:, None] - ring[:, 4:]).max(axis=1)  # drops on two opposite sides
    ridge = np.where(rel > 0, ridge, -np.inf)
    out: list[tuple[str, float, float]] = []
    used: set[int] = set()

    def take(kind: str, order: np.ndarray) -> None:
        k = 0
        for i in order:
            if k == per_kind:
                break
            if good[i] and int(i) not in used:
                used.add(int(i))
                out.append((kind, float(lon[i]), float(lat[i])))
                k += 1

    take("summit", np.argsort(-rel))
    take("valley", np.argsort(rel))
    take("ridge", np.argsort(-ridge))
    take("random", rng.permutation(lon.size))
    lons = np.arange(np.ceil(w), np.floor(e) + 1)
    lats = np.arange(np.ceil(s), np.floor(n) + 1)
    corners = [(float(a), float(b)) for a in lons for b in lats]

    def covered(lo: float, la: float) -> bool:
        return bool(np.isfinite(dem.sample([lo], [la])[0]))

    k = 0
    for i in rng.permutation(len(corners)):
        a, b = corners[i]
        lo, la = a + rng.uniform(-0.003, 0.003), b + rng.uniform(-0.003, 0.003)
        if k < per_kind and covered(lo, la):
            out.append(("tile_corner", lo, la))
            k += 1
    k = tries = 0
    while k < per_kind and tries < 1000 and (lons.size or lats.size):
        tries += 1
        if (rng.random() < 0.5 and lons.size) or not lats.size:
            lo, la = float(rng.choice(lons)) + rng.uniform(-0.003, 0.003), float(rng.uniform(s, n))
        else:
            lo, la = float(rng.uniform(w, e)), float(rng.choice(lats)) + rng.uniform(-0.003, 0.003)
        if covered(lo, la):
            out.append(("tile_border", lo, la))
            k += 1
    return out


def compare(ref: dict[Any, np.ndarray], new: dict[Any, np.ndarray]) -> dict[str, Any]:
    """Per-pixel agreement of two renders of the same views (depth z metres, sky ``SKY_DEPTH_M``)."""
    from crosslocate.datasets.schema import SKY_DEPTH_M, Modality

    da, db = ref[Modality.DEPTH], new[Modality.DEPTH]
    sa, sb = da == SKY_DEPTH_M, db == SKY_DEPTH_M
    both = ~sa & ~sb
    rel = np.abs(db[both].astype(np.float64) - da[both]) / da[both]
    return {
        "rel": rel,
        "sky_agree": int(np.count_nonzero(sa == sb)),
        "sem_agree": int(np.count_nonzero(ref[Modality.SEMANTIC] == new[Modality.SEMANTIC])),
        "pixels": int(da.size),
    }


def _summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    rel = np.concatenate([p["rel"] for p in parts]) if parts else np.zeros(0)
    px = sum(p["pixels"] for p in parts)
    return {
        "views": len(parts),
        "median_rel_depth": float(np.median(rel)) if rel.size else float("nan"),
        "p99_rel_depth": float(np.percentile(rel, 99)) if rel.size else float("nan"),
        "sky_agreement": sum(p["sky_agree"] for p in parts) / max(px, 1),
        "semantic_agreement": sum(p["sem_agree"] for p in parts) / max(px, 1),
        "terrain_fraction": rel.size / max(px, 1),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark, write the JSON; returns ``{"path", "summary"}``."""
    from crosslocate.dem.sources import open_dem
    from crosslocate.errors import NotBuiltError
    from crosslocate.pipelines.presets import get_preset
    from crosslocate.pipelines.tasks import position_poses
    from crosslocate.progress import Progress
    from crosslocate.render.atlas import build_atlas, plan_atlas
    from crosslocate.render.views import ViewRenderer

    if not Path(args.srtm).is_dir():
        raise NotBuiltError(f"no SRTM folder at {args.srtm}; pass --srtm DIR (e.g. ../shared/data/srtm3)")
    preset = get_preset(args.preset)
    overrides: dict[str, Any] = {}
    if args.size_px:
        overrides["size_px"] = int(args.size_px)
    if args.near_patch_cells is not None:
        overrides["near_patch_cells"] = int(args.near_patch_cells)
    cfg = preset.with_overrides(render=overrides).render if overrides else preset.render
    yaws, fov = preset.grid.yaws_deg, preset.grid.fov_deg
    with open_dem(str(args.srtm)) as dem:
        picks = pick_positions(dem, int(args.per_kind), int(args.seed))
        lon = np.array([p[1] for p in picks])
        lat = np.array([p[2] for p in picks])
        alt = dem.sample(lon, lat) + preset.grid.camera_offset_m
        t0 = time.perf_counter()
        atlases = [
            build_atlas(dem, s, cfg.refraction_k)
            for s in plan_atlas(lon, lat, dem.resolution_m, cfg.range_m, cfg.lod_cells)
        ]
        atlas_s = time.perf_counter() - t0
        by_kind: dict[str, list[dict[str, Any]]] = {}
        cost = {"pyramid_terrain_s": 0.0, "pyramid_render_s": 0.0, "atlas_terrain_s": 0.0, "atlas_render_s": 0.0}
        with ViewRenderer(dem, cfg) as exact, ViewRenderer(dem, cfg, atlases=atlases) as fast:
            warm = position_poses(float(lon[0]), float(lat[0]), float(alt[0]), yaws, fov)
            exact.render(warm)
            fast.render(warm)
            with Progress(len(picks), "bench terrain", "position") as bar:
                for (kind, lo, la), h in zip(picks, alt, strict=True):
                    poses = position_poses(lo, la, float(h), yaws, fov)
                    t1 = time.perf_counter()
                    a = exact.render(poses)
                    t2 = time.perf_counter()
                    b = fast.render(poses)
                    t3 = time.perf_counter()
                    cost["pyramid_terrain_s"] += exact.last_setup_s
                    cost["pyramid_render_s"] += (t2 - t1) - exact.last_setup_s
                    cost["atlas_terrain_s"] += fast.last_setup_s
                    cost["atlas_render_s"] += (t3 - t2) - fast.last_setup_s
                    parts = by_kind.setdefault(kind, [])
                    for v in range(len(poses)):
                        parts.append(
                            compare({m: x[v] for m, x in a.arrays.items()}, {m: x[v] for m, x in b.arrays.items()})
                        )
                    bar.update(1)
    n = len(picks)
    per_pos = {k: v / n for k, v in cost.items()}
    pyramid_total = per_pos["pyramid_terrain_s"] + per_pos["pyramid_render_s"]
    atlas_total = per_pos["atlas_terrain_s"] + per_pos["atlas_render_s"]
    overall = _summary([p for parts in by_kind.values() for p in parts])
    checks = {
        "median_rel_depth": overall["median_rel_depth"] <= BOUNDS["median_rel_depth"],
        "p99_rel_depth": overall["p99_rel_depth"] <= BOUNDS["p99_rel_depth"],
        "sky_agreement": overall["sky_agreement"] >= BOUNDS["sky_agreement"],
        "semantic_agreement": overall["semantic_agreement"] >= BOUNDS["semantic_agreement"],
    }
    summary = {
        "positions": n,
        "views": overall["views"],
        "size_px": cfg.size_px,
        "range_m": cfg.range_m,
        "agreement": overall,
        "bounds": BOUNDS,
        "bounds_met": checks,
        "per_position_s": {
            "pyramid_path": {
                "terrain": round(per_pos["pyramid_terrain_s"], 4),
                "render": round(per_pos["pyramid_render_s"], 4),
                "terrain_plus_render": round(pyramid_total, 4),
            },
            "atlas_path": {
                "terrain": round(per_pos["atlas_terrain_s"], 4),
                "render": round(per_pos["atlas_render_s"], 4),
                "terrain_plus_render": round(atlas_total, 4),
            },
        },
        "speedup_render_only": round(per_pos["pyramid_render_s"] / max(per_pos["atlas_render_s"], 1e-9), 2),
        "speedup_terrain_plus_render": round(pyramid_total / max(atlas_total, 1e-9), 2),
        "atlas_build_s": round(atlas_s, 1),
        "atlas_bytes": int(sum(a.nbytes for a in atlases)),
    }
    result = {
        "benchmark": "terrain",
        "summary": summary,
        "by_kind": {k: _summary(v) for k, v in by_kind.items()},
        "positions": [{"kind": k, "lon": lo, "lat": la} for k, lo, la in picks],
        "srtm": str(args.srtm),
        "config": cfg.to_dict(),
        "notes": (
            "pyramid_path = today's exact per-position renderer (terrain = build_terrain); atlas_path = the "
            "region atlas (terrain = per-position camera metric + near patch); encoding and writes are "
            "measured by bench build; the atlas build is a one-off per DEM and settings"
        ),
    }
    if int(getattr(args, "pyrender_per_kind", 0)) > 0:
        result["pyrender_shared_pyramid"] = pyrender_shared(
            args.srtm, cfg, preset.grid, picks, int(args.pyrender_per_kind)
        )
        summary["pyrender_shared_pyramid"] = {
            k: result["pyrender_shared_pyramid"].get(k) for k in ("agreement", "bounds_met", "terrain_s_per_position")
        }
    from crosslocate.pipelines import benchinfo

    path = benchinfo.write_json(Path(args.out), {**result, "environment": benchinfo.environment_info()})
    return {"path": str(path), "summary": summary}


#: Reuse distance (metres) of the pyrender shared-pyramid check.
SHARED_REUSE_M: float = 1500.0
#: Depth bands (metres) of its agreement breakdown.
DEPTH_BANDS_M: tuple[float, ...] = (0.0, 200.0, 1000.0, 5000.0, 20000.0, float("inf"))
#: Neighbours (metres east, north) of each checked position, rendered from its pyramid.
NEIGHBOURS_M: tuple[tuple[float, float], ...] = ((500.0, 0.0), (707.0, 707.0))


def pyrender_shared(
    srtm: Path, cfg: Any, grid: Any, picks: list[tuple[str, float, float]], per_kind: int
) -> dict[str, Any]:
    """The pyrender backend's shared pyramid against a pyramid per position (module docstring)."""
    import dataclasses

    from crosslocate.datasets.schema import Modality
    from crosslocate.dem.geodesy import enu_to_lonlat
    from crosslocate.dem.sources import open_dem
    from crosslocate.errors import BackendUnavailableError
    from crosslocate.pipelines.tasks import position_poses
    from crosslocate.render.backends.pyrender_egl import PyrenderBackend
    from crosslocate.render.views import ViewRenderer

    pcfg = dataclasses.replace(cfg, backend="pyrender")
    chosen: list[tuple[str, float, float]] = []
    for kind in dict.fromkeys(k for k, _, _ in picks):
        chosen += [p for p in picks if p[0] == kind][:per_kind]
    parts: list[dict[str, Any]] = []
    bands: list[tuple[np.ndarray, np.ndarray]] = []
    cost = {"shared": 0.0, "own": 0.0}
    try:
        backend = PyrenderBackend(pcfg)
    except BackendUnavailableError as exc:
        logger.warning("pyrender shared-pyramid check skipped: %s", exc)
        return {"skipped": str(exc)}
    with backend, open_dem(str(srtm)) as dem:
        for _kind, lo, la in chosen:
            pts = [(lo, la)]
            for de, dn in NEIGHBOURS_M:
                nlo, nla, _ = enu_to_lonlat(de, dn, 0.0, lo, la, 0.0)
                pts.append((float(nlo), float(nla)))
            h = dem.sample(np.array([p[0] for p in pts]), np.array([p[1] for p in pts])) + grid.camera_offset_m
            if not np.isfinite(h).all():
                continue
            poses = [
                position_poses(p[0], p[1], float(z), grid.yaws_deg, grid.fov_deg) for p, z in zip(pts, h, strict=True)
            ]
            backend.terrain_reuse_m = SHARED_REUSE_M
            shared = ViewRenderer(dem, pcfg, backend=backend)
            got = [shared.render(ps) for ps in poses]
            cost["shared"] += sum(shared.terrain_build_s) + sum(shared.near_patch_build_s)
            backend.terrain_reuse_m = 0.0
            own = ViewRenderer(dem, pcfg, backend=backend)
            ref = [own.render(ps) for ps in poses]
            cost["own"] += sum(own.terrain_build_s)
            for a, b in zip(ref[1:], got[1:], strict=True):  # the neighbours (the position itself is identical)
                for v in range(len(poses[0])):
                    parts.append(
                        compare({m: x[v] for m, x in a.arrays.items()}, {m: x[v] for m, x in b.arrays.items()})
                    )
                    da, db = a.arrays[Modality.DEPTH][v], b.arrays[Modality.DEPTH][v]
                    both = (da > 0) & (db > 0)
                    bands.append((da[both], np.abs(db[both].astype(np.float64) - da[both]) / da[both]))
    overall = _summary(parts)
    n_pos = max(1, len(chosen) * (1 + len(NEIGHBOURS_M)))
    depth = np.concatenate([d for d, _ in bands]) if bands else np.zeros(0)
    rel = np.concatenate([r for _, r in bands]) if bands else np.zeros(0)
    by_depth = {}
    for lo, hi in itertools.pairwise(DEPTH_BANDS_M):
        sel = (depth >= lo) & (depth < hi)
        if sel.any():
            by_depth[f"{lo:g}-{hi:g} m"] = {
                "pixels": int(sel.sum()),
                "median_rel_depth": float(np.median(rel[sel])),
                "p90_rel_depth": float(np.quantile(rel[sel], 0.9)),
            }
    return {
        "positions": len(chosen),
        "gl_renderer": backend.gl_renderer,
        "neighbours_m": [list(n) for n in NEIGHBOURS_M],
        "agreement": overall,
        "agreement_by_depth": by_depth,
        "bounds_met": {
            "median_rel_depth": overall["median_rel_depth"] <= BOUNDS["median_rel_depth"],
            "p99_rel_depth": overall["p99_rel_depth"] <= BOUNDS["p99_rel_depth"],
            "sky_agreement": overall["sky_agreement"] >= BOUNDS["sky_agreement"],
            "semantic_agreement": overall["semantic_agreement"] >= BOUNDS["semantic_agreement"],
        },
        "terrain_s_per_position": {"shared": round(cost["shared"] / n_pos, 4), "own": round(cost["own"] / n_pos, 4)},
    }


__all__ = ["BOUNDS", "NEIGHBOURS_M", "add_arguments", "compare", "pick_positions", "pyrender_shared", "run"]
