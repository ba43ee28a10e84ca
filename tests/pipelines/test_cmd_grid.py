"""`crosslocate grid` in process: counts on a known square and Switzerland, dry run writes nothing, no clobbering."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from pyproj import CRS, Transformer

from crosslocate.dem.grid import Positions
from crosslocate.pipelines.cli import main


@pytest.fixture
def square_path(tmp_path):
    """A 10 km x 10 km square (LAEA at 8E 46N) as GeoJSON: 400 positions at 500 m, 100 at 1 km."""
    laea = CRS.from_proj4("+proj=laea +lat_0=46 +lon_0=8 +datum=WGS84 +units=m")
    h = 5000.0
    lon, lat = Transformer.from_crs(laea, "EPSG:4326", always_xy=True).transform([-h, h, h, -h, -h], [-h, -h, h, h, -h])
    path = tmp_path / "square.geojson"
    path.write_text(json.dumps({"type": "Polygon", "coordinates": [[[a, b] for a, b in zip(lon, lat, strict=True)]]}))
    return path


def _number(text: str, label: str) -> int:
    match = re.search(rf"^{label}\s+([\d,]+)", text, flags=re.MULTILINE)
    assert match, text
    return int(match.group(1).replace(",", ""))


def test_dry_run_prints_counts_and_writes_nothing(tmp_path, square_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["grid", "--region", str(square_path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert _number(out, "positions") == 400 and _number(out, "views") == 4800
    assert "90 KB per view" in out and "100 km^2" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_spacing_and_json(square_path, capsys):
    assert main(["grid", "--region", str(square_path), "--spacing", "1000", "--dry-run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["positions"] == 100 and summary["views"] == 1200
    assert summary["estimated_bytes"] == 1200 * 90_000
    assert summary["area_km2"] == pytest.approx(100.0, rel=1e-3)


def test_writes_positions_and_refuses_to_clobber(tmp_path, square_path, capsys):
    out = tmp_path / "pos.npz"
    assert main(["grid", "--region", str(square_path), "--preset", "cpu", "-o", str(out)]) == 0
    positions = Positions.from_npz(out)
    assert len(positions) == 100 and np.isnan(positions.alt_m).all()
    assert main(["grid", "--region", str(square_path), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["grid", "--region", str(square_path), "-o", str(out), "--overwrite"]) == 0
    assert len(Positions.from_npz(out)) == 400


def test_switzerland_dry_run_matches_paper(capsys):
    assert main(["grid", "--region", "switzerland", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert abs(_number(out, "positions") - 165_000) < 0.03 * 165_000
    assert abs(_number(out, "views") - 1_980_000) < 0.03 * 1_980_000


def test_unknown_region_is_exit_2(capsys):
    assert main(["grid", "--region", "no-such-region-xyz", "--dry-run"]) == 2
    assert "no-such-region-xyz" in capsys.readouterr().err


def test_with_demo_dem(capsys):
    # the demo DEM is a 40 km square at 30 m: at the tiny preset's 2 km, (40 / 2)^2 = 400 positions
    assert main(["grid", "--region", "demo", "--dem", "demo", "--preset", "tiny", "--dry-run", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert abs(summary["positions"] - 400) <= 40
    assert all(summary["splits"][k] > 0 for k in ("train", "val", "test"))
