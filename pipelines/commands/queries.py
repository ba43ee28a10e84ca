"""``crosslocate queries``: render a synthetic query set (``synth``), describe a query CSV (``show``) or
import another tool's query metadata (``import --format crosslocate META.npy --images DIR
[--yaw-convention cw-north|ccw-north|ccw-east]``; conventions: :mod:`crosslocate.datasets.crosslocate_meta`).

``queries synth --region demo [--dem PATH] [--n N] [--preset cpu] [--work work] [--overwrite]``
renders (or resumes) ``work/<region>/queries/`` and prints the CSV path and a summary;
``queries show CSV`` prints the number of queries, the first rows and FOV/pitch/roll statistics.
"""

from __future__ import annotations

import argparse
from typing import Any

from crosslocate.pipelines.commands import add_dem_argument

#: Mirrors ``crosslocate.pipelines.queries.QUERY_PRESETS`` (kept literal so ``--help`` imports nothing).
PRESET_NAMES: tuple[str, ...] = ("paper", "cpu", "tiny")
#: Mirrors ``crosslocate.datasets.crosslocate_meta.YAW_CONVENTIONS`` (first: the default).
YAW_CONVENTIONS: tuple[str, ...] = ("cw-north", "ccw-north", "ccw-east")


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``queries`` (with ``synth`` and ``show``) on the root parser's subparsers."""
    p = sub.add_parser("queries", help="render a synthetic query set or inspect a query CSV")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    s = actions.add_parser("synth", help="render photo-like queries at random poses in a region (resumable)")
    s.add_argument("--region", required=True, help="alps | switzerland | demo | path to a GeoJSON/shapefile polygon")
    add_dem_argument(s)
    s.add_argument("--preset", default="cpu", choices=PRESET_NAMES, help="query-set settings (default: cpu)")
    s.add_argument("--n", type=int, default=None, metavar="N", help="number of queries (overrides the preset)")
    s.add_argument("--size", default=None, metavar="WxH", help="photo size in pixels, e.g. 640x480")
    s.add_argument("--seed", type=int, default=None, help="seed of poses and photos (overrides the preset)")
    s.add_argument("--margin", type=float, default=None, metavar="M", help="minimum distance from the DEM edge, m")
    s.add_argument(
        "--min-sky",
        type=float,
        default=None,
        metavar="F",
        help="keep poses whose image is at least this fraction sky (0 keeps all)",
    )
    s.add_argument(
        "--min-horizon",
        type=float,
        default=None,
        metavar="M",
        help="keep poses whose skyline is at least this far, metres (0 keeps all)",
    )
    s.add_argument("--perturb", type=float, default=None, metavar="M", help="terrain perturbation amplitude, m")
    s.add_argument("--backend", default=None, choices=("cpu", "pyrender"), help="render backend (default: cpu)")
    s.add_argument("--work", default="work", help="work folder (default: work)")
    s.add_argument("--overwrite", action="store_true", help="replace a query set made with other settings")
    s.set_defaults(func=run)
    w = actions.add_parser("show", help="print the count, a few rows and FOV statistics of a query CSV")
    w.add_argument("csv", help="query CSV (image,lat,lon,alt_m,yaw_deg,pitch_deg,roll_deg,fov_deg)")
    w.add_argument("--rows", type=int, default=5, help="rows to print (default: 5)")
    w.set_defaults(func=run)
    m = actions.add_parser("import", help="turn another tool's query metadata into a query CSV")
    m.add_argument("meta", help="metadata file, e.g. CrossLocate's datasets_meta .npy")
    m.add_argument("--format", required=True, choices=("crosslocate",), help="metadata format")
    m.add_argument("--images", required=True, help="folder the metadata's image names are relative to")
    m.add_argument(
        "--yaw-convention",
        default=YAW_CONVENTIONS[0],
        choices=YAW_CONVENTIONS,
        help="the file's yaw: clockwise from north (default; what `export --format crosslocate` writes), "
        "counter-clockwise from north, or counter-clockwise from east",
    )
    m.add_argument("-o", "--out", default="queries.csv", help="query CSV to write (default: queries.csv)")
    m.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    m.set_defaults(func=run)


def _size(text: str) -> tuple[int, int]:
    from crosslocate.errors import ConfigError

    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 640x480") from None
    return w, h


def _config(args: argparse.Namespace) -> Any:
    import dataclasses

    from crosslocate.pipelines.queries import QUERY_PRESETS

    cfg = QUERY_PRESETS[args.preset]
    over: dict[str, Any] = {}
    if args.n is not None:
        over["n_queries"] = args.n
    if args.size is not None:
        over["width_px"], over["height_px"] = _size(args.size)
    if args.seed is not None:
        over["seed"] = args.seed
    if args.margin is not None:
        over["margin_m"] = args.margin
    if args.min_sky is not None:
        over["min_sky_fraction"] = args.min_sky
    if args.min_horizon is not None:
        over["min_horizon_m"] = args.min_horizon
    if args.backend is not None:
        over["backend"] = args.backend
    if args.perturb is not None:
        over["photo"] = dataclasses.replace(cfg.photo, perturb_amplitude_m=args.perturb)
    return dataclasses.replace(cfg, **over)


def _print_summary(queries: list[Any], rows: int) -> None:
    from crosslocate.pipelines.queries import summarize

    s = summarize(queries)
    print(f"queries    {s['count']:,}")
    if not s["count"]:
        return
    for key in ("fov_deg", "pitch_deg", "roll_deg"):
        st = s[key]
        print(f"{key:<10} min {st['min']:.2f}  mean {st['mean']:.2f}  max {st['max']:.2f}")
    w, so, e, n = s["bounds_lonlat"]
    print(f"bounds     lon {w:.5f}..{e:.5f}, lat {so:.5f}..{n:.5f}")
    for q in queries[:rows]:
        p = q.pose
        print(
            f"  {q.image}  lon {p.lon:.5f} lat {p.lat:.5f} alt {p.alt_m:.1f} m  yaw {p.yaw_deg:.1f} "
            f"pitch {p.pitch_deg:.1f} roll {p.roll_deg:.1f} fov {p.fov_deg:.1f}"
        )


def run(args: argparse.Namespace) -> int:
    """``synth``: ensure the query set and print the CSV path and a summary; ``show``: describe a CSV."""
    if args.action == "import":
        from crosslocate.pipelines.export import import_crosslocate_queries

        out = import_crosslocate_queries(
            args.meta, args.images, args.out, yaw_convention=args.yaw_convention, overwrite=args.overwrite
        )
        print(f"queries    {out['queries']:,} -> {out['csv']} (yaw read as {out['yaw_convention']})")
        return 0
    if args.action == "show":
        from crosslocate.datasets.queries import load_query_csv

        queries = load_query_csv(args.csv)
        print(f"csv        {args.csv}")
        _print_summary(queries, args.rows)
        return 0
    from crosslocate.pipelines.queries import CSV_NAME, ensure_query_set, query_dir

    cfg = _config(args)
    queries = ensure_query_set(args.region, args.dem, cfg, args.work, overwrite=args.overwrite)
    print(query_dir(args.work, args.region) / CSV_NAME)
    _print_summary(queries, 3)
    return 0
