"""Thin ``nn.Module`` wrappers over :mod:`crosslocate.model.functional`; each ``__repr__`` shows its settings.

API
---
- ``L2N(dim=1, eps)``: L2 normalisation (per location across channels for feature maps).
- ``MAC()``, ``SPoC()``, ``GeM(p=3.0, eps, learnable=True)``: global pooling (B, C, H, W) -> (B, C).
- ``TripletLoss(margin=0.1, reduction="mean")``.
- ``POOLING``: name -> pooling class (``mac``, ``spoc``, ``gem``), the registry ``NetConfig.pooling`` reads.
"""

from __future__ import annotations

import torch
from torch import nn

from crosslocate.model import functional as F


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


#: Pooling registry: ``NetConfig.pooling`` -> module class.
POOLING: dict[str, type[nn.Module]] = {"mac": MAC, "spoc": SPoC, "gem": GeM}

__all__ = ["L2N", "MAC", "POOLING", "GeM", "SPoC", "TripletLoss"]
