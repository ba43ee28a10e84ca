"""CLI subcommands: name -> module (each module has ``add_parser(subparsers)`` and ``run(args) -> int``).

Command modules import heavy libraries only inside ``run`` so ``crosslocate --help`` stays instant.
"""

from __future__ import annotations

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
