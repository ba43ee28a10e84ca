"""Fixtures of the pipeline tests: a tiny synthetic world to build databases in, and a tiny hand-written
64-view database with a GeoJSON region and query photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.manifest import Manifest, ShardRecord, shard_name
from crosslocate.datasets.queries import Query, write_query_csv
from crosslocate.datasets.schema import ALL_MODALITIES, VIEW_DTYPE, Modality
from crosslocate.datasets.shards import ShardWriter
from crosslocate.dem.config import GridConfig
from crosslocate.dem.poses import Pose
from crosslocate.dem.splits import assign_splits

SIZE = 8
YAWS = (0.0, 90.0, 180.0, 270.0)
LON0, LAT0 = 7.5, 46.5  # UTM zone 32, band T
GRID = GridConfig(
    split_method="blocks", split_block_m=4000.0, split_buffer_m=0.0, split_fractions=(0.4, 0.3, 0.3), yaws_deg=YAWS
)


def _region(tmp: Path) -> Path:
    w, s, e, n = LON0 - 0.2, LAT0 - 0.15, LON0 + 0.2, LAT0 + 0.15
    ring = [[w, s], [e, s], [e, n], [w, n], [w, s]]
    path = tmp / "testregion.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [ring]}))
    return path


def build_db(tmp: Path) -> Path:
    """16 positions x 4 yaws in 2 shards; depth = 100 m * (view index + 1), two sky rows."""
    region = _region(tmp)
    gx, gy = np.meshgrid(np.linspace(-0.15, 0.15, 4), np.linspace(-0.1, 0.1, 4))
    lon, lat = LON0 + gx.ravel(), LAT0 + gy.ravel()
    split = assign_splits(lon, lat, str(region), GRID)
    db = tmp / "db"
    db.mkdir()
    records = []
    for sid, pids in enumerate((range(0, 8), range(8, 16))):
        rows = np.zeros(4 * len(pids), VIEW_DTYPE)
        for k, (p, y) in enumerate((p, y) for p in pids for y in range(4)):
            rows[k] = (4 * p + y, p, lon[p], lat[p], 1500.0 + p, 0, 0, YAWS[y], 0, 0, 60, split[p])
        depth = np.repeat((100.0 * (rows["view_id"] + 1)).astype(np.float32)[:, None, None], SIZE, 1).repeat(SIZE, 2)
        depth[:, :2] = -1.0
        sil = (depth < 0).astype(np.uint8)
        sem = np.where(depth < 0, 0, 1 + rows["view_id"][:, None, None] % 5).astype(np.uint8)
        with ShardWriter(db / shard_name(sid), ALL_MODALITIES, SIZE, ShardConfig()) as w:
            w.add({Modality.DEPTH: depth, Modality.SILHOUETTE: sil, Modality.SEMANTIC: sem}, rows)
            sha, size, n = w.commit()
        records.append(ShardRecord(shard_id=sid, path=shard_name(sid), n_views=n, n_positions=len(pids),
                                   position_ids=(min(pids), max(pids)), sha256=sha, bytes=size))  # fmt: skip
    Manifest(
        kind="uniform", region={"name": str(region)}, dem={}, crs_wkt="EPSG:3035", grid=GRID.to_dict(), shard={},
        codecs={}, split={}, render={"size_px": SIZE, "modalities": [m.value for m in ALL_MODALITIES]},
        layout={"n_shards": 2, "views_per_position": 4}, shards=tuple(records),
    ).save(db)  # fmt: skip
    return db


def build_queries(tmp: Path, n: int = 12) -> Path:
    rng = np.random.default_rng(3)
    photos = tmp / "photos"
    photos.mkdir()
    queries = []
    for k in range(n):
        path = photos / f"p{k:02d}.png"
        Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path)
        pose = Pose(lon=LON0 + rng.uniform(-0.15, 0.15), lat=LAT0 + rng.uniform(-0.1, 0.1), alt_m=rng.uniform(800, 3000),
                    yaw_deg=rng.uniform(0, 360), pitch_deg=rng.uniform(-9, 9), roll_deg=rng.uniform(-5, 5), fov_deg=rng.uniform(30, 70))  # fmt: skip
        queries.append(Query(image=str(path), pose=pose))
    return write_query_csv(tmp / "queries.csv", queries)


@pytest.fixture
def export_data(tmp_path):
    """(database folder, query CSV, tmp folder, the database's GridConfig); the region is tmp/testregion.geojson."""
    return build_db(tmp_path), build_queries(tmp_path), tmp_path, GRID


def _region_file(path: Path, w, s, e, n) -> str:
    poly = [[[w, s], [e, s], [e, n], [w, n], [w, s]]]
    path.write_text(
        json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": poly}})
    )
    return str(path)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """(dem path, region path inside the DEM, region path half outside the DEM)."""
    from crosslocate.dem.sources import open_dem
    from crosslocate.dem.sources.geotiff import write_geotiff
    from crosslocate.dem.sources.synthetic import AlpineParams, generate_alpine

    root = tmp_path_factory.mktemp("tiny_world")
    p = AlpineParams(extent_m=8000.0, spacing_m=100.0, erosion_iterations=2)
    z, transform, tags = generate_alpine(p)
    dem_path = write_geotiff(root / "dem.tif", z, transform, p.crs, tags=tags)
    with open_dem(str(dem_path)) as dem:
        w, s, e, n = dem.bounds_lonlat
    dx, dy = 0.1 * (e - w), 0.1 * (n - s)
    inside = _region_file(root / "tinyreg.geojson", w + dx, s + dy, e - dx, n - dy)
    outside = _region_file(root / "halfout.geojson", w + dx, s + dy, e + 5 * dx, n - dy)
    return str(dem_path), inside, outside


def database_difference(db_a: Path, db_b: Path, names: list[str] | None = None) -> str:
    """ "" when two databases hold the same bytes, else which files differ and in what, for a failure message.

    ``names`` defaults to the manifest, positions and every shard of either folder. Shards are compared
    decoded (pixels per modality, table rows, attributes), the manifest key by key, so a failure in CI says
    whether content or only the container differs.
    """
    from crosslocate.datasets.shards import ShardReader

    db_a, db_b = Path(db_a), Path(db_b)
    if names is None:
        shards = {p.name for d in (db_a, db_b) for p in d.glob("shard-*.h5")}
        names = ["manifest.json", "positions.npz", *sorted(shards)]
    lines = []
    for name in names:
        a, b = db_a / name, db_b / name
        if not (a.exists() and b.exists()):
            lines.append(f"{name}: only in {a.parent if a.exists() else b.parent}")
            continue
        if a.read_bytes() == b.read_bytes():
            continue
        if name == "manifest.json":
            ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
            keys = sorted(k for k in set(ja) | set(jb) if ja.get(k) != jb.get(k))
            lines.append(
                f"{name}: keys {keys} differ: " + "; ".join(f"{k}: {ja.get(k)!r} vs {jb.get(k)!r}"[:300] for k in keys)
            )
        elif name.startswith("shard-"):
            with ShardReader(a) as ra, ShardReader(b) as rb:
                idx = np.arange(min(ra.n_views, rb.n_views))
                px = {m.value: int((ra.read_batch(m, idx) != rb.read_batch(m, idx)).sum()) for m in ra.modalities}
                rows = int((ra.table()[: len(idx)] != rb.table()[: len(idx)]).sum())
                lines.append(
                    f"{name}: {a.stat().st_size} vs {b.stat().st_size} bytes, views {ra.n_views} vs {rb.n_views}, "
                    f"differing pixels {px}, table rows {rows}, attrs equal {ra.attrs == rb.attrs}"
                )
        else:
            lines.append(f"{name}: {a.stat().st_size} vs {b.stat().st_size} bytes")
    return "; ".join(lines)


@pytest.fixture(name="database_difference")
def _database_difference_fixture():
    """:func:`database_difference` for tests (``--import-mode=importlib`` lets tests import no conftest)."""
    return database_difference
