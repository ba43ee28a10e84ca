"""Descriptor caches are keyed by content: same inputs reuse, any other network/database/modality/subset/input recomputes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.manifest import Manifest, ShardRecord, shard_name
from crosslocate.datasets.schema import ALL_MODALITIES, SKY_DEPTH_M, VIEW_DTYPE, Modality
from crosslocate.datasets.shards import ShardWriter
from crosslocate.datasets.views import ViewDataset
from crosslocate.pipelines import descriptors as D

SIZE = 16


def make_db(db_dir, depth_m):
    """A one-shard database of 3 views of constant depth ``depth_m`` (semantic ids 4)."""
    db_dir.mkdir(parents=True)
    depth = np.full((3, SIZE, SIZE), depth_m, np.float32)
    depth[:, :3] = SKY_DEPTH_M
    arrays = {Modality.DEPTH: depth, Modality.SILHOUETTE: np.zeros_like(depth, np.uint8),
              Modality.SEMANTIC: np.full_like(depth, 4, np.uint8)}  # fmt: skip
    rows = np.zeros(3, VIEW_DTYPE)
    rows["view_id"] = rows["position_id"] = np.arange(3)
    with ShardWriter(db_dir / shard_name(0), ALL_MODALITIES, SIZE, ShardConfig()) as w:
        w.add(arrays, rows)
        sha, size, n = w.commit()
    record = ShardRecord(shard_id=0, path=shard_name(0), n_views=n, n_positions=3, position_ids=(0, 2), sha256=sha,
                         bytes=size)  # fmt: skip
    Manifest(kind="uniform", region={}, dem={}, crs_wkt="EPSG:3035", grid={}, shard={}, codecs={}, split={},
             render={"size_px": SIZE, "modalities": [m.value for m in ALL_MODALITIES]}, layout={"n_shards": 1},
             shards=(record,)).save(db_dir)  # fmt: skip
    return db_dir


class Mean(nn.Module):
    """Descriptor = unit vector of (channel means, 1): it depends on the input's level."""

    def forward(self, x):
        return nn.functional.normalize(torch.cat([x.mean(dim=(2, 3)), torch.ones(len(x), 1)], dim=1), dim=1)


def test_cache_reused_only_for_identical_inputs(tmp_path, monkeypatch):
    import crosslocate.model.train as model_train

    calls = []
    real = model_train.extract_descriptors
    monkeypatch.setattr(model_train, "extract_descriptors", lambda *a, **k: calls.append(1) or real(*a, **k))
    a, b = make_db(tmp_path / "a", 1000.0), make_db(tmp_path / "b", 5000.0)
    cache, dev, net = tmp_path / "cache", torch.device("cpu"), Mean()

    def get(db, modality="depth", network="ckpt-1", indices=None, size_px=None):
        ds = ViewDataset(db, modality, indices=indices, size_px=size_px)
        return D.cached_descriptors(net, ds, dev, cache, "db", network, batch_size=4)

    first = get(a)
    assert len(calls) == 1 and np.array_equal(get(a), first) and len(calls) == 1  # reused
    assert not np.allclose(get(b), first)  # same row count, other database: recomputed, other answer
    get(a, modality="semantic")
    get(a, network="ckpt-2")
    get(a, indices=[0, 1, 2][::-1])
    get(a, size_px=8)
    assert len(calls) == 6 and len(list(cache.glob("db-*.npy"))) == 6
    assert np.array_equal(get(a), first) and len(calls) == 6
    # a byte-identical rebuild is the same database (its cache stays valid)
    make_db(tmp_path / "a2", 1000.0)
    assert D.database_digest(Manifest.load(tmp_path / "a2")) == D.database_digest(Manifest.load(a))
    key = D.descriptor_key("ckpt-1", ViewDataset(a, "depth"))
    assert key["encoding"] >= 2 and key["source"]["views"][0]["modality"] == "depth"
