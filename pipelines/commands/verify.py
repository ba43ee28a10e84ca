"""``crosslocate verify DB``: check every built shard and ``positions.npz`` against the manifest.

Exit codes: 0 complete and sound; 1 corrupt (a listed shard or ``positions.npz`` is missing,
damaged or holds impossible values, or the manifest is unreadable or does not match its
fingerprint); 3 incomplete (every built shard is sound, some are not built yet: rerun the build to
finish); 2 bad input, e.g. a path that is no database folder. The first line names what is corrupt
(``N corrupt`` shards, ``positions.npz corrupt`` or ``missing``, ``manifest.json corrupt`` or ``missing``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Problem lines printed without ``--all``.
SHOWN_PROBLEMS = 5


def add_parser(sub: Any) -> None:
    """Register ``verify``."""
    p = sub.add_parser(
        "verify",
        help="check a database's shards (exists, sha256, readable, counts, value ranges); "
        "exit 0 sound, 1 corrupt, 3 incomplete, 2 not a database folder",
    )
    p.add_argument("db", help="database folder (manifest.json + shards)")
    p.add_argument("--no-values", action="store_true", help="skip decoding and range-checking every view")
    p.add_argument(
        "--values-sample",
        type=int,
        default=None,
        metavar="N",
        help="range-check the decoded views of N shards spread over the database (every shard still gets its "
        "sha256, structure and count checks); default: every shard",
    )
    p.add_argument("--workers", type=int, default=None, help="processes checking shards (default: available cores)")
    p.add_argument("--all", action="store_true", help=f"print every problem (default: the first {SHOWN_PROBLEMS})")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.add_argument(
        "--preview", metavar="PNG", help="also save a mosaic of one position's stored views (all yaws x modalities)"
    )
    p.add_argument("--position", type=int, help="position id of --preview (default: the most rugged of the first few)")
    p.set_defaults(func=run)


def _print_report(report: Any, db: str, show_all: bool) -> None:
    from crosslocate.datasets.verify import EXIT_CORRUPT, EXIT_INCOMPLETE, id_ranges

    status = {EXIT_CORRUPT: "CORRUPT", EXIT_INCOMPLETE: "INCOMPLETE"}.get(report.exit_code, "OK")
    bad = {
        Path(p.path).name: "corrupt" if Path(p.path).exists() else "missing"
        for p in report.problems
        if p.shard_id is None
    }
    files = "".join(f", {name} {state}" for name, state in sorted(bad.items()))
    if "manifest.json" in bad:  # nothing else could be checked
        print(f"{status}: {db}: manifest.json {bad['manifest.json']}; no shard checked")
    else:
        print(
            f"{status}: {db}: {report.n_ok} of {report.n_planned} shards complete, {len(report.not_built)} not yet "
            f"built, {len(report.bad_shards())} corrupt{files}; {report.n_views:,} views verified"
            + (
                f" (values range-checked in {report.n_values_checked} shards)"
                if report.n_values_checked < report.n_ok
                else ""
            )
        )
    lines = [p.line() for p in report.problems] + [f"warning: {w.line()}" for w in report.warnings]
    shown = lines if show_all else lines[:SHOWN_PROBLEMS]
    for line in shown:
        print(f"  {line}")
    if len(shown) < len(lines):
        print(f"  ... {len(lines) - len(shown)} more line(s); --all prints every one")
    if report.bad_shards():
        bad = id_ranges(report.bad_shards())
        print(f"  corrupt shards: {bad}; rerun `crosslocate build` with the same arguments to redo them")
    if report.not_built:
        print(f"  not yet built: shards {id_ranges(report.not_built)}; rerun `crosslocate build` to finish")


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 0 (sound), 1 (corrupt) or 3 (incomplete)."""
    from crosslocate.datasets.verify import verify_database
    from crosslocate.pipelines.cluster import available_cores

    report = verify_database(
        args.db,
        check_values=not args.no_values,
        values_sample=args.values_sample,
        workers=args.workers or available_cores(),
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report, args.db, args.all)
    if args.preview and report.ok:
        from crosslocate.pipelines.preview import save_database_preview

        print(f"preview: {save_database_preview(args.db, args.preview, args.position)}")
    return int(report.exit_code)
