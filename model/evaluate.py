"""Recall@N of a retrieval against true positions (pure numpy + scipy), and its analytic chance level.

API
---
- ``retrieved_distances(indices, q_xy, db_xy) -> (M, K) float64``: metres from each query's true
  position to each retrieved view (``inf`` where the index is -1, faiss's "no result").
- ``recall_at_n(dist, thresholds_m, ns) -> {threshold: {N: fraction}}``: a query counts as found at
  N when one of its first N retrieved views lies within the threshold (``dist <= t``); entries set
  to ``inf`` never count (use that to impose extra conditions). N larger than K uses all K.
- ``recall_from_indices(indices, q_xy, db_xy, thresholds_m, ns, ...)``: the same from indices,
  optionally orientation-restricted (``q_yaw``, ``db_yaw``, ``max_yaw_deg``).
- ``oriented_recall(...)``: correct only if also within ``max_yaw_deg`` (30) of yaw.
- ``recall_interval(dist, groups, threshold_m, ns)``: bootstrap interval of recall@N resampling
  whole groups of queries (the photos of one spot), ``{N: (low, high)}``.
- ``paired_difference(dist_a, dist_b, groups, threshold_m, ns)``: recall@N of ranking A minus
  ranking B photo by photo on the same queries (runs of one side, e.g. seeds, averaged per photo),
  with a group-bootstrap interval and the photos only one side finds; ``group_bootstrap`` is the
  resampling both intervals use.
- ``per_fov_recall(indices, q_xy, db_xy, q_fov_deg, edges_deg, thresholds_m, ns)``:
  ``{"lo-hi": {"n": count, "recall": table}}`` for queries with ``lo <= fov < hi``.
- ``correct_counts(q_xy, db_xy, threshold_m, ...) -> (M,) int64``: c_q, the database views that
  would be correct for each query.
- ``chance_recall(q_xy, db_xy, thresholds_m, ns, ...)``: the expected recall@N of a uniformly
  random ranking, ``mean_q [1 - C(N_db - c_q, N) / C(N_db, N)]`` (log-gamma, stable for millions).
- ``confuser_profile(dist, q_xy, db_xy, top_n=10, threshold_m=1000)``: where a ranking's wrong
  answers lie: the distance from the photo of each wrong view among the top N, in bins (1-2, 2-4,
  4-8, 8-20, > 20 km), beside the same bins for every wrong database view (what a ranking blind to
  geography would return).
- ``evaluate_retrieval(indices, q_xy, q_yaw, q_fov_deg, db_xy, db_yaw, cfg, groups=None)``: all of
  the above with the settings of an :class:`~crosslocate.model.config.EvalConfig` (thresholds, N,
  yaw limit, FOV bins), in the results-file layout (``table_to_json``: string keys); the one
  evaluation the benchmark and every baseline go through.

Layouts: ``indices`` (M, K) int64, row q = database rows retrieved for query q, best first
(0-based); ``q_xy`` (M, 2), ``db_xy`` (N, 2) float metres in one projected CRS; yaws (M,)/(N,)
degrees clockwise from north; FOV (M,) degrees. Tables use float thresholds and int N as keys.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.dem.poses import yaw_difference_deg
from crosslocate.errors import ConfigError

RecallTable = dict[float, dict[int, float]]


def _xy(name: str, a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConfigError(f"{name} must be (N, 2) metres, got shape {arr.shape}")
    return arr


def _indices(indices: npt.ArrayLike, n_queries: int, n_db: int) -> npt.NDArray[np.int64]:
    idx = np.asarray(indices, dtype=np.int64)
    if idx.ndim != 2 or len(idx) != n_queries:
        raise ConfigError(f"indices must be (M, K) with M = {n_queries} queries, got shape {idx.shape}")
    if idx.size and (idx.max() >= n_db or idx.min() < -1):
        raise ConfigError(f"indices must lie in [-1, {n_db - 1}] (database size {n_db}), got {idx.min()}..{idx.max()}")
    return idx


def retrieved_distances(indices: npt.ArrayLike, q_xy: npt.ArrayLike, db_xy: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(M, K) float64 metres between query q and its k-th retrieved view; ``inf`` for index -1."""
    qxy, dxy = _xy("q_xy", q_xy), _xy("db_xy", db_xy)
    idx = _indices(indices, len(qxy), len(dxy))
    d = np.linalg.norm(dxy[np.maximum(idx, 0)] - qxy[:, None, :], axis=2)
    return np.where(idx >= 0, d, np.inf)


def recall_at_n(dist: npt.ArrayLike, thresholds_m: Sequence[float], ns: Sequence[int]) -> RecallTable:
    """``{t: {N: fraction of queries with min(dist[q, :N]) <= t}}`` for (M, K) distances in metres."""
    d = np.asarray(dist, dtype=np.float64)
    if d.ndim != 2:
        raise ConfigError(f"dist must be (M, K), got shape {d.shape}")
    if any(int(n) < 1 for n in ns):
        raise ConfigError(f"N values must be >= 1, got {list(ns)}")
    out: RecallTable = {}
    if d.shape[1] == 0 or d.shape[0] == 0:
        return {float(t): {int(n): float("nan") if d.shape[0] == 0 else 0.0 for n in ns} for t in thresholds_m}
    best = np.minimum.accumulate(d, axis=1)  # best[q, j] = min distance among the first j+1 retrieved
    for t in thresholds_m:
        hit = best <= float(t)
        out[float(t)] = {int(n): float(hit[:, min(int(n), d.shape[1]) - 1].mean()) for n in ns}
    return out


def recall_interval(
    dist: npt.ArrayLike,
    groups: npt.ArrayLike,
    threshold_m: float,
    ns: Sequence[int],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[int, tuple[float, float]]:
    """Bootstrap interval of recall@N that resamples whole groups of queries.

    Photos taken from one spot are not independent trials, so the groups (e.g. one id per camera
    position) are drawn with replacement, ``n_boot`` times, and the recall of each draw is the
    pooled hit fraction of its queries. Returns ``{N: (low, high)}``, the central ``level``
    percentile interval. With one query per group this is the ordinary bootstrap (half-width
    about ``1.96 sqrt(p (1 - p) / M)``); groups of k identical outcomes widen it by about sqrt(k).

    Parameters
    ----------
    dist : (M, K) float
        Metres from each query to its retrieved views, best first (as :func:`recall_at_n`).
    groups : (M,) array
        Group label of each query (any hashable numpy dtype).
    """
    d = np.asarray(dist, dtype=np.float64)
    g = np.asarray(groups)
    if d.ndim != 2 or g.shape != (d.shape[0],):
        raise ConfigError(f"recall_interval needs dist (M, K) and groups (M,), got {d.shape} and {g.shape}")
    if d.shape[0] == 0 or d.shape[1] == 0:
        _check_bootstrap(level, n_boot)
        return {int(n): (float("nan"), float("nan")) for n in ns}
    lo, hi = group_bootstrap(_hits(d, threshold_m, ns), g, level=level, n_boot=n_boot, seed=seed)
    return {int(n): (float(lo[k]), float(hi[k])) for k, n in enumerate(ns)}


def _hits(dist: npt.NDArray[np.float64], threshold_m: float, ns: Sequence[int]) -> npt.NDArray[np.float64]:
    """(..., M, len(ns)) float64 1.0 where a query is found at N within ``threshold_m`` (dist (..., M, K))."""
    best = np.minimum.accumulate(dist, axis=-1)
    cols = [min(int(n), dist.shape[-1]) - 1 for n in ns]
    return (best[..., cols] <= float(threshold_m)).astype(np.float64)


def _check_bootstrap(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0 or n_boot < 1:
        raise ConfigError(f"a bootstrap needs 0 < level < 1 and n_boot >= 1, got {level}, {n_boot}")


def group_bootstrap(
    values: npt.ArrayLike, groups: npt.ArrayLike, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Percentile interval of the per-query mean of ``values`` (M, C) that resamples whole groups.

    The groups (M,) are drawn with replacement ``n_boot`` times; each draw's statistic is the pooled
    mean of its queries' rows (a group drawn twice counts twice). Returns (low, high), each (C,)
    float64, the central ``level`` interval.
    """
    v = np.asarray(values, dtype=np.float64)
    g = np.asarray(groups)
    if v.ndim != 2 or g.shape != (v.shape[0],) or v.shape[0] == 0:
        raise ConfigError(
            f"group_bootstrap needs values (M, C) and groups (M,) with M > 0, got {v.shape} and {g.shape}"
        )
    _check_bootstrap(level, n_boot)
    _, gid = np.unique(g, return_inverse=True)
    n_groups = int(gid.max()) + 1
    sums = np.zeros((n_groups, v.shape[1]))
    np.add.at(sums, gid, v)
    counts = np.bincount(gid, minlength=n_groups).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    weights = np.zeros((n_boot, n_groups))
    np.add.at(weights, (np.repeat(np.arange(n_boot), n_groups), draws.ravel()), 1.0)
    boot = (weights @ sums) / (weights @ counts)[:, None]  # (n_boot, C)
    lo, hi = np.quantile(boot, [(1.0 - level) / 2.0, (1.0 + level) / 2.0], axis=0)
    return lo, hi


def paired_difference(
    dist_a: npt.ArrayLike,
    dist_b: npt.ArrayLike,
    groups: npt.ArrayLike,
    threshold_m: float,
    ns: Sequence[int],
    *,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[int, dict[str, Any]]:
    """Recall@N of ranking A minus ranking B on the same queries, with a group-bootstrap interval.

    Both are scored on the same photos, so the difference is taken photo by photo (a paired test):
    what the spread of either recall shares, the difficulty of each photo, cancels. Several runs of
    one side (e.g. seeds) are averaged per photo first, so the interval covers the choice of photos
    for the mean over runs (the seed spread itself is reported beside it by the caller).

    Parameters
    ----------
    dist_a, dist_b : (M, K) or (S, M, K) float
        Metres from each query to its retrieved views, best first (:func:`retrieved_distances`), for
        S runs of A (or B) on the same M queries in the same order.
    groups : (M,) array
        Group label of each query (one per camera spot), resampled whole as in :func:`recall_interval`.

    Returns
    -------
    ``{N: {"a", "b", "diff", "low", "high", "only_a", "only_b", "n"}}``: recall of A and of B (mean
    over runs), A - B, the ``level`` interval of A - B, the photos A finds and B misses (and the
    converse; means over runs, so not always whole numbers: with one run each, the discordant pairs
    of McNemar's test), and the number of photos M.
    """
    a = np.asarray(dist_a, dtype=np.float64)
    b = np.asarray(dist_b, dtype=np.float64)
    a = a[None] if a.ndim == 2 else a
    b = b[None] if b.ndim == 2 else b
    g = np.asarray(groups)
    if a.ndim != 3 or b.ndim != 3 or a.shape[1] != b.shape[1] or g.shape != (a.shape[1],) or a.shape[1] == 0:
        raise ConfigError(
            f"paired_difference needs dist (M, K) or (S, M, K) for both sides on the same M > 0 queries and "
            f"groups (M,), got {a.shape}, {b.shape} and {g.shape}"
        )
    ha = _hits(a, threshold_m, ns)  # (S_a, M, C)
    hb = _hits(b, threshold_m, ns)
    only_a = (ha[:, None] * (1.0 - hb[None])).sum(axis=2).mean(axis=(0, 1))  # (C,) over run pairs
    only_b = ((1.0 - ha[:, None]) * hb[None]).sum(axis=2).mean(axis=(0, 1))
    diff = ha.mean(axis=0) - hb.mean(axis=0)  # (M, C)
    lo, hi = group_bootstrap(diff, g, level=level, n_boot=n_boot, seed=seed)
    return {
        int(n): {
            "a": float(ha[:, :, k].mean()),
            "b": float(hb[:, :, k].mean()),
            "diff": float(diff[:, k].mean()),
            "low": float(lo[k]),
            "high": float(hi[k]),
            "only_a": float(only_a[k]),
            "only_b": float(only_b[k]),
            "n": int(a.shape[1]),
        }
        for k, n in enumerate(ns)
    }


def _oriented(
    dist: npt.NDArray[np.float64],
    idx: npt.NDArray[np.int64],
    q_yaw: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    max_yaw_deg: float,
) -> npt.NDArray[np.float64]:
    qy = np.asarray(q_yaw, np.float64).reshape(-1)
    dy = np.asarray(db_yaw, np.float64).reshape(-1)
    dyaw = yaw_difference_deg(dy[np.maximum(idx, 0)], qy[:, None])
    return np.where(dyaw <= max_yaw_deg, dist, np.inf)


def recall_from_indices(
    indices: npt.ArrayLike,
    q_xy: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    thresholds_m: Sequence[float],
    ns: Sequence[int],
    *,
    q_yaw: npt.ArrayLike | None = None,
    db_yaw: npt.ArrayLike | None = None,
    max_yaw_deg: float | None = None,
) -> RecallTable:
    """Recall@N table of a ranking; with ``max_yaw_deg`` a view must also be within that yaw difference."""
    dist = retrieved_distances(indices, q_xy, db_xy)
    if max_yaw_deg is not None:
        if q_yaw is None or db_yaw is None:
            raise ConfigError("orientation-restricted recall needs q_yaw and db_yaw")
        dist = _oriented(dist, np.asarray(indices, np.int64), q_yaw, db_yaw, max_yaw_deg)
    return recall_at_n(dist, thresholds_m, ns)


def oriented_recall(
    indices: npt.ArrayLike,
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    thresholds_m: Sequence[float],
    ns: Sequence[int],
    max_yaw_deg: float = 30.0,
) -> RecallTable:
    """Recall@N where a retrieved view is correct only within the distance *and* ``max_yaw_deg`` of yaw."""
    return recall_from_indices(
        indices, q_xy, db_xy, thresholds_m, ns, q_yaw=q_yaw, db_yaw=db_yaw, max_yaw_deg=max_yaw_deg
    )


def per_fov_recall(
    indices: npt.ArrayLike,
    q_xy: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    q_fov_deg: npt.ArrayLike,
    edges_deg: Sequence[float],
    thresholds_m: Sequence[float],
    ns: Sequence[int],
) -> dict[str, dict[str, Any]]:
    """Recall tables per query-FOV bin ``[lo, hi)``; empty bins are left out. Keys ``"lo-hi"`` (%g)."""
    fov = np.asarray(q_fov_deg, np.float64).reshape(-1)
    idx = np.asarray(indices, np.int64)
    qxy = _xy("q_xy", q_xy)
    if len(fov) != len(qxy):
        raise ConfigError(f"q_fov_deg has {len(fov)} values for {len(qxy)} queries")
    out: dict[str, dict[str, Any]] = {}
    for lo, hi in itertools.pairwise(edges_deg):
        m = (fov >= lo) & (fov < hi)
        if m.any():
            out[f"{lo:g}-{hi:g}"] = {
                "n": int(m.sum()),
                "recall": recall_from_indices(idx[m], qxy[m], db_xy, thresholds_m, ns),
            }
    return out


def correct_counts(
    q_xy: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    threshold_m: float,
    *,
    q_yaw: npt.ArrayLike | None = None,
    db_yaw: npt.ArrayLike | None = None,
    max_yaw_deg: float | None = None,
) -> npt.NDArray[np.int64]:
    """(M,) int64: c_q = number of database views within ``threshold_m`` (and ``max_yaw_deg``) of query q."""
    from scipy.spatial import cKDTree

    qxy, dxy = _xy("q_xy", q_xy), _xy("db_xy", db_xy)
    if len(dxy) == 0:
        return np.zeros(len(qxy), np.int64)
    tree = cKDTree(dxy)
    if max_yaw_deg is None:
        return np.asarray(tree.query_ball_point(qxy, r=float(threshold_m), return_length=True), np.int64).reshape(-1)
    if q_yaw is None or db_yaw is None:
        raise ConfigError("orientation-restricted counts need q_yaw and db_yaw")
    qy, dy = np.asarray(q_yaw, np.float64).reshape(-1), np.asarray(db_yaw, np.float64).reshape(-1)
    lists = tree.query_ball_point(qxy, r=float(threshold_m))
    return np.array(
        [
            int((yaw_difference_deg(dy[np.asarray(li, np.int64)], qy[i]) <= max_yaw_deg).sum())
            for i, li in enumerate(lists)
        ],
        np.int64,
    )


def chance_recall_from_counts(counts: npt.ArrayLike, n_db: int, ns: Sequence[int]) -> dict[int, float]:
    """``{N: mean_q [1 - C(n_db - c_q, N) / C(n_db, N)]}``: recall@N of a uniformly random ranking.

    Computed with log-gamma; ``C(a, N) = 0`` when ``a < N`` (then a correct view is certain).
    """
    from scipy.special import gammaln

    c = np.asarray(counts, np.float64).reshape(-1)
    if len(c) == 0:
        return {int(n): float("nan") for n in ns}
    if n_db < 1 or (c > n_db).any() or (c < 0).any():
        raise ConfigError(f"counts must lie in [0, n_db={n_db}]")
    out: dict[int, float] = {}
    for n in ns:
        nn = min(int(n), n_db)
        a = n_db - c
        ok = a >= nn
        log_ratio = np.where(
            ok,
            gammaln(np.maximum(a, nn) + 1)
            - gammaln(np.maximum(a, nn) - nn + 1)
            - gammaln(n_db + 1)
            + gammaln(n_db - nn + 1),
            -np.inf,
        )
        # c_q = 0 gives exactly 0 (the log-gamma terms cancel only up to rounding)
        out[int(n)] = float(np.mean(np.where(c > 0, np.clip(1.0 - np.exp(log_ratio), 0.0, 1.0), 0.0)))
    return out


def chance_recall(
    q_xy: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    thresholds_m: Sequence[float],
    ns: Sequence[int],
    *,
    q_yaw: npt.ArrayLike | None = None,
    db_yaw: npt.ArrayLike | None = None,
    max_yaw_deg: float | None = None,
) -> RecallTable:
    """Analytic chance recall@N table from the database layout (see :func:`chance_recall_from_counts`)."""
    n_db = len(_xy("db_xy", db_xy))
    return {
        float(t): chance_recall_from_counts(
            correct_counts(q_xy, db_xy, t, q_yaw=q_yaw, db_yaw=db_yaw, max_yaw_deg=max_yaw_deg), n_db, ns
        )
        for t in thresholds_m
    }


#: N values of the bootstrap intervals of a report (``recall_ci95``).
CI_NS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)


#: Upper edges (metres) of :func:`confuser_profile`'s bins after the hit threshold; the last bin is open.
CONFUSER_EDGES_M: tuple[float, ...] = (2000.0, 4000.0, 8000.0, 20_000.0)


def _bin_labels(threshold_m: float, edges_m: Sequence[float]) -> list[str]:
    lows = [threshold_m, *edges_m]
    return [f"{a / 1000:g}-{b / 1000:g} km" for a, b in zip(lows, edges_m, strict=False)] + [
        f"> {lows[-1] / 1000:g} km"
    ]


def confuser_profile(
    dist: npt.ArrayLike,
    q_xy: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    *,
    top_n: int = 10,
    threshold_m: float = 1000.0,
    edges_m: Sequence[float] = CONFUSER_EDGES_M,
) -> dict[str, Any]:
    """Where a ranking's wrong answers lie, beside where the database's wrong views lie.

    Parameters
    ----------
    dist : (M, K) float
        Metres from each query to its retrieved views, best first (:func:`retrieved_distances`;
        ``inf`` entries are no result and are skipped).
    q_xy : (M, 2) float;  db_xy : (N, 2) float
        Query and database positions, metres in one projected CRS.
    top_n : int
        Retrieved views looked at per query (the first N).
    threshold_m : float
        A view within this distance of the query is a hit, not a confuser.
    edges_m : sequence of float
        Increasing upper bin edges beyond ``threshold_m``, metres; the last bin is open.

    Returns
    -------
    dict
        ``bins`` (labels), ``wrong`` (fraction of the wrong top-N views in each bin), ``database``
        (fraction of all query-view pairs beyond ``threshold_m`` in each bin: a ranking that ignores
        geography), ``n_wrong``, ``top_n``, ``threshold_m``. ``wrong`` well above ``database`` in the
        first bins: the net confuses a place with its surroundings; in the last bin: with far places.
    """
    d = np.asarray(dist, dtype=np.float64)
    qxy, dxy = _xy("q_xy", q_xy), _xy("db_xy", db_xy)
    if d.ndim != 2 or len(d) != len(qxy):
        raise ConfigError(f"dist must be (M, K) with M = {len(qxy)} queries, got shape {d.shape}")
    if isinstance(top_n, bool) or not isinstance(top_n, int | np.integer) or top_n < 1:
        raise ConfigError(f"top_n must be an int >= 1, got {top_n!r}")
    edges = [float(e) for e in edges_m]
    if not edges or any(b <= a for a, b in zip([float(threshold_m), *edges], edges, strict=False)):
        raise ConfigError(f"edges_m must increase from threshold_m={threshold_m}, got {list(edges_m)}")
    upper, nbins = np.asarray(edges), len(edges) + 1

    def counts(r: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:  # bins (lo, hi]: like hits, d <= t
        return np.bincount(np.searchsorted(upper, r[r > threshold_m], side="left"), minlength=nbins)

    top = d[:, :top_n]
    n_wrong = counts(top[np.isfinite(top)])
    n_db = np.zeros(nbins, np.int64)
    for q in qxy:  # one query at a time: (N,) at most in memory for million-view databases
        n_db += counts(np.linalg.norm(dxy - q, axis=1))
    return {
        "top_n": int(top_n),
        "threshold_m": float(threshold_m),
        "bins": _bin_labels(float(threshold_m), edges),
        "wrong": (n_wrong / max(int(n_wrong.sum()), 1)).tolist(),
        "database": (n_db / max(int(n_db.sum()), 1)).tolist(),
        "n_wrong": int(n_wrong.sum()),
    }


def table_to_json(table: RecallTable) -> dict[str, dict[str, float]]:
    """The results-file layout of a table: ``{"<threshold_m>": {"<N>": fraction}}`` (thresholds as %g)."""
    return {f"{float(t):g}": {str(int(n)): float(v) for n, v in row.items()} for t, row in table.items()}


def report_ns(cfg: Any, k: int) -> tuple[int, ...]:
    """N = 1 .. min(``cfg.max_n``, ``k``): the N values of a ranking of ``k`` views under an EvalConfig."""
    return tuple(range(1, min(int(cfg.max_n), int(k)) + 1))


def evaluate_retrieval(
    indices: npt.ArrayLike,
    q_xy: npt.ArrayLike,
    q_yaw: npt.ArrayLike,
    q_fov_deg: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    db_yaw: npt.ArrayLike,
    cfg: Any,
    *,
    groups: npt.ArrayLike | None = None,
    chance: bool = True,
) -> dict[str, Any]:
    """Every recall table of one ranking under an :class:`~crosslocate.model.config.EvalConfig`.

    The thresholds (``cfg.thresholds_m``), N = 1..min(``cfg.max_n``, K), the yaw limit of the
    orientation-restricted recall (``cfg.orient_max_yaw_deg``) and the FOV bins
    (``cfg.fov_bins_deg``) all come from ``cfg``.

    Parameters
    ----------
    indices : (M, K) int
        Database rows retrieved for each query, best first (-1 = no result).
    q_xy, db_xy : (M, 2), (N, 2) float
        Metres in one projected CRS.
    q_yaw, db_yaw : (M,), (N,) float
        Degrees clockwise from north.
    q_fov_deg : (M,) float
        Query horizontal FOV, degrees.
    groups : (M,) array, optional
        Group of each query (e.g. the photo spot); adds ``recall_ci95``, the bootstrap interval
        resampling whole groups (:func:`recall_interval`) at N in :data:`CI_NS` (up to K).
    chance : bool
        Add ``chance`` and ``chance_oriented``, the analytic recall of a random ranking of the
        whole database (:func:`chance_recall`), at the same N.

    Returns
    -------
    dict
        In the results-file layout (:func:`table_to_json`): ``recall``, ``recall_oriented``,
        ``per_fov`` (``{"lo-hi": {"n", "recall"}}``), and ``recall_ci95``
        (``{"<threshold_m>": {"<N>": [low, high]}}``), ``chance``, ``chance_oriented`` as asked.
    """
    idx = np.asarray(indices, np.int64)
    dist = retrieved_distances(idx, q_xy, db_xy)
    ns, thr = report_ns(cfg, idx.shape[1]), tuple(float(t) for t in cfg.thresholds_m)
    max_yaw = float(cfg.orient_max_yaw_deg)
    per_fov = per_fov_recall(idx, q_xy, db_xy, q_fov_deg, cfg.fov_bins_deg, thr, ns)
    out: dict[str, Any] = {
        "recall": table_to_json(recall_at_n(dist, thr, ns)),
        "recall_oriented": table_to_json(recall_at_n(_oriented(dist, idx, q_yaw, db_yaw, max_yaw), thr, ns)),
        "per_fov": {key: {"n": v["n"], "recall": table_to_json(v["recall"])} for key, v in per_fov.items()},
    }
    if groups is not None:
        ci_ns = tuple(n for n in CI_NS if n <= max(idx.shape[1], 1))
        out["recall_ci95"] = {
            f"{t:g}": {str(n): list(v) for n, v in recall_interval(dist, groups, t, ci_ns).items()} for t in thr
        }
    if chance:
        yaw = {"q_yaw": q_yaw, "db_yaw": db_yaw, "max_yaw_deg": max_yaw}
        out["chance"] = table_to_json(chance_recall(q_xy, db_xy, thr, ns))
        out["chance_oriented"] = table_to_json(chance_recall(q_xy, db_xy, thr, ns, **yaw))
    return out


__all__ = [
    "CI_NS",
    "CONFUSER_EDGES_M",
    "RecallTable",
    "chance_recall",
    "chance_recall_from_counts",
    "confuser_profile",
    "correct_counts",
    "evaluate_retrieval",
    "group_bootstrap",
    "oriented_recall",
    "paired_difference",
    "per_fov_recall",
    "recall_at_n",
    "recall_from_indices",
    "recall_interval",
    "report_ns",
    "retrieved_distances",
    "table_to_json",
]
