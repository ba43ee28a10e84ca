"""``crosslocate report RUN_DIR [-o FILE] [--markdown]``: a self-contained ``report.html`` of a benchmark run,
or its results table as Markdown (RUN_DIR may also be a results.json snapshot)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``report`` on the root parser's subparsers."""
    p = sub.add_parser("report", help="one self-contained HTML page of a benchmark run (curves, table, map, per query)")
    p.add_argument("run_dir", help="run folder with results.json (e.g. work/demo/runs/cpu)")
    p.add_argument("-o", "--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--max-rows", type=int, default=250, help="per-query rows at most (default: 250)")
    p.add_argument(
        "--markdown", action="store_true", help="print the results table as Markdown (the README's table) instead"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from crosslocate.pipelines.report import markdown_table, write_report

    if args.markdown:
        path = Path(args.run_dir)
        results = json.loads((path if path.is_file() else path / "results.json").read_text())
        print(markdown_table(results), end="")
        return 0
    print(write_report(args.run_dir, args.out, max_rows=args.max_rows))
    return 0
