"""Depth PNG encodings and the VPR-datasets file name, against hand-computed values."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from crosslocate.datasets.export import depth_to_gray8, depth_to_log16, log16_to_depth, view_png, vpr_name
from crosslocate.errors import ConfigError


def test_log16_codes_and_error_bound():
    d = np.array([[-1.0, 0.2, 1.0, math.e, 60_000.0]])
    code = depth_to_log16(d)
    assert code.tolist() == [[0, 1, 1, 4097, 1 + round(math.log(60_000.0) * 4096)]]
    x = np.geomspace(1.0, 1e6, 1000)
    assert np.max(np.abs(log16_to_depth(depth_to_log16(x)) / x - 1)) <= math.expm1(0.5 / 4096) + 1e-7
    png = Image.open(io.BytesIO(view_png("depth", d)))
    assert png.mode == "I;16" and np.asarray(png).tolist() == code.tolist()


def test_gray8_polarity():
    g = depth_to_gray8(np.array([-1.0, 5.0, 10.0, 1000.0, 100_000.0, 1e7]))
    assert g.tolist() == [255, 1, 1, 1 + round(253 * 0.5), 254, 254]


def test_vpr_name_fields():
    name = vpr_name(east_m=412345.678, north_m=5150000.004, zone=32, band="T", lat=46.5, lon=7.25, pano_id="17",
                    tile_num=3, yaw_deg=-30.5, pitch_deg=-5.7, roll_deg=2.9, alt_m=2104.46, note="depth")  # fmt: skip
    assert name == "@0412345.68@5150000.00@32@T@046.50000@0007.25000@17@03@329@-05@002@2104.5@@depth@.png"
    with pytest.raises(ConfigError, match="must not contain"):
        vpr_name(east_m=0, north_m=0, zone=1, band="C", lat=0, lon=0, pano_id="a@b", tile_num=None,
                 yaw_deg=0, pitch_deg=0, roll_deg=0, alt_m=0, note="x")  # fmt: skip
