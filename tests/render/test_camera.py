"""camera.py conventions checked by hand: focal length, yaw/pitch/roll axes, projection of known points."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crosslocate.errors import RenderError
from crosslocate.render.camera import (
    focal_px,
    intrinsics,
    pixel_rays_cam,
    project_enu,
    rotation_cam_to_enu,
    vertical_fov_deg,
)


def test_focal_and_intrinsics():
    assert focal_px(90.0, 500) == pytest.approx(250.0)
    assert focal_px(60.0, 500) == pytest.approx(250.0 / math.tan(math.radians(30.0)))
    k = intrinsics(90.0, 500, 300)
    assert np.allclose(k, [[250, 0, 250], [0, 250, 150], [0, 0, 1]])
    assert vertical_fov_deg(90.0, 500, 500) == pytest.approx(90.0)
    for bad in ((0.0, 10, 10), (180.0, 10, 10), (60.0, 0, 10)):
        with pytest.raises(RenderError):
            intrinsics(*bad)


@pytest.mark.parametrize(
    ("yaw", "forward", "right"),
    [(0.0, (0, 1, 0), (1, 0, 0)), (90.0, (1, 0, 0), (0, -1, 0)), (180.0, (0, -1, 0), (-1, 0, 0))],
)
def test_yaw_is_clockwise_from_north(yaw, forward, right):
    r = rotation_cam_to_enu(yaw)
    assert np.allclose(r[:, 2], forward, atol=1e-12) and np.allclose(r[:, 0], right, atol=1e-12)
    assert np.allclose(r[:, 1], (0, 0, -1), atol=1e-12)  # image down = world down
    assert np.allclose(r.T @ r, np.eye(3))


def test_pitch_up_and_roll_clockwise():
    r = rotation_cam_to_enu(0.0, 30.0)
    assert np.allclose(r[:, 2], (0, math.cos(math.radians(30)), math.sin(math.radians(30))))
    r = rotation_cam_to_enu(0.0, 0.0, 10.0)  # clockwise seen from behind: the right axis dips
    assert r[2, 0] == pytest.approx(-math.sin(math.radians(10.0)))


def test_projection_of_known_points():
    r = rotation_cam_to_enu(90.0)  # looking east
    f = focal_px(60.0, 100)
    pts = np.array([[1000.0, 0.0, 0.0], [1000.0, -100.0, 50.0], [-10.0, 0.0, 0.0]])
    row, col, z = project_enu(pts, np.zeros(3), r, 60.0, 100, 100)
    assert np.allclose(z[:2], 1000.0) and z[2] < 0
    assert row[0] == pytest.approx(50.0) and col[0] == pytest.approx(50.0)
    assert col[1] == pytest.approx(50.0 + f * 0.1) and row[1] == pytest.approx(50.0 - f * 0.05)
    rays = pixel_rays_cam(60.0, 100, 100)
    assert rays.shape == (100, 100, 3) and np.all(rays[..., 2] == 1.0)
    assert rays[0, 0, 0] == pytest.approx((0.5 - 50.0) / f)
