"""rankings.npz compared photo by photo: fabricated runs whose hits are known by construction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.cli import main
from crosslocate.pipelines.rankings import RANKINGS_KEYS, markdown_paired_table, paired_comparison

# 10 views 5 km apart on a line; photo i stands 100 m from view i, so within 1 km only view i is right
DB_XY = np.stack([5000.0 * np.arange(10), np.zeros(10)], axis=1)
Q_XY = DB_XY[:4] + np.array([0.0, 100.0])
# by hand, N = 1 / 3: seed 0 finds photos 0, 3 / 0, 1, 3; seed 1 finds 1 / 0, 1; the baseline 1, 2 / 1, 2, 3
SEED0 = [[0, 5, 6], [5, 1, 6], [5, 6, 7], [3, 5, 6]]
SEED1 = [[5, 0, 6], [1, 5, 6], [5, 6, 7], [5, 6, 7]]
BASE = [[5, 6, 7], [1, 5, 6], [2, 5, 6], [5, 6, 3]]


def make_run(root: Path, name: str, ranking, baseline=None, q_xy=Q_XY) -> Path:
    run = root / name
    run.mkdir(parents=True)
    idx = np.array(ranking, np.int64)
    arrays = dict(
        ranking=idx, distance_m=np.linalg.norm(DB_XY[idx] - q_xy[:, None], axis=2),
        query_image=np.array([f"p{i}.jpg" for i in range(4)]), query_xy=q_xy, query_yaw_deg=np.zeros(4),
        query_fov_deg=np.full(4, 50.0), spot=np.array([0, 0, 1, 1]), db_xy=DB_XY, db_yaw_deg=np.zeros(10),
        db_dirs=np.array(["/db"]), db_part=np.zeros(10, np.int64), db_index=np.arange(10), modality=np.array("depth"),
    )  # fmt: skip
    assert set(RANKINGS_KEYS) == set(arrays)
    if baseline is not None:
        arrays["ranking_horizon_searched"] = np.array(baseline, np.int64)
    np.savez(run / "rankings.npz", **arrays)
    (run / "results.json").write_text(json.dumps({"rankings": "rankings.npz"}))
    return run


def test_paired_comparison_of_two_seeds_against_the_baseline(tmp_path, capsys):
    a0 = make_run(tmp_path, "cfg", SEED0, BASE)
    a1 = make_run(tmp_path, "cfg-seed1", SEED1)  # an older run without the baseline: seed 0's is used
    cmp = paired_comparison([a0, a1], ns=(1, 3))
    assert (cmp.label_a, cmp.label_b, cmp.n_spots) == ("cfg", "horizon_searched", 2)
    one, three = cmp.stats[1], cmp.stats[3]
    # N = 1: A (0.5 + 0.25) / 2 = 0.375, B 0.5; only A: seed 0 photos 0 and 3, seed 1 none -> 1;
    # only B: seed 0 photos 1 and 2, seed 1 photo 2 -> 1.5
    assert (one["a"], one["b"], one["only_a"], one["only_b"]) == (0.375, 0.5, 1.0, 1.5)
    assert one["diff"] == pytest.approx(-0.125) and one["low"] <= -0.125 <= one["high"]
    # N = 3: A (0.75 + 0.5) / 2, B 0.75; only A: photo 0 in both seeds; only B: photo 2, then photos 2 and 3
    assert (three["a"], three["b"], three["only_a"], three["only_b"]) == (0.625, 0.75, 1.0, 1.5)
    assert cmp.recall_a == {1: [0.5, 0.25], 3: [0.75, 0.5]}
    table = markdown_paired_table(cmp)
    assert "| 1 | 37.5 ± 17.7% | 50.0% | -12.5 |" in table and "| 1 | 1.5 |" in table

    out, png = tmp_path / "paired.json", tmp_path / "paired.png"
    assert main(["report", "--paired", str(a0), str(a1), "--json", str(out), "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 5 | 62.5 ± 17.7% | 75.0% | -12.5 |" in capsys.readouterr().out  # N = 5 > K = 3: all 3
    saved = json.loads(out.read_text())
    assert saved["stats"]["10"]["a"] == 0.625 and saved["runs_a"] == [str(a0), str(a1)]

    # one configuration against another: seed 0 finds photos 0, 3 at N = 1, seed 1 photo 1
    vs = paired_comparison([a0], versus=[a1], ns=(1,))
    assert (vs.label_b, vs.stats[1]["diff"], vs.stats[1]["only_a"], vs.stats[1]["only_b"]) == ("cfg-seed1", 0.25, 2, 1)


def test_paired_comparison_refuses_what_cannot_be_paired(tmp_path, capsys):
    a0 = make_run(tmp_path, "a", SEED0, BASE)
    moved = make_run(tmp_path, "moved", SEED1, q_xy=Q_XY + 1.0)
    with pytest.raises(ConfigError, match=r"moved: its query_xy differs"):
        paired_comparison([a0, moved])
    bare = make_run(tmp_path, "bare", SEED1)
    with pytest.raises(ConfigError, match=r"holds the 'horizon_searched' ranking"):
        paired_comparison([bare])
    other = make_run(tmp_path, "other", SEED1, SEED0)  # a baseline ranking that disagrees with a0's
    with pytest.raises(ConfigError, match=r"other: its horizon_searched ranking differs"):
        paired_comparison([a0, other])
    with pytest.raises(ConfigError, match=r"nowhere: not a run folder"):
        paired_comparison([tmp_path / "nowhere"])
    assert main(["report", str(a0), "--versus", str(bare)]) == 2
    assert "--versus, --pipeline and --json go with --paired" in capsys.readouterr().err


def test_pipeline_key_names_every_pipeline_apart():
    from crosslocate.pipelines.rankings import pipeline_key
    from crosslocate.pipelines.refine import PIPELINES

    keys = [pipeline_key(name) for name in PIPELINES]
    assert len(set(keys)) == len(keys)
    assert pipeline_key("network + re-ranking + voting") == "distance_pipeline_network_re_ranking_voting"


def with_pipeline(run: Path, dist, table, best="network + re-ranking + voting") -> Path:
    """Add a voted pipeline's distances to a fabricated run and its recall table to results.json."""
    with np.load(run / "rankings.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["distance_pipeline_network_re_ranking_voting"] = np.array(dist, np.float64)
    np.savez(run / "rankings.npz", **arrays)
    results = {"rankings": "rankings.npz", "best_pipeline": {"name": best},
               "refined": {"place": {"reranked_voting": {"1000": table}}}}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    return run


# voted places, metres to each photo: seed 0 finds photos 0, 1 at N = 1 and photo 2 too at N = 2;
# seed 1 finds photo 3 at N = 1 only (its second place is farther than 1 km)
VOTED0 = [[100.0, 5000.0], [900.0, np.inf], [4000.0, 200.0], [3000.0, 6000.0]]
VOTED1 = [[5000.0, 4000.0], [1500.0, 8000.0], [2000.0, np.inf], [50.0, 7000.0]]


def test_paired_comparison_through_each_runs_best_pipeline(tmp_path, capsys):
    r0 = with_pipeline(make_run(tmp_path, "cfg", SEED0, BASE), VOTED0, {"1": 0.5, "2": 0.75})
    r1 = with_pipeline(make_run(tmp_path, "cfg-seed1", SEED1), VOTED1, {"1": 0.25, "2": 0.25})
    cmp = paired_comparison([r0, r1], pipeline="best", ns=(1, 2, 3))
    assert (cmp.label_a, cmp.label_b) == ("cfg (network + re-ranking + voting)", "horizon_searched")
    # N = 1: A (0.5 + 0.25) / 2; B finds photos 1, 2; only A: seed 0 photo 0, seed 1 photo 3 -> 1;
    # only B: seed 0 photo 2, seed 1 photos 1, 2 -> 1.5
    one, two = cmp.stats[1], cmp.stats[2]
    assert (one["a"], one["b"], one["only_a"], one["only_b"]) == (0.375, 0.5, 1.0, 1.5)
    # N = 2: A (0.75 + 0.25) / 2, B photos 1, 2 (BASE's second columns add none)
    assert (two["a"], two["b"]) == (0.5, 0.5) and cmp.recall_a[2] == [0.75, 0.25]
    # N = 3 > the 2 places ranked: as at N = 2
    assert cmp.stats[3]["a"] == 0.5
    assert main(["report", "--paired", str(r0), str(r1), "--pipeline", "best"]) == 0
    assert "A = cfg (network + re-ranking + voting)" in capsys.readouterr().out
    # the network alone of the same runs, named, is the default comparison
    assert paired_comparison([r0, r1], pipeline="network", ns=(1,)).stats[1]["a"] == 0.375


def test_a_pipeline_ranking_must_exist_and_reproduce_the_reported_table(tmp_path):
    wrong = with_pipeline(make_run(tmp_path, "wrong", SEED0, BASE), VOTED0, {"1": 0.25, "2": 0.75})
    with pytest.raises(
        ConfigError, match=r"wrong: the saved 'network \+ re-ranking \+ voting' ranking does not reproduce"
    ):
        paired_comparison([wrong], pipeline="best")
    old = make_run(tmp_path, "old", SEED0, BASE)
    (old / "results.json").write_text(
        json.dumps({"rankings": "rankings.npz", "best_pipeline": {"name": "hybrid + re-ranking"}})
    )
    with pytest.raises(ConfigError, match=r"old: rankings.npz holds no 'hybrid \+ re-ranking' ranking"):
        paired_comparison([old], pipeline="best")
    with pytest.raises(ConfigError, match=r"unknown pipeline 'voting'"):
        paired_comparison([old], pipeline="voting")
    bare = make_run(tmp_path, "bare", SEED0, BASE)
    with pytest.raises(ConfigError, match=r"bare: results.json has no best_pipeline"):
        paired_comparison([bare], pipeline="best")
