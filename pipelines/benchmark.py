"""``crosslocate benchmark``: train if needed, then evaluate test queries against the test-area uniform DB.

Steps: the training flow (:func:`crosslocate.pipelines.train.run_train`) when the run has no
checkpoint; the ``uniform`` database; descriptors of the test-split queries and the test-split
uniform views (batched, cached under ``<run>/descriptors/`` keyed by content: checkpoint, database,
modality, input settings and encoding, :mod:`crosslocate.pipelines.descriptors`); exact search (:mod:`crosslocate.model.search`); recall@N for N = 1..100 at 20 m / 100 m /
1 km (:mod:`crosslocate.model.evaluate`), orientation-restricted recall, per-FOV recall, analytic
chance, the untrained-network baseline (same architecture and init, no training) and the HLoc-style
horizon-line baseline (:func:`horizon_ranking`). Writes ``<run>/results.json`` (``baselines`` holds
one recall table per baseline, laid out like ``recall``), PNG plots (recall curves, recall vs
distance, retrieval map, query-vs-retrieved mosaic), and returns a summary table vs the paper.

The uniform database is built for the whole region (the build layer has no split filter); only its
test-split views are searched. For the demo region that is a few thousand views.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.manifest import file_sha256
from crosslocate.datasets.schema import SPLIT_CODES
from crosslocate.errors import ConfigError, ShardCorruptError
from crosslocate.pipelines.benchinfo import environment_info

logger = logging.getLogger(__name__)

#: Distance thresholds (metres) and N values of the results.
THRESHOLDS_M: tuple[float, ...] = (20.0, 100.0, 1000.0)
NS: tuple[int, ...] = tuple(range(1, 101))
#: Orientation-restricted recall: a match must also be within this yaw difference (degrees).
ORIENTED_MAX_YAW_DEG: float = 30.0
#: The paper's numbers (CrossLocate, WACV 2022, Switzerland uniform test database, 1 km).
PAPER_R1_1KM: float = 0.3866
PAPER_R100_1KM: float = 0.7262


def _table(recall: dict[Any, dict[Any, float]]) -> dict[str, dict[str, float]]:
    """JSON layout ``{"<threshold_m>": {"<N>": fraction}}`` (thresholds printed with %g)."""
    return {f"{float(t):g}": {str(int(n)): float(v) for n, v in row.items()} for t, row in recall.items()}


def evaluate_ranking(
    idx: npt.NDArray[np.int64],
    q_xy: npt.NDArray[np.float64],
    q_yaw: npt.NDArray[np.float64],
    q_fov: npt.NDArray[np.float64],
    db_xy: npt.NDArray[np.float64],
    db_yaw: npt.NDArray[np.float64],
    spots: npt.NDArray[np.int64] | None = None,
) -> dict[str, Any]:
    """Recall tables of one ranking (Q, K) of database indices, best first, via :mod:`crosslocate.model.evaluate`.

    ``spots`` (Q,): the queries' spot ids (:func:`spot_ids`); when given, ``recall_ci95`` is added.
    """
    from crosslocate.dem.poses import yaw_difference_deg
    from crosslocate.model import evaluate

    dist = np.linalg.norm(db_xy[idx] - q_xy[:, None, :], axis=2)
    dyaw = yaw_difference_deg(db_yaw[idx], q_yaw[:, None])
    ns = tuple(n for n in NS if n <= idx.shape[1])
    out: dict[str, Any] = {
        "recall": _table(evaluate.recall_at_n(dist, THRESHOLDS_M, ns)),
        "recall_oriented": _table(
            evaluate.recall_at_n(np.where(dyaw <= ORIENTED_MAX_YAW_DEG, dist, np.inf), THRESHOLDS_M, ns)
        ),
    }
    per_fov: dict[str, Any] = {}
    edges = (0.0, 40.0, 50.0, 60.0, 180.0)
    for lo, hi in itertools.pairwise(edges):
        m = (q_fov >= lo) & (q_fov < hi)
        if m.any():
            per_fov[f"{lo:g}-{hi:g}"] = {
                "n": int(m.sum()),
                "recall": _table(evaluate.recall_at_n(dist[m], THRESHOLDS_M, ns)),
            }
    out["per_fov"] = per_fov
    if spots is not None:
        out["recall_ci95"] = recall_ci95(dist, spots)
    return out


#: N values of the bootstrap intervals in ``results.json`` (``recall_ci95``).
CI_NS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)


def spot_ids(queries: list[Any]) -> npt.NDArray[np.int64]:
    """(Q,) int64 id of each query's camera position (photos taken from one spot share an id)."""
    keys = np.array([q.pose.spot for q in queries], np.float64).reshape(-1, 3)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def recall_ci95(dist: npt.NDArray[np.float64], spots: npt.NDArray[np.int64]) -> dict[str, dict[str, list[float]]]:
    """``{"<threshold_m>": {"<N>": [low, high]}}``: 95% bootstrap intervals resampling whole spots
    (:func:`crosslocate.model.evaluate.recall_interval`; the photos of one spot are not independent)."""
    from crosslocate.model import evaluate

    ns = tuple(n for n in CI_NS if n <= max(dist.shape[1], 1))
    return {
        f"{float(t):g}": {str(n): list(v) for n, v in evaluate.recall_interval(dist, spots, t, ns).items()}
        for t in THRESHOLDS_M
    }


def _ranking(db_desc: npt.NDArray[np.float32], q_desc: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.int64]:
    from crosslocate.model import search

    _, idx = search.search(db_desc, q_desc, k)
    return np.asarray(idx, np.int64)


def run_benchmark(
    region: str,
    dem_src: Any,
    preset_name: str,
    work: str | os.PathLike[str],
    *,
    modality: str = "depth",
    device: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark end to end; returns the summary (``results`` path included). See the module docstring."""
    from crosslocate.datasets.transforms import INPUT_ENCODING
    from crosslocate.dem.regions import get_region
    from crosslocate.model import checkpoint, evaluate
    from crosslocate.model.device import resolve_device, seed_everything
    from crosslocate.model.net import build_net
    from crosslocate.pipelines import train as flow
    from crosslocate.pipelines.descriptors import DESCRIPTORS_DIR, cached_descriptors
    from crosslocate.pipelines.presets import get_preset
    from crosslocate.pipelines.queries import ensure_query_set

    t_start = time.perf_counter()
    preset = get_preset(preset_name)
    dem_src = flow._default_dem(region, dem_src)
    paths = flow.flow_paths(work, region, preset_name, modality)
    ckpt = paths.run / "checkpoint.pt"
    timings: dict[str, float] = {}
    if not ckpt.exists():
        logger.info("no checkpoint at %s: training first", ckpt)
        flow.run_train(region, dem_src, preset_name, work, modality=modality, device=device)
        timings["train_s"] = round(time.perf_counter() - t_start, 2)
    best = paths.run / "best.pt"  # selected on validation recall (train.BEST_NAME); else the last epoch
    if best.exists():
        logger.info("evaluating %s (best validation epoch) rather than the last epoch", best)
        ckpt = best
    reg = get_region(region)
    queries = ensure_query_set(region, dem_src, preset, paths.work)
    dbs = flow.ensure_databases(("uniform",), preset, region, dem_src, paths, queries)
    splits = flow.query_splits(queries, reg, preset.grid)
    test = splits == SPLIT_CODES["test"]
    if not test.any():
        raise ConfigError(f"no test-split queries among {len(queries)}; check the grid preset's split settings")
    (size_px, fov_scaling), db_fov = flow.net_input(preset), float(preset.render.fov_deg)
    qset = flow.make_queryset(queries, test, reg.crs_wkt, size_px, db_fov, fov_scaling=fov_scaling)
    pool = flow.make_pool([dbs["uniform"]], paths.modality, "test", reg.crs_wkt, size_px=size_px)
    dev = resolve_device(device or getattr(preset.train, "device", "auto"))
    seed_everything(int(preset.train.seed))
    bs = int(getattr(preset.eval, "batch_size", 32))
    q_fov = np.array([q.pose.fov_deg for q in qset.dataset.queries], np.float64)
    k = min(max(NS), len(pool))

    t0 = time.perf_counter()
    untrained = build_net(preset.net).to(dev)
    init = getattr(untrained, "init_source", None)
    key = "untrained-" + hashlib.sha256(json.dumps(_cfg_dict(preset.net), sort_keys=True).encode()).hexdigest()
    desc_dir = paths.run / DESCRIPTORS_DIR
    u_db = cached_descriptors(untrained, pool, dev, desc_dir, "db", key, batch_size=bs)
    u_q = cached_descriptors(untrained, qset.dataset, dev, desc_dir, "queries", key, batch_size=bs)
    net = build_net(preset.net).to(dev)
    state = checkpoint.load_checkpoint(ckpt, net, optimizer=None, map_location=dev)
    ckey = file_sha256(ckpt)
    db_desc = cached_descriptors(net, pool, dev, desc_dir, "db", ckey, batch_size=bs)
    q_desc = cached_descriptors(net, qset.dataset, dev, desc_dir, "queries", ckey, batch_size=bs)
    timings["descriptors_s"] = round(time.perf_counter() - t0, 2)

    t0 = time.perf_counter()
    idx = _ranking(db_desc, q_desc, k)
    timings["search_s"] = round(time.perf_counter() - t0, 4)
    spots = spot_ids(qset.dataset.queries)
    ours = evaluate_ranking(idx, qset.xy, qset.yaw_deg, q_fov, pool.xy, pool.yaw_deg, spots)
    untrained_eval = evaluate_ranking(_ranking(u_db, u_q, k), qset.xy, qset.yaw_deg, q_fov, pool.xy, pool.yaw_deg)
    chance = _table(evaluate.chance_recall(qset.xy, pool.xy, THRESHOLDS_M, tuple(n for n in NS if n <= k)))
    t0 = time.perf_counter()
    baselines = {"untrained": untrained_eval["recall"]}
    try:
        h_idx, h_info = horizon_ranking(qset, pool, k, db_fov, preset.eval)
        baselines["horizon"] = evaluate_ranking(h_idx, qset.xy, qset.yaw_deg, q_fov, pool.xy, pool.yaw_deg)["recall"]
    except ShardCorruptError as exc:  # e.g. a database rendered without the depth modality
        logger.warning("horizon baseline skipped: %s", exc)
        h_info = {"skipped": str(exc)}
    timings["horizon_s"] = round(time.perf_counter() - t0, 2)
    results: dict[str, Any] = {
        **ours,
        "chance": chance,
        "baselines": baselines,
        "baseline_info": {"untrained": {"init": init}, "horizon": h_info},
        "n_queries": len(qset.dataset),
        "n_spots": int(spots.max()) + 1 if spots.size else 0,
        "n_database": len(pool),
        "modality": paths.modality,
        "input_encoding": INPUT_ENCODING,
        "preset": preset_name,
        "region": paths.region,
        "checkpoint": {
            "path": str(ckpt),
            "sha256": file_sha256(ckpt),
            "epoch": int(state.get("epoch", -1)) if isinstance(state, dict) else None,
        },
        "config": {name: _cfg_dict(getattr(preset, name)) for name in ("grid", "render", "net", "train", "eval")},
        "init": init,
        "device": str(dev),
        "oriented_max_yaw_deg": ORIENTED_MAX_YAW_DEG,
        "paper": {
            "note": "CrossLocate paper, Switzerland uniform test DB: a different query set and database",
            "recall@1_1km": PAPER_R1_1KM,
            "recall@100_1km": PAPER_R100_1KM,
        },
    }
    results["plots"] = _plots(results, qset, pool, idx, paths.run, spots)
    results["rankings"] = save_rankings(paths.run / RANKINGS_NAME, qset, pool, idx, spots).name
    results["environment"] = environment_info()
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    results["timings"] = timings
    out = paths.run / "results.json"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    os.replace(tmp, out)
    summary = {"results": str(out), "table": summary_table(results)}
    from crosslocate.pipelines.report import write_report

    summary["report"] = str(write_report(paths.run))
    return summary


#: Per-query rankings of a benchmark run, for ``crosslocate report`` (see :func:`save_rankings`).
RANKINGS_NAME = "rankings.npz"


def save_rankings(path: Path, qset: Any, pool: Any, idx: npt.NDArray[np.int64], spots: npt.NDArray[np.int64]) -> Path:
    """Write the network's ranking with what is needed to show it (``np.savez``, no pickle; atomic).

    Arrays: ``ranking`` (Q, K) int64 pool indices, best first; ``distance_m`` (Q, K) float64 metres
    to the query; ``query_image`` (Q,) str; ``query_xy`` (Q, 2) and ``db_xy`` (N, 2) metres in
    the region's CRS; ``query_yaw_deg`` (Q,), ``query_fov_deg`` (Q,), ``spot`` (Q,) int64;
    ``db_yaw_deg`` (N,); ``db_dirs`` (D,) str database folders (absolute); ``db_part`` (N,) int64 index into
    ``db_dirs``; ``db_index`` (N,) int64 view index in that database; ``modality`` () str.
    """
    from crosslocate.datasets.atomic import atomic_path

    parts = np.concatenate([np.full(len(d), k, np.int64) for k, d in enumerate(pool.datasets)])
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            ranking=idx.astype(np.int64),
            distance_m=np.linalg.norm(pool.xy[idx] - qset.xy[:, None, :], axis=2),
            query_image=np.array([q.image for q in qset.dataset.queries], dtype=str),
            query_xy=qset.xy,
            query_yaw_deg=qset.yaw_deg,
            query_fov_deg=np.array([q.pose.fov_deg for q in qset.dataset.queries], np.float64),
            spot=spots,
            db_xy=pool.xy,
            db_yaw_deg=pool.yaw_deg,
            db_dirs=np.array([str(Path(d.db_dir).resolve()) for d in pool.datasets], dtype=str),
            db_part=parts,
            db_index=np.concatenate([np.asarray(d.indices, np.int64) for d in pool.datasets]),
            modality=np.array(pool.datasets[0].modality.value),
        )
    return path


def _yaw_spacing_deg(yaw_deg: npt.NDArray[np.float64]) -> float:
    """Smallest gap between the distinct database yaws on the circle (360 for a single yaw)."""
    u = np.unique(np.round(np.asarray(yaw_deg, np.float64) % 360.0, 3))
    return float(np.diff(np.append(u, u[0] + 360.0)).min()) if len(u) > 1 else 360.0


def horizon_ranking(
    qset: Any, pool: Any, k: int, db_fov_deg: float, eval_cfg: Any
) -> tuple[npt.NDArray[np.int64], dict[str, Any]]:
    """(Q, k) database indices ranked by the HLoc-style horizon baseline, and its settings.

    Database curves come from the views' depth (:func:`crosslocate.datasets.derived.horizon_line`,
    read view by view whatever modality the network uses); query curves from the original photos
    (:func:`crosslocate.model.baselines.photo_horizon_rows`), with the query's FOV and its known
    gravity (pose pitch/roll, as a phone's IMU gives; yaw and position stay unknown). The shift
    search covers ``max(EvalConfig.horizon_max_shift_deg, half the database yaw spacing)`` so every
    query can align with the nearest database yaw.
    """
    from crosslocate.datasets.derived import horizon_line
    from crosslocate.datasets.views import ViewDataset, load_rgb
    from crosslocate.model.baselines import horizon_baseline, photo_horizon_rows

    db_rows, pitch, roll, height = [], [], [], None
    for ds in pool.datasets:
        depth_ds = ds if ds.modality.value == "depth" else ViewDataset(ds.db_dir, "depth", indices=ds.indices)
        for i in range(len(depth_ds)):
            d = depth_ds.read_raw(i)
            height = d.shape[-2]
            db_rows.append(horizon_line(d))
        pitch.append(np.asarray(ds.table["pitch_deg"], np.float64))
        roll.append(np.asarray(ds.table["roll_deg"], np.float64))
    poses = [q.pose for q in qset.dataset.queries]
    q_rows, q_height = [], []
    for q in qset.dataset.queries:
        photo = load_rgb(q.image)
        q_rows.append(photo_horizon_rows(photo))
        q_height.append(photo.shape[0])
    step = float(getattr(eval_cfg, "horizon_grid_step_deg", 0.5))
    cfg_shift = float(getattr(eval_cfg, "horizon_max_shift_deg", 5.0))
    shift = max(cfg_shift, 0.5 * _yaw_spacing_deg(pool.yaw_deg))
    res = horizon_baseline(
        q_rows,
        np.array([p.fov_deg for p in poses]),
        np.array(q_height),
        k,
        db_rows=np.stack(db_rows),
        db_fov_deg=db_fov_deg,
        db_height_px=height,
        step_deg=step,
        max_shift_deg=shift,
        q_pitch_deg=np.array([p.pitch_deg for p in poses]),
        q_roll_deg=np.array([p.roll_deg for p in poses]),
        db_pitch_deg=np.concatenate(pitch),
        db_roll_deg=np.concatenate(roll),
    )
    info = {**res.info, "config_max_shift_deg": cfg_shift, "gravity": "query pose pitch/roll (IMU-like)"}
    logger.info("horizon baseline: %s", info)
    return res.indices, info


def _view_rgb(pool: Any, j: int) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 preview of pool view ``j`` in the network's modality."""
    from crosslocate.datasets.derived import view_to_rgb

    ds, i = pool.locate(int(j))
    return view_to_rgb(ds.modality.value, ds.read_raw(i))


def _cfg_dict(cfg: Any) -> Any:
    to_dict = getattr(cfg, "to_dict", None)
    return to_dict() if callable(to_dict) else repr(cfg)


def _plots(
    results: dict[str, Any], qset: Any, pool: Any, idx: npt.NDArray[np.int64], run: Path, spots: npt.NDArray[np.int64]
) -> list[str]:
    """Recall curves, recall vs distance, and the map / mosaic of a few queries (one per spot, so
    the photos of one spot do not fill them)."""
    from crosslocate.model import plots

    shown = np.sort(np.unique(spots, return_index=True)[1])

    out = [
        plots.plot_recall_curves(
            results["recall"],
            run / "recall_curves.png",
            chance=results["chance"],
            baselines=results["baselines"],
            title=f"{results['region']} / {results['modality']}",
        ),
    ]
    sel, k_show = shown[:8], min(10, idx.shape[1])
    out.append(
        plots.plot_retrieval_map(
            qset.xy[sel], pool.xy[idx[sel, :k_show]], run / "retrieval_map.png", database_xy=pool.xy
        )
    )
    d = np.linalg.norm(pool.xy[idx] - qset.xy[:, None, :], axis=2)
    thr = np.geomspace(10, 20_000, 30)
    curves = {n: [(d[:, :n] <= t).any(axis=1).mean() for t in thr] for n in (1, 10, 100) if n <= idx.shape[1]}
    out.append(plots.plot_recall_vs_distance(thr, curves, run / "recall_vs_distance.png"))
    from crosslocate.dem.poses import yaw_difference_deg

    sel, k_mos = shown[:4], min(5, idx.shape[1])
    dyaw = yaw_difference_deg(pool.yaw_deg[idx[sel, :k_mos]], qset.yaw_deg[sel, None])
    out.append(
        plots.plot_retrieval_mosaic(
            [qset.dataset.image(int(i)) for i in sel],
            [[_view_rgb(pool, j) for j in idx[i, :k_mos]] for i in sel],
            run / "retrieval_mosaic.png",
            labels=[
                [f"{d[i, j] / 1000:.2f} km, {dyaw[r, j]:.0f} deg" for j in range(k_mos)] for r, i in enumerate(sel)
            ],
        )
    )
    return [str(p) for p in out]


def summary_table(results: dict[str, Any]) -> str:
    """Text table: R@1 / R@100 within 1 km for ours, chance, baselines, ratio to chance, and the paper."""
    key = f"{1000.0:g}"

    def get(table: dict[str, Any], n: int) -> float:
        row = table.get(key, {})
        return float(row.get(str(n), row.get(str(max(int(k) for k in row)), float("nan")))) if row else float("nan")

    lines = [f"{'':34s} {'R@1 1km':>9s} {'R@100 1km':>10s}"]
    ours1, ours100 = get(results["recall"], 1), get(results["recall"], 100)
    ch1, ch100 = get(results["chance"], 1), get(results["chance"], 100)
    lines.append(f"{'ours (' + results['modality'] + ')':34s} {100 * ours1:8.2f}% {100 * ours100:9.2f}%")
    for name, table in results["baselines"].items():
        lines.append(f"{name:34s} {100 * get(table, 1):8.2f}% {100 * get(table, 100):9.2f}%")
    lines.append(f"{'chance (analytic)':34s} {100 * ch1:8.2f}% {100 * ch100:9.2f}%")
    r1 = ours1 / ch1 if ch1 > 0 else float("inf")
    r100 = ours100 / ch100 if ch100 > 0 else float("inf")
    lines.append(f"{'ours / chance':34s} {r1:8.1f}x {r100:9.1f}x")
    ci = results.get("recall_ci95", {}).get(key, {})
    if "1" in ci:  # R@100, or the largest N when the database is smaller
        (a1, b1), (a100, b100) = ci["1"], ci[str(max(int(n) for n in ci))]
        lines.append(
            f"{'ours 95% interval (spots resampled)':34s} {100 * a1:.1f}-{100 * b1:.1f}% {100 * a100:.1f}-{100 * b100:.1f}%"
        )
    lines.append(f"{'paper (Switzerland, other queries)':34s} {100 * PAPER_R1_1KM:8.2f}% {100 * PAPER_R100_1KM:9.2f}%")
    lines.append(
        f"queries: {results['n_queries']} ({results.get('n_spots', '?')} spots), "
        f"database views: {results['n_database']}, preset: {results['preset']}"
    )
    return "\n".join(lines)


__all__ = [
    "NS",
    "THRESHOLDS_M",
    "evaluate_ranking",
    "horizon_ranking",
    "recall_ci95",
    "run_benchmark",
    "save_rankings",
    "spot_ids",
    "summary_table",
]
