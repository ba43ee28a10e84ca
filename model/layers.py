"""Thin ``nn.Module`` wrappers over :mod:`crosslocate.model.functional`; each ``__repr__`` shows its settings.

API
---
- ``L2N(dim=1, eps)``: L2 normalisation (per location across channels for feature maps).
- ``MAC()``, ``SPoC()``, ``GeM(p=3.0, eps, learnable=True)``: global pooling (B, C, H, W) -> (B, C).
- ``NetVLAD(channels, clusters=16)``: (B, C, H, W) -> (B, clusters*C) (``out_dim``), 1x1-conv soft
  assignment to learned centroids; ``init_centroids(gen)`` draws unit centroids and sets the
  assignment to ``2 alpha c_k . x - alpha |c_k|^2`` (the paper's init).
- ``MixVPR(channels, grid=4, depth=2, rows=4)``: a MixVPR-style feature mixer (Ali-bey et al.
  2023): the map is average-pooled to a fixed ``grid x grid`` (so any input size works), ``depth``
  residual MLPs mix the ``grid^2`` spatial positions of every channel, then linear projections
  reduce positions to ``rows``: (B, C, H, W) -> (B, rows*C) (``out_dim``).
- ``TripletLoss(margin=0.1, reduction="mean")``.
- ``POOLING``: name -> pooling class (``mac``, ``spoc``, ``gem``), the registry ``NetConfig.pooling`` reads.
"""

from __future__ import annotations

import torch
from torch import nn

from crosslocate.model import functional as F
from crosslocate.model.config import POOLING_CLASSES


class L2N(nn.Module):
    """L2 normalisation along ``dim`` (see :func:`crosslocate.model.functional.l2n`)."""

    def __init__(self, dim: int = 1, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.l2n(x, dim=self.dim, eps=self.eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dim={self.dim}, eps={self.eps})"


class MAC(nn.Module):
    """Global max pooling (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mac(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SPoC(nn.Module):
    """Global average pooling (B, C, H, W) -> (B, C)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.spoc(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GeM(nn.Module):
    """Generalised-mean pooling with a (by default learnable) exponent ``p``."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        value = torch.ones(1) * float(p)
        self.p: torch.Tensor
        if learnable:
            self.p = nn.Parameter(value)
        else:
            self.register_buffer("p", value)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gem(x, self.p, self.eps)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(p={float(self.p.detach()[0]):.4f}, eps={self.eps})"


class TripletLoss(nn.Module):
    """Triplet loss over (q (B, D), p (B, D), n (B, K, D)); see :func:`crosslocate.model.functional.triplet_loss`."""

    def __init__(self, margin: float = F.DEFAULT_MARGIN, reduction: str = "mean") -> None:
        super().__init__()
        self.margin, self.reduction = margin, reduction

    def forward(self, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return F.triplet_loss(q, p, n, margin=self.margin, reduction=self.reduction)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(margin={self.margin}, reduction={self.reduction!r})"


class NetVLAD(nn.Module):
    """NetVLAD aggregation (see :func:`crosslocate.model.functional.netvlad`); ``out_dim = clusters * channels``."""

    def __init__(self, channels: int, clusters: int = 16, alpha: float = 10.0) -> None:
        super().__init__()
        self.assign = nn.Conv2d(channels, clusters, kernel_size=1, bias=True)
        self.centroids = nn.Parameter(torch.zeros(clusters, channels))
        self.alpha = float(alpha)
        self.out_dim = clusters * channels

    def init_centroids(self, generator: torch.Generator | None = None) -> None:
        """Unit random centroids; assignment ``2 alpha c_k . x - alpha |c_k|^2`` (soft nearest centroid)."""
        with torch.no_grad():
            c = torch.randn(self.centroids.shape, generator=generator)
            c = F.l2n(c, dim=1)
            self.centroids.copy_(c)
            self.assign.weight.copy_((2.0 * self.alpha * c)[:, :, None, None])
            self.assign.bias.copy_(-self.alpha * c.pow(2).sum(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.netvlad(x, self.assign(x), self.centroids)

    def __repr__(self) -> str:
        k, c = self.centroids.shape
        return f"{type(self).__name__}(channels={c}, clusters={k}, alpha={self.alpha})"


class MixVPR(nn.Module):
    """MixVPR-style feature mixer over a fixed spatial grid; ``out_dim = rows * channels``."""

    def __init__(self, channels: int, grid: int = 4, depth: int = 2, rows: int = 4, ratio: int = 1) -> None:
        super().__init__()
        hw = grid * grid
        self.grid = grid
        self.mix = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(hw), nn.Linear(hw, hw * ratio), nn.ReLU(), nn.Linear(hw * ratio, hw))
            for _ in range(depth)
        )
        self.channel_proj = nn.Linear(channels, channels)
        self.row_proj = nn.Linear(hw, rows)
        self.out_dim = rows * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.nn.functional.adaptive_avg_pool2d(x, self.grid).flatten(2)  # (B, C, hw)
        for block in self.mix:
            z = z + block(z)
        z = self.channel_proj(z.transpose(1, 2))  # (B, hw, C)
        z = self.row_proj(z.transpose(1, 2))  # (B, C, rows)
        return F.l2n(z.flatten(1), dim=1)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(channels={self.channel_proj.in_features}, grid={self.grid}, "
            f"depth={len(self.mix)}, rows={self.row_proj.out_features})"
        )


#: Pooling registry: ``NetConfig.pooling`` -> module class. ``netvlad`` and ``mixvpr`` take the
#: backbone's channel count first and have an ``out_dim``; the others keep the channels.
POOLING: dict[str, type[nn.Module]] = {name: globals()[cls] for name, cls in POOLING_CLASSES.items()}

__all__ = ["L2N", "MAC", "POOLING", "GeM", "MixVPR", "NetVLAD", "SPoC", "TripletLoss"]
