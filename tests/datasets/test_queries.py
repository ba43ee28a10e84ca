"""Query CSV: exact round trip, errors naming the 1-based line, synthetic sampler against its stated ranges."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pyproj import Geod

from crosslocate.datasets.queries import (
    QUERY_COLUMNS,
    Query,
    load_query_csv,
    sample_synthetic_poses,
    write_query_csv,
)
from crosslocate.dem.poses import Pose
from crosslocate.dem.regions import get_region
from crosslocate.errors import ConfigError, OutsideCoverageError, QueryCSVError

HEADER = ",".join(QUERY_COLUMNS)


class PlaneDEM:
    """Duck-typed DEM: z = 500 + 300 (lon - 8) - 200 (lat - 46) metres over a lon/lat box, NaN outside."""

    def __init__(self, bounds=(7.8, 45.9, 8.2, 46.1)):
        self.bounds_lonlat = bounds

    @staticmethod
    def truth(lon, lat):
        return 500.0 + 300.0 * (np.asarray(lon) - 8.0) - 200.0 * (np.asarray(lat) - 46.0)

    def covers(self, lon, lat):
        w, s, e, n = self.bounds_lonlat
        lon, lat = np.asarray(lon, float), np.asarray(lat, float)
        return (lon >= w) & (lon <= e) & (lat >= s) & (lat <= n)

    def sample(self, lon, lat):
        return np.where(self.covers(lon, lat), self.truth(lon, lat), np.nan)

    def elevation(self, lon, lat):
        z = self.sample(lon, lat)
        if np.isnan(z).any():
            raise OutsideCoverageError("outside")
        return z


def _write(path, *rows, header=HEADER):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_round_trip_is_exact(tmp_path):
    (tmp_path / "img").mkdir()
    queries = [
        Query(str(tmp_path / "img" / "a.png"), Pose(lon=7.123456789012, lat=46.1 / 3, alt_m=2345.6789, yaw_deg=359.9,
                                                  pitch_deg=-7.25, roll_deg=1 / 3, fov_deg=52.123))
        ,
        Query("/elsewhere/b.jpg", Pose(lon=-179.5, lat=-89.0, alt_m=-12.0, fov_deg=149.0)),
    ]  # fmt: skip
    path = write_query_csv(tmp_path / "queries.csv", queries)
    text = path.read_text().splitlines()
    assert text[0] == HEADER and text[1].startswith("img/a.png,")  # relative to the CSV's folder
    back = load_query_csv(path, check_images=False)
    assert back == queries
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_relative_paths_resolve_against_the_csv_folder(tmp_path, monkeypatch):
    sub = tmp_path / "set"
    sub.mkdir()
    _write(sub / "q.csv", "photos/x.png,46.0,8.0,1000,0,0,0,60", "../y.png,46.0,8.0,1000,0,0,0,60")
    monkeypatch.chdir(tmp_path)
    q = load_query_csv("set/q.csv", check_images=False)
    assert q[0].image == str(sub / "photos" / "x.png") and q[1].image == str(tmp_path / "y.png")


def test_extra_columns_and_blank_lines(tmp_path):
    path = _write(tmp_path / "q.csv", "x.png,46.0,8.0,1000,10,1,2,45,foo", "", "y.png,46.5,8.5,1100,20,3,4,50,bar",
                  header=HEADER + ",note")  # fmt: skip
    q = load_query_csv(path, check_images=False)
    assert [x.pose.yaw_deg for x in q] == [10.0, 20.0]


@pytest.mark.parametrize(
    ("rows", "line", "needle"),
    [
        (["a.png,46,8,1000,0,0,0,60", "b.png,46,8,abc,0,0,0,60"], 3, "alt_m"),
        (["a.png,46,8,1000,0,0,0,60", "", "b.png,46,8,1000,0,0,0,0"], 4, "fov_deg"),
        (["a.png,46,8,1000,0,0,0,180"], 2, "fov_deg"),
        (["a.png,46,8,1000,0,0,0,151"], 2, "fov_deg"),
        (["a.png,46,8,1000,0,0,0,2"], 2, "within [5, 150] degrees"),
        (["a.png,91,8,1000,0,0,0,60"], 2, "lat"),
        (["a.png,46,181,1000,0,0,0,60"], 2, "lon"),
        (["a.png,46,8,1000,0,95,0,60"], 2, "pitch_deg"),
        (["a.png,46,8,1000,nan,0,0,60"], 2, "yaw_deg"),
        (["a.png,46,8"], 2, "fields"),
        ([",46,8,1000,0,0,0,60"], 2, "image"),
        (["a.png,46,8,,0,0,0,60"], 2, "alt_m is empty"),
    ],
)
def test_errors_name_path_and_line(tmp_path, rows, line, needle):
    path = _write(tmp_path / "bad.csv", *rows)
    with pytest.raises(QueryCSVError) as info:
        load_query_csv(path)
    assert info.value.line == line
    assert f"bad.csv:{line}:" in str(info.value) and needle in str(info.value)


def test_missing_column_is_line_1(tmp_path):
    path = _write(tmp_path / "q.csv", "a.png,46,8,0,0,0,60", header="image,lat,lon,yaw_deg,pitch_deg,roll_deg,fov_deg")
    with pytest.raises(QueryCSVError, match=r"q.csv:1: missing column\(s\) alt_m"):
        load_query_csv(path)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(QueryCSVError, match=r"empty\.csv:1"):
        load_query_csv(tmp_path / "empty.csv")
    with pytest.raises(QueryCSVError, match=r"nope\.csv"):
        load_query_csv(tmp_path / "nope.csv")


def test_empty_altitude_is_terrain_plus_eye_height(tmp_path):
    path = _write(tmp_path / "q.csv", "a.png,46.05,8.1,,0,0,0,60", "b.png,46.0,8.0,1234.5,0,0,0,60")
    q = load_query_csv(path, dem=PlaneDEM(), check_images=False)
    assert q[0].pose.alt_m == pytest.approx(float(PlaneDEM.truth(8.1, 46.05)) + 1.7)
    assert q[1].pose.alt_m == 1234.5
    outside = _write(tmp_path / "o.csv", "a.png,46.0,8.0,,0,0,0,60", "b.png,47.0,8.0,,0,0,0,60")
    with pytest.raises(QueryCSVError, match=r"o\.csv:3:.*outside the DEM"):
        load_query_csv(outside, dem=PlaneDEM())


def test_given_altitude_under_or_inside_the_terrain_is_refused(tmp_path):
    """An explicit alt_m below the terrain, or within the clearance above it, is refused naming the file,
    the row and the terrain height there (the plane's formula); without a DEM, or outside it, there is no
    terrain to compare with."""
    ground = float(PlaneDEM.truth(8.1, 46.05))
    ok = f"a.png,46.05,8.1,{ground + 0.6!r},0,0,0,60"  # 0.6 m up: clear of the 0.5 m clearance
    for alt, where in ((ground - 200.0, "below"), (ground + 0.2, "inside")):
        path = _write(tmp_path / "q.csv", ok, f"b.png,46.05,8.1,{alt!r},0,0,0,60")
        with pytest.raises(
            QueryCSVError,
            match=rf"q\.csv:3: alt_m: camera at lon 8\.10000, lat 46\.05000, altitude {alt:.1f} m is {where} the "
            rf"terrain, which is at {ground:.1f} m there; give an altitude of at least {ground + 0.5:.1f} m "
            r"\(or leave alt_m empty to stand 1\.7 m above the ground\)",
        ):
            load_query_csv(path, dem=PlaneDEM(), check_images=False)
        assert len(load_query_csv(path, check_images=False)) == 2  # no DEM: nothing to compare with
    outside = _write(tmp_path / "o.csv", ok, "b.png,47.0,8.0,10.0,0,0,0,60")  # the DEM ends at 46.1
    assert load_query_csv(outside, dem=PlaneDEM(), check_images=False)[1].pose.alt_m == 10.0


def _box_region(tmp_path, w, s, e, n):
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    path = tmp_path / "box.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return get_region(path)


def test_synthetic_poses_respect_region_dem_margin_and_ranges(tmp_path):
    dem = PlaneDEM()
    region = _box_region(tmp_path, 7.7, 45.95, 8.15, 46.3)  # overlaps the DEM on its south-west part
    poses = sample_synthetic_poses(region, dem, 300, np.random.default_rng(0), margin_m=2000.0)
    assert len(poses) == 300
    lon = np.array([p.lon for p in poses])
    lat = np.array([p.lat for p in poses])
    assert region.contains(lon, lat).all()
    # at least 2 km (geodesic, with 1 % slack for the projection) from every DEM edge
    geod = Geod(ellps="WGS84")
    w, s, e, n = dem.bounds_lonlat
    for lon2, lat2 in ((np.full_like(lon, w), lat), (np.full_like(lon, e), lat), (lon, np.full_like(lat, s)),
                       (lon, np.full_like(lat, n))):  # fmt: skip
        _, _, d = geod.inv(lon, lat, lon2, lat2)
        assert d.min() > 1980.0
    assert np.allclose([p.alt_m for p in poses], PlaneDEM.truth(lon, lat) + 1.7)
    yaw, pitch, roll, fov = (
        np.array([getattr(p, k) for p in poses]) for k in ("yaw_deg", "pitch_deg", "roll_deg", "fov_deg")
    )
    assert (yaw >= 0).all() and (yaw < 360).all() and yaw.max() > 300 and yaw.min() < 60
    assert np.abs(pitch).max() <= 10 and np.abs(pitch).max() > 8
    assert np.abs(roll).max() <= 5 and np.abs(roll).max() > 4
    assert fov.min() >= 30 and fov.max() <= 70 and fov.max() - fov.min() > 30
    again = sample_synthetic_poses(region, dem, 300, np.random.default_rng(0), margin_m=2000.0)
    assert again == poses


def test_synthetic_poses_need_overlap(tmp_path):
    region = _box_region(tmp_path, 10.0, 40.0, 10.1, 40.1)
    with pytest.raises(OutsideCoverageError, match="box"):
        sample_synthetic_poses(region, PlaneDEM(), 5, np.random.default_rng(0))


def test_synthetic_poses_on_the_demo_dem():
    from crosslocate.dem.sources import open_dem

    with open_dem("demo") as dem:
        poses = sample_synthetic_poses("demo", dem, 50, np.random.default_rng(1))
        lon = np.array([p.lon for p in poses])
        lat = np.array([p.lat for p in poses])
        assert dem.covers(lon, lat).all()
        assert np.allclose([p.alt_m for p in poses], dem.elevation(lon, lat) + 1.7)


def test_sample_orientations_keep_the_spot_and_the_ranges():
    from crosslocate.datasets.queries import sample_orientations

    base = Pose(lon=8.0, lat=46.5, alt_m=2001.7, yaw_deg=10.0, pitch_deg=1.0, roll_deg=0.5, fov_deg=40.0)
    more = sample_orientations(
        base, 200, np.random.default_rng(4), fov_range_deg=(30.0, 50.0), pitch_deg=4.0, roll_deg=2.0
    )
    assert len(more) == 200
    assert all((p.lon, p.lat, p.alt_m) == (base.lon, base.lat, base.alt_m) for p in more)
    yaw = np.array([p.yaw_deg for p in more])
    assert yaw.min() >= 0.0 and yaw.max() < 360.0 and np.ptp(yaw) > 300.0
    assert all(30.0 <= p.fov_deg <= 50.0 and abs(p.pitch_deg) <= 4.0 and abs(p.roll_deg) <= 2.0 for p in more)
    again = sample_orientations(
        base, 200, np.random.default_rng(4), fov_range_deg=(30.0, 50.0), pitch_deg=4.0, roll_deg=2.0
    )
    assert again == more
    assert sample_orientations(base, 0, np.random.default_rng(0)) == []
    with pytest.raises(ConfigError, match="fov_range_deg"):
        sample_orientations(base, 1, np.random.default_rng(0), fov_range_deg=(50.0, 30.0))


def test_images_opened_and_size_checked(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48)).save(tmp_path / "ok.png")
    Image.new("RGB", (1, 1)).save(tmp_path / "dot.png")
    (tmp_path / "fake.jpg").write_bytes(b"not an image")
    row = "{},46,8,1000,0,0,0,60"
    assert len(load_query_csv(_write(tmp_path / "q.csv", row.format("ok.png")))) == 1
    for name, line, needle in (("ok.png", 3, "gone.png does not exist"), ("ok.png", 3, "dot.png is 1x1 px"),
                               ("ok.png", 3, "fake.jpg is not a readable image")):  # fmt: skip
        other = needle.split()[0]
        path = _write(tmp_path / "bad.csv", row.format(name), row.format(other))
        with pytest.raises(QueryCSVError, match=rf"bad\.csv:{line}: image .*{needle}"):
            load_query_csv(path)


def test_exif_orientation_is_applied(tmp_path):
    """A sideways phone photo (EXIF orientation 6 = rotate 90 degrees clockwise to view) comes back upright."""
    from PIL import Image

    from crosslocate.datasets.views import load_rgb

    stored = np.zeros((40, 60, 3), np.uint8)  # as the sensor wrote it: 60 wide, 40 high
    stored[:, :10] = 255  # a white band on the sensor's left edge
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(tmp_path / "phone.png", exif=exif)
    upright = load_rgb(tmp_path / "phone.png")
    assert upright.shape == (60, 40, 3)  # portrait, as the photographer saw it
    assert upright[:10].min() == 255 and upright[10:].max() == 0  # the left band is now the top


def test_query_set_digest_follows_poses_image_bytes_and_extra_not_paths(tmp_path):
    import dataclasses

    from crosslocate.datasets.queries import query_set_digest

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "p.png").write_bytes(b"same bytes")
    pose = Pose(lon=7.5, lat=46.5, alt_m=2000.0, yaw_deg=10.0, fov_deg=50.0)
    qa, qb = Query(str(tmp_path / "a" / "p.png"), pose), Query(str(tmp_path / "b" / "p.png"), pose)
    d = query_set_digest([qa])
    assert len(d) == 64 and d == query_set_digest([qb])  # the same photo moved elsewhere: same set
    assert d != query_set_digest([dataclasses.replace(qa, pose=dataclasses.replace(pose, roll_deg=0.5))])
    assert d != query_set_digest([qa], extra=b"\x00")  # e.g. other split codes
    (tmp_path / "b" / "p.png").write_bytes(b"other bytes")
    assert d != query_set_digest([qb])
