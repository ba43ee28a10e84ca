"""Presets: the stated numbers of each preset, overrides via dataclasses.replace, JSON output."""

from __future__ import annotations

import json

import pytest

from crosslocate.errors import ConfigError
from crosslocate.pipelines.presets import PRESETS, get_preset


def test_names_and_unknown():
    assert set(PRESETS) == {"paper", "cpu", "tiny"}
    with pytest.raises(ConfigError, match="paper, cpu, tiny"):
        get_preset("huge")


def test_stated_settings():
    paper, cpu, tiny = get_preset("paper"), get_preset("cpu"), get_preset("tiny")
    assert (paper.render.size_px, paper.render.range_m, paper.grid.spacing_m) == (500, 60_000.0, 500.0)
    assert paper.render.fov_deg == 60.0 and len(paper.grid.yaws_deg) == 12
    assert cpu.render.size_px == 256 and 30_000.0 <= cpu.render.range_m <= 40_000.0
    assert (tiny.render.size_px, tiny.grid.spacing_m) == (64, 2000.0)
    for p in (paper, cpu, tiny):
        assert p.grid.fov_deg == p.render.fov_deg


def test_overrides_replace_only_the_named_field():
    base = get_preset("tiny")
    p = base.with_overrides(render={"size_px": 32}, shard={"views_per_shard": 6})
    assert p.render.size_px == 32 and p.shard.views_per_shard == 6
    assert p.render.range_m == base.render.range_m and p.grid == base.grid
    assert base.render.size_px == 64  # the preset itself is unchanged
    with pytest.raises(ConfigError):
        base.with_overrides(render={"size_px": -1})
    with pytest.raises(ConfigError, match="bad override"):
        base.with_overrides(grid={"no_such_field": 1})
    with pytest.raises(ConfigError, match="unknown preset section"):
        base.with_overrides(camera={"x": 1})


def test_to_dict_is_json():
    d = get_preset("cpu").to_dict()
    text = json.dumps(d)
    assert d["name"] == "cpu" and d["render"]["size_px"] == 256 and "views_per_shard" in text
    for section in ("net", "train", "eval"):
        assert section in d  # None (with a 'missing' note) when the model configs are not built


def test_net_options_apply_backbone_and_imagenet_weights(tmp_path):
    from crosslocate.pipelines.presets import NetOptions

    cpu = get_preset("cpu")
    assert NetOptions().apply(cpu) is cpu and NetOptions().run_name("cpu") == "cpu"
    eff = NetOptions(backbone="efficientnet_lite0", imagenet_weights="builtin")
    p = eff.apply(cpu)
    assert (p.net.backbone, p.net.width, p.net.batch_norm, p.net.imagenet_weights) == (
        "efficientnet_lite0",
        1.0,
        False,
        "builtin",
    )
    assert p.net.input_size_px == cpu.net.input_size_px and p.train == cpu.train  # the rest of the preset stays
    assert eff.run_name("cpu") == "cpu-efficientnet_lite0-imagenet"
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(b"x")  # existence is checked here; the content when the net is built
    v = NetOptions(imagenet_weights=str(weights))
    p = v.apply(cpu)
    assert (p.net.backbone, p.net.width, p.net.batch_norm, p.net.imagenet_weights) == (
        "vgg16",
        1.0,
        False,
        str(weights),
    )
    assert v.run_name("cpu") == "cpu-imagenet"
    r = NetOptions(backbone="resnet18").apply(cpu)
    assert (r.net.backbone, r.net.width, r.net.batch_norm) == ("resnet18", 0.25, False)
    vlad = NetOptions(pooling="netvlad")
    assert vlad.apply(cpu).net.pooling == "netvlad" and vlad.apply(cpu).net.batch_norm  # vgg16-BN stays
    assert vlad.run_name("cpu") == "cpu-netvlad"
    with pytest.raises(ConfigError, match="pooling"):
        NetOptions(pooling="vlad").apply(cpu)
    with pytest.raises(ConfigError, match="no such file"):
        NetOptions(imagenet_weights=str(tmp_path / "missing.pth")).apply(cpu)
    with pytest.raises(ConfigError, match="builtin"):
        NetOptions(imagenet_weights="builtin").apply(cpu)  # vgg16 has no shipped weights


def test_net_options_on_a_resolved_preset_name_the_run_folder(tmp_path):
    """The run context resolves the preset (name or object) first, then applies the options; the run
    folder carries the options' name, a query CSV's stem after it; the preset keeps its base name."""
    from crosslocate.pipelines.context import RunContext
    from crosslocate.pipelines.presets import NetOptions

    tiny = get_preset("tiny")
    for none in (None, NetOptions()):
        ctx = RunContext.resolve(preset="tiny", work=tmp_path, net_options=none)
        assert (ctx.preset, ctx.run_name, ctx.run) == (tiny, "tiny", tmp_path / "demo" / "runs" / "tiny")
    custom = tiny.with_overrides(net={"pooling": "spoc"})  # a Preset object
    ctx = RunContext.resolve(
        preset=custom, work=tmp_path, net_options=NetOptions(pooling="netvlad"), queries_csv=tmp_path / "mine.csv"
    )
    assert (ctx.preset.name, ctx.preset.net.pooling, ctx.run_name) == ("tiny", "netvlad", "tiny-netvlad")
    assert ctx.base_preset is custom  # databases and queries depend on it, not on the network options
    assert ctx.run == tmp_path / "demo" / "runs" / "tiny-netvlad-mine"
    assert ctx.db("sparse") == tmp_path / "demo" / "db" / "sparse-mine" and ctx.db("uniform").name == "uniform"
    silhouette = RunContext.resolve(preset="tiny", work=tmp_path, modality="silhouette")
    assert silhouette.run.name == "tiny-silhouette" and silhouette.dem.demo
    with pytest.raises(
        ConfigError, match="--modality: unknown modality 'rgb'; choose one of depth, silhouette, semantic"
    ):
        RunContext.resolve(preset="tiny", modality="rgb")
    with pytest.raises(ConfigError, match="region 'alps' needs a DEM"):
        RunContext.resolve(region="alps", preset="tiny")


@pytest.mark.parametrize("name", ["paper", "cpu", "tiny"])
def test_one_preset_tier_grid_and_render_match_the_layer_presets(name):
    """`crosslocate grid --preset X` (the layer preset) and `build --preset X` (the end-to-end preset)
    read the same settings: there is no second tier of overrides."""
    from crosslocate.dem.config import GRID_PRESETS
    from crosslocate.render.config import RENDER_PRESETS

    preset = get_preset(name)
    assert preset.grid == GRID_PRESETS[name] and preset.render == RENDER_PRESETS[name]
    assert get_preset("cpu").grid.spacing_m == 1000.0  # the demo's uniform grid at 1 km


def test_seed_option_sets_both_seeds_and_names_its_run():
    from crosslocate.pipelines.presets import NetOptions

    base = get_preset("cpu")
    opts = NetOptions(seed=3)
    seeded = opts.apply(base)
    assert (seeded.train.seed, seeded.net.init_seed) == (3, 3)
    assert seeded.queries == base.queries and seeded.grid == base.grid  # same data, other training
    assert opts.run_name("cpu") == "cpu-seed3"
    assert NetOptions(pooling="gem", seed=1).run_name("cpu") == "cpu-gem-seed1"
    assert NetOptions(pooling="gem", seed=1).apply(base).net.pooling == "gem"


def test_training_photo_options_set_the_training_config_and_name_the_run():
    from crosslocate.pipelines.context import RunContext
    from crosslocate.pipelines.presets import NetOptions

    base = get_preset("cpu")
    opts = NetOptions(train_photos=2400, tuples_per_epoch=524, seed=1)
    p = opts.apply(base)
    assert (p.train.extra_photos, p.train.max_tuples, p.train.seed, p.net.init_seed) == (2400, 524, 1, 1)
    assert p.queries == base.queries and p.grid == base.grid and p.net.backbone == base.net.backbone
    assert opts.run_name("cpu") == "cpu-x2400-t524-seed1"
    assert NetOptions(train_photos=0).run_name("cpu") == "cpu" and NetOptions(train_photos=0).apply(base) == base
    for bad, flag in ((dict(train_photos=-1), "--train-photos"), (dict(tuples_per_epoch=0), "--tuples-per-epoch")):
        with pytest.raises(ConfigError, match=flag):
            NetOptions(**bad).apply(base)
    # the extra photos place their own sparse/compact databases; heldout and uniform are shared
    ctx = RunContext.resolve(preset="cpu", work="w", net_options=NetOptions(train_photos=2400))
    plain = RunContext.resolve(preset="cpu", work="w")
    assert ctx.db("sparse").name == "sparse-x2400" and ctx.db("compact").name == "compact-x2400"
    assert ctx.db("heldout") == plain.db("heldout") and ctx.db("uniform") == plain.db("uniform")
    assert ctx.training_photos_dir.name == "queries-train2400" and ctx.run.name == "cpu-x2400"


def test_near_negatives_option_sets_the_mining_alone_and_names_the_run():
    from crosslocate.pipelines.presets import NetOptions

    base = get_preset("cpu")
    opts = NetOptions(train_photos=2400, tuples_per_epoch=524, near_negatives=1500, epochs=24, seed=2)
    p = opts.apply(base)
    assert p.train.near_negatives == 1500 and base.train.near_negatives == 0
    assert p.train.to_dict() | {
        "near_negatives": 0,
        "extra_photos": 0,
        "max_tuples": None,
        "epochs": 12,
        "seed": 0,
    } == (base.train.to_dict())
    assert (p.net.to_dict() | {"init_seed": 0}, p.render, p.queries) == (base.net.to_dict(), base.render, base.queries)
    assert opts.run_name("cpu") == "cpu-x2400-t524-nn1500-e24-seed2"
    with pytest.raises(ConfigError, match="--near-negatives"):
        NetOptions(near_negatives=-3).apply(base)
    cached = NetOptions(cache_size=3000, near_negatives=0)
    assert cached.apply(base).train.cache_size == 3000 and base.train.cache_size == 600
    # the mining ranks every cached view: its candidate pool grows with the cache, never shrinks
    assert (cached.apply(base).train.neg_pool_size, base.train.neg_pool_size) == (3000, 1000)
    assert cached.apply(base).train.to_dict() | {"cache_size": 600, "neg_pool_size": 1000} == base.train.to_dict()
    assert NetOptions(cache_size=300).apply(base).train.neg_pool_size == 1000
    assert cached.run_name("cpu") == "cpu-nn0-c3000"
    with pytest.raises(ConfigError, match="--cache-size"):
        NetOptions(cache_size=0).apply(base)


def test_lr_options_set_the_optimiser_alone_and_name_the_run():
    from crosslocate.pipelines.presets import NetOptions

    base = get_preset("cpu")
    opts = NetOptions(backbone="efficientnet_lite0", imagenet_weights="builtin", lr=1e-4, lr_decay=0.9, epochs=24)
    p = opts.apply(base)
    assert (p.train.lr, p.train.lr_decay) == (1e-4, 0.9) and (base.train.lr, base.train.lr_decay) == (1e-3, 1.0)
    # nothing else of the training moves: the run is the preset's but for the optimiser's schedule
    assert p.train.to_dict() | {"lr": 1e-3, "lr_decay": 1.0, "epochs": 12} == base.train.to_dict()
    assert opts.run_name("cpu") == "cpu-efficientnet_lite0-imagenet-lr0.0001-ld0.9-e24"
    assert NetOptions(lr=3e-4).run_name("cpu") == "cpu-lr0.0003"
    assert NetOptions(lr_decay=1).apply(base).train.lr_decay == 1.0
    for bad in ({"lr": 0.0}, {"lr": -1e-4}, {"lr": float("nan")}, {"lr": 2.0}, {"lr": True}, {"lr": "1e-4"}):
        with pytest.raises(ConfigError, match="--lr "):
            NetOptions(**bad).apply(base)
    for bad in (0.0, 1.5, float("inf")):
        with pytest.raises(ConfigError, match="--lr-decay"):
            NetOptions(lr_decay=bad).apply(base)
    averaged = NetOptions(ema=0.99, epochs=24)
    assert averaged.apply(base).train.ema_decay == 0.99 and base.train.ema_decay == 0.0
    assert averaged.apply(base).train.to_dict() | {"ema_decay": 0.0, "epochs": 12} == base.train.to_dict()
    assert averaged.run_name("cpu") == "cpu-ema0.99-e24" and NetOptions(ema=0).apply(base).train.ema_decay == 0.0
    for bad in (1.0, -0.5, float("nan")):
        with pytest.raises(ConfigError, match=r"--ema must be a number in \[0, 1\)"):
            NetOptions(ema=bad).apply(base)
    softmax = NetOptions(loss="infonce", temperature=0.05, ema=0.99)
    assert (softmax.apply(base).train.loss, softmax.apply(base).train.temperature) == ("infonce", 0.05)
    assert softmax.apply(base).train.to_dict() | {"loss": "triplet", "temperature": 0.1, "ema_decay": 0.0} == (
        base.train.to_dict()
    )
    assert softmax.run_name("cpu") == "cpu-infonce-ema0.99-tau0.05"
    assert (
        NetOptions(loss="infonce").run_name("cpu") == "cpu-infonce"
        and NetOptions(loss="triplet").run_name("cpu") == "cpu"
    )
    with pytest.raises(ConfigError, match="--loss 'hinge': choose one of triplet, infonce"):
        NetOptions(loss="hinge").apply(base)
    with pytest.raises(ConfigError, match="--temperature is InfoNCE's; it needs --loss infonce"):
        NetOptions(temperature=0.1).apply(base)
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(ConfigError, match=r"--temperature must be a number in \(0, inf\)"):
            NetOptions(loss="infonce", temperature=bad).apply(base)
    paired = NetOptions(backbone="efficientnet_lite0", imagenet_weights="builtin", two_branch=True)
    assert paired.apply(base).net.two_branch is True and base.net.two_branch is False
    assert paired.apply(base).train == base.train
    assert paired.run_name("cpu") == "cpu-efficientnet_lite0-imagenet-2branch"
    with pytest.raises(ConfigError, match="--two-branch"):
        NetOptions(two_branch="yes").apply(base)


def test_input_size_option_sets_the_network_input_alone_and_names_the_run():
    from crosslocate.pipelines.presets import NetOptions

    base = get_preset("cpu")
    p = NetOptions(input_size=128).apply(base)
    assert p.net.input_size_px == 128 and base.net.input_size_px == 96
    # nothing but the input side changes: same views, same photos, same training
    assert (p.render, p.queries, p.train) == (base.render, base.queries, base.train)
    assert p.net.to_dict() | {"input_size_px": 96} == base.net.to_dict()
    both = NetOptions(backbone="efficientnet_lite0", imagenet_weights="builtin", input_size=160, epochs=24)
    q = both.apply(base)
    assert (q.net.backbone, q.net.imagenet_weights, q.net.input_size_px, q.train.epochs) == (
        "efficientnet_lite0",
        "builtin",
        160,
        24,
    )
    assert both.run_name("cpu") == "cpu-efficientnet_lite0-imagenet-px160-e24"
    for bad in (15, 0, True, 12.5):
        with pytest.raises(ConfigError, match="--input-size"):
            NetOptions(input_size=bad).apply(base)
