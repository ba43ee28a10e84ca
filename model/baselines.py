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
  from database depth (via :func:`crosslocate.datasets.derived.horizon_line`);
  ``horizon_angles(rows, fov_deg, height_px, pitch_deg, roll_deg)`` the same for a camera of known
  gravity (resample/baseline take per-view pitch/roll); ``photo_horizon_rows(rgb) -> (W,)`` the
  sky/terrain boundary of an RGB photo (:func:`sky_mask_rgb` + a per-column best split);
  ``gravity_grid(pitch_max, roll_max, pitch_step, roll_step) -> (P, 2)`` candidate tilts for
  ``horizon_baseline(..., gravity_search=...)``, which searches pitch/roll per (query, view) pair
  for photos without a gravity sensor.

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
from crosslocate.progress import Progress

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class BaselineResult:
    """A baseline's ranking: ``indices`` (M, K) int64 best first, ``distances`` (M, K) float, and notes.

    ``gravity_deg`` (M, 2) float64: for a horizon baseline with a gravity search, the (pitch, roll)
    in degrees under which each query matched its best-ranked view (NaN without a match); else None.
    """

    indices: npt.NDArray[np.int64]
    distances: npt.NDArray[np.float64]
    info: dict[str, Any] = field(default_factory=dict)
    gravity_deg: npt.NDArray[np.float64] | None = None


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


def horizon_angles(
    rows: npt.ArrayLike,
    fov_deg: float,
    height_px: int,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Azimuth and elevation of the boundary point of every column, for a camera with known gravity.

    The point of column ``c`` is the column centre ``c + 0.5`` at row ``rows[..., c]``; its ray is
    rotated by the camera's ``pitch_deg`` (up positive) and ``roll_deg`` (clockwise seen from behind
    positive), the conventions of :mod:`crosslocate.dem.poses` / ``render.camera``.

    Returns
    -------
    az_deg, elev_deg : (..., W) float64
        Azimuth relative to the camera's yaw (positive = clockwise / right) and elevation above the
        horizontal plane, degrees; NaN where ``rows`` is NaN.
    """
    r = np.asarray(rows, np.float64)
    w = r.shape[-1]
    if not 0 < fov_deg < 180:
        raise ConfigError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = (w / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    x = np.arange(w) + 0.5 - w / 2.0  # camera x (right), pixels
    y = r - height_px / 2.0  # camera y (down), pixels
    p, q = np.radians(float(pitch_deg)), np.radians(float(roll_deg))
    # camera axes in a yaw-0 ENU frame (east, north, up), as render.camera.rotation_cam_to_enu(0, p, q)
    fwd = np.array([0.0, np.cos(p), np.sin(p)])
    right0, up0 = np.array([1.0, 0.0, 0.0]), np.array([0.0, -np.sin(p), np.cos(p)])
    right = np.cos(q) * right0 - np.sin(q) * up0
    up = np.sin(q) * right0 + np.cos(q) * up0
    ray = x[..., None] * right + y[..., None] * (-up) + f * fwd  # (..., W, 3)
    az = np.degrees(np.arctan2(ray[..., 0], ray[..., 1]))
    elev = np.degrees(np.arctan2(ray[..., 2], np.hypot(ray[..., 0], ray[..., 1])))
    return az, elev


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


def sky_mask_rgb(
    rgb: npt.ArrayLike, *, blue_margin: float = 0.09, cloud_min: float = 0.82, cloud_spread: float = 0.06
) -> npt.NDArray[np.bool_]:
    """(H, W) bool: pixels that look like sky in an RGB photo.

    Sky is blue (``b - r >= blue_margin``, values in [0, 1]) or bright and neutral (cloud:
    ``min(rgb) >= cloud_min`` and ``max - min <= cloud_spread``). Terrain (green, grey, hazed) is
    neither; very distant hazed terrain and lit snow may be confused, which the per-column split of
    :func:`photo_horizon_rows` tolerates.
    """
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ConfigError(f"rgb must be (H, W, 3), got shape {a.shape}")
    x = a[..., :3].astype(np.float64)
    if np.issubdtype(a.dtype, np.integer):
        x = x / 255.0
    lo, hi = x.min(axis=-1), x.max(axis=-1)
    blue = x[..., 2] - x[..., 0] >= blue_margin
    cloud = (lo >= cloud_min) & (hi - lo <= cloud_spread)
    return blue | cloud


def photo_horizon_rows(rgb: npt.ArrayLike, **kwargs: Any) -> npt.NDArray[np.float32]:
    """(W,) float32 sky/terrain boundary row of each column of an RGB photo (sky on top).

    Per column the boundary ``r`` maximises the agreement ``#sky(rows < r) + #terrain(rows >= r)``
    with :func:`sky_mask_rgb` (a robust 1-D split: isolated misclassified pixels do not move it).
    Same convention as :func:`crosslocate.datasets.derived.horizon_line`: rows ``< r`` are sky,
    ``r = H`` for an all-sky column and NaN when the best split has no sky (``r = 0``).
    ``kwargs`` go to :func:`sky_mask_rgb`.
    """
    sky = sky_mask_rgb(rgb, **kwargs)
    h, w = sky.shape
    s = sky.astype(np.int64)
    sky_above = np.concatenate([np.zeros((1, w), np.int64), np.cumsum(s, axis=0)])  # (H+1, W): sky in rows < r
    ground_below = (1 - s)[::-1].cumsum(axis=0)[::-1]
    ground_below = np.concatenate([ground_below, np.zeros((1, w), np.int64)])  # terrain in rows >= r
    score = sky_above + ground_below
    # the lowest best split (a tie between r and r' > r means rows r..r'-1 are half sky, half terrain)
    best = h - np.argmax(score[::-1], axis=0)
    return np.where(best > 0, best, np.nan).astype(np.float32)


def horizon_grid(db_fov_deg: float = 60.0, step_deg: float = 0.5) -> npt.NDArray[np.float64]:
    """(G,) azimuth offsets, degrees, covering ``[-db_fov/2, db_fov/2]`` in steps of ``step_deg`` (centred on 0)."""
    half = int(np.floor(db_fov_deg / 2.0 / step_deg + 1e-9))
    return np.arange(-half, half + 1) * float(step_deg)


def gravity_grid(
    pitch_max_deg: float, roll_max_deg: float, pitch_step_deg: float, roll_step_deg: float | None = None
) -> npt.NDArray[np.float64]:
    """(P, 2) float64 candidate (pitch, roll) pairs, degrees: the multiples of ``pitch_step_deg``
    within ``[-pitch_max_deg, pitch_max_deg]`` times those of ``roll_step_deg`` (default: the pitch
    step) within ``[-roll_max_deg, roll_max_deg]``, 0 included, pitch-major.

    The camera gravity a horizon match searches when the photo has none (no IMU): a step ``s``
    leaves at most ``s / 2`` of that angle unexplained. A pitch error moves a skyline mostly up or
    down as a whole, which ``horizon_baseline(..., subtract_mean=True)`` removes exactly, so with
    it the pitch step can be coarse; a roll error tilts the skyline and needs a fine step.
    """
    roll_step = pitch_step_deg if roll_step_deg is None else roll_step_deg
    if pitch_step_deg <= 0 or roll_step <= 0 or pitch_max_deg < 0 or roll_max_deg < 0:
        raise ConfigError(
            f"gravity_grid needs positive steps and non-negative ranges, got steps {pitch_step_deg}, {roll_step} "
            f"and ranges {pitch_max_deg}, {roll_max_deg}"
        )

    def axis(half: float, step: float) -> npt.NDArray[np.float64]:
        n = int(np.floor(half / step + 1e-9))
        return np.arange(-n, n + 1) * float(step)

    pitch, roll = np.meshgrid(axis(pitch_max_deg, pitch_step_deg), axis(roll_max_deg, roll_step), indexing="ij")
    return np.stack([pitch.ravel(), roll.ravel()], axis=1)


def resample_horizon(
    rows: npt.ArrayLike,
    fov_deg: float | npt.ArrayLike,
    height_px: int | npt.ArrayLike,
    grid_deg: npt.ArrayLike,
    *,
    pitch_deg: float | npt.ArrayLike = 0.0,
    roll_deg: float | npt.ArrayLike = 0.0,
) -> npt.NDArray[np.float32]:
    """(n, G) float32 elevation curves (degrees) on the azimuth grid; NaN where the view does not reach.

    ``rows`` (n, W) boundary rows; ``fov_deg``, ``height_px``, ``pitch_deg``, ``roll_deg`` scalar or
    (n,) per view (pitch/roll: the camera's known gravity, see :func:`horizon_angles`; 0 = level).
    Grid points between two valid columns separated by an invalid (NaN) one stay NaN.
    """
    r = np.atleast_2d(np.asarray(rows, np.float64))
    n = len(r)
    fov = np.broadcast_to(np.asarray(fov_deg, np.float64), (n,))
    hgt = np.broadcast_to(np.asarray(height_px, np.float64), (n,))
    pit = np.broadcast_to(np.asarray(pitch_deg, np.float64), (n,))
    rol = np.broadcast_to(np.asarray(roll_deg, np.float64), (n,))
    grid = np.asarray(grid_deg, np.float64)
    out = np.full((n, len(grid)), np.nan, np.float32)
    for i in range(n):
        ok = np.isfinite(r[i])
        if ok.sum() < 2:
            continue
        # a NaN column keeps the azimuth of its image-centre pixel, for the gap test below
        ri = np.where(ok, r[i], hgt[i] / 2.0)
        az, elev = horizon_angles(ri, float(fov[i]), float(hgt[i]), float(pit[i]), float(rol[i]))
        order = np.argsort(az, kind="stable")
        az, elev, oki = az[order], elev[order], ok[order]
        inside = (grid >= az[0]) & (grid <= az[-1])
        if not inside.any():
            continue
        vals = np.interp(grid[inside], az[oki], elev[oki])
        nearest = np.abs(az[:, None] - grid[inside][None, :]).argmin(axis=0)
        vals[~oki[nearest]] = np.nan
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
    n_shift, g = 2 * s_max + 1, q.shape[1]
    out = np.full((len(q), len(db)), np.inf)
    if len(q) == 0 or len(db) == 0:
        return out
    # Sums over the common valid points of every (query, shift, view) as matrix products:
    # sum (d - q)^2 = sum m_q M_d d^2 - 2 sum m_q q M_d d + sum m_q q^2 M_d, with validity masks m, M.
    md = np.isfinite(db).astype(np.float64)
    d0 = np.where(md > 0, db, 0.0)
    md_t, d_t, d2_t = md.T, d0.T, (d0 * d0).T
    # shifted[:, k, i] = a[:, i - s] for s = k - s_max (0 outside): query point j meets view point j + s
    cols = np.arange(g)[None, :] + 2 * s_max - np.arange(n_shift)[:, None]
    chunk = max(1, 4_000_000 // (n_shift * len(db)))
    for lo in range(0, len(q), chunk):
        qc = q[lo : lo + chunk]
        mq = np.isfinite(qc).astype(np.float64)
        q0 = np.where(mq > 0, qc, 0.0)

        def shifted(a: npt.NDArray[np.float64], rows: int = len(qc)) -> npt.NDArray[np.float64]:
            pad = np.zeros((rows, g + 2 * s_max))
            pad[:, s_max : s_max + g] = a
            return pad[:, cols].reshape(rows * n_shift, g)

        smq, sq0 = shifted(mq), shifted(q0)
        n = smq @ md_t  # (rows * S, N) common valid points
        sse = smq @ d2_t - 2.0 * (sq0 @ d_t) + shifted(q0 * q0) @ md_t
        if subtract_mean:
            diff = smq @ d_t - sq0 @ md_t  # sum (d - q) over the overlap
            sse = sse - diff * diff / np.maximum(n, 1.0)
        need = np.maximum(2, np.ceil(min_overlap * mq.sum(axis=1) - 1e-9))  # (rows,)
        need = np.repeat(need, n_shift)[:, None]
        mse = np.where(n >= need, np.maximum(sse, 0.0) / np.maximum(n, 1.0), np.inf)
        out[lo : lo + len(qc)] = mse.reshape(len(qc), n_shift, len(db)).min(axis=1)
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
    q_pitch_deg: float | npt.ArrayLike = 0.0,
    q_roll_deg: float | npt.ArrayLike = 0.0,
    db_pitch_deg: float | npt.ArrayLike = 0.0,
    db_roll_deg: float | npt.ArrayLike = 0.0,
    min_overlap: float = 0.5,
    tie_seed: int = 0,
    gravity_search: npt.ArrayLike | None = None,
) -> BaselineResult:
    """Rank database views by horizon-curve distance to each query.

    Parameters
    ----------
    q_rows : (M, Wq) float, or a list of M (Wq_i,) arrays of different widths
        Query horizon rows (:func:`crosslocate.datasets.derived.horizon_line` of query depth, or
        :func:`photo_horizon_rows` of a photo).
    q_fov_deg : (M,) float
        Query horizontal FOV, degrees.
    q_height_px : int or (M,) int
        Query image height, pixels.
    k : int
        Retrieved views per query.
    db_rows : (N, W) float, optional
        Precomputed database horizon rows; or give ``db_depth`` (N, H, W) float32 metres (sky <= 0).
    db_fov_deg : float
        Database FOV (60), degrees.
    db_height_px : int, optional
        Database view height (default: ``W``, square views).
    step_deg, max_shift_deg : float
        Azimuth grid step and shift-search half range, degrees.
    q_pitch_deg, q_roll_deg, db_pitch_deg, db_roll_deg : float or per-view array
        Known camera gravity (pitch up positive, roll clockwise positive), degrees; 0 = level.
    min_overlap : float
        Fraction of the query's valid grid points a database curve must overlap (else ``inf``).
    tie_seed : int
        Seed of the random order among equal distances (e.g. all ``inf`` for a photo without sky).
    gravity_search : (P, 2) float, optional
        Candidate (pitch, roll) offsets, degrees (:func:`gravity_grid`), added to the queries'
        pitch/roll: the distance of a (query, view) pair is its minimum over the candidates, each
        pair choosing the gravity that aligns its skylines best (for photos without a gravity
        sensor: pass ``q_pitch_deg = q_roll_deg = 0``). ``gravity_deg`` of the result holds each
        query's choice for its best-ranked view. Costs P times the plain search.

    Returns
    -------
    BaselineResult with ``indices`` (M, min(k, N)), best first (ties in seeded random order), and
    ``distances`` the mean squared elevation differences (deg^2).
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
    dc = resample_horizon(db_r, db_fov_deg, h_db, grid, pitch_deg=db_pitch_deg, roll_deg=db_roll_deg)
    m = len(q_rows) if isinstance(q_rows, list | tuple) else len(np.atleast_2d(np.asarray(q_rows)))
    pitch0 = np.broadcast_to(np.asarray(q_pitch_deg, np.float64), (m,))
    roll0 = np.broadcast_to(np.asarray(q_roll_deg, np.float64), (m,))
    offsets = np.zeros((1, 2)) if gravity_search is None else np.asarray(gravity_search, np.float64).reshape(-1, 2)
    dist = np.full((m, len(dc)), np.inf)
    chosen = np.zeros((m, len(dc)), np.int64)  # which gravity candidate gave dist[q, n]
    qc = np.zeros((m, len(grid)), np.float32)
    with Progress(len(offsets), f"horizon baseline ({m} queries x {len(dc)} views)", "gravity candidate") as bar:
        for c, (dp, dr) in enumerate(offsets):
            qc = _query_curves(q_rows, q_fov_deg, q_height_px, pitch0 + dp, roll0 + dr, grid)
            d = horizon_distances(qc, dc, step_deg, max_shift_deg, min_overlap=min_overlap, subtract_mean=subtract_mean)
            better = d < dist
            dist = np.where(better, d, dist)
            chosen[better] = c
            bar.update(1)
    kk = min(int(k), dist.shape[1])
    # ties (above all the ``inf`` rows of queries without a usable horizon) are broken at random, so
    # an uninformative query gets a chance-level ranking rather than the database's storage order
    tie = np.random.default_rng(tie_seed).random(dist.shape)
    order = np.lexsort((tie, dist), axis=1)[:, :kk]
    info = {
        "step_deg": step_deg,
        "max_shift_deg": max_shift_deg,
        "subtract_mean": subtract_mean,
        "grid_points": len(grid),
        "gravity_candidates": len(offsets),
        "queries_without_horizon": int((~np.isfinite(qc)).all(axis=1).sum()),
        "queries_without_match": int((~np.isfinite(dist)).all(axis=1).sum()) if dist.shape[1] else len(dist),
    }
    gravity = None
    if gravity_search is not None and kk:
        top = order[:, 0]
        gravity = np.stack([pitch0, roll0], axis=1) + offsets[chosen[np.arange(m), top]]
        gravity[~np.isfinite(dist[np.arange(m), top])] = np.nan
    return BaselineResult(
        indices=order.astype(np.int64), distances=np.take_along_axis(dist, order, 1), info=info, gravity_deg=gravity
    )


def _query_curves(
    q_rows: Any,
    q_fov_deg: npt.ArrayLike,
    q_height_px: int | npt.ArrayLike,
    pitch_deg: npt.NDArray[np.float64],
    roll_deg: npt.NDArray[np.float64],
    grid: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32]:
    """(M, G) elevation curves of the queries (:func:`resample_horizon`), photos of different widths one by one."""
    if isinstance(q_rows, list | tuple) and len({np.shape(r)[-1] for r in q_rows}) > 1:
        m = len(q_rows)
        fov, hgt = (np.broadcast_to(np.asarray(v, np.float64), (m,)) for v in (q_fov_deg, q_height_px))
        return np.concatenate(
            [
                resample_horizon(q_rows[i], fov[i], hgt[i], grid, pitch_deg=pitch_deg[i], roll_deg=roll_deg[i])
                for i in range(m)
            ]
        )
    return resample_horizon(q_rows, q_fov_deg, q_height_px, grid, pitch_deg=pitch_deg, roll_deg=roll_deg)


__all__ = [
    "BaselineResult",
    "chance_baseline",
    "gravity_grid",
    "horizon_angles",
    "horizon_baseline",
    "horizon_distances",
    "horizon_elevation",
    "horizon_grid",
    "photo_horizon_rows",
    "resample_horizon",
    "sky_mask_rgb",
    "untrained_baseline",
]
