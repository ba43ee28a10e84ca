"""Synthetic terrain: the seeded alpine "demo" region and analytic test terrains.

Demo region
-----------
:func:`generate_alpine` builds a deterministic Alps-like DEM from :class:`AlpineParams`: ridged
multi-octave noise (wavelengths in metres, so a coarser ``spacing_m`` gives the same landscape at
lower resolution), carved by a main valley and tributaries (U-shaped profiles, floors descending
from ~1000 m to ~500 m), smoothed on valley floors (alluvium) and by thermal erosion (talus 38°),
with a few lakes (flat water surfaces in closed basins). The default is 40 x 40 km at 30 m
(1333 x 1333 cells) in UTM 32N (EPSG:32632), upper-left corner at E 400 000 / N 5 170 000, i.e.
roughly lon 7.70-8.22 E, lat 46.30-46.68 N (Bernese Alps / Valais, Switzerland). It is flagged
synthetic (GeoTIFF tags ``synthetic=true``, ``generator``, ``generator_version``, ``seed``,
``params``) and cached by :func:`demo_geotiff` under ``$CROSSLOCATE_CACHE`` or
``~/.cache/crosslocate`` (written atomically).

Analytic terrains
-----------------
:func:`analytic_dem` returns in-memory DEMs (plane, cone, ridge, wall) whose heights are given by
closed-form functions of the offset from the raster centre (see :func:`analytic_height`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from affine import Affine
from scipy import ndimage

from crosslocate.dem import geodesy
from crosslocate.dem.mosaic import DEM, ArraySource
from crosslocate.errors import ConfigError, DEMReadError
from crosslocate.fileio import config_to_dict

logger = logging.getLogger(__name__)

GENERATOR = "crosslocate.dem.sources.synthetic.generate_alpine"
GENERATOR_VERSION = 3
#: Environment variable naming the cache directory (default ``~/.cache/crosslocate``).
CACHE_ENV = "CROSSLOCATE_CACHE"


@dataclass(frozen=True, kw_only=True, slots=True)
class AlpineParams:
    """Parameters of the synthetic alpine region (metres unless named otherwise)."""

    seed: int = 20220104
    extent_m: float = 40_000.0  # square side
    spacing_m: float = 30.0
    crs: str = "EPSG:32632"
    west_m: float = 400_000.0  # x of the west edge (cell edge)
    north_m: float = 5_170_000.0  # y of the north edge (cell edge)
    valley_floor_m: float = 500.0  # lowest valley floor (east end of the main valley)
    valley_top_m: float = 1000.0  # highest valley floor (head of the valleys)
    peak_m: float = 4100.0  # highest summit before erosion
    valley_width_m: float = 2_500.0  # half-width of the U-shaped valleys
    n_tributaries: int = 4
    n_lakes: int = 3
    erosion_iterations: int = 30
    talus_deg: float = 38.0

    def __post_init__(self) -> None:
        if not (self.extent_m > 0 and self.spacing_m > 0 and self.extent_m / self.spacing_m >= 16):
            raise ConfigError(
                f"AlpineParams: extent_m/spacing_m must give >= 16 cells, got {self.extent_m}/{self.spacing_m}"
            )
        if not self.valley_floor_m < self.valley_top_m < self.peak_m:
            raise ConfigError("AlpineParams: need valley_floor_m < valley_top_m < peak_m")
        if self.n_lakes < 0 or self.n_tributaries < 0 or self.erosion_iterations < 0:
            raise ConfigError("AlpineParams: counts must be >= 0")
        if not 0.0 < self.talus_deg < 90.0:
            raise ConfigError(f"AlpineParams.talus_deg must be in (0, 90), got {self.talus_deg}")

    @property
    def size_px(self) -> int:
        return round(self.extent_m / self.spacing_m)

    @property
    def transform(self) -> Affine:
        return Affine(self.spacing_m, 0.0, self.west_m, 0.0, -self.spacing_m, self.north_m)

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AlpineParams:
        return cls(**data)

    def digest(self) -> str:
        """sha256 of the generator identity and these parameters (the demo DEM's checksum input)."""
        blob = json.dumps({"generator": GENERATOR, "version": GENERATOR_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _noise(
    p: AlpineParams, wavelength_m: float, key: int, xm: npt.NDArray[np.float64], ym: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Smooth gradient-free value noise, ~unit std, sampled at metre coordinates (cubic spline)."""
    g = math.ceil(p.extent_m / wavelength_m) + 4
    grid = _rng(p.seed, key).standard_normal((g, g))
    coords = np.stack(np.broadcast_arrays(ym / wavelength_m + 1.5, xm / wavelength_m + 1.5))
    return np.asarray(ndimage.map_coordinates(grid, coords, order=3, mode="nearest"), np.float64) / 0.55


def _fractal(p: AlpineParams, xm: npt.NDArray[np.float64], ym: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Mountain shape in [0, 1]: 35 % fBm (rounded massifs), 65 % ridged multifractal (sharp crests).

    Octaves halve the wavelength from 16 km down to 2.5 cells; every octave has its own seeded grid, so
    a coarser spacing only drops the finest octaves.
    """
    shape = np.broadcast_shapes(xm.shape, ym.shape)
    fbm, ridged = np.zeros(shape), np.zeros(shape)
    weight = np.ones(shape)
    amp, norm = 1.0, 0.0
    wavelength = 16_000.0
    for octave in range(10):
        if wavelength < 2.5 * p.spacing_m:
            break
        n = _noise(p, wavelength, 100 + octave, xm, ym)
        fbm += amp * n
        r = (1.0 - np.abs(np.tanh(0.7 * n))) ** 2
        ridged += r * weight * amp
        weight = np.clip(r * 1.8, 0.0, 1.0)
        norm += amp
        amp *= 0.5
        wavelength *= 0.5

    def unit(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        lo, hi = np.percentile(a, [0.5, 99.9])
        return np.clip((a - lo) / max(hi - lo, 1e-9), 0.0, 1.0)

    return unit(0.35 * unit(fbm) + 0.65 * unit(ridged))


def _valley_lines(p: AlpineParams) -> list[npt.NDArray[np.float64]]:
    """Polylines (K, 2) of valley axes in metres (x east of the west edge, y south of the north edge)."""
    rng = _rng(p.seed, 1)
    e = p.extent_m
    t = np.linspace(0.0, 1.0, 400)
    phase = rng.uniform(0, 2 * np.pi, 3)
    main_y = e * (0.5 + 0.12 * np.sin(2 * np.pi * 0.8 * t + phase[0]) + 0.05 * np.sin(2 * np.pi * 2.1 * t + phase[1]))
    lines = [np.column_stack([t * e, main_y])]
    for k in range(p.n_tributaries):
        tx = e * (0.15 + 0.7 * (k + rng.uniform(0.2, 0.8)) / max(p.n_tributaries, 1))
        iy = int(np.argmin(np.abs(t * e - tx)))
        y_join = main_y[iy]
        y_end = 0.0 if k % 2 == 0 else e
        s = np.linspace(0.0, 1.0, 200)
        wiggle = 0.05 * e * np.sin(2 * np.pi * s * rng.uniform(0.6, 1.4) + rng.uniform(0, 2 * np.pi)) * s
        lines.append(np.column_stack([tx + wiggle, y_join + (y_end - y_join) * s]))
    return lines


def _valley_distance(
    p: AlpineParams, lines: list[npt.NDArray[np.float64]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Distance (m) of every cell centre to the nearest valley axis, and a smooth valley-floor height.

    The floor descends west -> east along the main valley (``valley_top_m`` -> ``valley_floor_m``) and
    rises by 4 % with the distance from the main valley (tributaries climb towards their heads),
    capped 500 m above ``valley_top_m``.
    """
    n = p.size_px

    def axis_distance(group: list[npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
        axis = np.zeros((n, n), bool)
        for line in group:
            dense = np.linspace(0, 1, 8 * n)
            src = np.linspace(0, 1, len(line))
            c = np.clip((np.interp(dense, src, line[:, 0]) / p.spacing_m).astype(int), 0, n - 1)
            r = np.clip((np.interp(dense, src, line[:, 1]) / p.spacing_m).astype(int), 0, n - 1)
            axis[r, c] = True
        return np.asarray(ndimage.distance_transform_edt(~axis), np.float64) * p.spacing_m

    x_frac = ((np.arange(n) + 0.5) / n)[None, :]
    main_floor = p.valley_top_m - (p.valley_top_m - p.valley_floor_m) * x_frac
    floor = main_floor + np.minimum(0.04 * axis_distance(lines[:1]), p.valley_top_m + 500.0 - main_floor)
    return axis_distance(lines), floor


def _thermal_erosion(z: npt.NDArray[np.float64], p: AlpineParams) -> None:
    """In-place thermal erosion: slopes steeper than the talus angle shed material downhill."""
    talus = math.tan(math.radians(p.talus_deg)) * p.spacing_m
    for _ in range(p.erosion_iterations):
        for axis in (0, 1):
            a = z[:-1, :] if axis == 0 else z[:, :-1]
            b = z[1:, :] if axis == 0 else z[:, 1:]
            d = a - b
            move = 0.25 * np.sign(d) * np.maximum(np.abs(d) - talus, 0.0)
            a -= move
            b += move


def _carve_lakes(z: npt.NDArray[np.float64], p: AlpineParams, lines: list[npt.NDArray[np.float64]]) -> int:
    """Dig ``n_lakes`` bowls on valley axes and flood each to a flat level below its rim; returns count."""
    rng = _rng(p.seed, 2)
    n = p.size_px
    yy, xx = np.mgrid[0:n, 0:n]
    made = 0
    for k in range(p.n_lakes):
        line = lines[k % len(lines)]
        cx, cy = line[int(len(line) * rng.uniform(0.25, 0.75))]
        radius = rng.uniform(600.0, 1000.0)
        r_m = np.hypot((xx + 0.5) * p.spacing_m - cx, (yy + 0.5) * p.spacing_m - cy)
        disc = r_m < radius
        if disc.sum() < 9:
            continue
        z[disc] -= 60.0 * (1.0 - (r_m[disc] / radius) ** 2)
        ring = (r_m >= 0.85 * radius) & disc
        level = float(z[ring].min()) - 2.0
        lab, n_lab = ndimage.label(disc & (r_m < 0.85 * radius) & (z < level))
        if n_lab == 0:
            continue
        largest = 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))
        z[lab == largest] = level
        made += 1
    return made


def generate_alpine(params: AlpineParams | None = None) -> tuple[npt.NDArray[np.float32], Affine, dict[str, str]]:
    """Generate the synthetic alpine region.

    Returns
    -------
    z : (N, N) float32 metres, row 0 north, no voids; N = ``params.size_px``.
    transform : corner-based Affine in ``params.crs``.
    tags : GeoTIFF tags (``synthetic``, ``generator``, ``generator_version``, ``seed``, ``params``,
        ``lakes``).
    """
    p = params or AlpineParams()
    n = p.size_px
    centres = (np.arange(n) + 0.5) * p.spacing_m
    xm, ym = centres[None, :], centres[:, None]
    shape = _fractal(p, xm, ym)
    lines = _valley_lines(p)
    dist, floor = _valley_distance(p, lines)
    u = np.clip(dist / p.valley_width_m, 0.0, 1.0)
    u = u * u * (3.0 - 2.0 * u)  # smoothstep: flat floor, steepening walls (U-shaped profile)
    z = floor + (p.peak_m - floor) * shape**1.5 * (0.1 + 0.9 * u)
    low = np.clip((floor + 400.0 - z) / 400.0, 0.0, 1.0)
    z = z * (1.0 - low) + ndimage.gaussian_filter(z, 150.0 / p.spacing_m) * low
    _thermal_erosion(z, p)
    lakes = _carve_lakes(z, p, lines)
    tags = {
        "synthetic": "true",
        "generator": GENERATOR,
        "generator_version": str(GENERATOR_VERSION),
        "seed": str(p.seed),
        "params": json.dumps(p.to_dict(), sort_keys=True),
        "lakes": str(lakes),
    }
    return z.astype(np.float32), p.transform, tags


def cache_dir() -> Path:
    """``$CROSSLOCATE_CACHE`` or ``~/.cache/crosslocate`` (created on demand)."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crosslocate"


def demo_geotiff(params: AlpineParams | None = None, path: Path | None = None, *, overwrite: bool = False) -> Path:
    """Path of the cached demo GeoTIFF, generating it on first use (atomic write).

    ``path`` defaults to ``cache_dir()/demo-alpine-v{version}-{digest[:12]}.tif``; an existing file is
    reused unless ``overwrite``.
    """
    from crosslocate.dem.sources.geotiff import write_geotiff

    p = params or AlpineParams()
    target = Path(path) if path is not None else cache_dir() / f"demo-alpine-v{GENERATOR_VERSION}-{p.digest()[:12]}.tif"
    if target.exists() and not overwrite:
        return target
    logger.info("generating synthetic alpine region (%d x %d cells) -> %s", p.size_px, p.size_px, target)
    z, transform, tags = generate_alpine(p)
    try:
        return write_geotiff(target, z, transform, p.crs, tags=tags)
    except OSError as exc:
        raise DEMReadError(
            f"{target}: cannot write the demo DEM ({exc}); set ${CACHE_ENV} to a writable directory"
        ) from exc


def demo_dem(params: AlpineParams | None = None) -> DEM:
    """The embedded synthetic alpine region as a :class:`DEM` (generated and cached on first use)."""
    from crosslocate.dem.sources.geotiff import RasterTile

    return DEM([RasterTile(demo_geotiff(params))])


# ---------------------------------------------------------------------------------------------------
# Analytic terrains

ANALYTIC_KINDS = ("plane", "cone", "ridge", "wall")


def analytic_height(
    kind: str, east_m: npt.ArrayLike, north_m: npt.ArrayLike, **params: float
) -> npt.NDArray[np.float64]:
    """Closed-form height (metres, float64, broadcast shape) at offsets from the terrain centre.

    ``east_m``/``north_m`` are metres east/north of the raster centre (in the projected CRS).

    * ``plane``: ``height_m`` (1000) + ``slope_east`` (0, m/m) * e + ``slope_north`` (0) * n.
    * ``cone``: ``base_m`` (0) + (``apex_m`` (2000) - base) * max(0, 1 - r / ``radius_m`` (1000)),
      r = hypot(e, n).
    * ``ridge``: ``base_m`` (0) + (``height_m`` (1000) - base) * max(0, 1 - |d| / ``half_width_m``
      (500)), d = distance from the ridge axis through the centre along ``azimuth_deg`` (0 = N-S axis,
      clockwise from north).
    * ``wall``: ``height_m`` (1000) where s >= ``distance_m`` (500) else ``base_m`` (0), with
      s = e sin(az) + n cos(az) the distance along ``azimuth_deg`` (0 = wall to the north).
    """
    e = np.asarray(east_m, dtype=np.float64)
    n = np.asarray(north_m, dtype=np.float64)
    if kind == "plane":
        return params.get("height_m", 1000.0) + params.get("slope_east", 0.0) * e + params.get("slope_north", 0.0) * n
    base = params.get("base_m", 0.0)
    if kind == "cone":
        r = np.hypot(e, n)
        return base + (params.get("apex_m", 2000.0) - base) * np.maximum(0.0, 1.0 - r / params.get("radius_m", 1000.0))
    az = math.radians(params.get("azimuth_deg", 0.0))
    if kind == "ridge":
        d = e * math.cos(az) - n * math.sin(az)
        half = params.get("half_width_m", 500.0)
        return base + (params.get("height_m", 1000.0) - base) * np.maximum(0.0, 1.0 - np.abs(d) / half)
    if kind == "wall":
        s = e * math.sin(az) + n * math.cos(az)
        return np.where(s >= params.get("distance_m", 500.0), params.get("height_m", 1000.0), base)
    raise ConfigError(f"unknown analytic terrain {kind!r}; choose one of {ANALYTIC_KINDS}")


def analytic_dem(
    kind: str,
    size_px: int = 64,
    spacing_m: float = 30.0,
    crs: str = "EPSG:32632",
    origin: tuple[float, float] = (400_000.0, 5_170_000.0),
    *,
    center_lonlat: tuple[float, float] | None = None,
    **params: float,
) -> DEM:
    """An in-memory DEM of an analytic terrain (see :func:`analytic_height` for kinds and params).

    Parameters
    ----------
    kind : "plane" | "cone" | "ridge" | "wall"
    size_px : cells per side (square raster, >= 2).
    spacing_m : cell size in CRS units (metres for projected CRSs).
    crs : projected CRS of the raster.
    origin : ``(x_west, y_north)`` of the upper-left cell *edge*, in ``crs``.
    center_lonlat : if given, overrides ``origin`` so the raster centre is at this lon/lat.

    The terrain centre is the raster centre, ``(x_west + size_px*spacing/2, y_north - size_px*spacing/2)``;
    cell ``[r, c]`` has its centre at offsets ``e = (c + 0.5 - size_px/2) * spacing_m``,
    ``n = (size_px/2 - r - 0.5) * spacing_m``.
    """
    if kind not in ANALYTIC_KINDS:
        raise ConfigError(f"unknown analytic terrain {kind!r}; choose one of {ANALYTIC_KINDS}")
    if size_px < 2 or not spacing_m > 0:
        raise ConfigError(f"analytic_dem needs size_px >= 2 and spacing_m > 0, got {size_px}, {spacing_m}")
    half = size_px * spacing_m / 2.0
    if center_lonlat is not None:
        cx, cy = geodesy.transform_xy(center_lonlat[0], center_lonlat[1], "EPSG:4326", crs)
        origin = (float(cx) - half, float(cy) + half)
    offs = (np.arange(size_px) + 0.5) * spacing_m - half
    z = analytic_height(kind, offs[None, :], -offs[:, None], **params)
    transform = Affine(spacing_m, 0.0, origin[0], 0.0, -spacing_m, origin[1])
    tags = {"synthetic": "true", "generator": f"analytic:{kind}", "params": json.dumps(params, sort_keys=True)}
    return DEM([ArraySource(z, transform, crs, name=f"<analytic:{kind}>", synthetic=True, tags=tags)])
