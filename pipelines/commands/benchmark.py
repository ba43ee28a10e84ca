"""``crosslocate benchmark``: train if needed, evaluate test queries vs the uniform test database."""

from __future__ import annotations

import argparse

from crosslocate.pipelines.commands.train import add_flow_arguments, run_context


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("benchmark", help="recall@N of test queries vs the uniform test database (trains if needed)")
    add_flow_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crosslocate.pipelines.benchmark import run_benchmark

    out = run_benchmark(run_context(args), device=args.device, workers=args.workers)
    print(out["table"])
    print(out["results"])
    print(out["report"])
    return 0
