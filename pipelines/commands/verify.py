"""``crosslocate verify DB``: check every shard against the manifest; exit 1 on any problem."""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> None:
    """Register ``verify``."""
    p = sub.add_parser("verify", help="check a database's shards (exists, sha256, readable, counts, value ranges)")
    p.add_argument("db", help="database folder (manifest.json + shards)")
    p.add_argument("--no-values", action="store_true", help="skip decoding and range-checking every view")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument(
        "--preview", metavar="PNG", help="also save a mosaic of one position's stored views (all yaws x modalities)"
    )
    p.add_argument("--position", type=int, help="position id of --preview (default: the most rugged of the first few)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 when the database is sound, 1 otherwise."""
    from crosslocate.datasets.verify import verify_database

    report = verify_database(args.db, check_values=not args.no_values)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        status = "OK" if report.ok else "FAILED"
        print(
            f"{status}: {args.db}: {report.n_ok}/{report.n_planned} shards sound, {report.n_views} views"
            + (f", {len(report.problems)} problem(s)" if report.problems else "")
        )
        for p in report.problems:
            print(f"  {p.kind}: {p.path}: {p.message}")
        for w in report.warnings:
            print(f"  warning: {w.kind}: {w.path}: {w.message}")
        if report.bad_shards():
            print(f"  missing/corrupt shards: {report.bad_shards()}; rerun `crosslocate build` to redo them")
    if args.preview and report.ok:
        from crosslocate.pipelines.preview import save_database_preview

        print(f"preview: {save_database_preview(args.db, args.preview, args.position)}")
    return 0 if report.ok else 1
