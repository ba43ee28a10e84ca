"""Geometric re-ranking of a retrieval's top K by skyline agreement, with unknown camera pitch and roll.

After the descriptor search, each query's first K candidates (default 100) are compared with the
query photo's skyline: for every hypothesis of the query camera's pitch and roll on a small grid, the
photo's sky/terrain boundary becomes an elevation curve over azimuth
(:func:`crosslocate.model.baselines.resample_horizon`), and each candidate view's curve (from its
depth) is matched to it over a search of azimuth shifts (the yaw refinement,
:func:`crosslocate.model.baselines.horizon_distances`). A candidate's geometric cost is the smallest
mean squared elevation difference (deg^2) over all (pitch, roll, yaw shift) hypotheses; nothing about
the query's true pose is used. The cost is fused with the descriptor distance by standardising both
over the query's K candidates::

    fused_k = z(d_desc)_k + weight * z(log(floor + cost))_k        (smaller is better)

with ``z(x) = (x - mean) / std`` over the K candidates (0 when constant) and ``floor`` the cost of
a perfect match under skyline noise (0.25 deg^2, a 0.5 degree rms error). A candidate without a
usable overlap gets the query's worst finite cost; a query without a usable skyline keeps its
descriptor order.

API
---
- ``RerankConfig`` (in :mod:`crosslocate.model.config`): K, fusion weight, pitch/roll grids, yaw-shift half range, azimuth step.
- ``pose_grid(cfg) -> (P, 2)``: the (pitch, roll) hypotheses, degrees (:func:`crosslocate.model.baselines.gravity_grid`).
- ``skyline_costs(q_rows, q_fov_deg, q_height_px, cand_curves, cfg, grid_deg) -> (costs (K,), best (K, 2))``:
  one query against its candidates' resampled curves; ``best`` = the (pitch, roll) of each minimum.
- ``fuse_scores(desc_dist (K,), costs (K,), weight, floor_deg2) -> (K,)``.
- ``candidate_costs(cand_idx (M, K), q_rows, ..., cfg) -> (M, k)``: the geometric costs alone, in
  candidate order (they do not depend on the fusion weight).
- ``order_by_score(cand_idx, desc_dist, costs, weight, floor) -> (indices, costs, fused)``: the fusion
  and re-ordering at one weight, from given costs.
- ``rerank(cand_idx (M, K), desc_dist (M, K), q_rows, q_fov_deg, q_height_px, db_rows (N, W), db_fov_deg,
  db_height_px, cfg, costs=None) -> RerankResult``: both: the re-ordered (M, K) indices, the costs,
  the fused scores and the time per query.
- ``union_candidates(rankings, k) -> (M, L)``: each query's first ``k`` candidates of several rankings
  (e.g. the network's and the skyline search's), duplicates removed, in order of first appearance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError
from crosslocate.model.baselines import gravity_grid, horizon_distances, horizon_grid, resample_horizon
from crosslocate.model.config import RerankConfig

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class RerankResult:
    """``indices`` (M, K) int64 re-ranked best first; ``costs``/``fused`` (M, K) in that order; info."""

    indices: npt.NDArray[np.int64]
    costs: npt.NDArray[np.float64]
    fused: npt.NDArray[np.float64]
    info: dict[str, Any] = field(default_factory=dict)


def pose_grid(cfg: RerankConfig) -> npt.NDArray[np.float64]:
    """(P, 2) float64 (pitch, roll) hypotheses of the query camera, degrees; (0, 0) is among them.

    The grid the horizon baseline searches without gravity
    (:func:`crosslocate.model.baselines.gravity_grid`) with the ranges and steps of ``cfg``.
    """
    return gravity_grid(cfg.max_pitch_deg, cfg.max_roll_deg, cfg.pitch_step_deg, cfg.roll_step_deg)


def skyline_costs(
    q_rows: npt.ArrayLike,
    q_fov_deg: float,
    q_height_px: int,
    cand_curves: npt.ArrayLike,
    cfg: RerankConfig,
    grid_deg: npt.ArrayLike,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Geometric cost of each candidate for one query, minimised over pitch, roll and yaw shift.

    Parameters
    ----------
    q_rows : (W,) float
        The query photo's sky/terrain boundary row per column (NaN = none).
    q_fov_deg, q_height_px : float, int
        The photo's horizontal FOV (degrees) and height (pixels).
    cand_curves : (K, G) float
        Candidate elevation curves (degrees) on ``grid_deg`` (:func:`resample_horizon` with the
        views' known gravity).
    grid_deg : (G,) float
        Azimuth grid, degrees, step ``cfg.step_deg``.

    Returns
    -------
    costs : (K,) float64
        Mean squared elevation difference, deg^2 (``inf`` without a usable overlap).
    best_pose : (K, 2) float64
        (pitch, roll) of the query camera at each candidate's minimum, degrees (NaN where ``inf``).
    """
    poses = pose_grid(cfg)
    rows = np.asarray(q_rows, np.float64)
    qc = resample_horizon(
        np.broadcast_to(rows, (len(poses), rows.shape[-1])),
        q_fov_deg,
        q_height_px,
        grid_deg,
        pitch_deg=poses[:, 0],
        roll_deg=poses[:, 1],
    )
    d = horizon_distances(qc, cand_curves, cfg.step_deg, cfg.max_shift_deg, min_overlap=cfg.min_overlap)  # (P, K)
    best = np.argmin(d, axis=0)
    costs = d[best, np.arange(d.shape[1])]
    pose = np.where(np.isfinite(costs)[:, None], poses[best], np.nan)
    return costs, pose


def _z(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)


def fuse_scores(
    desc_dist: npt.ArrayLike, costs: npt.ArrayLike, weight: float, floor_deg2: float = 0.25
) -> npt.NDArray[np.float64]:
    """(K,) fused score ``z(desc) + weight * z(log(floor_deg2 + cost))``, smaller is better (module docstring).

    ``inf`` costs take the worst finite cost; all-``inf`` costs (no usable skyline) contribute 0.
    """
    d = np.asarray(desc_dist, np.float64)
    c = np.asarray(costs, np.float64)
    ok = np.isfinite(c)
    if not ok.any() or weight == 0:
        return _z(d)
    g = np.log(float(floor_deg2) + np.where(ok, np.maximum(c, 0.0), np.max(c[ok])))
    return _z(d) + float(weight) * _z(g)


def panorama_curves(
    curves: npt.ArrayLike,
    grid_deg: npt.ArrayLike,
    pos_id: npt.ArrayLike,
    yaw_deg: npt.ArrayLike,
    views: npt.ArrayLike,
    out_grid_deg: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """(len(views), G') float32: each of ``views``' position panorama, centred on that view's yaw.

    Parameters
    ----------
    curves : (N, G) float
        Elevation curves (degrees) of database views on the azimuth offsets ``grid_deg`` (G,), degrees
        from each view's yaw (:func:`resample_horizon` with the views' known gravity; NaN = none).
        Rows of views not needed may be NaN.
    pos_id : (N,) int
        Position of every view (:func:`crosslocate.model.voting.position_ids`).
    yaw_deg : (N,) float
        View yaw, degrees clockwise from north.
    views : (V,) int
        The views whose panorama slice is wanted.
    out_grid_deg : (G',) float
        Azimuth offsets of the slice from each view's yaw, degrees (a multiple of the grid step; may
        exceed the view's FOV: that is the point).

    The position's views are stitched on a world-azimuth circle with the grid's step (views
    overlapping in azimuth are averaged where both have a value); a view's slice then reaches past
    its own edges into its neighbours' views, so a query skyline that straddles two database views
    is compared whole. NaN where no view of the position sees that azimuth.
    """
    grid = np.asarray(grid_deg, np.float64)
    step = float(grid[1] - grid[0]) if len(grid) > 1 else 1.0
    n_bins = round(360.0 / step)
    c = np.asarray(curves, np.float64)
    pid = np.asarray(pos_id, np.int64)
    yaw = np.asarray(yaw_deg, np.float64)
    want = np.asarray(views, np.int64)
    if not len(want):
        return np.full((0, len(np.asarray(out_grid_deg))), np.nan, np.float32)
    # the views of the wanted views' positions, stitched per position
    pos, local = np.unique(pid[want], return_inverse=True)
    members = np.flatnonzero(np.isin(pid, pos))
    row = np.searchsorted(pos, pid[members])
    bins = np.round((yaw[members, None] + grid[None, :]) / step).astype(np.int64) % n_bins  # (m, G)
    vals = c[members]
    ok = np.isfinite(vals)
    total = np.zeros((len(pos), n_bins))
    count = np.zeros((len(pos), n_bins))
    flat = (row[:, None] * n_bins + bins)[ok]
    np.add.at(total.reshape(-1), flat, vals[ok])
    np.add.at(count.reshape(-1), flat, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pano = np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
    out_bins = np.round((yaw[want, None] + np.asarray(out_grid_deg, np.float64)[None, :]) / step).astype(np.int64)
    return pano[local[:, None], out_bins % n_bins].astype(np.float32)


def candidate_costs(
    cand_idx: npt.ArrayLike,
    q_rows: Sequence[npt.ArrayLike],
    q_fov_deg: npt.ArrayLike,
    q_height_px: npt.ArrayLike,
    db_rows: npt.ArrayLike,
    db_fov_deg: float,
    db_height_px: int,
    cfg: RerankConfig,
    *,
    db_pitch_deg: float | npt.ArrayLike = 0.0,
    db_roll_deg: float | npt.ArrayLike = 0.0,
    db_pos_id: npt.ArrayLike | None = None,
    db_yaw_deg: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """(M, k) float64 geometric cost (deg^2, :func:`skyline_costs`) of each query's first
    ``k = min(cfg.k, K0)`` candidates, in candidate order; ``inf`` for padding (-1) and for candidates
    without a usable overlap. Independent of ``cfg.weight``: compute once, fuse at any weight with
    :func:`order_by_score`. Arguments as for :func:`rerank`.

    With ``cfg.panorama`` (and the views' ``db_pos_id`` (N,) and ``db_yaw_deg`` (N,) given), each
    candidate is its position's stitched panorama around the candidate's yaw
    (:func:`panorama_curves`), on an azimuth grid wide enough for the widest query
    (``+-max(db_fov, query fov) / 2``, at most ``180 - max_shift_deg``), instead of its own view alone.
    """
    idx = np.asarray(cand_idx, np.int64)
    if idx.ndim != 2 or len(q_rows) != len(idx):
        raise ConfigError(f"candidate_costs needs cand_idx (M, K) and M query curves; got {idx.shape}, {len(q_rows)}")
    m, k0 = idx.shape
    k = min(cfg.k, k0)
    db = np.atleast_2d(np.asarray(db_rows, np.float64))
    fov = np.broadcast_to(np.asarray(q_fov_deg, np.float64), (m,))
    hgt = np.broadcast_to(np.asarray(q_height_px, np.float64), (m,))
    n = len(db)
    pit = np.broadcast_to(np.asarray(db_pitch_deg, np.float64), (n,))
    rol = np.broadcast_to(np.asarray(db_roll_deg, np.float64), (n,))
    grid = horizon_grid(db_fov_deg, cfg.step_deg)
    # every candidate view's curve once (a view is usually a candidate of many queries)
    used = np.unique(idx[:, :k][idx[:, :k] >= 0])
    panorama = bool(cfg.panorama) and db_pos_id is not None and db_yaw_deg is not None
    need = used
    if panorama and used.size:
        pid = np.asarray(db_pos_id, np.int64)
        need = np.flatnonzero(np.isin(pid, pid[used]))  # the candidates' positions' every view
    curves = np.full((n, len(grid)), np.nan, np.float32)
    if need.size:
        curves[need] = resample_horizon(
            db[need], db_fov_deg, db_height_px, grid, pitch_deg=pit[need], roll_deg=rol[need]
        )
    if panorama:
        half = min(max(float(db_fov_deg), float(np.max(fov, initial=0.0))) / 2.0, 180.0 - cfg.max_shift_deg)
        wide = horizon_grid(2.0 * half, cfg.step_deg)
        wide_curves = np.full((n, len(wide)), np.nan, np.float32)
        if used.size:
            wide_curves[used] = panorama_curves(curves, grid, pid, np.asarray(db_yaw_deg, np.float64), used, wide)
        curves, grid = wide_curves, wide
    costs = np.full((m, k), np.inf)
    for i in range(m):
        cand = idx[i, :k]
        valid = cand >= 0
        cc = np.where(valid[:, None], curves[np.maximum(cand, 0)], np.nan)
        costs[i], _ = skyline_costs(q_rows[i], float(fov[i]), int(hgt[i]), cc, cfg, grid)
        costs[i, ~valid] = np.inf
    return costs


def order_by_score(
    cand_idx: npt.ArrayLike,
    desc_dist: npt.ArrayLike,
    costs: npt.ArrayLike,
    weight: float,
    floor_deg2: float = 0.25,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Re-order each query's first k candidates (k = ``costs.shape[1]``) by :func:`fuse_scores`.

    ``cand_idx`` / ``desc_dist`` (M, K0), ``costs`` (M, k) in candidate order
    (:func:`candidate_costs`). Returns the (M, K0) int64 indices (columns beyond k keep their order)
    and the (M, k) costs and fused scores in the new order. Padding (-1) is neither a candidate nor
    part of the standardisation and sorts last; ties keep the descriptor order.
    """
    idx = np.asarray(cand_idx, np.int64)
    dist = np.asarray(desc_dist, np.float64)
    cost = np.asarray(costs, np.float64)
    m, k = cost.shape
    if dist.shape != idx.shape or len(idx) != m or idx.shape[1] < k:
        raise ConfigError(
            f"order_by_score needs cand_idx and desc_dist (M, K0) and costs (M, k <= K0); "
            f"got {idx.shape}, {dist.shape}, {cost.shape}"
        )
    out_idx = idx.copy()
    out_cost = np.full((m, k), np.inf)
    fused = np.zeros((m, k))
    for i in range(m):
        cand = idx[i, :k]
        valid = cand >= 0
        score = np.full(k, np.inf)
        if valid.any():
            score[valid] = fuse_scores(dist[i, :k][valid], cost[i][valid], weight, floor_deg2)
        order = np.lexsort((np.arange(k), score))  # stable: ties keep the descriptor order
        out_idx[i, :k] = cand[order]
        out_cost[i], fused[i] = cost[i][order], score[order]
    return out_idx, out_cost, fused


def rerank(
    cand_idx: npt.ArrayLike,
    desc_dist: npt.ArrayLike,
    q_rows: Sequence[npt.ArrayLike],
    q_fov_deg: npt.ArrayLike,
    q_height_px: npt.ArrayLike,
    db_rows: npt.ArrayLike,
    db_fov_deg: float,
    db_height_px: int,
    cfg: RerankConfig,
    *,
    db_pitch_deg: float | npt.ArrayLike = 0.0,
    db_roll_deg: float | npt.ArrayLike = 0.0,
    db_pos_id: npt.ArrayLike | None = None,
    db_yaw_deg: npt.ArrayLike | None = None,
    costs: npt.ArrayLike | None = None,
) -> RerankResult:
    """Re-rank each query's first ``cfg.k`` candidates by fused descriptor + skyline score.

    Parameters
    ----------
    cand_idx : (M, K0) int
        Database rows retrieved per query, best first (K0 >= 1; columns beyond ``cfg.k`` keep their order).
    desc_dist : (M, K0) float
        Their descriptor distances (squared L2 of unit descriptors).
    q_rows : M arrays (W_i,)
        Query photos' boundary rows (:func:`crosslocate.model.baselines.photo_horizon_rows`).
    q_fov_deg, q_height_px : (M,)
        Query FOVs (degrees) and heights (pixels).
    db_rows : (N, W) float
        Database views' boundary rows (:func:`crosslocate.datasets.derived.horizon_line` of depth).
    db_fov_deg, db_height_px : float, int
        Database FOV (degrees) and view height (pixels).
    db_pitch_deg, db_roll_deg : float or (N,)
        The database cameras' known gravity, degrees (0: level).
    db_pos_id, db_yaw_deg : (N,), optional
        The views' positions and yaws (degrees), for ``cfg.panorama`` (:func:`candidate_costs`).
    costs : (M, min(cfg.k, K0)) float, optional
        The candidates' geometric costs from :func:`candidate_costs` with the same candidates and
        search settings (to fuse at several weights without searching again); computed when None.

    Returns
    -------
    RerankResult; ``info`` has ``seconds_per_query`` (of the search and fusion, or of the fusion
    alone with given ``costs``), ``k``, ``weight``, ``n_poses``, ``queries_without_skyline``.
    """
    idx = np.asarray(cand_idx, np.int64)
    dist = np.asarray(desc_dist, np.float64)
    if idx.ndim != 2 or dist.shape != idx.shape or len(q_rows) != len(idx):
        raise ConfigError(
            f"rerank needs cand_idx and desc_dist (M, K) and M query curves; got {idx.shape}, {dist.shape}, {len(q_rows)}"
        )
    m, k0 = idx.shape
    k = min(cfg.k, k0)
    t0 = time.perf_counter()
    if costs is None:
        cost = candidate_costs(
            idx,
            q_rows,
            q_fov_deg,
            q_height_px,
            db_rows,
            db_fov_deg,
            db_height_px,
            cfg,
            db_pitch_deg=db_pitch_deg,
            db_roll_deg=db_roll_deg,
            db_pos_id=db_pos_id,
            db_yaw_deg=db_yaw_deg,
        )
    else:
        cost = np.asarray(costs, np.float64)
        if cost.shape != (m, k):
            raise ConfigError(f"rerank: given costs must be (M, k) = {(m, k)}, got {cost.shape}")
    out_idx, out_cost, fused = order_by_score(idx, dist, cost, cfg.weight, cfg.cost_floor_deg2)
    elapsed = time.perf_counter() - t0
    info = {
        "k": k,
        "weight": cfg.weight,
        "panorama": bool(cfg.panorama) and db_pos_id is not None and db_yaw_deg is not None,
        "n_poses": len(pose_grid(cfg)),
        "seconds_per_query": elapsed / max(m, 1),
        "queries_without_skyline": int(np.sum(~np.isfinite(cost).any(axis=1))) if k else m,
    }
    logger.info("re-ranked top %d of %d queries in %.3f s per query", k, m, info["seconds_per_query"])
    return RerankResult(indices=out_idx, costs=out_cost, fused=fused, info=info)


def union_candidates(rankings: Sequence[npt.ArrayLike], k: int) -> npt.NDArray[np.int64]:
    """(M, L) int64 candidate sets: per query, the first ``k`` entries of each ranking in turn, each
    database row kept at its first appearance, padded with -1 (L = the largest set's size).

    Parameters
    ----------
    rankings : sequence of (M, K_i) int
        Database rows per query, best first (-1 = none), e.g. the network's and the horizon search's.
    k : int
        Entries taken from each ranking (>= 1).
    """
    if k < 1 or not rankings:
        raise ConfigError(
            f"union_candidates needs k >= 1 and at least one ranking, got k={k}, {len(rankings)} ranking(s)"
        )
    parts = [np.asarray(r, np.int64)[:, :k] for r in rankings]
    m = len(parts[0])
    if any(p.ndim != 2 or len(p) != m for p in parts):
        raise ConfigError(f"union_candidates needs (M, K) rankings of the same M, got {[p.shape for p in parts]}")
    rows = []
    for i in range(m):
        seen = np.concatenate([p[i] for p in parts])
        seen = seen[seen >= 0]
        _, first = np.unique(seen, return_index=True)
        rows.append(seen[np.sort(first)])
    out = np.full((m, max((len(r) for r in rows), default=0)), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


__all__ = [
    "RerankConfig",
    "RerankResult",
    "candidate_costs",
    "fuse_scores",
    "order_by_score",
    "panorama_curves",
    "pose_grid",
    "rerank",
    "skyline_costs",
    "union_candidates",
]
