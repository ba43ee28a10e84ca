"""crosslocate report: a fabricated run folder -> report.html, checked by hand and rendered in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyproj import Transformer

from crosslocate.datasets.queries import load_query_csv
from crosslocate.datasets.shards import open_database
from crosslocate.errors import ConfigError
from crosslocate.pipelines.cli import main

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _table(r1, r5, r10, r100):
    return {"20": {"1": 0.0, "5": 0.0, "10": 0.0, "100": 0.0}, "1000": {"1": r1, "5": r5, "10": r10, "100": r100}}


def make_run(tmp: Path, db: Path, qcsv: Path) -> Path:
    """A run folder as `crosslocate benchmark` leaves it, with 3 queries whose outcome is known by construction."""
    run = tmp / "run"
    run.mkdir()
    with open_database(db) as d:
        table = d.table()
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    db_xy = np.stack(to_utm.transform(table["lon"], table["lat"]), axis=1)
    # query 0: 500 m from view 20 (ranked first) -> hit@1; query 1: 3 km east of view 40, nothing within 1 km
    # -> miss; query 2: 600 m from view 8, which is ranked 3rd behind two far views -> hit@5
    q_xy = np.stack([db_xy[20] + (300.0, 400.0), db_xy[40] + (3000.0, 0.0), db_xy[8] + (0.0, 600.0)])
    far = np.argsort(-np.linalg.norm(db_xy - q_xy[2], axis=1))
    ranking = np.stack([
        np.argsort(np.linalg.norm(db_xy - q_xy[0], axis=1))[:10],
        np.argsort(np.linalg.norm(db_xy - q_xy[1], axis=1))[:10],
        np.array([far[0], far[1], 8, *far[2:9]]),
    ])  # fmt: skip
    queries = load_query_csv(qcsv)[:3]
    np.savez(
        run / "rankings.npz", ranking=ranking, distance_m=np.linalg.norm(db_xy[ranking] - q_xy[:, None], axis=2),
        query_image=np.array([q.image for q in queries]), query_xy=q_xy, query_yaw_deg=np.array([10.0, 200.0, 350.0]),
        query_fov_deg=np.array([40.0, 50.0, 60.0]), spot=np.arange(3), db_xy=db_xy,
        db_yaw_deg=table["yaw_deg"].astype(np.float64), db_dirs=np.array([str(db)]), db_part=np.zeros(64, np.int64),
        db_index=np.arange(64), modality=np.array("depth"),
    )  # fmt: skip
    Image.fromarray(np.tile(np.linspace(0, 255, 60, dtype=np.uint8), (40, 1))).save(run / "recall_curves.png")
    results = {
        "recall": _table(1 / 3, 2 / 3, 2 / 3, 1.0), "recall_oriented": _table(0.0, 1 / 3, 1 / 3, 1.0),
        "recall_ci95": {"1000": {"1": [0.0, 1.0], "5": [1 / 3, 1.0]}}, "chance": _table(0.05, 0.2, 0.3, 0.9),
        "baselines": {"untrained": _table(0.0, 0.1, 0.2, 0.8), "horizon": _table(0.5, 0.6, 0.7, 1.0)},
        "n_queries": 3, "n_spots": 3, "n_database": 64, "modality": "depth", "preset": "tiny", "region": "testregion",
        "config": {"net": {"backbone": "vgg16", "marker": "cfg-marker-123"}}, "environment": {"cpu_count": 2},
        "plots": [str(run / "recall_curves.png")], "rankings": "rankings.npz",
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    return run


def test_report_content(export_data, capsys):
    db, qcsv, tmp, _ = export_data
    run = make_run(tmp, db, qcsv)
    assert main(["report", str(run)]) == 0
    page = (run / "report.html").read_text()
    assert capsys.readouterr().out.strip() == str(run / "report.html")
    assert re.findall(r"class='(?:hit|miss)'>([^<]+)<", page) == ["hit@1", "miss", "hit@5"]
    srcs = re.findall(r"src='([^']*)'", page)
    assert len(srcs) == 3 + 3 * 5 + 1 and all(s.startswith("data:image/") for s in srcs)
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    assert "<td>33.3%</td>" in page and "<td>6.7×</td>" in page  # R@1 1/3 and 1/3 / 0.05
    assert "0.50 km" in page and "3.00 km" in page and "0.60 km" in page  # top-1 distances of the 3 queries
    assert "cfg-marker-123" in page and "cpu_count" in page


def test_markdown_table_is_the_readme_table_from_results(export_data, capsys):
    db, qcsv, tmp, _ = export_data
    run = make_run(tmp, db, qcsv)
    assert main(["report", str(run / "results.json"), "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0] == "| within 1 km | R@1 | R@5 | R@10 | R@100 |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md[2:]}
    assert rows["ours (depth)"] == "| ours (depth) | 33.3% | 66.7% | 66.7% | 100.0% |"
    assert rows["… 95% interval (spots resampled)"].startswith(
        "| … 95% interval (spots resampled) | 0.0–100.0% | 33.3–100.0%"
    )
    assert rows["horizon"] == "| horizon | 50.0% | 60.0% | 70.0% | 100.0% |"
    assert rows["ours / chance"] == "| ours / chance | 6.7× | 3.3× | 2.2× | 1.1× |"  # (1/3) / 0.05 etc.
    assert not (run / "report.html").exists()  # --markdown writes nothing
    # a run that recorded how much terrain its splits share says so under the table
    res = json.loads((run / "results.json").read_text())
    res["shared_terrain"] = {
        "range_m": 35000.0,
        "test": {"area_km2": 1.0, "seen_by_train": 1.0, "view_terrain_in_train": 0.588},
    }
    (run / "results.json").write_text(json.dumps(res))
    assert main(["report", str(run), "--markdown"]) == 0
    assert (
        capsys.readouterr()
        .out.splitlines()[-1]
        .endswith(
            "views reach 35 km: 100% of the test area lies within reach of training views, and 59% of what "
            "the test views can see is training area."
        )
    )


def test_report_without_results_is_a_clear_error(export_data, capsys):
    db, qcsv, tmp, _ = export_data
    assert main(["report", str(tmp)]) == 2
    assert "no results.json" in capsys.readouterr().err
    run = make_run(tmp, db, qcsv)
    with np.load(run / "rankings.npz") as z:
        np.savez(run / "rankings.npz", **{k: z[k] for k in z.files if k != "db_index"})
    assert main(["report", str(run)]) == 2
    assert "rankings.npz: missing db_index" in capsys.readouterr().err


NO_CHROMIUM = "chromium is not installed (apt-get install -y chromium; .ci/run does it)"
#: Appended to a copy of a page: once loaded, "<images>/<broken images>" goes into the DOM as data-probe.
PROBE = ("<script>addEventListener('load',()=>{const b=[...document.images].filter(i=>!(i.complete&&i.naturalWidth>0));"
         "document.body.setAttribute('data-probe',document.images.length+'/'+b.length);});</script></body>")  # fmt: skip


def _chromium_flags(tmp_path: Path) -> list[str]:
    assert CHROMIUM is not None
    return [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--enable-logging=stderr",
            "--v=0", "--virtual-time-budget=5000", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip


def chromium_check(page: str, tmp_path: Path) -> tuple[str | None, list[str]]:
    """Load ``page`` (HTML text, with the probe appended) in headless Chromium: ("images/broken", console lines).

    Console messages (console.error, uncaught exceptions) reach Chromium's stderr log as ``:CONSOLE`` lines;
    a failed image load does not (checked by the positive control), hence the DOM probe.
    """
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", PROBE))
    dom = subprocess.run([*_chromium_flags(tmp_path), "--dump-dom", checked.as_uri()], capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    probe = re.search(r'data-probe="([0-9]+/[0-9]+)"', dom.stdout)
    return (probe.group(1) if probe else None), [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_chromium_checker_catches_console_errors_and_broken_images(tmp_path):
    """Positive control of :func:`chromium_check`: a page that logs an error, throws, and references a missing image."""
    scripts = "<script>console.error('control-marker-7f3')</script><script>undefinedControlFn()</script>"
    img = "<img src='no-such-picture.png' alt='missing'>"
    page = f"<!doctype html><html><body><p>control</p>{img}{scripts}</body></html>"
    probe, console = chromium_check(page, tmp_path)
    assert probe == "1/1"  # the image counted, and counted as broken
    assert any("control-marker-7f3" in line for line in console), console
    assert any("undefinedControlFn" in line for line in console), console
    probe, console = chromium_check(page.replace(scripts, ""), tmp_path)
    assert console == [] and probe == "1/1"  # without the scripts: no console line, the image still caught


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_report_renders_in_headless_chromium(export_data, tmp_path):
    db, qcsv, tmp, _ = export_data
    run = make_run(tmp, db, qcsv)
    page = Path(main(["report", str(run)]) == 0 and run / "report.html").read_text()
    probe, console = chromium_check(page, tmp_path)
    assert probe == "19/0"  # 19 images, none broken
    assert not console, console
    shot = tmp_path / "shot.png"
    res = subprocess.run([*_chromium_flags(tmp_path), f"--screenshot={shot}", "--window-size=1200,900",
                          (run / "report.html").as_uri()], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("L"), np.float64)
    assert px.shape == (900, 1200) and px.std() > 10 and (px < 200).mean() > 0.02  # text, charts and pictures drawn


def test_markdown_spread_over_runs(export_data, tmp_path, capsys):
    db, qcsv, tmp, _ = export_data
    run = make_run(tmp, db, qcsv)
    other = json.loads((run / "results.json").read_text())
    other["recall"] = _table(2 / 3, 2 / 3, 2 / 3, 1.0)  # R@1 1/3 in the first run, 2/3 here
    (tmp_path / "b.json").write_text(json.dumps(other))
    assert main(["report", str(run), str(tmp_path / "b.json"), "--markdown"]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in capsys.readouterr().out.splitlines()}
    # mean 50.0, sample sd of (33.3, 66.7) = 23.6
    assert rows["ours (depth)"].startswith("| ours (depth) | 50.0 ± 23.6% | 66.7 ± 0.0%")
    assert rows["horizon"].startswith("| horizon | 50.0 ± 0.0%")


def test_best_pipeline_row_and_validation_note(export_data, capsys):
    db, qcsv, tmp, _ = export_data
    run = make_run(tmp, db, qcsv)
    res = json.loads((run / "results.json").read_text())
    res["pipeline_selection"] = {
        "chosen": "network + re-ranking",
        "rule": "recall@1 within 1 km, ties by recall@10",
        "scores": {"network": {"1": 0.25, "10": 0.5}, "network + re-ranking": {"1": 0.5, "10": 0.75}},
        "split": "val",
        "n_queries": 4,
        "n_database": 48,
        "weight": 16.0,
        "panorama": True,
        "scores_by_setting": {"view, weight 16": {}, "panorama, weight 16": {}},
    }
    res["best_pipeline"] = {"name": "network + re-ranking", "recall": _table(0.2, 0.4, 0.6, 0.8)}
    (run / "results.json").write_text(json.dumps(res))
    assert main(["report", str(run), "--markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines}
    assert rows["best pipeline, chosen on validation"] == (
        "| best pipeline, chosen on validation | 20.0% | 40.0% | 60.0% | 80.0% |"
    )
    assert lines[-1].startswith("The best pipeline was chosen on the validation split (4 photos, 48 views)")
    assert "network + re-ranking 50.0% / 75.0%" in lines[-1]
    assert (
        "setting was chosen with it among 2 (view or position panorama x fusion weight): panorama, weight 16;"
        in lines[-1]
    )


def _compare_run(
    tmp: Path, name: str, pooling: str, seed: int, r1: float, best_r1: float, query_set: str = "q1"
) -> str:
    res = {
        "recall": _table(r1, 0.5, 0.6, 0.9), "chance": _table(0.01, 0.05, 0.1, 0.5), "modality": "depth",
        "baselines": {"horizon_searched": _table(0.3, 0.5, 0.7, 0.95)},
        "best_pipeline": {"name": "hybrid", "recall": _table(best_r1, 0.6, 0.8, 0.95)},
        "pipeline_selection": {"chosen": "hybrid", "scores": {"network": {"1": 0.0, "10": 0.1}, "hybrid": {"1": best_r1 / 2, "10": 0.5}}},
        "region": "demo", "query_set": {"id": query_set}, "database": {"what": "test views", "n_views": 100},
        "config": {"net": {"pooling": pooling, "init_seed": seed, "width": 0.25}, "train": {"seed": seed, "epochs": 12}},
    }  # fmt: skip
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(res))
    return str(path)


def test_compare_groups_seeds_by_config(tmp_path, capsys):
    files = [
        _compare_run(tmp_path, "mac0", "mac", 0, 0.10, 0.30),
        _compare_run(tmp_path, "vlad0", "netvlad", 0, 0.20, 0.40),
        _compare_run(tmp_path, "mac1", "mac", 1, 0.20, 0.50),
    ]
    assert main(["report", "--compare", *files]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[2:]}
    assert set(rows) == {"net.pooling=mac", "net.pooling=netvlad", "horizon_searched (baseline, all runs)"}
    # mac: validation R@1 of the chosen pipeline (15, 25) -> 20.0 ± 7.1; test R@1 (10, 20) -> 15.0 ± 7.1 (sample
    # sd); best (30, 50) -> 40.0 ± 14.1; the seeds are not a configuration
    assert rows["net.pooling=mac"] == (
        "| net.pooling=mac | 2 | 20.0 ± 7.1% | 50.0 ± 0.0% | 15.0 ± 7.1% | 60.0 ± 0.0% | 90.0 ± 0.0% | 40.0 ± 14.1% | 80.0 ± 0.0% |"
    )
    assert rows["net.pooling=netvlad"].startswith("| net.pooling=netvlad | 1 | 20.0% | 50.0% | 20.0% | 60.0% |")
    assert rows["horizon_searched (baseline, all runs)"] == (
        "| horizon_searched (baseline, all runs) | — | — | — | 30.0% | 70.0% | 95.0% | 30.0% | 70.0% |"
    )


def test_compare_fills_fields_older_runs_lack_with_their_defaults(tmp_path, capsys):
    """A run made before ``train.extra_photos`` existed trained with its default (0): it groups with a
    new run at 0, and the run with training-only photos is labelled against 0, not None."""
    old = _compare_run(tmp_path, "old", "mac", 0, 0.10, 0.30)
    new, more = (_compare_run(tmp_path, n, "mac", s, 0.20, 0.50) for n, s in (("new", 1), ("more", 2)))
    for path, extra in ((new, 0), (more, 2400)):
        res = json.loads(Path(path).read_text())
        res["config"]["train"]["extra_photos"] = extra
        Path(path).write_text(json.dumps(res))
    assert main(["report", "--compare", old, new, more]) == 0
    rows = [line.split(" | ")[:2] for line in capsys.readouterr().out.splitlines()[2:]]
    assert rows[:2] == [["| train.extra_photos=0", "2"], ["| train.extra_photos=2400", "1"]]


def test_compare_refuses_runs_on_other_data(tmp_path, capsys):
    a = _compare_run(tmp_path, "a", "mac", 0, 0.1, 0.3)
    b = _compare_run(tmp_path, "b", "netvlad", 0, 0.2, 0.4, query_set="q2")
    assert main(["report", "--compare", a, b]) != 0
    err = capsys.readouterr().err
    assert "b.json was scored on other data than" in err and "a.json" in err


def test_compare_plot_goes_with_compare(tmp_path, capsys):
    a = _compare_run(tmp_path, "a", "mac", 0, 0.1, 0.3)
    b = _compare_run(tmp_path, "b", "netvlad", 0, 0.2, 0.4)
    assert main(["report", "--compare", a, b, "--plot", str(tmp_path / "c.png")]) == 0
    assert (tmp_path / "c.png").stat().st_size > 1000
    assert main(["report", a, "--markdown", "--plot", str(tmp_path / "d.png")]) != 0
    assert "--plot goes with --compare" in capsys.readouterr().err and not (tmp_path / "d.png").exists()


def test_training_curves_pool_seeds_by_file_stem(tmp_path, capsys):
    """X, X-seed1 are one configuration; per epoch the seeds' values in percent; the CLI prints each
    configuration's best mean epoch (hand-computed) and draws the curves."""
    from crosslocate.pipelines.report import training_curves

    def history(values):
        return [{"epoch": e, "val_recall@10_1km": v, "loss": 1.0} for e, v in enumerate(values)]

    runs = {"a": [0.1, 0.3, 0.2], "a-seed1": [0.1, 0.1, 0.4], "b": [0.2, 0.5], "c": [0.0, 0.6, 0.2, 0.3, 0.5]}
    curves = training_curves([(f"{k}.json", history(v)) for k, v in runs.items()])
    assert list(curves) == ["a", "b", "c"]
    assert curves["a"] == {0: [10.0, 10.0], 1: [30.0, 10.0], 2: [20.0, 40.0]}
    assert curves["b"] == {0: [20.0], 1: [50.0]}
    files = []
    for k, v in runs.items():
        (tmp_path / f"{k}.json").write_text(json.dumps(history(v)))
        files.append(str(tmp_path / f"{k}.json"))
    assert main(["report", "--curves", *files, "--plot", str(tmp_path / "c.png")]) == 0
    rows = capsys.readouterr().out.splitlines()[2:]
    # a: means 10, 20, 30 -> best epoch 2 (30.0%), last 2, second half: epoch 2; b: means 20, 50 -> best 1;
    # c: best epoch 1 (60%), last 4 (50%), second half = epochs 3 and 4: (30 + 50) / 2 = 40%
    assert rows == [
        "| a | 2 | 2 | 30.0% | 2 | 30.0% | 30.0% |",
        "| b | 1 | 1 | 50.0% | 1 | 50.0% | 50.0% |",
        "| c | 1 | 1 | 60.0% | 4 | 50.0% | 40.0% |",
    ]
    assert (tmp_path / "c.png").stat().st_size > 1000
    with pytest.raises(ConfigError, match="b.json: no epoch has 'val_recall@1_1km'"):
        training_curves([("b.json", history([0.1]))], "val_recall@1_1km")
    with pytest.raises(ConfigError, match="x.json: not a training history"):
        training_curves([("x.json", {"epoch": 1})])
    assert main(["report", "--curves", str(tmp_path / "missing")]) != 0
    assert "no metrics.json" in capsys.readouterr().err


def test_confusers_from_results_or_from_the_rankings_of_older_runs(export_data, tmp_path, capsys):
    db, qcsv, _, _ = export_data
    run = make_run(tmp_path, db, qcsv)
    # an older run: no profile in results.json, so the test split's comes from rankings.npz
    assert main(["report", "--confusers", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| run | split | ranking | wrong views | 1-2 km | 2-4 km | 4-8 km | 8-20 km | > 20 km |"
    with np.load(run / "rankings.npz") as z:
        d, q_xy, db_xy = z["distance_m"][:, :10], z["query_xy"], z["db_xy"]
    wrong = d[d > 1000.0]
    far = np.linalg.norm(db_xy[None] - q_xy[:, None], axis=2)
    far = far[far > 1000.0]
    share = lambda x, lo, hi: 100 * np.mean((x > lo) & (x <= hi))  # noqa: E731
    want = " | ".join(f"{share(wrong, lo, hi):.1f}% ({share(far, lo, hi):.1f}%)" for lo, hi in
                      ((1e3, 2e3), (2e3, 4e3), (4e3, 8e3), (8e3, 2e4), (2e4, np.inf)))  # fmt: skip
    assert out[2] == f"| run | test | network top 10 | {wrong.size} | {want} |"
    # query 2's first two answers are the farthest views: at least those two are wrong
    assert wrong.size >= 2
    # a newer run records both splits and both rankings; those are printed as recorded
    prof = {"top_n": 10, "threshold_m": 1000.0, "bins": ["1-2 km", "> 2 km"], "wrong": [0.25, 0.75],
            "database": [0.5, 0.5], "n_wrong": 4}  # fmt: skip
    res = json.loads((run / "results.json").read_text())
    res["pipeline_selection"] = {"network_confusers": prof}
    res["confusers"] = {"network": prof, "horizon_searched": dict(prof, wrong=[1.0, 0.0], n_wrong=2)}
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps(res))
    assert main(["report", "--confusers", str(snap)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2:] == [
        "| snap.json | val | network top 10 | 4 | 25.0% (50.0%) | 75.0% (50.0%) |",
        "| snap.json | test | network top 10 | 4 | 25.0% (50.0%) | 75.0% (50.0%) |",
        "| snap.json | test | horizon_searched top 10 | 2 | 100.0% (50.0%) | 0.0% (50.0%) |",
    ]
    # a results snapshot without profiles has nothing to show: one clear line
    bare = tmp_path / "bare.json"
    bare.write_text((run / "results.json").read_text())
    assert main(["report", "--confusers", str(bare)]) == 2
    assert "no confuser profile" in capsys.readouterr().err
