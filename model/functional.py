"""Pure tensor functions of the retrieval network and its loss (cirtorch's ``layers/functional`` split).

API
---
- ``l2n(x, dim=1, eps)``: L2 normalisation along ``dim`` (across channels for (B, C, H, W) maps).
- ``mac(x)``, ``spoc(x)``, ``gem(x, p, eps)``: global pooling (B, C, H, W) -> (B, C).
- ``netvlad(x, logits, centroids)``: NetVLAD aggregation (B, C, H, W) -> (B, K*C), soft-assigned
  residuals per cluster, intra-normalised, then L2 over the whole vector.
- ``triplet_loss(q, p, n, margin=0.1, reduction="mean", mask=None)``: per tuple
  ``sum_k max(d^2(q, p) + margin - d^2(q, n_k), 0)`` (over the negatives ``mask`` keeps), then
  mean (or sum / none) over the batch.
- ``infonce_loss(q, p, n, temperature=0.1, reduction="mean", mask=None)``: per tuple the softmax
  cross-entropy of picking the positive among the positive and the (kept) negatives, with
  similarity ``-d^2 / 2`` (the cosine minus 1 for unit descriptors) over ``temperature``.

Tensors follow their inputs' device and dtype; nothing here holds state.
"""

from __future__ import annotations

import torch

from crosslocate.errors import ConfigError

#: Triplet margin of the paper (on squared L2 distances of unit descriptors).
DEFAULT_MARGIN: float = 0.1
#: Softmax temperature of :func:`infonce_loss` (on similarities ``-d^2 / 2`` in [-2, 0] for unit descriptors).
DEFAULT_TEMPERATURE: float = 0.1
_REDUCTIONS = ("mean", "sum", "none")


def l2n(x: torch.Tensor, dim: int = 1, eps: float = 1e-6) -> torch.Tensor:
    """``x / (||x||_2 + eps)`` along ``dim``.

    Parameters
    ----------
    x : (B, C, ...) float tensor
        For a feature map (B, C, H, W) with ``dim=1`` every spatial location is normalised across
        channels; for descriptors (B, D) every row becomes a unit vector.
    """
    return x / (torch.linalg.vector_norm(x, ord=2, dim=dim, keepdim=True) + eps)


def mac(x: torch.Tensor) -> torch.Tensor:
    """Global max pooling (MAC): (B, C, H, W) -> (B, C), the maximum of each channel."""
    return torch.amax(x, dim=(-2, -1))


def spoc(x: torch.Tensor) -> torch.Tensor:
    """Sum/average pooling (SPoC): (B, C, H, W) -> (B, C), the mean of each channel."""
    return torch.mean(x, dim=(-2, -1))


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised-mean pooling: (B, C, H, W) -> (B, C), ``mean(clamp(x, eps)^p)^(1/p)``.

    Values below ``eps`` (negative activations of a net without final ReLU) are clamped to ``eps``,
    so GeM sees only the positive part. ``p`` = 1 is SPoC of the clamped map, p -> inf is MAC.
    """
    if isinstance(p, torch.Tensor):
        p = p.to(dtype=x.dtype)
    return torch.mean(x.clamp(min=eps).pow(p), dim=(-2, -1)).pow(1.0 / p)


def netvlad(x: torch.Tensor, logits: torch.Tensor, centroids: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """NetVLAD (Arandjelovic et al. 2016): (B, C, H, W) -> (B, K*C).

    Parameters
    ----------
    x : (B, C, H, W) float tensor
        Local descriptors (usually L2-normalised per location).
    logits : (B, K, H, W) float tensor
        Cluster assignment scores of every location (softmax over K is taken here).
    centroids : (K, C) float tensor
        Cluster centres.

    Returns
    -------
    (B, K*C): ``V[k] = sum_i a_k(x_i) (x_i - c_k)``, each ``V[k]`` L2-normalised (intra-normalisation),
    then the concatenation L2-normalised; cluster-major order (``V[0]``, ``V[1]``, ...).
    """
    b = x.shape[0]
    a = torch.softmax(logits.flatten(2), dim=1)  # (B, K, N)
    xf = x.flatten(2)  # (B, C, N)
    # sum_i a_ki x_i - c_k sum_i a_ki
    v = torch.einsum("bkn,bcn->bkc", a, xf) - a.sum(dim=2).unsqueeze(2) * centroids.unsqueeze(0)
    v = l2n(v, dim=2, eps=eps)
    return l2n(v.reshape(b, -1), dim=1, eps=eps)


def triplet_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor,
    margin: float = DEFAULT_MARGIN,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Triplet loss with several negatives per tuple.

    ``loss_b = sum_k max(||q_b - p_b||^2 + margin - ||q_b - n_bk||^2, 0)``, over the k with
    ``mask[b, k]`` when a mask is given.

    Parameters
    ----------
    q : (B, D) float tensor
        Query (anchor) descriptors.
    p : (B, D) float tensor
        One positive per query.
    n : (B, K, D) float tensor
        K negatives per query.
    margin : float
        Margin on squared distances (paper 0.1).
    reduction : str
        ``mean`` over the B tuples (default), ``sum``, or ``none`` (returns (B,)).
    mask : (B, K) bool tensor or None
        Which negatives count (e.g. the other tuples' views of a batch that lie far enough from
        query b); None = all.

    Returns
    -------
    scalar tensor, or (B,) with ``reduction="none"``.
    """
    _check_tuples("triplet_loss", q, p, n, reduction, mask)
    d_pos = (q - p).pow(2).sum(dim=1)  # (B,)
    d_neg = (q.unsqueeze(1) - n).pow(2).sum(dim=2)  # (B, K)
    hinge = torch.clamp(d_pos.unsqueeze(1) + margin - d_neg, min=0.0)
    if mask is not None:
        hinge = hinge * mask.to(hinge.dtype)
    return _reduce(hinge.sum(dim=1), reduction)


def infonce_loss(
    q: torch.Tensor,
    p: torch.Tensor,
    n: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    reduction: str = "mean",
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE (softmax cross-entropy over one positive and K negatives per tuple).

    ``loss_b = -log( exp(s(q_b, p_b) / T) / (exp(s(q_b, p_b) / T) + sum_k exp(s(q_b, n_bk) / T)) )`` with
    ``s(a, b) = -||a - b||^2 / 2`` (``cos(a, b) - 1`` for unit descriptors, so the ranking of the
    triplet loss's squared distances), over the k with ``mask[b, k]`` when a mask is given. Unlike the
    triplet hinge, every negative contributes, weighted by its softmax share: the hardest dominate,
    but none is dropped once it falls below a margin.

    Parameters
    ----------
    q, p : (B, D) float tensor
        Query descriptors and one positive per query.
    n : (B, K, D) float tensor
        K negatives per query.
    temperature : float
        Softmax temperature T > 0 (smaller: harder weighting of the closest negatives).
    reduction : str
        ``mean`` over the B tuples (default), ``sum``, or ``none`` (returns (B,)).
    mask : (B, K) bool tensor or None
        Which negatives count; None = all. A tuple with no negative kept has loss 0.

    Returns
    -------
    scalar tensor, or (B,) with ``reduction="none"``.
    """
    _check_tuples("infonce_loss", q, p, n, reduction, mask)
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ConfigError(f"infonce_loss temperature must be > 0, got {temperature!r}")
    s_pos = -0.5 * (q - p).pow(2).sum(dim=1, keepdim=True)  # (B, 1)
    s_neg = -0.5 * (q.unsqueeze(1) - n).pow(2).sum(dim=2)  # (B, K)
    if mask is not None:
        s_neg = s_neg.masked_fill(~mask.to(torch.bool), float("-inf"))
    logits = torch.cat([s_pos, s_neg], dim=1) / temperature
    return _reduce(torch.logsumexp(logits, dim=1) - logits[:, 0], reduction)


def _check_tuples(
    name: str, q: torch.Tensor, p: torch.Tensor, n: torch.Tensor, reduction: str, mask: torch.Tensor | None
) -> None:
    if q.ndim != 2 or p.shape != q.shape or n.ndim != 3 or n.shape[0] != q.shape[0] or n.shape[2] != q.shape[1]:
        raise ConfigError(
            f"{name} expects q (B, D), p (B, D), n (B, K, D); got {tuple(q.shape)}, {tuple(p.shape)}, {tuple(n.shape)}"
        )
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"{name} reduction={reduction!r}; choose one of {', '.join(_REDUCTIONS)}")
    if mask is not None and tuple(mask.shape) != tuple(n.shape[:2]):
        raise ConfigError(f"{name} mask must be (B, K) = {tuple(n.shape[:2])}, got {tuple(mask.shape)}")


def _reduce(per_tuple: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_tuple.mean()
    if reduction == "sum":
        return per_tuple.sum()
    return per_tuple


__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_TEMPERATURE",
    "gem",
    "infonce_loss",
    "l2n",
    "mac",
    "netvlad",
    "spoc",
    "triplet_loss",
]
