"""FOV scaling against the pinhole rule, padding, encoders' sentinels and seeded augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crosslocate.datasets import transforms as T
from crosslocate.datasets.schema import SKY_DEPTH_M
from crosslocate.errors import ConfigError, RenderError


def _content_cols(canvas: np.ndarray, fill: int) -> np.ndarray:
    return np.nonzero((canvas != fill).any(axis=0))[0]


def test_30deg_photo_occupies_232px_of_500():
    photo = np.full((480, 640), 200, np.uint8)
    out = T.fov_scale(photo, 30.0, 500, db_fov_deg=60.0, fill=0)
    cols = _content_cols(out, 0)
    # 500 * tan(15 deg) / tan(30 deg) = 232.05 (hand-computed)
    assert abs(cols.size - 232) <= 1
    assert abs((cols[0] + cols[-1]) / 2 - 249.5) <= 1  # centred
    rows = np.nonzero((out != 0).any(axis=1))[0]
    assert abs(rows.size - 232 * 480 / 640) <= 1  # aspect ratio kept


def test_60deg_photo_fills_canvas_and_wider_is_cropped():
    out = T.fov_scale(np.full((500, 500, 3), 7, np.uint8), 60.0, 500, fill=(1, 2, 3))
    assert (out == 7).all()
    out90 = T.fov_scale(np.full((300, 400, 3), 7, np.uint8), 90.0, 500, fill=(1, 2, 3))
    assert _content_cols(out90[:, :, 0], 1).size == 500


@pytest.mark.parametrize(
    ("fov_deg", "width_px", "angle_deg"), [(30.0, 600, 10.0), (90.0, 900, 20.0), (45.0, 400, -15.0)]
)
def test_marker_lands_where_a_db_camera_sees_it(fov_deg, width_px, angle_deg):
    """A point at azimuth `angle` off-axis must appear at the database column of that azimuth."""
    photo = np.zeros((width_px // 2, width_px), np.float32)
    col = width_px / 2 + (width_px / 2) * math.tan(math.radians(angle_deg)) / math.tan(math.radians(fov_deg / 2))
    c = int(col)
    photo[:, c - 2 : c + 3] = 1.0
    out = T.fov_scale(photo, fov_deg, 500, db_fov_deg=60.0, fill=0)
    expected = 250 + 250 * math.tan(math.radians(angle_deg)) / math.tan(math.radians(30))
    profile = out.sum(axis=0)
    centroid = (profile * (np.arange(500) + 0.5)).sum() / profile.sum()
    assert abs(centroid - expected) < 2.0


def test_padding_value_and_dtype():
    out = T.fov_scale(np.zeros((100, 100, 3), np.uint8), 20.0, 64, fill=T.QUERY_FILL_RGB)
    assert out.dtype == np.uint8 and out.shape == (64, 64, 3)
    assert tuple(out[0, 0]) == T.QUERY_FILL_RGB
    enc = T.encode_rgb(out)
    # ImageNet mean colour encodes to (almost) zero: padding is neutral for the network
    assert enc.shape == (3, 64, 64) and abs(float(enc[:, 0, 0].abs().max())) < 0.01


def test_bad_fov_raises():
    with pytest.raises(ConfigError, match="fov_deg"):
        T.fov_scale(np.zeros((4, 4)), 0.0, 10)


def test_depth_encoding_keeps_sky_distinguishable():
    depth = np.array([[SKY_DEPTH_M, 10.0, 1000.0, 60_000.0]], np.float32)
    enc = T.encode_depth(depth)
    assert enc.shape == (3, 1, 4) and enc.dtype.is_floating_point
    v = enc[0, 0].numpy()
    # log distance over 10 m .. 100 km (4 decades): 10 m -> -1, 1 km -> 2 * 2/4 - 1 = 0, 60 km -> 2 log10(6000)/4 - 1
    assert v[1] == pytest.approx(-1.0)
    assert v[2] == pytest.approx(0.0, abs=1e-6)
    assert v[3] == pytest.approx(2 * math.log10(6000) / 4 - 1, abs=1e-6)
    assert v[0] == T.SKY_ENCODED and v[0] > v[3] + 0.5  # sky brighter than any terrain, as in photos
    assert (enc[0] == enc[2]).all()


def test_silhouette_and_semantic_encoders():
    sil = T.encode_silhouette(np.array([[0, 1]], np.uint8))
    assert sil[:, 0, 0].tolist() == [0, 0, 0] and sil[:, 0, 1].tolist() == [1, 1, 1]
    sem = T.encode_semantic(np.array([[0, 4]], np.uint8))  # sky, forest
    assert sem.shape == (3, 1, 2)
    assert not np.allclose(sem[:, 0, 0].numpy(), sem[:, 0, 1].numpy())
    with pytest.raises(Exception, match="unknown modality"):
        T.encode_view("rgbd", np.zeros((2, 2)))


def test_augmentation_seeded_and_keeps_sentinels():
    depth = np.full((32, 32), 500.0, np.float32)
    depth[:10] = SKY_DEPTH_M
    cfg = T.AugmentConfig(rotate_deg=5, shift_frac=0.1)
    a = T.augment_view(depth, np.random.default_rng(3), cfg)
    b = T.augment_view(depth, np.random.default_rng(3), cfg)
    assert np.array_equal(a, b)
    assert set(np.unique(a).tolist()) <= {SKY_DEPTH_M, 500.0}
    flipped = T.augment_view(
        np.arange(4, dtype=np.float32)[None].repeat(2, 0), np.random.default_rng(0), T.NO_AUGMENT, flip=True
    )
    assert flipped[0].tolist() == [3, 2, 1, 0]
    rgb = np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    q1 = T.augment_query(rgb, np.random.default_rng(5), T.AugmentConfig())
    q2 = T.augment_query(rgb, np.random.default_rng(5), T.AugmentConfig())
    assert q1.dtype == np.uint8 and np.array_equal(q1, q2) and not np.array_equal(q1, rgb)
    assert np.array_equal(T.augment_query(rgb, np.random.default_rng(5), T.NO_AUGMENT), rgb)
    with pytest.raises(ConfigError):
        T.AugmentConfig(flip_p=2.0)


def test_fov_resize_is_the_photo_part_of_fov_scale():
    photo = np.random.default_rng(2).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    small = T.fov_resize(photo, 30.0, 500, db_fov_deg=60.0)
    assert small.shape == (174, 232, 3)  # 500 tan 15 / tan 30 = 232 px wide, 4:3
    canvas = T.fov_scale(photo, 30.0, 500, db_fov_deg=60.0, fill=(1, 2, 3))
    y0, x0 = (500 - 174) // 2, (500 - 232) // 2
    assert np.array_equal(canvas[y0 : y0 + 174, x0 : x0 + 232], small)
    assert tuple(canvas[0, 0]) == (1, 2, 3) and tuple(canvas[y0 - 1, 250]) == (1, 2, 3)
    with pytest.raises(RenderError, match="does not fit"):
        T.place_centered(np.zeros((10, 12, 3), np.uint8), 11)


def test_augment_encoded_flips_shifts_and_is_seeded():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 8, 8)
    flipped = T.augment_encoded(x, np.random.default_rng(0), T.NO_AUGMENT, flip=True)
    assert torch.equal(flipped, x.flip(-1))
    cfg = T.AugmentConfig(shift_frac=0.25, rotate_deg=0)
    a = T.augment_encoded(x, np.random.default_rng(4), cfg)
    assert torch.equal(a, T.augment_encoded(x, np.random.default_rng(4), cfg)) and a.shape == x.shape
    # a pure shift by (tx, ty) px: the same draws as random_affine on the (H, W, C) array
    tx, ty = np.random.default_rng(4).uniform(-0.25, 0.25, size=2) * 8
    inner = a[0, 3, 3].item()
    assert inner == pytest.approx(x[0, 3, 3].item() - tx - 8 * ty, abs=0.3)  # cv2 warps at 1/32 px
