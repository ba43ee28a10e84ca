"""Pure tensor functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from crosslocate.errors import ConfigError
from crosslocate.model import functional as F
from crosslocate.model.layers import L2N, POOLING, GeM, TripletLoss


def test_triplet_loss_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    n = torch.tensor([[[0.6, 0.8], [-1.0, 0.0]], [[0.0, 0.9], [1.0, 0.0]]])
    # tuple 0: d2p = 0.04 + 0.36 = 0.4; d2n = 0.16 + 0.64 = 0.8 and 4.0
    #   -> max(0.4 + 0.1 - 0.8, 0) + max(0.4 + 0.1 - 4, 0) = 0
    # tuple 1: d2p = 0; d2n = 0.01 and 2 -> max(0.1 - 0.01, 0) + 0 = 0.09
    per = F.triplet_loss(q, p, n, margin=0.1, reduction="none")
    torch.testing.assert_close(per, torch.tensor([0.0, 0.09]))
    torch.testing.assert_close(F.triplet_loss(q, p, n), torch.tensor(0.045))
    torch.testing.assert_close(F.triplet_loss(q, p, n, reduction="sum"), torch.tensor(0.09))
    # a larger margin activates tuple 0's first negative: 0.4 + 0.5 - 0.8 = 0.1
    torch.testing.assert_close(F.triplet_loss(q, p, n, margin=0.5, reduction="none")[0], torch.tensor(0.1))
    assert "margin=0.1" in repr(TripletLoss())


def test_triplet_loss_mask_drops_negatives():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    n = torch.tensor([[[0.6, 0.8], [0.8, 0.6]], [[0.0, 0.9], [1.0, 0.0]]])
    # tuple 0: d2p = 0.4; d2n = 0.8 (-> 0) and 0.4 (-> 0.1); tuple 1: d2p = 0, d2n = 0.01 (-> 0.09), 2 (-> 0)
    torch.testing.assert_close(F.triplet_loss(q, p, n, reduction="none"), torch.tensor([0.1, 0.09]))
    mask = torch.tensor([[True, False], [True, True]])
    torch.testing.assert_close(F.triplet_loss(q, p, n, reduction="none", mask=mask), torch.tensor([0.0, 0.09]))
    with pytest.raises(ConfigError, match="mask"):
        F.triplet_loss(q, p, n, mask=torch.ones(2, 3, dtype=torch.bool))


def test_triplet_loss_shapes_checked():
    with pytest.raises(ConfigError):
        F.triplet_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 3))


def test_infonce_loss_hand_computed():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    n = torch.tensor([[[0.0, 1.0], [-1.0, 0.0]], [[1.0, 0.0], [0.0, -1.0]]])
    # similarities -d^2/2 = cos - 1. Tuple 0: positive 0, negatives -1 and -2; at T = 0.5 the logits are
    # 0, -2, -4 -> log(1 + e^-2 + e^-4). Tuple 1: positive -1, negatives 0 and -1 -> logits -2, 0, -2
    # -> log(e^-2 + 1 + e^-2) + 2.
    want = torch.tensor([math.log(1 + math.exp(-2) + math.exp(-4)), math.log(2 * math.exp(-2) + 1) + 2])
    torch.testing.assert_close(F.infonce_loss(q, p, n, temperature=0.5, reduction="none"), want)
    torch.testing.assert_close(F.infonce_loss(q, p, n, temperature=0.5), want.mean())
    torch.testing.assert_close(F.infonce_loss(q, p, n, temperature=0.5, reduction="sum"), want.sum())
    # masked negatives leave the softmax; a tuple with none left costs nothing
    mask = torch.tensor([[False, True], [False, False]])
    torch.testing.assert_close(
        F.infonce_loss(q, p, n, temperature=0.5, reduction="none", mask=mask),
        torch.tensor([math.log(1 + math.exp(-4)), 0.0]),
    )
    # a colder softmax: tuple 0's loss -> 0 (its positive is the nearest), tuple 1's -> the gap / T
    cold = F.infonce_loss(q, p, n, temperature=0.01, reduction="none")
    assert float(cold[0]) < 1e-30 and float(cold[1]) == pytest.approx(100.0, rel=1e-6)
    for bad in (0.0, -0.1):
        with pytest.raises(ConfigError, match="temperature"):
            F.infonce_loss(q, p, n, temperature=bad)
    with pytest.raises(ConfigError, match="infonce_loss expects"):
        F.infonce_loss(q, p, n[:, 0])


def test_infonce_loss_is_cross_entropy_on_the_similarity_logits():
    """Against torch's own cross-entropy on unit descriptors (similarity = cosine, up to the constant 1)."""
    g = torch.Generator().manual_seed(0)
    q, p = F.l2n(torch.randn(5, 8, generator=g)), F.l2n(torch.randn(5, 8, generator=g))
    n = F.l2n(torch.randn(5, 6, 8, generator=g), dim=2)
    logits = torch.cat([(q * p).sum(1, keepdim=True), torch.einsum("bd,bkd->bk", q, n)], dim=1) / 0.07
    want = torch.nn.functional.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    torch.testing.assert_close(F.infonce_loss(q, p, n, temperature=0.07), want, atol=1e-5, rtol=1e-5)


def test_pooling_and_l2n_by_hand():
    x = torch.tensor([[[[1.0, -2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # (1, 2, 2, 2)
    torch.testing.assert_close(F.mac(x), torch.tensor([[4.0, 2.0]]))
    torch.testing.assert_close(F.spoc(x), torch.tensor([[1.5, 0.5]]))
    # GeM p=1 of the map clamped at eps: mean(1, eps, 3, 4) = 2
    torch.testing.assert_close(F.gem(x, p=1.0), torch.tensor([[2.0, 0.5]]), atol=1e-5, rtol=0)
    # GeM p=2 of channel 1: sqrt((0+0+0+4)/4) = 1
    assert abs(float(F.gem(x, p=2.0)[0, 1]) - 1.0) < 1e-5
    n = F.l2n(x, dim=1)
    # location (1, 1): (4, 2) / sqrt(20)
    torch.testing.assert_close(n[0, :, 1, 1], torch.tensor([4.0, 2.0]) / 20**0.5, atol=1e-5, rtol=0)
    assert set(POOLING) == {"mac", "spoc", "gem", "netvlad", "mixvpr"}
    assert "p=3.0000" in repr(GeM()) and "dim=1" in repr(L2N())


def test_netvlad_by_hand():
    """Two locations x1 = (1, 0), x2 = (0, 1); centroids c1 = (0.5, 0), c2 = (0, 0)."""
    x = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, C=2, 1, 2)
    c = torch.tensor([[0.5, 0.0], [0.0, 0.0]])
    hard = torch.tensor([[[[50.0, -50.0]], [[-50.0, 50.0]]]])  # x1 -> cluster 0, x2 -> cluster 1
    # V0 = x1 - c1 = (0.5, 0) -> (1, 0); V1 = x2 - c2 = (0, 1); concatenation / sqrt(2)
    torch.testing.assert_close(F.netvlad(x, hard, c), torch.tensor([[1.0, 0.0, 0.0, 1.0]]) / 2**0.5, atol=1e-5, rtol=0)
    # equal assignment 1/2: V0 = (x1 + x2)/2 - c1 = (0, 0.5) -> (0, 1); V1 = (0.5, 0.5) -> (1, 1)/sqrt(2)
    soft = torch.zeros(1, 2, 1, 2)
    want = torch.tensor([[0.0, 1.0, 2**-0.5, 2**-0.5]]) / 2**0.5
    torch.testing.assert_close(F.netvlad(x, soft, c), want, atol=1e-5, rtol=0)
