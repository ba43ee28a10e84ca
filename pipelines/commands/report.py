"""``crosslocate report RUN_DIR [-o FILE]``: a self-contained ``report.html`` of a benchmark run."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``report`` on the root parser's subparsers."""
    p = sub.add_parser("report", help="one self-contained HTML page of a benchmark run (curves, table, map, per query)")
    p.add_argument("run_dir", help="run folder with results.json (e.g. work/demo/runs/cpu)")
    p.add_argument("-o", "--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--max-rows", type=int, default=250, help="per-query rows at most (default: 250)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crosslocate.pipelines.report import write_report

    print(write_report(args.run_dir, args.out, max_rows=args.max_rows))
    return 0
