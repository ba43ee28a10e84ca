"""train / benchmark / localize flows end to end at tiny scale: the real model library (mining, loss,
search, recall) on a fake network, databases and query set (the flows' wiring, caching, results
layout and CLI are what is tested here)."""

from __future__ import annotations

import json
import logging
import os
import sys
import types
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from crosslocate.datasets import views
from crosslocate.datasets.queries import Query
from crosslocate.datasets.schema import SKY_DEPTH_M, SPLIT_CODES, VIEW_DTYPE
from crosslocate.dem.geodesy import aeqd_crs_wkt, transform_xy
from crosslocate.dem.poses import Pose
from crosslocate.errors import ConfigError
from crosslocate.model.checkpoint import check_run_record
from crosslocate.model.config import EvalConfig, RerankConfig
from crosslocate.pipelines import train as flow
from crosslocate.pipelines.cli import main
from crosslocate.pipelines.refine import PIPELINES, pipeline_table

SIZE, GRID, SPACING_M, LON0, LAT0 = 16, 4, 3000.0, 7.5, 46.5
CRS = aeqd_crs_wkt(LON0, LAT0)


def _horizon(p: int, yaw: float) -> np.ndarray:
    az = np.radians((yaw - 30 + 60 * (np.arange(SIZE) + 0.5) / SIZE) % 360)
    xn, yn = (p % GRID) / (GRID - 1), (p // GRID) / (GRID - 1)
    h = (0.3 + 0.7 * xn) * np.sin(az + 1.6 * np.pi * yn) + 0.4 * np.sin(2 * az + np.pi * xn)
    return SIZE / 2 - h * SIZE / 4


def _lonlat(p: int) -> tuple[float, float]:
    lon, lat = transform_xy(SPACING_M * (p % GRID), SPACING_M * (p // GRID), CRS, "EPSG:4326")
    return float(lon), float(lat)


def _split_of(p: int) -> int:
    return SPLIT_CODES["test"] if p % GRID == GRID - 1 else SPLIT_CODES["train"] if p % 2 == 0 else SPLIT_CODES["val"]


class _Db:
    store: ClassVar[dict[str, tuple[np.ndarray, np.ndarray]]] = {}

    def __init__(self, d):
        from crosslocate.datasets.manifest import Manifest

        self._t, self._a = self.store[str(d)]
        self.manifest = Manifest(kind="uniform", region={"name": str(d)}, dem={}, crs_wkt=CRS, grid={}, render={},
                                 shard={}, codecs={}, split={}, layout={"n_shards": 0})  # fmt: skip

    def table(self):
        return self._t.copy()

    def read(self, modality, i):
        return self._a[i]

    def close(self):
        pass


def _make_db(d):
    rows = np.arange(SIZE)[:, None] + 0.5
    table = np.zeros(GRID * GRID * 12, VIEW_DTYPE)
    arr = np.zeros((len(table), SIZE, SIZE), np.float32)
    for i in range(len(table)):
        p, yaw = i // 12, 30.0 * (i % 12)
        lon, lat = _lonlat(p)
        table[i] = (i, p, lon, lat, 1000.0, 0, 0, yaw, 0, 0, 60.0, _split_of(p))
        hz = _horizon(p, yaw)[None]
        arr[i] = np.where(rows > hz, 20_000.0 / (1 + rows - hz), SKY_DEPTH_M)
    _Db.store[str(d)] = (table, arr)
    d.mkdir(parents=True, exist_ok=True)  # localize caches descriptors beside the database
    return d


class _Net(nn.Module):
    def __init__(self, cfg=None):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1))
        self.init_source = "random"

    def forward(self, x):
        return torch.nn.functional.normalize(self.f(x).flatten(1), dim=1)


def _fake(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


def _save(path, net, *, optimizer, epoch, meta, train_net=None):
    torch.save(
        {
            "state": net.state_dict(),
            "train_state": train_net.state_dict() if train_net is not None else None,
            "opt": optimizer.state_dict() if optimizer else None,
            "epoch": epoch,
            "meta": json.dumps(meta, default=str),
        },
        path,
    )


def _read(path, map_location="cpu"):
    s = torch.load(path, map_location=map_location, weights_only=True)
    return {**s, "meta": json.loads(s["meta"])}


def _load(path, net, *, optimizer, map_location, train_net=None):
    s = _read(path, map_location)
    net.load_state_dict(s["state"])
    if train_net is not None:
        train_net.load_state_dict(s["train_state"])
    if optimizer is not None:
        optimizer.load_state_dict(s["opt"])
    return s


def _load_network(path, map_location):
    net = _Net()
    s = _load(path, net, optimizer=None, map_location=map_location)
    return net, s["meta"]


@pytest.fixture
def world(tmp_path, monkeypatch):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "photos").mkdir()
    queries = []
    for n in range(3 * GRID * GRID):
        p = n % (GRID * GRID)
        yaw = float(30.0 * rng.integers(12) + rng.uniform(-8, 8)) % 360
        ground = (np.arange(SIZE)[:, None] + 0.5) > _horizon(p, yaw)[None]
        img = np.where(ground[..., None], [90, 110, 60], [150, 190, 235]).astype(np.uint8)
        path = tmp_path / "photos" / f"{n:03d}.png"
        Image.fromarray(img).save(path)
        lon, lat = _lonlat(p)
        queries.append(Query(str(path), Pose(lon=lon, lat=lat, alt_m=1000.0, yaw_deg=yaw, fov_deg=60.0)))
    train_cfg = types.SimpleNamespace(
        epochs=3,
        batch_size=8,
        lr=1e-3,
        margin=0.1,
        pos_radius_m=20.0,
        pos_yaw_deg=15.0,
        neg_min_dist_m=2000.0,
        n_negatives=4,
        neg_pool_size=4000,
        neg_hardest=100,
        neg_slack=0.2,
        cache_size=None,
        seed=0,
        num_workers=0,
        augment=False,
        device="cpu",
        to_dict=lambda: {"epochs": 3},
    )
    preset = types.SimpleNamespace(
        name="tiny",
        grid=None,
        render=types.SimpleNamespace(size_px=SIZE, fov_deg=60.0, range_m=5_000.0),
        net=types.SimpleNamespace(),
        train=train_cfg,
        eval=EvalConfig(batch_size=32),
    )
    built = []

    def build_database(kind, preset, region, dem_src, out_dir, queries=None, client=None, clip_to_dem=False):
        built.append(kind)
        return _make_db(out_dir)

    monkeypatch.setattr(views, "_open_database", lambda d: _Db(d))
    from crosslocate.datasets import shards

    monkeypatch.setattr(shards, "open_database", lambda d, **kw: _Db(d))
    monkeypatch.setitem(
        sys.modules,
        "crosslocate.pipelines.presets",
        _fake("p", get_preset=lambda name: preset, PRESET_NAMES=("paper", "cpu", "tiny")),
    )
    monkeypatch.setitem(
        sys.modules,
        "crosslocate.pipelines.queries",
        _fake("q", ensure_query_set=lambda region, dem_src, preset, work: queries),
    )
    monkeypatch.setitem(sys.modules, "crosslocate.pipelines.build", _fake("b", build_database=build_database))
    fake_region = types.SimpleNamespace(crs_wkt=CRS, name="demo")
    monkeypatch.setattr("crosslocate.dem.regions.get_region", lambda r: fake_region)
    monkeypatch.setattr("crosslocate.pipelines.context.get_region", lambda r: fake_region)
    # the fake region has no polygon: its shared terrain is given (the geometry is tested in tests/dem)
    shared = {"test": {"area_km2": 9.0, "seen_by_train": 0.25, "view_terrain_in_train": 0.5}}
    monkeypatch.setattr(
        "crosslocate.dem.splits.shared_terrain", lambda region, grid, range_m: {"range_m": range_m, **shared}
    )
    monkeypatch.setattr(
        flow,
        "query_splits",
        lambda qs, reg, grid: np.array([_split_of(qs.index(q) % (GRID * GRID)) for q in qs], np.uint8),
    )
    monkeypatch.setitem(sys.modules, "crosslocate.model.net", _fake("n", build_net=lambda cfg: _Net(cfg)))
    # the network is a fake, so its checkpoints are too (the real ones rebuild a RetrievalNet)
    fake_ckpt = _fake(
        "c",
        save_checkpoint=_save,
        load_checkpoint=_load,
        load_network=_load_network,
        read_checkpoint=_read,
        check_run_record=check_run_record,
    )
    monkeypatch.setitem(sys.modules, "crosslocate.model.checkpoint", fake_ckpt)
    import crosslocate.model

    monkeypatch.setattr(crosslocate.model, "checkpoint", fake_ckpt, raising=False)
    return types.SimpleNamespace(queries=queries, built=built, work=tmp_path / "work", preset=preset)


def test_train_then_benchmark_then_localize(world, capsys, caplog, tmp_path, monkeypatch):
    work = str(world.work)
    assert main(["train", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
    run = world.work / "demo" / "runs" / "tiny"
    assert (run / "checkpoint.pt").exists() and sorted(world.built) == ["compact", "sparse"]
    summary = json.loads((run / "train.json").read_text())
    # training queries: even columns 0 and 2 (x 0..2 of 4; column 3 is test) -> 8 of 16 positions, 3 queries each
    assert summary["n_train_queries"] == 3 * 8 and summary["epochs"] == 3
    assert main(["train", "--region", "demo", "--preset", "tiny", "--work", work]) == 2  # refuses without --resume

    assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
    out = capsys.readouterr().out
    assert "paper (Switzerland, other queries)" in out and "38.66%" in out
    assert "25% of the test area lies within reach of training views; 50% of what test views" in out
    res = json.loads((run / "results.json").read_text())
    # the test split is scored once per configuration: asked again, the run keeps its results
    before = (run / "results.json").read_bytes()
    with caplog.at_level(logging.INFO, logger="crosslocate.pipelines.benchmark"):
        assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
    assert "already scored" in caplog.text and (run / "results.json").read_bytes() == before
    assert "38.66%" in capsys.readouterr().out  # the kept results' table
    assert res["test_evaluations"] == 1 and len((run / "test_evaluations.jsonl").read_text().splitlines()) == 1
    # kept results still get their report: written again from results.json + rankings.npz when it is
    # missing (deleted, or a run from before reports) or older than results.json, never by scoring again
    import crosslocate.pipelines.benchmark as bench_flow

    with monkeypatch.context() as m:
        m.setattr(bench_flow, "benchmark_results", lambda *a, **k: pytest.fail("the test split was scored again"))
        (run / "report.html").unlink()
        assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
        assert str(run / "report.html") in capsys.readouterr().out and "hit@" in (run / "report.html").read_text()
        old = (run / "results.json").stat().st_mtime_ns - 10**9
        os.utime(run / "report.html", ns=(old, old))
        assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
        assert (run / "report.html").stat().st_mtime_ns > old
        fresh = (run / "report.html").stat().st_mtime_ns
        assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
        assert (run / "report.html").stat().st_mtime_ns == fresh  # up to date: left alone
    assert (run / "results.json").read_bytes() == before
    assert len((run / "test_evaluations.jsonl").read_text().splitlines()) == 1
    for key in (
        "recall",
        "chance",
        "baselines",
        "n_queries",
        "n_database",
        "modality",
        "preset",
        "config",
        "init",
        "device",
        "timings",
        "recall_oriented",
        "per_fov",
    ):
        assert key in res, key
    assert res["n_queries"] == 3 * 4 and res["n_database"] == 4 * 12  # test column: 4 positions x 12 yaws
    assert res["n_spots"] == 4  # the 3 photos of a position share a spot
    assert res["environment"]["torch_threads"] == torch.get_num_threads() and res["environment"]["cpu_count"] >= 1
    for t, row in res["recall_ci95"].items():  # spot-bootstrap intervals hold the point estimate
        for n, (lo, hi) in row.items():
            assert lo <= res["recall"][t][n] <= hi, (t, n)
    assert "95% interval" in out and "(4 spots)" in out
    # 4 test positions 3 km apart: within 1 km only the right position counts; by hand chance R@1 = 12/48
    assert res["chance"]["1000"]["1"] == pytest.approx(12 / 48)
    assert set(res["recall"]) == {"20", "100", "1000"} and "untrained" in res["baselines"]
    assert "horizon" in res["baselines"]
    horizon = res["baselines"]["horizon"]
    assert set(horizon) == set(res["recall"]) and set(horizon["1000"]) == set(res["recall"]["1000"])
    # the fake photos show exactly the depth views' horizon (same curve function), so the horizon
    # baseline finds the right position (3 km from the others) for (nearly) every test query
    assert horizon["1000"]["1"] >= 0.9 and horizon["1000"]["1"] > res["chance"]["1000"]["1"]
    assert "horizon" in res["baseline_info"] and res["baseline_info"]["horizon"]["queries_without_horizon"] == 0
    assert "horizon, true pitch/roll (IMU)" in out  # the summary table lists it
    # without the true gravity, 55 tilts and a free elevation offset fit the 16-px skylines of wrong
    # places more often (7 of 12 found, vs 11 with the true gravity), still twice chance; the
    # search itself is checked on exact skylines in tests/model/test_baselines.py
    searched = res["baselines"]["horizon_searched"]
    assert 2 * res["chance"]["1000"]["1"] <= searched["1000"]["1"] <= horizon["1000"]["1"]
    assert "horizon, pitch/roll searched" in out
    info = res["baseline_info"]["horizon_searched"]
    # pitch -10..10 in 5 deg steps, roll -5..5 in 1 deg steps (a 1 px tilt across 16 px is ~7 deg:
    # these skylines hardly fix the roll, so only its presence is checked here)
    assert info["gravity_candidates"] == 5 * 11 and info["subtract_mean"] is True
    assert {"median_abs_pitch_error_deg", "median_abs_roll_error_deg"} <= set(info)
    assert set(res["baselines_oriented"]) == set(res["baselines"]) and "chance_oriented" in res
    # oriented chance by hand: the 12 views of the right position lie 0..330 deg; a query's yaw has
    # 2 or 3 of them within 30 deg (3 only at exactly a multiple of 30), so 2/48 for these queries
    assert res["chance_oriented"]["1000"]["1"] == pytest.approx(2 / 48)
    assert "orientation-restricted" in out
    assert res["query_set"]["source"] == "synthetic" and res["query_set"]["n_queries"] == len(world.queries)
    assert str(run / "report.html") in out and "hit@" in (run / "report.html").read_text()  # crosslocate report
    with np.load(run / res["rankings"]) as rk:  # per-query rankings for the report, consistent with the recall
        assert rk["ranking"].shape == (12, 48) and rk["db_index"].shape == (48,)
        assert (rk["distance_m"][:, 0] <= 1000).mean() == pytest.approx(res["recall"]["1000"]["1"])
        top10 = rk["distance_m"][:, :10]
    # where the wrong top-10 answers lie: as many as the ranking's misses, shares summing to one
    conf = res["confusers"]
    assert set(conf) == {"network", "horizon_searched"} and conf["network"]["n_wrong"] == int((top10 > 1000).sum())
    assert sum(conf["network"]["wrong"]) == pytest.approx(1.0) and sum(conf["network"]["database"]) == pytest.approx(
        1.0
    )
    refined = res["refined"]  # skyline re-ranking of the top K and place voting
    assert set(refined["reranked"]["recall"]) == set(res["recall"])
    # the fake photos show the depth views' skyline: re-ranking keeps (nearly) every right position first
    assert refined["reranked"]["recall"]["1000"]["1"] >= max(0.9, res["recall"]["1000"]["1"])
    # the first place read off a view ranking is its first view's position: same R@1
    assert refined["place"]["reranked_views_as_places"]["1000"]["1"] == refined["reranked"]["recall"]["1000"]["1"]
    assert refined["place"]["plain_views_as_places"]["1000"]["1"] == res["recall"]["1000"]["1"]
    assert refined["place"]["n_places"] == 4 and refined["cost_s_per_query"]["rerank"] > 0
    assert "skyline re-ranking" in out and "places: plain voting" in out
    assert "ours + skyline re-ranking" in (run / "report.html").read_text()  # and the HTML report

    # rankings.npz also keeps the horizon baselines' rankings (they do not depend on the network): scored
    # again from the file, each gives the reported table; a kept run from before them gets them added
    # by searching the baselines again, without scoring the network or logging a test evaluation
    from crosslocate.model.evaluate import recall_at_n, retrieved_distances

    def saved_tables():
        with np.load(run / res["rankings"]) as rk:
            arrays = {k: rk[k] for k in rk.files}
        tables = {
            name: recall_at_n(retrieved_distances(arrays[f"ranking_{name}"], arrays["query_xy"], arrays["db_xy"]),
                              (1000.0,), (1, 5, 10))[1000.0]
            for name in ("horizon", "horizon_searched") if f"ranking_{name}" in arrays
        }  # fmt: skip
        return arrays, tables

    arrays, tables = saved_tables()
    for name, table in tables.items():
        assert table == {n: pytest.approx(res["baselines"][name]["1000"][str(n)], abs=1e-12) for n in (1, 5, 10)}
    assert set(tables) == {"horizon", "horizon_searched"}
    # and every refined pipeline's distances to what it ranks (views, or voted place centres), each
    # giving its reported table; the best pipeline is then paired with the baseline photo by photo
    from crosslocate.pipelines.rankings import pipeline_key

    refined_names = [name for name in PIPELINES if name != "network"]
    for name in refined_names:
        want = pipeline_table(res, name)["1000"]  # voted: up to 4 places, so N <= 4
        got = recall_at_n(arrays[pipeline_key(name)], (1000.0,), tuple(int(n) for n in want))[1000.0]
        assert len(want) >= 2 and got == {int(n): pytest.approx(r, abs=1e-12) for n, r in want.items()}, name
    assert main(["report", "--paired", str(run), "--pipeline", "best", "--json", str(tmp_path / "p.json")]) == 0
    paired = json.loads((tmp_path / "p.json").read_text())
    assert paired["a"] == f"tiny ({res['best_pipeline']['name']})" and paired["b"] == "horizon_searched"
    best = pipeline_table(res, res["best_pipeline"]["name"])["1000"]
    assert paired["stats"]["1"]["a"] == pytest.approx(best["1"], abs=1e-12)
    assert paired["stats"]["1"]["b"] == pytest.approx(res["baselines"]["horizon_searched"]["1000"]["1"], abs=1e-12)
    np.savez(run / res["rankings"], **{k: v for k, v in arrays.items() if not k.startswith("ranking_")})
    with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="crosslocate.pipelines.rankings"):
        m.setattr(bench_flow, "benchmark_results", lambda *a, **k: pytest.fail("the test split was scored again"))
        assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
    assert "predates the baselines' rankings" in caplog.text
    again, _ = saved_tables()
    for name in ("horizon", "horizon_searched"):
        assert np.array_equal(again[f"ranking_{name}"], arrays[f"ranking_{name}"])
    assert (run / "results.json").read_bytes() == before
    assert len((run / "test_evaluations.jsonl").read_text().splitlines()) == 1
    # a table the search no longer reproduces (here: results.json edited) leaves the file without it
    np.savez(run / res["rankings"], **{k: v for k, v in arrays.items() if k != "ranking_horizon"})
    edited = json.loads(before)
    edited["baselines"]["horizon"]["1000"]["1"] += 0.5
    (run / "results.json").write_text(json.dumps(edited))
    caplog.clear()
    with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="crosslocate.pipelines.rankings"):
        m.setattr(bench_flow, "benchmark_results", lambda *a, **k: pytest.fail("the test split was scored again"))
        assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", work]) == 0
    assert "the horizon ranking searched again does not reproduce" in caplog.text
    with np.load(run / res["rankings"]) as rk:
        assert "ranking_horizon" not in rk.files and "ranking_horizon_searched" in rk.files
    # the horizon search's ranking read as places: its first place is its first view's position
    assert refined["place"]["horizon_searched_views_as_places"]["1000"]["1"] == searched["1000"]["1"]
    hybrid = refined["hybrid"]  # the network's and the horizon search's candidates, re-ranked together
    assert hybrid["candidates"] == ["network", "horizon_searched"] and hybrid["k_each"] == 100
    # every query's union holds the 48 test views at most, and at least the network's 48 (K = the database)
    assert hybrid["mean_candidates"] == 48.0
    assert hybrid["reranked"]["recall"]["1000"]["1"] >= 0.9
    assert hybrid["place"]["reranked_views_as_places"]["1000"]["1"] == hybrid["reranked"]["recall"]["1000"]["1"]
    # the pipeline is chosen on the validation split (its own queries and views), then reported on test
    choice = res["pipeline_selection"]
    assert choice["split"] == "val" and choice["n_database"] > 0 and choice["n_queries"] > 0
    assert choice["network_confusers"]["top_n"] == 10 and len(choice["network_confusers"]["wrong"]) == 5
    assert set(choice["scores"]) == set(PIPELINES) and choice["chosen"] in PIPELINES
    assert choice["scores"][choice["chosen"]]["1"] == max(v["1"] for v in choice["scores"].values())
    assert res["best_pipeline"] == {"name": choice["chosen"], "recall": pipeline_table(res, choice["chosen"])}
    # the re-ranking setting is chosen with it on validation, and the test split is re-ranked with it
    rc = RerankConfig()
    assert choice["weight"] in rc.weight_grid and choice["panorama"] in rc.panorama_grid
    assert len(choice["scores_by_setting"]) == len(rc.weight_grid) * len(rc.panorama_grid)
    assert refined["config"]["rerank"]["weight"] == choice["weight"] == refined["rerank_info"]["weight"]
    assert refined["config"]["rerank"]["panorama"] == choice["panorama"] == refined["rerank_info"]["panorama"]
    assert "best pipeline, chosen on validation" in out
    assert res["evaluation_key"]["pipelines"]["names"] == list(PIPELINES)  # a new pipeline is a new configuration
    assert len(list((run / "descriptors").glob("*.npy"))) == 6  # test and val: database and queries
    for png in res["plots"]:
        assert png.endswith(".png")
    mosaic = [p for p in res["plots"] if p.endswith("retrieval_mosaic.png")]
    assert len(mosaic) == 1 and (run / "retrieval_mosaic.png").is_file()
    from PIL import Image

    with Image.open(mosaic[0]) as im:
        assert im.width > im.height > 50  # 4 query rows x (1 query + 5 retrieved) columns

    photo = world.queries[3].image
    assert (
        main(
            [
                "localize",
                photo,
                "--db",
                str(world.work / "demo" / "db" / "heldout"),
                "--checkpoint",
                str(run / "checkpoint.pt"),
                "--fov",
                "50",
                "-k",
                "5",
                "--out",
                str(tmp_path / "loc"),
            ]
        )
        == 0
    )
    loc = json.loads((tmp_path / "loc" / "localize.json").read_text())
    assert [c["rank"] for c in loc["candidates"]] == [1, 2, 3, 4, 5]
    d = [c["descriptor_distance"] for c in loc["candidates"]]
    assert d == sorted(d) and (tmp_path / "loc" / "localize_map.png").exists()
    # the database descriptors live beside the database: a second photo, another --out, reuses them
    db_cache = world.work / "demo" / "db" / "heldout" / "descriptors"
    assert len(list(db_cache.glob("db-*.npy"))) == 1
    calls = []
    import crosslocate.model.train as model_train

    real = model_train.extract_descriptors
    monkeypatch.setattr(model_train, "extract_descriptors", lambda *a, **k: calls.append(k) or real(*a, **k))
    args = ["localize", world.queries[5].image, "--db", str(db_cache.parent), "--checkpoint",
            str(run / "checkpoint.pt"), "--fov", "50", "-k", "3", "--out", str(tmp_path / "loc2")]  # fmt: skip
    assert main(args) == 0
    assert len(calls) == 1  # only the photo was embedded (the database came from the cache)
    (tmp_path / "afile").write_text("x")
    assert main([*args[:-1], str(tmp_path / "afile")]) == 2  # -o on an existing file: refused up front
    assert "is an existing file" in capsys.readouterr().err


def test_benchmark_refuses_an_unfinished_run_and_another_query_set(world, capsys):
    work = str(world.work)
    args = ["--region", "demo", "--preset", "tiny", "--work", work]
    assert main(["train", *args]) == 0
    run = world.work / "demo" / "runs" / "tiny"
    ckpt = run / "checkpoint.pt"
    saved = torch.load(ckpt, weights_only=True)
    meta = json.loads(saved["meta"])
    assert meta["finished"] is True and meta["epochs_planned"] == 3 and meta["query_set"]["n_queries"] == 48

    def rewrite(**changes):
        torch.save({**saved, "meta": json.dumps({**meta, **changes})}, ckpt)

    rewrite(finished=False)  # as if killed after epoch 2 of 3
    assert main(["benchmark", *args]) == 2
    assert "stopped after epoch" in capsys.readouterr().err and not (run / "results.json").exists()
    rewrite(query_set={**meta["query_set"], "id": "0" * 64})
    assert main(["benchmark", *args]) == 2
    assert "another query set" in capsys.readouterr().err
    rewrite(run_id="another run")  # best.pt no longer belongs to checkpoint.pt's run
    assert main(["benchmark", *args]) == 2
    assert "another training run" in capsys.readouterr().err
    rewrite()
    assert main(["benchmark", *args]) == 0 and (run / "results.json").is_file()
    # one photo changes: the query set is another one, the trained run is refused
    photo = world.queries[0].image
    from PIL import Image

    Image.new("RGB", (SIZE, SIZE), (1, 2, 3)).save(photo)
    assert main(["benchmark", *args]) == 2
    assert "another query set" in capsys.readouterr().err
    assert main(["train", *args, "--resume"]) == 2  # nor is it continued on the new photos
    assert "another query set" in capsys.readouterr().err


def test_benchmark_evaluates_with_the_presets_eval_config(world, monkeypatch, capsys):
    """Thresholds, N, yaw limit, FOV bins and the index kind of EvalConfig reach every table."""
    from crosslocate.model import search

    kinds = []
    real = search.build_index

    def spy(db, kind="flat", *args, **kwargs):
        kinds.append(kind)
        return real(db, kind, *args, **kwargs)

    monkeypatch.setattr(search, "build_index", spy)
    world.preset.eval = EvalConfig(
        batch_size=32, thresholds_m=(500.0, 4000.0), max_n=7, orient_max_yaw_deg=10.0, fov_bins_deg=(0.0, 90.0),
        index="hnsw",
    )  # fmt: skip
    assert main(["benchmark", "--region", "demo", "--preset", "tiny", "--work", str(world.work)]) == 0
    res = json.loads((world.work / "demo" / "runs" / "tiny" / "results.json").read_text())
    assert kinds and set(kinds) == {"hnsw"}  # the network's and the untrained network's searches
    tables = [res["recall"], res["recall_oriented"], res["chance"], res["chance_oriented"]]
    tables += [*res["baselines"].values(), *res["baselines_oriented"].values()]
    for table in tables:
        assert set(table) == {"500", "4000"} and set(table["500"]) == {str(n) for n in range(1, 8)}
    assert set(res["per_fov"]) == {"0-90"} and res["oriented_max_yaw_deg"] == 10.0
    assert set(res["recall_ci95"]["4000"]) == {"1", "5"}  # the interval N values up to K = 7
    # 4 test positions 3 km apart on a line, 12 yaws each, 3 queries each: within 4 km a query's own
    # position and its neighbours count, 24 of 48 views at the line's 2 ends, 36 at the 2 middle ones
    assert res["chance"]["4000"]["1"] == pytest.approx((6 * 24 + 6 * 36) / 12 / 48)
    # oriented: a query's yaw is within 8 deg of one database yaw, so within 10 deg one view per
    # counted position: (6 * 2 + 6 * 3) / 12 / 48 at 4 km, 1/48 at 500 m (its own position only)
    assert res["chance_oriented"]["4000"]["1"] == pytest.approx((6 * 2 + 6 * 3) / 12 / 48)
    assert res["chance_oriented"]["500"]["1"] == pytest.approx(1 / 48)
    assert "R@1 4km" in capsys.readouterr().out  # no 1 km threshold: the table uses the largest


def test_workers_reach_every_loader_of_training_and_the_benchmark(world, monkeypatch):
    """``--workers N`` sets the DataLoader workers of training (mining cache, tuples, validation) and of
    the benchmark's descriptors, and keeps the run folder: it is where views are read, not what is learned."""
    import dataclasses

    import crosslocate.model.train as model_train

    fields = {k: v for k, v in vars(world.preset.train).items() if k != "to_dict"}
    world.preset.train = dataclasses.make_dataclass("TC", list(fields), frozen=True)(**fields)
    seen = []
    real = model_train.DataLoader

    def loader(*args, num_workers=0, **kwargs):
        seen.append(num_workers)
        return real(*args, num_workers=0, **kwargs)  # the fake database is not meant to cross a fork

    monkeypatch.setattr(model_train, "DataLoader", loader)
    args = ["--region", "demo", "--preset", "tiny", "--work", str(world.work)]
    assert main(["train", *args, "--workers", "3"]) == 0
    run = world.work / "demo" / "runs" / "tiny"
    assert seen and set(seen) == {3}
    assert json.loads((run / "train.json").read_text())["train"]["num_workers"] == 3
    seen.clear()
    assert main(["benchmark", *args, "--workers", "2"]) == 0  # the same run folder: no training again
    assert seen and set(seen) == {2} and (run / "results.json").is_file()


def test_bench_search_overlap_recall_by_hand():
    from crosslocate.pipelines import bench_search

    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, 9], [5, 6, 7, 8]])
    assert bench_search.overlap_recall(approx, exact) == pytest.approx((2 / 4 + 1) / 2)
    db, q = bench_search.synthetic_descriptors(100, 7, 16, np.random.default_rng(0))
    assert db.shape == (100, 16) and q.shape == (7, 16)
    assert np.allclose(np.linalg.norm(db, axis=1), 1, atol=1e-5)


def test_training_only_photos_join_the_training_split_and_its_databases_only(tmp_path, monkeypatch):
    """``--train-photos N``: a second synthetic set drawn with the training-only settings in its own
    folder; it joins the training photos and places sparse/compact views, while the query set's record
    (what val and test are scored on) and the heldout database's photos stay those of the query set."""
    from crosslocate.pipelines import queries as qmod
    from crosslocate.pipelines.context import RunContext
    from crosslocate.pipelines.presets import NetOptions
    from crosslocate.pipelines.train import TRAINING_PHOTOS_SEED_OFFSET

    def photos(stem, n):
        (tmp_path / stem).mkdir()
        out = []
        for i in range(n):
            (tmp_path / stem / f"{i}.png").write_bytes(f"{stem} {i}".encode())  # the record hashes the bytes
            out.append(Query(str(tmp_path / stem / f"{i}.png"), Pose(lon=7.9, lat=46.5, alt_m=1.0, yaw_deg=i)))
        return out

    main_set, extra_set, calls = photos("main", 6), photos("extra", 4), []

    def ensure_query_set(region, dem_src, preset, work, *, overwrite=False, grid=None, out_dir=None):
        calls.append((preset, grid, out_dir))
        return extra_set if out_dir is not None else main_set

    monkeypatch.setattr(qmod, "ensure_query_set", ensure_query_set)
    main_codes = np.array([0, 0, 1, 2, 255, 0], np.uint8)
    codes = {"main": main_codes, "extra": np.zeros(4, np.uint8)}
    monkeypatch.setattr(
        flow, "query_splits", lambda qs, reg, grid: codes[os.path.basename(os.path.dirname(qs[0].image))]
    )
    plain = RunContext.resolve(preset="tiny", work=tmp_path)
    ctx = RunContext.resolve(preset="tiny", work=tmp_path, net_options=NetOptions(train_photos=4))
    before, inputs = flow.flow_inputs(plain), flow.flow_inputs(ctx)
    assert before.extra == [] and before.extra_record is None and inputs.record == before.record
    cfg, grid, out_dir = calls[-1]
    assert out_dir == tmp_path / "demo" / "queries-train4" and grid == ctx.base_preset.grid
    assert (cfg.n_queries, cfg.seed) == (4, ctx.base_preset.queries.seed + TRAINING_PHOTOS_SEED_OFFSET)
    assert (cfg.max_val_spots, cfg.max_test_spots, cfg.max_buffer_spots) == (0, 0, 0)
    assert inputs.extra_record["n_queries"] == 4 and inputs.extra_record["id"] != inputs.record["id"]
    everything, train = inputs.training()
    assert [os.path.relpath(q.image, tmp_path) for q, t in zip(everything, train, strict=True) if t] == [
        "main/0.png", "main/1.png", "main/5.png", "extra/0.png", "extra/1.png", "extra/2.png", "extra/3.png"
    ]  # fmt: skip
    placed = {}

    def build_database(kind, preset, region, dem_src, out, queries=None, clip_to_dem=False):
        placed[kind] = (out, [q.image for q in queries])
        return out

    monkeypatch.setitem(sys.modules, "crosslocate.pipelines.build", _fake("b", build_database=build_database))
    flow.ensure_databases(("sparse", "compact", "heldout"), ctx, inputs.queries, inputs.extra)
    assert placed["sparse"][1] == placed["compact"][1] == [q.image for q in main_set + extra_set]
    assert placed["heldout"][1] == [q.image for q in main_set] and placed["heldout"][0] == plain.db("heldout")
    assert placed["sparse"][0].name == "sparse-x4" and placed["compact"][0].name == "compact-x4"
    codes["extra"] = np.array([0, 0, 1, 0], np.uint8)  # a set made with other split settings
    with pytest.raises(ConfigError, match="queries-train4: training-only photo 2 lies outside the training split"):
        flow.flow_inputs(ctx)
