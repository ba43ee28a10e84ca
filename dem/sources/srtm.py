"""SRTM ``.hgt`` / ``.hgt.zip`` tiles (e.g. ``N46E007.hgt``, ``N46E007.SRTMGL3.hgt.zip``).

Format: a square grid of big-endian int16 metres (EGM96 geoid), rows north to south, no header.
The tile's south-west *cell centre* sits on the whole degrees given by the file name, and the grid
spans exactly one degree of cell centres: 1201 x 1201 cells at 3" (SRTM3) or 3601 x 3601 at 1"
(SRTM1); the resolution is detected from the byte size. Cells are pixel-is-point, so the cell-edge
footprint extends half a cell beyond the degree square and neighbouring tiles share their edge
rows/columns. Voids are -32768.
"""

from __future__ import annotations

import logging
import re
import zipfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
from affine import Affine

from crosslocate.dem import geodesy
from crosslocate.dem.mosaic import TileSource
from crosslocate.errors import DEMReadError
from crosslocate.fileio import file_sha256

logger = logging.getLogger(__name__)

#: Void marker of SRTM files.
SRTM_VOID: int = -32768
#: Cells per side -> arc-seconds.
SRTM_SIZES: dict[int, int] = {1201: 3, 3601: 1}
_NAME = re.compile(r"^([NS])(\d{2})([EW])(\d{3})", re.IGNORECASE)
_WGS84 = geodesy.crs_wkt("EPSG:4326")


def parse_tile_name(path: Path) -> tuple[int, int]:
    """``(lon0, lat0)`` whole degrees of the south-west cell centre from a name like ``N46E007...``."""
    m = _NAME.match(path.name)
    if m is None:
        raise DEMReadError(
            f"{path.name}: not an SRTM tile name; expected e.g. N46E007.hgt or N46E007.SRTMGL3.hgt.zip "
            "(the name gives the tile origin); rename the file or convert it to GeoTIFF"
        )
    lat = int(m.group(2)) * (1 if m.group(1).upper() == "N" else -1)
    lon = int(m.group(4)) * (1 if m.group(3).upper() == "E" else -1)
    if not (-180 <= lon < 180 and -90 <= lat < 90):
        raise DEMReadError(f"{path.name}: tile origin lon={lon} lat={lat} is out of range")
    return lon, lat


def _expected_sizes() -> str:
    return " or ".join(f'{2 * n * n:,} ({s}")' for n, s in SRTM_SIZES.items())


class SRTMTile(TileSource):
    """One SRTM tile, read whole (a 3" tile is 2.9 MB) on first access, lazily.

    Parameters
    ----------
    path : Path
        ``.hgt`` or a ``.zip`` containing exactly one ``.hgt`` member.
    """

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._path = Path(path)
        if not self._path.is_file():
            raise DEMReadError(f"{path}: no such file")
        self.lon0, self.lat0 = parse_tile_name(self._path)
        nbytes = self._member_size()
        n = next((k for k in SRTM_SIZES if 2 * k * k == nbytes), None)
        if n is None:
            raise DEMReadError(f"{self._hgt_name}: {nbytes:,} bytes, expected {_expected_sizes()}; truncated download?")
        self.n = n
        self.arcsec = SRTM_SIZES[n]
        res = 1.0 / (n - 1)
        self.transform = Affine(res, 0.0, self.lon0 - res / 2, 0.0, -res, self.lat0 + 1 + res / 2)
        self.shape = (n, n)
        self.crs_wkt = _WGS84
        self.block_px = n
        self.synthetic = False
        self.tags = {}

    @property
    def _hgt_name(self) -> str:
        return getattr(self, "_member", None) or self._path.name

    def _member_size(self) -> int:
        if self._path.suffix.lower() != ".zip":
            return self._path.stat().st_size
        try:
            with zipfile.ZipFile(self._path) as zf:
                members = [i for i in zf.infolist() if i.filename.lower().endswith(".hgt")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DEMReadError(f"{self._path}: not a readable zip archive ({exc}); re-download the tile") from exc
        if len(members) != 1:
            raise DEMReadError(f"{self._path}: expected exactly one .hgt member, found {len(members)}")
        self._member: str | None = members[0].filename
        return int(members[0].file_size)

    def _bytes(self) -> bytes:
        if self._path.suffix.lower() != ".zip":
            return self._path.read_bytes()
        try:
            with zipfile.ZipFile(self._path) as zf:
                return zf.read(self._hgt_name)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DEMReadError(
                f"{self._path}: corrupt zip member {self._hgt_name} ({exc}); re-download the tile"
            ) from exc

    def read_raw(self) -> npt.NDArray[np.int16]:
        """The whole tile as (n, n) int16 metres (native byte order), voids = :data:`SRTM_VOID`."""
        data = self._bytes()
        if len(data) != 2 * self.n * self.n:
            raise DEMReadError(
                f"{self._hgt_name}: {len(data):,} bytes, expected {_expected_sizes()}; truncated download?"
            )
        return np.frombuffer(data, dtype=">i2").reshape(self.n, self.n).astype(np.int16)

    def read(self, row0: int, row1: int, col0: int, col1: int) -> npt.NDArray[np.float32]:
        raw = self.read_raw()[row0:row1, col0:col1]
        out = raw.astype(np.float32)
        out[raw == SRTM_VOID] = np.nan
        return out

    def checksum(self) -> str:
        return file_sha256(self._path)
