"""bench terrain's pyrender shared-pyramid check on real SRTM (needs ../shared/data/srtm3 and EGL)."""

from __future__ import annotations

import pytest

from crosslocate.pipelines.bench_terrain import BOUNDS, NEIGHBOURS_M, pyrender_shared
from crosslocate.pipelines.presets import get_preset


@pytest.mark.realdem
@pytest.mark.egl
def test_pyrender_neighbours_from_a_shared_pyramid_meet_the_atlas_bounds(srtm_dir):
    """Neighbours 500 m and 1 km from a summit above Zermatt, rendered from its pyramid (with their own
    near patches), agree with their own pyramids within the atlas's bounds, at less terrain cost."""
    pytest.importorskip("crosslocate.render.backends.pyrender_egl")
    preset = get_preset("paper").with_overrides(render={"size_px": 96})
    out = pyrender_shared(srtm_dir, preset.render, preset.grid, [("summit", 7.7491, 46.0207)], 1)
    if "skipped" in out:
        pytest.skip(out["skipped"])
    assert out["positions"] == 1 and out["agreement"]["views"] == len(NEIGHBOURS_M) * 12
    assert " (OpenGL " in out["gl_renderer"]  # the record names the device that drew
    assert all(out["bounds_met"].values()), (out["agreement"], BOUNDS)
    assert out["agreement_by_depth"]["0-200 m"]["median_rel_depth"] == 0.0  # the near patch is the own level 0
    cost = out["terrain_s_per_position"]
    assert cost["shared"] < 0.8 * cost["own"]
