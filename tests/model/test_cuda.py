"""CUDA paths (marker ``gpu``; skipped without a CUDA device): every backbone, every pooling, batch
norm, a projection and two branches embed on the GPU as on the CPU. ``make test`` leaves them out; on
a GPU machine: ``pytest -m gpu tests``.

TF32 is switched off for the comparison: both sides then compute in fp32, so a variant that computes
something else on the GPU differs by more than rounding (one that leaves a tensor on the CPU raises).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from crosslocate.model.config import BACKBONE_NAMES, NET_PRESETS, POOLING_NAMES, NetConfig
from crosslocate.model.net import build_net

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]

TINY = NET_PRESETS["tiny"]


#: Backbones at small widths (64 px input), poolings on the tiny VGG16, and the variants beside them.
VARIANTS: dict[str, NetConfig] = {
    **{
        f"backbone-{b}": NetConfig(backbone=b, width=1.0 if b == "efficientnet_lite0" else 0.0625, input_size_px=64)
        for b in BACKBONE_NAMES
    },
    **{f"pooling-{p}": NetConfig(width=1 / 64, pooling=p, input_size_px=64) for p in POOLING_NAMES},
    "batch_norm": dataclasses.replace(TINY, batch_norm=True),
    "out_dim": dataclasses.replace(TINY, out_dim=24),
    "two_branch": dataclasses.replace(TINY, two_branch=True),
}


@pytest.mark.parametrize("cfg", list(VARIANTS.values()), ids=list(VARIANTS))
def test_every_net_embeds_on_the_gpu_as_on_the_cpu(cfg, fp32_cuda):
    net = build_net(cfg).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    kw = {"branch": "query"} if cfg.two_branch else {}
    with torch.no_grad():
        ref = net(x, **kw)
        got = net.to(fp32_cuda)(x.to(fp32_cuda), **kw)
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), ref, atol=1e-4, rtol=1e-4)
