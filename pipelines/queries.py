"""The synthetic query set: photo-like renders of random poses in a region, resumable.

Layout (docs/CONTRACTS.md)::

    work/<region>/queries/
        queries.json      config fingerprint (written first; a different config is refused)
        q00000.png ...    (H, W, 3) uint8 RGB photos, written atomically one by one
        queries.csv       written last (atomically): its presence means the set is complete
        mosaic.png        the first photos side by side (a preview)

Poses are drawn by :func:`crosslocate.datasets.queries.sample_synthetic_poses` from one generator
seeded with ``QuerySetConfig.seed``, on the *perturbed* DEM (:class:`crosslocate.render.perturb.PerturbedDEM`),
so cameras stand ``height_m`` above the ground they see. Photo ``i`` uses its own generator seeded
with ``(seed, photo.seed, i)``, so a resumed run writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.queries import (
    MIN_IMAGE_SIDE_PX,
    Query,
    load_query_csv,
    sample_orientations,
    sample_synthetic_poses,
    write_query_csv,
)
from crosslocate.datasets.schema import SKY_DEPTH_M, SPLIT_CODES, Modality
from crosslocate.dem.poses import Pose
from crosslocate.dem.regions import Region
from crosslocate.errors import ConfigError, ManifestMismatchError
from crosslocate.fileio import config_from_dict, config_to_dict, save_image_atomic, write_json_atomic
from crosslocate.pipelines.context import RegionSpec, region_dir, resolve_region
from crosslocate.render.config import BACKEND_NAMES, RenderConfig
from crosslocate.render.photo import PHOTO_PRESETS, PhotoConfig, PhotoRenderer, perturb_dem

if TYPE_CHECKING:
    from collections.abc import Callable

    from crosslocate.dem.config import GridConfig
    from crosslocate.dem.mosaic import DEM
    from crosslocate.dem.sources import DemSource, DemSpec
    from crosslocate.pipelines.presets import Preset

logger = logging.getLogger(__name__)

#: File names inside ``work/<region>/queries``.
CSV_NAME = "queries.csv"
FINGERPRINT_NAME = "queries.json"
MOSAIC_NAME = "mosaic.png"
#: Version of the fingerprint format.
FINGERPRINT_VERSION = 1


def image_name(index: int) -> str:
    """File name of query ``index`` (``q00000.png``)."""
    return f"q{index:05d}.png"


@dataclass(frozen=True, kw_only=True, slots=True)
class QuerySetConfig:
    """A synthetic query set.

    Attributes
    ----------
    n_queries : int
        Number of photos.
    width_px, height_px : int
        Photo size, pixels.
    fov_min_deg, fov_max_deg : float
        Horizontal FOV range, degrees (uniform; the paper's queries span 30-70).
    pitch_deg, roll_deg : float
        Pitch uniform in [-pitch_deg, pitch_deg], roll in [-roll_deg, roll_deg], degrees.
    height_m : float
        Camera height above the (perturbed) ground, metres.
    margin_m : float
        Minimum distance of a camera from the DEM edge, metres.
    range_m : float
        Render range, metres (terrain beyond is sky).
    near_m : float
        Near clipping distance, metres (below the closest ground a 1.7 m camera sees, ~2 m).
    backend : str
        Render backend (``cpu`` or ``pyrender``).
    seed : int
        Seed of the poses and of the per-photo randomness.
    photo : PhotoConfig
        Appearance and terrain perturbation.
    mosaic_count : int
        Photos in the preview mosaic (0: none).
    min_sky_fraction : float
        Keep a sampled pose only if at least this fraction of its image is sky (people photograph
        views, not the slope in front of them; the paper's queries are such photographs).
    min_horizon_m : float
        ... and only if the median distance of the skyline (the farthest terrain of each column
        below the sky) is at least this, metres. 0 with ``min_sky_fraction`` 0 keeps every pose.
    screen_size_px : int
        Side of the low-resolution depth render that screens candidate poses.
    lod_cells : int
        Terrain detail of the photo renders (:attr:`RenderConfig.lod_cells`; the build cost grows
        with its square).
    photos_per_spot : int
        Photos taken from each sampled camera position, each with its own random yaw, pitch, roll
        and FOV (and screened like the first). Photos of a spot share one sparse-database position,
        and a further photo costs a fraction of the first (the terrain is built once), so this
        multiplies the training queries cheaply. 1 = every photo from its own position.
    max_val_spots, max_test_spots : int or None
        At most this many spots (camera positions) in the val / test split (the grid's split rule,
        :func:`crosslocate.dem.splits.assign_splits`); a spot of a full split is passed over and the
        sampling goes on until ``n_queries`` photos. None: no limit, the splits take what the
        geography gives (on the Alps with the paper's split, Switzerland would take half the photos).
        The limits bound what validation and the benchmark cost on a large region.
    max_buffer_spots : int or None
        The same for the buffers between splits (positions of no split). 0 with both limits above
        at 0 makes a training-only set (:func:`crosslocate.pipelines.train.ensure_training_photos`).
    """

    n_queries: int = 300
    width_px: int = 400
    height_px: int = 300
    fov_min_deg: float = 30.0
    fov_max_deg: float = 70.0
    pitch_deg: float = 10.0
    roll_deg: float = 5.0
    height_m: float = 1.7
    margin_m: float = 1000.0
    range_m: float = 40_000.0
    near_m: float = 1.0
    backend: str = "cpu"
    seed: int = 0
    photo: PhotoConfig = field(default_factory=PhotoConfig)
    mosaic_count: int = 16
    min_sky_fraction: float = 0.1
    min_horizon_m: float = 2000.0
    screen_size_px: int = 64
    lod_cells: int = 256
    photos_per_spot: int = 1
    max_val_spots: int | None = None
    max_test_spots: int | None = None
    max_buffer_spots: int | None = None

    def __post_init__(self) -> None:
        ints = ("n_queries", "width_px", "height_px", "seed", "mosaic_count", "photos_per_spot", "lod_cells")
        for name in ints:
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"QuerySetConfig.{name} must be a non-negative integer, got {value!r}")
        if min(self.width_px, self.height_px) < MIN_IMAGE_SIDE_PX:
            raise ConfigError(
                f"QuerySetConfig photo size must be at least {MIN_IMAGE_SIDE_PX}x{MIN_IMAGE_SIDE_PX} px, "
                f"got {self.width_px}x{self.height_px}"
            )
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ints and isinstance(value, float | int) and not math.isfinite(value):
                raise ConfigError(f"QuerySetConfig.{f.name} must be finite, got {value!r}")
        if not 0.0 < self.fov_min_deg <= self.fov_max_deg < 180.0:
            raise ConfigError(
                f"QuerySetConfig FOV range must satisfy 0 < fov_min_deg <= fov_max_deg < 180, "
                f"got {self.fov_min_deg}..{self.fov_max_deg}"
            )
        if not (0.0 <= self.pitch_deg <= 90.0 and self.roll_deg >= 0.0 and self.height_m > 0.0 and self.margin_m >= 0):
            raise ConfigError(
                f"QuerySetConfig needs 0 <= pitch_deg <= 90, roll_deg >= 0, height_m > 0, margin_m >= 0; got "
                f"{self.pitch_deg}, {self.roll_deg}, {self.height_m}, {self.margin_m}"
            )
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"QuerySetConfig.backend {self.backend!r}: choose one of {BACKEND_NAMES}")
        if not isinstance(self.photo, PhotoConfig):
            raise ConfigError(f"QuerySetConfig.photo must be a PhotoConfig, got {type(self.photo).__name__}")
        if not (0.0 <= self.min_sky_fraction < 1.0 and self.min_horizon_m >= 0.0 and self.screen_size_px >= 8):
            raise ConfigError(
                "QuerySetConfig needs 0 <= min_sky_fraction < 1, min_horizon_m >= 0, screen_size_px >= 8; got "
                f"{self.min_sky_fraction}, {self.min_horizon_m}, {self.screen_size_px}"
            )
        if self.photos_per_spot < 1:
            raise ConfigError(f"QuerySetConfig.photos_per_spot must be >= 1, got {self.photos_per_spot}")
        for name in ("max_val_spots", "max_test_spots", "max_buffer_spots"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0):
                raise ConfigError(f"QuerySetConfig.{name} must be None or a non-negative integer, got {value!r}")
        self.render_config()  # validates range_m and near_m

    def render_config(self) -> RenderConfig:
        """The :class:`RenderConfig` of the depth/semantic renders behind the photos."""
        size = max(self.width_px, self.height_px)
        return RenderConfig(
            size_px=size, range_m=self.range_m, near_m=self.near_m, backend=self.backend, lod_cells=self.lod_cells
        )

    def screen_config(self) -> RenderConfig:
        """The low-resolution depth render that screens candidate poses (:func:`is_photo_spot`)."""
        return RenderConfig(
            size_px=self.screen_size_px,
            range_m=self.range_m,
            near_m=self.near_m,
            backend=self.backend,
            modalities=(Modality.DEPTH,),
            lod_cells=64,
        )

    @property
    def split_caps(self) -> dict[int, int]:
        """``{split code: max spots}`` of the capped splits (empty: no limits)."""
        caps = {
            SPLIT_CODES["val"]: self.max_val_spots,
            SPLIT_CODES["test"]: self.max_test_spots,
            SPLIT_CODES["none"]: self.max_buffer_spots,
        }
        return {code: int(cap) for code, cap in caps.items() if cap is not None}

    @property
    def screens(self) -> bool:
        """Whether candidate poses are screened at all."""
        return self.min_sky_fraction > 0.0 or self.min_horizon_m > 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (``photo`` nested; :func:`crosslocate.fileio.config_to_dict`)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuerySetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


#: ``cpu``: 800 photos, 4 per spot; at most 30 val and 40 test spots (120 / 160 photos), so
#: validation and the benchmark cost the same on the Alps (where Switzerland, the test area, would
#: otherwise take half the spots) as on the demo region (28 val / 33 test spots, no limit reached).
QUERY_PRESETS: dict[str, QuerySetConfig] = {
    "paper": QuerySetConfig(n_queries=1000, width_px=640, height_px=480, range_m=60_000.0, photo=PHOTO_PRESETS["paper"]),
    "cpu": QuerySetConfig(n_queries=800, width_px=400, height_px=300, range_m=40_000.0, photo=PHOTO_PRESETS["cpu"],
                          photos_per_spot=4, lod_cells=128, max_val_spots=30, max_test_spots=40),
    "tiny": QuerySetConfig(n_queries=12, width_px=128, height_px=96, range_m=20_000.0, photo=PHOTO_PRESETS["tiny"],
                           mosaic_count=12),
}  # fmt: skip


def resolve_query_config(preset: str | QuerySetConfig | Any) -> QuerySetConfig:
    """A :class:`QuerySetConfig` from a preset name, a config, or a pipeline ``Preset``.

    A pipeline preset (duck-typed) is used through its ``queries`` attribute when that is a
    :class:`QuerySetConfig`, else through its ``name`` (a key of :data:`QUERY_PRESETS`).
    """
    if isinstance(preset, QuerySetConfig):
        return preset
    if isinstance(preset, str):
        name = preset
    else:
        own = getattr(preset, "queries", None)
        if isinstance(own, QuerySetConfig):
            return own
        name = getattr(preset, "name", None)
        if not isinstance(name, str):
            raise ConfigError(f"cannot build a query set config from {preset!r}; pass a preset name or QuerySetConfig")
    try:
        return QUERY_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown query preset {name!r}; choose one of {sorted(QUERY_PRESETS)}") from None


def _split_names(queries: list[Query], region: Region, grid: GridConfig | None) -> list[str] | None:
    """Each photo's split name under the grid's split rule (the CSV's ``split`` column); None without a grid."""
    if grid is None or not queries:
        return None
    from crosslocate.pipelines.train import query_splits

    names = {code: name for name, code in SPLIT_CODES.items()}
    return [names[int(c)] for c in query_splits(queries, region, grid)]


def _grid_config(preset: str | QuerySetConfig | Any) -> GridConfig | None:
    """The grid settings (splits) that go with ``preset``: a pipeline Preset's ``grid``, the
    same-named grid preset for a name, None for a bare :class:`QuerySetConfig`."""
    from crosslocate.dem.config import GRID_PRESETS, GridConfig

    if isinstance(preset, QuerySetConfig):
        return None
    if isinstance(preset, str):
        return GRID_PRESETS.get(preset)
    grid = getattr(preset, "grid", None)
    return grid if isinstance(grid, GridConfig) else None


def query_dir(work: str | os.PathLike[str], region: RegionSpec) -> Path:
    """``work/<region>/queries`` (:func:`crosslocate.pipelines.context.region_dir`)."""
    return region_dir(work, resolve_region(region)) / "queries"


def fingerprint(cfg: QuerySetConfig, region: Region, dem: DEM, grid: GridConfig | None = None) -> dict[str, Any]:
    """What identifies a query set: format version, region, base-DEM checksum and the config.

    ``mosaic_count`` is left out: the preview does not change the set; so are ``photos_per_spot``,
    ``lod_cells`` and the split limits at their defaults (1, 256, None: sets made before they
    existed are the same sets). With split limits the grid's split settings (``grid``) are part of
    it: they decide which spots are kept.
    """
    config = {k: v for k, v in cfg.to_dict().items() if k != "mosaic_count"}
    optional = ("max_val_spots", "max_test_spots", "max_buffer_spots")
    for key, default in (("photos_per_spot", 1), ("lod_cells", 256), *((k, None) for k in optional)):
        if key in config and config[key] == default:
            del config[key]
    if cfg.split_caps:
        if grid is None:
            raise ConfigError("QuerySetConfig.max_val_spots/max_test_spots need the grid's split settings")
        config["split"] = {k: v for k, v in grid.to_dict().items() if k.startswith("split_")}
    return {
        "format": "crosslocate-queries",
        "version": FINGERPRINT_VERSION,
        "region": region.name,
        "region_bounds_lonlat": [round(float(v), 9) for v in region.bounds_lonlat],
        "dem_checksum": str(dem.checksum),
        "config": config,
    }


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def write_png(path: Path, image: npt.NDArray[np.uint8]) -> None:
    """Write an (H, W, 3) uint8 RGB image as PNG atomically."""
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{path}: expected an (H, W, 3) RGB image, got shape {rgb.shape}")
    save_image_atomic(path, rgb, format="PNG")


def png_complete(path: Path, width_px: int, height_px: int) -> bool:
    """True when ``path`` is a readable PNG of the expected size (written files are atomic)."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return False
    try:
        with Image.open(path) as im:
            ok = im.format == "PNG" and im.size == (width_px, height_px) and im.mode == "RGB"
            im.verify()
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        logger.warning("%s is unreadable (%s); rendering it again", path, exc)
        return False
    return ok


def _check_fingerprint(out_dir: Path, fp: dict[str, Any], overwrite: bool) -> None:
    """Refuse a foreign or different existing set (or clear it with ``overwrite``); then record ``fp``."""
    fp_path = out_dir / FINGERPRINT_NAME
    existing = sorted(out_dir.glob("q[0-9]*.png")) + [p for p in (out_dir / CSV_NAME,) if p.exists()]
    if fp_path.exists():
        try:
            old = json.loads(fp_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            old = {"unreadable": str(exc)}
        diffs = _differences(old, fp)
        if not diffs:
            return
        if not overwrite:
            shown = "; ".join(diffs[:6]) + (f"; ... ({len(diffs)} differences)" if len(diffs) > 6 else "")
            raise ManifestMismatchError(
                f"{fp_path}: the existing query set was made with other settings ({shown}); pass --overwrite "
                "(overwrite=True) to replace it, or use another --work folder"
            )
    elif existing and not overwrite:
        raise ManifestMismatchError(
            f"{out_dir} holds {len(existing)} query file(s) but no {FINGERPRINT_NAME}; pass --overwrite "
            "(overwrite=True) to replace them, or use another --work folder"
        )
    if existing:
        logger.warning("overwrite: removing %d files of the previous query set in %s", len(existing), out_dir)
        (out_dir / CSV_NAME).unlink(missing_ok=True)
        for p in existing:
            p.unlink(missing_ok=True)
        (out_dir / MOSAIC_NAME).unlink(missing_ok=True)
    write_json_atomic(fp_path, fp, sort_keys=True, allow_nan=True)


def _existing_set(out_dir: Path, cfg: QuerySetConfig) -> list[Query] | None:
    """The complete set recorded by ``queries.csv``, or None (CSV removed) when images are missing."""
    csv_path = out_dir / CSV_NAME
    if not csv_path.exists():
        return None
    queries = load_query_csv(csv_path)
    if len(queries) == cfg.n_queries and all(Path(q.image).is_file() for q in queries):
        return queries
    logger.warning("%s lists missing images or a different count; completing the set again", csv_path)
    csv_path.unlink()
    return None


def ensure_query_set(
    region: RegionSpec,
    dem_src: DemSource | DemSpec | DEM | None,
    preset: str | QuerySetConfig | Preset,
    work: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    grid: GridConfig | None = None,
    out_dir: str | os.PathLike[str] | None = None,
) -> list[Query]:
    """Render (or resume, or reuse) the synthetic query set of a region.

    Parameters
    ----------
    region : str or Region
        Region name (``alps``, ``switzerland``, ``demo``), polygon file, or :class:`Region`.
    dem_src : DemSource, path(s), ``"demo"``, an open DEM, or None
        The (unperturbed) DEM (:meth:`crosslocate.dem.sources.DemSource.resolve`; None: the
        embedded DEM of the ``demo`` region).
    preset : str, QuerySetConfig or pipeline Preset
        See :func:`resolve_query_config`.
    work : path
        Work folder; the set goes to ``work/<region>/queries``.
    overwrite : bool
        Replace an existing set made with other settings (otherwise :class:`ManifestMismatchError`).
    grid : GridConfig or None
        The split rule of the spot limits (None: the preset's grid).
    out_dir : path or None
        Folder of the set (None: ``work/<region>/queries``).

    Returns
    -------
    list of Query
        ``n_queries`` queries (absolute image paths), in file order, as :func:`load_query_csv` reads them.
    """
    from crosslocate.pipelines.tasks import opened_dem

    cfg = resolve_query_config(preset)
    grid = grid if grid is not None else _grid_config(preset)
    reg = resolve_region(region)
    out_dir = query_dir(work, reg) if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with opened_dem(dem_src, reg.name) as dem:
        _check_fingerprint(out_dir, fingerprint(cfg, reg, dem, grid), overwrite)
        done = _existing_set(out_dir, cfg)
        if done is not None:
            logger.info("query set complete: %s (%d queries)", out_dir / CSV_NAME, len(done))
            return done
        pdem = perturb_dem(dem, cfg.photo)
        split_of = None
        if cfg.split_caps and grid is not None:
            from crosslocate.dem.splits import assign_splits

            def split_of(lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.uint8]:
                return assign_splits(lon, lat, reg, grid)

        poses = sample_photo_spots(reg, pdem, cfg, split_of=split_of)
        rendered = _render_missing(pdem, poses, cfg, out_dir)
    queries = [Query(image=str((out_dir / image_name(i)).resolve()), pose=p) for i, p in enumerate(poses)]
    csv_path = write_query_csv(out_dir / CSV_NAME, queries, _split_names(queries, reg, grid))
    logger.info("query set written: %s (%d queries, %d rendered now)", csv_path, len(queries), rendered)
    if cfg.mosaic_count > 0 and queries:
        save_query_mosaic(queries[: cfg.mosaic_count], out_dir / MOSAIC_NAME)
    return load_query_csv(csv_path)


def photo_rng(cfg: QuerySetConfig, index: int) -> np.random.Generator:
    """The generator of photo ``index`` (independent of which photos were rendered before)."""
    return np.random.default_rng(np.random.SeedSequence([cfg.seed, cfg.photo.seed, index]))


def photo_spot_stats(depth: npt.NDArray[np.float32]) -> tuple[float, float]:
    """(sky fraction, median skyline distance in metres) of one (H, W) depth view (sky = ``SKY_DEPTH_M``).

    The skyline distance of a column is the depth of the terrain pixel just below its lowest sky
    pixel; columns without sky are skipped; 0.0 when no column has sky.
    """
    from crosslocate.datasets.derived import horizon_line

    sky = depth == SKY_DEPTH_M
    frac = float(sky.mean())
    rows = horizon_line(depth)
    cols = np.flatnonzero(np.isfinite(rows) & (rows < depth.shape[0]))
    if cols.size == 0:
        return frac, 0.0
    return frac, float(np.median(depth[rows[cols].astype(np.int64), cols]))


def _screen_init(dem: DEM, cfg: QuerySetConfig, atlas_specs: tuple[Any, ...] = ()) -> None:
    from crosslocate.pipelines.tasks import opened_atlases
    from crosslocate.render.views import ViewRenderer

    rc = cfg.screen_config()
    atlases = opened_atlases(dem, atlas_specs, rc.refraction_k)
    _WORKER.update(dem=dem, cfg=cfg, screen=ViewRenderer(dem, rc, atlases=atlases))


def screening_atlases(region: RegionSpec, dem: DEM, cfg: QuerySetConfig) -> tuple[Any, ...]:
    """Terrain atlas specs covering ``region`` for the screening renders (prepared here, once per
    DEM and settings; ``()`` when the screening backend renders a pyramid per pose)."""
    from crosslocate.render.atlas import ensure_atlas, plan_atlas
    from crosslocate.render.backends import uses_atlas

    rc = cfg.screen_config()
    if not uses_atlas(rc):
        return ()
    rw, rs, re, rn = resolve_region(region).bounds_lonlat
    dw, ds, de, dn = dem.bounds_lonlat
    w, s, e, n = max(rw, dw), max(rs, ds), min(re, de), min(rn, dn)
    if not (w < e and s < n):
        return ()
    lon, lat = np.meshgrid(np.linspace(w, e, 17), np.linspace(s, n, 17))  # the box's curved edges too
    specs = tuple(plan_atlas(lon.ravel(), lat.ravel(), dem.resolution_m, rc.range_m, rc.lod_cells))
    for spec in specs:
        ensure_atlas(dem, spec, rc.refraction_k)
    return specs


def _screen_one(pose: Pose) -> bool:
    """Whether ``pose`` (in a worker, see :func:`_screen_init`) sees enough sky and a far enough skyline."""
    import dataclasses

    from crosslocate.render.photo import square_render_geometry

    cfg: QuerySetConfig = _WORKER["cfg"]
    # the photo's own frame: a square render at the screen size, cropped to the photo's aspect
    w = (
        cfg.screen_size_px
        if cfg.width_px >= cfg.height_px
        else round(cfg.screen_size_px * cfg.width_px / cfg.height_px)
    )
    h = (
        cfg.screen_size_px
        if cfg.height_px >= cfg.width_px
        else round(cfg.screen_size_px * cfg.height_px / cfg.width_px)
    )
    _size, fov, r0, c0 = square_render_geometry(pose.fov_deg, max(w, 1), max(h, 1))
    depth = _WORKER["screen"].render([dataclasses.replace(pose, fov_deg=fov)]).arrays[Modality.DEPTH][0]
    frac, dist = photo_spot_stats(depth[r0 : r0 + h, c0 : c0 + w])
    return frac >= cfg.min_sky_fraction and dist >= cfg.min_horizon_m


def _screen_spot(poses: list[Pose]) -> list[bool]:
    """:func:`_screen_one` of every pose of one spot, in one worker (the spot's terrain is built once)."""
    return [_screen_one(p) for p in poses]


def _map(
    fn: Any,
    items: list[Any],
    init: Any,
    initargs: tuple[Any, ...],
    workers: int | None,
    *,
    progress: Any = None,
    chunksize: int = 1,
) -> list[Any]:
    """``[fn(x) for x in items]`` after ``init(*initargs)``, results in input order.

    In this process for fewer than ``_PARALLEL_MIN_PHOTOS`` items or one worker, else in one spawn
    process per core (``workers``; numba's threading layer is not fork-safe). ``progress`` (a
    :class:`~crosslocate.progress.Progress`) is advanced once per item.
    """
    n_workers = min(workers or os.cpu_count() or 1, len(items))
    out: list[Any] = []
    if n_workers <= 1 or len(items) < _PARALLEL_MIN_PHOTOS:
        init(*initargs)
        try:
            for x in items:
                out.append(fn(x))
                if progress is not None:
                    progress.update()
        finally:  # the renderers made by ``init`` belong to this call; the DEM is the caller's
            for key in ("renderer", "screen"):
                if key in _WORKER:
                    _WORKER.pop(key).close()
            _WORKER.clear()
        return out
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=init, initargs=initargs) as ex:
        for r in ex.map(fn, items, chunksize=chunksize):
            out.append(r)
            if progress is not None:
                progress.update()
    return out


def sample_photo_spots(
    region: RegionSpec,
    dem: DEM,
    cfg: QuerySetConfig,
    workers: int | None = None,
    *,
    split_of: Callable[[npt.ArrayLike, npt.ArrayLike], npt.NDArray[np.uint8]] | None = None,
) -> list[Pose]:
    """``cfg.n_queries`` synthetic query poses where a photographer would stand.

    Candidates come from :func:`~crosslocate.datasets.queries.sample_synthetic_poses` (seeded by
    ``cfg.seed``, drawn in batches) and are kept, in draw order, when a low-resolution depth render
    shows at least ``cfg.min_sky_fraction`` sky and a skyline at least ``cfg.min_horizon_m`` away
    (:func:`photo_spot_stats`). With ``cfg.photos_per_spot`` > 1 each kept spot adds up to that
    many photos in all: further orientations from the same position
    (:func:`~crosslocate.datasets.queries.sample_orientations`, seeded by ``(cfg.seed, spot)``),
    screened the same way. Poses come spot by spot; deterministic for a given seed, whatever ``workers``.
    With split limits (``cfg.max_val_spots`` / ``max_test_spots``) ``split_of(lon, lat)`` gives each
    spot's split code and the spots of a full split are passed over (without limits, or while no
    limit is reached, the same poses as without them).

    Raises
    ------
    ConfigError
        Fewer than one candidate in 50 passes (the thresholds do not suit this terrain).
    """
    rng = np.random.default_rng(cfg.seed)

    def draw(n: int) -> list[Pose]:
        return sample_synthetic_poses(
            region,
            dem,
            n,
            rng,
            fov_range_deg=(cfg.fov_min_deg, cfg.fov_max_deg),
            pitch_deg=cfg.pitch_deg,
            roll_deg=cfg.roll_deg,
            margin_m=cfg.margin_m,
            height_m=cfg.height_m,
        )

    if cfg.n_queries == 0:
        return []
    caps = cfg.split_caps
    if caps and split_of is None:
        raise ConfigError("QuerySetConfig.max_val_spots/max_test_spots need the split rule (split_of)")
    taken = dict.fromkeys(caps, 0)
    if not cfg.screens and cfg.photos_per_spot == 1 and not caps:
        return draw(cfg.n_queries)
    screen_args = (dem, cfg, screening_atlases(region, dem, cfg) if cfg.screens else ())
    kept: list[Pose] = []
    n_spots = tried = 0
    while len(kept) < cfg.n_queries:
        if tried >= 50 * max(cfg.n_queries, 1):
            capped = f" outside the full splits {sorted(caps.items())} (split code: spots)" if caps else ""
            raise ConfigError(
                f"only {len(kept)} of {tried} sampled query poses see >= {cfg.min_sky_fraction:.0%} sky and a "
                f"skyline >= {cfg.min_horizon_m:.0f} m away{capped}; lower QuerySetConfig.min_sky_fraction/"
                "min_horizon_m"
            )
        need_spots = -(-(cfg.n_queries - len(kept)) // cfg.photos_per_spot)
        batch = draw(max(2 * need_spots, 16))
        ok = _map(_screen_one, batch, _screen_init, screen_args, workers, chunksize=8) if cfg.screens else None
        spots = [p for k, p in enumerate(batch) if ok is None or ok[k]]
        tried += len(batch)
        groups = [[p] for p in spots]
        if cfg.photos_per_spot > 1 and spots:
            extra = [_spot_orientations(p, cfg, n_spots + k) for k, p in enumerate(spots)]
            good = (
                _map(_screen_spot, extra, _screen_init, screen_args, workers)
                if cfg.screens
                else [[True] * len(e) for e in extra]
            )
            tried += sum(len(e) for e in extra)
            for g, e, flags in zip(groups, extra, good, strict=True):
                g += [p for p, f in zip(e, flags, strict=True) if f][: cfg.photos_per_spot - 1]
        n_spots += len(spots)
        codes = split_of([g[0].lon for g in groups], [g[0].lat for g in groups]) if caps and groups else None
        for i, g in enumerate(groups):
            if codes is not None and int(codes[i]) in caps:
                code = int(codes[i])
                if taken[code] >= caps[code]:
                    continue
                taken[code] += 1
            kept += g
            if len(kept) >= cfg.n_queries:
                break
    logger.info(
        "query poses: %d photos from %d spots (up to %d per spot), %d candidate poses screened",
        cfg.n_queries,
        len({p.spot for p in kept[: cfg.n_queries]}),
        cfg.photos_per_spot,
        tried,
    )
    return kept[: cfg.n_queries]


#: Orientations tried per further photo of a spot (the first ``photos_per_spot - 1`` that pass are kept).
_TRIES_PER_EXTRA_PHOTO = 3


def _spot_orientations(pose: Pose, cfg: QuerySetConfig, spot: int) -> list[Pose]:
    """Candidate further photos of spot number ``spot`` (its own generator, so any batching gives the same)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 1, spot]))
    n = _TRIES_PER_EXTRA_PHOTO * (cfg.photos_per_spot - 1) if cfg.screens else cfg.photos_per_spot - 1
    return sample_orientations(
        pose, n, rng, fov_range_deg=(cfg.fov_min_deg, cfg.fov_max_deg), pitch_deg=cfg.pitch_deg, roll_deg=cfg.roll_deg
    )


#: Below this many photos to render, render in this process (worker start-up is not worth it).
_PARALLEL_MIN_PHOTOS = 16
_WORKER: dict[str, Any] = {}


def _worker_init(dem: DEM, cfg: QuerySetConfig, out_dir: Path) -> None:
    """Process-pool initializer: one DEM handle and one renderer per worker process."""
    _WORKER.update(dem=dem, cfg=cfg, out_dir=out_dir, renderer=PhotoRenderer(cfg.render_config()))


def _render_spot(items: list[tuple[int, Pose]]) -> list[int]:
    """Render the photos ``items = [(i, pose), ...]`` of one spot (after :func:`_worker_init`), each written atomically.

    The photos of a spot share its position, so the renderer builds the terrain once for all of them.
    """
    cfg: QuerySetConfig = _WORKER["cfg"]
    for i, pose in items:
        image = _WORKER["renderer"].render(
            _WORKER["dem"], pose, cfg.width_px, cfg.height_px, photo_rng(cfg, i), cfg.photo
        )
        write_png(_WORKER["out_dir"] / image_name(i), image)
    return [i for i, _ in items]


def _render_missing(dem: DEM, poses: list[Pose], cfg: QuerySetConfig, out_dir: Path, workers: int | None = None) -> int:
    """Render every pose whose PNG is not complete yet; returns how many were rendered.

    Photos are independent (each has its own seeded generator, :func:`photo_rng`), so they are
    rendered by ``workers`` processes (default: one per core) with identical bytes in any order;
    the photos of one spot (same position) go to one worker together.
    """
    from crosslocate.progress import Progress

    todo = [i for i in range(len(poses)) if not png_complete(out_dir / image_name(i), cfg.width_px, cfg.height_px)]
    if len(todo) < len(poses):
        logger.info("resuming: %d of %d photos exist", len(poses) - len(todo), len(poses))
    spots: dict[tuple[float, float, float], list[tuple[int, Pose]]] = {}
    for i in todo:
        spots.setdefault(poses[i].spot, []).append((i, poses[i]))
    if spots:
        unit = "photo" if len(spots) == len(todo) else "spot"
        with Progress(len(spots), "query photos", unit, logger=logger) as bar:
            _map(_render_spot, list(spots.values()), _worker_init, (dem, cfg, out_dir), workers, progress=bar)
    return len(todo)


def save_query_mosaic(queries: list[Query], out: Path) -> Path:
    """Preview PNG of the queries' photos, titled with index and FOV (:func:`crosslocate.render.preview.save_mosaic`)."""
    from PIL import Image

    from crosslocate.render.preview import save_mosaic

    images = []
    for q in queries:
        with Image.open(q.image) as im:
            images.append(np.asarray(im.convert("RGB")))
    titles = [f"{Path(q.image).stem}  fov {q.pose.fov_deg:.0f} deg" for q in queries]
    return save_mosaic(images, out, titles=titles, ncols=4)


def summarize(queries: list[Query]) -> dict[str, Any]:
    """Count, FOV/pitch/roll statistics (degrees) and the lon/lat bounding box of a query set."""
    if not queries:
        return {"count": 0}
    arr = {k: np.array([getattr(q.pose, k) for q in queries], np.float64) for k in Pose.__dataclass_fields__}
    stats = {
        k: {"min": float(arr[k].min()), "mean": float(arr[k].mean()), "max": float(arr[k].max())}
        for k in ("fov_deg", "pitch_deg", "roll_deg", "alt_m")
    }
    return {
        "count": len(queries),
        **stats,
        "bounds_lonlat": [
            float(arr["lon"].min()),
            float(arr["lat"].min()),
            float(arr["lon"].max()),
            float(arr["lat"].max()),
        ],
    }


__all__ = [
    "CSV_NAME",
    "QUERY_PRESETS",
    "QuerySetConfig",
    "ensure_query_set",
    "fingerprint",
    "image_name",
    "photo_spot_stats",
    "query_dir",
    "resolve_query_config",
    "sample_photo_spots",
    "save_query_mosaic",
    "summarize",
]
