"""Triplet mining on tiny layouts where the right positive / negatives are known by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crosslocate.errors import ConfigError
from crosslocate.model import functional as F
from crosslocate.model import mining
from crosslocate.model.config import TrainConfig


def test_positive_candidates_radius_and_yaw_with_wraparound():
    q_xy, q_yaw = np.array([[0.0, 0.0]]), np.array([5.0])
    db_xy = np.array([[0, 0], [15, 0], [25, 0], [0, 20], [0, 10], [0, 5], [-12, -16]], float)
    db_yaw = np.array([0.0, 355.0, 5.0, 20.0, 190.0, 21.0, 350.0])
    # 0: 0 m, 5 deg            -> in
    # 1: 15 m, 355 vs 5 = 10   -> in (wrap-around)
    # 2: 25 m                  -> out (distance)
    # 3: 20 m (= radius), 15   -> in (both limits inclusive)
    # 4: 10 m, 175 deg         -> out (yaw)
    # 5: 5 m, 16 deg           -> out (yaw)
    # 6: 20 m (12-16-20), 15   -> in (wrap-around, 350 vs 5)
    (got,) = mining.positive_candidates(q_xy, q_yaw, db_xy, db_yaw, 20.0, 15.0)
    assert got.tolist() == [0, 1, 3, 6]
    # a second query at yaw 180 sees only view 4
    got2 = mining.positive_candidates([[0, 0], [0, 0]], [5.0, 180.0], db_xy, db_yaw, 20.0, 15.0)
    assert got2[1].tolist() == [4]


def test_far_candidates_min_distance_inclusive():
    db_xy = np.array([[1999.0, 0], [2000.0, 0], [0, 2001.0], [3000, 4000], [0, 0]])
    (got,) = mining.far_candidates([[0.0, 0.0]], db_xy, 2000.0)
    assert got.tolist() == [1, 2, 3]  # distances 1999 (no), 2000, 2001, 5000 (yes), 0 (no)


def test_near_candidates_ring_and_yaw_per_query_by_hand():
    # query A at the origin facing north (0 deg), query B 10 km east facing south (180 deg)
    q_xy, q_yaw = np.array([[0.0, 0.0], [10_000.0, 0.0]]), np.array([0.0, 180.0])
    db_xy = np.array(
        [[1999, 0], [2000, 0], [0, 3000], [3000, 4000], [0, 5001], [0, 4000], [10_000, 2500], [10_000, 3000]], float
    )
    db_yaw = np.array([0.0, 330.0, 46.0, 45.0, 0.0, 180.0, 180.0, 0.0])
    # 0: A 1999 m                   -> out (inside the 2 km exclusion)
    # 1: A 2000 m, 330 vs 0 = 30    -> in (ring limits inclusive)
    # 2: A 3000 m, 46 deg           -> out (yaw)
    # 3: A 5000 m (3-4-5), 45 deg   -> in (both limits inclusive)
    # 4: A 5001 m                   -> out (beyond the ring)
    # 5: A 4000 m but facing south  -> out for A; B is 10.8 km away -> out
    # 6: B 2500 m, facing south     -> in (B's own neighbourhood and yaw)
    # 7: B 3000 m, facing north     -> out (yaw relative to B, not A)
    got = mining.near_candidates(q_xy, q_yaw, db_xy, db_yaw, 2000.0, 5000.0, 45.0)
    assert got.dtype == np.int64 and got.tolist() == [1, 3, 6]
    # the union of both queries, each view once; brute force agrees on a random layout
    rng = np.random.default_rng(3)
    qx, qy = rng.uniform(0, 20_000, (7, 2)), rng.uniform(0, 360, 7)
    dx, dy = rng.uniform(0, 20_000, (3000, 2)), rng.uniform(0, 360, 3000)
    dist = np.linalg.norm(dx[None] - qx[:, None], axis=2)
    dyaw = np.abs((dy[None] - qy[:, None] + 180.0) % 360.0 - 180.0)
    want = np.flatnonzero(((dist >= 2000) & (dist <= 5000) & (dyaw <= 45)).any(axis=0))
    assert np.array_equal(mining.near_candidates(qx, qy, dx, dy, 2000.0, 5000.0, 45.0), want) and want.size > 50
    assert mining.near_candidates(np.zeros((0, 2)), [], dx, dy, 2000.0, 5000.0, 45.0).size == 0
    with pytest.raises(ConfigError, match="yaw lengths"):
        mining.near_candidates(qx, qy[:3], dx, dy, 2000.0, 5000.0, 45.0)


def test_sq_distances_by_hand():
    d = mining.sq_distances(np.array([1.0, 2.0]), np.array([[1.0, 2.0], [4.0, 6.0], [0.0, 0.0]]))
    np.testing.assert_allclose(d, [0.0, 25.0, 5.0])


def _line_db(values):
    """1-D descriptors: with the query at 0 the squared distance of view i is values[i] ** 2."""
    return np.asarray(values, np.float64)[:, None]


def test_mine_tuple_positive_is_closest_in_descriptor_space_and_slack_rule():
    # view: 0, 1 positives (d2 = 0.49, 0.81); 2..6 far (d2 = 0.09, 0.25, 0.64, 0.81, 2.25)
    db = _line_db([0.7, 0.9, 0.3, 0.5, 0.8, 0.9, 1.5])
    q = np.zeros(1)
    pos, negs, n_hard = mining.mine_tuple(
        q,
        db,
        np.array([1, 0]),
        np.arange(2, 7),
        np.random.default_rng(0),
        n_negatives=3,
        neg_hardest=100,
        neg_slack=0.2,
    )
    assert pos == 0  # d2 0.49 < 0.81
    # keep d2(n) < 0.49 + 0.2 = 0.69: views 2 (0.09), 3 (0.25), 4 (0.64); not 5 (0.81), hardest first
    assert negs.tolist() == [2, 3, 4] and n_hard == 3
    # zero slack: only d2 < 0.49 -> views 2, 3 are hard; one random far view pads (not 2 or 3)
    pos, negs, n_hard = mining.mine_tuple(
        q, db, np.array([0, 1]), np.arange(2, 7), np.random.default_rng(0), n_negatives=3, neg_slack=0.0
    )
    assert n_hard == 2 and negs[:2].tolist() == [2, 3] and negs[2] in (4, 5, 6)


def test_mine_tuple_hardest_k_limits_the_hard_negatives():
    db = _line_db([0.7, 0.3, 0.5, 0.6, 0.1])  # positive 0 (0.49); far 1..4: 0.09, 0.25, 0.36, 0.01
    pos, negs, n_hard = mining.mine_tuple(
        np.zeros(1), db, np.array([0]), np.arange(1, 5), np.random.default_rng(1),
        n_negatives=4, neg_hardest=2, neg_slack=0.2,
    )  # fmt: skip
    # all four pass the slack rule, but only the 2 hardest (4: 0.01, 1: 0.09) are kept as hard
    assert pos == 0 and n_hard == 2 and negs[:2].tolist() == [4, 1]
    assert sorted(negs[2:].tolist()) == [2, 3]  # padding: the other far views, no repeats


def test_mine_tuple_pool_sampling_draws_a_random_subset():
    db = _line_db([0.9] + [0.1 * (i + 1) for i in range(8)])  # positive 0 (0.81); far 1..8 all < 0.81 + 0.2
    far = np.arange(1, 9)
    full = [
        mining.mine_tuple(np.zeros(1), db, np.array([0]), far, np.random.default_rng(s), n_negatives=1)[1][0]
        for s in range(20)
    ]
    assert set(full) == {1}  # the pool holds every far view: always the global hardest
    sub = [
        mining.mine_tuple(
            np.zeros(1), db, np.array([0]), far, np.random.default_rng(s), n_negatives=1, neg_pool_size=1, neg_hardest=1
        )[1][0]
        for s in range(40)
    ]
    # a pool of 1 random far view: the "hardest" is whichever was sampled -> several distinct views
    assert set(sub) <= set(far.tolist()) and len(set(sub)) >= 4


def test_mine_tuple_pads_with_replacement_when_few_far_views():
    db = _line_db([0.0, 0.5, 0.6])
    pos, negs, n_hard = mining.mine_tuple(
        np.zeros(1), db, np.array([0]), np.array([1, 2]), np.random.default_rng(0), n_negatives=5
    )
    # d2p = 0: no far view is within the slack of 0.2 (0.25, 0.36) -> no hard ones, 5 drawn from {1, 2}
    assert pos == 0 and n_hard == 0 and len(negs) == 5 and set(negs.tolist()) == {1, 2}


def test_mine_tuples_end_to_end_and_invalid_queries():
    # database: views 0-2 near the origin, 3-5 far (>= 2 km); query 0 at the origin (yaw 5),
    # query 1 at the origin but yaw 90 (no positive), query 2 alone 10 km away (no positive)
    db_xy = np.array([[0, 0], [10, 0], [0, 12], [3000, 0], [0, 2500], [-4000, 0]], float)
    db_yaw = np.array([0.0, 355.0, 5.0, 0.0, 0.0, 0.0])
    q_xy = np.array([[0, 0], [0, 0], [10_000, 10_000]], float)
    q_yaw = np.array([5.0, 90.0, 5.0])
    db_desc = np.array([[1, 0], [0.6, 0.8], [0.8, 0.6], [0.6, 0.5], [0.6, 0.7], [-1, 0]], np.float32)
    q_desc = np.array([[0.6, 0.8], [1, 0], [1, 0]], np.float32)
    pos, negs, valid = mining.mine_tuples(
        q_desc, db_desc, q_xy, q_yaw, db_xy, db_yaw, n_negatives=2, neg_slack=0.2, seed=0
    )
    # query 0: positives {0, 1, 2}; descriptor distances 0.8, 0, 0.08 -> view 1 (exact copy)
    assert valid.tolist() == [True, False, False]
    assert pos.tolist() == [1, -1, -1]
    assert (negs[1:] == -1).all()
    # negatives of query 0 among far views 3, 4, 5 (d2 0.09, 0.01, 3.2): d2 < 0 + 0.2 -> 4, 3 hardest first
    assert negs[0].tolist() == [4, 3]
    # the mined tuple into the triplet loss, by hand: d2p = 0; d2n = 0.01 and 0.09 (margin 0.1)
    qd = torch.tensor(q_desc[:1])
    loss = F.triplet_loss(qd, torch.tensor(db_desc[pos[:1]]), torch.tensor(db_desc[negs[:1]]), margin=0.1)
    assert float(loss) == pytest.approx((0.1 - 0.01) + (0.1 - 0.09), abs=1e-6)


def test_mine_tuples_cfg_uses_the_config_numbers_and_seed():
    db_xy = np.array([[25, 0], [5000, 0], [6000, 0], [7000, 0]], float)
    args = (
        np.ones((1, 2), np.float32),
        np.eye(4, 2, dtype=np.float32),
        np.zeros((1, 2)),
        [0.0],
        db_xy,
        np.zeros(4),
    )
    # the only candidate is 25 m away: no positive with the paper's 20 m, one with 30 m
    assert not mining.mine_tuples_cfg(TrainConfig(), *args)[2][0]
    pos, negs, valid = mining.mine_tuples_cfg(TrainConfig(pos_radius_m=30.0, n_negatives=2), *args)
    assert valid[0] and pos[0] == 0 and negs.shape == (1, 2) and set(negs[0].tolist()) <= {1, 2, 3}
    a = mining.mine_tuples_cfg(TrainConfig(pos_radius_m=30.0, n_negatives=2, neg_slack=0.0), *args, seed=(1, 2))
    b = mining.mine_tuples_cfg(TrainConfig(pos_radius_m=30.0, n_negatives=2, neg_slack=0.0), *args, seed=(1, 2))
    np.testing.assert_array_equal(a[1], b[1])  # same seed, same draw


def test_mine_tuples_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="descriptors"):
        mining.mine_tuples(np.zeros((1, 3)), np.zeros((2, 2)), [[0, 0]], [0], [[0, 0], [1, 1]], [0, 0])
    with pytest.raises(ConfigError, match="do not match positions"):
        mining.mine_tuples(np.zeros((2, 2)), np.zeros((2, 2)), [[0, 0]], [0], [[0, 0], [1, 1]], [0, 0])
    with pytest.raises(ConfigError, match="n_negatives"):
        mining.mine_tuples(np.zeros((1, 2)), np.zeros((2, 2)), [[0, 0]], [0], [[0, 0], [1, 1]], [0, 0], n_negatives=0)
    with pytest.raises(ConfigError, match=r"\(N, 2\)"):
        mining.positive_candidates([0, 0], [0], [[0, 0]], [0], 20, 15)
