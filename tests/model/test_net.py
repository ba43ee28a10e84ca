"""The retrieval network: shapes, unit norm, no final ReLU, per-location L2 before pooling, branches, configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from crosslocate.errors import ConfigError
from crosslocate.model.config import EVAL_PRESETS, NET_PRESETS, TRAIN_PRESETS, EvalConfig, NetConfig, TrainConfig
from crosslocate.model.net import build_net

TINY = NET_PRESETS["tiny"]


def test_paper_net_outputs_512_unit_descriptors_with_negative_entries():
    net = build_net(NET_PRESETS["paper"]).eval()
    with torch.no_grad():
        d = net(torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)))
    assert d.shape == (2, 512) and d.dtype == torch.float32
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2))
    assert (d < 0).any()  # no final ReLU: descriptors are not restricted to the positive orthant
    feats = net.branches["shared"].features
    assert isinstance(feats[-1], nn.Conv2d) and len(feats) == 29  # conv5_3 last, no ReLU / max-pool after it
    assert sum(isinstance(m, nn.Conv2d) for m in feats) == 13
    assert net.meta["init"]["kind"] == "random" and "seed=0" in net.init_source


def test_final_relu_on_gives_nonnegative_descriptors():
    net = build_net(dataclasses.replace(TINY, final_relu=True)).eval()
    assert isinstance(net.branches["shared"].features[-1], nn.ReLU)
    with torch.no_grad():
        d = net(torch.randn(3, 3, 32, 32))
    assert (d >= 0).all()


def test_per_location_l2_before_max_pooling():
    net = build_net(TINY).eval()
    branch = net.branches["shared"]
    seen = {}
    branch.features.register_forward_hook(lambda m, i, o: seen.__setitem__("feat", o.detach().clone()))
    branch.pool.register_forward_hook(lambda m, i, o: seen.__setitem__("pool_in", i[0].detach().clone()))
    with torch.no_grad():
        d = net(torch.randn(2, 3, 64, 64))
    pin = seen["pool_in"]
    assert pin.shape[2:] == (4, 4)
    torch.testing.assert_close(pin.norm(dim=1), torch.ones(2, 4, 4), atol=1e-4, rtol=0)
    f = seen["feat"]
    expect = f / f.norm(dim=1, keepdim=True)  # normalise every location across channels, by hand
    expect = expect.amax(dim=(2, 3))
    expect = expect / expect.norm(dim=1, keepdim=True)
    torch.testing.assert_close(d, expect, atol=1e-5, rtol=0)


def test_without_prepool_l2_pooling_sees_raw_features():
    net = build_net(dataclasses.replace(TINY, prepool_l2=False, pooling="spoc")).eval()
    branch = net.branches["shared"]
    seen = {}
    branch.features.register_forward_hook(lambda m, i, o: seen.__setitem__("feat", o.detach().clone()))
    with torch.no_grad():
        d = net(torch.randn(2, 3, 64, 64))
    expect = seen["feat"].mean(dim=(2, 3))
    torch.testing.assert_close(d, expect / expect.norm(dim=1, keepdim=True), atol=1e-5, rtol=0)


def test_two_branch_weights_differ_and_branch_is_required():
    net = build_net(dataclasses.replace(TINY, two_branch=True)).eval()
    wq = net.branches["query"].features[0].weight
    wd = net.branches["database"].features[0].weight
    assert wq.shape == wd.shape and not torch.equal(wq, wd)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(net(x, branch="query"), net(x, branch="database"))
    with pytest.raises(ConfigError):
        net(x)


@pytest.mark.parametrize(
    "changes, dim",
    [
        ({"backbone": "alexnet", "width": 0.125}, 32),
        ({"backbone": "resnet18", "width": 0.0625}, 32),
        ({"pooling": "gem"}, 32),
        ({"out_dim": 24}, 24),
    ],
)
def test_ablations_build_and_embed(changes, dim):
    net = build_net(dataclasses.replace(TINY, **changes)).eval()
    with torch.no_grad():
        d = net(torch.randn(2, 3, 64, 64))
    assert d.shape == (2, dim)
    torch.testing.assert_close(d.norm(dim=1), torch.ones(2))


def test_random_init_is_seeded():
    a, b = build_net(TINY), build_net(TINY)
    c = build_net(dataclasses.replace(TINY, init_seed=1))
    wa, wb, wc = (n.branches["shared"].features[0].weight for n in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_configs_roundtrip_and_validate():
    for presets, cls in ((NET_PRESETS, NetConfig), (TRAIN_PRESETS, TrainConfig), (EVAL_PRESETS, EvalConfig)):
        assert set(presets) == {"paper", "cpu", "tiny"}
        for cfg in presets.values():
            assert cls.from_dict(cfg.to_dict()) == cfg
    t = TRAIN_PRESETS["paper"]
    assert (t.margin, t.pos_radius_m, t.pos_yaw_deg, t.neg_min_dist_m, t.n_negatives) == (0.1, 20.0, 15.0, 2000.0, 10)
    assert (t.neg_pool_size, t.neg_hardest, t.neg_slack) == (4000, 100, 0.2)
    assert EVAL_PRESETS["paper"].thresholds_m == (20.0, 100.0, 1000.0)
    for bad in (
        {"pooling": "avg"},
        {"backbone": "vgg19"},
        {"width": 0},
        {"imagenet_weights": "x", "backbone": "alexnet"},
    ):
        with pytest.raises(ConfigError):
            NetConfig(**bad)
    with pytest.raises(ConfigError):
        TrainConfig(neg_min_dist_m=10.0)
    with pytest.raises(ConfigError):
        NetConfig.from_dict({"colour": 1})


@pytest.mark.parametrize(("pooling", "dim"), [("netvlad", 8 * 16), ("mixvpr", 8 * 4)])
def test_netvlad_and_mixvpr_heads(pooling, dim):
    """Aggregator ablations: D = clusters x C (NetVLAD) or rows x C (MixVPR) at width 1/64 (C = 8)."""
    from crosslocate.model.layers import NetVLAD

    cfg = NetConfig(width=1 / 64, pooling=pooling, input_size_px=64)
    net = build_net(cfg)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    d = net(x)
    assert d.shape == (3, dim) and net.out_dim == dim
    torch.testing.assert_close(d.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert torch.equal(build_net(cfg)(x), d)  # seeded init, including NetVLAD's centroids
    d.sum().backward()
    assert all(p.grad is not None for p in net.branches["shared"].pool.parameters())
    if pooling == "netvlad":
        v = net.branches["shared"].pool
        assert isinstance(v, NetVLAD)
        torch.testing.assert_close(v.centroids.norm(dim=1), torch.ones(16))
        # init: the assignment scores 2 alpha c.x - alpha |c|^2 pick the nearest centroid
        c = v.centroids.detach()
        pts = c[:3] + 0.01  # points next to centroids 0, 1, 2
        scores = v.assign(pts[:, :, None, None])[:, :, 0, 0]
        assert scores.argmax(dim=1).tolist() == [0, 1, 2]
    # a different input size works (MixVPR pools to a fixed grid first)
    assert net(torch.randn(1, 3, 96, 80)).shape == (1, dim)
