"""Geographically disjoint train / val / test splits with a buffer between them.

Two methods (:class:`~crosslocate.dem.config.GridConfig` ``split_method``):

``polygon``
    As in the paper: test = every point inside ``split_test_region`` (Switzerland by default);
    the rest of the region is cut into square blocks of ``split_block_m`` (LAEA frame of the
    region), and a seeded shuffle of those blocks picks the val blocks (share
    ``val / (train + val)`` of ``split_fractions``); the other blocks are train.
``blocks``
    The region is cut into square blocks of ``split_block_m``; a seeded shuffle of the blocks that
    touch the region assigns ``split_fractions`` (train, val, test) of them, by largest remainder,
    with at least one block per split of positive fraction when there are enough blocks.
``auto``
    ``polygon`` when the region contains the test region (and is not it), else ``blocks``.

Blocks are indexed by ``floor(x / split_block_m), floor(y / split_block_m)`` in the region's LAEA
frame (origin at the region centre), so the split of a point depends only on (region, config),
never on which other points are passed: queries and database positions agree.

Buffer: a train point closer than ``split_buffer_m`` to the val or test area, and a val point
closer than it to the test area, gets ``SPLIT_CODES["none"]`` (255). The areas are closed
polygons that contain every point of their split, so after the buffer every train point is at
least ``split_buffer_m`` (projected metres) from every val and test point. Points outside the
region are ``none`` too.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon

from crosslocate.dem.config import GridConfig
from crosslocate.dem.regions import Region, get_region, lonlat_to_xy
from crosslocate.errors import ConfigError, RegionError

logger = logging.getLogger(__name__)

TRAIN, VAL, TEST, NONE = 0, 1, 2, 255  # == datasets.schema.SPLIT_CODES (dem/ may not import datasets/)
#: Segments per quarter circle of the buffer polygons; the buffer distance is enlarged by
#: 1 / cos(pi / (4 * _QUAD_SEGS)) so the polygon circumscribes the true round buffer.
_QUAD_SEGS = 16


@dataclass(frozen=True, slots=True)
class SplitAreas:
    """Closed split areas of one (region, config), in the region's LAEA frame (metres).

    Attributes
    ----------
    method : str
        ``"polygon"`` or ``"blocks"`` (``auto`` resolved).
    crs_wkt : str
        The frame of every geometry here (``region.crs_wkt``).
    region_xy, val_xy, test_xy : shapely geometry
        Region outline, val area and test area (possibly empty); train is the rest of the region.
    near_test_xy, near_val_or_test_xy : shapely geometry
        ``test_xy`` and ``val_xy | test_xy`` grown by at least ``split_buffer_m``.
    """

    method: str
    crs_wkt: str
    region_xy: Polygon | MultiPolygon
    val_xy: Polygon | MultiPolygon
    test_xy: Polygon | MultiPolygon
    near_test_xy: Polygon | MultiPolygon
    near_val_or_test_xy: Polygon | MultiPolygon


def assign_splits(
    lon: npt.ArrayLike, lat: npt.ArrayLike, region: Region | str, cfg: GridConfig
) -> npt.NDArray[np.uint8]:
    """Split code of each point.

    Parameters
    ----------
    lon, lat : (N,) float
        Degrees, EPSG:4326.
    region : Region or str
        The area being split (a name or path is resolved with :func:`get_region`).
    cfg : GridConfig
        ``split_*`` settings.

    Returns
    -------
    (N,) uint8
        ``SPLIT_CODES``: 0 train, 1 val, 2 test, 255 none (inside a buffer or outside the region).
    """
    region = get_region(region)
    lon = np.atleast_1d(np.asarray(lon, np.float64))
    lat = np.atleast_1d(np.asarray(lat, np.float64))
    if lon.shape != lat.shape or lon.ndim != 1:
        raise ConfigError(
            f"assign_splits: lon and lat must be (N,) arrays of equal length, got {lon.shape}, {lat.shape}"
        )
    areas = split_areas(region, cfg)
    x, y = lonlat_to_xy(lon, lat, areas.crs_wkt)
    out = np.full(lon.shape, TRAIN, np.uint8)
    out[shapely.intersects_xy(areas.val_xy, x, y)] = VAL
    out[shapely.intersects_xy(areas.test_xy, x, y)] = TEST
    out[(out == TRAIN) & shapely.intersects_xy(areas.near_val_or_test_xy, x, y)] = NONE
    out[(out == VAL) & shapely.intersects_xy(areas.near_test_xy, x, y)] = NONE
    out[~shapely.intersects_xy(areas.region_xy, x, y)] = NONE
    return out


def split_areas(region: Region, cfg: GridConfig) -> SplitAreas:
    """The closed val/test areas and their buffers for ``region`` under ``cfg`` (cached per split setting)."""
    split_only = dataclasses.replace(GridConfig(), **{f: getattr(cfg, f) for f in _SPLIT_FIELDS})
    return _split_areas(region, split_only)


_SPLIT_FIELDS = (
    "split_method",
    "split_buffer_m",
    "split_block_m",
    "split_fractions",
    "split_seed",
    "split_test_region",
)


@functools.lru_cache(maxsize=16)
def _split_areas(region: Region, cfg: GridConfig) -> SplitAreas:
    crs = region.crs_wkt
    region_xy = region.polygon_xy(crs)
    method = _resolve_method(region, cfg)
    train_f, val_f, test_f = cfg.split_fractions
    if method == "polygon":
        test_region = get_region(cfg.split_test_region)
        test_xy = shapely.intersection(region_xy, test_region.polygon_xy(crs))
        if test_xy.is_empty:
            raise ConfigError(
                f"split_method='polygon': test region {test_region.name!r} does not overlap region {region.name!r}; "
                "use split_method='blocks' or another split_test_region"
            )
        rest = shapely.difference(region_xy, test_xy)
        total = train_f + val_f
        fractions = (train_f / total, val_f / total, 0.0) if total > 0 else (1.0, 0.0, 0.0)
        boxes, codes = _assign_blocks(rest, cfg.split_block_m, fractions, cfg.split_seed)
        val_xy = shapely.intersection(rest, shapely.union_all(boxes[codes == VAL]))
    else:
        boxes, codes = _assign_blocks(region_xy, cfg.split_block_m, (train_f, val_f, test_f), cfg.split_seed)
        val_xy = shapely.intersection(region_xy, shapely.union_all(boxes[codes == VAL]))
        test_xy = shapely.intersection(region_xy, shapely.union_all(boxes[codes == TEST]))
    grow = cfg.split_buffer_m / math.cos(math.pi / (4 * _QUAD_SEGS))
    near_test = shapely.buffer(test_xy, grow, quad_segs=_QUAD_SEGS) if cfg.split_buffer_m > 0 else test_xy
    both = shapely.union(val_xy, test_xy)
    near_both = shapely.buffer(both, grow, quad_segs=_QUAD_SEGS) if cfg.split_buffer_m > 0 else both
    for geom in (region_xy, val_xy, test_xy, near_test, near_both):
        shapely.prepare(geom)
    logger.debug("split areas for %s: method=%s", region.name, method)
    return SplitAreas(method, crs, region_xy, val_xy, test_xy, near_test, near_both)


def _resolve_method(region: Region, cfg: GridConfig) -> str:
    if cfg.split_method != "auto":
        return cfg.split_method
    try:
        test_region = get_region(cfg.split_test_region)
    except RegionError as exc:
        logger.warning("split: test region %r unavailable (%s); using blocks", cfg.split_test_region, exc)
        return "blocks"
    if test_region.name == region.name:
        return "blocks"
    outside = shapely.difference(test_region.polygon, region.polygon).area
    return "polygon" if outside <= 1e-3 * test_region.polygon.area else "blocks"


def _assign_blocks(
    area_xy: Polygon | MultiPolygon, block_m: float, fractions: tuple[float, float, float], seed: int
) -> tuple[npt.NDArray[np.object_], npt.NDArray[np.uint8]]:
    """Square blocks touching ``area_xy`` and their split codes.

    Returns
    -------
    boxes : (B,) object
        shapely boxes ``[i*block_m, (i+1)*block_m] x [j*block_m, (j+1)*block_m]`` (metres), sorted by (j, i).
    codes : (B,) uint8
        TRAIN / VAL / TEST per block, from a ``seed``-ed permutation and largest-remainder counts.
    """
    if area_xy.is_empty:
        return np.empty(0, object), np.empty(0, np.uint8)
    x0, y0, x1, y1 = area_xy.bounds
    i = np.arange(math.floor(x0 / block_m), math.floor(x1 / block_m) + 1)
    j = np.arange(math.floor(y0 / block_m), math.floor(y1 / block_m) + 1)
    jj, ii = np.meshgrid(j, i, indexing="ij")
    ii, jj = ii.ravel(), jj.ravel()
    boxes = shapely.box(ii * block_m, jj * block_m, (ii + 1) * block_m, (jj + 1) * block_m)
    shapely.prepare(area_xy)
    keep = shapely.intersects(area_xy, boxes) & ~shapely.touches(area_xy, boxes)  # shared area, not just an edge
    boxes = boxes[keep]
    counts = _largest_remainder(len(boxes), fractions)
    order = np.random.default_rng(seed).permutation(len(boxes))
    codes = np.empty(len(boxes), np.uint8)
    start = 0
    for code, count in zip((TEST, VAL, TRAIN), (counts[2], counts[1], counts[0]), strict=True):
        codes[order[start : start + count]] = code
        start += count
    return boxes, codes


def _largest_remainder(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """Split ``n`` items by ``fractions``; each positive fraction gets >= 1 item when ``n`` allows."""
    raw = [f * n for f in fractions]
    counts = [math.floor(r) for r in raw]
    for k in sorted(range(3), key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts)]:
        counts[k] += 1
    positive = [k for k in range(3) if fractions[k] > 0]
    if n >= len(positive):
        for k in positive:
            if counts[k] == 0:
                donor = max(range(3), key=lambda d: counts[d])
                counts[donor] -= 1
                counts[k] += 1
    return counts[0], counts[1], counts[2]


def shared_terrain_areas(areas: SplitAreas, range_m: float) -> dict[str, dict[str, float]]:
    """How much terrain the held-out splits share with training, for views that reach ``range_m``.

    Geographically disjoint positions are not disjoint terrain: a view sees mountains up to
    ``range_m`` away, so training views can show the test area's mountains and test views the
    training area's. The train area is the region outside the buffered val/test areas (where train
    positions lie). Per held-out split ``s`` in ``("val", "test")`` (absent when its area is empty):

    ``area_km2``
        The split's area.
    ``seen_by_train``
        Share of the split's area within ``range_m`` of the train area: terrain that training
        views can show (an upper bound; occlusion hides some of it).
    ``view_terrain_in_train``
        Share of the terrain within ``range_m`` of the split's area (clipped to the region) that
        lies in the train area: what the split's own views look at that training views stand on.

    All areas in the region's LAEA frame (``areas.crs_wkt``); shares in [0, 1].
    """
    if range_m < 0:
        raise ConfigError(f"shared_terrain: range_m must be >= 0, got {range_m}")
    train_xy = shapely.difference(areas.region_xy, areas.near_val_or_test_xy)
    near_train = shapely.buffer(train_xy, range_m, quad_segs=_QUAD_SEGS) if range_m > 0 else train_xy
    out: dict[str, dict[str, float]] = {}
    for name, geom in (("val", areas.val_xy), ("test", areas.test_xy)):
        area = float(geom.area)
        if area <= 0.0:
            continue
        seen = float(shapely.intersection(geom, near_train).area) / area
        visible = shapely.intersection(
            shapely.buffer(geom, range_m, quad_segs=_QUAD_SEGS) if range_m > 0 else geom, areas.region_xy
        )
        in_train = float(shapely.intersection(visible, train_xy).area) / max(float(visible.area), 1e-9)
        out[name] = {
            "area_km2": round(area / 1e6, 3),
            "seen_by_train": round(min(seen, 1.0), 4),
            "view_terrain_in_train": round(min(in_train, 1.0), 4),
        }
    return out


def shared_terrain(region: Region | str, cfg: GridConfig, range_m: float) -> dict[str, Any]:
    """:func:`shared_terrain_areas` of ``region`` split by ``cfg`` for views of range ``range_m``
    (metres), with the range and the split method recorded."""
    region = get_region(region)
    areas = split_areas(region, cfg)
    return {
        "range_m": float(range_m),
        "method": areas.method,
        "buffer_m": float(cfg.split_buffer_m),
        **shared_terrain_areas(areas, range_m),
    }
