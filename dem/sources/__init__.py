"""DEM sources: open SRTM tiles, GeoTIFFs (anything rasterio opens), directories, lists, or "demo".

``open_dem(src)`` picks a reader per file from :data:`SOURCES` (by suffix; anything else goes to
rasterio) and returns one lazy :class:`~crosslocate.dem.mosaic.DEM` over all tiles.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias

from crosslocate.dem.mosaic import DEM, TileSource
from crosslocate.dem.sources.geotiff import RasterTile
from crosslocate.dem.sources.srtm import SRTMTile
from crosslocate.errors import ConfigError, DEMReadError

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

__all__ = ["DEM", "DEMO", "SOURCES", "DemSource", "DemSpec", "open_dem", "open_tile"]


@dataclass(frozen=True, slots=True)
class DemSource:
    """Where a run's DEM comes from: the embedded demo region (no paths) or files / tile folders.

    Picklable and hashable (shard tasks carry it to dask workers, which open it once per process).
    Build one with :meth:`resolve`, the only place that knows "the demo region means the demo DEM".

    Attributes
    ----------
    paths : tuple of str
        Files (``.hgt``, ``.hgt.zip``, GeoTIFF, anything rasterio opens) or tile folders, as given
        (user-expanded); empty for the embedded synthetic region.
    """

    paths: tuple[str, ...] = ()

    @property
    def demo(self) -> bool:
        """True for the embedded synthetic region."""
        return not self.paths

    @property
    def spec(self) -> str | list[str]:
        """What :func:`open_dem` takes: ``"demo"`` or the list of paths."""
        return DEMO if self.demo else list(self.paths)

    def open(self, *, cache_mb: float = 768.0) -> DEM:
        """Open the DEM (:func:`open_dem`); the caller closes it (a DEM is a context manager)."""
        return open_dem(self.spec, cache_mb=cache_mb)

    def __str__(self) -> str:
        return DEMO if self.demo else " ".join(self.paths)

    @classmethod
    def resolve(cls, value: DemSpec | None, region_name: str | None = None) -> DemSource:
        """The DEM source of a run: ``value`` as given (path, list of paths, ``"demo"`` or a
        DemSource), or, when it is None or empty, the embedded DEM for the ``demo`` region.

        Raises
        ------
        ConfigError
            No DEM given for a region other than ``demo`` (only that one has an embedded DEM).
        """
        if isinstance(value, DemSource):
            return value
        items: list[str | os.PathLike[str]]
        if value is None or value == "":
            items = []
        elif isinstance(value, str | os.PathLike):
            items = [value]
        else:
            items = list(value)
        if not items:
            if region_name == DEMO:
                return cls()
            raise ConfigError(
                f"region {region_name!r} needs a DEM: pass --dem PATH (tile folder or files); "
                "only the demo region has an embedded DEM"
            )
        if any(os.fspath(i) == DEMO for i in items):
            if len(items) > 1:
                raise ConfigError(f"--dem: 'demo' cannot be combined with files ({[os.fspath(i) for i in items]})")
            return cls()
        return cls(tuple(os.path.expanduser(os.fspath(i)) for i in items))


#: Everything a user may pass as a DEM: a path, several paths, ``"demo"``, or a resolved source.
DemSpec: TypeAlias = "str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | DemSource"


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
