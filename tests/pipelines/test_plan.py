"""Shard planning: hand-computed Morton keys, Z-order of a small grid, determinism, coverage."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.plan import estimate, morton_key, plan_shards, positions_per_shard, spatial_order


def test_morton_key_hand_values():
    # bits of x at even positions, of y at odd ones
    ix = [0, 1, 0, 1, 2, 3, 0, 5]
    iy = [0, 0, 1, 1, 0, 3, 4, 2]
    assert morton_key(ix, iy).tolist() == [0, 1, 2, 3, 4, 15, 32, 25]
    with pytest.raises(ConfigError):
        morton_key([-1], [0])


def test_z_order_of_a_4x4_grid():
    iy, ix = np.mgrid[0:4, 0:4]
    x, y = ix.ravel() * 500.0 + 123.0, iy.ravel() * 500.0 - 77.0
    order = spatial_order(x, y, np.arange(16), cell_m=500.0)
    cells = [(int(ix.ravel()[i]), int(iy.ravel()[i])) for i in order]
    expected = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (3, 0), (2, 1), (3, 1),
                (0, 2), (1, 2), (0, 3), (1, 3), (2, 2), (3, 2), (2, 3), (3, 3)]  # fmt: skip
    assert cells == expected


def _grid(n=16, spacing=500.0):
    iy, ix = np.mgrid[0:n, 0:n]
    return ix.ravel() * spacing, iy.ravel() * spacing, np.arange(n * n, dtype=np.int64)


def test_plan_is_deterministic_and_independent_of_input_order():
    x, y, pid = _grid()
    a = plan_shards(x, y, pid, views_per_shard=48, views_per_position=12)
    perm = np.random.default_rng(0).permutation(len(x))
    b = plan_shards(x[perm], y[perm], pid[perm], views_per_shard=48, views_per_position=12)
    assert a.n_shards == 64 and a.n_views == 256 * 12
    for s in range(a.n_shards):
        assert np.array_equal(pid[a.shard_positions(s)], pid[perm][b.shard_positions(s)])
    assert np.array_equal(np.sort(a.order), np.arange(256))  # every position exactly once


def test_shards_are_spatially_compact():
    x, y, pid = _grid()
    plan = plan_shards(x, y, pid, views_per_shard=4 * 12, views_per_position=12, cell_m=500.0)
    for s in range(plan.n_shards):
        idx = plan.shard_positions(s)
        # 4 consecutive Z-order cells of an aligned grid form a 2 x 2 block
        assert np.ptp(x[idx]) == 500.0 and np.ptp(y[idx]) == 500.0


def test_remainder_shard_and_small_targets():
    x, y, pid = _grid(n=3)
    plan = plan_shards(x, y, pid, views_per_shard=50, views_per_position=12)  # 4 positions per shard
    assert plan.bounds.tolist() == [0, 4, 8, 9] and plan.shard_views(2) == 12
    assert positions_per_shard(5, 12) == 1
    assert plan_shards([], [], [], views_per_shard=12, views_per_position=12).n_shards == 0


def test_estimate_hand_computed():
    x, y, pid = _grid(n=4)
    plan = plan_shards(x, y, pid, views_per_shard=24, views_per_position=12)  # 16 positions, 8 shards
    est = estimate(plan, bytes_per_view=30_000.0, views_per_s=8.0, n_workers=2)
    assert est["n_views"] == 192 and est["n_shards"] == 8
    assert est["estimated_bytes"] == 192 * 30_000
    assert est["estimated_s"] == pytest.approx(192 / 8.0 / 2)


def test_first_shard_estimate_covers_the_measured_paper_shards():
    """The paper preset's shards measured 29,324 bytes per view (240 views of 500 px; docs/bench/build.json):
    the estimate a fresh build checks the free space against lies above, within 3x."""
    from crosslocate.pipelines.plan import shard_bytes_estimate

    measured = 240 * 29_324
    assert measured <= shard_bytes_estimate(240, 500) <= 3 * measured
    assert shard_bytes_estimate(0, 500) > 0 and shard_bytes_estimate(240, 64) < shard_bytes_estimate(240, 500)
