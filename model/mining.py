"""Training tuples from a descriptor cache: geographic positives and hard negatives (pure numpy + scipy KD-tree).

API
---
- ``positive_candidates(q_xy, q_yaw, db_xy, db_yaw, radius_m, max_yaw_deg) -> list of (n_i,) int64``:
  database views within ``radius_m`` metres and ``max_yaw_deg`` of yaw of each query.
- ``far_candidates(q_xy, db_xy, min_dist_m) -> list of (m_i,) int64``: views at least ``min_dist_m`` away.
- ``sq_distances(q (D,), db (n, D)) -> (n,)``: squared L2 descriptor distances.
- ``mine_tuple(...)`` / ``mine_tuples(...)``: one positive (the candidate closest in descriptor
  space) and ``n_negatives`` negatives per query: sample ``neg_pool_size`` far candidates (>= 2 km),
  keep the ``neg_hardest`` closest in descriptor space, use those with
  ``d^2(q, n) < d^2(q, p) + neg_slack`` (hardest first), pad with random far candidates.

Inputs: positions ``xy`` (N, 2) float metres in one projected CRS, ``yaw`` (N,) degrees clockwise
from north, descriptors (N, D) float32 (unit rows in practice; distances are computed exactly
either way). Randomness comes only from ``seed`` (``np.random.default_rng(seed)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.dem.poses import yaw_difference_deg
from crosslocate.errors import ConfigError

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.floating[Any]]


def _xy(name: str, a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConfigError(f"{name} must be (N, 2) metres, got shape {arr.shape}")
    return arr


def positive_candidates(
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    radius_m: float,
    max_yaw_deg: float,
) -> list[IntArray]:
    """Per query, the database indices within ``radius_m`` (<=) and ``max_yaw_deg`` (<=), ascending.

    Parameters
    ----------
    q_xy : (Q, 2) float, metres;  q_yaw : (Q,) float, degrees
    db_xy : (N, 2) float, metres (same CRS);  db_yaw : (N,) float, degrees
    """
    return _in_reach(q_xy, q_yaw, db_xy, db_yaw, 0.0, radius_m, max_yaw_deg)


def _in_reach(
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    min_dist_m: float,
    max_dist_m: float,
    max_yaw_deg: float,
) -> list[IntArray]:
    """Per query, the ascending database indices at distance in [min, max] metres and yaw difference <= max."""
    from scipy.spatial import cKDTree

    qxy, dxy = _xy("q_xy", q_xy), _xy("db_xy", db_xy)
    qyaw, dyaw = np.asarray(q_yaw, np.float64).reshape(-1), np.asarray(db_yaw, np.float64).reshape(-1)
    if len(qyaw) != len(qxy) or len(dyaw) != len(dxy):
        raise ConfigError(f"yaw lengths ({len(qyaw)}, {len(dyaw)}) do not match xy ({len(qxy)}, {len(dxy)})")
    if len(dxy) == 0:
        return [np.zeros(0, np.int64) for _ in range(len(qxy))]
    out = []
    for i, idx in enumerate(cKDTree(dxy).query_ball_point(qxy, r=float(max_dist_m))):
        idx = np.asarray(sorted(idx), dtype=np.int64)
        keep = yaw_difference_deg(dyaw[idx], qyaw[i]) <= max_yaw_deg
        if min_dist_m > 0:
            keep &= np.linalg.norm(dxy[idx] - qxy[i], axis=1) >= min_dist_m
        out.append(idx[keep])
    return out


def _far_one(tree: Any, dxy: npt.NDArray[np.float64], q: npt.NDArray[np.float64], min_dist_m: float) -> IntArray:
    idx = np.asarray(tree.query_ball_point(q, r=float(min_dist_m)), dtype=np.int64)
    d = np.linalg.norm(dxy[idx] - q, axis=1)
    mask = np.ones(len(dxy), dtype=bool)
    mask[idx[d < min_dist_m]] = False
    return np.flatnonzero(mask).astype(np.int64)


def far_candidates(q_xy: npt.ArrayLike, db_xy: npt.ArrayLike, min_dist_m: float) -> list[IntArray]:
    """Per query, the database indices at distance >= ``min_dist_m`` metres, ascending (Q arrays of up to N)."""
    from scipy.spatial import cKDTree

    qxy, dxy = _xy("q_xy", q_xy), _xy("db_xy", db_xy)
    if len(dxy) == 0:
        return [np.zeros(0, np.int64) for _ in range(len(qxy))]
    tree = cKDTree(dxy)
    return [_far_one(tree, dxy, q, min_dist_m) for q in qxy]


def near_candidates(
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    min_dist_m: float,
    max_dist_m: float,
    max_yaw_deg: float,
) -> IntArray:
    """Database indices in some query's neighbourhood: its distance in [``min_dist_m``, ``max_dist_m``] and
    yaw difference <= ``max_yaw_deg`` from that same query; ascending, unique (K,) int64.

    The hard negatives a large region's random sample almost never holds: views of the query's own
    mountains from a few km away, facing the same way.

    Parameters
    ----------
    q_xy : (Q, 2) float, metres;  q_yaw : (Q,) float, degrees
    db_xy : (N, 2) float, metres (same CRS);  db_yaw : (N,) float, degrees
    """
    per_query = _in_reach(q_xy, q_yaw, db_xy, db_yaw, min_dist_m, max_dist_m, max_yaw_deg)
    return np.unique(np.concatenate(per_query)) if per_query else np.zeros(0, np.int64)


def sq_distances(q: FloatArray, db: FloatArray) -> npt.NDArray[np.float64]:
    """Squared L2 distances (n,) float64 between descriptor ``q`` (D,) and rows of ``db`` (n, D)."""
    diff = np.asarray(db, np.float64) - np.asarray(q, np.float64)[None, :]
    return np.einsum("ij,ij->i", diff, diff)


def mine_tuple(
    q_desc: FloatArray,
    db_desc: FloatArray,
    positives: IntArray,
    far: IntArray,
    rng: np.random.Generator,
    *,
    n_negatives: int = 10,
    neg_pool_size: int = 4000,
    neg_hardest: int = 100,
    neg_slack: float = 0.2,
) -> tuple[int, IntArray, int]:
    """One tuple: (positive index, (n_negatives,) negative indices, number of hard negatives used).

    ``positives`` and ``far`` are candidate index arrays (see :func:`positive_candidates`,
    :func:`far_candidates`). Returns positive -1 and an empty array when either is empty. When fewer
    far views than ``n_negatives`` exist, negatives are drawn with replacement.
    """
    if positives.size == 0 or far.size == 0:
        return -1, np.zeros(0, np.int64), 0
    d_pos = sq_distances(q_desc, db_desc[positives])
    j = int(np.argmin(d_pos))
    pos, d2p = int(positives[j]), float(d_pos[j])
    pool = far if far.size <= neg_pool_size else rng.choice(far, size=neg_pool_size, replace=False)
    d_pool = sq_distances(q_desc, db_desc[pool])
    order = np.argsort(d_pool, kind="stable")[:neg_hardest]
    hard = pool[order][d_pool[order] < d2p + neg_slack][:n_negatives]
    n_hard = int(hard.size)
    missing = n_negatives - n_hard
    if missing > 0:
        rest = np.setdiff1d(far, hard, assume_unique=False)
        if rest.size >= missing:
            pad = rng.choice(rest, size=missing, replace=False)
        else:
            pad = np.concatenate([rest, rng.choice(far, size=missing - rest.size, replace=True)])
        hard = np.concatenate([hard, pad])
    return pos, hard.astype(np.int64), n_hard


def mine_tuples(
    q_desc: FloatArray,
    db_desc: FloatArray,
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    *,
    pos_radius_m: float = 20.0,
    pos_yaw_deg: float = 15.0,
    neg_min_dist_m: float = 2000.0,
    n_negatives: int = 10,
    neg_pool_size: int = 4000,
    neg_hardest: int = 100,
    neg_slack: float = 0.2,
    seed: int | Sequence[int] = 0,
) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
    """Mine one tuple per query from cached descriptors.

    Parameters
    ----------
    q_desc : (Q, D) float32
        Query descriptors.
    db_desc : (N, D) float32
        Database descriptors.
    q_xy, db_xy : (Q, 2), (N, 2) float
        Positions, metres in one projected CRS.
    q_yaw, db_yaw : (Q,), (N,) float
        Yaws, degrees clockwise from north.
    pos_radius_m, pos_yaw_deg, neg_min_dist_m, n_negatives, neg_pool_size, neg_hardest, neg_slack
        See :class:`crosslocate.model.config.TrainConfig` (defaults: the paper's numbers).
    seed : int or sequence of int
        Seed of the candidate sampling and padding (e.g. ``(train_seed, epoch)``).

    Returns
    -------
    positive : (Q,) int64
        Database index of each query's positive; -1 where the query has no positive or no far view.
    negatives : (Q, n_negatives) int64
        Negatives, hardest first then random padding; rows of invalid queries are -1.
    valid : (Q,) bool
        Queries that got a tuple.
    """
    qd, dd = np.asarray(q_desc), np.asarray(db_desc)
    if qd.ndim != 2 or dd.ndim != 2 or (len(dd) and len(qd) and qd.shape[1] != dd.shape[1]):
        raise ConfigError(f"descriptors must be (Q, D) and (N, D) with equal D, got {qd.shape} and {dd.shape}")
    if len(qd) != len(np.asarray(q_xy)) or len(dd) != len(np.asarray(db_xy)):
        raise ConfigError(
            f"descriptor counts ({len(qd)}, {len(dd)}) do not match positions ({len(np.asarray(q_xy))}, "
            f"{len(np.asarray(db_xy))})"
        )
    if n_negatives < 1 or neg_hardest < 1 or neg_pool_size < 1:
        raise ConfigError(
            f"n_negatives/neg_hardest/neg_pool_size must be >= 1, got {n_negatives}/{neg_hardest}/{neg_pool_size}"
        )
    rng = np.random.default_rng(seed)
    from scipy.spatial import cKDTree

    pos_c = positive_candidates(q_xy, q_yaw, db_xy, db_yaw, pos_radius_m, pos_yaw_deg)
    qxy, dxy = _xy("q_xy", q_xy), _xy("db_xy", db_xy)
    tree = cKDTree(dxy) if len(dxy) else None
    nq = len(qd)
    positive = np.full(nq, -1, np.int64)
    negatives = np.full((nq, n_negatives), -1, np.int64)
    for i in range(nq):
        p, negs, _ = mine_tuple(
            qd[i],
            dd,
            pos_c[i],
            _far_one(tree, dxy, qxy[i], neg_min_dist_m) if tree is not None else np.zeros(0, np.int64),
            rng,
            n_negatives=n_negatives,
            neg_pool_size=neg_pool_size,
            neg_hardest=neg_hardest,
            neg_slack=neg_slack,
        )
        if p >= 0:
            positive[i], negatives[i] = p, negs
    return positive, negatives, positive >= 0


def mine_tuples_cfg(
    cfg: Any,
    q_desc: FloatArray,
    db_desc: FloatArray,
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    *,
    seed: int | Sequence[int] | None = None,
) -> tuple[IntArray, IntArray, npt.NDArray[np.bool_]]:
    """:func:`mine_tuples` with every number taken from a :class:`TrainConfig` (``seed`` default: ``cfg.seed``)."""
    return mine_tuples(
        q_desc,
        db_desc,
        q_xy,
        q_yaw,
        db_xy,
        db_yaw,
        pos_radius_m=cfg.pos_radius_m,
        pos_yaw_deg=cfg.pos_yaw_deg,
        neg_min_dist_m=cfg.neg_min_dist_m,
        n_negatives=cfg.n_negatives,
        neg_pool_size=cfg.neg_pool_size,
        neg_hardest=cfg.neg_hardest,
        neg_slack=cfg.neg_slack,
        seed=cfg.seed if seed is None else seed,
    )


__all__ = [
    "far_candidates",
    "mine_tuple",
    "mine_tuples",
    "mine_tuples_cfg",
    "near_candidates",
    "positive_candidates",
    "sq_distances",
]
