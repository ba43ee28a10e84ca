"""Modalities derived from stored views (pure numpy, no I/O): silhouettes, horizon; previews.

The sky test, relative depth and the RGB previews are rules of the modality registry
(:mod:`crosslocate.datasets.schema`) and are re-exported here; :func:`view_to_rgb` is the one
preview of a stored view.

All functions accept a single view ``(H, W)`` or a stack ``(..., H, W)`` (row 0 at the top) and treat
the last two axes as the image. Depth is float32 z-depth in metres with sky = ``SKY_DEPTH_M`` (any
value <= 0 counts as sky).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import (
    SKY_DEPTH_M,
    SKY_RGB,
    Modality,
    depth_to_rgb,
    is_sky,
    relative_depth,
    semantic_to_rgb,
    view_preview,
)
from crosslocate.errors import ConfigError


def silhouette_from_depth(depth: npt.ArrayLike, rel_jump: float) -> npt.NDArray[np.uint8]:
    """Silhouette lines from depth discontinuities, including the horizon.

    Every pair of 4-neighbours is compared. Two terrain pixels with depths ``a < b`` form an edge when
    ``(b - a) > rel_jump * a`` (the jump relative to the nearer side); a terrain pixel next to a sky
    pixel always forms an edge (the horizon / skyline). The *nearer* pixel of each edge (the terrain
    pixel for sky edges) is marked, which gives lines 1 px wide (2 px where edges from both
    directions meet), lying on the occluding surface.

    Parameters
    ----------
    depth : (..., H, W) float
        z-depth metres, sky <= 0 (``SKY_DEPTH_M``).
    rel_jump : float
        Relative threshold (> 0), e.g. ``RenderConfig.silhouette_rel_jump``.

    Returns
    -------
    (..., H, W) uint8 in {0, 1}.
    """
    if not rel_jump > 0.0:
        raise ConfigError(f"rel_jump must be > 0, got {rel_jump}")
    d = np.asarray(depth, dtype=np.float32)
    # sky -> +inf: a terrain pixel next to sky always passes the test, two sky pixels never do
    far = np.where(is_sky(d), np.float32(np.inf), d)  # is_sky also refuses fewer than 2 dimensions
    scaled = far * np.float32(1.0 + rel_jump)
    out = np.zeros(d.shape, dtype=bool)
    # b > (1 + rel) a  <=>  (b - a) > rel * a with a the nearer side; mark the nearer pixel
    with np.errstate(invalid="ignore", over="ignore"):
        out[..., :-1] |= far[..., 1:] > scaled[..., :-1]
        out[..., 1:] |= far[..., :-1] > scaled[..., 1:]
        out[..., :-1, :] |= far[..., 1:, :] > scaled[..., :-1, :]
        out[..., 1:, :] |= far[..., :-1, :] > scaled[..., 1:, :]
    return out.astype(np.uint8)


def horizon_line(depth: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Per-column row of the sky/terrain boundary.

    For each column the value is ``1 + r_sky``, where ``r_sky`` is the lowest sky row: the boundary's
    position in continuous pixel coordinates (row ``r`` spans ``[r, r + 1)``; row 0 at the top). A
    column that is all sky gets ``H``; a column without sky gets NaN.

    Parameters
    ----------
    depth : (..., H, W) float
        z-depth metres, sky <= 0.

    Returns
    -------
    (..., W) float32.
    """
    sky = is_sky(depth)
    h = sky.shape[-2]
    rows = np.arange(h, dtype=np.float32).reshape((h, 1))
    lowest = np.where(sky, rows, -1.0).max(axis=-2)
    return np.where(lowest >= 0.0, lowest + 1.0, np.nan).astype(np.float32)


def view_to_rgb(modality: Modality | str, view: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 preview of one stored view: the modality's registry colours
    (:attr:`~crosslocate.datasets.schema.ModalitySpec.preview`; silhouettes light edges on dark)."""
    return view_preview(modality, view)


__all__ = [
    "SKY_DEPTH_M",
    "SKY_RGB",
    "depth_to_rgb",
    "horizon_line",
    "is_sky",
    "relative_depth",
    "semantic_to_rgb",
    "silhouette_from_depth",
    "view_to_rgb",
]
