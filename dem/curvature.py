"""Earth curvature and atmospheric refraction for line-of-sight rendering (pure functions).

A point at horizontal distance ``d`` on a sphere of radius ``R`` lies ``d² / (2R)`` below the tangent
plane. Refraction bends rays down, which looks like a larger Earth: with refraction coefficient ``k``
(ratio of the ray's curvature to the Earth's; 0.13 is the standard value for daytime visible light)
the apparent drop is ``d² / (2R) · (1 − k)`` and the effective radius is ``R / (1 − k)``.

``radius_m`` should be the local radius of the WGS84 ellipsoid, e.g.
:func:`crosslocate.dem.geodesy.local_radius_m` (never a hard-coded 6371 km).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError

#: Standard refraction coefficient for visible light (Gauss' value, used in surveying).
DEFAULT_REFRACTION_K: float = 0.13


def _check(radius_m: Any, k: float) -> None:
    if not 0.0 <= k < 1.0:
        raise ConfigError(f"refraction coefficient k must be in [0, 1), got {k}")
    if np.any(np.asarray(radius_m, dtype=np.float64) <= 0.0):
        raise ConfigError(f"radius_m must be positive, got {radius_m}")


def effective_radius_m(radius_m: Any, k: float = DEFAULT_REFRACTION_K) -> npt.NDArray[np.float64]:
    """Effective Earth radius ``R / (1 − k)`` in metres (float64, shape of ``radius_m``)."""
    _check(radius_m, k)
    return np.asarray(np.asarray(radius_m, dtype=np.float64) / (1.0 - k), np.float64)


def curvature_drop_m(distance_m: Any, radius_m: Any, k: float = DEFAULT_REFRACTION_K) -> npt.NDArray[np.float64]:
    """Apparent drop below the tangent plane, ``d² / (2R) · (1 − k)`` metres (float64, broadcast shape).

    Parameters
    ----------
    distance_m : array-like
        Horizontal distance from the observer, metres (sign ignored).
    radius_m : array-like
        Local Earth radius in metres (e.g. ``geodesy.local_radius_m(lat)``).
    k : float
        Refraction coefficient in [0, 1); 0 gives the geometric drop.
    """
    _check(radius_m, k)
    d = np.asarray(distance_m, dtype=np.float64)
    r = np.asarray(radius_m, dtype=np.float64)
    return np.asarray(d * d / (2.0 * r) * (1.0 - k), np.float64)
