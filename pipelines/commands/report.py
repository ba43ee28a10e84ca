"""``crosslocate report RUN_DIR [-o FILE] [--markdown] [--compare [--plot PNG]] [--curves --plot PNG]
[--confusers] [--paired [--against NAME | --versus RUN...] [--pipeline NAME] [--json FILE]]``: a self-contained
``report.html`` of a benchmark run, its results table as Markdown (RUN_DIR may also be a results.json
snapshot), several configurations side by side with their spread over seeds, their per-epoch
validation curves, where their wrong answers lie, or one configuration against a baseline (or another
configuration) photo by photo on the same test photos."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``report`` on the root parser's subparsers."""
    p = sub.add_parser("report", help="one self-contained HTML page of a benchmark run (curves, table, map, per query)")
    p.add_argument(
        "run_dir",
        nargs="+",
        help="run folder with results.json (e.g. work/demo/runs/cpu); with --markdown also "
        "several results (folders or results.json files): mean ± sd over them (e.g. seeds)",
    )
    p.add_argument("-o", "--out", default=None, help="HTML file to write (default: RUN_DIR/report.html)")
    p.add_argument("--max-rows", type=int, default=250, help="per-query rows at most (default: 250)")
    p.add_argument(
        "--markdown", action="store_true", help="print the results table as Markdown (the README's table) instead"
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="print configurations side by side as Markdown (runs grouped by config, seeds pooled: "
        "network and best-pipeline recall, mean ± sd); the runs must share their data",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="with --compare: also draw the configurations as bars (mean, sd, every run) to this PNG; "
        "with --curves: the picture of the curves; with --paired: the difference over N in its interval",
    )
    p.add_argument(
        "--curves",
        action="store_true",
        help="per-epoch validation curves of runs (run folders or metrics.json files; X, X-seed1, X-seed2 are "
        "one configuration's seeds): the best epoch of each, and with --plot PNG the mean and range per epoch",
    )
    p.add_argument(
        "--confusers",
        action="store_true",
        help="where each run's wrong top-10 views lie, by distance from the photo (1-2 km ... > 20 km), beside "
        "where all wrong database views lie: are places confused with their surroundings or with far places",
    )
    p.add_argument(
        "--paired",
        action="store_true",
        help="recall of the networks of RUN_DIR (one configuration's seeds, averaged per photo) minus a baseline's "
        "(--against) or other runs' (--versus), photo by photo on the same test photos, with a 95%% bootstrap "
        "interval over spots and the photos only one side finds",
    )
    p.add_argument(
        "--against",
        default="horizon_searched",
        help="with --paired: the baseline (horizon, horizon_searched; default: horizon_searched)",
    )
    p.add_argument(
        "--versus", nargs="+", default=None, metavar="RUN", help="with --paired: compare with these runs' networks"
    )
    p.add_argument(
        "--pipeline",
        default=None,
        metavar="NAME",
        help="with --paired: score the runs through this pipeline instead of the network alone: 'best' (each "
        "run's choice on validation) or a name of the results' pipeline table, e.g. 'network + re-ranking + voting'",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="with --paired: also write the comparison as JSON")
    p.add_argument(
        "--metric",
        default=None,
        help="with --curves: the per-epoch value (default: val_recall@10_1km)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crosslocate.errors import ConfigError
    from crosslocate.pipelines.report import (
        compare_configurations,
        load_results,
        markdown_compare_table,
        markdown_spread_table,
        markdown_table,
        pipeline_note,
        shared_terrain_note,
        write_report,
    )

    if args.plot and not (args.compare or args.curves or args.paired):
        raise ConfigError("--plot goes with --compare, --curves or --paired")
    if (args.versus or args.json or args.pipeline) and not args.paired:
        raise ConfigError("--versus, --pipeline and --json go with --paired")
    if args.curves:
        return _curves(args)
    if args.paired:
        return _paired(args)
    if args.confusers:
        from pathlib import Path

        from crosslocate.pipelines.report import markdown_confusers_table, run_confusers

        print(markdown_confusers_table([(Path(p).name, run_confusers(p)) for p in args.run_dir]), end="")
        return 0
    if args.compare:
        cmp = compare_configurations([(p, load_results(p)) for p in args.run_dir])
        print(markdown_compare_table(cmp), end="")
        if args.plot:
            from crosslocate.model.plots import plot_configurations

            title = f"within {cmp.threshold_m / 1000:g} km; bars: mean ± sd over runs, dots: runs"
            plot_configurations(cmp.labels, cmp.values, args.plot, reference=cmp.reference,
                                reference_label="horizon_searched (baseline)", title=title)  # fmt: skip
        return 0
    if args.markdown:
        runs = [load_results(p) for p in args.run_dir]
        print(markdown_table(runs[0]) if len(runs) == 1 else markdown_spread_table(runs), end="")
        for note in (shared_terrain_note(runs[0]), *(pipeline_note(r) for r in runs)):
            if note:
                print(f"\n{note}")
        return 0
    if len(args.run_dir) != 1:
        raise ConfigError("one RUN_DIR for report.html (several only with --markdown)")
    print(write_report(args.run_dir[0], args.out, max_rows=args.max_rows))
    return 0


def _paired(args: argparse.Namespace) -> int:
    """``--paired``: print the comparison as Markdown; with ``--json FILE`` also write it, with
    ``--plot PNG`` draw it."""
    from crosslocate.pipelines.rankings import markdown_paired_table, paired_comparison

    cmp = paired_comparison(args.run_dir, against=args.against, versus=args.versus, pipeline=args.pipeline)
    print(markdown_paired_table(cmp), end="")
    if args.json:
        from crosslocate.fileio import write_json_atomic

        write_json_atomic(args.json, cmp.to_dict())
    if args.plot:
        from crosslocate.model.plots import plot_paired_differences

        diffs = {n: tuple(100 * s[k] for k in ("diff", "low", "high")) for n, s in cmp.stats.items()}
        title = (
            f"within {cmp.threshold_m / 1000:g} km, {len(cmp.runs_a)} run(s) averaged per photo; "
            f"band: {100 * cmp.level:g}% interval over {cmp.n_spots} spots"
        )
        plot_paired_differences({f"{cmp.label_a} − {cmp.label_b}": diffs}, args.plot, title=title)
    return 0


def _curves(args: argparse.Namespace) -> int:
    """``--curves``: print each configuration's best mean epoch and last epoch; draw them with ``--plot``."""
    from pathlib import Path

    from crosslocate.pipelines.report import CURVE_KEY, load_history, markdown_curves_table, training_curves

    key = args.metric or CURVE_KEY
    paths = [Path(p) for p in args.run_dir]
    named = [(p.name if p.suffix == ".json" else f"{p.name}.json", load_history(p)) for p in paths]
    curves = training_curves(named, key)
    print(markdown_curves_table(curves, key), end="")
    if args.plot:
        from crosslocate.model.plots import plot_training_curves

        plot_training_curves(curves, args.plot, ylabel=f"{key} [%]", title="mean over runs; band: their range")
    return 0
