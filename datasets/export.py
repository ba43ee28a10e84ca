"""Database views and query photos as plain image folders that other tools read (no torch).

**VPR-methods-evaluation layout** (gmberton/VPR-methods-evaluation, and the folders of
gmberton/VPR-datasets-downloader that it reads): ``database/`` and ``queries/`` folders whose file
names carry the labels, fields separated by ``@``::

    @UTM_east@UTM_north@UTM_zone_number@UTM_zone_letter@lat@lon@pano_id@tile_num@heading@pitch@roll@height@timestamp@note@.png

The framework splits the whole path on ``@`` and reads fields 1 and 2 (easting, northing, metres)
as floats; a query's positives are the database images within a radius (25 m by default) in that
plane. What we write in each field:

==============  ==========================================================================
field           value
==============  ==========================================================================
UTM_east/north  metres, ``%010.2f`` (zero padded, 2 decimals), **one zone for the whole export**
                (the zone of the database's centre, extended past its 6° band where needed) so
                the framework's plane distances are right across zone borders
zone number     that zone, ``%02d``; zone letter: the point's own latitude band (C..X)
lat / lon       degrees EPSG:4326, ``%09.5f`` / ``%010.5f``
pano_id         database: the ``position_id``; queries: ``q`` + the query's row index (``q000012``)
tile_num        database: the yaw index within the position (``%02d``, ``view_id % n_yaws``); queries: empty
heading         yaw, degrees clockwise from north, wrapped to [0, 360) and truncated (``%03d``)
pitch / roll    degrees, truncated towards zero (``%03d``: ``-05``)
height          camera altitude above the DEM datum, metres (``%.1f``)
timestamp       empty
note            the modality (``depth``, ``silhouette``, ``semantic``) or ``photo`` for queries
extension       ``.png`` (query photos keep ``.jpg``/``.jpeg``/``.png``; others become ``.png``)
==============  ==========================================================================

**Pixel encodings** (all PNG, row 0 at the top):

* depth, ``log16`` (default): 16-bit grey, ``v = 0`` sky, otherwise
  ``depth_m = exp((v - 1) / DEPTH_LOG16_SCALE)`` (4096 codes per natural-log unit: 1 m .. 8,900 km,
  relative step 2.4e-4; depths below 1 m are stored as 1 m). Decode with
  ``np.where(v == 0, -1.0, np.exp((v - 1.0) / 4096.0))``. Note: a reader that converts the PNG to
  8-bit RGB (PIL ``convert("RGB")``, as both gmberton frameworks do) clips it; export ``gray8``
  for those.
* depth, ``gray8``: 8-bit grey with the photos' polarity: ``v = 255`` sky, otherwise
  ``v = 1 + round(253 * clip(ln(depth_m / 10) / ln(10^4), 0, 1))`` (10 m → 1 dark, 100 km → 254).
* silhouette: 8-bit grey, 0 or 255. semantic: 8-bit palette PNG whose indices are the
  :class:`~crosslocate.dem.landcover.LandCover` ids (so ``np.asarray(Image.open(p))`` gives the
  ids back) and whose palette is :func:`~crosslocate.datasets.schema.semantic_palette`.

Files are written one by one, atomically (:mod:`crosslocate.fileio`); a file that exists
is complete, so an interrupted export resumes by skipping existing names.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import Modality, parse_modality, semantic_palette
from crosslocate.errors import ConfigError
from crosslocate.fileio import atomic_path, atomic_write, write_bytes_atomic
from crosslocate.progress import Progress

logger = logging.getLogger(__name__)

#: Fields of a VPR-datasets file name, in order (index i + 1 after ``path.split("@")``).
VPR_FIELDS: tuple[str, ...] = (
    "utm_east",
    "utm_north",
    "utm_zone_number",
    "utm_zone_letter",
    "lat",
    "lon",
    "pano_id",
    "tile_num",
    "heading",
    "pitch",
    "roll",
    "height",
    "timestamp",
    "note",
)
#: Codes per natural-log unit of the ``log16`` depth PNG.
DEPTH_LOG16_SCALE: float = 4096.0
#: ``gray8`` depth: the depths mapped to the darkest and brightest terrain value, metres.
DEPTH_GRAY8_RANGE_M: tuple[float, float] = (10.0, 100_000.0)
#: Depth PNG encodings (see the module docstring).
DEPTH_PNG_ENCODINGS: tuple[str, ...] = ("log16", "gray8")
#: Photo extensions the VPR framework reads as they are.
PHOTO_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png")
#: Rows of views read from the database at a time while exporting.
CHUNK_VIEWS: int = 64


def depth_to_log16(depth: npt.ArrayLike) -> npt.NDArray[np.uint16]:
    """(H, W) float depth in metres (sky < 0) -> (H, W) uint16 ``log16`` codes (0 = sky)."""
    d = np.asarray(depth, np.float64)
    sky = ~(d >= 0.0)
    code = 1.0 + np.rint(np.log(np.maximum(np.where(sky, 1.0, d), 1.0)) * DEPTH_LOG16_SCALE)
    return np.where(sky, 0, np.minimum(code, 65535)).astype(np.uint16)


def log16_to_depth(code: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Inverse of :func:`depth_to_log16`: metres, sky = -1."""
    c = np.asarray(code, np.float64)
    return np.where(c == 0, -1.0, np.exp((c - 1.0) / DEPTH_LOG16_SCALE)).astype(np.float32)


def depth_to_gray8(depth: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(H, W) float depth in metres (sky < 0) -> (H, W) uint8, 255 sky, 1 (near) .. 254 (far)."""
    d = np.asarray(depth, np.float64)
    sky = ~(d >= 0.0)
    lo, hi = DEPTH_GRAY8_RANGE_M
    t = np.clip(np.log(np.maximum(np.where(sky, lo, d), 1e-3) / lo) / math.log(hi / lo), 0.0, 1.0)
    return np.where(sky, 255, 1 + np.rint(253.0 * t)).astype(np.uint8)


def view_png(modality: Modality | str, array: npt.ArrayLike, depth_png: str = "log16") -> bytes:
    """PNG bytes of one decoded view (see the module docstring for each modality's encoding).

    Exported PNGs are a format of their own (not the previews), so each modality's encoding is
    spelled out here; a modality without one is refused.
    """
    from PIL import Image

    mod = parse_modality(modality)
    a = np.asarray(array)
    if a.ndim != 2:
        raise ConfigError(f"view_png: expected an (H, W) {mod.value} view, got shape {a.shape}")
    if mod is Modality.DEPTH:
        if depth_png not in DEPTH_PNG_ENCODINGS:
            raise ConfigError(f"depth PNG encoding {depth_png!r}: choose one of {', '.join(DEPTH_PNG_ENCODINGS)}")
        img = Image.fromarray(depth_to_log16(a) if depth_png == "log16" else depth_to_gray8(a))
    elif mod is Modality.SILHOUETTE:
        img = Image.fromarray(np.where(a > 0, 255, 0).astype(np.uint8))
    elif mod is Modality.SEMANTIC:
        img = Image.fromarray(a.astype(np.uint8), mode="P")
        img.putpalette(semantic_palette().astype(np.uint8).reshape(-1).tolist())
    else:
        raise ConfigError(f"no PNG export encoding for {mod.value} views; add one to datasets/export.py")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _fmt_coord(value: float, left: int, right: int) -> str:
    """Zero-padded fixed point with ``left`` integer digits (sign included) and ``right`` decimals."""
    return f"{float(value):0={left + right + 1}.{right}f}"


def vpr_name(
    *,
    east_m: float,
    north_m: float,
    zone: int,
    band: str,
    lat: float,
    lon: float,
    pano_id: str,
    tile_num: int | None,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float,
    alt_m: float,
    note: str,
    ext: str = ".png",
) -> str:
    """One file name of the VPR-datasets convention (fields and formats: the module docstring)."""
    for name, text in (("pano_id", pano_id), ("note", note), ("ext", ext)):
        if "@" in text or "/" in text:
            raise ConfigError(f"vpr_name: {name} {text!r} must not contain '@' or '/'")
    fields = (
        _fmt_coord(east_m, 7, 2),
        _fmt_coord(north_m, 7, 2),
        f"{int(zone):02d}",
        band,
        _fmt_coord(lat, 3, 5),
        _fmt_coord(lon, 4, 5),
        pano_id,
        "" if tile_num is None else f"{int(tile_num):02d}",
        f"{int(float(yaw_deg) % 360.0):03d}",
        f"{int(pitch_deg):03d}",
        f"{int(roll_deg):03d}",
        f"{float(alt_m):.1f}",
        "",
        note,
    )
    return "@" + "@".join(fields) + "@" + ext


@dataclass(frozen=True, slots=True)
class ImageJobs:
    """Files an export writes: database views (by view index) and query photos (by source path).

    Attributes
    ----------
    view_index : (n,) int64
        Database view indices (global, as :meth:`Database.read_batch` takes them).
    view_path : callable
        ``view_path(k)`` is the destination of view ``view_index[k]``; called per chunk, so the
        names of a multi-million-view export never sit in memory together.
    photo_src, photo_dst : list of Path
        Query photos and their destinations.
    """

    view_index: npt.NDArray[np.int64]
    view_path: Callable[[int], Path]
    photo_src: list[Path]
    photo_dst: list[Path]


def write_images(
    db: Any, modality: Modality | str, jobs: ImageJobs, *, depth_png: str = "log16", desc: str = "export"
) -> dict[str, int]:
    """Write every missing file of ``jobs`` (existing names are complete: they were written atomically).

    Views go in storage order, :data:`CHUNK_VIEWS` at a time (only the missing ones are read), so
    memory stays flat for any database size; progress counts every file, skipped ones included.
    Returns ``{"written": n, "skipped": n}``.
    """
    if len(jobs.photo_src) != len(jobs.photo_dst):
        raise ConfigError("write_images: photo sources and destinations differ in length")
    order = np.argsort(jobs.view_index, kind="stable")
    written = skipped = 0
    with Progress(len(order) + len(jobs.photo_dst), desc, "file") as bar:
        for start in range(0, len(order), CHUNK_VIEWS):
            chunk = [(int(k), jobs.view_path(int(k))) for k in order[start : start + CHUNK_VIEWS]]
            todo = [(k, dst) for k, dst in chunk if not dst.exists()]
            skipped += len(chunk) - len(todo)
            if todo:
                arrays = db.read_batch(modality, np.array([jobs.view_index[k] for k, _ in todo], np.int64))
                for (_, dst), arr in zip(todo, arrays, strict=True):
                    write_bytes_atomic(dst, view_png(modality, arr, depth_png))
                written += len(todo)
            bar.update(len(chunk))
        for src, dst in zip(jobs.photo_src, jobs.photo_dst, strict=True):
            if dst.exists():
                skipped += 1
            else:
                copy_photo(src, dst)
                written += 1
            bar.update()
    if skipped:
        logger.info("%s: %d file(s) already complete, skipped", desc, skipped)
    return {"written": written, "skipped": skipped}


def photo_suffix(src: str | os.PathLike[str]) -> str:
    """Extension a copied photo gets: its own when the VPR framework reads it, else ``.png``."""
    suffix = Path(src).suffix.lower()
    return suffix if suffix in PHOTO_SUFFIXES else ".png"


def copy_photo(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> Path:
    """Copy a photo atomically; re-encode to PNG when the destination suffix differs from the source's."""
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ConfigError(f"query photo {src} does not exist; fix the query CSV's image column")
    with atomic_path(dst) as tmp:
        if src.suffix.lower() == dst.suffix.lower():
            shutil.copyfile(src, tmp)
        else:
            from PIL import Image

            with Image.open(src) as im:
                im.convert("RGB").save(tmp, format="PNG")
    return dst


def remove_named(folder: Path, pattern: str) -> int:
    """Delete files matching ``pattern`` directly in ``folder`` (used by ``--overwrite``); returns the count."""
    n = 0
    for p in sorted(folder.glob(pattern)) if folder.is_dir() else []:
        if p.is_file():
            p.unlink()
            n += 1
    return n


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """A text file of ``lines`` (one per line, streamed), written atomically."""
    with atomic_write(path, "w") as fh:
        for line in lines:
            fh.write(line + "\n")
    return path


__all__ = [
    "DEPTH_LOG16_SCALE",
    "DEPTH_PNG_ENCODINGS",
    "VPR_FIELDS",
    "ImageJobs",
    "copy_photo",
    "depth_to_gray8",
    "depth_to_log16",
    "log16_to_depth",
    "photo_suffix",
    "remove_named",
    "view_png",
    "vpr_name",
    "write_images",
    "write_lines",
]
