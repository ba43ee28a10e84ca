"""Backbones (torchvision-compatible layouts written by hand) and ImageNet weight loading."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from crosslocate.errors import CheckpointError
from crosslocate.model.backbones import BACKBONES
from crosslocate.model.config import NetConfig
from crosslocate.model.net import build_net

# torchvision vgg16().features: (index, in, out) of the 13 convs, written out from the VGG paper's config D
VGG16_CONVS = [
    (0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
    (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512),
]  # fmt: skip


def _synthetic_vgg16_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    sd = {}
    for idx, cin, cout in VGG16_CONVS:
        sd[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g)
        sd[f"features.{idx}.bias"] = torch.randn(cout, generator=g)
    sd["classifier.0.weight"] = torch.zeros(4, 4)  # ignored
    return sd


def test_vgg16_layout_matches_torchvision_indices():
    f = BACKBONES["vgg16"]()
    convs = [(i, m.in_channels, m.out_channels) for i, m in enumerate(f) if isinstance(m, nn.Conv2d)]
    assert convs == VGG16_CONVS
    assert [i for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)] == [4, 9, 16, 23]
    assert f.out_channels == 512 and f.stride == 16


def test_vgg16_bn_layout_matches_torchvision_vgg16_bn():
    """torchvision vgg16_bn().features: conv, BN, ReLU per layer; convs at 0, 3, 7, 10, 14, ... 40."""
    f = BACKBONES["vgg16"](batch_norm=True)
    convs = [i for i, m in enumerate(f) if isinstance(m, nn.Conv2d)]
    assert convs == [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert all(isinstance(f[i + 1], nn.BatchNorm2d) and f[i + 1].num_features == f[i].out_channels for i in convs)
    assert [i for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)] == [6, 13, 23, 33]
    assert not isinstance(f[-1], nn.ReLU) and isinstance(f[-1], nn.BatchNorm2d)  # no final ReLU (paper)
    assert f(torch.zeros(2, 3, 64, 64)).shape == (2, 512, 4, 4)


def test_imagenet_state_dict_maps_exactly(tmp_path):
    sd = _synthetic_vgg16_state_dict()
    path = tmp_path / "vgg16_imagenet.pth"
    torch.save(sd, path)
    cfg = NetConfig(imagenet_weights=str(path), two_branch=True)
    net = build_net(cfg)
    for branch in ("query", "database"):
        feats = net.branches[branch].features
        for idx, _, _ in VGG16_CONVS:
            assert torch.equal(feats[idx].weight, sd[f"features.{idx}.weight"])
            assert torch.equal(feats[idx].bias, sd[f"features.{idx}.bias"])
    assert net.meta["init"]["kind"] == "imagenet" and net.meta["init"]["n_tensors"] == 2 * 26
    assert net.init_source.startswith("imagenet ")


def test_imagenet_wrong_shape_or_missing_key_raises(tmp_path):
    sd = _synthetic_vgg16_state_dict()
    sd["features.5.weight"] = torch.zeros(128, 32, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"features\.5\.weight"):
        build_net(NetConfig(imagenet_weights=str(path)))
    del sd["features.5.weight"]
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"features\.5\.weight"):
        build_net(NetConfig(imagenet_weights=str(path)))
    # width 1/4 cannot take ImageNet shapes
    torch.save(_synthetic_vgg16_state_dict(), path)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight"):
        build_net(dataclasses.replace(NetConfig(imagenet_weights=str(path)), width=0.25))
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pth"):
        build_net(NetConfig(imagenet_weights=str(tmp_path / "junk.pth")))


@pytest.mark.parametrize("name, stride, channels", [("alexnet", 16, 32), ("resnet18", 32, 64), ("resnet34", 32, 64)])
def test_other_backbones_output_size(name, stride, channels):
    f = BACKBONES[name](width=0.125).eval()
    with torch.no_grad():
        y = f(torch.randn(1, 3, 128, 128))
    assert y.shape[1] == f.out_channels == channels  # 256 / 8 (AlexNet), 512 / 8 (ResNet)
    # spatial size ~ input / stride (AlexNet's unpadded pools lose a cell)
    assert abs(y.shape[-1] - 128 / stride) <= 1


def test_resnet_final_relu_flag():
    off = BACKBONES["resnet18"](width=0.125, final_relu=False).eval()
    on = BACKBONES["resnet18"](width=0.125, final_relu=True).eval()
    on.load_state_dict(off.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = off(x), on(x)
    assert (a < 0).any() and (b >= 0).all()
    torch.testing.assert_close(torch.relu(a), b)
