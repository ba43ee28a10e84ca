"""faiss search against numpy brute force; approximate-index recall against a hand overlap; GPU fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from crosslocate.errors import ConfigError
from crosslocate.model import search
from crosslocate.model.config import EvalConfig

faiss = pytest.importorskip("faiss")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny indices: OpenMP threads only add contention (and time) on a busy machine."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def _data(n=300, m=12, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.standard_normal((m, d)).astype(np.float32)


def test_flat_l2_matches_numpy_brute_force():
    db, q = _data()
    dist, idx = search.search(db, q, 7)
    full = ((q[:, None, :].astype(np.float64) - db[None]) ** 2).sum(axis=2)
    want = np.argsort(full, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(dist, np.take_along_axis(full, want, 1), rtol=1e-4)  # squared L2
    assert idx.dtype == np.int64 and dist.dtype == np.float32


def test_flat_ip_matches_numpy_brute_force():
    db, q = _data(seed=1)
    dist, idx = search.search(db, q, 5, metric="ip")
    sim = q.astype(np.float64) @ db.T.astype(np.float64)
    want = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(dist, np.take_along_axis(sim, want, 1), rtol=1e-4)


def test_k_larger_than_database_and_empty_queries():
    db, q = _data(n=4, m=3)
    _, idx = search.search(db, q, 10)
    assert idx.shape == (3, 4) and sorted(idx[0].tolist()) == [0, 1, 2, 3]
    d0, i0 = search.build_index(db).search(np.zeros((0, 16), np.float32), 2)
    assert d0.shape == (0, 2) and i0.shape == (0, 2)


def test_overlap_recall_by_hand():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8], [0, 1, 2, 3]])
    approx = np.array([[4, 3, 9, 9], [5, 6, 7, 8], [-1, -1, -1, -1]])
    assert search.overlap_recall(approx, exact) == pytest.approx((2 / 4 + 1 + 0) / 3)


def test_approximate_recall_equals_hand_overlap():
    db, q = _data(n=800, m=20, d=8, seed=2)
    k = 10
    out = search.approximate_recall(db, q, k, kinds=("ivf", "hnsw"), nlist=16, nprobe=1)
    assert set(out) == {"flat", "ivf", "hnsw"} and out["flat"]["recall_vs_exact"] == 1.0
    _, exact = search.search(db, q, k)
    # the IVF index with the same settings, its overlap with the exact top-k counted row by row
    _, ivf = search.build_index(db, "ivf", nlist=16, nprobe=1).search(q, k)
    by_hand = np.mean([len(set(a.tolist()) & set(e.tolist())) / k for a, e in zip(ivf, exact, strict=True)])
    assert out["ivf"]["recall_vs_exact"] == pytest.approx(by_hand)
    for kind in ("ivf", "hnsw"):
        assert 0.0 <= out[kind]["recall_vs_exact"] <= 1.0
        assert out[kind]["build_s"] >= 0 and out[kind]["search_s"] >= 0
    assert out["ivf"]["recall_vs_exact"] < 1.0  # 1 of 16 lists probed: some true neighbours missed
    # probing every list makes IVF exact
    _, ivf_all = search.build_index(db, "ivf", nlist=16, nprobe=16).search(q, k)
    assert search.overlap_recall(ivf_all, exact) == 1.0


def test_ivf_nlist_clamped_for_small_databases():
    db, _ = _data(n=100, m=2)
    index = search.build_index(db, "ivf", nlist=1024, nprobe=16)
    assert index.params == {"nlist": 2, "nprobe": 2}  # 100 // 39 = 2 lists


def test_gpu_request_without_gpu_falls_back_to_cpu(caplog, monkeypatch):
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0, raising=False)
    db, q = _data(n=50, m=4)
    with caplog.at_level(logging.WARNING, logger="crosslocate.model.search"):
        index = search.build_index(db, use_gpu=True)
    assert not index.on_gpu and "0 GPU" in index.note
    assert any("searching on CPU" in r.getMessage() for r in caplog.records)
    np.testing.assert_array_equal(index.search(q, 3)[1], search.search(db, q, 3)[1])
    # HNSW never goes to the GPU, even with GPUs reported
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1, raising=False)
    hnsw = search.build_index(db, "hnsw", use_gpu=True)
    assert not hnsw.on_gpu and "CPU-only" in hnsw.note


def test_search_with_config_and_errors():
    db, q = _data(n=60, m=3)
    _, idx = search.search_with_config(db, q, 4, EvalConfig(metric="ip"))
    np.testing.assert_array_equal(idx, search.search(db, q, 4, metric="ip")[1])
    with pytest.raises(ConfigError, match="index kind"):
        search.build_index(db, "lsh")
    with pytest.raises(ConfigError, match="metric"):
        search.build_index(db, metric="cos")
    bad = db.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        search.build_index(bad)
    with pytest.raises(ConfigError, match=r"\(n, 16\)"):
        search.build_index(db).search(np.zeros((2, 8), np.float32), 1)
    with pytest.raises(ConfigError, match="k must be"):
        search.build_index(db).search(q, 0)


def test_ranking_orders_by_distance_with_and_without_a_config():
    """Database rows per query, nearest first, by hand: 1-D descriptors at 0, 10, 3, 7."""
    db = np.array([[0.0], [10.0], [3.0], [7.0]], np.float32)
    q = np.array([[2.0], [9.0]], np.float32)
    expected = np.array([[2, 0, 3], [1, 3, 2]])
    exact = search.ranking(db, q, 3)
    assert exact.dtype == np.int64 and np.array_equal(exact, expected)
    assert np.array_equal(search.ranking(db, q, 3, EvalConfig()), expected)
