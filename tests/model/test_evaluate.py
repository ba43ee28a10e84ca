"""Recall@N against hand-built distance tables, and the analytic chance level against counting and Monte Carlo."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from crosslocate.errors import ConfigError
from crosslocate.model import evaluate
from crosslocate.model.config import EvalConfig

INF = np.inf
THR = (20.0, 100.0, 1000.0)


def test_recall_at_n_hand_table():
    dist = np.array(
        [
            [500.0, 15.0, 2000.0, 50.0],
            [1500.0, 1200.0, 90.0, 10.0],
            [INF, 3000.0, 999.0, 1000.0],
        ]
    )
    got = evaluate.recall_at_n(dist, THR, (1, 2, 3, 4, 10))
    # 20 m: q0 from N=2 (15), q1 from N=4 (10), q2 never
    assert got[20.0] == pytest.approx({1: 0.0, 2: 1 / 3, 3: 1 / 3, 4: 2 / 3, 10: 2 / 3})
    # 100 m: q0 from N=2, q1 from N=3 (90), q2 never
    assert got[100.0] == pytest.approx({1: 0.0, 2: 1 / 3, 3: 2 / 3, 4: 2 / 3, 10: 2 / 3})
    # 1 km (inclusive): q0 from N=1 (500), q1 from N=3, q2 from N=3 (999)
    assert got[1000.0] == pytest.approx({1: 1 / 3, 2: 1 / 3, 3: 1.0, 4: 1.0, 10: 1.0})
    with pytest.raises(ConfigError):
        evaluate.recall_at_n(dist, THR, (0,))


def test_retrieved_distances_and_recall_from_indices():
    db_xy = np.array([[0, 0], [30, 40], [300, 400], [0, 10]], float)
    q_xy = np.array([[0, 0], [30, 40]], float)
    idx = np.array([[2, 1, -1], [3, 1, 0]])
    d = evaluate.retrieved_distances(idx, q_xy, db_xy)
    # q0: 500, 50, inf (-1 = no result); q1: |(30, 30)| = 42.43, 0, 50
    np.testing.assert_allclose(d, [[500.0, 50.0, INF], [math.hypot(30, 30), 0.0, 50.0]])
    got = evaluate.recall_from_indices(idx, q_xy, db_xy, (20.0, 60.0), (1, 2))
    assert got[20.0] == pytest.approx({1: 0.0, 2: 0.5}) and got[60.0] == pytest.approx({1: 0.5, 2: 1.0})
    with pytest.raises(ConfigError, match="indices"):
        evaluate.retrieved_distances([[4]], [[0, 0]], db_xy)


def test_oriented_recall_yaw_limit_with_wraparound():
    db_xy = np.zeros((4, 2))
    db_yaw = np.array([15.0, 25.0, 170.0, 320.0])
    q_xy, q_yaw = np.zeros((3, 2)), np.array([350.0, 350.0, 350.0])
    # every view is at distance 0; yaw differences to 350: 25 (ok), 35 (no), 180 (no), 30 (ok, limit inclusive)
    idx = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 1, 3, 0]])
    got = evaluate.oriented_recall(idx, q_xy, q_yaw, db_xy, db_yaw, (20.0,), (1, 2, 3), max_yaw_deg=30.0)
    # q0 hit at N=1; q1 at N=2; q2 at N=3 (view 3, 30 deg)
    assert got[20.0] == pytest.approx({1: 1 / 3, 2: 2 / 3, 3: 1.0})
    plain = evaluate.recall_from_indices(idx, q_xy, db_xy, (20.0,), (1,))
    assert plain[20.0][1] == 1.0  # without the yaw condition everything is correct
    with pytest.raises(ConfigError, match="yaw"):
        evaluate.recall_from_indices(idx, q_xy, db_xy, (20.0,), (1,), max_yaw_deg=30.0)


def test_per_fov_recall_bins():
    db_xy = np.array([[0, 0], [5000, 0]], float)
    q_xy = np.zeros((4, 2))
    fov = np.array([35.0, 45.0, 49.9, 65.0])
    idx = np.array([[0, 1], [1, 0], [0, 1], [1, 0]])
    got = evaluate.per_fov_recall(idx, q_xy, db_xy, fov, (0.0, 40.0, 50.0, 60.0, 180.0), (20.0,), (1, 2))
    assert set(got) == {"0-40", "40-50", "60-180"}  # 50-60 is empty and left out
    assert got["0-40"]["n"] == 1 and got["0-40"]["recall"][20.0] == {1: 1.0, 2: 1.0}
    assert got["40-50"]["n"] == 2 and got["40-50"]["recall"][20.0] == pytest.approx({1: 0.5, 2: 1.0})
    assert got["60-180"]["n"] == 1 and got["60-180"]["recall"][20.0] == {1: 0.0, 2: 1.0}


def test_chance_recall_hand_count_on_a_line():
    db_xy = np.stack([np.arange(0, 100, 10.0), np.zeros(10)], axis=1)  # x = 0, 10, ..., 90
    q_xy = np.array([[0.0, 0.0], [45.0, 0.0]])
    # within 20 m: q0 sees {0, 10, 20} (c = 3), q1 sees {30, 40, 50, 60} (c = 4)
    np.testing.assert_array_equal(evaluate.correct_counts(q_xy, db_xy, 20.0), [3, 4])
    got = evaluate.chance_recall(q_xy, db_xy, (20.0,), (1, 2, 7, 8, 20))[20.0]
    assert got[1] == pytest.approx((3 / 10 + 4 / 10) / 2)
    # N = 2: 1 - C(10 - c, 2) / C(10, 2) = 1 - 21/45 and 1 - 15/45
    assert got[2] == pytest.approx(((1 - 21 / 45) + (1 - 15 / 45)) / 2)
    # N = 7: q1 certain (only 6 wrong views), q0: 1 - C(7, 7) / C(10, 7) = 1 - 1/120
    assert got[7] == pytest.approx(((1 - 1 / 120) + 1.0) / 2)
    assert got[8] == 1.0 and got[20] == 1.0  # N > N_db uses the whole database


def test_chance_recall_matches_monte_carlo():
    rng = np.random.default_rng(0)
    db_xy = rng.uniform(0, 1000, (60, 2))
    q_xy = rng.uniform(0, 1000, (4, 2))
    thr, ns = 250.0, (1, 5, 10)
    analytic = evaluate.chance_recall(q_xy, db_xy, (thr,), ns)[thr]
    correct = np.linalg.norm(q_xy[:, None] - db_xy[None], axis=2) <= thr  # (4, 60)
    assert 0 < correct.sum(axis=1).min() and correct.sum(axis=1).max() < 30  # a non-trivial case
    draws = 20_000
    ranks = rng.random((draws, len(db_xy))).argsort(axis=1)[:, : max(ns)]  # random rankings
    for n in ns:
        hit = correct[:, ranks[:, :n]].any(axis=2)  # (4, draws)
        assert analytic[n] == pytest.approx(hit.mean(), abs=0.01), n


def test_chance_recall_oriented_counts_and_errors():
    db_xy = np.zeros((4, 2))
    db_yaw = np.array([0.0, 20.0, 45.0, 350.0])
    counts = evaluate.correct_counts([[0, 0]], db_xy, 20.0, q_yaw=[10.0], db_yaw=db_yaw, max_yaw_deg=30.0)
    assert counts.tolist() == [3]  # 0, 20, 350 (20 deg across north); not 45 (35 deg)
    got = evaluate.chance_recall([[0, 0]], db_xy, (20.0,), (1,), q_yaw=[10.0], db_yaw=db_yaw, max_yaw_deg=30.0)
    assert got[20.0][1] == pytest.approx(3 / 4)
    with pytest.raises(ConfigError):
        evaluate.chance_recall_from_counts([5], 4, (1,))


def test_evaluate_retrieval_with_config():
    db_xy = np.array([[0, 0], [0, 50], [0, 5000]], float)
    db_yaw = np.array([0.0, 90.0, 0.0])
    q_xy, q_yaw, q_fov = np.zeros((2, 2)), np.array([0.0, 90.0]), np.array([30.0, 55.0])
    idx = np.array([[2, 0, 1], [1, 2, 0]])
    cfg = EvalConfig(thresholds_m=(20.0, 100.0), max_n=2, fov_bins_deg=(0.0, 50.0, 180.0))
    res = evaluate.evaluate_retrieval(idx, q_xy, q_yaw, q_fov, db_xy, db_yaw, cfg)
    assert set(res) == {"recall", "recall_oriented", "per_fov", "chance", "chance_oriented"}
    assert res["recall"]["100"] == {"1": 0.5, "2": 1.0}  # N runs 1..min(max_n=2, K=3)
    assert res["recall"]["20"] == {"1": 0.0, "2": 0.5}
    # q0 (yaw 0): view 0 at N=2 is 0 deg off; q1 (yaw 90): view 1 (90) at N=1
    assert res["recall_oriented"]["100"] == {"1": 0.5, "2": 1.0}
    assert res["chance"]["100"]["1"] == pytest.approx(2 / 3)  # 2 of 3 views within 100 m of both queries
    assert res["chance_oriented"]["100"]["1"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert {k: v["n"] for k, v in res["per_fov"].items()} == {"0-50": 1, "50-180": 1}
    assert res["per_fov"]["0-50"]["recall"]["100"] == {"1": 0.0, "2": 1.0}  # q0 (FOV 30): view 0 at N=2
    json.dumps(res)  # the results-file layout


def test_evaluate_retrieval_obeys_every_eval_setting():
    """Four queries at the origin, views on the x axis; each EvalConfig field changes the numbers as
    worked out by hand."""
    db_xy = np.array([[0, 0], [150, 0], [900, 0], [5000, 0]], float)
    db_yaw = np.array([0.0, 0.0, 180.0, 0.0])
    q_xy, q_yaw = np.zeros((4, 2)), np.array([0.0, 0.0, 0.0, 170.0])
    q_fov = np.array([30.0, 45.0, 55.0, 65.0])
    idx = np.array([[3, 0, 1, 2], [1, 3, 2, 0], [2, 1, 3, 0], [2, 3, 1, 0]])
    # distances (m) of each row: q0 5000 0 150 900; q1 150 5000 900 0; q2 900 150 5000 0; q3 900 5000 150 0
    base = dict(thresholds_m=(200.0,), max_n=3, fov_bins_deg=(0.0, 50.0, 180.0))
    res = evaluate.evaluate_retrieval(idx, q_xy, q_yaw, q_fov, db_xy, db_yaw, EvalConfig(**base))
    assert res["recall"]["200"] == {"1": 0.25, "2": 0.75, "3": 1.0}  # q1 at 1; q0, q2 at 2; q3 at 3
    # oriented (30 deg): q3 (yaw 170) only matches view 2 (yaw 180, 900 m away: not within 200 m)
    assert res["recall_oriented"]["200"] == {"1": 0.25, "2": 0.75, "3": 0.75}
    res = evaluate.evaluate_retrieval(
        idx, q_xy, q_yaw, q_fov, db_xy, db_yaw, EvalConfig(**{**base, "thresholds_m": (1000.0,)})
    )
    # within 1 km: q0 at N=2, q1 at N=1, q2 at N=1, q3 at N=1
    assert res["recall"]["1000"] == {"1": 0.75, "2": 1.0, "3": 1.0}
    # oriented: q2's first view (yaw 180) no longer counts (N=2), q3's (yaw 180 vs 170) does
    assert res["recall_oriented"]["1000"] == {"1": 0.5, "2": 1.0, "3": 1.0}
    # a 5 deg yaw limit drops q3's view 2 (10 deg off) and leaves q3 without a match
    res5 = evaluate.evaluate_retrieval(
        idx,
        q_xy,
        q_yaw,
        q_fov,
        db_xy,
        db_yaw,
        EvalConfig(**{**base, "thresholds_m": (1000.0,), "orient_max_yaw_deg": 5.0}),
    )
    assert res5["recall_oriented"]["1000"] == {"1": 0.25, "2": 0.75, "3": 0.75}
    # max_n caps N; other FOV bins regroup the queries
    res = evaluate.evaluate_retrieval(
        idx, q_xy, q_yaw, q_fov, db_xy, db_yaw, EvalConfig(**{**base, "max_n": 1, "fov_bins_deg": (40.0, 60.0)})
    )
    assert res["recall"]["200"] == {"1": 0.25} and set(res["chance"]["200"]) == {"1"}
    assert {k: v["n"] for k, v in res["per_fov"].items()} == {"40-60": 2}  # q1 (45), q2 (55)
    assert res["per_fov"]["40-60"]["recall"]["200"] == {"1": 0.5}  # q1 found at N=1
    # chance within 200 m: 2 of 4 views (0 and 150 m) for every query: 1 - C(2, 1) / C(4, 1) = 1/2
    assert res["chance"]["200"]["1"] == pytest.approx(0.5)
    # oriented chance: q0..q2 (yaw 0) keep both; q3 (yaw 170) none -> (3 * 1/2 + 0) / 4
    assert res["chance_oriented"]["200"]["1"] == pytest.approx(3 / 8)


def test_evaluate_retrieval_intervals_by_group():
    idx = np.array([[0], [1], [0], [1]])
    db_xy = np.array([[0, 0], [5000, 0]], float)
    res = evaluate.evaluate_retrieval(
        idx,
        np.zeros((4, 2)),
        np.zeros(4),
        np.full(4, 50.0),
        db_xy,
        np.zeros(2),
        EvalConfig(),
        groups=[0, 0, 1, 1],
        chance=False,
    )
    assert set(res) == {"recall", "recall_oriented", "per_fov", "recall_ci95"}
    assert res["recall"]["1000"] == {"1": 0.5}
    # each spot has one hit and one miss: every resample gives 1/2
    assert res["recall_ci95"]["1000"] == {"1": [0.5, 0.5]}


def test_recall_interval_matches_the_binomial_and_widens_with_groups():
    """400 independent queries, half found: 95% half-width ~ 1.96 sqrt(0.25 / 400) = 0.049.
    The same outcomes in 100 groups of 4 identical photos: ~ sqrt(4) = 2x wider."""
    from crosslocate.model.evaluate import recall_interval

    dist = np.where(np.arange(400) % 2 == 0, 10.0, 5000.0)[:, None]  # (400, 1): every other query hit
    single = recall_interval(dist, np.arange(400), 1000.0, [1], n_boot=4000)[1]
    assert single[0] < 0.5 < single[1] and (single[1] - single[0]) / 2 == pytest.approx(0.049, rel=0.12)
    dist4 = np.where((np.arange(400) // 4) % 2 == 0, 10.0, 5000.0)[:, None]  # groups share the outcome
    grouped = recall_interval(dist4, np.arange(400) // 4, 1000.0, [1], n_boot=4000)[1]
    assert (grouped[1] - grouped[0]) / (single[1] - single[0]) == pytest.approx(2.0, rel=0.15)
    # all found: no uncertainty; N beyond K uses all K columns
    sure = recall_interval(np.full((6, 2), 10.0), np.arange(6) // 2, 20.0, [1, 5])
    assert sure == {1: (1.0, 1.0), 5: (1.0, 1.0)}
    with pytest.raises(ConfigError, match="groups"):
        recall_interval(dist, np.arange(3), 1000.0, [1])


def test_paired_difference_counts_the_photos_each_side_alone_finds():
    """Hand-counted: A finds photos 0, 1, 4 at N=1, B finds 0, 2 (and 3 at N=2): A - B = 0.6 - 0.4
    at N=1 with 2 photos only A finds and 1 only B finds; at N=2 B also finds photo 3."""
    from crosslocate.model.evaluate import paired_difference

    far, near = 5000.0, 10.0
    a = np.array([[near, far], [near, far], [far, far], [far, far], [near, far]])
    b = np.array([[near, far], [far, far], [near, far], [far, near], [far, far]])
    got = paired_difference(a, b, np.arange(5), 1000.0, [1, 2])
    one = got[1]
    assert (one["a"], one["b"], one["only_a"], one["only_b"], one["n"]) == (0.6, 0.4, 2.0, 1.0, 5)
    assert one["diff"] == pytest.approx(0.2) and one["low"] <= 0.2 <= one["high"]
    assert got[2]["b"] == 0.6 and got[2]["diff"] == pytest.approx(0.0) and got[2]["only_b"] == 2.0
    # the same ranking on both sides: exactly no difference, and no interval around it
    same = paired_difference(a, a, np.arange(5) // 2, 1000.0, [1])[1]
    assert (same["diff"], same["low"], same["high"], same["only_a"]) == (0.0, 0.0, 0.0, 0.0)


def test_paired_difference_averages_runs_per_photo():
    """Two runs of A (hits 1,1,0,0 and 1,0,1,0) against B (0,0,0,1): A's recall 0.5, B's 0.25; only A:
    run 1 finds 2 photos B misses, run 2 also 2, mean 2; only B: photo 3 in both runs, 1."""
    from crosslocate.model.evaluate import paired_difference

    hit = lambda h: np.where(np.array(h, bool), 10.0, 5000.0)[:, None]  # noqa: E731
    a = np.stack([hit([1, 1, 0, 0]), hit([1, 0, 1, 0])])
    got = paired_difference(a, hit([0, 0, 0, 1]), np.arange(4), 1000.0, [1])[1]
    assert (got["a"], got["b"], got["only_a"], got["only_b"]) == (0.5, 0.25, 2.0, 1.0)
    assert got["diff"] == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="same M"):
        paired_difference(a, hit([0, 0, 1]), np.arange(4), 1000.0, [1])


def test_paired_difference_is_narrower_than_two_separate_intervals():
    """400 photos, B finds the even ones, A finds those and 20 more: A - B = 0.05. Separately the two
    recalls' intervals (half-width ~0.049 each) overlap; paired, only the 20 discordant photos vary,
    so the interval is ~1.96 sqrt(0.05 * 0.95 / 400) = 0.021 wide each side and excludes 0."""
    from crosslocate.model.evaluate import paired_difference, recall_interval

    idx = np.arange(400)
    b = np.where(idx % 2 == 0, 10.0, 5000.0)[:, None]
    a = np.where((idx % 2 == 0) | (idx < 40), 10.0, 5000.0)[:, None]  # 20 odd photos below 40 added
    got = paired_difference(a, b, idx, 1000.0, [1], n_boot=4000)[1]
    assert got["diff"] == pytest.approx(0.05) and (got["only_a"], got["only_b"]) == (20.0, 0.0)
    assert (got["high"] - got["low"]) / 2 == pytest.approx(0.021, rel=0.2) and got["low"] > 0.0
    sep_a, sep_b = recall_interval(a, idx, 1000.0, [1])[1], recall_interval(b, idx, 1000.0, [1])[1]
    assert sep_a[0] < sep_b[1]  # the separate intervals overlap: they could not tell A from B


def test_chance_recall_is_exactly_zero_without_a_correct_view():
    """No view within the threshold: chance is 0 at every N, not +-1e-15 from log-gamma rounding."""
    db_xy = np.stack([5000.0 + 100.0 * np.arange(36), np.zeros(36)], axis=1)
    q_xy = np.array([[0.0, 0.0], [5000.0, 0.0]])  # q1 has exactly one correct view (c = 1)
    got = evaluate.chance_recall(q_xy, db_xy, (20.0,), range(1, 37))[20.0]
    assert got == {n: pytest.approx((0.0 + n / 36) / 2, abs=1e-12) for n in range(1, 37)}
    assert evaluate.chance_recall(q_xy[:1], db_xy, (20.0,), range(1, 37))[20.0] == dict.fromkeys(range(1, 37), 0.0)


def test_confuser_profile_bins_the_wrong_top_n_by_hand():
    # one query at the origin; database views on the x axis at these distances (metres)
    db_x = np.array([500.0, 1000.0, 1500.0, 2000.0, 3000.0, 5000.0, 30_000.0, 40_000.0])
    db_xy = np.c_[db_x, np.zeros(8)]
    q_xy = np.zeros((1, 2))
    # ranking: 30 km, 500 m (hit), 2 km, 1 km (hit: limit inclusive), 40 km, then no result (-1 -> inf)
    idx = np.array([[6, 0, 3, 1, 7, -1]])
    dist = evaluate.retrieved_distances(idx, q_xy, db_xy)
    got = evaluate.confuser_profile(dist, q_xy, db_xy, top_n=5)
    assert got["bins"] == ["1-2 km", "2-4 km", "4-8 km", "8-20 km", "> 20 km"]
    # wrong among the top 5: 30 km, 2 km (bin 1-2 km: upper edge inclusive), 40 km
    assert got["n_wrong"] == 3 and got["wrong"] == pytest.approx([1 / 3, 0, 0, 0, 2 / 3])
    # database beyond 1 km: 1.5 and 2 km (1-2), 3 km (2-4), 5 km (4-8), 30 and 40 km (> 20): 6 views
    assert got["database"] == pytest.approx([2 / 6, 1 / 6, 1 / 6, 0, 2 / 6])
    # top 1 sees only the 30 km view; a second query pools its views with the first
    assert evaluate.confuser_profile(dist, q_xy, db_xy, top_n=1)["wrong"] == [0, 0, 0, 0, 1.0]
    two = evaluate.confuser_profile(np.array([[30_000.0], [1500.0]]), np.zeros((2, 2)), db_xy, top_n=1)
    assert two["wrong"] == [0.5, 0, 0, 0, 0.5] and two["database"] == pytest.approx([2 / 6, 1 / 6, 1 / 6, 0, 2 / 6])
    # a perfect ranking has no confusers; bad settings are refused
    assert evaluate.confuser_profile(np.array([[0.0, 900.0]]), q_xy, db_xy)["wrong"] == [0, 0, 0, 0, 0]
    for bad in (dict(top_n=0), dict(edges_m=(500.0,)), dict(edges_m=(4000.0, 2000.0))):
        with pytest.raises(ConfigError):
            evaluate.confuser_profile(dist, q_xy, db_xy, **bad)
