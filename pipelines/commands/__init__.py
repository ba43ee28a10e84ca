"""CLI subcommands: name -> module (each module has ``add_parser(subparsers)`` and ``run(args) -> int``).

Command modules import heavy libraries only inside ``run`` so ``crosslocate --help`` stays instant.
"""

from __future__ import annotations

import argparse

COMMANDS: dict[str, str] = {
    "dem": "crosslocate.pipelines.commands.dem",
    "grid": "crosslocate.pipelines.commands.grid",
    "queries": "crosslocate.pipelines.commands.queries",
    "render-view": "crosslocate.pipelines.commands.render",
    "build": "crosslocate.pipelines.commands.build",
    "verify": "crosslocate.pipelines.commands.verify",
    "train": "crosslocate.pipelines.commands.train",
    "benchmark": "crosslocate.pipelines.commands.benchmark",
    "localize": "crosslocate.pipelines.commands.localize",
    "bench": "crosslocate.pipelines.commands.bench",
    "export": "crosslocate.pipelines.commands.export",
    "report": "crosslocate.pipelines.commands.report",
}


def add_dem_argument(
    parser: argparse.ArgumentParser, *, default: list[str] | None = None, without: str | None = None
) -> None:
    """``--dem PATH [PATH ...]``, the same in every command: tile folders / files, or ``demo``.

    ``without``: what the command does when the option is not given (help text).
    The value goes to :meth:`crosslocate.dem.sources.DemSource.resolve` (one path or several; none:
    the embedded DEM for the demo region, an error for any other region).
    """
    parser.add_argument(
        "--dem",
        nargs="+",
        default=default,
        metavar="PATH",
        help="DEM tile folder(s) / file(s) (SRTM .hgt[.zip], GeoTIFF, anything rasterio opens) or 'demo'; "
        + ("default: " + " ".join(default) if default else (without or "default: the embedded DEM for --region demo")),
    )
