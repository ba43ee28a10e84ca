"""ViewDataset / QueryDataset: items, metadata, lazy per-worker handles, FOV scaling of queries."""

from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from crosslocate.datasets import transforms as T
from crosslocate.datasets import views
from crosslocate.datasets.queries import Query
from crosslocate.datasets.schema import SKY_DEPTH_M, VIEW_DTYPE
from crosslocate.dem.poses import Pose
from crosslocate.errors import ConfigError

N_VIEWS, SIZE = 24, 16


class _NpzDatabase:
    """Minimal stand-in with the Database API of docs/CONTRACTS.md, backed by one .npz file."""

    def __init__(self, db_dir):
        data = np.load(os.path.join(db_dir, "fake.npz"))
        self._table = data["table"]
        self._depth = data["depth"]
        self.n_views = len(self._table)
        self.manifest = None
        self.pid = os.getpid()

    def table(self):
        return self._table.copy()

    def read(self, modality, index):
        if os.getpid() != self.pid:
            raise RuntimeError("handle used in a different process")
        return self._depth[index]

    def close(self):
        pass


@pytest.fixture
def tiny_db(tmp_path, monkeypatch):
    table = np.zeros(N_VIEWS, VIEW_DTYPE)
    table["view_id"] = np.arange(N_VIEWS) + 100
    table["position_id"] = np.arange(N_VIEWS) // 12
    table["x"] = 1000.0 * table["position_id"]
    table["y"] = -5.0
    table["yaw_deg"] = 30.0 * (np.arange(N_VIEWS) % 12)
    table["fov_deg"] = 60.0
    depth = np.full((N_VIEWS, SIZE, SIZE), SKY_DEPTH_M, np.float32)
    for i in range(N_VIEWS):
        depth[i, SIZE // 2 :] = 10.0 ** (1 + 3 * i / N_VIEWS)  # depth encodes the index
    np.savez(tmp_path / "fake.npz", table=table, depth=depth)
    monkeypatch.setattr(views, "_open_database", lambda d: _NpzDatabase(d))
    return tmp_path


def _decode_index(x: torch.Tensor) -> int:
    v = float(x[0, -1, 0])  # terrain row; v = 2 log10(d/10)/4 - 1 with log10(d/10) = 3 i / N
    return round((v + 1) / 2 * 4 / 3 * N_VIEWS)


def test_view_items_and_meta(tiny_db):
    ds = views.ViewDataset(tiny_db, "depth", indices=[5, 17])
    assert len(ds) == 2
    x, meta = ds[1]
    assert x.shape == (3, SIZE, SIZE) and x.dtype == torch.float32
    assert _decode_index(x) == 17
    assert float(x[0, 0, 0]) == T.SKY_ENCODED
    assert meta == {"index": 17, "view_id": 117, "position_id": 1, "x": 1000.0, "y": -5.0, "yaw": 150.0, "fov": 60.0}
    with pytest.raises(ConfigError, match="out of range"):
        views.ViewDataset(tiny_db, "depth", indices=[N_VIEWS])


def test_dataloader_with_two_workers_opens_handles_per_worker(tiny_db):
    ds = views.ViewDataset(tiny_db, "depth")
    ds[0]  # open a handle in the parent first: workers must not reuse it
    loader = DataLoader(ds, batch_size=5, num_workers=2, shuffle=False)
    seen = []
    for x, meta in loader:
        assert x.shape[1:] == (3, SIZE, SIZE)
        seen.extend(_decode_index(xi) == int(m) for xi, m in zip(x, meta["index"], strict=True))
        assert meta["view_id"].dtype == torch.int64
    assert len(seen) == N_VIEWS and all(seen)


def test_view_augmentation_is_seeded_and_worker_independent(tiny_db):
    aug = T.AugmentConfig(shift_frac=0.2, rotate_deg=10, flip_p=0.5)
    a = views.ViewDataset(tiny_db, "depth", augment=aug, seed=1)
    b = views.ViewDataset(tiny_db, "depth", augment=aug, seed=1)
    assert torch.equal(a[3][0], b[3][0])
    a.set_epoch(1)
    assert not torch.equal(a[3][0], b[3][0])


def _write_png(path, rgb):
    from PIL import Image

    Image.fromarray(rgb).save(path)


def test_query_dataset_fov_scaling(tmp_path):
    rgb = np.full((120, 160, 3), 255, np.uint8)
    _write_png(tmp_path / "q.png", rgb)
    q = Query(str(tmp_path / "q.png"), Pose(lon=7.0, lat=46.0, alt_m=2000.0, yaw_deg=90.0, fov_deg=30.0))
    ds = views.QueryDataset([q], size_px=100, fov_scaling=True, db_fov_deg=60.0)
    img = ds.image(0)
    white_cols = np.nonzero((img == 255).all(axis=2).any(axis=0))[0]
    expected = 100 * math.tan(math.radians(15)) / math.tan(math.radians(30))  # 46.4 px
    assert abs(white_cols.size - expected) <= 1
    assert tuple(img[0, 0]) == T.QUERY_FILL_RGB
    x, meta = ds[0]
    assert x.shape == (3, 100, 100) and meta["fov"] == 30.0 and meta["yaw"] == 90.0
    plain = views.QueryDataset([q], size_px=100, fov_scaling=False).image(0)
    assert (plain == 255).all()
    with pytest.raises(ConfigError, match="cannot read query image"):
        views.QueryDataset([Query(str(tmp_path / "missing.png"), q.pose)], 100)[0]


def test_view_resize_to_network_input_is_block_mean(tiny_db):
    full = views.ViewDataset(tiny_db, "depth", indices=[3])
    half = views.ViewDataset(tiny_db, "depth", indices=[3], size_px=SIZE // 2)
    x, y = full[0][0], half[0][0]
    assert y.shape == (3, SIZE // 2, SIZE // 2)
    # area resampling by 2 = the mean of each 2 x 2 block of the encoded full-size view
    expect = x.reshape(3, SIZE // 2, 2, SIZE // 2, 2).mean(dim=(2, 4))
    assert torch.allclose(y, expect, atol=1e-6)
    with pytest.raises(ConfigError, match="size_px"):
        views.ViewDataset(tiny_db, "depth", size_px=4)


def test_item_cache_matches_encode_and_is_bounded(tiny_db):
    aug = T.AugmentConfig(shift_frac=0.1, rotate_deg=5, flip_p=0.5)
    ds = views.ViewDataset(tiny_db, "depth", augment=aug, size_px=8)
    first = ds.item(4, np.random.default_rng(1), flip=True)
    again = ds.item(4, np.random.default_rng(1), flip=True)  # from the cache
    assert torch.equal(first, again)
    assert torch.equal(first, ds.encode(ds.read_raw(4), np.random.default_rng(1), flip=True))
    plain = ds.item(4)
    plain += 100.0  # callers may modify what they get; the cache keeps its own copy
    assert torch.equal(ds.item(4), ds.plain(ds.read_raw(4)))
    one = 3 * 8 * 8 * 4  # bytes of one cached (3, 8, 8) float32 input
    small = views.ViewDataset(tiny_db, "depth", size_px=8, cache_bytes=2 * one)
    for i in (0, 1, 0, 2):  # 0 used again before 2 arrives: 1 is the least recently used
        small.item(i)
    assert sorted(small._cache._items) == [0, 2] and small._cache.nbytes == 2 * one
    copy = pickle.loads(pickle.dumps(small))  # what a DataLoader worker gets: an empty cache
    assert len(copy._cache) == 0 and copy._cache.max_bytes == 2 * one and torch.equal(copy.item(2), small.item(2))
    assert len(views.ViewDataset(tiny_db, "depth", cache_bytes=0)._cache) == 0


def test_query_augmentation_leaves_padding_alone(tmp_path):
    _write_png(tmp_path / "q.png", np.full((60, 80, 3), 200, np.uint8))
    q = Query(str(tmp_path / "q.png"), Pose(lon=7.0, lat=46.0, alt_m=2000.0, yaw_deg=0.0, fov_deg=30.0))
    aug = T.AugmentConfig(brightness=0.5, noise_std=20.0, blur_p=1.0)
    ds = views.QueryDataset([q], size_px=64, augment=aug)
    img = ds.image(0, np.random.default_rng(0))
    assert ds.photo(0).shape == (22, 30, 3)  # 64 tan 15 / tan 30 = 29.7 px wide
    assert tuple(img[0, 0]) == T.QUERY_FILL_RGB and tuple(img[-1, -1]) == T.QUERY_FILL_RGB
    centre = img[32 - 5 : 32 + 5, 32 - 8 : 32 + 8].astype(float)
    assert centre.std() > 2.0  # noise reached the photo
    assert np.array_equal(ds.image(0, np.random.default_rng(0)), img)
