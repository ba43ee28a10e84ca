"""Regions against independent truths: official areas, the ellipsoidal zone-area formula, known towns."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import shapefile  # pyshp
from pyproj import CRS, Geod, Transformer

from crosslocate.dem.regions import get_region
from crosslocate.errors import RegionError

# WGS84 ellipsoid constants (the definition, not from the code under test).
A_M = 6378137.0
F = 1.0 / 298.257223563
E2 = F * (2.0 - F)


def _zone_area_km2(west: float, south: float, east: float, north: float) -> float:
    """Area of a lon/lat box bounded by meridians and parallels on the WGS84 ellipsoid (closed form)."""
    e = math.sqrt(E2)
    b2 = (A_M * (1.0 - F)) ** 2

    def q(lat_deg: float) -> float:
        s = math.sin(math.radians(lat_deg))
        return s / (1.0 - E2 * s * s) + math.log((1.0 + e * s) / (1.0 - e * s)) / (2.0 * e)

    return math.radians(east - west) * b2 / 2.0 * (q(north) - q(south)) / 1e6


def _box_geojson(path, west, south, east, north):
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    feature = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    return path


def test_switzerland_area_matches_official_within_3_percent():
    region = get_region("switzerland")
    assert region.name == "switzerland"
    assert abs(region.area_km2 - 41_285.0) / 41_285.0 < 0.03


def test_switzerland_contains_its_cities_and_not_its_neighbours():
    region = get_region("switzerland")
    # Bern, Zurich, Lugano, Zermatt | Milan, Munich, Annecy, Innsbruck
    inside = region.contains([7.447, 8.541, 8.952, 7.749], [46.948, 47.377, 46.004, 46.020])
    outside = region.contains([9.190, 11.576, 6.129, 11.394], [45.464, 48.137, 45.899, 47.269])
    assert inside.all() and not outside.any()


def test_alps_area_and_extent():
    region = get_region("alps")
    assert abs(region.area_km2 - 250_000.0) / 250_000.0 < 0.10
    west, south, east, north = region.bounds_lonlat
    assert west < 7.27 and east > 16.0 and south < 43.8 and north > 48.0  # Nice ... Vienna
    # Chamonix, Zermatt, Innsbruck, Grenoble, Cortina | Milan, Venice, Lyon, Munich-north (Freising)
    inside = region.contains([6.869, 7.749, 11.394, 5.724, 12.136], [45.924, 46.020, 47.269, 45.188, 46.540])
    outside = region.contains([9.190, 12.316, 4.835, 11.749], [45.464, 45.441, 45.764, 48.403])
    assert inside.all() and not outside.any()


def test_alps_contains_switzerland():
    alps, ch = get_region("alps"), get_region("switzerland")
    assert ch.polygon.difference(alps.polygon).area < 1e-6 * ch.polygon.area


def test_user_geojson_area_matches_closed_form(tmp_path):
    region = get_region(_box_geojson(tmp_path / "box.geojson", 7.0, 46.0, 7.2, 46.2))
    assert region.name == "box"
    assert region.area_km2 == pytest.approx(_zone_area_km2(7.0, 46.0, 7.2, 46.2), rel=1e-3)


def test_user_shapefile_lonlat_and_projected(tmp_path):
    truth = _zone_area_km2(8.0, 45.5, 8.3, 45.7)
    with shapefile.Writer(str(tmp_path / "ll"), shapeType=shapefile.POLYGON) as w:
        w.field("name", "C")
        w.poly([[[8.0, 45.5], [8.0, 45.7], [8.3, 45.7], [8.3, 45.5], [8.0, 45.5]]])
        w.record("a")
    assert get_region(tmp_path / "ll.shp").area_km2 == pytest.approx(truth, rel=1e-3)

    # the same box, densified, stored in UTM 32N metres with a .prj: must come back as lon/lat
    to_utm = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True)
    lons = np.r_[np.linspace(8.0, 8.3, 30), np.full(30, 8.3), np.linspace(8.3, 8.0, 30), np.full(30, 8.0)]
    lats = np.r_[np.full(30, 45.5), np.linspace(45.5, 45.7, 30), np.full(30, 45.7), np.linspace(45.7, 45.5, 30)]
    x, y = to_utm.transform(lons, lats)
    ring = [[float(a), float(b)] for a, b in zip(x, y, strict=True)][::-1]
    ring.append(ring[0])
    with shapefile.Writer(str(tmp_path / "utm"), shapeType=shapefile.POLYGON) as w:
        w.field("name", "C")
        w.poly([ring])
        w.record("a")
    (tmp_path / "utm.prj").write_text(CRS.from_epsg(32632).to_wkt("WKT1_ESRI"))
    region = get_region(tmp_path / "utm.shp")
    w_, s_, e_, n_ = region.bounds_lonlat
    assert (w_, s_, e_, n_) == pytest.approx((8.0, 45.5, 8.3, 45.7), abs=1e-6)
    assert region.area_km2 == pytest.approx(truth, rel=2e-3)


def test_geodesic_area_independent_of_geod_call():
    """Sanity on the truth helper itself: a 1 x 1 degree cell at the equator (~12,308 km^2)."""
    area, _ = Geod(ellps="WGS84").polygon_area_perimeter([0, 1, 1, 0], [0, 0, 1, 1])
    assert _zone_area_km2(0, 0, 1, 1) == pytest.approx(abs(area) / 1e6, rel=1e-4)


@pytest.mark.parametrize("bad", ["no-such-region", "atlantis"])
def test_unknown_name_raises_region_error(bad):
    with pytest.raises(RegionError, match=bad):
        get_region(bad)


def test_bad_files_raise_region_error(tmp_path):
    with pytest.raises(RegionError, match="does not exist"):
        get_region(tmp_path / "missing.geojson")
    broken = tmp_path / "broken.geojson"
    broken.write_text("{not json")
    with pytest.raises(RegionError, match=r"broken\.geojson"):
        get_region(broken)
    point = tmp_path / "point.geojson"
    point.write_text(json.dumps({"type": "Point", "coordinates": [7.0, 46.0]}))
    with pytest.raises(RegionError, match="no Polygon"):
        get_region(point)
    projected = _box_geojson(tmp_path / "metres.geojson", 400000.0, 5000000.0, 410000.0, 5010000.0)
    with pytest.raises(RegionError, match="lon/lat"):
        get_region(projected)
    junk = tmp_path / "junk.shp"
    junk.write_bytes(b"\0" * 10)
    with pytest.raises(RegionError, match=r"junk\.shp"):
        get_region(junk)


def test_demo_region_is_the_demo_dem_footprint():
    from crosslocate.dem.sources import open_dem

    with open_dem("demo") as dem:
        bounds = tuple(dem.bounds_lonlat)
    region = get_region("demo")
    assert region.name == "demo"
    assert region.bounds_lonlat == pytest.approx(bounds, abs=1e-12)
    assert region.area_km2 == pytest.approx(_zone_area_km2(*bounds), rel=1e-3)
