"""CrossLocate's own metadata ("meta structures"), both ways: a pickled dict in a ``.npy`` file.

The official code (JanTomesek/CrossLocate, ``core/Dataset.py``: ``loadFromMetaStructs`` /
``saveToMetaStructs``) loads ``datasets_meta/<name>/<meta>_<set>.npy`` (set = train, val, test)
with ``np.load(path).item()`` and reads these keys, each a sequence over the images:

=================  ===============================================================================
key                meaning (``q`` keys: the same for the queries)
=================  ===============================================================================
``dbImageFns``     file names, relative to the database image folder (ours: ``<position_id>_<yaw index
                   %02d>.png``; the code takes the part before ``_`` as the database id)
``dbIDs``          ids (ours: ``position_id``; queries: the row in the query CSV)
``dbPlaceNames``   names (ours: ``str(position_id)``; queries: the photo's file stem)
``dbWGS``          ``(lon, lat)`` degrees: ``Dataset.computeDistancesWGS`` passes column 1 as latitude
                   and column 0 as longitude to pymap3d's ``vdist(lat1, lon1, lat2, lon2)``
``dbUTM``          ``(easting, northing)`` metres (ours: one UTM zone for the whole export, named
                   by the extra key ``utmEPSG``; CrossLocate ignores extra keys)
``dbElevations``   camera altitude, metres above the DEM datum
``dbCameraParams`` ``(yaw, pitch, roll, horizontal FOV)`` in **radians**
=================  ===============================================================================

**Yaw.** CrossLocate's public code (``core/Dataset.py``) fixes only this much: radians, database
yaws in [0, 2π) (the class docstring's assumption), query yaws wrapped into [0, 2π]
(``getQueryYaw``), and yaw used only through wrapped differences ``min(|q − db|, 2π − |q − db|)``
(``computeYawDistances``), which any common rotation or mirror of both columns leaves unchanged.
The origin and direction are therefore set by nothing in that code (the repository holds no
dataset-creation scripts, and its published meta files were not available to us); its databases
render 12 views per location (README), which we take to be every 30° from yaw 0. We write crosslocate's convention, clockwise from north (:mod:`crosslocate.dem.poses`), in radians
wrapped to [0, 2π): database views at yaw index k are ``k · 30°`` = ``k · π/6``.

Reading (:func:`meta_queries`), ``yaw_convention`` (``queries import --yaw-convention``) names the
file's convention, one of :data:`YAW_CONVENTIONS`: ``cw-north`` (default: ours, and what ``crosslocate
export --format crosslocate`` writes), ``ccw-north`` (counter-clockwise from north: yaw → −yaw) or
``ccw-east`` (the mathematical angle from east: yaw → 90° − yaw). When the file also holds database
entries, their yaws are the evidence checked: the expected 12-yaw grid ``k · π/6`` from 0 (which
a convention whose origin is 0° or 90° from north keeps, in either direction; a database with other
evenly spaced yaws, ``k · 2π/n`` from 0, is accepted too). Yaws off every such grid
(an origin we do not know, e.g. a 15° offset) or outside [0, 2π) get a warning naming the file;
the direction itself cannot be read from the metadata, so a file from a tool that measures yaw
counter-clockwise imports correctly only with the matching ``--yaw-convention``.
A file whose FOV column exceeds π (degrees, not radians) or whose WGS and UTM columns disagree is
refused.

**Safety.** Loading a pickle runs code chosen by the file, so :func:`load_meta_npy` never calls
``np.load(allow_pickle=True)``: it parses the ``.npy`` header itself and unpickles with an
unpickler that resolves only numpy's array/dtype/scalar reconstructors (nothing else, no
builtins). **Compatibility.** The dict is written with pickle protocol 3 (Python ≥ 3.0) holding
only Python lists, floats, ints and strings, and the one numpy reference (the 0-d object array
around the dict) is named ``numpy.core.multiarray`` so numpy 1.x (CrossLocate used 1.16) loads it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.queries import Query
from crosslocate.dem.poses import Pose
from crosslocate.errors import ConfigError, ForeignFormatError
from crosslocate.fileio import write_bytes_atomic

logger = logging.getLogger(__name__)

#: Per-image keys, after the ``db`` / ``q`` prefix.
META_FIELDS: tuple[str, ...] = ("ImageFns", "IDs", "PlaceNames", "WGS", "UTM", "Elevations", "CameraParams")
#: The three meta structures of one database + query set.
META_SETS: tuple[str, ...] = ("train", "val", "test")
#: Largest median mismatch between a file's WGS and UTM columns that counts as agreement, metres.
WGS_UTM_TOLERANCE_M: float = 100.0
#: A file's yaw convention -> (sign, origin in degrees): our yaw = origin + sign · file yaw (module docstring).
YAW_CONVENTIONS: dict[str, tuple[float, float]] = {
    "cw-north": (1.0, 0.0),  # clockwise from north: crosslocate's own, what export writes
    "ccw-north": (-1.0, 0.0),  # counter-clockwise from north
    "ccw-east": (-1.0, 90.0),  # counter-clockwise from east (the mathematical angle in an east/north plane)
}
#: The convention read when none is named: crosslocate's, the one ``export --format crosslocate`` writes.
DEFAULT_YAW_CONVENTION: str = "cw-north"
#: Largest distance of a database yaw from its grid line that still counts as on the grid, degrees.
YAW_GRID_TOLERANCE_DEG: float = 0.01

_NUMPY_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    **{(f"numpy.{c}.multiarray", n): ("numpy._core.multiarray", n) for c in ("core", "_core") for n in ("_reconstruct", "scalar")},
    **{(f"numpy.{c}.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer") for c in ("core", "_core")},
}  # fmt: skip


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Resolves only numpy's reconstructors; any other global (os.system, builtins.eval, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        import importlib

        target = _NUMPY_GLOBALS.get((module, name))
        if target is None and module == "numpy.dtypes" and name.endswith("DType"):
            target = (module, name)
        if target is None:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only numpy arrays, dtypes and scalars are allowed"
            )
        return getattr(importlib.import_module(target[0]), target[1])


def load_meta_npy(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a CrossLocate meta structure (a pickled dict in ``.npy``) without running foreign code.

    Raises
    ------
    ForeignFormatError
        Not a ``.npy`` file, not a pickled dict, or a pickle that asks for anything but numpy
        arrays, dtypes and scalars.
    """
    path = Path(path)
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(fh)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(fh)
            else:
                raise ForeignFormatError(
                    f"{path}: .npy format version {version} is not supported (expected 1.0 or 2.0)"
                )
            if not dtype.hasobject:
                raise ForeignFormatError(
                    f"{path}: a plain {dtype} array of shape {shape}, not a pickled dict; "
                    "expected CrossLocate's datasets_meta structure"
                )
            obj = _NumpyOnlyUnpickler(fh).load()
    except ForeignFormatError:
        raise
    except OSError as exc:
        raise ForeignFormatError(f"{path}: cannot read ({exc})") from exc
    except ValueError as exc:  # bad magic or header
        raise ForeignFormatError(f"{path}: not a .npy file ({exc})") from exc
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError) as exc:
        raise ForeignFormatError(f"{path}: unsafe or broken pickle ({exc})") from exc
    item = obj.item() if isinstance(obj, np.ndarray) and obj.shape == () else obj
    if not isinstance(item, dict):
        raise ForeignFormatError(f"{path}: holds a {type(item).__name__}, expected CrossLocate's datasets_meta dict")
    return item


def save_meta_npy(path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write ``meta`` (plain Python values only) as a ``.npy`` numpy 1.x and 2.x load with ``.item()``; atomic."""
    holder = np.empty((), dtype=object)
    holder[()] = meta
    payload = pickle.dumps(holder, protocol=3)
    # protocol 3 names globals as text lines; numpy 2 says "numpy._core", which numpy 1.x cannot import
    payload = payload.replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(holder))
    return write_bytes_atomic(path, buf.getvalue() + payload)


def _camera_params(yaw_deg: Any, pitch_deg: Any, roll_deg: Any, fov_deg: Any) -> list[list[float]]:
    yaw = np.radians(np.asarray(yaw_deg, np.float64) % 360.0)
    rows = np.stack([yaw, np.radians(pitch_deg), np.radians(roll_deg), np.radians(fov_deg)], axis=1)
    return rows.astype(np.float64).tolist()


def meta_dict(
    db_rows: npt.NDArray[np.void],
    db_fns: Sequence[str],
    db_utm: npt.NDArray[np.float64],
    queries: Sequence[Query],
    q_ids: Sequence[int],
    q_fns: Sequence[str],
    q_utm: npt.NDArray[np.float64],
    utm_epsg: int,
) -> dict[str, Any]:
    """One meta structure (see the module docstring) from database rows and queries.

    Parameters
    ----------
    db_rows : (n,) ``VIEW_DTYPE`` rows of the views in this set.
    db_fns, q_fns : file names relative to the database / query image folders.
    db_utm, q_utm : (n, 2), (q, 2) float64 easting/northing, metres in ``EPSG:utm_epsg``.
    q_ids : the queries' row numbers in their CSV.
    """
    poses = [q.pose for q in queries]
    q_col = {k: np.array([getattr(p, k) for p in poses], np.float64) for k in Pose.__dataclass_fields__}
    return {
        "dbImageFns": list(db_fns),
        "dbIDs": [int(v) for v in db_rows["position_id"]],
        "dbPlaceNames": [str(int(v)) for v in db_rows["position_id"]],
        "dbWGS": np.stack([db_rows["lon"], db_rows["lat"]], axis=1).astype(np.float64).tolist(),
        "dbUTM": np.asarray(db_utm, np.float64).reshape(-1, 2).tolist(),
        "dbElevations": np.asarray(db_rows["alt_m"], np.float64).tolist(),
        "dbCameraParams": _camera_params(db_rows["yaw_deg"], db_rows["pitch_deg"], db_rows["roll_deg"], db_rows["fov_deg"]),
        "qImageFns": list(q_fns),
        "qIDs": [int(v) for v in q_ids],
        "qPlaceNames": [Path(q.image).stem for q in queries],
        "qWGS": np.stack([q_col["lon"], q_col["lat"]], axis=1).tolist() if poses else [],
        "qUTM": np.asarray(q_utm, np.float64).reshape(-1, 2).tolist(),
        "qElevations": q_col["alt_m"].tolist(),
        "qCameraParams": _camera_params(q_col["yaw_deg"], q_col["pitch_deg"], q_col["roll_deg"], q_col["fov_deg"]) if poses else [],
        "utmEPSG": int(utm_epsg),
    }  # fmt: skip


def _column(meta: dict[str, Any], key: str, path: Path, width: int | None) -> npt.NDArray[np.float64]:
    if key not in meta:
        found = ", ".join(sorted(map(str, meta))[:8])
        raise ForeignFormatError(f"{path}: no key {key!r} (found: {found}); not a CrossLocate datasets_meta dict")
    try:
        arr = np.asarray(meta[key], np.float64)
    except (TypeError, ValueError) as exc:
        raise ForeignFormatError(f"{path}: {key} is not numeric ({exc})") from exc
    shape_ok = arr.ndim == 1 if width is None else arr.ndim == 2 and arr.shape[1] == width
    if not shape_ok and arr.size:
        raise ForeignFormatError(
            f"{path}: {key} has shape {arr.shape}, expected (n,{'' if width is None else f' {width}'})"
        )
    if not np.all(np.isfinite(arr)):
        raise ForeignFormatError(f"{path}: {key} holds NaN or infinite values")
    return arr.reshape(-1) if width is None else arr.reshape(-1, width)


def _lonlat(
    wgs: npt.NDArray[np.float64], utm: npt.NDArray[np.float64], epsg: int | None, path: Path, key: str
) -> tuple[Any, Any]:
    """(lon, lat) from a WGS column whose order is checked against the UTM column (column order can be swapped)."""
    from crosslocate.dem.geodesy import transform_xy, utm_zone

    best: tuple[float, Any, Any, bool] | None = None
    for swapped, (lon, lat) in enumerate(((wgs[:, 0], wgs[:, 1]), (wgs[:, 1], wgs[:, 0]))):
        if np.any(np.abs(lat) > 90.0) or np.any(np.abs(lon) > 180.0):
            continue
        code = epsg or utm_zone(float(np.median(lon)), float(np.median(lat)))[2]
        e, n = transform_xy(lon, lat, "EPSG:4326", f"EPSG:{code}")
        err = float(np.median(np.hypot(e - utm[:, 0], n - utm[:, 1])))
        if best is None or err < best[0]:
            best = (err, lon, lat, bool(swapped))
    if best is None or best[0] > WGS_UTM_TOLERANCE_M:
        err = "no valid lon/lat order" if best is None else f"median {best[0]:.0f} m apart"
        raise ForeignFormatError(
            f"{path}: {key}WGS and {key}UTM disagree ({err}); expected (lon, lat) degrees and (easting, northing) metres"
        )
    if best[3]:
        logger.warning(
            "%s: %sWGS holds (lat, lon), not CrossLocate's (lon, lat); read it that way (checked against %sUTM)",
            path,
            key,
            key,
        )
    return best[1], best[2]


def yaw_grid(yaw_rad: npt.ArrayLike) -> int | None:
    """The grid of database yaws: 12 when every yaw (radians, any wrap) lies on CrossLocate's ``k · π/6``,
    else n when they lie on ``k · 2π/n`` for n = their number of distinct values; None when off both."""
    deg = np.degrees(np.asarray(yaw_rad, np.float64)) % 360.0
    if not deg.size:
        return 12
    distinct = np.unique(np.round(deg, 3) % 360.0).size
    for n in dict.fromkeys((12, distinct)):
        step = 360.0 / n
        r = deg / step
        if np.all(np.abs(r - np.round(r)) * step <= YAW_GRID_TOLERANCE_DEG):
            return n
    return None


def check_database_yaws(meta: dict[str, Any], path: Path) -> int | None:
    """Check a meta structure's database yaws against the grid (module docstring); warn when off it.

    Returns :func:`yaw_grid`'s n (None: off every grid, warned), or None when the file has no database
    entries. Raises ForeignFormatError for a malformed ``dbCameraParams`` column.
    """
    if not len(meta.get("dbCameraParams") or []):
        return None
    yaw = _column(meta, "dbCameraParams", path, 4)[:, 0]
    if np.any(yaw < 0) or np.any(yaw >= 2 * math.pi):
        logger.warning(
            "%s: dbCameraParams yaws span %.4g..%.4g rad, outside CrossLocate's [0, 2π); read modulo 2π",
            path,
            float(yaw.min()),
            float(yaw.max()),
        )
    n = yaw_grid(yaw)
    if n is None:
        deg = np.degrees(yaw) % 360.0
        off = np.abs(deg / 30.0 - np.round(deg / 30.0)) * 30.0 > YAW_GRID_TOLERANCE_DEG
        i = int(np.flatnonzero(off)[0])
        logger.warning(
            "%s: %d of %d database yaws are off CrossLocate's 12-view grid (k·30° from 0) and off any even grid, "
            "first: entry %d = %.6g rad (%.3f°); the file's yaw origin is not one we know, so the query yaws "
            "may not follow the --yaw-convention they are read with",
            path,
            int(off.sum()),
            yaw.size,
            i,
            float(yaw[i]),
            float(deg[i]),
        )
    elif n != 12:
        logger.info("%s: database yaws on an even %d-yaw grid from 0 (CrossLocate's own: 12)", path, n)
    return n


def to_our_yaw_deg(yaw_rad: npt.ArrayLike, convention: str) -> npt.NDArray[np.float64]:
    """Yaws of a file in ``convention`` (radians) -> ours, degrees clockwise from north in [0, 360)."""
    if convention not in YAW_CONVENTIONS:
        raise ConfigError(f"--yaw-convention {convention!r}: choose one of {', '.join(YAW_CONVENTIONS)}")
    sign, origin = YAW_CONVENTIONS[convention]
    return (origin + sign * np.degrees(np.asarray(yaw_rad, np.float64))) % 360.0


def meta_queries(
    meta: dict[str, Any],
    images: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    prefix: str = "q",
    yaw_convention: str = DEFAULT_YAW_CONVENTION,
) -> list[Query]:
    """Queries (``prefix="q"``) or database views (``"db"``) of a meta structure, poses in degrees.

    ``images``: the folder the ``ImageFns`` are relative to; every image must exist there.
    ``yaw_convention``: the file's, one of :data:`YAW_CONVENTIONS`; yaws come back in ours. The
    database yaws, when present, are checked against the grid first (:func:`check_database_yaws`).

    Raises
    ------
    ForeignFormatError
        Missing keys, lengths that differ, non-finite values, angles that are not radians,
        WGS and UTM columns that disagree, or images missing under ``images``.
    ConfigError
        An unknown ``yaw_convention``.
    """
    path, images = Path(path), Path(images)
    if yaw_convention not in YAW_CONVENTIONS:
        raise ConfigError(f"--yaw-convention {yaw_convention!r}: choose one of {', '.join(YAW_CONVENTIONS)}")
    fns = meta.get(f"{prefix}ImageFns")
    if fns is None:
        raise ForeignFormatError(f"{path}: no key '{prefix}ImageFns'; not a CrossLocate datasets_meta dict")
    fns = [str(f) for f in fns]
    wgs = _column(meta, f"{prefix}WGS", path, 2)
    utm = _column(meta, f"{prefix}UTM", path, 2)
    alt = _column(meta, f"{prefix}Elevations", path, None)
    cam = _column(meta, f"{prefix}CameraParams", path, 4)
    lengths = {len(fns), len(wgs), len(utm), len(alt), len(cam)}
    if len(lengths) != 1:
        raise ForeignFormatError(f"{path}: {prefix}* lists differ in length ({sorted(lengths)})")
    if not fns:
        return []
    if np.any(cam[:, 3] <= 0) or np.any(cam[:, 3] >= math.pi):
        bad = float(cam[:, 3][(cam[:, 3] <= 0) | (cam[:, 3] >= math.pi)][0])
        raise ForeignFormatError(
            f"{path}: {prefix}CameraParams FOV {bad:g} is outside (0, π) radians; degrees instead of radians?"
        )
    if np.any(np.abs(cam[:, :3]) > 4 * math.pi):
        raise ForeignFormatError(f"{path}: {prefix}CameraParams yaw/pitch/roll exceed 4π; degrees instead of radians?")
    lon, lat = _lonlat(wgs, utm, meta.get("utmEPSG"), path, prefix)
    check_database_yaws(meta, path)
    missing = [f for f in fns if not (images / f).is_file()]
    if missing:
        raise ForeignFormatError(
            f"{len(missing)} of {len(fns)} images of {path} are missing under {images}, first: {missing[0]}"
        )
    deg = np.degrees(cam)
    yaw = to_our_yaw_deg(cam[:, 0], yaw_convention)
    out = []
    for i, fn in enumerate(fns):
        try:
            pose = Pose(lon=float(lon[i]), lat=float(lat[i]), alt_m=float(alt[i]), yaw_deg=float(yaw[i]),
                        pitch_deg=float(deg[i, 1]), roll_deg=float(deg[i, 2]), fov_deg=float(deg[i, 3]))  # fmt: skip
        except ConfigError as exc:
            raise ForeignFormatError(f"{path}: {prefix} entry {i} ({fn}): {exc}") from exc
        out.append(Query(image=str((images / fn).resolve()), pose=pose))
    return out


__all__ = [
    "DEFAULT_YAW_CONVENTION",
    "META_FIELDS",
    "META_SETS",
    "YAW_CONVENTIONS",
    "check_database_yaws",
    "load_meta_npy",
    "meta_dict",
    "meta_queries",
    "save_meta_npy",
    "to_our_yaw_deg",
    "yaw_grid",
]
