"""``crosslocate export DB --format vpr-eval|crosslocate -o DIR``: a database (+ queries) for other tools.

``vpr-eval``: ``DIR/database/`` + ``DIR/queries/`` named ``@UTM_east@UTM_north@zone@...@.png`` (gmberton's
VPR-methods-evaluation reads them). ``crosslocate``: CrossLocate's ``datasets_meta`` ``.npy`` dicts plus the
images they name. Streams with progress; ``--resume`` continues an interrupted export.
"""

from __future__ import annotations

import argparse

from crosslocate.datasets.schema import modality_names  # the registry drives --modality (render-view loads it anyway)

#: Mirrors ``crosslocate.pipelines.export`` / ``datasets.export`` (literal so ``--help`` imports nothing).
FORMATS: tuple[str, ...] = ("vpr-eval", "crosslocate")
SPLITS: tuple[str, ...] = ("train", "val", "test", "all")
DEPTH_PNG: tuple[str, ...] = ("log16", "gray8")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``export`` on the root parser's subparsers."""
    p = sub.add_parser("export", help="write a database (+ queries) as VPR-eval folders or CrossLocate meta structures")
    p.add_argument("db", help="database folder (with manifest.json)")
    p.add_argument("--format", required=True, choices=FORMATS, help="vpr-eval | crosslocate")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--modality", default="depth", choices=modality_names(), help="views to write (default: depth)")
    p.add_argument(
        "--split", default="test", choices=SPLITS, help="vpr-eval: views and queries of this split (default: test)"
    )
    p.add_argument("--queries", default=None, metavar="CSV", help="query set (CSV) whose photos go to queries/")
    p.add_argument("--region", default=None, help="region for the queries' split (default: the manifest's)")
    p.add_argument(
        "--depth-png",
        default="log16",
        choices=DEPTH_PNG,
        help="depth PNG encoding: 16-bit log or 8-bit grey (default: log16)",
    )
    p.add_argument("--name", default="crosslocate", help="crosslocate: dataset name (folder under datasets_meta/)")
    p.add_argument("--meta", default=None, help="crosslocate: meta structure prefix (default: photos_to_<modality>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted export (existing files are skipped)")
    p.add_argument("--overwrite", action="store_true", help="replace an export made with other settings")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crosslocate.pipelines import export as flow

    common = {"modality": args.modality, "queries_csv": args.queries, "region": args.region,
              "depth_png": args.depth_png, "resume": args.resume, "overwrite": args.overwrite}  # fmt: skip
    if args.format == "vpr-eval":
        out = flow.export_vpr(args.db, args.out, split=args.split, **common)
        print(f"database {out['database']:,} images, queries {out['queries']:,} images (UTM EPSG:{out['utm_epsg']})")
    else:
        out = flow.export_crosslocate(args.db, args.out, name=args.name, meta=args.meta, **common)
        for set_name, c in out["sets"].items():
            print(f"{set_name:5s} database {c['database']:,}  queries {c['queries']:,}")
        print(out["meta_dir"])
    print(out["out"])
    return 0
