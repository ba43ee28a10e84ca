"""The triplet training loop (cross-modal: photo-like queries vs rendered database views).

One epoch (cirtorch's ``create_epoch_tuples`` idea, with mining as a pure function over cached
descriptors, :mod:`crosslocate.model.mining`):

1. refresh the descriptor cache: embed the training database pool and the training queries with
   the current network (eval mode, no augmentation);
2. mine one tuple per training query: the positive is the database view within
   ``TrainConfig.pos_radius_m`` (20 m) and ``pos_yaw_deg`` (15 deg) that is closest in descriptor
   space, the negatives are the ``n_negatives`` (10) hardest views at least ``neg_min_dist_m``
   (2 km) away;
3. optimise the triplet loss (margin ``TrainConfig.margin``, 0.1; or InfoNCE with ``loss="infonce"``,
   :func:`tuple_loss`) with Adam, on augmented inputs,
   at the epoch's learning rate (``lr * lr_decay ** (epoch - 1)``); with ``batch_negatives`` every
   other database view of the batch that lies ``neg_min_dist_m`` away is a negative too; with
   ``ema_decay`` > 0 a moving average of the weights follows every step (:func:`update_average`)
   and is the network validated and checkpointed (the raw weights ride along for ``--resume``);
4. validate (recall@1..10 within 1 km of val queries against the val database; the epoch with
   the best mean of recall@1..10, ``val_score``, is kept as ``best.pt``) when a val set is given,
   write a checkpoint (weights, optimizer state, configs, epoch) and append the epoch's metrics
   to ``metrics.json`` / ``metrics.csv``.

The device is passed in (never chosen here). Randomness comes from ``TrainConfig.seed`` only:
the tuple order, the augmentation draws (per item from ``(seed, epoch, index)``) and torch's RNG
(seeded per epoch), so a resumed run continues exactly as an uninterrupted one would, given the same
number of CPU threads (each epoch's row records ``threads``: another count sums in another order, and
over epochs that is another path; measured on the Alps, 2026-12-04).
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from crosslocate.datasets.views import QueryDataset, ViewDataset
from crosslocate.errors import CheckpointError, ConfigError, FileOverwriteError
from crosslocate.fileio import write_json_atomic, write_text_atomic

logger = logging.getLogger(__name__)

#: File names inside a training run folder.
CHECKPOINT_NAME = "checkpoint.pt"
#: The weights with the best validation recall (epoch 0 = the initial weights), for evaluation.
BEST_NAME = "best.pt"
METRICS_JSON = "metrics.json"
METRICS_CSV = "metrics.csv"


@dataclass(frozen=True, slots=True)
class ViewPool:
    """The views a training/validation stage draws from: one or more databases concatenated.

    Attributes
    ----------
    datasets : tuple of ViewDataset
        Concatenated in order; item ``i`` of the pool is item ``i - offset`` of its dataset.
    xy : (N, 2) float64
        Camera positions, metres in the databases' (common) projected CRS.
    yaw_deg : (N,) float64
        View yaws, degrees clockwise from north.
    """

    datasets: tuple[ViewDataset, ...]
    xy: npt.NDArray[np.float64]
    yaw_deg: npt.NDArray[np.float64]
    offsets: npt.NDArray[np.int64]

    @classmethod
    def of(cls, datasets: Sequence[ViewDataset], crs_wkt: str | None = None) -> ViewPool:
        """Concatenate datasets (at least one, together not empty).

        ``crs_wkt``: project the views' lon/lat into this CRS (metres) for ``xy``; None = the
        tables' stored ``x``/``y`` (then all databases must share one CRS).
        """
        ds = tuple(datasets)
        if not ds or sum(len(d) for d in ds) == 0:
            raise ConfigError("the view pool is empty; build the sparse/compact/uniform databases first")
        if crs_wkt is None:
            xy = np.concatenate([np.stack([d.table["x"], d.table["y"]], axis=1) for d in ds]).astype(np.float64)
        else:
            from crosslocate.dem.geodesy import transform_xy

            lon = np.concatenate([d.table["lon"] for d in ds])
            lat = np.concatenate([d.table["lat"] for d in ds])
            xy = np.stack(transform_xy(lon, lat, "EPSG:4326", crs_wkt), axis=1)
        yaw = np.concatenate([d.table["yaw_deg"] for d in ds]).astype(np.float64)
        offsets = np.cumsum([0] + [len(d) for d in ds]).astype(np.int64)
        return cls(datasets=ds, xy=xy, yaw_deg=yaw, offsets=offsets)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, i: int) -> tuple[ViewDataset, int]:
        """(dataset, item index in it) of pool item ``i``."""
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.datasets[k], int(i - self.offsets[k])


@dataclass(frozen=True, slots=True)
class QuerySet:
    """Queries with their true positions in the database CRS.

    Attributes
    ----------
    dataset : QueryDataset
    xy : (Q, 2) float64
        True camera positions, metres in the databases' projected CRS.
    yaw_deg : (Q,) float64
        True yaws, degrees clockwise from north.
    """

    dataset: QueryDataset
    xy: npt.NDArray[np.float64]
    yaw_deg: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.dataset)
        if self.xy.shape != (n, 2) or self.yaw_deg.shape != (n,):
            raise ConfigError(
                f"QuerySet: xy {self.xy.shape} / yaw {self.yaw_deg.shape} do not match {n} queries; expected ({n}, 2)/({n},)"
            )


@dataclass(slots=True)
class TrainResult:
    """What :func:`train` produced: the run folder, checkpoint and the per-epoch history."""

    out_dir: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Descriptors


class _Indexed(Dataset[torch.Tensor]):
    """Plain (unaugmented) tensors of a ViewPool or QueryDataset, for batched embedding."""

    def __init__(self, source: ViewPool | QueryDataset, indices: npt.NDArray[np.int64] | None = None) -> None:
        self.source = source
        self.indices = indices

    def __len__(self) -> int:
        return len(self.source) if self.indices is None else int(self.indices.size)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.indices is not None:
            i = int(self.indices[i])
        if isinstance(self.source, ViewPool):
            ds, j = self.source.locate(i)
            return ds.item(j)
        return self.source.encode(i)


def _is_two_branch(net: nn.Module) -> bool:
    return bool(getattr(getattr(net, "config", None), "two_branch", False))


def forward_branch(net: nn.Module, x: torch.Tensor, branch: str) -> torch.Tensor:
    """``net(x)``, through the ``branch`` ("query" / "database") weights when the net has two branches."""
    return net(x, branch=branch) if _is_two_branch(net) else net(x)


def embed_tuples(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """(B, M, 3, H, W) tuples (query first, then database views) -> (B, M, D) descriptors.

    One forward pass over all B * M images for a shared network (BatchNorm sees the whole batch);
    with two branches the queries go through the query weights, the views through the database ones.
    """
    b, m = batch.shape[:2]
    if not _is_two_branch(net):
        return net(batch.reshape(b * m, *batch.shape[2:])).reshape(b, m, -1)
    q = net(batch[:, 0], branch="query")
    v = net(batch[:, 1:].reshape(b * (m - 1), *batch.shape[2:]), branch="database")
    return torch.cat([q[:, None], v.reshape(b, m - 1, -1)], dim=1)


@torch.no_grad()
def extract_descriptors(
    net: nn.Module,
    source: ViewPool | QueryDataset | ViewDataset,
    device: torch.device,
    *,
    batch_size: int = 16,
    num_workers: int = 0,
    desc: str = "descriptors",
    indices: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float32]:
    """Embed every item of ``source`` (or the items ``indices``, in that order; no augmentation) in eval mode.

    Returns
    -------
    (N, D) float32, C-contiguous
        L2-normalised descriptors in item order (the network's output, normalised again here so a
        network without final normalisation still yields unit vectors). A two-branch network
        embeds queries with its query branch and views with its database branch.
    """
    if isinstance(source, ViewDataset):
        source = ViewPool.of([source])
    branch = "query" if isinstance(source, QueryDataset) else "database"
    was_training = net.training
    net.eval()
    sel = None if indices is None else np.asarray(indices, np.int64).reshape(-1)
    loader = DataLoader(_Indexed(source, sel), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    out: list[npt.NDArray[np.float32]] = []
    try:
        from crosslocate.progress import Progress

        with Progress(len(loader), desc, "batch", logger=logger) as bar:
            for batch in loader:
                d = forward_branch(net, batch.to(device), branch)
                d = torch.nn.functional.normalize(d.float(), dim=1)
                out.append(d.cpu().numpy())
                bar.update()
    finally:
        net.train(was_training)
    if not out:
        return np.zeros((0, 0), np.float32)
    return np.ascontiguousarray(np.concatenate(out).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# Mining and the tuple batches


def epoch_selection(
    cfg: Any, queries: QuerySet, pool: ViewPool, epoch: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """This epoch's training queries and the pool views whose descriptors the mining needs.

    Queries: those with a geographic positive (a view within ``pos_radius_m`` and ``pos_yaw_deg``),
    shuffled with seed ``(cfg.seed, epoch)`` and capped at ``cfg.max_tuples``. Views: every positive
    candidate of those queries plus ``cfg.cache_size`` random pool views (the negative candidates;
    None = the whole pool, the reference code's full descriptor cache), plus up to
    ``cfg.near_negatives`` views drawn from the queries' neighbourhoods
    (:func:`crosslocate.model.mining.near_candidates`: ``neg_min_dist_m`` to ``near_radius_m`` away,
    facing within ``near_yaw_deg``).

    Returns
    -------
    q_idx : (T,) int64 query indices;  cache : (C,) int64 ascending pool indices;
    n_without : int, queries without any geographic positive
    """
    from crosslocate.model.mining import near_candidates, positive_candidates

    rng = np.random.default_rng([int(cfg.seed), int(epoch)])
    cands = positive_candidates(queries.xy, queries.yaw_deg, pool.xy, pool.yaw_deg, cfg.pos_radius_m, cfg.pos_yaw_deg)
    has = np.flatnonzero([c.size > 0 for c in cands]).astype(np.int64)
    q_idx = has[rng.permutation(has.size)]
    max_tuples = getattr(cfg, "max_tuples", None)
    if max_tuples:
        q_idx = q_idx[: int(max_tuples)]
    cache_size = getattr(cfg, "cache_size", None)
    n = len(pool)
    n_without = len(cands) - int(has.size)
    if cache_size is None or cache_size >= n:
        return q_idx, np.arange(n, dtype=np.int64), n_without
    sample = rng.choice(n, size=int(cache_size), replace=False)
    pos = np.concatenate([cands[i] for i in q_idx]) if q_idx.size else np.zeros(0, np.int64)
    n_near = int(getattr(cfg, "near_negatives", 0))
    if n_near:
        near = near_candidates(
            queries.xy[q_idx],
            queries.yaw_deg[q_idx],
            pool.xy,
            pool.yaw_deg,
            cfg.neg_min_dist_m,
            cfg.near_radius_m,
            cfg.near_yaw_deg,
        )
        near = near if near.size <= n_near else rng.choice(near, size=n_near, replace=False)
        sample = np.union1d(sample, near)
    return q_idx, np.union1d(sample, pos).astype(np.int64), n_without


def mine_epoch(
    cfg: Any,
    q_desc: npt.NDArray[np.float32],
    c_desc: npt.NDArray[np.float32],
    queries: QuerySet,
    pool: ViewPool,
    q_idx: npt.NDArray[np.int64],
    cache: npt.NDArray[np.int64],
    epoch: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Tuples of the queries ``q_idx`` (descriptors ``q_desc``) against the cached views ``cache``.

    :func:`crosslocate.model.mining.mine_tuples_cfg` (closest positive in descriptor space, hard
    negatives >= ``neg_min_dist_m`` away from a sampled pool of ``neg_pool_size``, the hardest
    ``neg_hardest``, slack ``neg_slack``). Returns pool indices: positive (T,), negatives (T, K),
    valid (T,).
    """
    from crosslocate.model import mining

    pos, neg, valid = mining.mine_tuples_cfg(
        cfg,
        q_desc,
        c_desc,
        queries.xy[q_idx],
        queries.yaw_deg[q_idx],
        pool.xy[cache],
        pool.yaw_deg[cache],
        seed=(int(cfg.seed), int(epoch)),
    )
    pos_p = np.where(valid, cache[np.maximum(pos, 0)], -1)
    neg_p = np.where(valid[:, None], cache[np.maximum(neg, 0)], -1)
    return pos_p.astype(np.int64), neg_p.astype(np.int64), valid


class _TupleDataset(Dataset[torch.Tensor]):
    """Item t: (1 + 1 + K, 3, H, W) = augmented query, positive and K negatives of tuple t."""

    def __init__(
        self,
        queries: QuerySet,
        pool: ViewPool,
        q_idx: npt.NDArray[np.int64],
        pos: npt.NDArray[np.int64],
        neg: npt.NDArray[np.int64],
        seed: int,
        epoch: int,
        augment: bool,
    ) -> None:
        self.queries, self.pool = queries, pool
        self.q_idx, self.pos, self.neg = q_idx, pos, neg
        self.seed, self.epoch, self.augment = seed, epoch, augment

    def __len__(self) -> int:
        return int(self.q_idx.size)

    def __getitem__(self, t: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, self.epoch, int(self.q_idx[t]), 7])
        qds = self.queries.dataset
        flip_p = qds.augment.flip_p if (self.augment and qds.augment is not None) else 0.0
        flip = bool(rng.random() < flip_p)
        items = [qds.encode(int(self.q_idx[t]), rng if self.augment else None, flip=flip)]
        for i in (int(self.pos[t]), *(int(n) for n in self.neg[t])):
            ds, j = self.pool.locate(i)
            items.append(ds.item(j, rng if self.augment else None, flip=flip))
        return torch.stack(items)


def batch_negative_mask(
    views: torch.Tensor, q_xy: npt.NDArray[np.float64], view_xy: npt.NDArray[np.float64], min_dist_m: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every database view of a batch as a negative candidate of every query of the batch.

    Parameters
    ----------
    views : (B, M, D) tensor
        Descriptors of each tuple's database views (positive first, then its mined negatives).
    q_xy : (B, 2) float64
        Query positions, metres.
    view_xy : (B, M, 2) float64
        Positions of those views, metres (same CRS).
    min_dist_m : float
        A view counts as a negative of query b only this far from it (``TrainConfig.neg_min_dist_m``).

    Returns
    -------
    negatives : (B, B*M, D) tensor
        The batch's views, the same for every query.
    mask : (B, B*M) bool tensor
        ``||q_xy[b] - view||_2 >= min_dist_m``: a query's own mined negatives and the far views of
        the other tuples (their positives too, so a net that embeds every query alike cannot
        satisfy the loss); never the query's positive.
    """
    b, m, d = views.shape
    flat_xy = np.asarray(view_xy, np.float64).reshape(b * m, 2)
    dist = np.linalg.norm(np.asarray(q_xy, np.float64)[:, None, :] - flat_xy[None, :, :], axis=2)
    mask = torch.from_numpy(dist >= float(min_dist_m))
    return views.reshape(1, b * m, d).expand(b, b * m, d), mask


# --------------------------------------------------------------------------------------------------
# Metrics files


def write_metrics(out_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write the per-epoch history as ``metrics.json`` (list of dicts) and ``metrics.csv`` (atomic)."""
    write_json_atomic(out_dir / METRICS_JSON, history, allow_nan=True)  # a diverged loss is NaN
    cols: list[str] = []
    for row in history:
        cols.extend(k for k in row if k not in cols)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols)
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(out_dir / METRICS_CSV, buf.getvalue())


def validation_recall(
    q_desc: npt.NDArray[np.float32],
    db_desc: npt.NDArray[np.float32],
    q_xy: npt.NDArray[np.float64],
    db_xy: npt.NDArray[np.float64],
    *,
    ns: Sequence[int] = (1, 10),
    threshold_m: float = 1000.0,
) -> dict[int, float]:
    """Recall@N within ``threshold_m``: fraction of queries with a true match among the top N.

    Exact inner-product search (descriptors are L2-normalised); a match is a database view whose
    position lies within ``threshold_m`` of the query's true position (metres, same CRS).
    """
    if len(q_desc) == 0 or len(db_desc) == 0:
        return {int(n): float("nan") for n in ns}
    nmax = min(max(ns), len(db_desc))
    sim = q_desc @ db_desc.T
    top = np.argsort(-sim, axis=1, kind="stable")[:, :nmax]
    dist = np.linalg.norm(db_xy[top] - q_xy[:, None, :], axis=2)
    hit = dist <= threshold_m
    return {int(n): float(hit[:, : min(n, nmax)].any(axis=1).mean()) for n in ns}


# --------------------------------------------------------------------------------------------------
# Checkpoints (F1's checkpoint module)


def _save_checkpoint(
    path: Path,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    epoch: int,
    meta: dict[str, Any],
    train_net: nn.Module | None = None,
) -> None:
    from crosslocate.model import checkpoint

    checkpoint.save_checkpoint(path, net, optimizer=opt, epoch=epoch, meta=meta, train_net=train_net)


def _load_checkpoint(
    path: Path,
    net: nn.Module,
    opt: torch.optim.Optimizer,
    device: torch.device,
    train_net: nn.Module | None = None,
) -> tuple[int, str | None]:
    """Load weights (and the optimised weights of an averaged run into ``train_net``) and optimizer
    state; return (completed epochs, the run's id if recorded)."""
    from crosslocate.model import checkpoint

    state = checkpoint.load_checkpoint(path, net, optimizer=opt, map_location=device, train_net=train_net)
    meta = state.get("meta")
    run_id = meta.get("run_id") if isinstance(meta, dict) else None
    return int(state["epoch"]), run_id if isinstance(run_id, str) else None


def _run_meta(meta: dict[str, Any] | None, run_id: str, cfg: Any, epoch: int, row: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's meta: the caller's, the run's id, ``epochs_planned``, ``finished`` (the last
    planned epoch is done) and the epoch's metrics (:func:`crosslocate.model.checkpoint.check_run_record`)."""
    return {
        **(meta or {}),
        "run_id": run_id,
        "epochs_planned": int(cfg.epochs),
        "finished": int(epoch) >= int(cfg.epochs),
        "metrics": row,
    }


# --------------------------------------------------------------------------------------------------
# The loop


def train(
    net: nn.Module,
    queries: QuerySet,
    pool: ViewPool,
    cfg: Any,
    out_dir: str | os.PathLike[str],
    device: torch.device,
    *,
    val: tuple[QuerySet, ViewPool] | None = None,
    resume: bool = False,
    meta: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train ``net`` in place with the triplet loss; checkpoints and metrics go to ``out_dir``.

    Parameters
    ----------
    net : nn.Module
        Maps (B, 3, H, W) float32 to (B, D) descriptors; already on ``device``.
    queries : QuerySet
        Training queries (their dataset's ``augment`` is used when ``cfg.augment`` is true).
    pool : ViewPool
        Training database views (e.g. sparse + compact, training split).
    cfg : TrainConfig
        Epochs, batch size, lr, margin, mining radii, seed, workers (see :mod:`crosslocate.model.config`).
    out_dir : path
        Run folder: ``checkpoint.pt``, ``metrics.json``, ``metrics.csv``.
    device : torch.device
        Where the network lives (chosen by the caller).
    val : (QuerySet, ViewPool) or None
        Validation queries and database: recall@1/@10 within 1 km is logged per epoch.
    resume : bool
        Continue from ``out_dir/checkpoint.pt``; without it an existing checkpoint is refused.
    meta : dict or None
        JSON-able settings stored in the checkpoint (resolved configs, init, modality).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT_NAME
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=getattr(cfg, "weight_decay", 0.0))
    ema_decay = float(getattr(cfg, "ema_decay", 0.0))
    # the network validation scores and the checkpoints hold: the weights' moving average when on
    avg = averaged_copy(net) if ema_decay > 0 else None
    scored = avg if avg is not None else net
    raw = net if avg is not None else None  # stored beside the average for --resume
    history: list[dict[str, Any]] = []
    start, run_id = 0, None
    if ckpt.exists():
        if not resume:
            raise FileOverwriteError(f"{ckpt} exists; pass --resume to continue it or choose another --work folder")
        start, run_id = _load_checkpoint(ckpt, scored, opt, device, train_net=raw)
        if (out / METRICS_JSON).exists():
            history = [h for h in json.loads((out / METRICS_JSON).read_text()) if h["epoch"] <= start]
        logger.info("resuming %s after epoch %d", ckpt, start)
        ran_on = history[-1].get("threads") if history else None
        if ran_on is not None and ran_on != torch.get_num_threads():
            logger.warning(
                "epoch %d ran on %d CPU threads, this resume on %d: the run goes on along another path "
                "than an uninterrupted one would (set OMP_NUM_THREADS=%d to match)",
                start,
                ran_on,
                torch.get_num_threads(),
                ran_on,
            )
    elif resume:
        logger.info("--resume: no checkpoint at %s yet, starting from epoch 0", ckpt)
    run_id = run_id or uuid.uuid4().hex  # ties best.pt to the run of checkpoint.pt
    best_path = out / BEST_NAME
    best = _best_score(history)
    if val is not None and start == 0:
        row0 = {"epoch": 0, **_validate(scored, val, cfg, device)}
        logger.info("epoch 0 (initial weights): %s", row0)
        history.append(row0)
        best = _score(row0)
        _save_checkpoint(best_path, scored, opt, 0, _run_meta(meta, run_id, cfg, 0, row0))
    for epoch in range(start + 1, cfg.epochs + 1):
        lr = epoch_lr(cfg, epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        row = _run_epoch(net, opt, queries, pool, cfg, device, epoch, avg=avg)
        row["lr"] = lr
        if val is not None:
            row.update(_validate(scored, val, cfg, device))
            if _score(row) > best:
                best = _score(row)
                _save_checkpoint(best_path, scored, opt, epoch, _run_meta(meta, run_id, cfg, epoch, row))
                logger.info("epoch %d is the best on validation so far: %s", epoch, best_path)
        _save_checkpoint(ckpt, scored, opt, epoch, _run_meta(meta, run_id, cfg, epoch, row), raw)
        history.append(row)
        write_metrics(out, history)
        logger.info(
            "epoch %d/%d: %s",
            epoch,
            cfg.epochs,
            {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()},
        )
        if on_epoch is not None:
            on_epoch(row)
    if not ckpt.exists():
        raise CheckpointError(f"{ckpt}: no epoch was run (epochs={cfg.epochs}); raise TrainConfig.epochs")
    return TrainResult(out_dir=out, checkpoint=ckpt, history=history)


def averaged_copy(net: nn.Module) -> nn.Module:
    """A copy of ``net`` to hold its weights' moving average (:func:`update_average`); no gradients,
    eval mode (its BatchNorm statistics are averaged, never updated by a forward pass)."""
    avg = copy.deepcopy(net)
    for p in avg.parameters():
        p.requires_grad_(False)
    return avg.eval()


@torch.no_grad()
def update_average(avg: nn.Module, net: nn.Module, decay: float) -> None:
    """``avg <- decay * avg + (1 - decay) * net`` for every float parameter and buffer (in place);
    integer buffers (BatchNorm's batch counter) are copied. Both nets have the same architecture."""
    src = net.state_dict()
    for key, a in avg.state_dict().items():
        w = src[key].detach()
        if a.dtype.is_floating_point:
            a.mul_(decay).add_(w.to(a.dtype), alpha=1.0 - decay)
        else:
            a.copy_(w)


def epoch_lr(cfg: Any, epoch: int) -> float:
    """Learning rate of ``epoch`` (1-based): ``cfg.lr * cfg.lr_decay ** (epoch - 1)``."""
    return float(cfg.lr) * float(getattr(cfg, "lr_decay", 1.0)) ** (int(epoch) - 1)


def tuple_loss(cfg: Any) -> Callable[..., torch.Tensor]:
    """``loss(q, p, n, mask=None)`` of ``cfg.loss``: the triplet hinge at ``cfg.margin`` or InfoNCE at
    ``cfg.temperature`` (:mod:`crosslocate.model.functional`), mean over the batch."""
    from crosslocate.model.functional import infonce_loss, triplet_loss

    if str(getattr(cfg, "loss", "triplet")) == "infonce":
        return functools.partial(infonce_loss, temperature=float(cfg.temperature))
    return functools.partial(triplet_loss, margin=float(cfg.margin))


def _run_epoch(
    net: nn.Module,
    opt: torch.optim.Optimizer,
    queries: QuerySet,
    pool: ViewPool,
    cfg: Any,
    device: torch.device,
    epoch: int,
    *,
    avg: nn.Module | None = None,
) -> dict[str, Any]:
    """Refresh the cache, mine, optimise one pass over the tuples (updating the weights' moving
    average ``avg`` after every step, when given); return the epoch's metrics."""
    loss_fn = tuple_loss(cfg)
    t0 = time.perf_counter()
    workers = int(getattr(cfg, "num_workers", 0))
    bs_embed = int(getattr(cfg, "embed_batch_size", cfg.batch_size * 4))
    q_sel, cache, n_without = epoch_selection(cfg, queries, pool, epoch)
    c_desc = extract_descriptors(
        net, pool, device, batch_size=bs_embed, num_workers=workers, desc="db cache", indices=cache
    )
    q_desc = extract_descriptors(
        net, queries.dataset, device, batch_size=bs_embed, num_workers=workers, desc="queries", indices=q_sel
    )
    t_cache = time.perf_counter() - t0
    pos, neg, valid = mine_epoch(cfg, q_desc, c_desc, queries, pool, q_sel, cache, epoch)
    q_idx, pos_e, neg_e = q_sel[valid], pos[valid], neg[valid]
    # "hard" tuples: the hardest negative is closer than the positive plus the margin (loss > 0);
    # ``cache`` is ascending, so searchsorted maps pool indices to rows of ``c_desc``
    n_hard = 0
    if q_idx.size:
        qd = q_desc[valid]
        d_pos = np.square(qd - c_desc[np.searchsorted(cache, pos_e)]).sum(-1)
        d_neg = np.square(qd[:, None] - c_desc[np.searchsorted(cache, neg_e)]).sum(-1)
        n_hard = int((d_neg.min(axis=1) < d_pos + cfg.margin).sum())
    torch.manual_seed(int(cfg.seed) * 1000 + epoch)
    tuples = _TupleDataset(
        queries, pool, q_idx, pos_e, neg_e, int(cfg.seed), epoch, bool(getattr(cfg, "augment", True))
    )
    loader = DataLoader(tuples, batch_size=cfg.batch_size, shuffle=False, num_workers=workers)
    batch_negatives = bool(getattr(cfg, "batch_negatives", False))
    if batch_negatives:  # positions of every tuple's views (positive, then negatives), (T, 1 + K, 2)
        view_xy = pool.xy[np.concatenate([pos_e[:, None], neg_e], axis=1)]
    net.train()
    losses: list[float] = []
    start = 0
    for batch in loader:
        b = batch.shape[0]
        desc = embed_tuples(net, batch.to(device))
        if batch_negatives:
            sl = slice(start, start + b)
            neg, mask = batch_negative_mask(desc[:, 1:], queries.xy[q_idx[sl]], view_xy[sl], cfg.neg_min_dist_m)
            loss = loss_fn(desc[:, 0], desc[:, 1], neg, mask=mask.to(device))
        else:
            loss = loss_fn(desc[:, 0], desc[:, 1], desc[:, 2:])
        start += b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if avg is not None:
            update_average(avg, net, float(cfg.ema_decay))
        losses.append(float(loss.detach()))
    return {
        "epoch": epoch,
        "loss": float(np.mean(losses)) if losses else float("nan"),
        "n_tuples": int(q_idx.size),
        "n_hard": n_hard,
        "n_queries_without_positive": n_without,
        "n_cached": int(cache.size),
        "cache_s": round(t_cache, 3),
        "time_s": round(time.perf_counter() - t0, 3),
        "threads": torch.get_num_threads(),  # the CPU kernels' summation order, hence the path, depends on it
    }


#: Validation recall is averaged over N = 1 .. VAL_MAX_N for model selection (``val_score``).
VAL_MAX_N = 10


def _score(row: dict[str, Any]) -> tuple[float, float]:
    """Validation score of an epoch: (``val_score``, recall@1) within 1 km, compared lexicographically.

    ``val_score`` is the mean recall@N over N = 1 .. :data:`VAL_MAX_N` (the area under the early
    recall curve): on a validation set of a few dozen photo spots recall@1 alone moves by several
    points between epochs by chance, and picked an epoch whose test recall@1 was 2.7x lower than the
    last epoch's (cpu preset, 2026-12-02).
    """
    score, r1 = row.get("val_score", float("nan")), row.get("val_recall@1_1km", float("nan"))
    return (-1.0 if score != score else float(score), -1.0 if r1 != r1 else float(r1))


def _best_score(history: list[dict[str, Any]]) -> tuple[float, float]:
    return max((_score(h) for h in history), default=(-1.0, -1.0))


def _validate(net: nn.Module, val: tuple[QuerySet, ViewPool], cfg: Any, device: torch.device) -> dict[str, Any]:
    vq, vpool = val
    bs = int(getattr(cfg, "embed_batch_size", cfg.batch_size * 4))
    workers = int(getattr(cfg, "num_workers", 0))
    qd = extract_descriptors(net, vq.dataset, device, batch_size=bs, num_workers=workers, desc="val queries")
    dd = extract_descriptors(net, vpool, device, batch_size=bs, num_workers=workers, desc="val db")
    rec = validation_recall(qd, dd, vq.xy, vpool.xy, ns=range(1, VAL_MAX_N + 1), threshold_m=1000.0)
    return {
        "val_recall@1_1km": rec[1],
        "val_recall@5_1km": rec[5],
        "val_recall@10_1km": rec[VAL_MAX_N],
        "val_score": float(np.mean([rec[n] for n in range(1, VAL_MAX_N + 1)])),
    }


__all__ = [
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "METRICS_CSV",
    "METRICS_JSON",
    "QuerySet",
    "TrainResult",
    "ViewPool",
    "averaged_copy",
    "batch_negative_mask",
    "embed_tuples",
    "epoch_lr",
    "extract_descriptors",
    "forward_branch",
    "train",
    "tuple_loss",
    "update_average",
    "validation_recall",
    "write_metrics",
]
