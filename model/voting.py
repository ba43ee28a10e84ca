"""Position voting: rank places (grid positions), not views, from a view ranking.

A database position holds 12 views (one per yaw). A user wants the place, so a position's evidence
is its best view in the top K, and a fraction of each neighbouring position's evidence is added
(views from nearby positions see nearly the same skyline, so the true place tends to light up its
neighbours too, while a lone false match does not)::

    w(r)    = 1 / (r + rank_offset)                     (r = 0-based rank of a view in the top K)
    own(p)  = max of w(r) over the views of position p in the top K (its best view)
    vote(p) = own(p) + neighbour_weight * mean of own(p') over the positions p' within the radius of p
                                                        (own = 0 for a neighbour without a view in the top K)

and places are ranked by ``vote`` (descending; ties by first appearance in the view ranking).
Only positions with at least one view in the top K are ranked. The best view, not the sum over the
12 yaws, is a position's evidence: the yaws facing away from the photo are noise (summing them
measured worse on the benchmark's flow test), and the neighbours' evidence is a mean, not a sum, so
a position with many neighbours (inside the grid, or among many candidates) gets no bonus for that
alone. With ``neighbour_weight = 0`` voting is the
no-voting reference, the place order of the view ranking itself (:func:`first_occurrence_places`).
The defaults (``rank_offset`` 5, ``neighbour_weight`` 0.5) are not tuned on data.

API
---
- ``VoteConfig`` (in :mod:`crosslocate.model.config`): ``rank_offset``, ``neighbour_weight``, ``neighbour_spacings`` (radius in grid
  spacings).
- ``position_ids(xy, tol_m=1.0) -> (ids (N,), centres (P, 2))``: views sharing a position.
- ``grid_spacing_m(centres) -> float``: the median nearest-neighbour distance of the positions.
- ``first_occurrence_places(cand_idx, pos_id) -> (M, L)``: positions in order of their best view.
- ``vote_places(cand_idx, pos_id, centres, cfg) -> (places (M, L), votes (M, L))``.
- ``place_recall(places, q_xy, centres, thresholds_m, ns)``: recall@N over ranked places.

Layouts: ``cand_idx`` (M, K) int64 view rows best first (-1 = none); ``xy`` metres in one projected
CRS; place lists (M, L) int64 position ids best first, padded with -1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError
from crosslocate.model.config import VoteConfig
from crosslocate.model.evaluate import RecallTable, recall_from_indices


def position_ids(xy: npt.ArrayLike, tol_m: float = 1.0) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Group views by position: ``ids`` (N,) int64 and ``centres`` (P, 2) float64 metres.

    Views whose positions round to the same ``tol_m`` cell share an id (the 12 yaws of a grid point).
    """
    a = np.asarray(xy, np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ConfigError(f"xy must be (N, 2) metres, got shape {a.shape}")
    keys = np.round(a / float(tol_m)).astype(np.int64)
    _, first, ids = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    return ids.reshape(-1).astype(np.int64), a[first]


def grid_spacing_m(centres: npt.ArrayLike) -> float:
    """Median distance from each position to its nearest other position, metres (inf for < 2)."""
    from scipy.spatial import cKDTree

    c = np.asarray(centres, np.float64)
    if len(c) < 2:
        return math.inf
    d, _ = cKDTree(c).query(c, k=2)
    return float(np.median(d[:, 1]))


def _pad(rows: list[list[int]], fill: int = -1) -> npt.NDArray[np.int64]:
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), fill, np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def first_occurrence_places(cand_idx: npt.ArrayLike, pos_id: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """(M, L) positions in the order of their best-ranked view (the view ranking read as places)."""
    idx = np.asarray(cand_idx, np.int64)
    pid = np.asarray(pos_id, np.int64)
    rows = []
    for row in idx:
        seen = pid[row[row >= 0]]
        _, first = np.unique(seen, return_index=True)
        rows.append(seen[np.sort(first)].tolist())
    return _pad(rows)


def vote_places(
    cand_idx: npt.ArrayLike, pos_id: npt.ArrayLike, centres: npt.ArrayLike, cfg: VoteConfig
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Rank positions by pooled view evidence plus a share of their neighbours' (module docstring).

    Returns ``places`` (M, L) int64 position ids best first (-1 padded) and ``votes`` (M, L) float64.
    """
    from scipy.spatial import cKDTree

    idx = np.asarray(cand_idx, np.int64)
    pid = np.asarray(pos_id, np.int64)
    c = np.asarray(centres, np.float64)
    if idx.ndim != 2:
        raise ConfigError(f"cand_idx must be (M, K), got shape {idx.shape}")
    if pid.size and pid.max() >= len(c):
        raise ConfigError(f"pos_id refers to position {pid.max()} but only {len(c)} centres are given")
    radius = cfg.neighbour_spacings * grid_spacing_m(c)
    tree = cKDTree(c) if len(c) and math.isfinite(radius) and cfg.neighbour_weight > 0 else None
    places, votes = [], []
    w_rank = 1.0 / (np.arange(idx.shape[1]) + cfg.rank_offset)
    for row in idx:
        ok = row >= 0
        p = pid[row[ok]]
        own: dict[int, float] = {}
        for q, w in zip(p.tolist(), w_rank[ok].tolist(), strict=True):
            own[q] = max(own.get(q, 0.0), w)
        order = list(dict.fromkeys(p.tolist()))  # first appearance, for ties
        vote = dict(own)
        if tree is not None:
            for q in order:
                nbs = [nb for nb in tree.query_ball_point(c[q], r=radius * (1 + 1e-9)) if nb != q]
                if nbs:
                    vote[q] += cfg.neighbour_weight * sum(own.get(nb, 0.0) for nb in nbs) / len(nbs)
        ranked = sorted(range(len(order)), key=lambda j: (-vote[order[j]], j))
        places.append([order[j] for j in ranked])
        votes.append([vote[order[j]] for j in ranked])
    out_v = np.zeros((len(votes), max((len(v) for v in votes), default=0)))
    for i, v in enumerate(votes):
        out_v[i, : len(v)] = v
    return _pad(places), out_v


def place_recall(
    places: npt.ArrayLike,
    q_xy: npt.ArrayLike,
    centres: npt.ArrayLike,
    thresholds_m: Sequence[float],
    ns: Sequence[int],
) -> RecallTable:
    """Recall@N over ranked places: a query is found at N when one of its first N places lies within the threshold."""
    return recall_from_indices(places, q_xy, centres, thresholds_m, ns)


__all__ = [
    "VoteConfig",
    "first_occurrence_places",
    "grid_spacing_m",
    "place_recall",
    "position_ids",
    "vote_places",
]
