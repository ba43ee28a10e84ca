"""Model configs: the paper's numbers in the presets, field-named validation errors, dict round trips."""

from __future__ import annotations

import dataclasses
import json

import pytest

from crosslocate.errors import ConfigError
from crosslocate.model.config import (
    EVAL_PRESETS,
    NET_PRESETS,
    TRAIN_PRESETS,
    EvalConfig,
    NetConfig,
    TrainConfig,
)

CLASSES = (NetConfig, TrainConfig, EvalConfig)


def test_presets_exist_and_paper_numbers():
    for presets in (NET_PRESETS, TRAIN_PRESETS, EVAL_PRESETS):
        assert set(presets) == {"paper", "cpu", "tiny"}
    t = TRAIN_PRESETS["paper"]
    assert (t.margin, t.pos_radius_m, t.pos_yaw_deg, t.neg_min_dist_m) == (0.1, 20.0, 15.0, 2000.0)
    assert (t.n_negatives, t.neg_pool_size, t.neg_hardest, t.neg_slack) == (10, 4000, 100, 0.2)
    e = EVAL_PRESETS["paper"]
    assert e.thresholds_m == (20.0, 100.0, 1000.0) and e.max_n == 100 and e.orient_max_yaw_deg == 30.0
    n = NET_PRESETS["paper"]
    assert (n.backbone, n.pooling, n.final_relu, n.prepool_l2, n.out_dim) == ("vgg16", "mac", False, True, None)
    # smaller presets are smaller: width and input size shrink
    assert NET_PRESETS["paper"].width > NET_PRESETS["cpu"].width > NET_PRESETS["tiny"].width
    assert NET_PRESETS["paper"].input_size_px > NET_PRESETS["cpu"].input_size_px > NET_PRESETS["tiny"].input_size_px


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (NetConfig, "backbone", "vgg19"),
        (NetConfig, "pooling", "max"),
        (NetConfig, "width", 0.0),
        (NetConfig, "width", "1"),
        (NetConfig, "width", 5.0),
        (NetConfig, "gem_p", -1.0),
        (NetConfig, "out_dim", 0),
        (NetConfig, "input_size_px", 8),
        (NetConfig, "input_size_px", 224.0),
        (NetConfig, "in_channels", 2),
        (NetConfig, "final_relu", "no"),
        (NetConfig, "init_seed", -1),
        (TrainConfig, "epochs", 0),
        (TrainConfig, "epochs", True),
        (TrainConfig, "lr", "0.1"),
        (TrainConfig, "lr", float("nan")),
        (TrainConfig, "margin", 0.0),
        (TrainConfig, "pos_yaw_deg", 181.0),
        (TrainConfig, "neg_slack", -0.1),
        (TrainConfig, "neg_min_dist_m", 10.0),  # must exceed pos_radius_m (20)
        (TrainConfig, "neg_hardest", 5000),  # more than neg_pool_size (4000)
        (TrainConfig, "max_tuples", 0),
        (TrainConfig, "extra_photos", -1),
        (TrainConfig, "extra_photos", 2.5),
        (TrainConfig, "num_workers", -1),
        (TrainConfig, "augment", 1),
        (TrainConfig, "device", ""),
        (TrainConfig, "lr_decay", 0.0),
        (TrainConfig, "lr_decay", 1.5),
        (TrainConfig, "val_databases", ("uniform", "val")),
        (TrainConfig, "val_databases", ()),
        (TrainConfig, "val_databases", ("sparse", "sparse")),
        (TrainConfig, "batch_negatives", "yes"),
        (NetConfig, "batch_norm", 1),
        (EvalConfig, "thresholds_m", ()),
        (EvalConfig, "thresholds_m", (20.0, -1.0)),
        (EvalConfig, "thresholds_m", ("20",)),
        (EvalConfig, "max_n", 0),
        (EvalConfig, "orient_max_yaw_deg", 0.0),
        (EvalConfig, "orient_max_yaw_deg", "30"),
        (EvalConfig, "fov_bins_deg", (0.0, 50.0, 40.0)),
        (EvalConfig, "fov_bins_deg", (0.0, "x")),
        (EvalConfig, "index", "lsh"),
        (EvalConfig, "metric", "cosine"),
        (EvalConfig, "use_gpu", "yes"),
        (EvalConfig, "horizon_max_shift_deg", -1.0),
        (EvalConfig, "horizon_grid_step_deg", 0.0),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(cls, field, value):
    with pytest.raises(ConfigError, match=f"{cls.__name__}.{field}"):
        cls(**{field: value})


def test_imagenet_weights_only_for_vgg16():
    with pytest.raises(ConfigError, match="imagenet_weights"):
        NetConfig(backbone="resnet18", imagenet_weights="w.pth")
    with pytest.raises(ConfigError, match="batch_norm"):
        NetConfig(imagenet_weights="w.pth", batch_norm=True)  # plain VGG16 weights
    with pytest.raises(ConfigError, match="batch_norm"):
        NetConfig(backbone="alexnet", batch_norm=True)


@pytest.mark.parametrize("cls", CLASSES)
def test_dict_round_trip_through_json(cls):
    # a non-default instance: change every field to another valid value where easy
    changed = {
        NetConfig: {"width": 0.5, "pooling": "gem", "out_dim": 64, "two_branch": True, "input_size_px": 128},
        TrainConfig: {
            "epochs": 3,
            "lr": 1e-3,
            "lr_decay": 0.5,
            "neg_slack": 0.0,
            "max_tuples": 7,
            "augment": False,
            "batch_negatives": True,
            "val_databases": ("uniform", "sparse"),
        },
        EvalConfig: {"thresholds_m": (5.0, 50.0), "max_n": 10, "fov_bins_deg": (0.0, 90.0), "index": "hnsw"},
    }[cls]
    cfg = cls(**changed)
    d = json.loads(json.dumps(cfg.to_dict()))  # JSON-able: tuples become lists
    back = cls.from_dict(d)
    assert back == cfg
    for f in dataclasses.fields(cls):
        assert getattr(back, f.name) == getattr(cfg, f.name), f.name
    if cls is EvalConfig:
        assert back.thresholds_m == (5.0, 50.0) and isinstance(back.thresholds_m, tuple)


@pytest.mark.parametrize("cls", CLASSES)
def test_unknown_keys_refused(cls):
    d = cls().to_dict()
    d["learning_rate_typo"] = 1.0
    with pytest.raises(ConfigError, match="learning_rate_typo"):
        cls.from_dict(d)
    with pytest.raises(ConfigError, match="dict"):
        cls.from_dict([("epochs", 1)])  # type: ignore[arg-type]


def test_configs_are_frozen():
    cfg = TrainConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 2  # type: ignore[misc]
    # replace() re-validates
    with pytest.raises(ConfigError, match="TrainConfig.epochs"):
        dataclasses.replace(cfg, epochs=0)
