"""``crosslocate dem info PATH...`` and ``crosslocate dem synth [-o PATH]``."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("dem", help="inspect DEMs and generate the synthetic demo region")
    dsub = p.add_subparsers(dest="dem_command", metavar="ACTION")
    dsub.required = True
    info = dsub.add_parser("info", help="bounds, grid, spacing, CRS, voids and elevation range of a DEM")
    info.add_argument("paths", nargs="+", help="'demo', .hgt/.hgt.zip/GeoTIFF files or tile directories (one mosaic)")
    info.add_argument("--json", action="store_true", help="print the info dict as JSON")
    synth = dsub.add_parser("synth", help="generate (or find cached) the synthetic alpine demo GeoTIFF")
    synth.add_argument("-o", "--output", default=None, help="write the GeoTIFF here instead of the cache")
    synth.add_argument("--seed", type=int, default=None, help="generator seed (default: the demo seed)")
    synth.add_argument("--spacing-m", type=float, default=None, help="cell size in metres (default 30)")
    synth.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def _format(info: dict[str, Any]) -> str:
    w, s, e, n = info["bounds_lonlat"]
    xmin, ymin, xmax, ymax = info["bounds_native"]
    dx, dy = info["spacing_native"]
    dxm, dym = info["spacing_m"]
    unit = info["spacing_units"]
    fmt = ".8f" if unit == "deg" else ".2f"
    lines = [
        f"sources:     {len(info['sources'])} tile(s): "
        + ", ".join(info["sources"][:4])
        + (" ..." if len(info["sources"]) > 4 else ""),
        f"crs:         {info['crs']}",
        f"bounds:      lon {w:.5f} .. {e:.5f}, lat {s:.5f} .. {n:.5f} ({info['bounds_convention']})",
        f"native:      x {xmin:{fmt}} .. {xmax:{fmt}}, y {ymin:{fmt}} .. {ymax:{fmt}} ({unit})",
        f"grid:        {info['shape'][0]} rows x {info['shape'][1]} cols",
        f"spacing:     {dx:.8g} x {dy:.8g} {unit} (~{dxm:.1f} m E-W x {dym:.1f} m N-S)",
        f"voids:       {info['void_count']:,} cells (filled by interpolation when read)",
        f"elevation:   {info['elevation_min_m']:.1f} .. {info['elevation_max_m']:.1f} m",
        f"synthetic:   {str(info['synthetic']).lower()}",
        f"checksum:    {info['checksum']}",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from crosslocate.dem.sources import open_dem
    from crosslocate.errors import FileOverwriteError

    if args.dem_command == "info":
        src = args.paths[0] if args.paths == ["demo"] else args.paths
        with open_dem(src) as dem:
            info = dem.info()
        info.pop("crs_wkt", None)
        print(json.dumps(info, indent=2) if args.json else _format(info))
        return 0

    from dataclasses import replace
    from pathlib import Path

    from crosslocate.dem.sources import synthetic

    params = synthetic.AlpineParams()
    if args.seed is not None:
        params = replace(params, seed=args.seed)
    if args.spacing_m is not None:
        params = replace(params, spacing_m=args.spacing_m)
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileOverwriteError(f"{out} exists; pass --overwrite to replace it")
    path = synthetic.demo_geotiff(params, out, overwrite=args.overwrite or out is not None)
    with open_dem(path) as dem:
        info = dem.info()
    print(path)
    print(_format(info))
    return 0
