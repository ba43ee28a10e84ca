"""`crosslocate render-view` in process on a tiny analytic GeoTIFF."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.dem import geodesy
from crosslocate.pipelines.cli import main


@pytest.fixture
def cone_tif(tmp_path):
    """A 2000 m cone (radius 3 km) on 0 m, 12 km x 12 km, 100 m cells, UTM 32N around 9 E 46 N."""
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    n, s = 120, 100.0
    cx, cy = geodesy.transform_xy(9.0, 46.0, "EPSG:4326", "EPSG:32632")
    off = (np.arange(n) + 0.5) * s - n * s / 2
    r = np.hypot(off[None, :], off[:, None])
    z = (2000.0 * np.maximum(0.0, 1.0 - r / 3000.0)).astype(np.float32)
    path = tmp_path / "cone.tif"
    tr = Affine(s, 0.0, float(cx) - n * s / 2, 0.0, -s, float(cy) + n * s / 2)
    with rasterio.open(
        path, "w", driver="GTiff", width=n, height=n, count=1, dtype="float32", crs="EPSG:32632", transform=tr
    ) as ds:
        ds.write(z, 1)
    return path


def test_render_view_writes_arrays_previews_and_mosaic(tmp_path, cone_tif, capsys):
    out = tmp_path / "out"
    args = ["render-view", "--dem", str(cone_tif), "--lat", "46.0", "--lon", "8.96"]
    args += ["--yaw", "90", "270", "--size", "24", "--range-km", "6", "-o", str(out)]
    assert main(args) == 0
    assert str(out) in capsys.readouterr().out
    names = {p.name for p in out.iterdir()}
    for yaw in ("yaw090", "yaw270"):
        for m in ("depth", "silhouette", "semantic"):
            assert f"{yaw}_{m}.npy" in names and f"{yaw}_{m}.png" in names
    assert "mosaic.png" in names
    depth = np.load(out / "yaw090_depth.npy")
    assert depth.shape == (24, 24) and depth.dtype == np.float32
    assert (depth > 0).any()  # the cone (3.1 km east, 2000 m high; camera 1.7 m above ground) is in view
    assert np.load(out / "yaw090_semantic.npy").dtype == np.uint8
    # refuses to write into a non-empty directory without --overwrite
    assert main(args) == 2
    assert main([*args, "--overwrite", "--modalities", "depth", "--yaw", "0"]) == 0


def test_render_view_bad_input(tmp_path, cone_tif, capsys):
    base = ["render-view", "--dem", str(cone_tif), "--size", "8", "-o", str(tmp_path / "o")]
    assert main([*base, "--lat", "46.0", "--lon", "12.0"]) == 2
    assert "outside the DEM" in capsys.readouterr().err
    assert main([*base, "--lat", "46.0", "--lon", "9.0", "--modalities", "depth,rgb"]) == 2
    assert "unknown modality" in capsys.readouterr().err
    assert main([*base, "--lat", "46.0", "--lon", "9.0", "--fov", "190"]) == 2


def test_impossible_cameras_and_outputs_refused_before_any_work(tmp_path, cone_tif, capsys):
    import re

    out = tmp_path / "o"
    base = ["render-view", "--dem", str(cone_tif), "--lat", "46.0", "--lon", "9.0", "--size", "8", "-o", str(out)]
    assert main([*base, "--alt", "100"]) == 2  # the cone's apex (2000 m) is here
    err = capsys.readouterr().err
    m = re.search(r"altitude 100\.0 m is below the terrain, which is at ([\d.]+) m there", err)
    assert m and 1900.0 < float(m[1]) <= 2000.0  # the bilinear cone near its apex (cells 100 m)
    assert main([*base, "--alt", f"{float(m[1]) + 0.1:.1f}"]) == 2  # within the clearance: inside
    assert "is inside the terrain" in capsys.readouterr().err
    assert not out.exists()  # nothing written
    assert main([*base[:-4], "--size", "100000", "-o", str(out)]) == 2
    assert "1..4096 pixels" in capsys.readouterr().err
    (tmp_path / "file").write_text("keep me")
    assert main([*base[:-1], str(tmp_path / "file")]) == 2
    assert "is an existing file" in capsys.readouterr().err and (tmp_path / "file").read_text() == "keep me"
