"""preview: PNG per view and modality, mosaics."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
from crosslocate.errors import RenderError
from crosslocate.render.backends.base import ViewBatch
from crosslocate.render.preview import save_mosaic, save_view_pngs, view_rgb


def _batch() -> ViewBatch:
    depth = np.full((2, 6, 8), 500.0, np.float32)
    depth[:, :2] = SKY_DEPTH_M
    sil = np.zeros((2, 6, 8), np.uint8)
    sil[:, 2] = 1
    sem = np.full((2, 6, 8), 4, np.uint8)
    return ViewBatch({Modality.DEPTH: depth, Modality.SILHOUETTE: sil, Modality.SEMANTIC: sem}, np.ones(2, np.float32))


def test_save_view_pngs(tmp_path):
    paths = save_view_pngs(_batch(), tmp_path / "out", ["yaw000", "yaw030"])
    names = sorted(p.name for p in paths)
    assert names == sorted(f"yaw0{y}_{m}.png" for y in ("00", "30") for m in ("depth", "silhouette", "semantic"))
    img = np.asarray(Image.open(tmp_path / "out" / "yaw030_silhouette.png"))
    assert img.shape == (6, 8, 3) and np.all(img[2] == 255) and np.all(img[3] == 0)  # light edges on dark
    assert len(save_view_pngs(_batch(), tmp_path / "b", "v")) == 6 and (tmp_path / "b" / "v001_depth.png").exists()
    with pytest.raises(RenderError, match="one prefix per view"):
        save_view_pngs(_batch(), tmp_path, ["only-one"])


def test_save_mosaic(tmp_path):
    b = _batch()
    images = [view_rgb(m, b.arrays[m][0]) for m in b.arrays]
    out = save_mosaic(images, tmp_path / "m.png", titles=["d", "s", "c"], ncols=2)
    img = Image.open(out)
    assert img.size == (600, 640)  # 2 columns x 3 in, 2 rows x 3.2 in at 100 dpi
    assert not list(tmp_path.glob("*.tmp"))
    with pytest.raises(RenderError):
        save_mosaic([], tmp_path / "x.png")
    with pytest.raises(RenderError):
        save_mosaic(images, tmp_path / "x.png", titles=["a"])
