"""Choosing the pipeline on the validation split, from recall tables written by hand."""

from __future__ import annotations

import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.refine import (
    PIPELINES,
    choose_pipeline,
    choose_pipeline_and_setting,
    pipeline_table,
    setting_label,
)


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
