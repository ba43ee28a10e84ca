"""``crosslocate benchmark``: train if needed, then evaluate test queries against the test area's views (``heldout`` DB).

The flow only ensures its inputs, calls the model library and writes; every number comes from
:func:`crosslocate.model.evaluate.evaluate_retrieval` under the preset's
:class:`~crosslocate.model.config.EvalConfig` (thresholds, N = 1..``max_n``, orientation limit,
FOV bins; the search index of :func:`crosslocate.model.search.search_with_config`).

1. :func:`prepare_benchmark`: the training flow (:func:`crosslocate.pipelines.train.run_train`)
   when the run has no checkpoint; the query set (synthetic, or the user's ``--queries`` CSV); the
   ``heldout`` database (the uniform grid's held-out splits); the checkpoint to score (``best.pt`` else ``checkpoint.pt``), refused
   when its run did not finish, was trained on another query set or is another run's
   (:func:`crosslocate.model.checkpoint.check_run_record`).
2. :func:`benchmark_results`: descriptors of the test-split queries and the test-split
   views (batched, cached under ``<run>/descriptors/`` keyed by content: weights, database,
   photos, input settings, encoding; :mod:`crosslocate.pipelines.descriptors`), the search, and the recall tables of the network (with spot-resampled intervals and
   the analytic chance, plain and orientation-restricted) and of the baselines: the untrained
   network (same architecture and init) and the HLoc-style horizon line, once with the photos' true
   pitch/roll and once with pitch/roll searched (:func:`crosslocate.pipelines.refine.horizon_rankings`); then the network's top K
   re-ranked by skyline agreement and its places voted (:func:`crosslocate.pipelines.refine.refine_ranking`,
   ``refined``; the skylines are read once for both), together with the hybrid that adds the
   searched horizon baseline's top K to the candidates (``refined.hybrid``). Which of these
   pipelines is reported as the best is decided on the validation split
   (:func:`_validation_choice`: the same steps on the val queries against the val views, at every
   re-ranking setting (view or position panorama, fusion weight) of ``RerankConfig``'s grids,
   :func:`crosslocate.pipelines.refine.choose_pipeline_and_setting`), before the test split is
   re-ranked, at the chosen setting; ``pipeline_selection`` records the
   validation tables and the choice, ``best_pipeline`` the chosen pipeline's test table. Without
   val queries or views nothing is chosen (``pipeline_selection.skipped`` says why, and there is
   no ``best_pipeline``); without skylines only the network is a candidate. Returns the
   ``results.json`` content.
3. :func:`run_benchmark`: plots (recall curves, recall vs distance, retrieval map, query-vs-retrieved
   mosaic), the network's and the horizon baselines' per-query rankings (``rankings.npz``,
   :func:`crosslocate.pipelines.rankings.save_rankings`),
   ``<run>/results.json`` (``baselines`` / ``baselines_oriented`` hold one table per baseline,
   laid out like ``recall``), the HTML report (``crosslocate report``) and a summary table vs the paper.
   When the test split was already scored under the same key, ``results.json`` is kept and only the
   report is written again from it, if missing or older (:func:`_kept_report`).

The searched database is the ``heldout`` kind (:func:`crosslocate.dem.grid.heldout_grid`): the
uniform grid's test split (and the val split validation uses), all of it (``paper``: the whole test
area, as in CrossLocate) or, with ``EvalConfig.database_radius_m`` (``cpu``), the positions within
that distance of a test photo; results.json's ``database`` says which, with its size.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError, ShardCorruptError
from crosslocate.fileio import config_to_dict, file_sha256, write_json_atomic, write_text_atomic
from crosslocate.model.config import EvalConfig
from crosslocate.pipelines.benchinfo import environment_info
from crosslocate.pipelines.context import RunContext

if TYPE_CHECKING:
    from crosslocate.pipelines.presets import Preset

logger = logging.getLogger(__name__)

#: Key of the trained network's ranking among :func:`benchmark_results`' rankings.
NETWORK = "network"
#: The paper's numbers (CrossLocate, WACV 2022, Switzerland uniform test database, 1 km).
PAPER_R1_1KM: float = 0.3866
PAPER_R100_1KM: float = 0.7262


def spot_ids(queries: list[Any]) -> npt.NDArray[np.int64]:
    """(Q,) int64 id of each query's camera position (photos taken from one spot share an id)."""
    keys = np.array([q.pose.spot for q in queries], np.float64).reshape(-1, 3)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


@dataclass(frozen=True, kw_only=True, slots=True)
class BenchmarkInputs:
    """What an evaluation reads, resolved and checked once (:func:`prepare_benchmark`).

    Attributes
    ----------
    preset : Preset
        Its ``eval`` (:class:`~crosslocate.model.config.EvalConfig`) is in force throughout.
    ctx : RunContext
        Region, DEM, modality and folders of the run.
    qset : QuerySet
        The test-split queries (true positions in the region's LAEA frame, metres).
    pool : ViewPool
        The test-split views of the heldout database (same frame).
    checkpoint : Path
        The evaluated weights: ``best.pt`` when the run has one, else ``checkpoint.pt``.
    query_set : dict
        :func:`crosslocate.pipelines.train.query_set_record` of the whole query set.
    device : torch.device
    val_qset, val_pool : QuerySet, ViewPool or None
        The validation split's queries and heldout views (None without validation queries): the
        pipeline (network, re-ranking, hybrid candidates, voting) is chosen on them
        (:func:`crosslocate.pipelines.refine.choose_pipeline`), never on the test split.
    training_photos : dict or None
        :func:`crosslocate.pipelines.train.training_photos_record` of the training-only photos, if any.
    workers : int
        DataLoader worker processes of descriptor extraction (0: the main process reads).
    """

    ctx: RunContext
    preset: Preset
    qset: Any
    pool: Any
    checkpoint: Path
    query_set: dict[str, Any]
    device: Any
    val_qset: Any = None
    val_pool: Any = None
    training_photos: dict[str, Any] | None = None
    workers: int = 0

    @property
    def eval(self) -> Any:
        """The EvalConfig in force."""
        return self.preset.eval

    @property
    def k(self) -> int:
        """Retrieved views per query: ``min(EvalConfig.max_n, database size)``."""
        return min(int(self.eval.max_n), len(self.pool))


def prepare_benchmark(
    ctx: RunContext,
    *,
    device: str | None = None,
    timings: dict[str, float] | None = None,
    workers: int | None = None,
) -> BenchmarkInputs:
    """Train when the run has no checkpoint, ensure the heldout database, and choose the checkpoint
    to evaluate; a checkpoint of an unfinished run, of another query set or of another run is
    refused (:func:`crosslocate.model.checkpoint.check_run_record`). The query set is resolved once
    and shared with training (:func:`crosslocate.pipelines.train.flow_inputs`). ``workers``: DataLoader
    worker processes of training and descriptor extraction (None: ``TrainConfig.num_workers``)."""
    from crosslocate.model.device import resolve_device
    from crosslocate.model.train import CHECKPOINT_NAME
    from crosslocate.pipelines import train as flow

    t0 = time.perf_counter()
    preset = ctx.preset
    if not isinstance(preset.eval, EvalConfig):
        raise ConfigError(f"preset {preset.name!r} has no EvalConfig ({preset.eval!r}); the benchmark needs one")
    inputs = flow.flow_inputs(ctx)
    if not inputs.mask("test").any():
        raise ConfigError(f"no test-split queries among {len(inputs.queries)}; check the grid preset's split settings")
    ckpt = ctx.run / CHECKPOINT_NAME
    if not ckpt.exists():
        logger.info("no checkpoint at %s: training first", ckpt)
        flow.run_train(ctx, device=device, inputs=inputs, workers=workers)
        if timings is not None:
            timings["train_s"] = round(time.perf_counter() - t0, 2)
    ckpt = checkpoint_to_evaluate(ctx.run, inputs.record["id"])
    dbs = flow.ensure_databases(("heldout",), ctx, inputs.queries)
    crs = ctx.region.crs_wkt
    (size_px, fov_scaling), db_fov = flow.net_input(preset), float(preset.render.fov_deg)
    qset = flow.make_queryset(inputs.queries, inputs.mask("test"), crs, size_px, db_fov, fov_scaling=fov_scaling)
    pool = flow.make_pool([dbs["heldout"]], ctx.modality, "test", crs, size_px=size_px)
    val_qset = val_pool = None
    if inputs.mask("val").any():
        try:
            val_pool = flow.make_pool([dbs["heldout"]], ctx.modality, "val", crs, size_px=size_px)
            val_qset = flow.make_queryset(
                inputs.queries, inputs.mask("val"), crs, size_px, db_fov, fov_scaling=fov_scaling
            )
        except ConfigError as exc:  # e.g. no val-split views: the pipeline is then not chosen
            logger.warning("no validation split to choose the pipeline on: %s", exc)
            val_qset = val_pool = None
    dev = resolve_device(device or getattr(preset.train, "device", "auto"))
    return BenchmarkInputs(
        ctx=ctx,
        preset=preset,
        qset=qset,
        pool=pool,
        checkpoint=ckpt,
        query_set=inputs.record,
        device=dev,
        val_qset=val_qset,
        val_pool=val_pool,
        training_photos=inputs.extra_record,
        workers=int(preset.train.num_workers if workers is None else workers),
    )


def checkpoint_to_evaluate(run: Path, query_set_id: str) -> Path:
    """``best.pt`` of the run folder (chosen on validation, :data:`crosslocate.model.train.BEST_NAME`)
    when present, else ``checkpoint.pt``; :class:`~crosslocate.errors.CheckpointError` when the run
    did not finish, was trained on another query set, or ``best.pt`` is another run's."""
    from crosslocate.model import checkpoint
    from crosslocate.model.train import BEST_NAME, CHECKPOINT_NAME

    last = run / CHECKPOINT_NAME
    meta = checkpoint.read_checkpoint(last)["meta"]
    checkpoint.check_run_record(last, meta, query_set_id=query_set_id)
    best = run / BEST_NAME
    if not best.exists():
        return last
    best_meta = checkpoint.read_checkpoint(best)["meta"]
    checkpoint.check_run_record(best, best_meta, query_set_id=query_set_id, finished=False, run_id=meta["run_id"])
    logger.info("evaluating %s (best validation epoch) rather than the last epoch", best)
    return best


def _descriptors(
    inp: BenchmarkInputs, net: Any, network: str
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(database (N, D), queries (M, D)) descriptors of ``net`` (identity ``network``), cached under
    ``<run>/descriptors`` by content (:func:`crosslocate.pipelines.descriptors.cached_descriptors`)."""
    from crosslocate.pipelines.descriptors import DESCRIPTORS_DIR, cached_descriptors

    desc_dir, bs = inp.ctx.run / DESCRIPTORS_DIR, int(inp.eval.batch_size)
    kw = {"batch_size": bs, "num_workers": inp.workers}
    db = cached_descriptors(net, inp.pool, inp.device, desc_dir, "db", network, **kw)
    return db, cached_descriptors(net, inp.qset.dataset, inp.device, desc_dir, "queries", network, **kw)


@dataclass(frozen=True, slots=True)
class _Network:
    """The evaluated network's and its untrained twin's outputs on the test inputs."""

    idx: npt.NDArray[np.int64]  # (Q, k) pool rows per query, best first
    untrained_idx: npt.NDArray[np.int64]
    q_desc: npt.NDArray[np.float32]  # (Q, D)
    db_desc: npt.NDArray[np.float32]  # (N, D)
    init: Any  # the untrained network's init_source
    epoch: int | None
    checkpoint_sha256: str
    net: Any  # the evaluated network (on the device), for the validation split's descriptors


def _network_rankings(inp: BenchmarkInputs, timings: dict[str, float]) -> _Network:
    """Descriptors (cached by content) and the search, for the checkpoint and the untrained network."""
    from crosslocate.model import checkpoint, search
    from crosslocate.model.device import seed_everything
    from crosslocate.model.net import build_net

    preset, k = inp.preset, inp.k
    seed_everything(int(preset.train.seed))
    t0 = time.perf_counter()
    untrained = build_net(preset.net).to(inp.device)
    u_db, u_q = _descriptors(inp, untrained, "untrained-" + _digest(config_to_dict(preset.net)))
    net = build_net(preset.net).to(inp.device)
    state = checkpoint.load_checkpoint(inp.checkpoint, net, optimizer=None, map_location=inp.device)
    ckpt_sha = file_sha256(inp.checkpoint)
    db_desc, q_desc = _descriptors(inp, net, ckpt_sha)
    timings["descriptors_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    idx = search.ranking(db_desc, q_desc, k, inp.eval)
    timings["search_s"] = round(time.perf_counter() - t0, 4)
    return _Network(
        idx=idx,
        untrained_idx=search.ranking(u_db, u_q, k, inp.eval),
        q_desc=q_desc,
        db_desc=db_desc,
        init=getattr(untrained, "init_source", None),
        epoch=int(state.get("epoch", -1)) if isinstance(state, dict) else None,
        checkpoint_sha256=ckpt_sha,
        net=net,
    )


def _skyline_methods(
    inp: BenchmarkInputs,
    nw: _Network,
    geometry: tuple[Any, ...],
    spots: npt.NDArray[np.int64],
    timings: dict[str, float],
    choice: dict[str, Any] | None = None,
) -> tuple[dict[str, npt.NDArray[np.int64]], dict[str, Any], dict[str, Any], dict[str, npt.NDArray[np.float64]]]:
    """(horizon baseline rankings, their info, the ``refined`` block: the network's top K re-ranked by
    skyline agreement at the re-ranking setting (``weight``, ``panorama``) the validation split
    chose (``choice``; missing or None: the ``RerankConfig`` defaults) and its places voted, and
    each refined pipeline's (Q, K) metres to what it ranks, :func:`crosslocate.pipelines.refine.refine_ranking`'s
    ``distances_out``); the skylines are read once for both."""
    from crosslocate.model.config import RerankConfig
    from crosslocate.pipelines.refine import horizon_rankings, load_skylines, refine_ranking

    cfg, db_fov = inp.eval, float(inp.preset.render.fov_deg)
    rankings: dict[str, npt.NDArray[np.int64]] = {}
    info: dict[str, Any] = {}
    t0 = time.perf_counter()
    sky = None
    try:
        sky = load_skylines(inp.qset, inp.pool)
        for name, (h_idx, h_info) in horizon_rankings(
            inp.qset, inp.pool, inp.k, db_fov, cfg, sky, cache_dir=inp.ctx.baselines_dir
        ).items():
            rankings[name], info[name] = h_idx, h_info
    except ShardCorruptError as exc:  # e.g. a database rendered without the depth modality
        logger.warning("horizon baselines skipped: %s", exc)
        info["horizon"] = {"skipped": str(exc)}
    timings["horizon_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    refined: dict[str, Any] = {"skipped": "no skylines (database without depth)"}
    distances: dict[str, npt.NDArray[np.float64]] = {}
    if sky is not None:
        extra = {HYBRID_WITH: rankings[HYBRID_WITH]} if HYBRID_WITH in rankings else None
        chosen = {k: v for k, v in (choice or {}).items() if k in ("weight", "panorama") and v is not None}
        rcfg = RerankConfig(**chosen)
        refined = refine_ranking(
            nw.idx,
            nw.q_desc,
            nw.db_desc,
            *geometry,
            sky,
            db_fov,
            cfg,
            spots=spots,
            extra_candidates=extra,
            rerank_cfg=rcfg,
            distances_out=distances,
        )
    timings["refine_s"] = round(time.perf_counter() - t0, 2)
    return rankings, info, refined, distances


#: The horizon search whose top K joins the network's in the hybrid candidate set.
HYBRID_WITH = "horizon_searched"


def _validation_choice(inp: BenchmarkInputs, nw: _Network, timings: dict[str, float]) -> dict[str, Any]:
    """The pipeline and re-ranking setting chosen on the validation split: the network's ranking of the
    val queries against the val views, re-ranked at every ``RerankConfig.panorama_grid`` x
    ``weight_grid`` setting, hybrid and voted exactly as on the test split, scored, and picked by
    :func:`crosslocate.pipelines.refine.choose_pipeline_and_setting`. ``{"skipped": why}`` without a val split."""
    from crosslocate.model import evaluate, search
    from crosslocate.pipelines.descriptors import DESCRIPTORS_DIR, cached_descriptors
    from crosslocate.pipelines.refine import (
        choose_pipeline_and_setting,
        horizon_rankings,
        load_skylines,
        settings_sweep,
    )

    qset, pool, cfg = inp.val_qset, inp.val_pool, inp.eval
    if qset is None or pool is None:
        return {"skipped": "no validation queries or views"}
    t0 = time.perf_counter()
    desc_dir, bs = inp.ctx.run / DESCRIPTORS_DIR, int(cfg.batch_size)
    kw = {"batch_size": bs, "num_workers": inp.workers}
    db_desc = cached_descriptors(nw.net, pool, inp.device, desc_dir, "val-db", nw.checkpoint_sha256, **kw)
    q_desc = cached_descriptors(nw.net, qset.dataset, inp.device, desc_dir, "val-queries", nw.checkpoint_sha256, **kw)
    k, db_fov = min(int(cfg.max_n), len(pool)), float(inp.preset.render.fov_deg)
    idx = search.ranking(db_desc, q_desc, k, cfg)
    q_fov = np.array([q.pose.fov_deg for q in qset.dataset.queries], np.float64)
    geometry = (qset.xy, qset.yaw_deg, q_fov, pool.xy, pool.yaw_deg)
    recall = evaluate.evaluate_retrieval(idx, *geometry, cfg, chance=False)["recall"]
    refined_by_setting: dict[tuple[bool, float], dict[str, Any]] = {}
    try:
        sky = load_skylines(qset, pool)
        searched = horizon_rankings(
            qset, pool, k, db_fov, cfg, sky, methods=(HYBRID_WITH,), cache_dir=inp.ctx.baselines_dir
        )[HYBRID_WITH][0]
        refined_by_setting = settings_sweep(
            idx, q_desc, db_desc, *geometry, sky, db_fov, cfg, extra_candidates={HYBRID_WITH: searched}
        )
    except ShardCorruptError as exc:  # a database without depth: the network alone
        logger.warning("validation: no skylines, only the network is a candidate pipeline: %s", exc)
    choice = choose_pipeline_and_setting(recall, refined_by_setting)
    choice.update(split="val", n_queries=len(qset.dataset), n_database=len(pool))
    dist = evaluate.retrieved_distances(idx, qset.xy, pool.xy)
    choice["network_confusers"] = evaluate.confuser_profile(dist, qset.xy, pool.xy)
    timings["validation_choice_s"] = round(time.perf_counter() - t0, 2)
    logger.info(
        "chosen on the validation split: %s, re-ranking %s, weight %s (%s)",
        choice["chosen"],
        "panorama" if choice["panorama"] else "view",
        choice["weight"],
        choice["scores"],
    )
    return choice


def _run_record(inp: BenchmarkInputs, nw: _Network) -> dict[str, Any]:
    """What was evaluated, on what and how (the non-recall part of ``results.json``)."""
    from crosslocate.datasets.transforms import INPUT_ENCODING
    from crosslocate.dem.splits import shared_terrain

    preset = inp.preset
    return {
        "n_queries": len(inp.qset.dataset),
        "n_database": len(inp.pool),
        "database": {
            "kind": "heldout",
            "split": "test",
            "radius_m": preset.eval.database_radius_m,
            "n_views": len(inp.pool),
            "what": (
                "every test-split position of the uniform grid"
                if preset.eval.database_radius_m is None
                else f"the uniform grid's test-split positions within {preset.eval.database_radius_m:g} m of a test photo"
            ),
        },
        "query_set": inp.query_set,
        "training_photos": inp.training_photos,
        "shared_terrain": shared_terrain(inp.ctx.region, preset.grid, float(preset.render.range_m)),
        "modality": inp.ctx.modality,
        "input_encoding": INPUT_ENCODING,
        "preset": preset.name,
        "region": inp.ctx.region.name,
        "checkpoint": {"path": str(inp.checkpoint), "sha256": nw.checkpoint_sha256, "epoch": nw.epoch},
        "config": {name: config_to_dict(getattr(preset, name)) for name in ("grid", "render", "net", "train", "eval")},
        "init": nw.init,
        "device": str(inp.device),
        "oriented_max_yaw_deg": float(inp.eval.orient_max_yaw_deg),
        "paper": {
            "note": "CrossLocate paper, Switzerland uniform test DB: a different query set and database",
            "recall@1_1km": PAPER_R1_1KM,
            "recall@100_1km": PAPER_R100_1KM,
        },
    }


def benchmark_results(
    inp: BenchmarkInputs, timings: dict[str, float]
) -> tuple[dict[str, Any], dict[str, npt.NDArray[np.int64]], dict[str, npt.NDArray[np.float64]]]:
    """Descriptors, search and every recall table of the network and the baselines, all through
    :func:`crosslocate.model.evaluate.evaluate_retrieval` with the preset's EvalConfig.

    Returns the ``results.json`` content (plots and total time not yet added), the (Q, k)
    rankings of pool rows, best first, per method: :data:`NETWORK` and each baseline's name, and
    the refined pipelines' (Q, K) metres to what they rank (by ``refine.PIPELINES`` name; empty
    without skylines).
    """
    from crosslocate.model import evaluate
    from crosslocate.pipelines.refine import pipeline_table

    cfg, qset, pool = inp.eval, inp.qset, inp.pool
    nw = _network_rankings(inp, timings)
    spots = spot_ids(qset.dataset.queries)
    q_fov = np.array([q.pose.fov_deg for q in qset.dataset.queries], np.float64)
    geometry = (qset.xy, qset.yaw_deg, q_fov, pool.xy, pool.yaw_deg)
    ours = evaluate.evaluate_retrieval(nw.idx, *geometry, cfg, groups=spots)
    choice = _validation_choice(inp, nw, timings)  # before the test split is re-ranked: it sets how
    sky_rankings, sky_info, refined, pipeline_dist = _skyline_methods(inp, nw, geometry, spots, timings, choice)
    rankings = {NETWORK: nw.idx, "untrained": nw.untrained_idx, **sky_rankings}
    baselines = {
        name: evaluate.evaluate_retrieval(r, *geometry, cfg, chance=False)
        for name, r in rankings.items()
        if name != NETWORK
    }
    results: dict[str, Any] = {
        **ours,
        "baselines": {name: b["recall"] for name, b in baselines.items()},
        "baselines_oriented": {name: b["recall_oriented"] for name, b in baselines.items()},
        "baseline_info": {"untrained": {"init": nw.init}, **sky_info},
        "refined": refined,
        "n_spots": int(spots.max()) + 1 if spots.size else 0,
        **_run_record(inp, nw),
    }
    results["pipeline_selection"] = choice
    results["confusers"] = {
        name: evaluate.confuser_profile(
            evaluate.retrieved_distances(rankings[name], qset.xy, pool.xy), qset.xy, pool.xy
        )
        for name in (NETWORK, HYBRID_WITH)
        if name in rankings
    }
    if "chosen" in choice:
        results["best_pipeline"] = {"name": choice["chosen"], "recall": pipeline_table(results, choice["chosen"])}
    return results, rankings, pipeline_dist


def run_benchmark(ctx: RunContext, *, device: str | None = None, workers: int | None = None) -> dict[str, Any]:
    """Run the benchmark end to end; returns the summary (``results`` path included). See the module
    docstring. ``workers``: DataLoader worker processes (None: the preset's ``TrainConfig.num_workers``)."""
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    inp = prepare_benchmark(ctx, device=device, timings=timings, workers=workers)
    run = inp.ctx.run
    key = evaluation_key(inp)
    out = run / "results.json"
    previous = _previous_results(out)
    if previous is not None and previous.get("evaluation_key") == key:
        logger.info(
            "the test split was already scored with this checkpoint, query set, database and EvalConfig: "
            "%s is kept (the test split is evaluated once per configuration; see %s)",
            out,
            run / TEST_LOG_NAME,
        )
        from crosslocate.pipelines.rankings import RANKINGS_NAME, backfill_baseline_rankings

        backfill_baseline_rankings(inp, run / str(previous.get("rankings", RANKINGS_NAME)), previous)
        return {"results": str(out), "table": summary_table(previous), "report": str(_kept_report(run, out))}
    results, rankings, pipeline_dist = benchmark_results(inp, timings)
    results["evaluation_key"] = key
    results["test_evaluations"] = _log_test_evaluation(run, key, results)
    spots = spot_ids(inp.qset.dataset.queries)
    results["plots"] = _plots(results, inp.qset, inp.pool, rankings[NETWORK], run, spots)
    from crosslocate.pipelines.rankings import RANKINGS_NAME, baseline_rankings, save_rankings

    results["rankings"] = save_rankings(
        run / RANKINGS_NAME,
        inp.qset,
        inp.pool,
        rankings[NETWORK],
        spots,
        baselines=baseline_rankings(rankings),
        pipelines=pipeline_dist,
    ).name
    from crosslocate.model.device import cpu_threads

    # the CPU threads the descriptors were computed with: the timings' scale
    results["environment"] = {**environment_info(), "torch_threads": cpu_threads()}
    timings["total_s"] = round(time.perf_counter() - t_start, 2)
    results["timings"] = timings
    write_json_atomic(out, results, default=str, allow_nan=True)
    summary = {"results": str(out), "table": summary_table(results)}
    from crosslocate.pipelines.report import write_report

    summary["report"] = str(write_report(run))
    return summary


def _kept_report(run: Path, results_path: Path) -> Path:
    """The run's ``report.html`` for kept results: (re)written from the existing ``results.json`` and
    ``rankings.npz`` when missing or older than ``results.json`` (a run from before reports, a deleted
    file); the test split is not scored again."""
    from crosslocate.pipelines.report import REPORT_NAME, write_report

    report = run / REPORT_NAME
    if report.exists() and report.stat().st_mtime_ns >= results_path.stat().st_mtime_ns:
        return report
    logger.info("%s is missing or older than %s: writing it from the kept results", report, results_path.name)
    return write_report(run)


#: The run folder's record of every scoring of the test split (JSON lines: key, time, R@1 within 1 km).
TEST_LOG_NAME = "test_evaluations.jsonl"


def evaluation_key(inp: BenchmarkInputs) -> dict[str, Any]:
    """What a test-split score depends on: the evaluated weights (sha256), the query set, the test
    photos and views as the network gets them (database digests, modality, sizes:
    :func:`crosslocate.pipelines.descriptors.source_identity`) and the EvalConfig. ``run_benchmark``
    scores the test split once per key and keeps ``results.json`` when asked again."""
    from crosslocate.pipelines.descriptors import source_identity

    return {
        "checkpoint_sha256": file_sha256(inp.checkpoint),
        "query_set_id": inp.query_set["id"],
        "inputs": _digest({"views": source_identity(inp.pool), "queries": source_identity(inp.qset.dataset)}),
        "eval": config_to_dict(inp.eval),
        "pipelines": _pipelines_identity(),
    }


def _pipelines_identity() -> dict[str, Any]:
    """The reported pipelines as the key sees them: their names, what the hybrid adds, and the
    re-ranking / voting settings. A new pipeline is a new configuration, scored once on test."""
    from crosslocate.model.config import RerankConfig, VoteConfig
    from crosslocate.pipelines.refine import PIPELINES, SELECTION_NS, SELECTION_THRESHOLD_M

    return {
        "names": list(PIPELINES),
        "hybrid_with": HYBRID_WITH,
        "selection": [SELECTION_THRESHOLD_M, list(SELECTION_NS)],
        "rerank": RerankConfig().to_dict(),
        "vote": VoteConfig().to_dict(),
    }


def _previous_results(path: Path) -> dict[str, Any] | None:
    """The run's ``results.json``, or None when absent or unreadable (then it is written anew)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _log_test_evaluation(run: Path, key: dict[str, Any], results: dict[str, Any]) -> int:
    """Append this scoring of the test split to ``<run>/test_evaluations.jsonl``; returns how many
    distinct configurations of this run have been scored on the test split (this one included)."""
    path = run / TEST_LOG_NAME
    lines = path.read_text().splitlines() if path.exists() else []
    r1 = results.get("recall", {}).get("1000", {}).get("1")
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "key": key, "recall@1_1km": r1}
    lines.append(json.dumps(entry, sort_keys=True, default=str))
    write_text_atomic(path, "\n".join(lines) + "\n")
    keys = {json.dumps(json.loads(line)["key"], sort_keys=True, default=str) for line in lines if line.strip()}
    return len(keys)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()


def _view_rgb(pool: Any, j: int) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 preview of pool view ``j`` in the network's modality."""
    from crosslocate.datasets.derived import view_to_rgb

    ds, i = pool.locate(int(j))
    return view_to_rgb(ds.modality.value, ds.read_raw(i))


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
            pipelines=(
                {f"best: {results['best_pipeline']['name']}": results["best_pipeline"]["recall"]}
                if results.get("best_pipeline", {}).get("recall")
                else None
            ),
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


#: Row labels of the summary table (other baselines are listed under their own names).
BASELINE_LABELS: dict[str, str] = {
    "untrained": "untrained network",
    "horizon": "horizon, true pitch/roll (IMU)",
    "horizon_searched": "horizon, pitch/roll searched",
}


def summary_table(results: dict[str, Any]) -> str:
    """Text table: R@1 / R@100 (the largest N when fewer views) within 1 km (else the largest
    threshold) for ours, the baselines and chance, plain and orientation-restricted, ratio to
    chance, the spot-resampled interval, and the paper."""
    key = "1000" if "1000" in results["recall"] else max(results["recall"], key=float)

    def get(table: dict[str, Any], n: int) -> float:
        row = table.get(key, {})
        return float(row.get(str(n), row.get(str(max(int(k) for k in row)), float("nan")))) if row else float("nan")

    def line(label: str, table: dict[str, Any]) -> str:
        return f"{label:36s} {100 * get(table, 1):8.2f}% {100 * get(table, 100):9.2f}%"

    km = f"{float(key) / 1000:g}km"
    lines = [
        f"{'':36s} {'R@1 ' + km:>9s} {'R@100 ' + km:>10s}",
        line(f"ours ({results['modality']})", results["recall"]),
    ]
    for name, table in results["baselines"].items():
        lines.append(line(BASELINE_LABELS.get(name, name), table))
    refined = results.get("refined", {})
    if "reranked" in refined:  # skyline re-ranking of the top K (views), then places with and without voting
        lines.append(line("ours + skyline re-ranking", refined["reranked"]["recall"]))
        for name in ("plain_views_as_places", "plain_voting", "reranked_voting"):
            lines.append(line("places: " + name.replace("_", " "), refined["place"][name]))
    if refined.get("hybrid"):  # the network's and the horizon search's top K, re-ranked together
        lines.append(line("hybrid candidates + re-ranking", refined["hybrid"]["reranked"]["recall"]))
        lines.append(line("places: hybrid re-ranked voting", refined["hybrid"]["place"]["reranked_voting"]))
    best = results.get("best_pipeline") or {}
    if best.get("recall"):
        lines.append(line("best pipeline, chosen on validation", best["recall"]))
        lines.append(f"  (validation chose: {best['name']})")
    lines.append(line("chance (analytic)", results["chance"]))
    ours1, ours100 = get(results["recall"], 1), get(results["recall"], 100)
    ch1, ch100 = get(results["chance"], 1), get(results["chance"], 100)
    r1 = ours1 / ch1 if ch1 > 0 else float("inf")
    r100 = ours100 / ch100 if ch100 > 0 else float("inf")
    lines.append(f"{'ours / chance':36s} {r1:8.1f}x {r100:9.1f}x")
    ci = results.get("recall_ci95", {}).get(key, {})
    if "1" in ci:  # R@100, or the largest N when the database is smaller
        (a1, b1), (a100, b100) = ci["1"], ci[str(max(int(n) for n in ci))]
        lines.append(
            f"{'ours 95% interval (spots resampled)':36s} {100 * a1:.1f}-{100 * b1:.1f}% {100 * a100:.1f}-{100 * b100:.1f}%"
        )
    yaw = f"{results.get('oriented_max_yaw_deg', 30.0):g} deg"
    if "recall_oriented" in results and "chance_oriented" in results:
        lines.append(f"orientation-restricted (also within {yaw} of yaw):")
        lines.append(line(f"  ours ({results['modality']})", results["recall_oriented"]))
        for name, table in results.get("baselines_oriented", {}).items():
            lines.append(line("  " + BASELINE_LABELS.get(name, name), table))
        if "reranked" in refined:
            lines.append(line("  ours + skyline re-ranking", refined["reranked"]["recall_oriented"]))
        lines.append(line("  chance (analytic)", results["chance_oriented"]))
    lines.append(f"{'paper (Switzerland, other queries)':36s} {100 * PAPER_R1_1KM:8.2f}% {100 * PAPER_R100_1KM:9.2f}%")
    lines.append(
        f"queries: {results['n_queries']} ({results.get('n_spots', '?')} spots), "
        f"database views: {results['n_database']}, preset: {results['preset']}"
    )
    test = results.get("shared_terrain", {}).get("test")
    if test:
        lines.append(
            f"shared terrain (views reach {results['shared_terrain']['range_m'] / 1000:g} km): "
            f"{100 * test['seen_by_train']:.0f}% of the test area lies within reach of training views; "
            f"{100 * test['view_terrain_in_train']:.0f}% of what test views can see is training area"
        )
    return "\n".join(lines)


__all__ = [
    "BASELINE_LABELS",
    "NETWORK",
    "BenchmarkInputs",
    "benchmark_results",
    "checkpoint_to_evaluate",
    "prepare_benchmark",
    "run_benchmark",
    "spot_ids",
    "summary_table",
]
