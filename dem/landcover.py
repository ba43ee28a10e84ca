"""Land-cover classes (the one definition of semantic class ids).

``LandCover`` ids are what semantic views store (uint8). ``SKY`` is added by the renderer; the
other classes come from a land-cover raster (rule-based from the DEM, or a user raster).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from enum import IntEnum
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from crosslocate.dem import geodesy, sampling
from crosslocate.errors import ConfigError
from crosslocate.fileio import config_to_dict


class LandCover(IntEnum):
    """Semantic class ids stored in semantic views (uint8)."""

    SKY = 0
    WATER = 1
    GLACIER = 2  # glacier and permanent snow
    ROCK = 3  # bare rock, scree
    FOREST = 4
    GRASSLAND = 5  # alpine meadows, pasture, shrubs, cropland
    BUILT = 6  # settlements (only from user rasters)


#: RGB palette, uint8, indexed by class id.
LANDCOVER_PALETTE: dict[LandCover, tuple[int, int, int]] = {
    LandCover.SKY: (135, 190, 235),
    LandCover.WATER: (40, 90, 200),
    LandCover.GLACIER: (240, 245, 250),
    LandCover.ROCK: (130, 120, 110),
    LandCover.FOREST: (30, 100, 40),
    LandCover.GRASSLAND: (150, 200, 90),
    LandCover.BUILT: (200, 60, 60),
}


# ---------------------------------------------------------------------------------------------------
# Rule-based land cover from elevation, and mapping of user rasters (added below the shared ids).

logger = logging.getLogger(__name__)

#: uint8 sentinel for "no land-cover class here" (outside coverage, unmapped user code).
LANDCOVER_NODATA: int = 255

#: ESA WorldCover (10 m, 2020/2021) class codes -> LandCover.
WORLDCOVER_MAPPING: dict[int, LandCover] = {
    10: LandCover.FOREST,  # tree cover
    20: LandCover.GRASSLAND,  # shrubland
    30: LandCover.GRASSLAND,  # grassland
    40: LandCover.GRASSLAND,  # cropland
    50: LandCover.BUILT,  # built-up
    60: LandCover.ROCK,  # bare / sparse vegetation
    70: LandCover.GLACIER,  # snow and ice
    80: LandCover.WATER,  # permanent water bodies
    90: LandCover.GRASSLAND,  # herbaceous wetland
    95: LandCover.FOREST,  # mangroves
    100: LandCover.GRASSLAND,  # moss and lichen
}

#: CORINE Land Cover level-3 codes (111..523, as in the CLC "CODE_18" attribute) -> LandCover.
CORINE_MAPPING: dict[int, LandCover] = {
    **{c: LandCover.BUILT for c in (111, 112, 121, 122, 123, 124, 131, 132, 133, 141, 142)},
    **{c: LandCover.GRASSLAND for c in (211, 212, 213, 221, 222, 223, 231, 241, 242, 243, 244)},
    **{c: LandCover.FOREST for c in (311, 312, 313, 324)},
    **{c: LandCover.GRASSLAND for c in (321, 322, 323, 334, 411, 412)},
    **{c: LandCover.ROCK for c in (331, 332, 333)},
    335: LandCover.GLACIER,
    **{c: LandCover.WATER for c in (421, 422, 423, 511, 512, 521, 522, 523)},
}


@dataclass(frozen=True, kw_only=True, slots=True)
class LandcoverRules:
    """Thresholds of :func:`rule_landcover` (Alpine defaults; metres, degrees, km²)."""

    snowline_m: float = 2900.0  # glacier/snow line on flat or east/west-facing terrain
    snowline_aspect_m: float = 300.0  # north-facing slopes: line lower by this; south-facing: higher
    glacier_max_slope_deg: float = 35.0  # snow does not stay on steeper slopes
    rock_slope_deg: float = 40.0  # bare rock at and above this slope, at any elevation
    rock_line_m: float = 2700.0  # bare rock/scree above this elevation (where not glacier)
    treeline_m: float = 1900.0  # forest only below
    forest_min_slope_deg: float = 4.0  # flatter valley floors are meadows/fields (grassland)
    lake_max_slope_deg: float = 1.0  # lake surfaces are flat
    lake_max_relief_m: float = 1.5  # elevation range allowed within one lake surface
    lake_min_area_m2: float = 20_000.0
    lake_closed_fraction: float = 0.9  # share of the rim cells that must be above the surface
    channel_min_area_km2: float = 10.0  # upstream area that makes a river cell
    channel_max_slope_deg: float = 12.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not np.isfinite(value):
                raise ConfigError(f"LandcoverRules.{name} must be finite, got {value}")
        if not 0.0 <= self.lake_closed_fraction <= 1.0:
            raise ConfigError(f"LandcoverRules.lake_closed_fraction must be in [0, 1], got {self.lake_closed_fraction}")

    def to_dict(self) -> dict[str, float]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LandcoverRules:
        return cls(**{k: float(v) for k, v in data.items()})


def _spacing(spacing_m: float | tuple[float, float]) -> tuple[float, float]:
    dy, dx = (spacing_m, spacing_m) if np.isscalar(spacing_m) else spacing_m  # type: ignore[misc]
    if not (dy > 0 and dx > 0):
        raise ConfigError(f"spacing_m must be positive, got {spacing_m}")
    return float(dy), float(dx)


def slope_aspect_deg(
    elev: npt.NDArray[np.floating[Any]], spacing_m: float | tuple[float, float]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Slope and aspect of a north-up grid.

    Parameters
    ----------
    elev : (H, W) float metres, row 0 north. spacing_m : cell size, or ``(dy_m, dx_m)``.

    Returns
    -------
    slope_deg : (H, W) float64 in [0, 90).
    aspect_deg : (H, W) float64, direction the slope faces (downhill), clockwise from north in
        [0, 360); 0 where flat.
    """
    dy, dx = _spacing(spacing_m)
    z = np.asarray(elev, dtype=np.float64)
    dz_drow, dz_dcol = np.gradient(z, dy, dx)
    dz_de, dz_dn = dz_dcol, -dz_drow
    slope = np.degrees(np.arctan(np.hypot(dz_de, dz_dn)))
    aspect = np.degrees(np.arctan2(-dz_de, -dz_dn)) % 360.0
    return slope, aspect


_D8 = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


def flow_accumulation(
    elev: npt.NDArray[np.floating[Any]], spacing_m: float | tuple[float, float]
) -> npt.NDArray[np.float64]:
    """D8 flow accumulation: upstream area in m² (including the cell itself), (H, W) float64.

    Each cell drains to its steepest-descent neighbour (8-connected, drop / distance); pits and flats
    drain nowhere (flow stops there). Computed without Python loops over cells: cells are released
    in topological waves (Kahn's algorithm), one ``np.add.at`` per wave.
    """
    dy, dx = _spacing(spacing_m)
    z = np.asarray(elev, dtype=np.float64)
    h, w = z.shape
    pad = np.pad(z, 1, constant_values=np.inf)
    best = np.zeros((h, w))
    rec = np.full((h, w), -1, np.int64)
    idx = np.arange(h * w).reshape(h, w)
    for dr, dc in _D8:
        nb = pad[1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        drop = (z - nb) / np.hypot(dr * dy, dc * dx)
        better = drop > best
        best = np.where(better, drop, best)
        rec = np.where(better, idx + dr * w + dc, rec)
    rec = rec.ravel()
    acc = np.full(h * w, dy * dx)
    has = rec >= 0
    donors = np.bincount(rec[has], minlength=h * w)
    frontier = np.nonzero(donors == 0)[0]
    while frontier.size:
        frontier = frontier[rec[frontier] >= 0]
        targets = rec[frontier]
        np.add.at(acc, targets, acc[frontier])
        np.subtract.at(donors, targets, 1)
        targets = np.unique(targets)
        frontier = targets[donors[targets] == 0]
    return acc.reshape(h, w)


def _lakes(
    z: npt.NDArray[np.float64], slope: npt.NDArray[np.float64], cell_m2: float, rules: LandcoverRules
) -> npt.NDArray[np.bool_]:
    """Flat closed basins: flat components, large enough, nearly level, rimmed by higher cells."""
    flat = slope < rules.lake_max_slope_deg
    labels, n = ndimage.label(flat, structure=np.ones((3, 3)))
    lake = np.zeros(z.shape, bool)
    if n == 0:
        return lake
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    big = np.nonzero(sizes * cell_m2 >= rules.lake_min_area_m2)[0]
    big = big[big > 0]
    slices = ndimage.find_objects(labels)
    for lab in big:
        sl = slices[lab - 1]
        sl = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in sl)
        comp = labels[sl] == lab
        zc = z[sl][comp]
        if zc.max() - zc.min() > rules.lake_max_relief_m:
            continue
        ring = ndimage.binary_dilation(comp, structure=np.ones((3, 3))) & ~comp
        rim = z[sl][ring]
        if rim.size == 0 or np.mean(rim >= zc.max() - 0.01) < rules.lake_closed_fraction:
            continue
        level = zc.max() + rules.lake_max_relief_m * 0.5
        grown = ndimage.binary_dilation(comp, structure=np.ones((3, 3))) & (z[sl] <= level)
        lake[sl] |= comp | grown
    return lake


def rule_landcover(
    elev: npt.NDArray[np.floating[Any]],
    spacing_m: float | tuple[float, float],
    rules: LandcoverRules | None = None,
) -> npt.NDArray[np.uint8]:
    """Rule-based land cover of an elevation grid.

    Parameters
    ----------
    elev : (H, W) float
        Metres, row 0 north, no NaN (fill voids first).
    spacing_m : float or (dy_m, dx_m)
        Ground cell size in metres.
    rules : LandcoverRules, optional
        Thresholds (Alpine defaults).

    Returns
    -------
    (H, W) uint8 :class:`LandCover` ids (never SKY or BUILT).

    Rules, first match wins (slope and aspect from central differences, see :func:`slope_aspect_deg`):

    1. WATER: lakes = 8-connected components of flat cells (slope < ``lake_max_slope_deg``) with area
       >= ``lake_min_area_m2``, elevation range <= ``lake_max_relief_m`` and at least
       ``lake_closed_fraction`` of their rim cells higher than the surface (a closed basin), grown by
       one cell onto the shore at the same level; rivers = cells whose D8 upstream area is
       >= ``channel_min_area_km2`` with slope < ``channel_max_slope_deg``.
    2. GLACIER: elevation >= snow line and slope <= ``glacier_max_slope_deg``; the snow line is
       ``snowline_m - snowline_aspect_m * cos(aspect) * min(1, slope/10°)`` (lower on north faces,
       higher on south faces, unchanged on flat ground).
    3. ROCK: slope >= ``rock_slope_deg`` or elevation >= ``rock_line_m``.
    4. FOREST: elevation < ``treeline_m`` and slope >= ``forest_min_slope_deg``.
    5. GRASSLAND: everything else (meadows, flat valley floors, alpine pasture).
    """
    rules = rules or LandcoverRules()
    z = np.asarray(elev, dtype=np.float64)
    if z.ndim != 2:
        raise ConfigError(f"elev must be a 2-D grid, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ConfigError("elev contains NaN/inf; fill voids before rule_landcover (sampling.fill_voids)")
    dy, dx = _spacing(spacing_m)
    slope, aspect = slope_aspect_deg(z, (dy, dx))
    out = np.full(z.shape, int(LandCover.GRASSLAND), np.uint8)
    forest = (z < rules.treeline_m) & (slope >= rules.forest_min_slope_deg)
    out[forest] = LandCover.FOREST
    out[(slope >= rules.rock_slope_deg) | (z >= rules.rock_line_m)] = LandCover.ROCK
    weight = np.clip(slope / 10.0, 0.0, 1.0)
    snowline = rules.snowline_m - rules.snowline_aspect_m * np.cos(np.radians(aspect)) * weight
    out[(z >= snowline) & (slope <= rules.glacier_max_slope_deg)] = LandCover.GLACIER
    water = _lakes(z, slope, dy * dx, rules)
    if min(z.shape) >= 3:
        acc = flow_accumulation(z, (dy, dx))
        water |= (acc >= rules.channel_min_area_km2 * 1e6) & (slope < rules.channel_max_slope_deg)
    out[water] = LandCover.WATER
    return out


def map_codes(codes: npt.ArrayLike, mapping: Mapping[int, LandCover | int]) -> npt.NDArray[np.uint8]:
    """Map raster codes (any numeric dtype; NaN = nodata) to LandCover ids; unmapped -> ``LANDCOVER_NODATA``."""
    c = np.asarray(codes, dtype=np.float64)
    out = np.full(c.shape, LANDCOVER_NODATA, np.uint8)
    if not mapping:
        return out
    keys = np.array(sorted(mapping), dtype=np.float64)
    vals = np.array([int(mapping[int(k)]) for k in keys], dtype=np.uint8)
    finite = np.isfinite(c)
    pos = np.clip(np.searchsorted(keys, c[finite]), 0, len(keys) - 1)
    hit = keys[pos] == c[finite]
    sub = np.full(hit.shape, LANDCOVER_NODATA, np.uint8)
    sub[hit] = vals[pos[hit]]
    out[finite] = sub
    return out


class CodeRaster(Protocol):
    """What :class:`MappedLandcover` needs from a raster (a ``TileSource``)."""

    path: str
    crs_wkt: str
    transform: Any
    shape: tuple[int, int]

    def read(self, row0: int, row1: int, col0: int, col1: int) -> npt.NDArray[np.float32]: ...


class MappedLandcover:
    """A user land-cover raster read in cached 1024-cell blocks, codes mapped to :class:`LandCover`."""

    BLOCK_PX = 1024

    def __init__(self, raster: CodeRaster, mapping: Mapping[int, LandCover | int], max_blocks: int = 64) -> None:
        bad = [v for v in mapping.values() if int(v) not in {int(c) for c in LandCover}]
        if bad:
            raise ConfigError(f"land-cover mapping for {raster.path} has values that are no LandCover id: {bad}")
        self.raster = raster
        self.mapping = dict(mapping)
        self.max_blocks = max_blocks
        self._blocks: OrderedDict[tuple[int, int], npt.NDArray[np.uint8]] = OrderedDict()

    def _block(self, i: int, j: int) -> npt.NDArray[np.uint8]:
        blk = self._blocks.get((i, j))
        if blk is None:
            h, w = self.raster.shape
            b = self.BLOCK_PX
            codes = self.raster.read(i * b, min(h, i * b + b), j * b, min(w, j * b + b))
            blk = map_codes(codes, self.mapping)
            self._blocks[(i, j)] = blk
            while len(self._blocks) > self.max_blocks:
                self._blocks.popitem(last=False)
        else:
            self._blocks.move_to_end((i, j))
        return blk

    def classes(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """(N,) uint8 classes of the nearest raster cell; ``LANDCOVER_NODATA`` outside/unmapped/nodata."""
        lon_a = np.asarray(lon, dtype=np.float64).reshape(-1)
        lat_a = np.asarray(lat, dtype=np.float64).reshape(-1)
        x, y = geodesy.transform_xy(lon_a, lat_a, "EPSG:4326", self.raster.crs_wkt)
        row_f, col_f = sampling.centre_indices(self.raster.transform, x, y)
        inside = sampling.inside_footprint(row_f, col_f, self.raster.shape) & np.isfinite(row_f) & np.isfinite(col_f)
        out = np.full(lon_a.shape, LANDCOVER_NODATA, np.uint8)
        idx = np.nonzero(inside)[0]
        r, c = sampling.nearest_index(row_f[idx], col_f[idx], self.raster.shape)
        b = self.BLOCK_PX
        bi, bj = r // b, c // b
        for i, j in set(zip(bi.tolist(), bj.tolist(), strict=True)):
            sel = (bi == i) & (bj == j)
            out[idx[sel]] = self._block(i, j)[r[sel] - i * b, c[sel] - j * b]
        return out
