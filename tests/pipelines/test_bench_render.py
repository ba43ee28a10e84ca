"""bench render / benchinfo / the bench dispatcher."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from crosslocate.datasets.schema import SKY_DEPTH_M, Modality
from crosslocate.pipelines import benchinfo
from crosslocate.pipelines.bench_render import agreement, targets
from crosslocate.pipelines.cli import main
from crosslocate.pipelines.commands import bench


def test_environment_info_matches_the_machine(repo_root):
    info = benchinfo.environment_info()
    assert info["cpu_count"] == os.cpu_count()
    assert info["packages"]["numpy"] == np.__version__
    assert benchinfo.package_versions(("no-such-dist-xyz",)) == {"no-such-dist-xyz": None}
    if shutil.which("nvidia-smi") is None:
        assert info["gpus"] == []
    if shutil.which("git") and (repo_root / ".git").exists():
        head = subprocess.run(
            ["git", "-C", str(repo_root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        )
        assert info["git_sha"].startswith(head.stdout.strip())
    json.dumps(info)  # serialisable


def test_write_json_is_atomic_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "r.json"
    benchinfo.write_json(path, {"a": np.float32(1.5), "b": np.arange(3)})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2]}
    with pytest.raises(TypeError):
        benchinfo.write_json(path, {"bad": object()})
    assert json.loads(path.read_text())["a"] == 1.5  # old content intact after a failed write
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]


def test_agreement_hand_computed():
    s = SKY_DEPTH_M
    a = [{Modality.DEPTH: np.array([[100.0, 200.0], [s, 400.0]]), Modality.SEMANTIC: np.array([[1, 2], [0, 3]])}]
    b = [{Modality.DEPTH: np.array([[101.0, 200.0], [s, s]]), Modality.SEMANTIC: np.array([[1, 5], [0, 0]])}]
    r = agreement(a, b)
    # both see terrain at 2 pixels: rel diffs 0.01 and 0 -> median 0.005; sky labels agree at 3 of 4
    assert r["median_rel_depth_diff"] == pytest.approx(0.005)
    assert r["sky_agreement"] == pytest.approx(0.75)
    assert r["semantic_agreement"] == pytest.approx(0.5)


def test_targets_hand_computed():
    cpu = {
        "threads": 2,
        "cores_available": 2,
        "views_per_s_by_modality": {"depth": 260.0, "semantic": 210.0, "all": 200.0},
    }
    res = {"speedup": 25.0, "backends": {"cpu": cpu}}
    t = targets(res)
    assert t["speedup_met"] is True and t["cpu_per_core_met"] is True and t["cpu_uses_all_cores"] is True
    assert t["cpu_views_per_s_per_core"] == {"depth": 130.0, "semantic": 105.0, "all": 100.0}
    cpu["views_per_s_by_modality"]["semantic"] = 190.0  # 95 per core: one modality short is a miss
    res["speedup"] = 19.0
    t = targets(res)
    assert t["speedup_met"] is False and t["cpu_per_core_met"] is False
    assert targets({"backends": {}})["cpu_per_core_met"] is None


def test_missing_bench_module_raises_not_built(monkeypatch, capsys):
    monkeypatch.setitem(bench.BENCHES, "nosuch", "crosslocate.pipelines.bench_nosuch_xyz")
    code = main(["bench", "nosuch"])
    assert code == 2
    assert "not built" in capsys.readouterr().err


def test_bench_render_rejects_unknown_backend(capsys):
    code = main(["bench", "render", "--backends", "cpu,vulkan"])
    assert code == 2
    assert "vulkan" in capsys.readouterr().err


@pytest.mark.realdem
@pytest.mark.egl
@pytest.mark.slow
def test_bench_render_end_to_end(srtm_dir, tmp_path, capsys):
    pytest.importorskip("crosslocate.render.terrain")
    pytest.importorskip("crosslocate.render.backends.heightfield_numba")
    out = tmp_path / "render.json"
    args = ["bench", "render", "--srtm", str(srtm_dir), "--positions", "1", "--size", "96"]
    code = main([*args, "--range-km", "20", "--datasets", "srtm", "--out", str(out)])
    assert code == 0
    assert str(out) in capsys.readouterr().out
    rec = json.loads(out.read_text())
    for name in ("cpu", "pyrender"):
        b = rec["backends"][name]
        assert b["views_per_s"] > 0 and b["threads"] >= 1
        assert set(b["views_per_s_by_modality"]) == {"depth", "silhouette", "semantic", "all"}
    assert rec["backends"]["cpu"]["gl_renderer"] is None  # no OpenGL context: nothing to name
    renderer = rec["backends"]["pyrender"]["gl_renderer"]  # the device that drew, e.g. llvmpipe or a GPU
    assert isinstance(renderer, str) and " (OpenGL " in renderer and not renderer.startswith(" (")
    assert rec["speedup"] == pytest.approx(
        rec["backends"]["cpu"]["views_per_s"] / rec["backends"]["pyrender"]["views_per_s"]
    )
    assert set(rec["targets"]) >= {"speedup_met", "cpu_per_core_met", "cpu_views_per_s_per_core"}
    assert rec["agreement"]["sky_agreement"] > 0.99
    assert rec["agreement"]["median_rel_depth_diff"] < 0.01
    assert rec["render_config"]["range_m"] == 20_000.0
    assert rec["environment"]["cpu_count"] == os.cpu_count()
