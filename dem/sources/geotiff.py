"""GeoTIFF and anything else rasterio/GDAL opens, read lazily in windows.

The file is opened briefly to read its metadata and again for each block read (no handle is held,
so a :class:`~crosslocate.dem.mosaic.DEM` can be pickled to workers). Band 1 is the elevation;
the dataset's nodata value and NaN mark voids. GeoTIFFs tagged ``AREA_OR_POINT=Point`` are handled
by GDAL (the transform is shifted to the corner convention). Tags ``synthetic=true`` mark generated
terrain; then the checksum covers the generator tags instead of the file bytes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import RasterioError
from rasterio.windows import Window

from crosslocate.dem import geodesy
from crosslocate.dem.mosaic import TileSource
from crosslocate.errors import DEMReadError
from crosslocate.fileio import atomic_path, file_sha256

logger = logging.getLogger(__name__)

#: Rasters larger than this (cells per side) are read in blocks of :data:`BLOCK_PX`.
WHOLE_READ_MAX_PX = 2048
BLOCK_PX = 1024
#: Tags that describe synthetic terrain (hashed for the checksum of a synthetic GeoTIFF).
SYNTHETIC_TAGS = ("synthetic", "generator", "generator_version", "seed", "params")


class RasterTile(TileSource):
    """One raster opened with rasterio (band 1).

    Parameters
    ----------
    path : Path
        GeoTIFF, VRT, or any GDAL-readable raster (also ``/vsizip/...`` style paths).
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        try:
            with rasterio.open(self.path) as ds:
                crs, transform, shape = ds.crs, ds.transform, (ds.height, ds.width)
                self.nodata = ds.nodata
                self.tags = {k.lower(): str(v) for k, v in ds.tags().items()}
                count = ds.count
        except RasterioError as exc:
            raise DEMReadError(f"{path}: cannot open raster ({exc}); is it a GeoTIFF/HGT and complete?") from exc
        if count < 1:
            raise DEMReadError(f"{path}: raster has no bands")
        if crs is None:
            raise DEMReadError(
                f"{path}: raster has no CRS (unknown georeferencing); assign one, e.g. "
                "`gdal_edit.py -a_srs EPSG:4326 FILE`"
            )
        if transform.b != 0 or transform.d != 0 or transform.e >= 0 or transform.a <= 0:
            raise DEMReadError(f"{path}: rotated or south-up rasters are not supported; warp it north-up (gdalwarp)")
        self.crs_wkt = geodesy.crs_wkt(crs.to_wkt())
        self.transform = transform
        self.shape = (int(shape[0]), int(shape[1]))
        self.block_px = BLOCK_PX if max(self.shape) > WHOLE_READ_MAX_PX else max(self.shape)
        self.synthetic = self.tags.get("synthetic", "").lower() == "true"

    def read(self, row0: int, row1: int, col0: int, col1: int) -> npt.NDArray[np.float32]:
        window = Window(col0, row0, col1 - col0, row1 - row0)  # type: ignore[no-untyped-call]
        try:
            with rasterio.open(self.path) as ds:
                masked = ds.read(1, window=window, masked=True)
        except RasterioError as exc:
            raise DEMReadError(f"{self.path}: read failed at rows {row0}:{row1}, cols {col0}:{col1} ({exc})") from exc
        out = np.asarray(
            masked.filled(np.nan) if masked.dtype.kind == "f" else masked.astype(np.float32).filled(np.nan)
        )
        return np.asarray(out, dtype=np.float32)

    def checksum(self) -> str:
        h = hashlib.sha256()
        if self.synthetic:
            h.update(json.dumps({k: self.tags.get(k) for k in SYNTHETIC_TAGS}, sort_keys=True).encode())
            return h.hexdigest()
        return file_sha256(self.path)


def write_geotiff(
    path: Path,
    z: npt.ArrayLike,
    transform: object,
    crs: str,
    *,
    tags: dict[str, str] | None = None,
    nodata: float | None = None,
) -> Path:
    """Write ``z (H, W)`` as a float32 (or the array's integer dtype) GeoTIFF, atomically.

    The raster goes to a temporary file next to ``path`` and is moved into place atomically
    (:func:`crosslocate.fileio.atomic_path`), so a reader never sees a half-written file. ``transform`` is a corner-based ``affine.Affine``;
    ``crs`` anything rasterio accepts. Returns ``path``.
    """
    arr = np.asarray(z)
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    path = Path(path)
    profile = {
        "driver": "GTiff",
        "height": arr.shape[0],
        "width": arr.shape[1],
        "count": 1,
        "dtype": arr.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    if arr.dtype.kind == "f":
        profile["predictor"] = 3
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(arr, 1)
        if tags:
            dst.update_tags(**tags)
    return path
