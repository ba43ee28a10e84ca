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

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.queries import Query
from crosslocate.datasets.schema import SPLIT_CODES, Modality
from crosslocate.errors import ConfigError
from crosslocate.fileio import config_to_dict, write_json_atomic

logger = logging.getLogger(__name__)

#: Databases the training flow needs.
TRAIN_DB_KINDS: tuple[str, ...] = ("sparse", "compact")


@dataclass(frozen=True, kw_only=True, slots=True)
class FlowPaths:
    """Folders of one (work, region, preset, modality, query set) run.

    ``queries_csv``: the user's query CSV (None: the synthetic set of ``work/<region>/queries``).
    The sparse and compact databases and the run depend on the query set, so a CSV's get their own
    folders, suffixed ``-<csv stem>``; the uniform database is shared.
    """

    work: Path
    region: str
    preset: str
    modality: str
    queries_csv: Path | None = None

    @property
    def region_dir(self) -> Path:
        return self.work / self.region

    @property
    def query_set(self) -> str:
        """``synthetic`` or the CSV's stem."""
        return "synthetic" if self.queries_csv is None else self.queries_csv.stem

    def _suffix(self) -> str:
        return "" if self.queries_csv is None else f"-{self.queries_csv.stem}"

    def db(self, kind: str) -> Path:
        """``work/<region>/db/<kind>`` (``-<csv stem>`` appended for sparse/compact of a CSV query set)."""
        return self.region_dir / "db" / (kind if kind == "uniform" else kind + self._suffix())

    @property
    def run(self) -> Path:
        """``work/<region>/runs/<preset>`` (``-<modality>`` appended unless depth, then ``-<csv stem>``)."""
        suffix = "" if self.modality == Modality.DEPTH.value else f"-{self.modality}"
        return self.region_dir / "runs" / f"{self.preset}{suffix}{self._suffix()}"


def flow_paths(
    work: str | os.PathLike[str],
    region: str,
    preset: str,
    modality: str,
    queries_csv: str | os.PathLike[str] | None = None,
) -> FlowPaths:
    """Validate the modality and build the run's paths (region given by name or path: its stem is used)."""
    try:
        mod = Modality(modality).value
    except ValueError:
        raise ConfigError(f"--modality {modality!r}: choose one of {', '.join(m.value for m in Modality)}") from None
    csv_path = None if queries_csv is None else Path(queries_csv).resolve()
    return FlowPaths(work=Path(work), region=Path(str(region)).stem, preset=preset, modality=mod, queries_csv=csv_path)


def flow_queries(region: str, dem_src: Any, preset: Any, paths: FlowPaths) -> list[Query]:
    """The run's query set: the user's CSV (``paths.queries_csv``), checked row by row (every position
    inside the region and the DEM, every image readable; ``alt_m`` may be empty: DEM + 1.7 m), or the
    synthetic set (rendered when missing, :func:`crosslocate.pipelines.queries.ensure_query_set`)."""
    if paths.queries_csv is None:
        from crosslocate.pipelines.queries import ensure_query_set

        return ensure_query_set(region, dem_src, preset, paths.work)
    from crosslocate.datasets.queries import load_query_csv
    from crosslocate.dem.sources import open_dem

    with open_dem(dem_src) as dem:
        queries = load_query_csv(paths.queries_csv, dem=dem, region=region)
    if not queries:
        raise ConfigError(f"{paths.queries_csv}: the query CSV has no rows")
    logger.info("query set %s: %d photos", paths.queries_csv, len(queries))
    return queries


def query_set_record(queries: list[Query], splits: npt.NDArray[np.uint8], paths: FlowPaths) -> dict[str, Any]:
    """What identifies the query set a run trains and is evaluated on: ``id`` (sha256 of the poses,
    image bytes and split codes, :func:`crosslocate.datasets.queries.query_set_digest`), ``source``,
    ``n_queries`` and the count per split. Stored in checkpoints and results."""
    from crosslocate.datasets.queries import query_set_digest

    codes = np.asarray(splits, np.uint8)
    return {
        "id": query_set_digest(queries, codes.tobytes()),
        "source": str(paths.queries_csv) if paths.queries_csv is not None else "synthetic",
        "n_queries": len(queries),
        **{f"n_{name}": int((codes == code).sum()) for name, code in SPLIT_CODES.items()},
    }


def net_input(preset: Any) -> tuple[int, bool]:
    """(input side in pixels, FOV scaling on/off) of the preset's network; defaults: the view size, on."""
    size = getattr(preset.net, "input_size_px", None) or preset.render.size_px
    return int(size), bool(getattr(preset.net, "fov_scaling", True))


def query_splits(queries: list[Query], region: Any, grid_cfg: Any) -> npt.NDArray[np.uint8]:
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
    kinds: tuple[str, ...], preset: Any, region: Any, dem_src: Any, paths: FlowPaths, queries: list[Query]
) -> dict[str, Path]:
    """Build (or resume / reuse) each database kind; returns kind -> folder."""
    from crosslocate.pipelines.build import build_database

    out: dict[str, Path] = {}
    for kind in kinds:
        t0 = time.perf_counter()
        out[kind] = Path(build_database(kind, preset, region, dem_src, paths.db(kind), queries=queries))
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
    region: str,
    dem_src: Any,
    preset_name: Any,
    work: str | os.PathLike[str],
    *,
    modality: str = "depth",
    resume: bool = False,
    device: str | None = None,
    queries_csv: str | os.PathLike[str] | None = None,
    net_options: Any = None,
) -> dict[str, Any]:
    """Ensure queries and databases, then train; returns a summary with the checkpoint path.

    Parameters
    ----------
    region : str
        Region name (``demo``, ``alps``, ...) or polygon file.
    dem_src : path, list or ``"demo"``
        DEM source (``None``: ``"demo"`` for the demo region, else required).
    preset_name : str or Preset
        ``paper`` / ``cpu`` / ``tiny`` (:func:`crosslocate.pipelines.presets.get_preset`), or a
        :class:`~crosslocate.pipelines.presets.Preset` (e.g. with overrides).
    work : path
        Work folder.
    modality : str
        Database modality the network is trained on.
    resume : bool
        Continue an existing checkpoint (otherwise an existing one is refused).
    device : str or None
        ``auto`` / ``cpu`` / ``cuda:N`` (None: the preset's).
    queries_csv : path or None
        Train on the photos of this query CSV (:func:`flow_queries`) instead of the synthetic set;
        splits, FOV scaling and databases as for the synthetic set, in folders of their own.
    net_options : NetOptions or None
        Backbone / pooling / ImageNet weights on top of the preset
        (:class:`crosslocate.pipelines.presets.NetOptions`, :func:`resolve_net_options`); the run
        folder is named after them.
    """
    from crosslocate.dem.regions import get_region
    from crosslocate.model.device import resolve_device, seed_everything
    from crosslocate.model.net import build_net
    from crosslocate.model.train import train

    preset, run_name = resolve_net_options(resolve_preset(preset_name), net_options)
    dem_src = _default_dem(region, dem_src)
    paths = flow_paths(work, region, run_name, modality, queries_csv)
    reg = get_region(region)
    queries = flow_queries(region, dem_src, preset, paths)
    tcfg = preset.train
    val_kinds = tuple(getattr(tcfg, "val_databases", TRAIN_DB_KINDS))
    kinds = TRAIN_DB_KINDS + tuple(k for k in val_kinds if k not in TRAIN_DB_KINDS)
    dbs = ensure_databases(kinds, preset, region, dem_src, paths, queries)
    dev = resolve_device(device or getattr(tcfg, "device", "auto"))
    seed_everything(int(tcfg.seed))
    splits = query_splits(queries, reg, preset.grid)
    (size_px, fov_scaling), db_fov = net_input(preset), float(preset.render.fov_deg)
    augment = _augment_config(tcfg)
    trainq = make_queryset(
        queries,
        splits == SPLIT_CODES["train"],
        reg.crs_wkt,
        size_px,
        db_fov,
        augment=augment,
        seed=tcfg.seed,
        fov_scaling=fov_scaling,
    )
    if len(trainq.dataset) == 0:
        raise ConfigError(f"no training-split queries among {len(queries)} in {paths.region_dir / 'queries'}")
    pool = make_pool(
        [dbs["sparse"], dbs["compact"]],
        paths.modality,
        "train",
        reg.crs_wkt,
        augment=augment,
        seed=tcfg.seed,
        size_px=size_px,
    )
    val = None
    valmask = splits == SPLIT_CODES["val"]
    val_dbs = [dbs[k] for k in val_kinds if split_indices(dbs[k], "val").size]
    if valmask.any() and val_dbs:
        val = (
            make_queryset(queries, valmask, reg.crs_wkt, size_px, db_fov, fov_scaling=fov_scaling),
            make_pool(val_dbs, paths.modality, "val", reg.crs_wkt, size_px=size_px),
        )
    net = build_net(preset.net).to(dev)
    meta = {
        "preset": preset.name,
        "region": paths.region,
        "query_set": query_set_record(queries, splits, paths),
        "modality": paths.modality,
        "net": config_to_dict(preset.net),
        "train": config_to_dict(tcfg),
        "init": getattr(net, "init_source", None),
        "device": str(dev),
    }
    if resume:
        _check_resumable(paths.run, meta["query_set"]["id"])
    paths.run.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = train(net, trainq, pool, tcfg, paths.run, dev, val=val, resume=resume, meta=meta)
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
    write_json_atomic(paths.run / "train.json", summary, default=str, allow_nan=True)
    return summary


def _check_resumable(run: Path, query_set_id: str) -> None:
    """Refuse ``--resume`` of a run trained on another query set (or one without run records)."""
    from crosslocate.model import checkpoint
    from crosslocate.model.train import CHECKPOINT_NAME

    ckpt = run / CHECKPOINT_NAME
    if ckpt.exists():
        meta = checkpoint.read_checkpoint(ckpt)["meta"]
        checkpoint.check_run_record(ckpt, meta, query_set_id=query_set_id, finished=False)


def resolve_preset(preset: Any) -> Any:
    """A preset given by name (:func:`crosslocate.pipelines.presets.get_preset`) or as a Preset object."""
    if isinstance(preset, str):
        from crosslocate.pipelines.presets import get_preset

        return get_preset(preset)
    return preset


def resolve_net_options(preset: Any, net_options: Any) -> tuple[Any, str]:
    """(``preset`` (a Preset, :func:`resolve_preset`) with ``net_options`` applied, run folder name).

    The name is :meth:`crosslocate.pipelines.presets.NetOptions.run_name` of the preset's name
    (``cpu-efficientnet_lite0-imagenet``); the preset keeps its base name. Unchanged (name: the
    preset's) for None or empty options.
    """
    if net_options is None or net_options.empty:
        return preset, preset.name
    return net_options.apply(preset), net_options.run_name(preset.name)


def _default_dem(region: str, dem_src: Any) -> Any:
    if dem_src:
        return dem_src
    if Path(str(region)).stem == "demo":
        return "demo"
    raise ConfigError(f"--dem is required for region {region!r} (only the demo region has an embedded DEM)")


def _augment_config(tcfg: Any) -> Any:
    """The transforms' AugmentConfig when ``TrainConfig.augment`` is on (default strengths), else None."""
    from crosslocate.datasets.transforms import AugmentConfig

    return AugmentConfig() if bool(getattr(tcfg, "augment", True)) else None


__all__ = [
    "TRAIN_DB_KINDS",
    "FlowPaths",
    "ensure_databases",
    "flow_paths",
    "flow_queries",
    "make_pool",
    "make_queryset",
    "net_input",
    "query_set_record",
    "query_splits",
    "query_xy",
    "resolve_net_options",
    "resolve_preset",
    "run_train",
    "split_indices",
]
