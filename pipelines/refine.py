"""After the descriptor search: skyline re-ranking of the top K and position voting, as the benchmark reports them.

- ``load_skylines(qset, pool) -> Skylines``: the query photos' sky/terrain boundary rows
  (:func:`crosslocate.model.baselines.photo_horizon_rows`) and the database views' (from depth,
  :func:`crosslocate.datasets.derived.horizon_line`, read view by view whatever modality the
  network uses), with the views' known gravity. Shared by the horizon baseline and the re-ranking.
- ``refine_ranking(idx, q_desc, db_desc, q_xy, q_yaw, q_fov, db_xy, db_yaw, sky, db_fov_deg, eval_cfg, ...) -> dict``:
  the ``refined`` block of ``results.json``: the recall tables of the re-ranked view ranking
  (:func:`crosslocate.model.evaluate.evaluate_retrieval`, laid out like the top level), place-level
  recall of the plain and the re-ranked ranking with and without voting (thresholds and N of the
  same :class:`~crosslocate.model.config.EvalConfig`), the settings, and the cost per query (seconds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

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
) -> dict[str, Any]:
    """Re-rank ``idx`` (Q, K) by skyline agreement, vote places, and tabulate recall (module docstring).

    ``q_xy`` (Q, 2) / ``db_xy`` (N, 2) metres, ``q_yaw`` / ``db_yaw`` degrees, ``q_fov`` degrees, as for
    :func:`crosslocate.model.evaluate.evaluate_retrieval`; ``spots`` (Q,) groups the bootstrap interval;
    ``rerank_cfg`` / ``vote_cfg`` default to :class:`~crosslocate.model.config.RerankConfig` /
    :class:`~crosslocate.model.config.VoteConfig`.
    """
    from crosslocate.model import evaluate, rerank, voting

    rcfg = rerank_cfg or rerank.RerankConfig()
    vcfg = vote_cfg or voting.VoteConfig()
    d2 = np.sum((q_desc[:, None, :] - db_desc[np.maximum(idx, 0)]) ** 2, axis=2)  # (Q, K) squared L2
    res = rerank.rerank(
        idx,
        d2,
        sky.q_rows,
        q_fov,
        sky.q_height,
        sky.db_rows,
        db_fov_deg,
        sky.db_height,
        rcfg,
        db_pitch_deg=sky.db_pitch,
        db_roll_deg=sky.db_roll,
    )
    reranked = evaluate.evaluate_retrieval(
        res.indices, q_xy, q_yaw, q_fov, db_xy, db_yaw, eval_cfg, groups=spots, chance=False
    )
    thresholds = tuple(float(t) for t in eval_cfg.thresholds_m)
    t0 = time.perf_counter()
    pos_id, centres = voting.position_ids(db_xy)
    place: dict[str, Any] = {"n_places": len(centres), "grid_spacing_m": voting.grid_spacing_m(centres)}
    for name, ranking in (("plain", idx), ("reranked", res.indices)):
        first = voting.first_occurrence_places(ranking, pos_id)
        voted, _ = voting.vote_places(ranking, pos_id, centres, vcfg)
        for suffix, places in (("views_as_places", first), ("voting", voted)):
            ns = evaluate.report_ns(eval_cfg, max(places.shape[1], 1))
            place[f"{name}_{suffix}"] = evaluate.table_to_json(
                voting.place_recall(places, q_xy, centres, thresholds, ns)
            )
    vote_s = (time.perf_counter() - t0) / max(len(idx), 1) / 2.0
    return {
        "reranked": reranked,
        "place": place,
        "config": {"rerank": rcfg.to_dict(), "vote": vcfg.to_dict()},
        "rerank_info": res.info,
        "cost_s_per_query": {"rerank": res.info["seconds_per_query"], "vote": vote_s},
    }


__all__ = ["Skylines", "load_skylines", "refine_ranking"]
