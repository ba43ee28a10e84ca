"""``crosslocate bench gravity`` on a tiny DEM: the JSON layout, and the true gravity finding the spots."""

from __future__ import annotations

import json

from crosslocate.pipelines.cli import main


def test_bench_gravity_writes_recall_per_variant(tiny_world, tmp_path):
    dem, region, _ = tiny_world
    out = tmp_path / "gravity.json"
    args = ["bench", "gravity", "--region", region, "--dem", dem, "--n-spots", "4", "--size-px", "48"]
    assert main([*args, "--range-m", "8000", "--seed", "1", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["benchmark"] == "gravity" and rec["config"]["eval"]["horizon_search_roll_step_deg"] == 1.0
    res = rec["results"]
    assert set(res) == {"true", "searched", "searched_2deg", "level"}
    assert res["searched"]["gravity_candidates"] == 5 * 11 and res["level"]["gravity_candidates"] == 1
    for r in res.values():
        assert 0.0 <= r["recall@1"] <= r["recall@5"] <= 1.0
    # exact depth skylines with the true gravity: each spot's own views match best
    assert res["true"]["recall@1"] == 1.0
