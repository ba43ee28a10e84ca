"""Skyline re-ranking against synthetic skylines projected through cameras of known yaw, pitch and roll."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from crosslocate.errors import ConfigError
from crosslocate.model.baselines import horizon_grid, resample_horizon
from crosslocate.model.rerank import (
    RerankConfig,
    candidate_costs,
    fuse_scores,
    order_by_score,
    panorama_curves,
    pose_grid,
    rerank,
    skyline_costs,
    union_candidates,
)


def ridge(seed: int):
    """A mountain-like skyline: elevation (degrees, about -3..13), periods 9-45 degrees, vs world azimuth (degrees)."""
    rng = np.random.default_rng(seed)
    amp, freq, phase = rng.uniform(0.5, 2.0, 4), rng.integers(8, 40, 4), rng.uniform(0, 2 * np.pi, 4)

    def elev(az_deg):
        a = np.radians(az_deg)
        return 5.0 + sum(amp[i] * np.sin(freq[i] * a + phase[i]) for i in range(4))

    return elev


def project(elev, yaw_deg, pitch_deg, roll_deg, fov_deg, width, height):
    """(width,) boundary row per column of the skyline seen by a pinhole camera (forward projection).

    World frame ENU; camera yaw clockwise from north, pitch up, roll clockwise seen from behind. The
    skyline point at azimuth a is the direction (sin a cos e, cos a cos e, sin e); its pixel is
    (f x / z + W / 2, f y / z + H / 2) in the camera frame (x right, y down, z forward).
    """
    az = np.arange(yaw_deg - 80.0, yaw_deg + 80.0, 0.02)
    e = np.radians(elev(az))
    a = np.radians(az - yaw_deg)
    d = np.stack([np.sin(a) * np.cos(e), np.cos(a) * np.cos(e), np.sin(e)], axis=1)
    p, r = np.radians(pitch_deg), np.radians(roll_deg)
    fwd = np.array([0.0, np.cos(p), np.sin(p)])
    up_p = np.array([0.0, -np.sin(p), np.cos(p)])
    right = np.cos(r) * np.array([1.0, 0.0, 0.0]) - np.sin(r) * up_p
    up = np.cross(right, fwd)
    f = (width / 2.0) / np.tan(np.radians(fov_deg) / 2.0)
    z = d @ fwd
    u = f * (d @ right) / z + width / 2.0
    v = f * -(d @ up) / z + height / 2.0
    order = np.argsort(u)
    return np.interp(np.arange(width) + 0.5, u[order], v[order]).astype(np.float32)


N_DB, TRUE = 12, 7
DB_FOV, DB_PX = 60.0, 128
Q_FOV, Q_W, Q_H = 40.0, 160, 120
Q_YAW, Q_PITCH, Q_ROLL = 6.0, 4.0, -2.5


@pytest.fixture(scope="module")
def scene():
    ridges = [ridge(s) for s in range(N_DB)]
    db_rows = np.stack([project(r, 0.0, 0.0, 0.0, DB_FOV, DB_PX, DB_PX) for r in ridges])
    q_rows = project(ridges[TRUE], Q_YAW, Q_PITCH, Q_ROLL, Q_FOV, Q_W, Q_H)
    # the descriptor ranking puts the true view 6th
    cand = np.array([[0, 3, 5, 9, 11, TRUE, 1, 2, 4, 6, 8, 10]])
    dist = np.linspace(0.2, 0.9, N_DB)[None, :]
    return db_rows, q_rows, cand, dist


def test_true_view_rises_to_first_and_pose_is_recovered(scene):
    db_rows, q_rows, cand, dist = scene
    cfg = RerankConfig(k=12)
    grid = horizon_grid(DB_FOV, cfg.step_deg)
    curves = resample_horizon(db_rows[cand[0]], DB_FOV, DB_PX, grid)
    costs, pose = skyline_costs(q_rows, Q_FOV, Q_H, curves, cfg, grid)
    true_pos = int(np.flatnonzero(cand[0] == TRUE)[0])
    assert costs[true_pos] < 0.05  # deg^2: the true skyline fits within the sampling error
    assert np.delete(costs, true_pos).min() > 20 * costs[true_pos]
    np.testing.assert_allclose(pose[true_pos], [Q_PITCH, Q_ROLL])  # both lie on the hypothesis grid
    res = rerank(cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, cfg)
    assert res.indices[0, 0] == TRUE
    assert sorted(res.indices[0].tolist()) == list(range(N_DB))  # a permutation of the candidates
    assert res.info["n_poses"] == 21 * 9 and res.info["seconds_per_query"] > 0


def test_without_the_pitch_roll_search_the_true_view_fits_worse(scene):
    db_rows, q_rows, cand, _ = scene
    level = RerankConfig(k=12, max_pitch_deg=0.0, max_roll_deg=0.0)
    grid = horizon_grid(DB_FOV, level.step_deg)
    curves = resample_horizon(db_rows[cand[0]], DB_FOV, DB_PX, grid)
    costs, pose = skyline_costs(q_rows, Q_FOV, Q_H, curves, level, grid)
    true_pos = int(np.flatnonzero(cand[0] == TRUE)[0])
    # a 4 degree pitch error alone costs about 4^2 = 16 deg^2
    assert costs[true_pos] > 8.0 and np.all(pose[np.isfinite(costs)] == 0.0)


def test_weight_zero_or_no_skyline_keeps_the_descriptor_order(scene):
    db_rows, q_rows, cand, dist = scene
    res = rerank(cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, RerankConfig(k=12, weight=0.0))
    np.testing.assert_array_equal(res.indices, cand)
    no_sky = np.full(Q_W, np.nan, np.float32)
    res = rerank(cand, dist, [no_sky], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, RerankConfig(k=12))
    np.testing.assert_array_equal(res.indices, cand)
    assert res.info["queries_without_skyline"] == 1


def test_only_the_first_k_are_reordered(scene):
    db_rows, q_rows, cand, dist = scene
    res = rerank(cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, RerankConfig(k=4))
    np.testing.assert_array_equal(res.indices[0, 4:], cand[0, 4:])
    assert sorted(res.indices[0, :4].tolist()) == sorted(cand[0, :4].tolist())


def test_costs_computed_once_fuse_at_any_weight_as_a_full_rerank_does(scene):
    db_rows, q_rows, cand, dist = scene
    cfg = RerankConfig(k=12)
    costs = candidate_costs(cand, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, cfg)
    assert costs.shape == (1, 12) and int(np.argmin(costs[0])) == int(np.flatnonzero(cand[0] == TRUE)[0])
    for w in (0.0, 0.5, 8.0, 64.0):
        full = rerank(cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, RerankConfig(k=12, weight=w))
        given = rerank(
            cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, RerankConfig(k=12, weight=w), costs=costs
        )
        np.testing.assert_array_equal(given.indices, full.indices)
        np.testing.assert_allclose(given.fused, full.fused)
    # weight 0 keeps the descriptor order; a large weight orders by the cost alone
    idx0, _, _ = order_by_score(cand, dist, costs, 0.0)
    np.testing.assert_array_equal(idx0, cand)
    idx_geo, cost_geo, _ = order_by_score(cand, dist, costs, 1e6)
    np.testing.assert_array_equal(idx_geo[0], cand[0][np.argsort(costs[0], kind="stable")])
    assert np.all(np.diff(cost_geo[0]) >= 0)
    with pytest.raises(ConfigError, match="costs must be"):
        rerank(cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, cfg, costs=costs[:, :5])


def test_panorama_stitches_a_position_and_a_straddling_photo_is_compared_whole():
    """Two positions of 12 level views (yaw 0, 30, ..., 330) of their own ridge; the photo looks at
    yaw 15 of position 0 with a 60 degree FOV, so it straddles the views at yaw 0 and 30."""
    yaws = np.arange(12) * 30.0
    ridges = [ridge(101), ridge(202)]
    db_rows = np.stack([project(r, y, 0.0, 0.0, DB_FOV, DB_PX, DB_PX) for r in ridges for y in yaws])
    pos_id, yaw = np.repeat([0, 1], 12), np.tile(yaws, 2)
    cfg = RerankConfig(k=24, max_pitch_deg=0.0, max_roll_deg=0.0)
    grid = horizon_grid(DB_FOV, cfg.step_deg)
    curves = resample_horizon(db_rows, DB_FOV, DB_PX, grid)
    wide = horizon_grid(120.0, cfg.step_deg)
    pano = panorama_curves(curves, grid, pos_id, yaw, np.array([0, 13]), wide)
    # the slice around view 0 (yaw 0) is ridge 0 from azimuth -60 to 60; around view 13 (position 1,
    # yaw 30) ridge 1 from -30 to 90: the truth, to the curves' sampling error
    np.testing.assert_allclose(pano[0], ridges[0](wide), atol=0.05)
    np.testing.assert_allclose(pano[1], ridges[1](30.0 + wide), atol=0.05)
    q_rows = project(ridges[0], 15.0, 0.0, 0.0, 60.0, Q_W, Q_W)
    cand = np.arange(24)[None, :]
    view = candidate_costs(cand, [q_rows], [60.0], [Q_W], db_rows, DB_FOV, DB_PX, cfg)
    whole = candidate_costs(
        cand,
        [q_rows],
        [60.0],
        [Q_W],
        db_rows,
        DB_FOV,
        DB_PX,
        replace(cfg, panorama=True),
        db_pos_id=pos_id,
        db_yaw_deg=yaw,
    )
    # view by view the photo meets view 0 or 30 on half its width; stitched, the whole skyline fits
    assert int(np.argmin(whole[0])) in (0, 1) and whole[0].min() < 0.05
    assert whole[0, 12:].min() > 20 * whole[0].min()  # the other position fits far worse
    assert np.isfinite(view[0, :2]).all() and view[0, :2].min() < 0.05  # the half overlap still fits here...
    # ...but is judged on half the points: the panorama compares all of them (more evidence per candidate)
    res = rerank(
        cand,
        np.zeros((1, 24)),
        [q_rows],
        [60.0],
        [Q_W],
        db_rows,
        DB_FOV,
        DB_PX,
        replace(cfg, panorama=True),
        db_pos_id=pos_id,
        db_yaw_deg=yaw,
    )
    assert res.indices[0, 0] in (0, 1) and res.info["panorama"]


def test_union_candidates_by_hand():
    net = np.array([[4, 1, 7, -1], [2, 3, 5, 6]])
    sky = np.array([[7, 9, 4], [8, 2, 0]])
    u = union_candidates([net, sky], k=3)
    # query 0: 4, 1, 7 from the network, then 9 (7 and 4 already in); query 1: 2, 3, 5, then 8, 0
    np.testing.assert_array_equal(u, [[4, 1, 7, 9, -1], [2, 3, 5, 8, 0]])
    np.testing.assert_array_equal(union_candidates([net], k=2), [[4, 1], [2, 3]])
    with pytest.raises(ConfigError, match="same M"):
        union_candidates([net, sky[:1]], k=3)
    with pytest.raises(ConfigError, match="k >= 1"):
        union_candidates([net], k=0)


def test_padding_is_not_a_candidate_and_does_not_shift_the_fusion(scene):
    db_rows, q_rows, cand, dist = scene
    cfg = RerankConfig(k=16)
    base = rerank(cand, dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, cfg)
    padded_idx = np.concatenate([cand, np.full((1, 4), -1)], axis=1)
    padded_dist = np.concatenate([dist, np.full((1, 4), 99.0)], axis=1)  # whatever a pad's distance is
    res = rerank(padded_idx, padded_dist, [q_rows], [Q_FOV], [Q_H], db_rows, DB_FOV, DB_PX, cfg)
    np.testing.assert_array_equal(res.indices[0, :N_DB], base.indices[0])
    np.testing.assert_array_equal(res.indices[0, N_DB:], -1)
    np.testing.assert_allclose(res.fused[0, :N_DB], base.fused[0])


def test_fuse_scores_by_hand():
    d = np.array([1.0, 2.0, 3.0])
    c = np.array([np.exp(3.0) - 0.25, np.exp(1.0) - 0.25, np.inf])  # log(0.25 + c): 3, 1, worst finite -> 3
    zd = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2.0 / 3.0)
    g = np.array([3.0, 1.0, 3.0])
    zg = (g - g.mean()) / g.std()
    np.testing.assert_allclose(fuse_scores(d, c, 2.0), zd + 2.0 * zg)
    np.testing.assert_allclose(fuse_scores(d, np.full(3, np.inf), 2.0), zd)


def test_pose_grid_and_config_validation():
    g = pose_grid(RerankConfig(max_pitch_deg=2.0, pitch_step_deg=1.0, max_roll_deg=0.0))
    assert sorted(map(tuple, g)) == [(-2.0, 0.0), (-1.0, 0.0), (0.0, 0.0), (1.0, 0.0), (2.0, 0.0)]
    cfg = RerankConfig(k=7, weight=0.5)
    assert RerankConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="RerankConfig.k"):
        RerankConfig(k=0)
    with pytest.raises(ConfigError, match="step_deg"):
        RerankConfig(step_deg=0.0)
    with pytest.raises(ConfigError, match="cand_idx"):
        rerank(
            np.zeros((2, 3)),
            np.zeros((2, 2)),
            [None, None],
            [40, 40],
            [10, 10],
            np.zeros((3, 8)),
            60.0,
            8,
            RerankConfig(),
        )
