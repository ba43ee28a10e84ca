"""``crosslocate bench localize`` on the tiny world: database built first, an untrained network, two photos; the
second call embeds only its photo, and the JSON records both calls and where the second one's time went."""

from __future__ import annotations

import json
import time

from crosslocate.pipelines import bench_localize
from crosslocate.pipelines.cli import main


def test_bench_localize_times_a_second_photo(tiny_world, tmp_path, monkeypatch):
    import crosslocate.model.train as model_train

    def in_process(args):  # the real bench starts a process per photo; here main() stands in for it
        t0 = time.perf_counter()
        return main(["-q", *args]), time.perf_counter() - t0, ""

    embedded = []
    real = model_train.extract_descriptors
    monkeypatch.setattr(model_train, "extract_descriptors", lambda net, src, *a, **k: embedded.append(len(src)) or real(net, src, *a, **k))  # fmt: skip
    monkeypatch.setattr(bench_localize, "run_localize", in_process)
    dem, region, _ = tiny_world
    out = tmp_path / "localize.json"
    args = ["bench", "localize", "--region", region, "--dem", dem, "--preset", "tiny", "--work", str(tmp_path / "work"),
            "--scheduler", "sync", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    rec = json.loads(out.read_text())
    n = rec["summary"]["database_views"]
    assert n > 0 and embedded == [n, 1, 1]  # the database once (first call), then each photo alone
    assert [len(c["timings_s"]) for c in rec["calls"]] == [6, 6] and rec["summary"]["network"] == "untrained"
    s = rec["summary"]
    assert s["second_call_s"] == rec["calls"][1]["wall_s"] and s["met"] == (s["second_call_s"] < s["target_s"] == 5.0)
    assert abs(sum(s["second_call_phases_s"].values()) - s["second_call_s"]) < 1e-3
    assert list((tmp_path / "work").glob("*/db/uniform/manifest.json"))  # the database it built stays for the next run
