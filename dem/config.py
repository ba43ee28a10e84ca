"""Settings of the position grids and the train/val/test splits (:class:`GridConfig`, :data:`GRID_PRESETS`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crosslocate.dem.poses import DB_FOV_DEG, DB_YAWS_DEG
from crosslocate.errors import ConfigError
from crosslocate.fileio import config_from_dict, config_to_dict

#: Split methods understood by :func:`crosslocate.dem.splits.assign_splits`.
SPLIT_METHODS: tuple[str, ...] = ("auto", "polygon", "blocks")


@dataclass(frozen=True, kw_only=True, slots=True)
class GridConfig:
    """Where database cameras go and how positions are split.

    Attributes
    ----------
    spacing_m : float
        Grid spacing in metres, measured in the region's equal-area (LAEA) frame. The paper: 500 m.
    camera_offset_m : float
        Height of grid cameras above the DEM surface, metres. 10 m rather than eye height because
        the 3'' (~90 m) DEM smooths away trees, buildings and micro-relief; a camera at 1.7 m above
        the smoothed surface often sits inside a bump that exists only in the interpolation and
        sees nothing. 10 m clears that while staying "just above the terrain" as in the paper.
    compact_radius_m : float
        Compact database: uniform positions within this distance of any query (paper: 1 km).
    query_height_m : float
        Height of query cameras above the DEM when the query gives no altitude (eye height), metres.
    yaws_deg : tuple of float
        Database yaws, degrees clockwise from north (default: the paper's 12, every 30 deg).
    fov_deg : float
        Database horizontal field of view, degrees.
    split_method : str
        ``"polygon"`` (test = the ``split_test_region`` polygon, val = blocks of the rest),
        ``"blocks"`` (square blocks assigned by ``split_fractions``), or ``"auto"``: polygon when
        the region contains ``split_test_region`` (and is not it), else blocks.
    split_buffer_m : float
        No train position lies within this distance of a val or test one, and no val position
        within it of a test one: those positions get split ``"none"`` (paper-style 1 km).
    split_block_m : float
        Side of the square split blocks, metres in the region's LAEA frame. 10 km keeps the share
        of positions lost to buffers low (~7 % of the Alps, ~11 % of Switzerland at 1 km buffer).
    split_fractions : (3,) tuple of float
        Target train/val/test fractions of the blocks (sum 1).
    split_seed : int
        Seed of the deterministic block shuffle.
    split_test_region : str
        Region name or path used as the test polygon by the polygon method.
    """

    spacing_m: float = 500.0
    camera_offset_m: float = 10.0
    compact_radius_m: float = 1000.0
    query_height_m: float = 1.7
    yaws_deg: tuple[float, ...] = DB_YAWS_DEG
    fov_deg: float = DB_FOV_DEG
    split_method: str = "auto"
    split_buffer_m: float = 1000.0
    split_block_m: float = 10_000.0
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    split_seed: int = 0
    split_test_region: str = "switzerland"

    def __post_init__(self) -> None:
        try:  # lists (e.g. from JSON) become tuples so the config stays hashable
            object.__setattr__(self, "yaws_deg", tuple(float(y) for y in self.yaws_deg))
            object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"GridConfig.yaws_deg / split_fractions must be sequences of numbers ({exc})") from exc
        positive = ("spacing_m", "compact_radius_m", "fov_deg", "split_block_m")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(f"GridConfig.{name} must be a positive finite number, got {value!r}")
        for name in ("camera_offset_m", "query_height_m", "split_buffer_m"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"GridConfig.{name} must be a finite number >= 0, got {value!r}")
        if not 0.0 < self.fov_deg < 180.0:
            raise ConfigError(f"GridConfig.fov_deg must be in (0, 180), got {self.fov_deg}")
        if not self.yaws_deg or not all(math.isfinite(y) for y in self.yaws_deg):
            raise ConfigError(f"GridConfig.yaws_deg must be a non-empty tuple of finite degrees, got {self.yaws_deg!r}")
        if self.split_method not in SPLIT_METHODS:
            raise ConfigError(f"GridConfig.split_method must be one of {SPLIT_METHODS}, got {self.split_method!r}")
        fr = self.split_fractions
        if len(fr) != 3 or any(not math.isfinite(f) or f < 0 for f in fr) or not math.isclose(sum(fr), 1.0):
            raise ConfigError(f"GridConfig.split_fractions must be 3 non-negative numbers summing to 1, got {fr!r}")

    @property
    def views_per_position(self) -> int:
        """Number of database views rendered at each position (one per yaw)."""
        return len(self.yaws_deg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridConfig:
        """Inverse of :meth:`to_dict` (numbers become floats); unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


#: Named grid settings. ``paper``: 500 m as in CrossLocate. ``cpu``: 1 km (4x fewer positions) for a
#: laptop-sized run. ``tiny``: 2 km with 7.5 km split blocks, so the 40 km demo square (~30 blocks,
#: 400 positions) gets all three splits (about 200 train / 65 val / 75 test / 60 buffer).
GRID_PRESETS: dict[str, GridConfig] = {
    "paper": GridConfig(),
    "cpu": GridConfig(spacing_m=1000.0),
    "tiny": GridConfig(spacing_m=2000.0, split_block_m=7500.0),
}


def get_grid_preset(name: str) -> GridConfig:
    """The :data:`GRID_PRESETS` entry ``name``; raises :class:`ConfigError` naming the known presets."""
    try:
        return GRID_PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown grid preset {name!r}; known: {', '.join(GRID_PRESETS)}") from None
