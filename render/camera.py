"""Pinhole camera model as pure functions.

Frames
------
* **ENU** (local east-north-up at the camera): x east, y north, z up, metres.
* **Camera** (computer-vision convention): x right, y down, z forward (optical axis), metres.
* **Image**: pixel (row v, column u), row 0 at the top, pixel centres at +0.5.

Orientation follows :mod:`crosslocate.dem.poses`: yaw clockwise from north, pitch up positive,
roll clockwise (seen from behind) positive. The field of view is horizontal; pixels are square, so
``fx == fy`` and the vertical FOV of a non-square image follows from the aspect ratio.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from crosslocate.errors import RenderError


def validate_camera(fov_deg: float, width_px: int, height_px: int) -> None:
    """Raise :class:`RenderError` for FOV outside (0, 180) or a non-positive size."""
    if not (isinstance(width_px, (int, np.integer)) and isinstance(height_px, (int, np.integer))):
        raise RenderError(f"image size must be integers, got {width_px!r}x{height_px!r}")
    if width_px <= 0 or height_px <= 0:
        raise RenderError(f"image size must be positive, got {width_px}x{height_px} px")
    if not (math.isfinite(fov_deg) and 0.0 < fov_deg < 180.0):
        raise RenderError(f"fov_deg must be in (0, 180) degrees, got {fov_deg}")


def focal_px(fov_deg: float, width_px: int) -> float:
    """Focal length in pixels for a horizontal FOV: ``(W/2) / tan(fov/2)``."""
    return 0.5 * width_px / math.tan(math.radians(fov_deg) / 2.0)


def intrinsics(fov_deg: float, width_px: int, height_px: int) -> npt.NDArray[np.float64]:
    """(3, 3) float64 intrinsic matrix K (pixels); principal point at the image centre.

    A camera-frame point (x, y, z) projects to column ``u = fx x/z + cx`` and row ``v = fy y/z + cy``
    in continuous pixel coordinates where pixel (0, 0) spans [0, 1) x [0, 1).
    """
    validate_camera(fov_deg, width_px, height_px)
    f = focal_px(fov_deg, width_px)
    return np.array([[f, 0.0, width_px / 2.0], [0.0, f, height_px / 2.0], [0.0, 0.0, 1.0]])


def vertical_fov_deg(fov_deg: float, width_px: int, height_px: int) -> float:
    """Vertical FOV (degrees) of an image with horizontal FOV ``fov_deg`` and square pixels."""
    f = focal_px(fov_deg, width_px)
    return math.degrees(2.0 * math.atan(0.5 * height_px / f))


def rotation_cam_to_enu(yaw_deg: float, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> npt.NDArray[np.float64]:
    """(3, 3) float64 rotation R with ``v_enu = R @ v_cam``.

    Columns are the camera's right, down and forward axes expressed in ENU.
    """
    y, p, r = (math.radians(a) for a in (yaw_deg, pitch_deg, roll_deg))
    forward = np.array([math.sin(y) * math.cos(p), math.cos(y) * math.cos(p), math.sin(p)])
    right0 = np.array([math.cos(y), -math.sin(y), 0.0])
    up0 = np.array([-math.sin(y) * math.sin(p), -math.cos(y) * math.sin(p), math.cos(p)])
    right = math.cos(r) * right0 - math.sin(r) * up0
    up = math.sin(r) * right0 + math.cos(r) * up0
    return np.stack([right, -up, forward], axis=1)


def pixel_rays_cam(fov_deg: float, width_px: int, height_px: int) -> npt.NDArray[np.float64]:
    """(H, W, 3) float64 camera-frame ray directions through pixel centres, with z = 1.

    Because z = 1, a point at z-depth ``d`` along pixel (v, u) is ``d * rays[v, u]``.
    """
    validate_camera(fov_deg, width_px, height_px)
    f = focal_px(fov_deg, width_px)
    u = (np.arange(width_px) + 0.5 - width_px / 2.0) / f
    v = (np.arange(height_px) + 0.5 - height_px / 2.0) / f
    uu, vv = np.meshgrid(u, v)
    return np.stack([uu, vv, np.ones_like(uu)], axis=-1)


def project_enu(
    points_enu: npt.NDArray[np.floating],
    cam_pos_enu: npt.NDArray[np.floating],
    r_cam_to_enu: npt.NDArray[np.floating],
    fov_deg: float,
    width_px: int,
    height_px: int,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Project (N, 3) ENU points; returns (row, col, z_depth) arrays of shape (N,).

    Rows/columns are continuous pixel coordinates (pixel centres at +0.5); ``z_depth`` is metres
    along the optical axis (negative = behind the camera).
    """
    k = intrinsics(fov_deg, width_px, height_px)
    pc = (np.asarray(points_enu, dtype=np.float64) - np.asarray(cam_pos_enu, dtype=np.float64)) @ np.asarray(
        r_cam_to_enu, dtype=np.float64
    )
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        col = k[0, 0] * pc[:, 0] / z + k[0, 2]
        row = k[1, 1] * pc[:, 1] / z + k[1, 2]
    return row, col, z
