"""Camera poses: the shared vocabulary between positions, rendering, storage and the model.

Conventions (used everywhere in crosslocate):

* ``lon``/``lat`` are degrees in EPSG:4326 (WGS84), lon first.
* ``alt_m`` is metres above the DEM's vertical datum (SRTM: EGM96 geoid), *not* above ground.
* ``yaw_deg`` is the azimuth of the optical axis, degrees **clockwise from geographic north**
  (0 = north, 90 = east), in the camera's own local ENU frame.
* ``pitch_deg`` is the elevation of the optical axis above the local horizontal (positive = up).
* ``roll_deg`` rotates the camera about its optical axis; positive = clockwise as seen from behind
  the camera (the image content then appears rotated counter-clockwise).
* ``fov_deg`` is the **horizontal** field of view; pixels are square.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crosslocate.errors import ConfigError, OutsideCoverageError, RenderError
from crosslocate.fileio import config_to_dict

#: The 12 database yaws of the paper, degrees clockwise from north.
DB_YAWS_DEG: tuple[float, ...] = tuple(float(30 * i) for i in range(12))
#: Default database field of view (horizontal), degrees.
DB_FOV_DEG: float = 60.0
#: Default image size (square), pixels.
DB_SIZE_PX: int = 500
#: Least height of a camera above the DEM surface, metres: a lower camera sits inside the rendered
#: terrain (every depth ~0, no sky) because the render mesh and the bilinear DEM differ slightly.
MIN_CAMERA_CLEARANCE_M: float = 0.5


@dataclass(frozen=True, kw_only=True, slots=True)
class Pose:
    """One camera: position (EPSG:4326 + altitude) and orientation (degrees).

    Attributes
    ----------
    lon, lat : float
        Degrees, EPSG:4326.
    alt_m : float
        Camera altitude in metres above the DEM vertical datum.
    yaw_deg, pitch_deg, roll_deg : float
        Orientation, see the module docstring for the conventions.
    fov_deg : float
        Horizontal field of view in degrees, in (0, 180).
    """

    lon: float
    lat: float
    alt_m: float
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    fov_deg: float = DB_FOV_DEG

    def __post_init__(self) -> None:
        for name in ("lon", "lat", "alt_m", "yaw_deg", "pitch_deg", "roll_deg", "fov_deg"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise ConfigError(f"Pose.{name} must be finite, got {value!r}")
        if not -180.0 <= self.lon <= 180.0 or not -90.0 <= self.lat <= 90.0:
            raise ConfigError(f"Pose lon/lat out of range: lon={self.lon}, lat={self.lat}")
        if not 0.0 < self.fov_deg < 180.0:
            raise ConfigError(f"Pose.fov_deg must be in (0, 180), got {self.fov_deg}")
        if not -90.0 <= self.pitch_deg <= 90.0:
            raise ConfigError(f"Pose.pitch_deg must be in [-90, 90], got {self.pitch_deg}")

    @property
    def spot(self) -> tuple[float, float, float]:
        """``(lon, lat, alt_m)``: where the camera stands. Photos taken from one spot share it (and
        one sparse-database position); orientation and FOV are left out."""
        return (float(self.lon), float(self.lat), float(self.alt_m))

    def to_dict(self) -> dict[str, float]:
        """JSON-friendly dict of the fields."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Pose:
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: float(data[k]) for k in cls.__dataclass_fields__ if k in data})


def wrap_yaw_deg(yaw_deg: float) -> float:
    """Wrap an azimuth into [0, 360)."""
    return float(yaw_deg % 360.0)


def yaw_difference_deg(a_deg: Any, b_deg: Any) -> Any:
    """Smallest absolute angular difference between azimuths, degrees in [0, 180] (numpy-friendly)."""
    d = (a_deg - b_deg) % 360.0
    return abs(((d + 180.0) % 360.0) - 180.0)


def check_camera_clearance(
    lon: float,
    lat: float,
    alt_m: float,
    ground_m: float,
    clearance_m: float = MIN_CAMERA_CLEARANCE_M,
    *,
    fix: str = "omit --alt to stand 1.7 m above the ground",
) -> None:
    """Raise :class:`~crosslocate.errors.RenderError` naming the terrain height when the camera at
    ``alt_m`` (metres, DEM datum) is less than ``clearance_m`` above the ground ``ground_m`` at
    (``lon``, ``lat``) degrees EPSG:4326; ``fix`` is the alternative the message offers.

    A NaN ``ground_m`` (no terrain known there: outside the DEM) raises
    :class:`~crosslocate.errors.OutsideCoverageError` instead.
    """
    if not math.isfinite(ground_m):
        raise OutsideCoverageError(
            f"camera at lon {lon:.5f}, lat {lat:.5f} is outside the DEM coverage (no terrain height there); "
            "choose a position inside the DEM or add the tiles that cover it"
        )
    if not alt_m >= ground_m + clearance_m:
        where = "below" if alt_m < ground_m else "inside"
        raise RenderError(
            f"camera at lon {lon:.5f}, lat {lat:.5f}, altitude {alt_m:.1f} m is {where} the terrain, which is at "
            f"{ground_m:.1f} m there; give an altitude of at least {ground_m + clearance_m:.1f} m (or {fix})"
        )
