"""CUDA paths (marker ``gpu``; skipped without a CUDA device): every network variant embeds on the
GPU as on the CPU. ``make test`` leaves them out; on a GPU machine: ``pytest -m gpu tests``.

TF32 is switched off for the comparison: both sides then compute in fp32, so a variant that kept a
tensor on the wrong device, or computed something else on the GPU, differs by more than rounding.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crosslocate.model.config import NET_PRESETS, NetConfig
from crosslocate.model.net import build_net

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

TINY = NET_PRESETS["tiny"]


@pytest.fixture
def fp32_cuda():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield torch.device("cuda")
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize(
    "cfg",
    [
        TINY,
        dataclasses.replace(TINY, backbone="alexnet", width=0.125),
        dataclasses.replace(TINY, backbone="resnet18", width=0.0625),
        dataclasses.replace(TINY, pooling="gem"),
        NetConfig(width=1 / 64, pooling="netvlad", input_size_px=64),
        NetConfig(width=1 / 64, pooling="mixvpr", input_size_px=64),
        NetConfig(backbone="efficientnet_lite0", input_size_px=64),
        dataclasses.replace(TINY, two_branch=True),
    ],
    ids=["vgg16", "alexnet", "resnet18", "gem", "netvlad", "mixvpr", "efficientnet_lite0", "two_branch"],
)
def test_every_net_embeds_on_the_gpu_as_on_the_cpu(cfg, fp32_cuda):
    net = build_net(cfg).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kw = {"branch": "query"} if cfg.two_branch else {}
    with torch.no_grad():
        ref = net(x, **kw)
        got = net.to(fp32_cuda)(x.to(fp32_cuda), **kw)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), ref, atol=1e-4, rtol=1e-4)
