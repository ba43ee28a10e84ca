"""``crosslocate export``: a database (plus a query set) in formats other tools read.

* ``vpr-eval`` (:func:`export_vpr`): ``DIR/database/`` and ``DIR/queries/`` image folders named
  by the VPR-datasets convention that gmberton's VPR-methods-evaluation reads
  (:mod:`crosslocate.datasets.export` documents every field and pixel encoding), plus
  ``DIR/database_images_paths.txt`` / ``DIR/queries_images_paths.txt`` (the framework's optional
  file lists, names relative to each folder).
* ``crosslocate`` (:func:`export_crosslocate`): CrossLocate's meta structures
  ``DIR/datasets_meta/<name>/<meta>_{train,val,test}.npy``
  (:mod:`crosslocate.datasets.crosslocate_meta`) and the images they name under
  ``DIR/datasets/<name>/database_<modality>/`` and ``DIR/datasets/<name>/query_photos/``.

Both stream (a chunk of views at a time, progress per file) and resume: each file is written
atomically, so with ``--resume`` existing names are skipped. ``DIR/export.json`` records the
settings; a different export in the same folder is refused unless ``--overwrite``.
Query splits follow the same geographic rule as the database (:func:`assign_splits` with the
manifest's region and grid settings); ``--region`` names the region when the manifest's name does
not resolve (e.g. a region file that moved).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import SPLIT_CODES, parse_modality
from crosslocate.errors import ConfigError, FileOverwriteError, ManifestMismatchError, RegionError
from crosslocate.fileio import file_sha256, write_json_atomic

logger = logging.getLogger(__name__)

#: Settings / completion record of an export folder.
STATE_NAME = "export.json"
#: ``--split`` choices: one split or every view.
SPLIT_CHOICES: tuple[str, ...] = ("train", "val", "test", "all")


def prepare_output(
    out: Path, settings: dict[str, Any], *, resume: bool, overwrite: bool, clear: Callable[[], None]
) -> None:
    """Check ``out`` against ``settings`` (see the module docstring) and mark the export as started."""
    state_path = out / STATE_NAME
    settings = json.loads(json.dumps(settings, sort_keys=True))
    if "@" in str(out.resolve()):
        raise ConfigError(
            f"output folder {out.resolve()} contains '@'; VPR tools split whole paths on '@', choose another"
        )
    if state_path.exists():
        try:
            old = json.loads(state_path.read_text())
        except (OSError, ValueError):
            old = {}
        if overwrite:
            clear()
        elif old.get("settings") != settings:
            diff = sorted(
                k
                for k in set(settings) | set(old.get("settings", {}))
                if settings.get(k) != old.get("settings", {}).get(k)
            )
            raise ManifestMismatchError(
                f"{out} holds an export with other settings ({', '.join(diff)}); use --overwrite to replace it"
            )
        elif not resume:
            what = "a complete" if old.get("complete") else "an interrupted"
            raise FileOverwriteError(
                f"{out} holds {what} export with these settings; --resume to finish it, --overwrite to redo it"
            )
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileOverwriteError(
                f"{out} is not empty and has no {STATE_NAME}; choose an empty folder or pass --overwrite"
            )
        clear()
    write_json_atomic(state_path, {"settings": settings, "complete": False})


def finish_output(out: Path, settings: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """Mark the export in ``out`` complete (``export.json`` with the summary); returns the summary with ``out``."""
    write_json_atomic(
        out / STATE_NAME, {"settings": json.loads(json.dumps(settings, sort_keys=True)), "complete": True, **summary}
    )
    return {"out": str(out), **summary}


def _load_queries(queries_csv: str | os.PathLike[str] | None) -> tuple[list[Any], dict[str, Any]]:
    from crosslocate.datasets.queries import load_query_csv

    if queries_csv is None:
        return [], {"queries": None}
    path = Path(queries_csv)
    return load_query_csv(path), {"queries": str(path.resolve()), "queries_sha256": file_sha256(path)}


def query_split_codes(manifest: Any, queries: list[Any], region: str | None = None) -> npt.NDArray[np.uint8]:
    """(Q,) uint8 ``SPLIT_CODES`` of the queries under the database's own split rule."""
    from crosslocate.dem.config import GridConfig
    from crosslocate.dem.regions import get_region
    from crosslocate.dem.splits import assign_splits

    if not queries:
        return np.zeros(0, np.uint8)
    name = region or manifest.region.get("name")
    try:
        reg = get_region(name)
    except RegionError as exc:
        raise ConfigError(f"cannot assign the queries to splits: {exc}; pass --region or --split all") from None
    lon = np.array([q.pose.lon for q in queries], np.float64)
    lat = np.array([q.pose.lat for q in queries], np.float64)
    return assign_splits(lon, lat, reg, GridConfig.from_dict(manifest.grid))


def _utm(lon: Any, lat: Any, epsg: int) -> npt.NDArray[np.float64]:
    from crosslocate.dem.geodesy import transform_xy

    e, n = transform_xy(np.asarray(lon, np.float64), np.asarray(lat, np.float64), "EPSG:4326", f"EPSG:{epsg}")
    return np.stack([e, n], axis=1).reshape(-1, 2)


def _open(db_dir: str | os.PathLike[str], modality: str) -> Any:
    from crosslocate.datasets.shards import open_database

    mod = parse_modality(modality, "--modality")
    db = open_database(db_dir)
    stored = db.manifest.render.get("modalities", [])
    if mod.value not in stored:
        db.close()
        raise ConfigError(f"{db_dir}: the database has no {mod.value} views (it stores {', '.join(stored)})")
    return db


def _export_zone(table: npt.NDArray[np.void]) -> tuple[int, str, int]:
    """The one UTM zone of an export: the zone of the database's lon/lat box centre."""
    from crosslocate.dem.geodesy import utm_zone

    lon = 0.5 * (float(table["lon"].min()) + float(table["lon"].max()))
    lat = 0.5 * (float(table["lat"].min()) + float(table["lat"].max()))
    return utm_zone(lon, lat)


def export_vpr(
    db_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    modality: str = "depth",
    split: str = "test",
    queries_csv: str | os.PathLike[str] | None = None,
    region: str | None = None,
    depth_png: str = "log16",
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the VPR-methods-evaluation folders (module docstring); returns counts and paths."""
    from crosslocate.datasets.export import ImageJobs, photo_suffix, remove_named, vpr_name, write_images, write_lines
    from crosslocate.dem.geodesy import utm_zone

    modality = parse_modality(modality, "--modality").value
    if split not in SPLIT_CHOICES:
        raise ConfigError(f"--split {split!r}: choose one of {', '.join(SPLIT_CHOICES)}")
    out = Path(out)
    queries, qinfo = _load_queries(queries_csv)
    with _open(db_dir, modality) as db:
        table = db.table()
        settings = {"format": "vpr-eval", "db_fingerprint": db.manifest.fingerprint(), "modality": modality,
                    "split": split, "depth_png": depth_png, **qinfo}  # fmt: skip
        db_folder, q_folder = out / "database", out / "queries"

        def clear() -> None:
            n = remove_named(db_folder, "@*") + remove_named(q_folder, "@*") + remove_named(out, "*_images_paths.txt")
            (out / STATE_NAME).unlink(missing_ok=True)
            logger.info("--overwrite: removed %d file(s) of the previous export in %s", n, out)

        prepare_output(out, settings, resume=resume, overwrite=overwrite, clear=clear)
        idx = np.arange(len(table)) if split == "all" else np.flatnonzero(table["split"] == SPLIT_CODES[split])
        rows_q = np.arange(len(queries))
        if split != "all":
            rows_q = np.flatnonzero(query_split_codes(db.manifest, queries, region) == SPLIT_CODES[split])
            queries = [queries[k] for k in rows_q]
        zone, _, epsg = _export_zone(table)
        rows = table[idx]
        en = _utm(rows["lon"], rows["lat"], epsg)
        n_yaws = int(db.manifest.layout.get("views_per_position") or 1)
        note = modality

        def db_name(k: int) -> str:
            r = rows[k]
            return vpr_name(east_m=en[k, 0], north_m=en[k, 1], zone=zone, band=utm_zone(r["lon"], r["lat"])[1],
                            lat=r["lat"], lon=r["lon"], pano_id=str(int(r["position_id"])), tile_num=int(r["view_id"]) % n_yaws,
                            yaw_deg=r["yaw_deg"], pitch_deg=r["pitch_deg"], roll_deg=r["roll_deg"], alt_m=r["alt_m"], note=note)  # fmt: skip

        qen = _utm([q.pose.lon for q in queries], [q.pose.lat for q in queries], epsg)
        q_names = [
            vpr_name(east_m=e, north_m=n, zone=zone, band=utm_zone(q.pose.lon, q.pose.lat)[1], lat=q.pose.lat,
                     lon=q.pose.lon, pano_id=f"q{k:06d}", tile_num=None, yaw_deg=q.pose.yaw_deg, pitch_deg=q.pose.pitch_deg,
                     roll_deg=q.pose.roll_deg, alt_m=q.pose.alt_m, note="photo", ext=photo_suffix(q.image))
            for k, q, (e, n) in zip(rows_q, queries, qen, strict=True)
        ]  # fmt: skip
        jobs = ImageJobs(idx.astype(np.int64), lambda k: db_folder / db_name(k),
                         [Path(q.image) for q in queries], [q_folder / nm for nm in q_names])  # fmt: skip
        stats = write_images(db, modality, jobs, depth_png=depth_png, desc="export vpr-eval")
        write_lines(out / "database_images_paths.txt", (db_name(k) for k in range(len(rows))))
    if queries:
        write_lines(out / "queries_images_paths.txt", q_names)
    summary = {"database": len(rows), "queries": len(q_names), "utm_epsg": epsg, **stats}
    return finish_output(out, settings, summary)


def export_crosslocate(
    db_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    modality: str = "depth",
    queries_csv: str | os.PathLike[str] | None = None,
    region: str | None = None,
    name: str = "crosslocate",
    meta: str | None = None,
    depth_png: str = "log16",
    resume: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write CrossLocate's three meta structures and the images they name (module docstring)."""
    from crosslocate.datasets.crosslocate_meta import META_SETS, meta_dict, save_meta_npy
    from crosslocate.datasets.export import ImageJobs, photo_suffix, remove_named, write_images

    modality = parse_modality(modality, "--modality").value
    out = Path(out)
    meta = meta or f"photos_to_{modality}"
    queries, qinfo = _load_queries(queries_csv)
    meta_dir, data_dir = out / "datasets_meta" / name, out / "datasets" / name
    db_folder, q_folder = data_dir / f"database_{modality}", data_dir / "query_photos"
    with _open(db_dir, modality) as db:
        table = db.table()
        settings = {"format": "crosslocate", "db_fingerprint": db.manifest.fingerprint(), "modality": modality,
                    "name": name, "meta": meta, "depth_png": depth_png, **qinfo}  # fmt: skip

        def clear() -> None:
            n = remove_named(meta_dir, "*.npy") + remove_named(db_folder, "*_*.png") + remove_named(q_folder, "*_*")
            (out / STATE_NAME).unlink(missing_ok=True)
            logger.info("--overwrite: removed %d file(s) of the previous export in %s", n, out)

        prepare_output(out, settings, resume=resume, overwrite=overwrite, clear=clear)
        q_codes = query_split_codes(db.manifest, queries, region)
        _, _, epsg = _export_zone(table)
        n_yaws = int(db.manifest.layout.get("views_per_position") or 1)
        db_fns = [f"{int(r['position_id'])}_{int(r['view_id']) % n_yaws:02d}.png" for r in table]
        q_fns = [f"{k:05d}_{Path(q.image).stem}{photo_suffix(q.image)}" for k, q in enumerate(queries)]
        db_utm = _utm(table["lon"], table["lat"], epsg)
        q_utm = _utm([q.pose.lon for q in queries], [q.pose.lat for q in queries], epsg)
        counts: dict[str, dict[str, int]] = {}
        for set_name in META_SETS:
            code = SPLIT_CODES[set_name]
            d, qk = np.flatnonzero(table["split"] == code), np.flatnonzero(q_codes == code)
            struct = meta_dict(table[d], [db_fns[i] for i in d], db_utm[d], [queries[i] for i in qk], qk.tolist(),
                               [q_fns[i] for i in qk], q_utm[qk], epsg)  # fmt: skip
            save_meta_npy(meta_dir / f"{meta}_{set_name}.npy", struct)
            counts[set_name] = {"database": int(d.size), "queries": int(qk.size)}
        in_sets = np.flatnonzero(np.isin(table["split"], [SPLIT_CODES[s] for s in META_SETS]))
        q_in = np.flatnonzero(np.isin(q_codes, [SPLIT_CODES[s] for s in META_SETS]))
        jobs = ImageJobs(in_sets.astype(np.int64), lambda k: db_folder / db_fns[in_sets[k]],
                         [Path(queries[i].image) for i in q_in], [q_folder / q_fns[i] for i in q_in])  # fmt: skip
        stats = write_images(db, modality, jobs, depth_png=depth_png, desc="export crosslocate")
    summary = {"sets": counts, "utm_epsg": epsg, "meta_dir": str(meta_dir), "images": str(data_dir), **stats}
    return finish_output(out, settings, summary)


def import_crosslocate_queries(
    meta_path: str | os.PathLike[str],
    images: str | os.PathLike[str],
    csv_out: str | os.PathLike[str],
    *,
    yaw_convention: str = "cw-north",
    overwrite: bool = False,
) -> dict[str, Any]:
    """CrossLocate meta structure -> our query CSV (radians -> degrees, lon/lat order checked, yaw read in
    ``yaw_convention`` and its database yaws checked: :mod:`crosslocate.datasets.crosslocate_meta`)."""
    from crosslocate.datasets.crosslocate_meta import load_meta_npy, meta_queries
    from crosslocate.datasets.queries import write_query_csv

    csv_out = Path(csv_out)
    if csv_out.exists() and not overwrite:
        raise FileOverwriteError(f"{csv_out} exists; pass --overwrite to replace it")
    queries = meta_queries(load_meta_npy(meta_path), images, meta_path, yaw_convention=yaw_convention)
    write_query_csv(csv_out, queries)
    return {"csv": str(csv_out), "queries": len(queries), "yaw_convention": yaw_convention}


__all__ = [
    "SPLIT_CHOICES",
    "STATE_NAME",
    "export_crosslocate",
    "export_vpr",
    "import_crosslocate_queries",
    "query_split_codes",
]
