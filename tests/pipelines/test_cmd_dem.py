"""`crosslocate dem info|synth` through the in-process CLI entry point."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from crosslocate.pipelines.cli import main


@pytest.fixture
def hgt(tmp_path):
    r, c = np.mgrid[0:1201, 0:1201]
    arr = (1000 + r - c).astype(np.int16)
    arr[5, 5] = -32768
    path = tmp_path / "N46E007.SRTMGL3.hgt.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("N46E007.hgt", arr.astype(">i2").tobytes())
    return path


def test_dem_info_text_and_json(hgt, capsys):
    assert main(["dem", "info", str(hgt)]) == 0
    out = capsys.readouterr().out
    assert "lon 6.99958 .. 8.00042, lat 45.99958 .. 47.00042" in out
    assert "1201 rows x 1201 cols" in out and "EPSG:4326" in out
    assert "voids:       1 cells" in out
    assert main(["dem", "info", "--json", str(hgt)]) == 0
    info = json.loads(capsys.readouterr().out)
    # raw values 1000 + r - c: min 1000 - 1200 = -200, max 1000 + 1200 = 2200
    assert info["elevation_min_m"] == -200.0 and info["elevation_max_m"] == 2200.0
    assert info["void_count"] == 1


def test_dem_info_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "N46E007.hgt"
    bad.write_bytes(b"\0" * 1000)
    assert main(["dem", "info", str(bad)]) == 2
    assert "N46E007.hgt: 1,000 bytes, expected 2,884,802" in capsys.readouterr().err


def test_dem_synth_output_and_overwrite(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSLOCATE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo.tif"
    assert main(["dem", "synth", "-o", str(out), "--spacing-m", "250"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0] == str(out) and "synthetic:   true" in text and "EPSG:32632" in text
    assert main(["dem", "synth", "-o", str(out), "--spacing-m", "250"]) == 2  # refuses to clobber
    assert "--overwrite" in capsys.readouterr().err
    assert main(["dem", "synth", "-o", str(out), "--spacing-m", "250", "--overwrite"]) == 0


@pytest.mark.realdem
def test_dem_info_real_tile(srtm_dir, capsys):
    assert main(["dem", "info", str(srtm_dir / "N46E007.SRTMGL3.hgt.zip")]) == 0
    out = capsys.readouterr().out
    assert "lon 6.99958 .. 8.00042, lat 45.99958 .. 47.00042" in out
