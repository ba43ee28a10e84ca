"""Fixtures of the pipeline tests: a tiny synthetic world to build databases in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


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
