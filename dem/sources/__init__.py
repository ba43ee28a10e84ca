"""DEM sources: open SRTM tiles, GeoTIFFs (anything rasterio opens), directories, lists, or "demo".

``open_dem(src)`` picks a reader per file from :data:`SOURCES` (by suffix; anything else goes to
rasterio) and returns one lazy :class:`~crosslocate.dem.mosaic.DEM` over all tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from crosslocate.dem.mosaic import DEM, TileSource
from crosslocate.dem.sources.geotiff import RasterTile
from crosslocate.dem.sources.srtm import SRTMTile
from crosslocate.errors import DEMReadError

logger = logging.getLogger(__name__)

#: File-name suffix (lower case) -> tile reader; the first matching suffix wins.
SOURCES: dict[str, Callable[[Path], TileSource]] = {
    ".hgt.zip": SRTMTile,
    ".hgt": SRTMTile,
    ".tif": RasterTile,
    ".tiff": RasterTile,
    ".vrt": RasterTile,
    ".img": RasterTile,
    ".asc": RasterTile,
}
#: Name of the embedded synthetic region.
DEMO = "demo"

__all__ = ["DEM", "DEMO", "SOURCES", "open_dem", "open_tile"]


def open_tile(path: Path) -> TileSource:
    """Open one raster file with the reader registered for its suffix (rasterio for unknown ones)."""
    name = path.name.lower()
    reader = next((r for s, r in SOURCES.items() if name.endswith(s)), RasterTile)
    return reader(path)


def _expand(src: str | Path) -> list[Path]:
    path = Path(src).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and any(p.name.lower().endswith(s) for s in SOURCES))
        if not files:
            raise DEMReadError(f"{path}: directory holds no DEM tiles ({', '.join(SOURCES)})")
        return files
    if not path.exists():
        raise DEMReadError(f"{path}: no such file or directory; give a .hgt/.hgt.zip/GeoTIFF, a tile folder or 'demo'")
    return [path]


def open_dem(src: str | Path | Sequence[str | Path], *, cache_mb: float = 768.0) -> DEM:
    """Open a DEM lazily.

    Parameters
    ----------
    src : str | Path | sequence of them
        A file (``.hgt``, ``.hgt.zip``, GeoTIFF or anything rasterio opens), a directory of tiles,
        a list of files/directories, or ``"demo"`` for the embedded synthetic alpine region
        (generated on first use and cached under ``$CROSSLOCATE_CACHE`` or ``~/.cache/crosslocate``).
    cache_mb : float
        Size bound of the DEM's block cache, MiB.
    """
    if isinstance(src, str) and src == DEMO:
        from crosslocate.dem.sources.synthetic import demo_dem

        return demo_dem()
    items = [src] if isinstance(src, str | Path) else list(src)
    paths = [p for item in items for p in _expand(item)]
    tiles = [open_tile(p) for p in paths]
    logger.debug("opened %d DEM tile(s)", len(tiles))
    return DEM(tiles, cache_mb=cache_mb)
