"""Baselines the network is compared with: chance, an untrained network, and horizon-line matching.

API
---
- ``chance_baseline(q_xy, db_xy, thresholds_m, ns, ...)``: analytic chance recall table
  (:func:`crosslocate.model.evaluate.chance_recall`).
- ``untrained_baseline(net_cfg, embed, db_source, q_source, k, random_weights=True) -> BaselineResult``:
  builds the architecture of ``net_cfg`` with its seeded random init (ImageNet weights dropped
  unless ``random_weights=False``), embeds with the caller's ``embed(net, source) -> (n, D)``
  and ranks by exact L2 search.
- Horizon-line baseline (HLoc-style, geometry only):
  ``horizon_elevation(rows, fov_deg, height_px) -> (az_deg (W,), elev_deg (..., W))`` converts a
  per-column sky-boundary row into angles of a level pinhole camera;
  ``resample_horizon(rows, fov_deg, height_px, grid_deg) -> (n, G)`` puts curves on a common
  azimuth grid spanning the database FOV (a query with FOV f covers only ``|az| <= f/2``; NaN
  elsewhere); ``horizon_distances(q (M, G), db (N, G), step_deg, max_shift_deg) -> (M, N)`` = mean
  squared elevation difference (deg^2) over the overlap, minimised over azimuth shifts;
  ``horizon_baseline(...) -> BaselineResult`` ranks database views, from precomputed horizon rows or
  from database depth (via :func:`crosslocate.datasets.derived.horizon_line`).

``BaselineResult.indices`` is (M, K) int64 best first, like a descriptor search, so
:mod:`crosslocate.model.evaluate` scores every baseline the same way.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from crosslocate.errors import ConfigError
from crosslocate.model.evaluate import RecallTable, chance_recall

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BaselineResult:
    """A baseline's ranking: ``indices`` (M, K) int64 best first, ``distances`` (M, K) float, and notes."""

    indices: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    info: dict[str, Any] = field(default_factory=dict)


def chance_baseline(
    q_xy: npt.ArrayLike,
    db_xy: npt.ArrayLike,
    thresholds_m: Sequence[float],
    ns: Sequence[int],
    **kwargs: Any,
) -> RecallTable:
    """Analytic chance recall@N (see :func:`crosslocate.model.evaluate.chance_recall`)."""
    return chance_recall(q_xy, db_xy, thresholds_m, ns, **kwargs)


def untrained_baseline(
    net_cfg: Any,
    embed: Callable[[Any, Any], npt.ArrayLike],
    db_source: Any,
    q_source: Any,
    k: int,
    *,
    random_weights: bool = True,
) -> BaselineResult:
    """Rank ``db_source`` for each item of ``q_source`` with an untrained network of ``net_cfg``.

    Parameters
    ----------
    net_cfg : NetConfig
        Architecture; its ``init_seed`` fixes the random weights.
    embed : callable ``(net, source) -> (n, D) float32``
        The caller's batched embedding (device, data loading, branch choice are the caller's).
    db_source, q_source : any
        Passed to ``embed`` unchanged.
    k : int
        Retrieved views per query.
    random_weights : bool
        Drop ``imagenet_weights`` (a randomly initialised net); False keeps the configured init.
    """
    from crosslocate.model.net import build_net
    from crosslocate.model.search import search

    cfg = dataclasses.replace(net_cfg, imagenet_weights=None) if random_weights else net_cfg
    net = build_net(cfg)
    net.eval()
    db = np.ascontiguousarray(np.asarray(embed(net, db_source)), dtype=np.float32)
    q = np.ascontiguousarray(np.asarray(embed(net, q_source)), dtype=np.float32)
    dist, idx = search(db, q, k)
    return BaselineResult(indices=idx, distances=dist.astype(np.float64), info={"init": net.init_source})


def horizon_elevation(
    rows: npt.ArrayLike, fov_deg: float, height_px: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Azimuth and elevation angles of a horizon curve seen by a level pinhole camera.

    Parameters
    ----------
    rows : (..., W) float
        Sky/terrain boundary row per column, continuous pixel coordinates (row 0 at the top, a row
        ``r`` spans ``[r, r+1)``, as :func:`crosslocate.datasets.derived.horizon_line`); NaN = unknown.
    fov_deg : float
        Horizontal field of view of the image, degrees.
    height_px : int
        Image height (the principal point is the image centre, square pixels).

    Returns
    -------
    az_deg : (W,) float64
        Azimuth of each column centre relative to the optical axis, degrees (positive = right).
    elev_deg : (..., W) float64
        Elevation of the boundary above the camera's horizontal plane, degrees (NaN kept).
    """
    r = np.asarray(rows, np.float64)
    w = r.shape[-1]
    if not 0 < fov_deg < 180:
        raise ConfigError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (w / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    x = np.arange(w) + 0.5 - w / 2.0
    y = height_px / 2.0 - r
    az = np.degrees(np.arctan2(x, f))
    elev = np.degrees(np.arctan2(y, np.sqrt(f * f + x * x)))
    return az, elev


def horizon_grid(db_fov_deg: float = 60.0, step_deg: float = 0.5) -> npt.NDArray[np.float64]:
    """(G,) azimuth offsets, degrees, covering ``[-db_fov/2, db_fov/2]`` in steps of ``step_deg`` (centred on 0)."""
    half = int(np.floor(db_fov_deg / 2.0 / step_deg + 1e-9))
    return np.arange(-half, half + 1) * float(step_deg)


def resample_horizon(
    rows: npt.ArrayLike,
    fov_deg: float | npt.ArrayLike,
    height_px: int,
    grid_deg: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """(n, G) float32 elevation curves (degrees) on the azimuth grid; NaN where the view does not reach.

    ``rows`` (n, W) boundary rows; ``fov_deg`` scalar or (n,) per view.
    """
    r = np.atleast_2d(np.asarray(rows, np.float64))
    fov = np.broadcast_to(np.asarray(fov_deg, np.float64), (len(r),))
    grid = np.asarray(grid_deg, np.float64)
    out = np.full((len(r), len(grid)), np.nan, np.float32)
    for i in range(len(r)):
        az, elev = horizon_elevation(r[i], float(fov[i]), height_px)
        ok = np.isfinite(elev)
        inside = (grid >= az[0]) & (grid <= az[-1])
        if ok.sum() >= 2 and inside.any():
            vals = np.interp(grid[inside], az[ok], elev[ok])
            # grid points between two valid columns separated by an invalid one stay NaN
            nearest = np.abs(az[:, None] - grid[inside][None, :]).argmin(axis=0)
            vals[~ok[nearest]] = np.nan
            out[i, inside] = vals
    return out


def horizon_distances(
    q_curves: npt.ArrayLike,
    db_curves: npt.ArrayLike,
    step_deg: float,
    max_shift_deg: float = 5.0,
    *,
    min_overlap: float = 0.5,
    subtract_mean: bool = False,
) -> npt.NDArray[np.float64]:
    """(M, N) float64: min over azimuth shifts of the mean squared elevation difference (deg^2).

    A shift ``s`` (grid steps, |s| <= max_shift_deg / step_deg) compares query grid point j with
    database grid point j + s. Pairs with fewer valid common points than ``min_overlap`` times the
    query's valid points get ``inf``. ``subtract_mean`` removes the mean offset over the overlap
    (tolerates a camera pitch error at the cost of losing absolute elevation).
    """
    q = np.atleast_2d(np.asarray(q_curves, np.float64))
    db = np.atleast_2d(np.asarray(db_curves, np.float64))
    if q.shape[1] != db.shape[1]:
        raise ConfigError(f"query and database curves need one grid, got {q.shape[1]} and {db.shape[1]} points")
    s_max = int(np.floor(max_shift_deg / step_deg + 1e-9))
    g = q.shape[1]
    pad = np.full((len(db), g + 2 * s_max), np.nan)
    pad[:, s_max : s_max + g] = db
    out = np.full((len(q), len(db)), np.inf)
    for i in range(len(q)):
        qi = q[i]
        need = max(2, int(np.ceil(min_overlap * np.isfinite(qi).sum())))
        for s in range(-s_max, s_max + 1):
            d = pad[:, s_max + s : s_max + s + g] - qi[None, :]
            valid = np.isfinite(d)
            n = valid.sum(axis=1)
            d0 = np.where(valid, d, 0.0)
            if subtract_mean:
                mu = d0.sum(axis=1) / np.maximum(n, 1)
                d0 = np.where(valid, d - mu[:, None], 0.0)
            mse = np.where(n >= need, (d0 * d0).sum(axis=1) / np.maximum(n, 1), np.inf)
            out[i] = np.minimum(out[i], mse)
    return out


def horizon_baseline(
    q_rows: npt.ArrayLike,
    q_fov_deg: npt.ArrayLike,
    q_height_px: int,
    k: int,
    *,
    db_rows: npt.ArrayLike | None = None,
    db_depth: npt.ArrayLike | None = None,
    db_fov_deg: float = 60.0,
    db_height_px: int | None = None,
    step_deg: float = 0.5,
    max_shift_deg: float = 5.0,
    subtract_mean: bool = False,
) -> BaselineResult:
    """Rank database views by horizon-curve distance to each query.

    Parameters
    ----------
    q_rows : (M, Wq) float
        Query horizon rows (:func:`crosslocate.datasets.derived.horizon_line` of query depth, or a
        sky segmentation of a photo).
    q_fov_deg : (M,) float
        Query horizontal FOV, degrees.
    q_height_px : int
        Query image height, pixels.
    db_rows : (N, W) float, optional
        Precomputed database horizon rows; or give ``db_depth`` (N, H, W) float32 metres (sky <= 0).
    db_fov_deg : float
        Database FOV (60), degrees.
    """
    if (db_rows is None) == (db_depth is None):
        raise ConfigError("horizon_baseline needs exactly one of db_rows or db_depth")
    if db_depth is not None:
        from crosslocate.datasets.derived import horizon_line

        depth = np.asarray(db_depth)
        db_rows = horizon_line(depth)
        db_height_px = depth.shape[-2]
    db_r = np.atleast_2d(np.asarray(db_rows, np.float64))
    h_db = int(db_height_px) if db_height_px is not None else db_r.shape[1]
    grid = horizon_grid(db_fov_deg, step_deg)
    qc = resample_horizon(q_rows, q_fov_deg, q_height_px, grid)
    dc = resample_horizon(db_r, db_fov_deg, h_db, grid)
    dist = horizon_distances(qc, dc, step_deg, max_shift_deg, subtract_mean=subtract_mean)
    kk = min(int(k), dist.shape[1])
    order = np.argsort(dist, axis=1, kind="stable")[:, :kk]
    info = {
        "step_deg": step_deg,
        "max_shift_deg": max_shift_deg,
        "subtract_mean": subtract_mean,
        "grid_points": len(grid),
    }
    return BaselineResult(indices=order.astype(np.int64), distances=np.take_along_axis(dist, order, 1), info=info)


__all__ = [
    "BaselineResult",
    "chance_baseline",
    "horizon_baseline",
    "horizon_distances",
    "horizon_elevation",
    "horizon_grid",
    "resample_horizon",
    "untrained_baseline",
]
