"""After the descriptor search: skyline re-ranking of the top K and position voting, as the benchmark reports them.

- ``load_skylines(qset, pool) -> Skylines``: the query photos' sky/terrain boundary rows
  (:func:`crosslocate.model.baselines.photo_horizon_rows`) and the database views' (from depth,
  :func:`crosslocate.datasets.derived.horizon_line`, read view by view whatever modality the
  network uses), with the views' known gravity. Shared by the horizon baseline and the re-ranking.
- ``horizon_rankings(qset, pool, k, db_fov_deg, eval_cfg, sky) -> {name: (indices, info)}``: the
  HLoc-style horizon baselines' view rankings, with the query's true pitch/roll (``horizon``) and
  with pitch/roll searched (``horizon_searched``, also the hybrid's extra candidates); with ``cache_dir``
  kept by content (:func:`horizon_cache_key`), so a configuration's other seeds do not search again.
- ``refine_ranking(idx, q_desc, db_desc, q_xy, q_yaw, q_fov, db_xy, db_yaw, sky, db_fov_deg, eval_cfg, ...) -> dict``:
  the ``refined`` block of ``results.json``: the recall tables of the re-ranked view ranking
  (:func:`crosslocate.model.evaluate.evaluate_retrieval`, laid out like the top level), place-level
  recall of the plain and the re-ranked ranking with and without voting (thresholds and N of the
  same :class:`~crosslocate.model.config.EvalConfig`), the settings, and the cost per query (seconds).
  With ``extra_candidates`` (name -> (M, >=K) view ranking of another method, e.g. the horizon
  baseline that searches pitch/roll), also each extra ranking's place-level recall and a ``hybrid``
  block: the union of the network's and the extra ranking's first K per query
  (:func:`crosslocate.model.rerank.union_candidates`), re-ranked and voted the same way. The hybrid
  borrows the other method's candidates, and its label in the report says so.
  With ``distances_out`` (a dict) it also fills in, per pipeline of ``PIPELINES`` it computed
  (all but ``network``), the (M, K) metres from each query to the views (or, voted, the place
  centres) that pipeline ranks first to last, for paired comparisons (``rankings.npz``).
- ``PIPELINES`` / ``pipeline_table(results, name)`` / ``choose_pipeline(results)``: the candidate
  end-to-end pipelines (network; + re-ranking; + voting; hybrid + re-ranking; + voting) as key
  paths into ``results.json``, and the rule that picks one on the validation split: the highest
  R@1 within 1 km (view level unvoted, place level voted), ties broken by R@10, then by the simpler pipeline. The benchmark
  applies the rule to validation results and reports the chosen pipeline's test numbers only.
- ``settings_sweep(...)`` / ``choose_pipeline_and_setting(network_recall, refined_by_setting)``: the
  validation split re-ranked at every setting of ``RerankConfig.panorama_grid`` x ``weight_grid``
  (view or stitched position panorama; fusion weight; skylines searched once per panorama
  setting), and the (pipeline, setting) pair the rule picks; the test split is re-ranked at that setting.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError
from crosslocate.model.config import RerankConfig, VoteConfig
from crosslocate.model.rerank import rerank, union_candidates

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Skylines:
    """Boundary rows: ``q_rows`` M arrays (W_i,), ``q_height`` (M,), ``db_rows`` (N, W), ``db_height``,
    and the database cameras' ``db_pitch`` / ``db_roll`` (N,) degrees."""

    q_rows: list[npt.NDArray[np.float32]]
    q_height: npt.NDArray[np.int64]
    db_rows: npt.NDArray[np.float32]
    db_height: int
    db_pitch: npt.NDArray[np.float64]
    db_roll: npt.NDArray[np.float64]


def load_skylines(qset: Any, pool: Any) -> Skylines:
    """Read every query photo's and database view's sky/terrain boundary (see the module docstring)."""
    from crosslocate.datasets.derived import horizon_line
    from crosslocate.datasets.views import ViewDataset, load_rgb
    from crosslocate.model.baselines import photo_horizon_rows

    db_rows, pitch, roll, height = [], [], [], 0
    for ds in pool.datasets:
        depth_ds = ds if ds.modality.value == "depth" else ViewDataset(ds.db_dir, "depth", indices=ds.indices)
        for i in range(len(depth_ds)):
            d = depth_ds.read_raw(i)
            height = d.shape[-2]
            db_rows.append(horizon_line(d))
        pitch.append(np.asarray(ds.table["pitch_deg"], np.float64))
        roll.append(np.asarray(ds.table["roll_deg"], np.float64))
    q_rows, q_height = [], []
    for q in qset.dataset.queries:
        photo = load_rgb(q.image)
        q_rows.append(photo_horizon_rows(photo))
        q_height.append(photo.shape[0])
    return Skylines(
        q_rows=q_rows,
        q_height=np.asarray(q_height, np.int64),
        db_rows=np.stack(db_rows),
        db_height=int(height),
        db_pitch=np.concatenate(pitch),
        db_roll=np.concatenate(roll),
    )


def refine_ranking(
    idx: npt.NDArray[np.int64],
    q_desc: npt.NDArray[np.float32],
    db_desc: npt.NDArray[np.float32],
    q_xy: npt.NDArray[np.float64],
    q_yaw: npt.NDArray[np.float64],
    q_fov: npt.NDArray[np.float64],
    db_xy: npt.NDArray[np.float64],
    db_yaw: npt.NDArray[np.float64],
    sky: Skylines,
    db_fov_deg: float,
    eval_cfg: Any,
    *,
    spots: npt.NDArray[np.int64] | None = None,
    rerank_cfg: Any = None,
    vote_cfg: Any = None,
    extra_candidates: Mapping[str, npt.NDArray[np.int64]] | None = None,
    cost_cache: dict[str, npt.NDArray[np.float64]] | None = None,
    distances_out: dict[str, npt.NDArray[np.float64]] | None = None,
) -> dict[str, Any]:
    """Re-rank ``idx`` (Q, K) by skyline agreement, vote places, and tabulate recall (module docstring).

    ``q_xy`` (Q, 2) / ``db_xy`` (N, 2) metres, ``q_yaw`` / ``db_yaw`` degrees, ``q_fov`` degrees, as for
    :func:`crosslocate.model.evaluate.evaluate_retrieval`; ``spots`` (Q,) groups the bootstrap interval;
    ``rerank_cfg`` / ``vote_cfg`` default to :class:`~crosslocate.model.config.RerankConfig` /
    :class:`~crosslocate.model.config.VoteConfig`. ``extra_candidates`` (name -> (Q, K') rankings,
    e.g. the horizon search's) adds the ``hybrid`` block: the union of the network's and their first
    ``RerankConfig.k`` candidates (:func:`crosslocate.model.rerank.union_candidates`) re-ranked the
    same way and voted; and each one's ranking read as places (``place["<name>_views_as_places"]``),
    the place-level reference for it. ``cost_cache`` (a dict, filled on the first call): the
    candidates' geometric costs kept under ``"network"`` / ``"hybrid"`` so that calls that differ
    only in ``rerank_cfg.weight`` (:func:`settings_sweep`) search the skylines once; the reported
    cost per query is then that of the fusion alone. ``distances_out`` (a dict): filled with each
    computed pipeline's (Q, K) metres to what it ranks (module docstring), keyed by its ``PIPELINES`` name.
    """
    from crosslocate.model import evaluate, voting

    rcfg = rerank_cfg or RerankConfig()
    vcfg = vote_cfg or VoteConfig()
    extra = dict(extra_candidates or {})
    args = (q_desc, db_desc, q_xy, q_yaw, q_fov, db_xy, db_yaw, sky, db_fov_deg, eval_cfg, spots)
    pos_id, centres = voting.position_ids(db_xy)
    cache = cost_cache if cost_cache is not None else {}
    res, reranked = _rerank_and_score(idx, rcfg, *args, cache=cache, cache_key="network")
    t0 = time.perf_counter()
    place: dict[str, Any] = {"n_places": len(centres), "grid_spacing_m": voting.grid_spacing_m(centres)}
    voted: dict[str, npt.NDArray[np.int64]] = {}
    place.update(
        _place_tables({"plain": idx, "reranked": res.indices}, pos_id, centres, q_xy, eval_cfg, vcfg, places_out=voted)
    )
    vote_s = (time.perf_counter() - t0) / max(len(idx), 1) / 2.0
    for name, ranking in extra.items():
        first = voting.first_occurrence_places(ranking, pos_id)
        ns = evaluate.report_ns(eval_cfg, max(first.shape[1], 1))
        place[f"{name}_views_as_places"] = evaluate.table_to_json(
            voting.place_recall(first, q_xy, centres, tuple(float(t) for t in eval_cfg.thresholds_m), ns)
        )
    out: dict[str, Any] = {
        "reranked": reranked,
        "place": place,
        "config": {"rerank": rcfg.to_dict(), "vote": vcfg.to_dict()},
        "rerank_info": res.info,
        "cost_s_per_query": {"rerank": res.info["seconds_per_query"], "vote": vote_s},
    }
    h_res: Any = None
    h_voted: dict[str, npt.NDArray[np.int64]] = {}
    if extra:
        union = union_candidates([idx, *extra.values()], rcfg.k)
        h_res, h_reranked = _rerank_and_score(
            union, replace(rcfg, k=max(union.shape[1], 1)), *args, cache=cache, cache_key="hybrid"
        )
        n_cand = (union >= 0).sum(axis=1)
        out["hybrid"] = {
            "candidates": ["network", *extra],
            "k_each": rcfg.k,
            "mean_candidates": float(n_cand.mean()) if n_cand.size else 0.0,
            "reranked": h_reranked,
            "place": _place_tables(
                {"reranked": h_res.indices}, pos_id, centres, q_xy, eval_cfg, vcfg, places_out=h_voted
            ),
            "rerank_info": h_res.info,
            "cost_s_per_query": {"rerank": h_res.info["seconds_per_query"]},
        }
    if distances_out is not None:
        views = {"network + re-ranking": res.indices}
        places = {"network + re-ranking + voting": voted["reranked_voting"]}
        if h_res is not None:
            views["hybrid + re-ranking"] = h_res.indices
            places["hybrid + re-ranking + voting"] = h_voted["reranked_voting"]
        for name, ranked in views.items():
            distances_out[name] = evaluate.retrieved_distances(ranked, q_xy, db_xy)
        for name, ranked in places.items():
            distances_out[name] = evaluate.retrieved_distances(ranked, q_xy, centres)
    return out


def _rerank_and_score(
    cand: npt.NDArray[np.int64],
    rcfg: Any,
    q_desc: npt.NDArray[np.float32],
    db_desc: npt.NDArray[np.float32],
    q_xy: npt.NDArray[np.float64],
    q_yaw: npt.NDArray[np.float64],
    q_fov: npt.NDArray[np.float64],
    db_xy: npt.NDArray[np.float64],
    db_yaw: npt.NDArray[np.float64],
    sky: Skylines,
    db_fov_deg: float,
    eval_cfg: Any,
    spots: npt.NDArray[np.int64] | None,
    *,
    cache: dict[str, npt.NDArray[np.float64]],
    cache_key: str,
) -> tuple[Any, dict[str, Any]]:
    """(RerankResult, its recall tables) of candidates ``cand`` (Q, K), -1 padded; evaluated up to
    ``max_n``. The geometric costs are read from ``cache[cache_key]`` when there, else searched and kept there."""
    from crosslocate.model import evaluate, voting
    from crosslocate.model.rerank import candidate_costs

    d2 = np.sum((q_desc[:, None, :] - db_desc[np.maximum(cand, 0)]) ** 2, axis=2)  # (Q, K) squared L2
    skyline_args = (sky.q_rows, q_fov, sky.q_height, sky.db_rows, db_fov_deg, sky.db_height, rcfg)
    pos_id, _ = voting.position_ids(db_xy)
    gravity = {"db_pitch_deg": sky.db_pitch, "db_roll_deg": sky.db_roll, "db_pos_id": pos_id, "db_yaw_deg": db_yaw}
    cache_key = f"{cache_key}/{'panorama' if rcfg.panorama else 'view'}"  # the costs depend on it, not on the weight
    search_s, cached = 0.0, cache_key in cache
    if not cached:
        t0 = time.perf_counter()
        cache[cache_key] = candidate_costs(cand, *skyline_args, **gravity)
        search_s = time.perf_counter() - t0
    res = rerank(cand, d2, *skyline_args, **gravity, costs=cache[cache_key])
    # the cost per query counts the skyline search when this call paid for it
    res.info["seconds_per_query"] += search_s / max(len(cand), 1)
    res.info["skyline_search_cached"] = cached
    ranked = res.indices[:, : int(eval_cfg.max_n)]
    return res, evaluate.evaluate_retrieval(
        ranked, q_xy, q_yaw, q_fov, db_xy, db_yaw, eval_cfg, groups=spots, chance=False
    )


def _place_tables(
    rankings: Mapping[str, npt.NDArray[np.int64]],
    pos_id: npt.NDArray[np.int64],
    centres: npt.NDArray[np.float64],
    q_xy: npt.NDArray[np.float64],
    eval_cfg: Any,
    vcfg: Any,
    *,
    places_out: dict[str, npt.NDArray[np.int64]] | None = None,
) -> dict[str, Any]:
    """``{"<name>_views_as_places", "<name>_voting"}`` place-level recall tables of each view ranking;
    ``places_out`` (a dict) receives the (Q, P) place rankings under the same keys."""
    from crosslocate.model import evaluate, voting

    thresholds = tuple(float(t) for t in eval_cfg.thresholds_m)
    out: dict[str, Any] = {}
    for name, ranking in rankings.items():
        first = voting.first_occurrence_places(ranking, pos_id)
        voted, _ = voting.vote_places(ranking, pos_id, centres, vcfg)
        for suffix, places in (("views_as_places", first), ("voting", voted)):
            ns = evaluate.report_ns(eval_cfg, max(places.shape[1], 1))
            out[f"{name}_{suffix}"] = evaluate.table_to_json(voting.place_recall(places, q_xy, centres, thresholds, ns))
            if places_out is not None:
                places_out[f"{name}_{suffix}"] = places
    return out


#: The pipelines compared on the validation split, and where each one's recall table sits: in the
#: network's own evaluation (``network``) or in :func:`refine_ranking`'s result (a key path).
PIPELINES: dict[str, tuple[str, ...]] = {
    "network": ("recall",),
    "network + re-ranking": ("refined", "reranked", "recall"),
    "network + re-ranking + voting": ("refined", "place", "reranked_voting"),
    "hybrid + re-ranking": ("refined", "hybrid", "reranked", "recall"),
    "hybrid + re-ranking + voting": ("refined", "hybrid", "place", "reranked_voting"),
}
#: Threshold (metres) and N of the selection rule: recall@1 within 1 km, ties broken by recall@10.
SELECTION_THRESHOLD_M: float = 1000.0
SELECTION_NS: tuple[int, ...] = (1, 10)


def pipeline_table(results: Mapping[str, Any], name: str) -> dict[str, dict[str, float]] | None:
    """The recall table (``{"<threshold_m>": {"<N>": r}}``) of pipeline ``name`` in a results dict
    holding the network's ``recall`` and the ``refined`` block; None when that run lacks it."""
    node: Any = results
    for key in PIPELINES[name]:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def choose_pipeline(results: Mapping[str, Any]) -> dict[str, Any]:
    """Pick the pipeline with the best recall@1 within 1 km (then recall@10; then the earlier, simpler
    one in :data:`PIPELINES`) among those present in ``results`` (the validation split's, never the
    test split's). Without a 1 km threshold in the tables, their largest; a missing N counts as
    lowest. Returns ``{"chosen", "rule", "threshold_m", "scores": {name: {"1": r, "10": r}}}``."""
    tables = {name: t for name in PIPELINES if (t := pipeline_table(results, name))}
    if not tables:
        raise ConfigError("no pipeline recall table to choose from")
    thresholds = sorted({float(k) for t in tables.values() for k in t})
    # 1 km when the EvalConfig has it, else its largest threshold (as the summary table does)
    thr_m = SELECTION_THRESHOLD_M if SELECTION_THRESHOLD_M in thresholds else thresholds[-1]
    thr = f"{thr_m:g}"
    scores: dict[str, dict[str, float]] = {
        name: {str(n): float(t[thr].get(str(n), np.nan)) for n in SELECTION_NS}
        for name, t in tables.items()
        if thr in t
    }
    if not scores:
        raise ConfigError(f"no pipeline recall table has the {thr} m threshold to choose by")

    def key(item: tuple[int, str]) -> tuple[float, ...]:
        j, name = item
        vals = [scores[name][str(n)] for n in SELECTION_NS]
        return (*[-(v if np.isfinite(v) else -1.0) for v in vals], j)

    chosen = min(enumerate(scores), key=key)[1]
    rule = f"recall@{SELECTION_NS[0]} within {thr_m / 1000:g} km, ties by recall@{SELECTION_NS[1]}"
    return {"chosen": chosen, "rule": rule, "threshold_m": thr_m, "scores": scores}


def settings_sweep(
    idx: npt.NDArray[np.int64],
    *args: Any,
    rerank_cfg: Any = None,
    **kwargs: Any,
) -> dict[tuple[bool, float], dict[str, Any]]:
    """``{(panorama, weight): refine_ranking(idx, *args, rerank_cfg=<rerank_cfg with them>, **kwargs)}``
    for every ``rerank_cfg.panorama_grid`` x ``weight_grid`` setting, in ascending order; the skylines
    are searched once per panorama setting and fused at every weight."""
    rcfg = rerank_cfg or RerankConfig()
    cache: dict[str, npt.NDArray[np.float64]] = {}
    return {
        (p, w): refine_ranking(idx, *args, rerank_cfg=replace(rcfg, panorama=p, weight=w), cost_cache=cache, **kwargs)
        for p in sorted(set(rcfg.panorama_grid))
        for w in sorted({float(w) for w in rcfg.weight_grid})
    }


def setting_label(panorama: bool, weight: float) -> str:
    """``"view, weight 8"`` / ``"panorama, weight 8"``: a re-ranking setting as reports name it."""
    return f"{'panorama' if panorama else 'view'}, weight {weight:g}"


def choose_pipeline_and_setting(
    network_recall: Mapping[str, Any], refined_by_setting: Mapping[tuple[bool, float], Mapping[str, Any]]
) -> dict[str, Any]:
    """The pipeline and the re-ranking setting (panorama or view, fusion weight) picked together on
    the validation split.

    ``network_recall``: the network's recall table; ``refined_by_setting``: :func:`settings_sweep`'s
    result (empty without skylines). Every (pipeline, setting) pair competes under
    :func:`choose_pipeline`'s rule; ties go to the simpler pipeline, then to view before panorama,
    then to the smaller weight. Returns :func:`choose_pipeline`'s dict (``scores`` at the chosen
    setting) plus ``weight`` and ``panorama``: the setting of the best pipeline that re-ranks (what
    the test split is re-ranked with, also when the network alone wins; None without skylines),
    and ``scores_by_setting`` (keys from :func:`setting_label`).
    """
    if not refined_by_setting:
        return {
            **choose_pipeline({"recall": network_recall}),
            "weight": None,
            "panorama": None,
            "scores_by_setting": {},
        }
    per_setting = {
        st: choose_pipeline({"recall": network_recall, "refined": refined_by_setting[st]})
        for st in sorted(refined_by_setting)
    }
    names = list(PIPELINES)
    ranked = []
    for j, (st, choice) in enumerate(per_setting.items()):
        for name, sc in choice["scores"].items():
            vals = [sc[str(n)] for n in SELECTION_NS]
            ranked.append(((*[-(v if np.isfinite(v) else -1.0) for v in vals], names.index(name), j), name, st))
    _, chosen, st_chosen = min(ranked)
    reranking = [r for r in ranked if r[1] != "network"]
    best = min(reranking)[2] if reranking else st_chosen
    out = dict(per_setting[best])  # the setting the test split gets
    out.update(
        chosen=chosen,
        rule=out["rule"] + "; then the simpler pipeline, view before panorama, the smaller re-ranking weight",
        panorama=bool(best[0]) if reranking else None,
        weight=float(best[1]) if reranking else None,
        scores_by_setting={setting_label(*st): c["scores"] for st, c in per_setting.items()},
    )
    return out


def _yaw_spacing_deg(yaw_deg: npt.NDArray[np.float64]) -> float:
    """Smallest gap between the distinct database yaws on the circle (360 for a single yaw)."""
    u = np.unique(np.round(np.asarray(yaw_deg, np.float64) % 360.0, 3))
    return float(np.diff(np.append(u, u[0] + 360.0)).min()) if len(u) > 1 else 360.0


#: Bump when the horizon baselines' ranking changes for the same inputs: cached rankings of an older
#: version are then searched again.
HORIZON_CACHE_VERSION = 1


def horizon_cache_key(qset: Any, pool: Any, k: int, db_fov_deg: float, eval_cfg: Any, method: str) -> dict[str, Any]:
    """Everything a horizon baseline's ranking depends on, as a JSON-able key: the method, the query
    set (:func:`crosslocate.datasets.queries.query_set_digest`: every pose, FOV and pitch/roll with
    them, and the photos' bytes), the databases and selected views
    (:func:`crosslocate.pipelines.descriptors.views_identity`), ``k``, the database FOV, every
    ``horizon_*`` field of ``eval_cfg`` and :data:`HORIZON_CACHE_VERSION`. Not the network: the
    baselines never see it."""
    from dataclasses import fields

    from crosslocate.datasets.queries import query_set_digest
    from crosslocate.pipelines.descriptors import views_identity

    horizon_cfg = {f.name: getattr(eval_cfg, f.name) for f in fields(eval_cfg) if f.name.startswith("horizon_")}
    return {
        "method": method,
        "version": HORIZON_CACHE_VERSION,
        "queries": query_set_digest(qset.dataset.queries),
        "n_queries": len(qset.dataset.queries),
        "views": [views_identity(ds) for ds in pool.datasets],
        "k": int(k),
        "db_fov_deg": float(db_fov_deg),
        "eval": horizon_cfg,
    }


def horizon_cache_paths(folder: Path, key: dict[str, Any]) -> tuple[Path, Path]:
    """(``.npy`` ranking, ``.json`` key and info) of a horizon cache entry
    (:func:`crosslocate.pipelines.descriptors.cache_files`, named after the method)."""
    from crosslocate.pipelines.descriptors import cache_files

    return cache_files(folder, key["method"], key)


def _read_cached(folder: Path, key: dict[str, Any]) -> tuple[npt.NDArray[np.int64], dict[str, Any]] | None:
    """The cached (Q, k) ranking and info under ``key``, or None (absent, unreadable or made for other inputs)."""
    from crosslocate.pipelines.descriptors import read_cache_entry

    npy, meta = horizon_cache_paths(folder, key)
    if (got := read_cache_entry(npy, meta, "horizon")) is None:
        return None
    idx, stored = got
    if not isinstance(stored, dict) or stored.get("key") != key or idx.shape != (key["n_queries"], key["k"]):
        logger.warning("ignoring horizon cache %s: made for other inputs", npy)
        return None
    logger.info("%s baseline from cache %s", key["method"], npy)
    return idx.astype(np.int64), stored["info"]


def _write_cached(
    folder: Path, key: dict[str, Any], idx: npt.NDArray[np.int64], info: dict[str, Any]
) -> dict[str, Any]:
    """Store a ranking under ``key`` (:func:`crosslocate.pipelines.descriptors.write_cache_entry`);
    returns ``info`` as stored (plain JSON values, so a cached and a fresh call answer alike)."""
    import json

    from crosslocate.pipelines.descriptors import write_cache_entry

    plain = json.loads(json.dumps(info, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    npy, meta = horizon_cache_paths(folder, key)
    write_cache_entry(npy, meta, np.ascontiguousarray(idx, np.int64), {"key": key, "info": plain}, "horizon")
    return plain


def horizon_rankings(
    qset: Any,
    pool: Any,
    k: int,
    db_fov_deg: float,
    eval_cfg: Any,
    sky: Any = None,
    methods: tuple[str, ...] = ("horizon", "horizon_searched"),
    cache_dir: str | os.PathLike[str] | None = None,
) -> dict[str, tuple[npt.NDArray[np.int64], dict[str, Any]]]:
    """(Q, k) database indices ranked by the HLoc-style horizon baseline, twice, with their settings.

    ``horizon``: the query's known gravity (pose pitch/roll, as a phone's IMU gives; yaw and
    position stay unknown), an upper bound. ``horizon_searched``: no gravity; pitch and roll are
    searched per (query, view) pair on :func:`crosslocate.model.baselines.gravity_grid` of
    ``EvalConfig.horizon_search_*``, the mean elevation offset removed (what a photo without sensor
    data gives); its info adds the median error of the chosen pitch (grid-coarse when the mean is
    removed) and roll against the truth.

    Database curves come from the views' depth, query curves from the original photos, with the
    query's FOV (:func:`crosslocate.pipelines.refine.load_skylines`; ``sky`` when already loaded).
    The shift search covers ``max(EvalConfig.horizon_max_shift_deg, half the database yaw spacing)``
    so every query can align with the nearest database yaw. ``methods`` says which of the two to run.

    With ``cache_dir``, each method's ranking and info are kept there under
    :func:`horizon_cache_key` and read back by any later call with the same inputs (the seeds of a
    configuration, a benchmark asked again): the search is the evaluation's largest cost after the
    descriptors, and it does not depend on the network. The skylines are then loaded only for what
    is not cached.
    """
    from crosslocate.model.baselines import gravity_grid, horizon_baseline

    unknown = set(methods) - {"horizon", "horizon_searched"}
    if unknown:
        raise ConfigError(f"unknown horizon baseline(s) {sorted(unknown)}; known: horizon, horizon_searched")
    if cache_dir is not None:
        folder = Path(cache_dir)
        shared = horizon_cache_key(qset, pool, k, db_fov_deg, eval_cfg, "")  # photos and views hashed once
        keys = {m: {**shared, "method": m} for m in methods}
        hits = {m: got for m in methods if (got := _read_cached(folder, keys[m])) is not None}
        todo = tuple(m for m in methods if m not in hits)
        fresh = horizon_rankings(qset, pool, k, db_fov_deg, eval_cfg, sky, todo) if todo else {}
        for m, (idx, info) in fresh.items():
            fresh[m] = (idx, _write_cached(folder, keys[m], idx, info))
        return {m: hits[m] if m in hits else fresh[m] for m in methods}
    sky = sky if sky is not None else load_skylines(qset, pool)
    poses = [q.pose for q in qset.dataset.queries]
    cfg_shift = float(eval_cfg.horizon_max_shift_deg)
    common = dict(
        q_rows=sky.q_rows,
        q_fov_deg=np.array([p.fov_deg for p in poses]),
        q_height_px=sky.q_height,
        k=k,
        db_rows=sky.db_rows,
        db_fov_deg=db_fov_deg,
        db_height_px=sky.db_height,
        step_deg=float(eval_cfg.horizon_grid_step_deg),
        max_shift_deg=max(cfg_shift, 0.5 * _yaw_spacing_deg(pool.yaw_deg)),
        db_pitch_deg=sky.db_pitch,
        db_roll_deg=sky.db_roll,
    )
    true_pr = np.array([[p.pitch_deg, p.roll_deg] for p in poses], np.float64).reshape(-1, 2)
    out: dict[str, tuple[npt.NDArray[np.int64], dict[str, Any]]] = {}
    if "horizon" in methods:
        known = horizon_baseline(**common, q_pitch_deg=true_pr[:, 0], q_roll_deg=true_pr[:, 1])
        out["horizon"] = (
            known.indices,
            {**known.info, "config_max_shift_deg": cfg_shift, "gravity": "query pose pitch/roll (IMU-like)"},
        )
    if "horizon_searched" in methods:
        grid = gravity_grid(
            eval_cfg.horizon_search_pitch_deg,
            eval_cfg.horizon_search_roll_deg,
            eval_cfg.horizon_search_pitch_step_deg,
            eval_cfg.horizon_search_roll_step_deg,
        )
        searched = horizon_baseline(**common, gravity_search=grid, subtract_mean=eval_cfg.horizon_search_subtract_mean)
        err = np.abs(searched.gravity_deg - true_pr) if searched.gravity_deg is not None else np.full((0, 2), np.nan)
        ok = np.isfinite(err).all(axis=1)
        out["horizon_searched"] = (
            searched.indices,
            {
                **searched.info,
                "config_max_shift_deg": cfg_shift,
                "gravity": "searched on a pitch x roll grid (no sensor)",
                "gravity_grid_deg": {
                    "pitch_max": eval_cfg.horizon_search_pitch_deg,
                    "roll_max": eval_cfg.horizon_search_roll_deg,
                    "pitch_step": eval_cfg.horizon_search_pitch_step_deg,
                    "roll_step": eval_cfg.horizon_search_roll_step_deg,
                },
                "median_abs_pitch_error_deg": float(np.median(err[ok, 0])) if ok.any() else None,
                "median_abs_roll_error_deg": float(np.median(err[ok, 1])) if ok.any() else None,
            },
        )
    for name, (_, info) in out.items():
        logger.info("%s baseline: %s", name, info)
    return out


__all__ = [
    "PIPELINES",
    "Skylines",
    "choose_pipeline",
    "choose_pipeline_and_setting",
    "horizon_rankings",
    "load_skylines",
    "pipeline_table",
    "refine_ranking",
    "setting_label",
    "settings_sweep",
]
