"""Fixtures of the pipeline tests: a tiny seeded alpine DEM and rectangular region files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest


def _write_region(path: Path, w: float, s: float, e: float, n: float) -> str:
    poly = [[[w, s], [e, s], [e, n], [w, n], [w, s]]]
    path.write_text(
        json.dumps({"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": poly}})
    )
    return str(path)


@pytest.fixture(scope="session")
def region_file() -> Callable[[Path, float, float, float, float], str]:
    """``region_file(path, west, south, east, north) -> str``: writes a lon/lat rectangle as GeoJSON."""
    return _write_region


@pytest.fixture(scope="session")
def tiny_dem(tmp_path_factory) -> tuple[str, tuple[float, float, float, float], Path]:
    """(GeoTIFF path, lon/lat bounds (west, south, east, north), its folder): an 8 km x 8 km seeded
    alpine DEM at 100 m, built once per session."""
    from crosslocate.dem.sources import open_dem
    from crosslocate.dem.sources.geotiff import write_geotiff
    from crosslocate.dem.sources.synthetic import AlpineParams, generate_alpine

    root = tmp_path_factory.mktemp("tiny_dem")
    p = AlpineParams(extent_m=8000.0, spacing_m=100.0, erosion_iterations=2)
    z, transform, tags = generate_alpine(p)
    dem_path = write_geotiff(root / "dem.tif", z, transform, p.crs, tags=tags)
    with open_dem(str(dem_path)) as dem:
        bounds = tuple(float(v) for v in dem.bounds_lonlat)
    return str(dem_path), bounds, root
