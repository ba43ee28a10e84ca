"""Convolutional backbones written in plain torch (no torchvision): VGG16, AlexNet, ResNet-18/34, EfficientNet-Lite0.

API
---
- ``BACKBONES``: name -> factory ``(width, final_relu, in_channels) -> Backbone`` (``vgg16`` also
  takes ``batch_norm``: the ``vgg16_bn`` layout).
- ``Backbone``: an ``nn.Module`` mapping (B, C_in, H, W) to (B, out_channels, H', W'), with
  ``out_channels`` and ``stride`` (input pixels per output cell).
- ``VGG16_CONV_INDICES``: the ``features.N`` indices of the 13 VGG16 convs (torchvision layout).
- ``scaled(channels, width)``: channel count under a width multiplier (at least 1).
- ``efficientnet_lite0``: defined in :mod:`crosslocate.model.efficientnet` (imported when built).

VGG16 and AlexNet are ``nn.Sequential`` with the *same indices as torchvision's* ``features``,
without the last max-pool (cirtorch crops it) and, unless ``final_relu``, without the last ReLU
(CrossLocate). So a torchvision ``state_dict`` key ``features.N.weight`` maps to ``features.N.weight``
here one to one. ResNets follow the torchvision layout of ``conv1/bn1/layer1..4`` (no avgpool/fc);
``final_relu=False`` drops the ReLU after the last residual addition.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from crosslocate.model.config import BACKBONE_NAMES

#: VGG16 conv widths per block (ImageNet VGG16 "D").
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
#: torchvision ``vgg16().features`` indices of the 13 conv layers.
VGG16_CONV_INDICES: tuple[int, ...] = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def scaled(channels: int, width: float) -> int:
    """``max(1, round(channels * width))``: channels of a layer under the width multiplier."""
    return max(1, round(channels * width))


class Backbone(nn.Sequential):
    """A sequential feature extractor that knows its output channels and total stride."""

    def __init__(self, *layers: nn.Module, out_channels: int, stride: int) -> None:
        super().__init__(*layers)
        self.out_channels = out_channels
        self.stride = stride


def vgg16(width: float = 1.0, final_relu: bool = False, in_channels: int = 3, batch_norm: bool = False) -> Backbone:
    """VGG16 conv1_1 .. conv5_3 (3x3, padding 1), 4 max-pools, stride 16; torchvision indices.

    ``batch_norm``: a BatchNorm after every conv (torchvision's ``vgg16_bn`` layout and indices),
    which lets a randomly initialised net train at a large learning rate.
    """
    layers: list[nn.Module] = []
    c_in = in_channels
    for b, block in enumerate(VGG16_BLOCKS):
        for c in block:
            c_out = scaled(c, width)
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        if b < len(VGG16_BLOCKS) - 1:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    if not final_relu:
        layers.pop()
    return Backbone(*layers, out_channels=c_in, stride=16)


def alexnet(width: float = 1.0, final_relu: bool = False, in_channels: int = 3) -> Backbone:
    """AlexNet's 5 convs (torchvision indices 0, 3, 6, 8, 10), 2 max-pools, no last pool; stride 16."""
    c = [scaled(v, width) for v in (64, 192, 384, 256, 256)]
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, c[0], kernel_size=11, stride=4, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[0], c[1], kernel_size=5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(c[1], c[2], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[2], c[3], kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(c[3], c[4], kernel_size=3, padding=1),
    ]
    if final_relu:
        layers.append(nn.ReLU(inplace=True))
    return Backbone(*layers, out_channels=c[4], stride=16)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity (or 1x1 projection) shortcut, ReLU after the sum."""

    def __init__(self, c_in: int, c_out: int, stride: int, relu_out: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.relu_out = relu_out
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out)) + identity
        return self.relu(out) if self.relu_out else out

    def __repr__(self) -> str:
        return f"BasicBlock({self.conv1.in_channels}->{self.conv2.out_channels}, relu_out={self.relu_out})"


def _resnet(blocks: tuple[int, ...], width: float, final_relu: bool, in_channels: int) -> Backbone:
    c0 = scaled(64, width)
    stem = [
        nn.Conv2d(in_channels, c0, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(c0),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    ]
    stages: list[nn.Module] = []
    c_in = c0
    for s, n in enumerate(blocks):
        c_out = scaled(64 * 2**s, width)
        layer = []
        for i in range(n):
            last = s == len(blocks) - 1 and i == n - 1
            stride = 2 if (i == 0 and s > 0) else 1
            layer.append(BasicBlock(c_in, c_out, stride, relu_out=final_relu or not last))
            c_in = c_out
        stages.append(nn.Sequential(*layer))
    return Backbone(*stem, *stages, out_channels=c_in, stride=32)


def resnet18(width: float = 1.0, final_relu: bool = False, in_channels: int = 3) -> Backbone:
    """ResNet-18 conv part (blocks 2-2-2-2, widths 64..512), stride 32."""
    return _resnet((2, 2, 2, 2), width, final_relu, in_channels)


def resnet34(width: float = 1.0, final_relu: bool = False, in_channels: int = 3) -> Backbone:
    """ResNet-34 conv part (blocks 3-4-6-3, widths 64..512), stride 32."""
    return _resnet((3, 4, 6, 3), width, final_relu, in_channels)


def efficientnet_lite0(width: float = 1.0, final_relu: bool = False, in_channels: int = 3) -> Backbone:
    """EfficientNet-Lite0 conv part, stride 32 (:func:`crosslocate.model.efficientnet.efficientnet_lite0`)."""
    from crosslocate.model.efficientnet import efficientnet_lite0 as build

    return build(width=width, final_relu=final_relu, in_channels=in_channels)


#: Backbone registry: ``NetConfig.backbone`` -> the factory of that name in this module, for every
#: name of :data:`crosslocate.model.config.BACKBONE_NAMES` (a name without a factory fails at import).
BACKBONES: dict[str, Callable[..., Backbone]] = {name: globals()[name] for name in BACKBONE_NAMES}

__all__ = ["BACKBONES", "VGG16_BLOCKS", "VGG16_CONV_INDICES", "Backbone", "BasicBlock", "scaled"]
