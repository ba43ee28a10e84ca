"""DEM test fixtures: synthetic SRTM tiles built while the tests run, and an isolated cache dir."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SRTM3_N = 1201


def global_pattern(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Elevation of the hand-made test tiles: linear in the global cell index (exact in int16).

    ``col = (lon - 7) * 1200``, ``row = (47 - lat) * 1200``, value = ``col + 2 * row`` metres.
    """
    return (np.asarray(lon) - 7.0) * 1200.0 + 2.0 * (47.0 - np.asarray(lat)) * 1200.0


def tile_array(lon0: int, lat0: int, n: int = SRTM3_N) -> np.ndarray:
    """The (n, n) int16 grid of tile (lon0, lat0): cell [r, c] centre at lon0 + c/(n-1), lat0 + 1 - r/(n-1)."""
    r, c = np.mgrid[0:n, 0:n]
    lon = lon0 + c / (n - 1)
    lat = lat0 + 1 - r / (n - 1)
    return np.rint(global_pattern(lon, lat)).astype(np.int16)


@pytest.fixture
def make_hgt(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a (zipped) SRTM3 tile with :func:`global_pattern` values and optional voids."""

    def _make(
        name: str = "N46E007",
        *,
        zipped: bool = True,
        voids: list[tuple[slice, slice]] | None = None,
        truncate_to: int | None = None,
        data: np.ndarray | None = None,
        folder: Path | None = None,
    ) -> Path:
        lat0 = int(name[1:3]) * (1 if name[0] == "N" else -1)
        lon0 = int(name[4:7]) * (1 if name[3] == "E" else -1)
        arr = tile_array(lon0, lat0) if data is None else data.astype(np.int16)
        for rs, cs in voids or []:
            arr[rs, cs] = -32768
        raw = arr.astype(">i2").tobytes()
        if truncate_to is not None:
            raw = raw[:truncate_to]
        out_dir = folder or tmp_path
        out_dir.mkdir(parents=True, exist_ok=True)
        if not zipped:
            path = out_dir / f"{name}.hgt"
            path.write_bytes(raw)
            return path
        path = out_dir / f"{name}.SRTMGL3.hgt.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{name}.hgt", raw)
        return path

    return _make


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point $CROSSLOCATE_CACHE at a per-session temp dir so tests never touch ~/.cache."""
    path = tmp_path_factory.getbasetemp() / "crosslocate-cache"
    monkeypatch.setenv("CROSSLOCATE_CACHE", str(path))
    return path


@pytest.fixture(name="global_pattern")
def global_pattern_fixture() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The closed-form elevation of :func:`make_hgt` tiles (see :func:`global_pattern`)."""
    return global_pattern
