"""derived: silhouettes, horizon line, relative depth and colour previews on hand-built depth maps."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.datasets.derived import (
    SKY_RGB,
    depth_to_rgb,
    horizon_line,
    relative_depth,
    semantic_to_rgb,
    silhouette_from_depth,
)
from crosslocate.datasets.schema import SKY_DEPTH_M, semantic_palette
from crosslocate.dem.landcover import LANDCOVER_PALETTE, LandCover
from crosslocate.errors import ConfigError

S = SKY_DEPTH_M


def test_silhouette_marks_near_side_of_jumps_and_the_horizon():
    d = np.array(
        [
            [S, S, S, S],
            [S, 900.0, 1000.0, S],  # 900 -> 1000 is 11 %: no edge at 15 %
            [500.0, 500.0, 1000.0, 1000.0],  # 500 -> 1000: jump, mark the 500 side
            [400.0, 410.0, 420.0, 430.0],
        ],
        np.float32,
    )
    sil = silhouette_from_depth(d, 0.15)
    expected = np.array(
        [
            [0, 0, 0, 0],
            [0, 1, 1, 0],  # terrain next to sky (horizon) -> marked
            [1, 1, 0, 1],  # [2,0], [2,3] under sky; [2,1] near side of 500 | 1000 and 900 / 500
            [1, 1, 1, 1],  # near side of the jumps up to row 2: 500 > 1.15 * 410, 1000 > 1.15 * 430, ...
        ],
        np.uint8,
    )
    assert sil.dtype == np.uint8
    assert np.array_equal(sil, expected)


def test_silhouette_threshold_and_stacks():
    ramp = np.linspace(100.0, 110.0, 16, dtype=np.float32)[:, None] * np.ones((1, 8), np.float32)
    assert silhouette_from_depth(ramp, 0.15).sum() == 0  # smooth surface
    stack = np.stack([ramp, np.full((16, 8), S, np.float32)])
    sil = silhouette_from_depth(stack, 0.15)
    assert sil.shape == (2, 16, 8) and sil.sum() == 0  # all sky: no terrain pixel to mark
    with pytest.raises(ConfigError):
        silhouette_from_depth(ramp, 0.0)


def test_horizon_line_rows():
    d = np.full((5, 4), 100.0, np.float32)
    d[:2, 0] = S  # rows 0-1 sky -> boundary at 2
    d[:, 1] = S  # all sky -> H
    d[:4, 3] = S  # boundary at 4
    hz = horizon_line(d)  # column 2 has no sky -> NaN
    assert hz.dtype == np.float32
    assert np.array_equal(hz[[0, 1, 3]], [2.0, 5.0, 4.0]) and np.isnan(hz[2])
    assert horizon_line(np.stack([d, d])).shape == (2, 4)


def test_relative_depth_is_inverse_depth_over_nearest():
    d = np.array([[S, 200.0], [100.0, 400.0]], np.float32)
    rel = relative_depth(d)
    assert rel.dtype == np.float32
    assert np.allclose(rel, [[0.0, 0.5], [1.0, 0.25]])
    assert np.allclose(relative_depth(d * np.float32(3.0)), np.where(d > 0, rel, 0.0))  # scale invariant
    assert np.all(relative_depth(np.full((2, 2), S, np.float32)) == 0.0)


def test_rgb_previews():
    d = np.array([[S, 100.0], [1000.0, 100_000.0]], np.float32)
    rgb = depth_to_rgb(d)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == SKY_RGB
    assert tuple(rgb[0, 1]) == (253, 231, 37) and tuple(rgb[1, 1]) == (68, 1, 84)  # nearest / >= 1000x
    sem = np.array([[int(LandCover.SKY), int(LandCover.FOREST)], [int(LandCover.GLACIER), 200]], np.uint8)
    srgb = semantic_to_rgb(sem)
    assert tuple(srgb[0, 0]) == LANDCOVER_PALETTE[LandCover.SKY]
    assert tuple(srgb[0, 1]) == LANDCOVER_PALETTE[LandCover.FOREST]
    assert tuple(srgb[1, 1]) == (0, 0, 0) and np.array_equal(srgb, semantic_palette()[sem])
