"""Choosing the pipeline on the validation split, from recall tables written by hand; the horizon
baselines' rankings kept by content."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from crosslocate.errors import ConfigError
from crosslocate.model.config import EvalConfig
from crosslocate.pipelines.refine import (
    PIPELINES,
    choose_pipeline,
    choose_pipeline_and_setting,
    horizon_cache_key,
    horizon_cache_paths,
    horizon_rankings,
    pipeline_table,
    setting_label,
)

from .conftest import build_db, build_queries


def table(r1: float, r10: float) -> dict[str, dict[str, float]]:
    return {"100": {"1": 0.0, "10": 0.0}, "1000": {"1": r1, "10": r10}}


def test_best_recall_at_1_wins_and_recall_at_10_breaks_ties():
    res = {
        "recall": table(0.10, 0.50),
        "refined": {
            "reranked": {"recall": table(0.30, 0.60)},
            "place": {"reranked_voting": table(0.30, 0.70)},
            "hybrid": {"reranked": {"recall": table(0.25, 0.90)}, "place": {"reranked_voting": table(0.20, 0.95)}},
        },
    }
    choice = choose_pipeline(res)
    # 0.30 at R@1 twice: the voted ranking has the better R@10; the hybrid's R@10 does not matter
    assert choice["chosen"] == "network + re-ranking + voting"
    assert choice["scores"]["hybrid + re-ranking"] == {"1": 0.25, "10": 0.90}
    assert set(choice["scores"]) == set(PIPELINES) and "recall@1 within 1 km" in choice["rule"]
    assert pipeline_table(res, "hybrid + re-ranking + voting") == table(0.20, 0.95)


def test_full_ties_keep_the_simpler_pipeline_and_missing_ones_are_skipped():
    res = {"recall": table(0.4, 0.8), "refined": {"reranked": {"recall": table(0.4, 0.8)}}}
    choice = choose_pipeline(res)
    assert choice["chosen"] == "network"
    assert set(choice["scores"]) == {"network", "network + re-ranking"}
    assert pipeline_table(res, "hybrid + re-ranking") is None
    with pytest.raises(ConfigError, match="no pipeline"):
        choose_pipeline({"refined": {}})


def test_without_1_km_the_largest_threshold_decides_and_a_missing_n_counts_lowest():
    res = {  # an EvalConfig with thresholds (500, 4000) and max_n 7: no "1000", no "10"
        "recall": {"500": {"1": 0.9}, "4000": {"1": 0.2}},
        "refined": {"reranked": {"recall": {"500": {"1": 0.1}, "4000": {"1": 0.4}}}},
    }
    choice = choose_pipeline(res)
    assert choice["chosen"] == "network + re-ranking" and choice["threshold_m"] == 4000.0
    assert "within 4 km" in choice["rule"]


def test_pipeline_and_setting_are_chosen_together_and_ties_take_the_simpler_setting():
    def refined(rr: float, hy: float) -> dict:
        return {"reranked": {"recall": table(rr, 0.5)}, "hybrid": {"reranked": {"recall": table(hy, 0.6)}}}

    net = table(0.2, 0.9)
    # the hybrid is best with panoramas at weight 16 (0.45); at 64 it ties that, so the smaller weight
    # wins; the view setting at weight 2 has the best plain re-ranking (0.35), below 0.45
    by_setting = {
        (True, 64.0): refined(0.30, 0.45),
        (False, 2.0): refined(0.35, 0.40),
        (True, 16.0): refined(0.10, 0.45),
    }
    choice = choose_pipeline_and_setting(net, by_setting)
    assert (choice["chosen"], choice["panorama"], choice["weight"]) == ("hybrid + re-ranking", True, 16.0)
    assert choice["scores"]["hybrid + re-ranking"] == {"1": 0.45, "10": 0.6}  # the scores at the chosen setting
    assert list(choice["scores_by_setting"]) == ["view, weight 2", "panorama, weight 16", "panorama, weight 64"]
    assert setting_label(True, 16.0) == "panorama, weight 16" and "view before panorama" in choice["rule"]
    # a tie between view and panorama goes to the view
    choice = choose_pipeline_and_setting(net, {(True, 8.0): refined(0.5, 0.1), (False, 8.0): refined(0.5, 0.1)})
    assert (choice["chosen"], choice["panorama"]) == ("network + re-ranking", False)
    # the network alone wins: the test split is still re-ranked at the best re-ranking pipeline's setting
    choice = choose_pipeline_and_setting(table(0.9, 0.9), by_setting)
    assert (choice["chosen"], choice["panorama"], choice["weight"]) == ("network", True, 16.0)
    # without skylines: only the network, no setting
    choice = choose_pipeline_and_setting(net, {})
    assert (choice["chosen"], choice["weight"], choice["panorama"], choice["scores_by_setting"]) == (
        "network",
        None,
        None,
        {},
    )


def _horizon_inputs(tmp_path, indices=None):
    """The 64-view hand-written database (``pipelines/conftest.py``) and 6 query photos with their poses."""
    from types import SimpleNamespace

    from crosslocate.datasets.queries import load_query_csv
    from crosslocate.datasets.views import ViewDataset
    from crosslocate.model.train import ViewPool

    db = tmp_path / "db" if (tmp_path / "db").exists() else build_db(tmp_path)
    csv = tmp_path / "queries.csv" if (tmp_path / "queries.csv").exists() else build_queries(tmp_path, n=6)
    queries = load_query_csv(csv)
    return SimpleNamespace(dataset=SimpleNamespace(queries=queries)), ViewPool.of([ViewDataset(db, "depth", indices)])


def test_horizon_rankings_are_kept_by_content_and_searched_again_when_an_input_changes(tmp_path, monkeypatch, caplog):
    import crosslocate.model.baselines as B

    qset, pool = _horizon_inputs(tmp_path)
    calls = []
    real = B.horizon_baseline
    monkeypatch.setattr(B, "horizon_baseline", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg, cache, both = EvalConfig(), tmp_path / "baselines", ("horizon", "horizon_searched")

    def run(q=qset, p=pool, k=5, c=cfg, methods=both):
        n = len(calls)
        got = horizon_rankings(q, p, k, 60.0, c, methods=methods, cache_dir=cache)
        return got, len(calls) - n  # the searches it ran

    plain = horizon_rankings(qset, pool, 5, 60.0, cfg)  # no cache folder: nothing kept
    assert len(calls) == 2 and not cache.exists()
    first, searched = run()
    assert searched == 2 and len(list(cache.glob("*.npy"))) == 2
    again, searched = run()
    assert searched == 0
    for m in both:  # the kept rankings and infos are what a search answers
        assert again[m][0].shape == (6, 5) and np.array_equal(again[m][0], plain[m][0])
        assert np.array_equal(first[m][0], plain[m][0]) and again[m][1] == first[m][1]
        assert again[m][1]["gravity"] == plain[m][1]["gravity"]
    assert run(methods=("horizon_searched",))[1] == 0  # one method alone reads its own entry
    # everything the ranking depends on is in the key: each change searches both methods again
    assert run(k=4)[1] == 2
    assert run(c=replace(cfg, horizon_search_roll_deg=3.0))[1] == 2
    assert run(p=_horizon_inputs(tmp_path, indices=np.arange(0, 64, 2))[1])[1] == 2
    tilted = list(qset.dataset.queries)
    tilted[0] = replace(tilted[0], pose=replace(tilted[0].pose, pitch_deg=tilted[0].pose.pitch_deg + 1.0))
    assert run(q=type(qset)(dataset=type(qset.dataset)(queries=tilted)))[1] == 2
    # a damaged entry is ignored (a warning), searched again and rewritten
    npy = horizon_cache_paths(cache, horizon_cache_key(qset, pool, 5, 60.0, cfg, "horizon_searched"))[0]
    npy.write_bytes(b"not a ranking")
    with caplog.at_level(logging.WARNING, logger="crosslocate.pipelines.refine"):
        assert run()[1] == 1
    assert any("ignoring unreadable horizon cache" in r.getMessage() for r in caplog.records)
    assert run()[1] == 0
    # other photo bytes at the same path are other photos
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(qset.dataset.queries[0].image)
    assert run()[1] == 2
