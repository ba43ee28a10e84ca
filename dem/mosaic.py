"""The :class:`DEM`: a lazy mosaic of elevation tiles with vectorised sampling and land cover.

A DEM is a list of :class:`TileSource` objects that share one native CRS. Nothing is read when it is
opened: a call to :meth:`DEM.sample` finds the tile that holds each point, reads the covering
*blocks* of that tile (one read per block, voids filled, kept in a byte-bounded LRU cache) and
interpolates bilinearly in numpy. Large rasters are split into blocks of ``block_px`` cells that
overlap by one cell, so no read ever loads more than one block; SRTM tiles are one block each.

Conventions
-----------
* Native coordinates ``(x, y)`` are in ``crs_wkt`` (degrees lon/lat for SRTM, metres for UTM).
* Each tile's affine transform is corner-based (rasterio/GDAL). Values live at cell *centres*; an
  SRTM tile N46E007 has centres on 7..8 E / 46..47 N and a cell-edge footprint half a cell larger.
* Coverage is the cell-edge footprint of the tiles. Between the outermost cell centres and the
  footprint edge (half a cell), sampling extrapolates the edge value. Where tiles overlap (SRTM
  tiles share their edge rows) the tile whose centre hull holds the point wins.
* Elevations are metres above the source's vertical datum (SRTM: EGM96 geoid), float64, NaN outside.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from affine import Affine

from crosslocate.dem import geodesy, sampling
from crosslocate.dem.landcover import (
    LANDCOVER_NODATA,
    WORLDCOVER_MAPPING,
    LandCover,
    LandcoverRules,
    MappedLandcover,
    rule_landcover,
)
from crosslocate.errors import ConfigError, DEMReadError, OutsideCoverageError
from crosslocate.fileio import save_npy_atomic

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
WGS84_WKT = geodesy.crs_wkt("EPSG:4326")
#: Cells of context read around a block before filling voids.
FILL_MARGIN_PX = 16
#: Cells of context around a tile/block for the rule-based land cover (slope, basins, flow).
LANDCOVER_MARGIN_PX = 64


class TileSource(ABC):
    """One georeferenced elevation raster (a tile of a :class:`DEM`).

    Attributes
    ----------
    path : str
        File path or a descriptive name (``"<array:cone>"``).
    crs_wkt : str
        Native CRS as WKT.
    transform : affine.Affine
        Corner-based, north-up (``e < 0``) transform of the full raster.
    shape : (int, int)
        ``(H, W)`` cells.
    block_px : int
        Block edge length for cached reads; ``>= max(H, W)`` means one block.
    synthetic : bool
        True for generated terrain.
    tags : dict[str, str]
        Metadata (GeoTIFF tags; generator parameters for synthetic terrain).
    """

    path: str
    crs_wkt: str
    transform: Affine
    shape: tuple[int, int]
    block_px: int = 1 << 30
    synthetic: bool = False
    tags: Mapping[str, str] = {}

    @abstractmethod
    def read(self, row0: int, row1: int, col0: int, col1: int) -> npt.NDArray[np.floating[Any]]:
        """Raw cells ``[row0:row1, col0:col1]`` as float32 (or float64) metres with NaN at voids/nodata."""

    @abstractmethod
    def checksum(self) -> str:
        """sha256 hex digest identifying the tile's content (file bytes or generator parameters)."""

    @property
    def name(self) -> str:
        return Path(self.path).name

    def read_filled(self, row0: int, row1: int, col0: int, col1: int) -> npt.NDArray[np.floating[Any]]:
        """Cells ``[row0:row1, col0:col1]`` with voids filled (context of :data:`FILL_MARGIN_PX` cells)."""
        h, w = self.shape
        m = FILL_MARGIN_PX if self.block_px < max(h, w) else 0
        r0, r1, c0, c1 = max(0, row0 - m), min(h, row1 + m), max(0, col0 - m), min(w, col1 + m)
        raw = self.read(r0, r1, c0, c1)
        if np.isnan(raw).all():
            if r0 == 0 and c0 == 0 and r1 == h and c1 == w:
                raise DEMReadError(f"{self.path}: every cell is nodata/void; not a usable DEM tile (remove it)")
            return raw[row0 - r0 : row1 - r0, col0 - c0 : col1 - c0]
        filled, n_void = sampling.fill_voids(raw)
        if n_void:
            logger.debug("%s: filled %d void cells in rows %d:%d cols %d:%d", self.name, n_void, r0, r1, c0, c1)
        return filled[row0 - r0 : row1 - r0, col0 - c0 : col1 - c0]

    def stats(self) -> tuple[int, float, float]:
        """``(void_count, min_m, max_m)`` over the raw (unfilled) raster, read block by block."""
        h, w = self.shape
        step = min(max(h, w), max(self.block_px, 1024))
        n_void, lo, hi = 0, np.inf, -np.inf
        for r in range(0, h, step):
            for c in range(0, w, step):
                block = self.read(r, min(h, r + step), c, min(w, c + step))
                valid = np.isfinite(block)
                n_void += int(block.size - valid.sum())
                if valid.any():
                    lo, hi = min(lo, float(block[valid].min())), max(hi, float(block[valid].max()))
        if not np.isfinite(lo):
            raise DEMReadError(f"{self.path}: every cell is nodata/void; not a usable DEM tile (remove it)")
        return n_void, lo, hi

    def footprint(self) -> tuple[float, float, float, float]:
        """Cell-edge footprint ``(xmin, ymin, xmax, ymax)`` in the native CRS."""
        t, (h, w) = self.transform, self.shape
        xs = (t.c, t.c + t.a * w)
        ys = (t.f, t.f + t.e * h)
        return min(xs), min(ys), max(xs), max(ys)

    def spacing_m(self) -> tuple[float, float]:
        """Approximate ground spacing ``(dy_m, dx_m)`` (rows, cols) at the raster centre, metres."""
        t, (h, w) = self.transform, self.shape
        if geodesy.crs_is_geographic(self.crs_wkt):
            cx, cy = t.c + t.a * w / 2.0, t.f + t.e * h / 2.0
            dx = float(geodesy.geodesic_distance_m(cx, cy, cx + abs(t.a), cy))
            dy = float(geodesy.geodesic_distance_m(cx, cy, cx, cy + abs(t.e)))
            return dy, dx
        unit = geodesy.linear_unit_m(self.crs_wkt)
        return abs(t.e) * unit, abs(t.a) * unit


class ArraySource(TileSource):
    """An in-memory raster (analytic terrains, tests, generated regions before they are cached).

    Parameters
    ----------
    z : (H, W) float array
        Metres; NaN marks voids. Row 0 is north. Kept as float64 if given float64 (exact analytic
        terrains), else stored as float32.
    transform : affine.Affine
        Corner-based, north-up.
    crs : str
        Anything pyproj accepts ("EPSG:32632", WKT).
    name : str
        Used in messages and ``DEM.sources``.
    """

    def __init__(
        self,
        z: npt.ArrayLike,
        transform: Affine,
        crs: str,
        *,
        name: str = "<array>",
        synthetic: bool = True,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        arr = np.asarray(z)
        arr = arr.astype(np.float64 if arr.dtype == np.float64 else np.float32, copy=False)
        if arr.ndim != 2 or min(arr.shape) < 2:
            raise ConfigError(f"{name}: elevation array must be (H>=2, W>=2), got shape {arr.shape}")
        if transform.b != 0 or transform.d != 0 or transform.e >= 0 or transform.a <= 0:
            raise ConfigError(f"{name}: transform must be north-up without rotation, got {tuple(transform)[:6]}")
        self.z = arr
        self.transform = transform
        self.crs_wkt = geodesy.crs_wkt(crs)
        self.shape = (int(arr.shape[0]), int(arr.shape[1]))
        self.path = name
        self.synthetic = synthetic
        self.tags = dict(tags or {})

    def read(self, row0: int, row1: int, col0: int, col1: int) -> npt.NDArray[np.floating[Any]]:
        return np.array(self.z[row0:row1, col0:col1])

    def checksum(self) -> str:
        h = hashlib.sha256(np.ascontiguousarray(self.z).tobytes())
        h.update(repr(tuple(self.transform)[:6]).encode())
        h.update(self.crs_wkt.encode())
        return h.hexdigest()


class _BlockCache:
    """Thread-safe LRU of numpy arrays bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[Any, ...], npt.NDArray[Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> npt.NDArray[Any] | None:
        with self._lock:
            arr = self._items.get(key)
            if arr is not None:
                self._items.move_to_end(key)
            return arr

    def put(self, key: tuple[Any, ...], arr: npt.NDArray[Any]) -> None:
        with self._lock:
            if key in self._items:
                return
            self._items[key] = arr
            self._bytes += arr.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes


class DEM:
    """A lazy elevation mosaic (see the module docstring for conventions). Context manager.

    Parameters
    ----------
    tiles : sequence of TileSource
        All in one CRS (checked).
    cache_mb : float
        Upper bound of the block cache (elevation and land-cover blocks), MiB.
    """

    def __init__(self, tiles: Sequence[TileSource], *, cache_mb: float = 768.0) -> None:
        if not tiles:
            raise DEMReadError("no DEM tiles given; pass a .hgt/.hgt.zip/GeoTIFF path, a directory of tiles or 'demo'")
        crs0 = tiles[0].crs_wkt
        for t in tiles[1:]:
            if t.crs_wkt != crs0 and not geodesy.same_crs(t.crs_wkt, crs0):
                raise DEMReadError(
                    f"{t.path}: CRS {geodesy.crs_name(t.crs_wkt)} differs from {tiles[0].path} "
                    f"({geodesy.crs_name(crs0)}); reproject the tiles to one CRS (gdalwarp)"
                )
        self.tiles: tuple[TileSource, ...] = tuple(tiles)
        self.crs_wkt: str = crs0
        self._cache_mb = cache_mb
        self._cache = _BlockCache(int(cache_mb * 2**20))
        self._footprints = np.array([t.footprint() for t in self.tiles], dtype=np.float64)
        self._user_landcover: MappedLandcover | None = None
        self._checksum: str | None = None
        self._stats: tuple[int, float, float] | None = None

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Drop cached blocks (no file handles are held between reads)."""
        self._cache = _BlockCache(int(self._cache_mb * 2**20))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = _BlockCache(int(self._cache_mb * 2**20))

    def __repr__(self) -> str:
        w, s, e, n = self.bounds_lonlat
        return f"DEM({len(self.tiles)} tile(s), {geodesy.crs_name(self.crs_wkt)}, lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f})"

    # ------------------------------------------------------------------ metadata
    @property
    def sources(self) -> tuple[str, ...]:
        """Paths (or names) of the tiles."""
        return tuple(t.path for t in self.tiles)

    @property
    def synthetic(self) -> bool:
        """True when any tile is generated terrain."""
        return any(t.synthetic for t in self.tiles)

    @property
    def checksum(self) -> str:
        """sha256 over the tiles' checksums (file bytes, or generator parameters for synthetic tiles)."""
        if self._checksum is None:
            h = hashlib.sha256()
            for t in sorted(self.tiles, key=lambda t: t.path):
                h.update(t.checksum().encode())
            self._checksum = h.hexdigest()
        return self._checksum

    @property
    def bounds_native(self) -> tuple[float, float, float, float]:
        """Cell-edge footprint ``(xmin, ymin, xmax, ymax)`` of all tiles in the native CRS."""
        f = self._footprints
        return float(f[:, 0].min()), float(f[:, 1].min()), float(f[:, 2].max()), float(f[:, 3].max())

    @property
    def bounds_lonlat(self) -> tuple[float, float, float, float]:
        """``(west, south, east, north)`` degrees EPSG:4326 enclosing the cell-edge footprint."""
        xmin, ymin, xmax, ymax = self.bounds_native
        s = np.linspace(0.0, 1.0, 33)
        xs = np.concatenate([xmin + (xmax - xmin) * s, np.full(33, xmax), xmax - (xmax - xmin) * s, np.full(33, xmin)])
        ys = np.concatenate([np.full(33, ymin), ymin + (ymax - ymin) * s, np.full(33, ymax), ymax - (ymax - ymin) * s])
        lon, lat = geodesy.transform_xy(xs, ys, self.crs_wkt, WGS84_WKT)
        return float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())

    @property
    def resolution_m(self) -> float:
        """Approximate ground spacing in metres (mean of row/column spacing of the first tile)."""
        dy, dx = self.tiles[0].spacing_m()
        return 0.5 * (dy + dx)

    @property
    def transform(self) -> Affine:
        """Corner-based transform of the first tile (of the only tile for single-raster DEMs)."""
        return self.tiles[0].transform

    def info(self) -> dict[str, Any]:
        """Summary: bounds (lon/lat and native; cell-edge footprint), grid size, spacing, CRS, voids, range.

        ``void_count`` counts nodata cells in the raw tiles (they are filled by interpolation when read);
        this reads every tile once (block by block).
        """
        if self._stats is None:
            stats = [t.stats() for t in self.tiles]
            self._stats = (sum(s[0] for s in stats), min(s[1] for s in stats), max(s[2] for s in stats))
        t0 = self.tiles[0].transform
        xmin, ymin, xmax, ymax = self.bounds_native
        shape = (round((ymax - ymin) / abs(t0.e)), round((xmax - xmin) / abs(t0.a)))
        geographic = geodesy.crs_is_geographic(self.crs_wkt)
        dy_m, dx_m = self.tiles[0].spacing_m()
        return {
            "sources": list(self.sources),
            "n_tiles": len(self.tiles),
            "crs": geodesy.crs_name(self.crs_wkt),
            "crs_wkt": self.crs_wkt,
            "bounds_lonlat": list(self.bounds_lonlat),
            "bounds_native": [xmin, ymin, xmax, ymax],
            "bounds_convention": "cell-edge footprint (half a cell beyond the outermost cell centres)",
            "shape": list(shape),
            "spacing_native": [abs(t0.a), abs(t0.e)],
            "spacing_units": "deg" if geographic else "m",
            "spacing_m": [dx_m, dy_m],
            "void_count": self._stats[0],
            "elevation_min_m": self._stats[1],
            "elevation_max_m": self._stats[2],
            "synthetic": self.synthetic,
            "checksum": self.checksum,
            "tags": {k: v for t in self.tiles for k, v in t.tags.items()},
        }

    # ------------------------------------------------------------------ point location
    def to_native(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        """lon/lat degrees (EPSG:4326) to native ``(x, y)`` (float64, flattened to (N,))."""
        lon_a = np.asarray(lon, dtype=np.float64).reshape(-1)
        lat_a = np.asarray(lat, dtype=np.float64).reshape(-1)
        if lon_a.shape != lat_a.shape:
            raise ConfigError(f"lon and lat must have the same size, got {lon_a.size} and {lat_a.size}")
        return geodesy.transform_xy(lon_a, lat_a, WGS84_WKT, self.crs_wkt)

    def _locate(
        self, x: FloatArray, y: FloatArray
    ) -> Iterator[tuple[int, npt.NDArray[np.intp], FloatArray, FloatArray]]:
        """Yield ``(tile_index, point_indices, row_f, col_f)`` for every tile that owns points."""
        finite = np.isfinite(x) & np.isfinite(y)
        if not finite.any():
            return
        bx0, bx1 = x[finite].min(), x[finite].max()
        by0, by1 = y[finite].min(), y[finite].max()
        f = self._footprints
        cand = np.nonzero((f[:, 0] <= bx1) & (f[:, 2] >= bx0) & (f[:, 1] <= by1) & (f[:, 3] >= by0))[0]
        if len(self.tiles) == 1 and len(cand) == 1:
            row_f, col_f = sampling.centre_indices(self.tiles[0].transform, x, y)
            inside = sampling.inside_footprint(row_f, col_f, self.tiles[0].shape)
            if inside.all():
                yield 0, np.arange(x.size), row_f, col_f
            else:
                idx = np.nonzero(inside)[0]
                yield 0, idx, row_f[idx], col_f[idx]
            return
        todo = np.nonzero(finite)[0]
        for test in (sampling.inside_centres, sampling.inside_footprint):
            for ti in cand:
                if todo.size == 0:
                    return
                tile = self.tiles[ti]
                row_f, col_f = sampling.centre_indices(tile.transform, x[todo], y[todo])
                hit = test(row_f, col_f, tile.shape)
                if hit.any():
                    yield int(ti), todo[hit], row_f[hit], col_f[hit]
                    todo = todo[~hit]

    # ------------------------------------------------------------------ elevation
    def _block(self, ti: int, bi: int, bj: int) -> npt.NDArray[np.floating[Any]]:
        key = ("z", ti, bi, bj)
        arr = self._cache.get(key)
        if arr is None:
            tile = self.tiles[ti]
            r0, r1, c0, c1 = _block_bounds(tile, bi, bj)
            arr = tile.read_filled(r0, r1, c0, c1)
            self._cache.put(key, arr)
        return arr

    def _sample_tile(self, ti: int, row_f: FloatArray, col_f: FloatArray) -> FloatArray:
        tile = self.tiles[ti]
        h, w = tile.shape
        bsz = tile.block_px
        if bsz >= max(h, w):
            return sampling.bilinear(self._block(ti, 0, 0), row_f, col_f)
        r = np.clip(row_f, 0.0, h - 1.0)
        c = np.clip(col_f, 0.0, w - 1.0)
        bi = np.minimum(r.astype(np.intp), h - 2) // bsz
        bj = np.minimum(c.astype(np.intp), w - 2) // bsz
        key = bi * ((w + bsz - 1) // bsz) + bj
        out = np.empty(row_f.shape, np.float64)
        order = np.argsort(key, kind="stable")
        uniq, starts = np.unique(key[order], return_index=True)
        for k, (_u, s) in enumerate(zip(uniq, starts, strict=True)):
            sel = order[s : starts[k + 1] if k + 1 < len(starts) else None]
            i, j = int(bi[sel[0]]), int(bj[sel[0]])
            grid = self._block(ti, i, j)
            out[sel] = sampling.bilinear(grid, r[sel] - i * bsz, c[sel] - j * bsz)
        return out

    def sample_native(self, x: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Bilinear elevation (metres, float64, (N,)) at native coordinates; NaN outside coverage."""
        xa = np.asarray(x, dtype=np.float64).reshape(-1)
        ya = np.asarray(y, dtype=np.float64).reshape(-1)
        out = np.full(xa.shape, np.nan)
        for ti, idx, row_f, col_f in self._locate(xa, ya):
            out[idx] = self._sample_tile(ti, row_f, col_f)
        return out

    def sample(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> FloatArray:
        """Bilinear elevation at lon/lat degrees (EPSG:4326).

        Returns
        -------
        (N,) float64 metres above the DEM's vertical datum (inputs are flattened); NaN outside coverage
        or for non-finite input.
        """
        return self.sample_native(*self.to_native(lon, lat))

    def sample_xy(self, x: npt.ArrayLike, y: npt.ArrayLike, crs: str | None = None) -> FloatArray:
        """Bilinear elevation at projected ``(x, y)`` in ``crs`` (default: the native CRS); NaN outside."""
        if crs is None:
            return self.sample_native(x, y)
        xs, ys = geodesy.transform_xy(np.ravel(x), np.ravel(y), geodesy.crs_wkt(crs), self.crs_wkt)
        return self.sample_native(xs, ys)

    def elevation(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> FloatArray:
        """Like :meth:`sample` but raises :class:`OutsideCoverageError` naming the first uncovered point."""
        z = self.sample(lon, lat)
        bad = np.nonzero(~np.isfinite(z))[0]
        if bad.size:
            i = int(bad[0])
            lo, la = float(np.ravel(lon)[i]), float(np.ravel(lat)[i])
            w, s, e, n = self.bounds_lonlat
            raise OutsideCoverageError(
                f"point {i} (lon={lo:.6f}, lat={la:.6f}) is outside the DEM coverage "
                f"(lon {w:.5f}..{e:.5f}, lat {s:.5f}..{n:.5f}; {bad.size} of {z.size} points uncovered); "
                "add the missing tiles or choose points inside the DEM"
            )
        return z

    def covers(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        """(N,) bool: True where the point lies in a tile's cell-edge footprint."""
        x, y = self.to_native(lon, lat)
        out = np.zeros(x.shape, bool)
        for _, idx, _, _ in self._locate(x, y):
            out[idx] = True
        return out

    # ------------------------------------------------------------------ land cover
    def _landcover_block(self, ti: int, bi: int, bj: int) -> npt.NDArray[np.uint8]:
        key = ("lc", ti, bi, bj)
        arr = self._cache.get(key)
        if arr is None:
            tile = self.tiles[ti]
            r0, r1, c0, c1 = _block_bounds(tile, bi, bj)
            disk = self._landcover_cache_path(ti, bi, bj)
            arr = _load_cached_classes(disk, (r1 - r0, c1 - c0))
            if arr is None:
                m = LANDCOVER_MARGIN_PX
                rows = np.arange(r0 - m, r1 + m, dtype=np.float64)
                cols = np.arange(c0 - m, c1 + m, dtype=np.float64)
                cc, rr = np.meshgrid(cols + 0.5, rows + 0.5)
                t = tile.transform
                x, y = t.c + t.a * cc.ravel(), t.f + t.e * rr.ravel()
                z = self.sample_native(x, y).reshape(rr.shape)
                known = np.isfinite(z)
                if not known.all():
                    _, (ir, ic) = _nearest_fill_index(~known)
                    z = z[ir, ic]
                classes = rule_landcover(z, tile.spacing_m())
                arr = np.ascontiguousarray(classes[m:-m, m:-m])
                _save_cached_classes(disk, arr)
            self._cache.put(key, arr)
        return arr

    def _landcover_cache_path(self, ti: int, bi: int, bj: int) -> Path:
        """On-disk cache of a derived land-cover block, keyed by the mosaic content and the rules.

        Deriving classes (slope, flow accumulation) costs seconds per tile and every process that
        opens the DEM needs them (each dask worker, each command), so blocks are stored under
        ``$CROSSLOCATE_CACHE/landcover``.
        """
        from crosslocate.dem.sources.synthetic import cache_dir

        h = hashlib.sha256(self.checksum.encode())
        h.update(repr((LandcoverRules(), LANDCOVER_MARGIN_PX, ti, bi, bj, self.tiles[ti].block_px)).encode())
        return cache_dir() / "landcover" / f"lc-{h.hexdigest()[:24]}.npy"

    def landcover(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """Land-cover class of the nearest cell at lon/lat degrees (EPSG:4326).

        Returns
        -------
        (N,) uint8 :class:`~crosslocate.dem.landcover.LandCover` ids. Classes come from an attached user
        raster where it has a mapped code, else from :func:`rule_landcover` computed per tile/block
        (with a margin of :data:`LANDCOVER_MARGIN_PX` cells read across tile edges) and cached, so
        repeated calls agree. Points outside coverage get ``LANDCOVER_NODATA`` (255).
        """
        lon_a = np.asarray(lon, dtype=np.float64).reshape(-1)
        lat_a = np.asarray(lat, dtype=np.float64).reshape(-1)
        x, y = self.to_native(lon_a, lat_a)
        out = np.full(x.shape, LANDCOVER_NODATA, np.uint8)
        for ti, idx, row_f, col_f in self._locate(x, y):
            tile = self.tiles[ti]
            h, w = tile.shape
            r, c = sampling.nearest_index(row_f, col_f, tile.shape)
            bsz = min(max(h, w), tile.block_px)
            bi = np.minimum(r, h - 2) // bsz
            bj = np.minimum(c, w - 2) // bsz
            for i, j in set(zip(bi.tolist(), bj.tolist(), strict=True)):
                sel = (bi == i) & (bj == j)
                block = self._landcover_block(ti, i, j)
                out[idx[sel]] = block[r[sel] - i * bsz, c[sel] - j * bsz]
        if self._user_landcover is not None:
            user = self._user_landcover.classes(lon_a, lat_a)
            use = user != LANDCOVER_NODATA
            out[use] = user[use]
        return out

    def attach_landcover(self, path: str | Path, mapping: Mapping[int, LandCover | int] | None = None) -> None:
        """Use a user land-cover raster (e.g. ESA WorldCover, CORINE) for :meth:`landcover`.

        Parameters
        ----------
        path : path to a raster rasterio can open (any CRS); nearest-cell lookup.
        mapping : raster code -> LandCover; default :data:`~crosslocate.dem.landcover.WORLDCOVER_MAPPING`.
            Cells with unmapped codes or nodata fall back to the rule-based classes.
        """
        from crosslocate.dem.sources.geotiff import RasterTile

        tile = RasterTile(Path(path))
        self._user_landcover = MappedLandcover(tile, dict(mapping if mapping is not None else WORLDCOVER_MAPPING))
        self._cache = _BlockCache(int(self._cache_mb * 2**20))


def _load_cached_classes(path: Path, shape: tuple[int, int]) -> npt.NDArray[np.uint8] | None:
    """The cached block at ``path`` when it exists with the expected shape and dtype, else None."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if arr.shape != shape or arr.dtype != np.uint8:
        logger.warning("ignoring land-cover cache %s (shape %s, dtype %s)", path, arr.shape, arr.dtype)
        return None
    return np.ascontiguousarray(arr)


def _save_cached_classes(path: Path, arr: npt.NDArray[np.uint8]) -> None:
    """Write ``arr`` to ``path`` atomically (:func:`crosslocate.fileio.save_npy_atomic`); a failure only logs."""
    try:
        save_npy_atomic(path, arr)
    except OSError as exc:  # a cache: a full disk or a read-only cache folder only costs a recomputation
        logger.warning("could not cache land cover at %s: %s", path, exc)


def _block_bounds(tile: TileSource, bi: int, bj: int) -> tuple[int, int, int, int]:
    """Rows/cols ``[r0, r1), [c0, c1)`` of block ``(bi, bj)``; blocks overlap their neighbour by one cell."""
    h, w = tile.shape
    b = tile.block_px
    if b >= max(h, w):
        return 0, h, 0, w
    return bi * b, min(h, bi * b + b + 1), bj * b, min(w, bj * b + b + 1)


def _nearest_fill_index(mask: npt.NDArray[np.bool_]) -> tuple[Any, tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    from scipy import ndimage

    d, (ir, ic) = ndimage.distance_transform_edt(mask, return_distances=True, return_indices=True)
    return d, (ir, ic)
