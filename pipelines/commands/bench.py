"""``crosslocate bench render|build|search|terrain|gravity|localize``: run one benchmark, which writes JSON and returns a summary.

Each benchmark lives in its own module (:data:`BENCHES`) exposing ``add_arguments(parser)`` and
``run(args) -> dict`` (the dict contains at least ``"path"``, the JSON written). This command only
dispatches: it writes nothing itself. A benchmark whose module is not part of this build still
appears, and fails with :class:`~crosslocate.errors.NotBuiltError` when run.
"""

from __future__ import annotations

import argparse
import importlib
import json
from types import ModuleType

from crosslocate.errors import NotBuiltError

#: Benchmark name -> module with ``add_arguments(parser)`` and ``run(args) -> dict``.
BENCHES: dict[str, str] = {
    "render": "crosslocate.pipelines.bench_render",
    "build": "crosslocate.pipelines.bench_build",
    "search": "crosslocate.pipelines.bench_search",
    "terrain": "crosslocate.pipelines.bench_terrain",
    "gravity": "crosslocate.pipelines.bench_gravity",
    "localize": "crosslocate.pipelines.bench_localize",
}


def _load(name: str) -> ModuleType | None:
    """The bench module, or None when it is not part of this build (other import errors propagate)."""
    module_name = BENCHES[name]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        return None


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``bench`` with one sub-subcommand per entry of :data:`BENCHES`."""
    p = sub.add_parser(
        "bench", help="benchmarks that write bench/*.json (render, build, search, terrain, gravity, localize)"
    )
    benches = p.add_subparsers(dest="bench", metavar="BENCH")
    benches.required = True
    for name in BENCHES:
        module = _load(name)
        if module is None:
            bp = benches.add_parser(name, help="(not built yet)")
            bp.add_argument("rest", nargs=argparse.REMAINDER)
        else:
            bp = benches.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
            module.add_arguments(bp)
        bp.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Dispatch to ``<bench module>.run(args)`` and print the JSON path it wrote."""
    module = _load(args.bench)
    if module is None:
        raise NotBuiltError(
            f"'crosslocate bench {args.bench}' is not built yet: module {BENCHES[args.bench]} is missing "
            "from this version of crosslocate"
        )
    result = module.run(args)
    summary = result.get("summary")
    if summary is not None:
        print(json.dumps(summary, indent=2, default=str))
    print(result.get("path"))
    return 0
