"""``crosslocate grid``: build (or just count) the uniform position grid of a region.

Prints a summary: positions, views (positions x 12 yaws), the estimated database size
(90 KB per view: depth + silhouette + semantic at 500 x 500 px, compressed) and the region's area.
``--dry-run`` writes nothing. Without ``--dem`` the grid is clipped to the region only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from crosslocate.dem.config import GRID_PRESETS
from crosslocate.pipelines.commands import add_dem_argument


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``grid`` on the root parser's subparsers."""
    p = sub.add_parser("grid", help="build or count the uniform camera-position grid of a region")
    p.add_argument("--region", required=True, help="alps | switzerland | demo | path to a GeoJSON/shapefile polygon")
    add_dem_argument(p, without="clips the grid to the DEM's coverage and sets altitudes; default: no DEM")
    p.add_argument("--preset", default="paper", choices=sorted(GRID_PRESETS), help="grid settings (default: paper)")
    p.add_argument("--spacing", type=float, default=None, metavar="M", help="grid spacing in metres (overrides preset)")
    p.add_argument("--dry-run", action="store_true", help="print the summary only, write nothing")
    p.add_argument("-o", "--output", default="positions.npz", help="output .npz (default: positions.npz)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the grid, print the summary and (unless ``--dry-run``) write the positions."""
    import dataclasses

    from crosslocate.dem.config import get_grid_preset
    from crosslocate.dem.grid import grid_summary, uniform_grid
    from crosslocate.dem.regions import get_region
    from crosslocate.dem.splits import shared_terrain
    from crosslocate.errors import FileOverwriteError
    from crosslocate.render.config import RENDER_PRESETS

    cfg = get_grid_preset(args.preset)
    if args.spacing is not None:
        cfg = dataclasses.replace(cfg, spacing_m=args.spacing)
    out = Path(args.output)
    if not args.dry_run and out.exists() and not args.overwrite:
        raise FileOverwriteError(f"{out} exists; pass --overwrite to replace it or -o another path")
    region = get_region(args.region)
    if args.dem is not None:
        from crosslocate.dem.sources import DemSource

        with DemSource.resolve(args.dem, region.name).open() as dem:
            positions = uniform_grid(region, dem, cfg)
    else:
        positions = uniform_grid(region, None, cfg)
    summary = grid_summary(positions, cfg, region)
    summary["dem"] = None if args.dem is None else " ".join(args.dem)
    # positions are split disjointly; views reaching the preset's range are not (dem.splits.shared_terrain)
    summary["shared_terrain"] = shared_terrain(region, cfg, RENDER_PRESETS[args.preset].range_m)
    if not args.dry_run:
        summary["output"] = str(positions.to_npz(out))
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(_format(summary))
    return 0


def _format(s: dict) -> str:  # type: ignore[type-arg]
    gb = s["estimated_bytes"] / 1e9
    kb = s["bytes_per_view_estimate"] / 1e3
    splits = ", ".join(f"{k} {v:,}" for k, v in s["splits"].items())
    lines = [
        f"region     {s['region']}: {s['area_km2']:,.0f} km^2" + (f", DEM {s['dem']}" if s["dem"] else " (no DEM)"),
        f"spacing    {s['spacing_m']:g} m (grid covers {s['grid_area_km2']:,.0f} km^2)",
        f"positions  {s['positions']:,}  ({splits})",
        f"views      {s['views']:,}  ({s['views_per_position']} per position)",
        f"estimate   {gb:,.1f} GB  ({kb:g} KB per view: depth+silhouette+semantic at 500x500 px)",
        f"output     {s['output']}" if "output" in s else "output     (dry run: nothing written)",
    ]
    st = s.get("shared_terrain") or {}
    for name in ("val", "test"):
        if name in st:
            lines.append(
                f"shared     {name}: {100 * st[name]['seen_by_train']:.0f}% of its area within "
                f"{st['range_m'] / 1000:g} km of train positions; {100 * st[name]['view_terrain_in_train']:.0f}% "
                "of what its views can see is train area"
            )
    return "\n".join(lines)
