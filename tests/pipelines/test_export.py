"""crosslocate export: VPR-eval names parsed the framework's way, CrossLocate meta round trip, resume, errors."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pyproj import Transformer

from crosslocate.datasets.crosslocate_meta import load_meta_npy
from crosslocate.datasets.export import log16_to_depth
from crosslocate.datasets.queries import load_query_csv
from crosslocate.datasets.shards import open_database
from crosslocate.dem.splits import assign_splits
from crosslocate.pipelines.cli import main

SIZE = 8  # the export_data fixture's view side and yaws (tests/pipelines/conftest.py)
YAWS = (0.0, 90.0, 180.0, 270.0)


def _framework_parse(folder: Path) -> tuple[list[str], np.ndarray]:
    """What VPR-methods-evaluation does: glob .jpg/.jpeg/.png, split the whole path on '@', fields 1, 2 as floats."""
    paths = sorted(str(p) for p in folder.glob("**/*") if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return paths, np.array([(p.split("@")[1], p.split("@")[2]) for p in paths]).astype(float)


def test_vpr_eval_names_match_the_manifest(export_data):
    db, qcsv, tmp, grid = export_data
    out = tmp / "vpr"
    assert (
        main(["export", str(db), "--format", "vpr-eval", "--split", "test", "--queries", str(qcsv), "-o", str(out)])
        == 0
    )
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)  # independent of crosslocate's geodesy
    with open_database(db) as d:
        table = d.table()
    test_rows = table[table["split"] == 2]
    paths, utm = _framework_parse(out / "database")
    assert len(paths) == len(test_rows) > 0
    for path, (east, north) in zip(paths, utm, strict=True):
        f = Path(path).name.split("@")
        assert len(f) == 16 and f[0] == "" and f[15] == ".png" and f[3:5] == ["32", "T"] and f[14] == "depth"
        row = test_rows[(test_rows["position_id"] == int(f[7])) & (test_rows["view_id"] % 4 == int(f[8]))]
        assert len(row) == 1
        e, n = to_utm.transform(row["lon"][0], row["lat"][0])
        assert abs(east - e) <= 0.005 and abs(north - n) <= 0.005
        assert abs(float(f[5]) - row["lat"][0]) <= 5e-6 and abs(float(f[6]) - row["lon"][0]) <= 5e-6
        assert int(f[9]) == int(row["yaw_deg"][0]) and int(f[10]) == 0 and int(f[11]) == 0
        assert float(f[12]) == pytest.approx(row["alt_m"][0], abs=0.05)
        code = np.asarray(Image.open(path))
        assert code.dtype == np.uint16 and code.shape == (SIZE, SIZE)
        expect = 100.0 * (row["view_id"][0] + 1)
        np.testing.assert_allclose(log16_to_depth(code)[2:], expect, rtol=6.5e-4)  # storage 5e-4 + PNG 1.2e-4
        assert (code[:2] == 0).all()
    qpaths, qutm = _framework_parse(out / "queries")
    queries = load_query_csv(qcsv)
    lon, lat = np.array([q.pose.lon for q in queries]), np.array([q.pose.lat for q in queries])
    in_test = assign_splits(lon, lat, str(tmp / "testregion.geojson"), grid) == 2
    assert len(qpaths) == in_test.sum() > 0
    for path, (east, north) in zip(qpaths, qutm, strict=True):
        f = Path(path).name.split("@")
        q = queries[int(f[7][1:])]
        assert in_test[int(f[7][1:])]
        assert (east, north) == pytest.approx(to_utm.transform(q.pose.lon, q.pose.lat), abs=0.005)
        assert (
            int(f[9]) == int(q.pose.yaw_deg % 360)
            and int(f[10]) == int(q.pose.pitch_deg)
            and int(f[11]) == int(q.pose.roll_deg)
        )
        assert Path(path).read_bytes() == Path(q.image).read_bytes()
    listed = (out / "database_images_paths.txt").read_text().split()
    assert sorted(listed) == sorted(Path(p).name for p in paths)
    # the framework's positives: database images within 25 m (brute force here, KD-tree there)
    dist = np.linalg.norm(qutm[:, None] - utm[None], axis=2)
    assert dist.min() > 25  # random query spots are not on the 4 km grid


def _framework_paths_file(folder: str) -> list[str]:
    """What VPR-methods-evaluation's ``read_images_paths`` does when ``<folder>_images_paths.txt`` exists
    (test_dataset.py, unchanged since 43f7450): read the file's lines and prefix each with ``folder + "/"``,
    the folder exactly as given on its command line (so names are relative to that folder, not to its parent)."""
    with open(folder + "_images_paths.txt") as fh:
        return [folder + "/" + line for line in fh.read().splitlines()]


def test_vpr_eval_paths_files_read_the_frameworks_way(export_data, monkeypatch):
    db, qcsv, tmp, grid = export_data
    out = tmp / "vpr"
    assert (
        main(["export", str(db), "--format", "vpr-eval", "--split", "test", "--queries", str(qcsv), "-o", str(out)])
        == 0
    )
    monkeypatch.chdir(tmp)  # the framework is usually given relative folders: --database_folder vpr/database
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    with open_database(db) as d:
        table = d.table()
    test_rows = table[table["split"] == 2]
    listed = {}
    for name in ("database", "queries"):
        paths = _framework_paths_file(f"vpr/{name}")
        assert paths and len(set(paths)) == len(paths)
        assert all(Path(p).is_file() for p in paths), name  # the framework only checks the first one
        assert {Path(p).name for p in paths} == {p.name for p in (out / name).iterdir()}  # nothing unlisted
        listed[name] = paths
    seen = set()
    for path in listed["database"]:
        f = Path(path).name.split("@")
        east, north = float(path.split("@")[1]), float(path.split("@")[2])  # the framework's parse of the whole path
        row = test_rows[(test_rows["position_id"] == int(f[7])) & (test_rows["view_id"] % 4 == int(f[8]))]
        assert len(row) == 1
        assert (east, north) == pytest.approx(to_utm.transform(row["lon"][0], row["lat"][0]), abs=0.005)
        seen.add(int(row["view_id"][0]))
    assert seen == set(test_rows["view_id"].tolist())  # every test view listed once
    queries = load_query_csv(qcsv)
    lon, lat = np.array([q.pose.lon for q in queries]), np.array([q.pose.lat for q in queries])
    in_test = np.flatnonzero(assign_splits(lon, lat, str(tmp / "testregion.geojson"), grid) == 2)
    rows = []
    for path in listed["queries"]:
        k = int(Path(path).name.split("@")[7][1:])
        east, north = float(path.split("@")[1]), float(path.split("@")[2])
        assert (east, north) == pytest.approx(to_utm.transform(queries[k].pose.lon, queries[k].pose.lat), abs=0.005)
        assert Path(path).read_bytes() == Path(queries[k].image).read_bytes()
        rows.append(k)
    assert sorted(rows) == in_test.tolist()


def test_vpr_eval_resume_overwrite_and_other_modalities(export_data):
    db, _, tmp, _ = export_data
    out = tmp / "vpr"
    args = ["export", str(db), "--format", "vpr-eval", "--split", "all", "-o", str(out), "--modality", "semantic"]
    assert main(args) == 0
    files = sorted((out / "database").iterdir())
    assert len(files) == 64
    sem = np.asarray(Image.open(files[0]))
    assert Image.open(files[0]).mode == "P" and set(np.unique(sem)) <= {0, 1, 2, 3, 4, 5}
    assert main(args) == 2  # complete export there: refused without --resume
    files[3].unlink()
    mtime = files[0].stat().st_mtime_ns
    assert main([*args, "--resume"]) == 0
    assert files[3].exists() and files[0].stat().st_mtime_ns == mtime  # only the missing file was written
    assert main([*args[:-1], "silhouette"]) == 2  # other settings: refused
    assert main([*args[:-1], "silhouette", "--overwrite"]) == 0
    names = sorted(p.name for p in (out / "database").iterdir())
    assert len(names) == 64 and all(n.endswith("@silhouette@.png") for n in names)


def test_crosslocate_meta_round_trip(export_data, capsys):
    db, qcsv, tmp, grid = export_data
    out = tmp / "cl"
    assert (
        main(["export", str(db), "--format", "crosslocate", "--queries", str(qcsv), "-o", str(out), "--name", "T"]) == 0
    )
    queries = load_query_csv(qcsv)
    lon, lat = np.array([q.pose.lon for q in queries]), np.array([q.pose.lat for q in queries])
    codes = assign_splits(lon, lat, str(tmp / "testregion.geojson"), grid)
    images = out / "datasets" / "T" / "query_photos"
    for code, set_name in enumerate(("train", "val", "test")):
        meta_path = out / "datasets_meta" / "T" / f"photos_to_depth_{set_name}.npy"
        meta = np.load(meta_path, allow_pickle=True).item()  # what CrossLocate's Dataset.loadFromMetaStructs does
        keys = {
            p + k
            for p in ("db", "q")
            for k in ("ImageFns", "IDs", "PlaceNames", "WGS", "UTM", "Elevations", "CameraParams")
        }
        assert keys <= set(meta) and meta["qIDs"] == np.flatnonzero(codes == code).tolist()
        cam = np.array(meta["dbCameraParams"])
        assert cam.shape[1] == 4 and set(np.round(np.degrees(cam[:, 0]))) <= set(YAWS)
        assert np.allclose(cam[:, 3], math.radians(60))
        for fn in meta["dbImageFns"]:
            assert (out / "datasets" / "T" / "database_depth" / fn).is_file() and fn.split("_")[0].isdigit()
        csv_out = tmp / f"imported_{set_name}.csv"
        assert (
            main(
                [
                    "queries",
                    "import",
                    "--format",
                    "crosslocate",
                    str(meta_path),
                    "--images",
                    str(images),
                    "-o",
                    str(csv_out),
                ]
            )
            == 0
        )
        back = load_query_csv(csv_out)
        assert len(back) == len(meta["qIDs"])
        for q2, k in zip(back, meta["qIDs"], strict=True):
            p, p2 = queries[k].pose, q2.pose
            assert (p2.lon, p2.lat, p2.alt_m) == pytest.approx((p.lon, p.lat, p.alt_m), abs=1e-9)
            assert (p2.yaw_deg, p2.pitch_deg, p2.roll_deg, p2.fov_deg) == pytest.approx(
                (p.yaw_deg % 360, p.pitch_deg, p.roll_deg, p.fov_deg), abs=1e-9
            )
            assert Path(q2.image).read_bytes() == Path(queries[k].image).read_bytes()
    assert load_meta_npy(out / "datasets_meta" / "T" / "photos_to_depth_test.npy")["utmEPSG"] == 32632


def test_foreign_or_bad_meta_gives_one_line_errors(export_data, capsys):
    _, _, tmp, _ = export_data
    images = tmp / "photos"

    def run(meta_obj, name):
        path = tmp / name
        np.save(path, meta_obj, allow_pickle=True)
        code = main(
            [
                "queries",
                "import",
                "--format",
                "crosslocate",
                str(path),
                "--images",
                str(images),
                "-o",
                str(tmp / f"{name}.csv"),
            ]
        )
        err = capsys.readouterr().err.strip()
        return code, err

    assert run(np.zeros(3), "plain.npy")[1].endswith(
        "not a pickled dict; expected CrossLocate's datasets_meta structure"
    )
    code, err = run({"foo": 1}, "foreign.npy")
    assert code == 2 and "no key 'qImageFns'" in err and len(err.splitlines()) == 1
    good = {"qImageFns": ["p00.png"], "qWGS": [[7.5, 46.5]], "qUTM": [[Transformer.from_crs(4326, 32632, always_xy=True).transform(7.5, 46.5)]],
            "qElevations": [1000.0], "qCameraParams": [[0.1, 0.0, 0.0, 60.0]]}  # fmt: skip
    good["qUTM"] = [list(good["qUTM"][0][0])]
    code, err = run(good, "degrees.npy")
    assert code == 2 and "degrees instead of radians" in err
    good["qCameraParams"] = [[0.1, 0.0, 0.0, 1.0]]
    good["qWGS"] = [[8.5, 46.5]]  # 77 km away from its UTM
    assert "qWGS and qUTM disagree" in run(good, "mismatch.npy")[1]
    good["qWGS"] = [[46.5, 7.5]]  # (lat, lon): read that way, with a warning
    assert run(good, "swapped.npy")[0] == 0
    assert load_query_csv(tmp / "swapped.npy.csv")[0].pose.lon == pytest.approx(7.5)
    garbage = tmp / "garbage.npy"
    garbage.write_bytes(b"PK\x03\x04 a zip, or anything else that is not a .npy file")
    code = main(
        [
            "queries",
            "import",
            "--format",
            "crosslocate",
            str(garbage),
            "--images",
            str(images),
            "-o",
            str(tmp / "g.csv"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and f"{garbage}: not a .npy file" in err
    assert not (tmp / "g.csv").exists()


_ROWS = [("position_id", "i8"), ("lon", "f8"), ("lat", "f8"), ("alt_m", "f8"), ("yaw_deg", "f8"), ("pitch_deg", "f8"),
         ("roll_deg", "f8"), ("fov_deg", "f8")]  # fmt: skip


def _file_yaw_rad(ours_deg: np.ndarray, convention: str) -> np.ndarray:
    """Our yaws (clockwise from north) as another tool writes them, from the view direction (east, north)."""
    east, north = np.sin(np.radians(ours_deg)), np.cos(np.radians(ours_deg))
    angle = {
        "cw-north": np.arctan2(east, north),
        "ccw-north": np.arctan2(-east, north),
        "ccw-east": np.arctan2(north, east),
    }
    return angle[convention] % (2 * math.pi)


def _meta_file(tmp: Path, qcsv: Path, convention: str, db_yaws_deg, name: str) -> Path:
    """A meta structure holding the query CSV and two database positions with ``db_yaws_deg``, yaws in ``convention``."""
    from crosslocate.datasets.crosslocate_meta import meta_dict, save_meta_npy

    queries = load_query_csv(qcsv)
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    rows = np.zeros(2 * len(db_yaws_deg), dtype=_ROWS)
    rows["position_id"], rows["yaw_deg"] = np.repeat([0, 1], len(db_yaws_deg)), np.tile(db_yaws_deg, 2)
    rows["lon"], rows["lat"], rows["alt_m"], rows["fov_deg"] = 7.5, 46.5 + 0.01 * rows["position_id"], 1500.0, 60.0
    q_utm = np.array([to_utm.transform(q.pose.lon, q.pose.lat) for q in queries])
    meta = meta_dict(rows, [f"{r['position_id']}_{k % 12:02d}.png" for k, r in enumerate(rows)],
                     np.stack(to_utm.transform(rows["lon"], rows["lat"]), axis=1), queries, list(range(len(queries))),
                     [Path(q.image).name for q in queries], q_utm, 32632)  # fmt: skip
    for key, ours in (("dbCameraParams", rows["yaw_deg"]), ("qCameraParams", [q.pose.yaw_deg for q in queries])):
        for row, yaw in zip(meta[key], _file_yaw_rad(np.asarray(ours, np.float64), convention), strict=True):
            row[0] = float(yaw)
    if min(db_yaws_deg) < 0:  # a file whose database yaws are written in (-pi, pi]
        for row, yaw in zip(meta["dbCameraParams"], np.radians(rows["yaw_deg"]), strict=True):
            row[0] = float(yaw)
    return save_meta_npy(tmp / name, meta)


@pytest.mark.parametrize("convention", ["cw-north", "ccw-north", "ccw-east"])
def test_crosslocate_import_reads_each_yaw_convention_exactly(export_data, capsys, caplog, convention):
    _, qcsv, tmp, _ = export_data
    path = _meta_file(tmp, qcsv, convention, [30.0 * k for k in range(12)], f"{convention}.npy")
    args = ["queries", "import", "--format", "crosslocate", str(path), "--images", str(tmp / "photos")]
    with caplog.at_level(logging.WARNING, logger="crosslocate.datasets.crosslocate_meta"):
        opt = [] if convention == "cw-north" else ["--yaw-convention", convention]  # cw-north: the default
        assert main([*args, *opt, "-o", str(tmp / "in.csv")]) == 0
    assert f"yaw read as {convention}" in capsys.readouterr().out
    assert not caplog.records  # the 12 database yaws sit on CrossLocate's grid in every convention
    original = load_query_csv(qcsv)
    for q, back in zip(original, load_query_csv(tmp / "in.csv"), strict=True):
        assert back.pose.yaw_deg == pytest.approx(q.pose.yaw_deg % 360, abs=1e-9)
        assert (back.pose.pitch_deg, back.pose.fov_deg) == pytest.approx((q.pose.pitch_deg, q.pose.fov_deg), abs=1e-9)
    if convention != "cw-north":  # the direction is not in the metadata: read with the default, yaws come out mirrored
        assert main([*args, "-o", str(tmp / "default.csv")]) == 0
        wrong = np.array([b.pose.yaw_deg for b in load_query_csv(tmp / "default.csv")])
        truth = np.array([q.pose.yaw_deg for q in original])
        assert np.abs((wrong - truth + 180) % 360 - 180).max() > 10


def test_crosslocate_import_warns_on_database_yaws_off_the_grid(export_data, caplog):
    _, qcsv, tmp, _ = export_data
    args = ["queries", "import", "--format", "crosslocate", "--images", str(tmp / "photos")]
    offset = _meta_file(tmp, qcsv, "cw-north", [15.0 + 30.0 * k for k in range(12)], "offset.npy")
    with caplog.at_level(logging.WARNING, logger="crosslocate.datasets.crosslocate_meta"):
        assert main([*args, str(offset), "-o", str(tmp / "offset.csv")]) == 0
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and str(offset) in warned[0] and "24 of 24 database yaws are off" in warned[0]
    assert "entry 0 = 0.261799 rad (15.000°)" in warned[0]
    caplog.clear()
    wrapped = _meta_file(tmp, qcsv, "cw-north", [30.0 * k - 150.0 for k in range(12)], "wrapped.npy")  # -150..180
    with caplog.at_level(logging.WARNING, logger="crosslocate.datasets.crosslocate_meta"):
        assert main([*args, str(wrapped), "-o", str(tmp / "wrapped.csv")]) == 0
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "outside CrossLocate's [0, 2π)" in warned[0]  # on the grid modulo 2π: no second warning
    for q, back in zip(load_query_csv(qcsv), load_query_csv(tmp / "wrapped.csv"), strict=True):
        assert back.pose.yaw_deg == pytest.approx(q.pose.yaw_deg % 360, abs=1e-9)
