"""``crosslocate train``: ensure queries and databases, then train the retrieval network."""

from __future__ import annotations

import argparse
import json

from crosslocate.datasets.schema import modality_names
from crosslocate.model.config import BACKBONE_NAMES, LOSS_NAMES, POOLING_NAMES
from crosslocate.pipelines.commands import add_dem_argument
from crosslocate.pipelines.presets import PRESET_NAMES


def add_flow_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``train`` and ``benchmark``."""
    p.add_argument("--region", default="demo", help="region name (demo, alps, switzerland) or polygon file")
    add_dem_argument(p)
    p.add_argument("--preset", default="cpu", choices=PRESET_NAMES, help="settings preset (default: cpu)")
    p.add_argument("--work", default="work", help="work folder (queries, databases, runs)")
    p.add_argument("--modality", default="depth", choices=modality_names(), help="database modality")
    p.add_argument("--device", default=None, help="auto, cpu or cuda:N (default: the preset's)")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="DataLoader worker processes that read and prepare views and photos for the network "
        "(default: the preset's, 0 = in the main process); a GPU starves without them. A resource "
        "setting: the run folder stays the same",
    )
    p.add_argument(
        "--queries",
        default=None,
        metavar="CSV",
        help="your own photos as the query set: a query CSV (image,lat,lon,alt_m,yaw_deg,pitch_deg,roll_deg,fov_deg; "
        "see `crosslocate queries --help`) instead of the synthetic photos; split by position like them",
    )
    p.add_argument(
        "--backbone",
        default=None,
        choices=BACKBONE_NAMES,
        help="network backbone instead of the preset's",
    )
    p.add_argument("--pooling", default=None, choices=POOLING_NAMES, help="aggregation instead of the preset's")
    p.add_argument(
        "--imagenet-weights",
        default=None,
        metavar="PATH",
        help="ImageNet init: a torchvision VGG16 state_dict file, or 'builtin' with --backbone efficientnet_lite0 "
        "(weights shipped by a pinned package); sets width 1. Runs go to runs/<preset>[-<backbone>][-<pooling>]-imagenet",
    )
    p.add_argument(
        "--input-size",
        type=int,
        default=None,
        metavar="PX",
        help="side of the square network input in pixels instead of the preset's (cpu: 96, paper: 500); "
        "runs go to runs/<preset>...-px<PX>",
    )
    p.add_argument(
        "--clip-to-dem",
        action="store_true",
        help="build the uniform database over the DEM-covered part of the region only (real tiles that cover "
        "part of it, e.g. --region alps with the shared SRTM tiles)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="training and initialisation seed instead of the preset's (runs go to runs/<preset>...-seed<N>); "
        "the query set and databases stay the same, so seeds measure the training's spread",
    )
    p.add_argument(
        "--train-photos",
        type=int,
        default=None,
        metavar="N",
        help="add N synthetic training-only photos (a second set at training-split spots, in "
        "<work>/<region>/queries-train<N>; the val and test photos stay the same); runs go to runs/<preset>...-x<N>",
    )
    p.add_argument(
        "--tuples-per-epoch",
        type=int,
        default=None,
        metavar="M",
        help="train on M tuples per epoch (a new random draw of the training photos each epoch) instead of "
        "every training photo; with --train-photos it keeps the training cost of the smaller set",
    )
    p.add_argument(
        "--near-negatives",
        type=int,
        default=None,
        metavar="K",
        help="add K neighbourhood views per epoch to the mining cache: training views 2-5 km from an epoch "
        "photo, facing its way (a photo's own surroundings); runs go to runs/<preset>...-nn<K>",
    )
    p.add_argument(
        "--cache-size",
        type=int,
        default=None,
        metavar="C",
        help="random training views embedded per epoch as negative candidates instead of the preset's (cpu: "
        "600); more finds harder far look-alikes at more embedding cost; runs go to runs/<preset>...-c<C>",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        metavar="LR",
        help="Adam learning rate instead of the preset's (cpu: 1e-3, tuned for random init; an ImageNet "
        "backbone may want less); runs go to runs/<preset>...-lr<LR>",
    )
    p.add_argument(
        "--lr-decay",
        type=float,
        default=None,
        metavar="F",
        help="multiply the learning rate by F after each epoch (0 < F <= 1; preset: 1, constant); runs go to "
        "runs/<preset>...-ld<F>",
    )
    p.add_argument(
        "--two-branch",
        action="store_true",
        default=None,
        help="separate weights for the photos and the rendered views (both from the same init); runs go to "
        "runs/<preset>-...-2branch...",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=None,
        metavar="D",
        help="validate and keep a moving average of the weights, avg = D avg + (1 - D) weights after every "
        "optimiser step (0 <= D < 1; 0.99 spans about 100 steps); runs go to runs/<preset>...-ema<D>",
    )
    p.add_argument(
        "--loss",
        default=None,
        choices=LOSS_NAMES,
        help="training loss instead of the preset's triplet hinge: infonce, a softmax over the positive and the "
        "same negatives (every negative weighted by its share, none dropped below a margin); runs go to "
        "runs/<preset>-...-infonce...",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        metavar="T",
        help="softmax temperature of --loss infonce (default 0.1, on similarities cos - 1 of the unit "
        "descriptors); runs go to runs/<preset>...-tau<T>",
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        metavar="E",
        help="training epochs instead of the preset's (runs go to runs/<preset>...-e<E>); the checkpoint kept is "
        "still the best epoch on validation",
    )


def net_options(args: argparse.Namespace) -> object | None:
    """``--backbone`` / ``--imagenet-weights`` as a :class:`~crosslocate.pipelines.presets.NetOptions` (None if unset)."""
    chosen = {
        "backbone": args.backbone,
        "imagenet_weights": args.imagenet_weights,
        "pooling": args.pooling,
        "seed": getattr(args, "seed", None),
        "train_photos": getattr(args, "train_photos", None),
        "tuples_per_epoch": getattr(args, "tuples_per_epoch", None),
        "epochs": getattr(args, "epochs", None),
        "input_size": getattr(args, "input_size", None),
        "near_negatives": getattr(args, "near_negatives", None),
        "cache_size": getattr(args, "cache_size", None),
        "lr": getattr(args, "lr", None),
        "lr_decay": getattr(args, "lr_decay", None),
        "ema": getattr(args, "ema", None),
        "loss": getattr(args, "loss", None),
        "temperature": getattr(args, "temperature", None),
        "two_branch": getattr(args, "two_branch", None),
    }
    if all(v is None for v in chosen.values()):
        return None
    from crosslocate.pipelines.presets import NetOptions

    return NetOptions(**chosen)


def run_context(args: argparse.Namespace) -> object:
    """The command's :class:`~crosslocate.pipelines.context.RunContext`, resolved once from its options."""
    from crosslocate.pipelines.context import RunContext

    return RunContext.resolve(
        region=args.region,
        dem=args.dem,
        preset=args.preset,
        work=args.work,
        modality=args.modality,
        queries_csv=args.queries,
        net_options=net_options(args),
        clip_to_dem=args.clip_to_dem,
    )


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train the retrieval network (renders missing queries/databases first)")
    add_flow_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue the run's existing checkpoint")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crosslocate.pipelines.train import run_train

    summary = run_train(run_context(args), resume=args.resume, device=args.device, workers=args.workers)
    print(json.dumps(summary.get("last_epoch"), default=str))
    print(summary["checkpoint"])
    return 0
