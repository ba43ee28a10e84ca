"""``crosslocate localize``: top-K candidate camera positions of one photo in a rendered database."""

from __future__ import annotations

import argparse

from crosslocate.datasets.schema import modality_names


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("localize", help="retrieve the top-K database views of a photo and map them")
    p.add_argument("photo", help="the photo (PNG/JPEG; at least 8 px a side; its EXIF orientation is applied)")
    p.add_argument("--db", required=True, help="database folder (manifest.json + shards)")
    p.add_argument("--checkpoint", required=True, help="trained network (checkpoint.pt)")
    p.add_argument("--fov", type=float, required=True, help="horizontal field of view of the photo, degrees (5 to 150)")
    p.add_argument("-k", "--top-k", type=int, default=10, help="number of candidates (default 10)")
    p.add_argument(
        "--modality", default=None, choices=modality_names(), help="database modality (default: the checkpoint's)"
    )
    p.add_argument("--out", default=None, help="output folder for the JSON and PNG map (default: next to the photo)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crosslocate.pipelines.localize import localize

    out = localize(
        args.photo,
        args.db,
        args.checkpoint,
        args.fov,
        k=args.top_k,
        modality=args.modality,
        out_dir=args.out,
        device=args.device,
    )
    print(f"{'rank':>4s} {'lat':>10s} {'lon':>10s} {'yaw':>6s} {'distance':>9s}")
    for c in out["candidates"]:
        print(f"{c['rank']:4d} {c['lat']:10.5f} {c['lon']:10.5f} {c['yaw_deg']:6.1f} {c['descriptor_distance']:9.4f}")
    print(out["map"])
    print(out["json"])
    return 0
