"""Position voting on a hand-computed layout."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.errors import ConfigError
from crosslocate.model.voting import (
    VoteConfig,
    first_occurrence_places,
    grid_spacing_m,
    place_recall,
    position_ids,
    vote_places,
)

# four positions on a 1 km line (the last one 3 km further), two views each
CENTRES = np.array([[0.0, 0.0], [1000.0, 0.0], [2000.0, 0.0], [5000.0, 0.0]])
VIEW_XY = np.repeat(CENTRES, 2, axis=0)
RANKING = np.array([[6, 0, 2, 3, 4]])  # views; positions 3, 0, 1, 1, 2
QUERY_XY = np.array([[500.0, 0.0]])  # between positions 0 and 1


def test_position_ids_group_the_yaws_of_a_position():
    xy = np.repeat(CENTRES, 12, axis=0) + np.random.default_rng(0).uniform(-0.2, 0.2, (48, 2))
    ids, centres = position_ids(xy)
    assert len(centres) == 4
    assert all(len(set(ids[12 * i : 12 * (i + 1)])) == 1 for i in range(4))
    np.testing.assert_allclose(centres[ids[::12]], CENTRES, atol=0.3)
    assert grid_spacing_m(centres) == pytest.approx(1000.0, abs=1.0)


def test_votes_by_hand():
    ids, centres = position_ids(VIEW_XY)
    # weights 1, 1/2, 1/3, 1/4, 1/5 -> best view: P3 1, P0 1/2, P1 1/3, P2 1/5;
    # neighbours within 1.5 km: P0: {P1}, P1: {P0, P2}, P2: {P1}, P3: none
    cfg = VoteConfig(rank_offset=1.0, neighbour_weight=0.5)
    places, votes = vote_places(RANKING, ids, centres, cfg)
    assert places[0].tolist() == [3, 0, 1, 2]
    np.testing.assert_allclose(votes[0], [1.0, 1 / 2 + 0.5 / 3, 1 / 3 + 0.5 * (1 / 2 + 1 / 5) / 2, 1 / 5 + 0.5 / 3])
    places, votes = vote_places(RANKING, ids, centres, VoteConfig(rank_offset=1.0, neighbour_weight=2.0))
    assert places[0].tolist() == [0, 1, 3, 2]  # 1.1667, 1.0333, 1, 0.8667
    places, _ = vote_places(RANKING, ids, centres, VoteConfig(neighbour_weight=0.0))
    assert places[0].tolist() == first_occurrence_places(RANKING, ids)[0].tolist() == [3, 0, 1, 2]


def test_place_recall_with_and_without_voting():
    ids, centres = position_ids(VIEW_XY)
    first = first_occurrence_places(RANKING, ids)
    assert first[0].tolist() == [3, 0, 1, 2]
    voted, _ = vote_places(RANKING, ids, centres, VoteConfig(rank_offset=1.0, neighbour_weight=2.0))
    before = place_recall(first, QUERY_XY, centres, [600.0], [1, 2])
    after = place_recall(voted, QUERY_XY, centres, [600.0], [1, 2])
    assert before == {600.0: {1: 0.0, 2: 1.0}} and after == {600.0: {1: 1.0, 2: 1.0}}


def test_padding_and_validation():
    ids, centres = position_ids(VIEW_XY)
    places, votes = vote_places(np.array([[0, 1, -1], [6, -1, -1]]), ids, centres, VoteConfig())
    assert places.tolist() == [[0], [3]] and votes[1, 0] == pytest.approx(1 / 5)  # rank 0, offset 5
    assert VoteConfig.from_dict(VoteConfig(neighbour_weight=0.2).to_dict()) == VoteConfig(neighbour_weight=0.2)
    with pytest.raises(ConfigError, match="neighbour_weight"):
        VoteConfig(neighbour_weight=-1.0)
    with pytest.raises(ConfigError, match="centres"):
        vote_places(RANKING, ids, centres[:2], VoteConfig())
