"""Choosing the pipeline on the validation split, from recall tables written by hand."""

from __future__ import annotations

import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.refine import PIPELINES, choose_pipeline, pipeline_table


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
