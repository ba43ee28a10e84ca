"""``crosslocate render-view``: render the views of one camera position and save arrays and previews.

Writes, into ``-o DIR``: ``yawNNN_<modality>.npy`` (the raw (H, W) view: depth float32 metres with sky
-1, silhouette uint8 {0, 1}, semantic uint8 LandCover ids), ``yawNNN_<modality>.png`` previews, and
``mosaic.png`` when several yaws are rendered. Prints the output directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from crosslocate.datasets.schema import modality_names
from crosslocate.dem.poses import DB_FOV_DEG, DB_SIZE_PX, DB_YAWS_DEG
from crosslocate.pipelines.commands import add_dem_argument
from crosslocate.render.config import BACKEND_NAMES, MAX_SIZE_PX

#: Default camera height above the ground when ``--alt`` is not given, metres.
DEFAULT_HEIGHT_ABOVE_GROUND_M: float = 1.7


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``render-view`` on the root parser's subparsers."""
    p = sub.add_parser("render-view", help="render depth/silhouette/semantic views at one position")
    add_dem_argument(p, default=["demo"])
    p.add_argument("--lat", type=float, required=True, help="camera latitude, degrees (EPSG:4326)")
    p.add_argument("--lon", type=float, required=True, help="camera longitude, degrees (EPSG:4326)")
    p.add_argument(
        "--alt", type=float, default=None, help="camera altitude, m above sea level (default: terrain + 1.7 m)"
    )
    p.add_argument(
        "--yaw", type=float, nargs="+", default=list(DB_YAWS_DEG), help="yaw(s), deg clockwise from north (default: 12)"
    )
    p.add_argument("--pitch", type=float, default=0.0, help="pitch, degrees up (default 0)")
    p.add_argument("--roll", type=float, default=0.0, help="roll, degrees clockwise (default 0)")
    p.add_argument("--fov", type=float, default=DB_FOV_DEG, help=f"horizontal FOV, degrees (default {DB_FOV_DEG:g})")
    p.add_argument("--size", type=int, default=DB_SIZE_PX, help=f"image side, pixels (default {DB_SIZE_PX})")
    p.add_argument("--range-km", type=float, default=60.0, help="render range, km (default 60)")
    p.add_argument(
        "--modalities", default=",".join(modality_names()), help=f"comma-separated, of: {', '.join(modality_names())}"
    )
    p.add_argument("--backend", default="cpu", choices=BACKEND_NAMES, help="renderer (default cpu)")
    p.add_argument("-o", "--output", default="render_view", help="output directory (default ./render_view)")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty directory")
    p.set_defaults(func=run)


def view_name(yaw_deg: float) -> str:
    """File prefix of a yaw: ``yaw030`` for whole degrees, ``yaw030.5`` otherwise (yaw wrapped to [0, 360))."""
    y = float(yaw_deg) % 360.0
    return f"yaw{int(y):03d}" if y == int(y) else f"yaw{y:05.1f}"


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``-o`` that is a file, a non-empty folder (without ``overwrite``) or not writable."""
    import os

    from crosslocate.errors import FileOverwriteError

    if out.exists() and not out.is_dir():
        raise FileOverwriteError(f"-o {out} is an existing file; render-view writes a folder, choose another -o")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileOverwriteError(f"{out} exists and is not empty; pass --overwrite or choose another -o")
    parent = next((p for p in (out, *out.absolute().parents) if p.exists()), Path("/"))
    if not os.access(parent, os.W_OK):
        raise FileOverwriteError(f"-o {out}: cannot write into {parent}; choose another -o")


def run(args: argparse.Namespace) -> int:
    """Render the requested yaws at one position and write arrays, previews and the mosaic."""

    from crosslocate.datasets.schema import parse_modalities
    from crosslocate.dem.poses import Pose, check_camera_clearance
    from crosslocate.dem.sources import DemSource
    from crosslocate.errors import ConfigError
    from crosslocate.fileio import save_npy_atomic
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.preview import save_mosaic, save_view_pngs, view_rgb
    from crosslocate.render.views import render_views

    mods = parse_modalities(args.modalities, "--modalities")
    if not 1 <= args.size <= MAX_SIZE_PX:
        raise ConfigError(f"--size {args.size}: the view side must be within 1..{MAX_SIZE_PX} pixels")
    cfg = RenderConfig(
        size_px=args.size, fov_deg=args.fov, range_m=args.range_km * 1000.0, backend=args.backend, modalities=mods
    )
    out = Path(args.output)
    check_output_dir(out, args.overwrite)
    with DemSource.resolve(args.dem).open() as dem:
        ground = float(dem.elevation([args.lon], [args.lat])[0])
        alt = ground + DEFAULT_HEIGHT_ABOVE_GROUND_M if args.alt is None else float(args.alt)
        check_camera_clearance(args.lon, args.lat, alt, ground)
        poses = [
            Pose(
                lon=args.lon,
                lat=args.lat,
                alt_m=alt,
                yaw_deg=y,
                pitch_deg=args.pitch,
                roll_deg=args.roll,
                fov_deg=args.fov,
            )
            for y in args.yaw
        ]
        batch = render_views(dem, poses, cfg)
    out.mkdir(parents=True, exist_ok=True)
    names = [view_name(y) for y in args.yaw]
    for i, name in enumerate(names):
        for m, arr in batch.arrays.items():
            save_npy_atomic(out / f"{name}_{m.value}.npy", arr[i])
    save_view_pngs(batch, out, names)
    if len(names) > 1:
        images = [view_rgb(m, batch.arrays[m][i]) for m in mods for i in range(len(names))]
        titles = [f"{name} {m.value}" for m in mods for name in names]
        save_mosaic(images, out / "mosaic.png", titles, ncols=min(len(names), 6))
    ms = 1000.0 * float(batch.render_time_s.mean())
    print(
        f"{out}  ({len(names)} views x {len(mods)} modalities at lon={args.lon}, lat={args.lat}, alt={alt:.1f} m; {ms:.0f} ms/view)"
    )
    return 0
