"""``crosslocate train``: from a clean work folder to a trained checkpoint.

Steps (each skipped when its output is complete):

1. the query set (photo-like renders of synthetic poses, :func:`crosslocate.pipelines.queries.ensure_query_set`),
   split into train/val/test by :func:`crosslocate.dem.splits.assign_splits` (same rule as the databases);
2. the ``sparse`` (views at the query positions: the positives) and ``compact`` (uniform positions
   within 1 km of any query: hard negatives) databases, :func:`crosslocate.pipelines.build.build_database`;
3. the triplet training loop (:func:`crosslocate.model.train.train`) on training-split queries vs
   the training-split views of sparse + compact; validation: val-split queries vs the val-split views
   of the databases ``TrainConfig.val_databases`` names (sparse + compact by default; the ``cpu``
   preset uses the uniform database, built here then, so validation is the test task on held-out
   ground), recall@1/@10 within 1 km per epoch; ``best.pt`` keeps the best epoch.

Layout (docs/CONTRACTS.md): ``work/<region>/queries/``, ``work/<region>/db/<kind>/`` and the run
folder ``work/<region>/runs/<preset>/`` (``runs/<preset>-<modality>/`` for a modality other than
depth) with ``checkpoint.pt``, ``metrics.json``/``.csv`` and ``train.json`` (resolved settings).
All distances are metres in the region's LAEA frame (:attr:`crosslocate.dem.regions.Region.crs_wkt`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.queries import Query
from crosslocate.datasets.schema import SPLIT_CODES
from crosslocate.errors import ConfigError
from crosslocate.pipelines.context import RunContext

if TYPE_CHECKING:
    from crosslocate.dem.config import GridConfig
    from crosslocate.dem.regions import Region
    from crosslocate.pipelines.presets import Preset
    from crosslocate.pipelines.queries import QuerySetConfig
from crosslocate.fileio import config_to_dict, write_json_atomic

logger = logging.getLogger(__name__)

#: Databases the training flow needs.
TRAIN_DB_KINDS: tuple[str, ...] = ("sparse", "compact")


@dataclass(frozen=True, slots=True)
class FlowInputs:
    """The query set of a run, resolved once and shared by training and the benchmark.

    Attributes
    ----------
    queries : list of Query
        Every photo of the query set (synthetic or the user's CSV).
    splits : (Q,) uint8
        ``SPLIT_CODES`` per query (:func:`query_splits`).
    record : dict
        :func:`query_set_record` (id, source, counts per split).
    """

    queries: list[Query]
    splits: npt.NDArray[np.uint8]
    record: dict[str, Any]
    extra: list[Query] = field(default_factory=list)
    extra_record: dict[str, Any] | None = None

    def mask(self, split: str) -> npt.NDArray[np.bool_]:
        """(Q,) bool: the queries of ``split``."""
        return self.splits == SPLIT_CODES[split]

    def training(self) -> tuple[list[Query], npt.NDArray[np.bool_]]:
        """(every photo: the query set then the training-only photos, (Q + E,) bool: the training ones)."""
        return self.queries + self.extra, np.concatenate([self.mask("train"), np.ones(len(self.extra), bool)])


def flow_queries(ctx: RunContext) -> list[Query]:
    """The run's query set: the user's CSV (``ctx.queries_csv``), checked row by row (every position
    inside the region and the DEM, every image readable; ``alt_m`` may be empty: DEM + 1.7 m), or the
    synthetic set (rendered when missing, :func:`crosslocate.pipelines.queries.ensure_query_set`)."""
    if ctx.queries_csv is None:
        from crosslocate.pipelines.queries import ensure_query_set

        return ensure_query_set(ctx.region, ctx.dem, ctx.base_preset, ctx.work)
    from crosslocate.datasets.queries import load_query_csv
    from crosslocate.pipelines.tasks import opened_dem

    with opened_dem(ctx.dem) as dem:  # the process's open DEM, which the builds use next
        queries = load_query_csv(ctx.queries_csv, dem=dem, region=ctx.region)
    if not queries:
        raise ConfigError(f"{ctx.queries_csv}: the query CSV has no rows")
    logger.info("query set %s: %d photos", ctx.queries_csv, len(queries))
    return queries


def flow_inputs(ctx: RunContext) -> FlowInputs:
    """The query set, its splits and its record (:class:`FlowInputs`), once per command; with
    ``TrainConfig.extra_photos`` also the training-only photos (:func:`ensure_training_photos`)."""
    queries = flow_queries(ctx)
    splits = query_splits(queries, ctx.region, ctx.preset.grid)
    record = query_set_record(queries, splits, ctx)
    if not ctx.extra_photos:
        return FlowInputs(queries=queries, splits=splits, record=record)
    extra = ensure_training_photos(ctx)
    return FlowInputs(
        queries=queries, splits=splits, record=record, extra=extra, extra_record=training_photos_record(extra, ctx)
    )


#: Seed offset of the training-only photos from the query set's seed (their spots and looks differ).
TRAINING_PHOTOS_SEED_OFFSET = 1_000_003


def training_photos_config(base: QuerySetConfig, n: int) -> QuerySetConfig:
    """The query settings of ``n`` training-only photos: the base set's photo settings and photos
    per spot, seed ``base.seed + TRAINING_PHOTOS_SEED_OFFSET``, and no val, test or buffer spots."""
    return dataclasses.replace(
        base,
        n_queries=int(n),
        seed=int(base.seed) + TRAINING_PHOTOS_SEED_OFFSET,
        max_val_spots=0,
        max_test_spots=0,
        max_buffer_spots=0,
    )


def ensure_training_photos(ctx: RunContext) -> list[Query]:
    """Render (or reuse) the run's ``TrainConfig.extra_photos`` training-only photos in
    :attr:`RunContext.training_photos_dir` (:func:`training_photos_config`): spots in the training
    split only, so the val and test photos and the heldout database stay those of the query set.

    Raises
    ------
    ConfigError
        The training split has too few photo spots for the count, or a photo falls outside it.
    """
    from crosslocate.pipelines.queries import ensure_query_set, resolve_query_config

    base = ctx.base_preset
    cfg = training_photos_config(resolve_query_config(base), ctx.extra_photos)
    photos = ensure_query_set(ctx.region, ctx.dem, cfg, ctx.work, grid=base.grid, out_dir=ctx.training_photos_dir)
    codes = query_splits(photos, ctx.region, ctx.preset.grid)
    if (codes != SPLIT_CODES["train"]).any():
        bad = int(np.flatnonzero(codes != SPLIT_CODES["train"])[0])
        raise ConfigError(
            f"{ctx.training_photos_dir}: training-only photo {bad} lies outside the training split "
            "(made with other split settings?); remove the folder to draw the set again"
        )
    logger.info("training-only photos: %d in %s", len(photos), ctx.training_photos_dir)
    return photos


def training_photos_record(photos: list[Query], ctx: RunContext) -> dict[str, Any]:
    """What identifies the training-only photos: ``id`` (as :func:`query_set_record`), ``n_queries``, folder."""
    from crosslocate.datasets.queries import query_set_digest

    codes = np.full(len(photos), SPLIT_CODES["train"], np.uint8)
    return {
        "id": query_set_digest(photos, codes.tobytes()),
        "n_queries": len(photos),
        "dir": str(ctx.training_photos_dir),
    }


def query_set_record(queries: list[Query], splits: npt.NDArray[np.uint8], ctx: RunContext) -> dict[str, Any]:
    """What identifies the query set a run trains and is evaluated on: ``id`` (sha256 of the poses,
    image bytes and split codes, :func:`crosslocate.datasets.queries.query_set_digest`), ``source``,
    ``n_queries`` and the count per split. Stored in checkpoints and results."""
    from crosslocate.datasets.queries import query_set_digest

    codes = np.asarray(splits, np.uint8)
    return {
        "id": query_set_digest(queries, codes.tobytes()),
        "source": str(ctx.queries_csv) if ctx.queries_csv is not None else "synthetic",
        "n_queries": len(queries),
        **{f"n_{name}": int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
    }


def net_input(preset: Preset) -> tuple[int, bool]:
    """(input side in pixels, FOV scaling on/off) of the preset's network; defaults: the view size, on."""
    size = getattr(preset.net, "input_size_px", None) or preset.render.size_px
    return int(size), bool(getattr(preset.net, "fov_scaling", True))


def query_splits(queries: list[Query], region: Region, grid_cfg: GridConfig) -> npt.NDArray[np.uint8]:
    """(Q,) uint8 ``SPLIT_CODES`` of the queries (same geographic rule as the database positions)."""
    from crosslocate.dem.splits import assign_splits

    lon = np.array([q.pose.lon for q in queries], np.float64)
    lat = np.array([q.pose.lat for q in queries], np.float64)
    return assign_splits(lon, lat, region, grid_cfg)


def query_xy(queries: list[Query], crs_wkt: str) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """((Q, 2) metres in ``crs_wkt``, (Q,) yaw degrees) of the queries' true poses."""
    from crosslocate.dem.geodesy import transform_xy

    lon = np.array([q.pose.lon for q in queries], np.float64)
    lat = np.array([q.pose.lat for q in queries], np.float64)
    x, y = transform_xy(lon, lat, "EPSG:4326", crs_wkt)
    return np.stack([x, y], axis=1), np.array([q.pose.yaw_deg for q in queries], np.float64)


def ensure_databases(
    kinds: tuple[str, ...], ctx: RunContext, queries: list[Query], extra: list[Query] | None = None
) -> dict[str, Path]:
    """Build (or resume / reuse) each database kind in ``ctx.db(kind)``; returns kind -> folder.

    ``extra``: training-only photos, which place sparse and compact views too (not heldout ones).
    """
    from crosslocate.pipelines.build import build_database

    out: dict[str, Path] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        placed = queries + list(extra or ()) if kind in TRAIN_DB_KINDS else queries
        out[kind] = Path(
            build_database(
                kind,
                ctx.base_preset,
                ctx.region,
                ctx.dem,
                ctx.db(kind),
                queries=placed,
                clip_to_dem=ctx.clip_to_dem,
            )
        )
        logger.info("database %s ready at %s (%.1f s)", kind, out[kind], time.perf_counter() - t0)
    return out


def split_indices(db_dir: Path, split: str) -> npt.NDArray[np.int64]:
    """(n,) int64 indices of the views of ``split`` in a database."""
    from crosslocate.datasets.shards import open_database

    db = open_database(db_dir)
    try:
        table = db.table()
    finally:
        close = getattr(db, "close", None)
        if callable(close):
            close()
    return np.flatnonzero(table["split"] == SPLIT_CODES[split]).astype(np.int64)


def make_pool(
    dbs: list[Path],
    modality: str,
    split: str,
    crs_wkt: str,
    *,
    augment: Any = None,
    seed: int = 0,
    size_px: int | None = None,
) -> Any:
    """A :class:`~crosslocate.model.train.ViewPool` of the ``split`` views of several databases.

    ``size_px``: the network input side (views are resized to it); None keeps the stored size.
    """
    from crosslocate.datasets.views import ViewDataset
    from crosslocate.model.train import ViewPool

    parts = []
    for d in dbs:
        idx = split_indices(d, split)
        if idx.size:
            parts.append(ViewDataset(d, modality, indices=idx, augment=augment, seed=seed, size_px=size_px))
    if not parts:
        raise ConfigError(
            f"no {split}-split views in {', '.join(map(str, dbs))}; the region may be too small for the "
            "split settings (GridConfig.split_block_m / split_fractions)"
        )
    return ViewPool.of(parts, crs_wkt=crs_wkt)


def make_queryset(
    queries: list[Query],
    mask: npt.NDArray[np.bool_],
    crs_wkt: str,
    size_px: int,
    db_fov_deg: float,
    *,
    augment: Any = None,
    seed: int = 0,
    fov_scaling: bool = True,
) -> Any:
    """A :class:`~crosslocate.model.train.QuerySet` of the selected queries.

    Photos are FOV-scaled onto the ``size_px`` canvas at the database's angular scale
    (``fov_scaling``, the paper's setting) or plainly resized to it (the ablation).
    """
    from crosslocate.datasets.views import QueryDataset
    from crosslocate.model.train import QuerySet

    chosen = [q for q, m in zip(queries, mask, strict=True) if m]
    xy, yaw = query_xy(chosen, crs_wkt)
    ds = QueryDataset(chosen, size_px, fov_scaling=fov_scaling, db_fov_deg=db_fov_deg, augment=augment, seed=seed)
    return QuerySet(ds, xy, yaw)


def run_train(
    ctx: RunContext,
    *,
    resume: bool = False,
    device: str | None = None,
    inputs: FlowInputs | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Ensure queries and databases, then train; returns a summary with the checkpoint path.

    Parameters
    ----------
    ctx : RunContext
        Region, DEM, preset (network options applied), modality, query set and folders
        (:meth:`RunContext.resolve`); the run goes to ``ctx.run``.
    resume : bool
        Continue an existing checkpoint (otherwise an existing one is refused).
    device : str or None
        ``auto`` / ``cpu`` / ``cuda:N`` (None: the preset's).
    inputs : FlowInputs or None
        The query set when the caller already has it (:func:`flow_inputs`).
    workers : int or None
        DataLoader worker processes instead of ``TrainConfig.num_workers`` (None: the preset's).
        Where the views are read and prepared, not what is learned, so the run folder is the same.
    """
    from crosslocate.model.device import resolve_device, seed_everything
    from crosslocate.model.net import build_net
    from crosslocate.model.train import train

    preset, reg = ctx.preset, ctx.region
    inputs = inputs if inputs is not None else flow_inputs(ctx)
    tcfg = preset.train if workers is None else dataclasses.replace(preset.train, num_workers=int(workers))
    val_kinds = tuple(getattr(tcfg, "val_databases", TRAIN_DB_KINDS))
    kinds = TRAIN_DB_KINDS + tuple(k for k in val_kinds if k not in TRAIN_DB_KINDS)
    dbs = ensure_databases(kinds, ctx, inputs.queries, inputs.extra)
    dev = resolve_device(device or getattr(tcfg, "device", "auto"))
    seed_everything(int(tcfg.seed))
    trainq, pool, val = training_sets(ctx, inputs, dbs, val_kinds)
    net = build_net(preset.net).to(dev)
    meta = {
        "preset": preset.name,
        "region": reg.name,
        "query_set": inputs.record,
        "training_photos": inputs.extra_record,
        "modality": ctx.modality,
        "net": config_to_dict(preset.net),
        "train": config_to_dict(tcfg),
        "init": getattr(net, "init_source", None),
        "device": str(dev),
    }
    if resume:
        _check_resumable(ctx.run, meta["query_set"]["id"])
    ctx.run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = train(net, trainq, pool, tcfg, ctx.run, dev, val=val, resume=resume, meta=meta)
    summary = {
        **meta,
        "checkpoint": str(result.checkpoint),
        "epochs": sum(1 for h in result.history if h.get("epoch", 0) > 0),
        "n_train_queries": len(trainq.dataset),
        "n_train_views": len(pool),
        "n_val_queries": 0 if val is None else len(val[0].dataset),
        "n_val_views": 0 if val is None else len(val[1]),
        "val_databases": list(val_kinds),
        "last_epoch": result.history[-1] if result.history else None,
        "train_s": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(ctx.run / "train.json", summary, default=str, allow_nan=True)
    return summary


def training_sets(
    ctx: RunContext, inputs: FlowInputs, dbs: dict[str, Path], val_kinds: tuple[str, ...]
) -> tuple[Any, Any, tuple[Any, Any] | None]:
    """(training queries, training views of sparse + compact, (val queries, val views) or None).

    Photos are FOV-scaled onto the network's input canvas (:func:`net_input`); training sets are
    augmented when ``TrainConfig.augment``; validation uses the val-split views of ``val_kinds``.
    """
    preset, crs, tcfg = ctx.preset, ctx.region.crs_wkt, ctx.preset.train
    (size_px, fov_scaling), db_fov = net_input(preset), float(preset.render.fov_deg)
    augment = _augment_config(tcfg)
    photos, trainmask = inputs.training()
    trainq = make_queryset(
        photos,
        trainmask,
        crs,
        size_px,
        db_fov,
        augment=augment,
        seed=tcfg.seed,
        fov_scaling=fov_scaling,
    )
    if len(trainq.dataset) == 0:
        raise ConfigError(
            f"no training-split queries among {len(inputs.queries)} of query set {inputs.record['source']}"
        )
    pool = make_pool(
        [dbs["sparse"], dbs["compact"]], ctx.modality, "train", crs, augment=augment, seed=tcfg.seed, size_px=size_px
    )
    valmask = inputs.mask("val")
    val_dbs = [dbs[k] for k in val_kinds if split_indices(dbs[k], "val").size]
    if not (valmask.any() and val_dbs):
        return trainq, pool, None
    val = (
        make_queryset(inputs.queries, valmask, crs, size_px, db_fov, fov_scaling=fov_scaling),
        make_pool(val_dbs, ctx.modality, "val", crs, size_px=size_px),
    )
    return trainq, pool, val


def _check_resumable(run: Path, query_set_id: str) -> None:
    """Refuse ``--resume`` of a run trained on another query set (or one without run records)."""
    from crosslocate.model import checkpoint
    from crosslocate.model.train import CHECKPOINT_NAME

    ckpt = run / CHECKPOINT_NAME
    if ckpt.exists():
        meta = checkpoint.read_checkpoint(ckpt)["meta"]
        checkpoint.check_run_record(ckpt, meta, query_set_id=query_set_id, finished=False)


def _augment_config(tcfg: Any) -> Any:
    """The transforms' AugmentConfig when ``TrainConfig.augment`` is on (default strengths), else None."""
    from crosslocate.datasets.transforms import AugmentConfig

    return AugmentConfig() if bool(getattr(tcfg, "augment", True)) else None


__all__ = [
    "TRAINING_PHOTOS_SEED_OFFSET",
    "TRAIN_DB_KINDS",
    "FlowInputs",
    "ensure_databases",
    "ensure_training_photos",
    "flow_inputs",
    "flow_queries",
    "make_pool",
    "make_queryset",
    "net_input",
    "query_set_record",
    "query_splits",
    "query_xy",
    "run_train",
    "split_indices",
    "training_photos_config",
    "training_photos_record",
    "training_sets",
]
