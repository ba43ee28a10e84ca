"""Modalities derived from stored views (pure numpy, no I/O): silhouettes, horizon, relative depth, RGB.

All functions accept a single view ``(H, W)`` or a stack ``(..., H, W)`` (row 0 at the top) and treat
the last two axes as the image. Depth is float32 z-depth in metres with sky = ``SKY_DEPTH_M`` (any
value <= 0 counts as sky).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import SKY_DEPTH_M, semantic_palette
from crosslocate.errors import ConfigError

#: Colour of sky pixels in depth previews (RGB uint8).
SKY_RGB: tuple[int, int, int] = (255, 255, 255)
#: Anchors of the depth colour ramp (near -> far), RGB uint8, interpolated linearly (viridis-like).
_RAMP = np.array(
    [[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]],
    dtype=np.float64,
)


def _check_depth(depth: npt.ArrayLike) -> npt.NDArray[np.float32]:
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim < 2:
        raise ConfigError(f"depth must be (..., H, W), got shape {d.shape}")
    return d


def is_sky(depth: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """(..., H, W) bool: sky pixels (depth <= 0, e.g. ``SKY_DEPTH_M``, or non-finite)."""
    d = _check_depth(depth)
    return ~(np.isfinite(d) & (d > 0.0))


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
    d = _check_depth(depth)
    # sky -> +inf: a terrain pixel next to sky always passes the test, two sky pixels never do
    far = np.where(is_sky(d), np.float32(np.inf), d)
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


def relative_depth(depth: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Per-view normalised inverse depth in [0, 1]: ``d_min / d`` on terrain, 0 on sky.

    ``d_min`` is the nearest terrain depth of each view (last two axes), so the nearest pixel is 1 and
    values fall towards 0 with distance; the result is invariant to scaling the depth. Views without
    terrain are all 0.

    Returns
    -------
    (..., H, W) float32.
    """
    d = _check_depth(depth)
    sky = is_sky(d)
    pos = np.where(sky, np.inf, d)
    dmin = pos.min(axis=(-2, -1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(sky | ~np.isfinite(dmin), 0.0, dmin / pos)
    return np.clip(rel, 0.0, 1.0).astype(np.float32)


def depth_to_rgb(depth: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Colourised depth preview: a yellow (near) to purple (far) ramp over :func:`relative_depth` in
    a log scale, sky = :data:`SKY_RGB`.

    Returns
    -------
    (..., H, W, 3) uint8 RGB.
    """
    d = _check_depth(depth)
    rel = relative_depth(d).astype(np.float64)
    sky = rel <= 0.0
    # log scale: ln(d / d_min) mapped so the farthest pixel of a 1000x depth range is the ramp's end
    pos = np.clip(-np.log(np.where(sky, 1.0, rel)) / np.log(1000.0), 0.0, 1.0) * (len(_RAMP) - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(_RAMP) - 2)
    frac = (pos - i0)[..., None]
    rgb = _RAMP[i0] * (1.0 - frac) + _RAMP[i0 + 1] * frac
    rgb[sky] = SKY_RGB
    return np.rint(rgb).astype(np.uint8)


def semantic_to_rgb(semantic: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Colourised semantic view via :func:`crosslocate.datasets.schema.semantic_palette`.

    Parameters
    ----------
    semantic : (..., H, W) uint8 LandCover ids.

    Returns
    -------
    (..., H, W, 3) uint8 RGB (unknown ids black).
    """
    s = np.asarray(semantic)
    if s.ndim < 2:
        raise ConfigError(f"semantic must be (..., H, W), got shape {s.shape}")
    return semantic_palette()[s.astype(np.uint8)]


def view_to_rgb(modality: str, view: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(H, W, 3) uint8 preview of one stored view: :func:`depth_to_rgb`, :func:`semantic_to_rgb`, or a
    silhouette as white edges on black."""
    if modality == "depth":
        return depth_to_rgb(view)
    if modality == "semantic":
        return semantic_to_rgb(view)
    return np.repeat((np.asarray(view) > 0).astype(np.uint8)[..., None] * 255, 3, axis=-1)


__all__ = [
    "SKY_DEPTH_M",
    "depth_to_rgb",
    "horizon_line",
    "is_sky",
    "relative_depth",
    "semantic_to_rgb",
    "silhouette_from_depth",
    "view_to_rgb",
]
