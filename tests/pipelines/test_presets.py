"""Presets: the stated numbers of each preset, overrides via dataclasses.replace, JSON output."""

from __future__ import annotations

import json

import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.presets import PRESETS, get_preset


def test_names_and_unknown():
    assert set(PRESETS) == {"paper", "cpu", "tiny"}
    with pytest.raises(ConfigError, match="paper, cpu, tiny"):
        get_preset("huge")


def test_stated_settings():
    paper, cpu, tiny = get_preset("paper"), get_preset("cpu"), get_preset("tiny")
    assert (paper.render.size_px, paper.render.range_m, paper.grid.spacing_m) == (500, 60_000.0, 500.0)
    assert paper.render.fov_deg == 60.0 and len(paper.grid.yaws_deg) == 12
    assert cpu.render.size_px == 256 and 30_000.0 <= cpu.render.range_m <= 40_000.0
    assert (tiny.render.size_px, tiny.grid.spacing_m) == (64, 2000.0)
    for p in (paper, cpu, tiny):
        assert p.grid.fov_deg == p.render.fov_deg


def test_overrides_replace_only_the_named_field():
    base = get_preset("tiny")
    p = base.with_overrides(render={"size_px": 32}, shard={"views_per_shard": 6})
    assert p.render.size_px == 32 and p.shard.views_per_shard == 6
    assert p.render.range_m == base.render.range_m and p.grid == base.grid
    assert base.render.size_px == 64  # the preset itself is unchanged
    with pytest.raises(ConfigError):
        base.with_overrides(render={"size_px": -1})
    with pytest.raises(ConfigError, match="bad override"):
        base.with_overrides(grid={"no_such_field": 1})
    with pytest.raises(ConfigError, match="unknown preset section"):
        base.with_overrides(camera={"x": 1})


def test_to_dict_is_json():
    d = get_preset("cpu").to_dict()
    text = json.dumps(d)
    assert d["name"] == "cpu" and d["render"]["size_px"] == 256 and "views_per_shard" in text
    for section in ("net", "train", "eval"):
        assert section in d  # None (with a 'missing' note) when the model configs are not built


@pytest.mark.parametrize("name", ["paper", "cpu", "tiny"])
def test_one_preset_tier_grid_and_render_match_the_layer_presets(name):
    """`crosslocate grid --preset X` (the layer preset) and `build --preset X` (the end-to-end preset)
    read the same settings: there is no second tier of overrides."""
    from crosslocate.dem.config import GRID_PRESETS
    from crosslocate.render.config import RENDER_PRESETS

    preset = get_preset(name)
    assert preset.grid == GRID_PRESETS[name] and preset.render == RENDER_PRESETS[name]
    assert get_preset("cpu").grid.spacing_m == 1000.0  # the demo's uniform grid at 1 km
