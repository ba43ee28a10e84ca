"""Your own photos as the query set: a query CSV of image files on disk through train -> benchmark.

The tiny world of conftest.py: an 8 km x 8 km seeded alpine DEM at 100 m, the region its
central 80 %, the ``tiny`` preset on a 1.5 km grid with 4 yaws and 2 km split blocks; 24 PNG "photos"
(sky over a wavy skyline, written with PIL) at known positions with empty ``alt_m`` (DEM + 1.7 m).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

from crosslocate.datasets.queries import load_query_csv
from crosslocate.datasets.schema import SPLIT_CODES
from crosslocate.datasets.shards import open_database
from crosslocate.dem.splits import assign_splits
from crosslocate.errors import QueryCSVError
from crosslocate.pipelines import build
from crosslocate.pipelines.benchmark import run_benchmark
from crosslocate.pipelines.cli import main
from crosslocate.pipelines.context import RunContext
from crosslocate.pipelines.presets import get_preset
from crosslocate.pipelines.train import run_train

#: Database yaws (4 keep the databases small; the photos' yaws are multiples of 90 deg, so each has a positive).
YAWS = (0.0, 90.0, 180.0, 270.0)
HEADER = "image,lat,lon,alt_m,yaw_deg,pitch_deg,roll_deg,fov_deg\n"


@pytest.fixture(scope="module")
def photo_world(tiny_world, tmp_path_factory):
    """(dem path, region path, csv path, lon/lat of the photos, preset)."""
    from PIL import Image

    from crosslocate.dem.sources import open_dem

    dem_path, region, _ = tiny_world
    with open_dem(dem_path) as dem:
        w, s, e, n = dem.bounds_lonlat
    root = tmp_path_factory.mktemp("photo_world")
    (root / "photos").mkdir()
    rows, lonlat = [], []
    rng = np.random.default_rng(0)
    fx, fy = np.meshgrid(np.linspace(0.2, 0.8, 4), np.linspace(0.2, 0.8, 3))
    for k, (ax, ay) in enumerate(zip(fx.ravel(), fy.ravel(), strict=True)):
        lon, lat = float(w + ax * (e - w)), float(s + ay * (n - s))
        for j in range(2):  # two photos per spot, different yaw
            h = 48 + 16 * j
            cols = np.arange(64)
            sky_rows = h / 2 + 6 * np.sin(cols / 9.0 + k) + rng.normal(0, 1, 64)
            img = np.where(np.arange(h)[:, None] < sky_rows[None], 0, 1)[..., None]
            rgb = np.where(img == 0, [140, 180, 235], [70, 95, 55]).astype(np.uint8)
            name = f"photos/p{k:02d}_{j}.png"
            Image.fromarray(rgb).save(root / name)
            rows.append(f"{name},{lat!r},{lon!r},,{90.0 * ((k + 2 * j) % 4)},1.0,-0.5,{50.0 + 5 * j}\n")
            lonlat.append((lon, lat))
    csv = root / "myphotos.csv"
    csv.write_text(HEADER + "".join(rows))
    preset = get_preset("tiny").with_overrides(
        grid={"spacing_m": 1500.0, "split_block_m": 2000.0, "split_buffer_m": 200.0, "yaws_deg": YAWS},
        train={"epochs": 1, "max_tuples": 8},
    )
    return dem_path, region, csv, np.array(lonlat), preset


def test_photo_csv_trains_and_benchmarks_with_its_own_splits(photo_world, tmp_path, monkeypatch):
    dem, region, csv, lonlat, preset = photo_world
    # in-process builds (no dask cluster start-up per database), as in test_build
    monkeypatch.setattr(build, "build_database", functools.partial(build.build_database, scheduler="sync"))
    splits = assign_splits(lonlat[:, 0], lonlat[:, 1], region, preset.grid)
    n_train, n_test = int((splits == SPLIT_CODES["train"]).sum()), int((splits == SPLIT_CODES["test"]).sum())
    assert n_train >= 4 and n_test >= 2, splits  # the layout gives every split photos

    work = tmp_path / "work"
    ctx = RunContext.resolve(region=region, dem=dem, preset=preset, work=work, queries_csv=csv)
    summary = run_train(ctx)
    assert summary["n_train_queries"] == n_train and summary["query_set"]["source"] == str(csv)
    assert summary["query_set"]["n_test"] == n_test
    region_dir = work / "tinyreg"
    # the photo set has its own sparse/compact/heldout databases and run folder
    assert (region_dir / "db" / "sparse-myphotos" / "manifest.json").is_file()
    assert (region_dir / "runs" / "tiny-myphotos" / "checkpoint.pt").is_file()
    out = run_benchmark(ctx)
    res = json.loads(Path(out["results"]).read_text())
    assert res["n_queries"] == n_test and res["query_set"]["id"] == summary["query_set"]["id"]
    assert res["n_spots"] * 2 == n_test  # the two photos of a spot share its position, hence its split

    with open_database(region_dir / "db" / "heldout-myphotos") as db:  # tiny: every test position
        assert res["n_database"] == int((db.table()["split"] == SPLIT_CODES["test"]).sum())
    assert res["database"]["kind"] == "heldout" and res["database"]["radius_m"] is None
    for table in (res["recall"], res["chance"], *res["baselines"].values()):
        assert all(0.0 <= v <= 1.0 for row in table.values() for v in row.values())
    assert {"untrained", "horizon", "horizon_searched"} <= set(res["baselines"])
    # the photos' FOVs (50 and 55 deg) both fall in the [50, 60) bin of the per-FOV breakdown
    assert {k: v["n"] for k, v in res["per_fov"].items()} == {"50-60": n_test}

    # the synthetic run of the same work folder is another query set: nothing is shared by mistake
    assert not (region_dir / "runs" / "tiny").exists()


def test_bad_photo_rows_are_named_by_file_and_line(photo_world, tmp_path, capsys):
    dem, region, csv, _, _ = photo_world
    lines = csv.read_text().splitlines(keepends=True)
    bad = tmp_path / "bad.csv"
    # line 3: an image that does not exist (relative paths are relative to the CSV's folder)
    bad.write_text(
        lines[0]
        + lines[1].replace("photos/", str(csv.parent / "photos") + "/")
        + "nothere.png"
        + lines[2][lines[2].index(",") :]
    )
    args = ["train", "--region", region, "--dem", dem, "--preset", "tiny", "--work", str(tmp_path / "w")]
    assert main([*args, "--queries", str(bad)]) == 2
    assert f"{bad}:3: image" in capsys.readouterr().err
    # line 2: a position outside the region
    bad.write_text(lines[0] + "photos/p00_0.png,46.0,7.0,1500,0,0,0,50\n")
    with pytest.raises(QueryCSVError, match="outside region") as info:
        load_query_csv(bad, region=region)
    assert info.value.line == 2
    # an unreadable image (text in a .png)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "p00_0.png").write_text("not a png")
    with pytest.raises(QueryCSVError, match="not a readable image"):
        load_query_csv(tmp_path / "bad.csv")
