"""The region terrain atlas: block maxima, build/cache, and agreement with the per-position renderer."""

from __future__ import annotations

import numpy as np
import pytest

from crosslocate.render.atlas import BLOCK_CELLS, block_max


@pytest.mark.parametrize("shape", [(37, 29), (9, 9), (8, 8), (2, 2), (17, 2)])
def test_block_maxima_cover_their_cells(shape):
    rng = np.random.default_rng(1)
    z = rng.normal(0.0, 100.0, shape).astype(np.float32)
    bm = block_max(z, BLOCK_CELLS)
    b = BLOCK_CELLS
    assert bm.shape == (max(-(-(shape[0] - 1) // b), 1), max(-(-(shape[1] - 1) // b), 1))
    for bj in range(bm.shape[0]):
        for bi in range(bm.shape[1]):
            # the block's cells touch nodes bj*b .. bj*b + b (inclusive) in each axis
            assert bm[bj, bi] == z[bj * b : bj * b + b + 1, bi * b : bi * b + b + 1].max()
