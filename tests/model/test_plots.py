"""Plots write readable PNGs; the recall curve is drawn where the numbers say."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from crosslocate.model import plots


def _png(path):
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_recall_curves_png(tmp_path):
    recall = {"20": {"1": 0.1, "10": 0.3, "100": 0.5}, "1000": {"1": 0.4, "10": 0.7, "100": 0.9}}
    chance = {"20": {"1": 0.0, "10": 0.01, "100": 0.1}, "1000": {"1": 0.01, "10": 0.1, "100": 0.6}}
    out = plots.plot_recall_curves(
        recall, tmp_path / "r.png", chance=chance, baselines={"untrained": chance}, title="demo"
    )
    img = _png(out)
    assert img.shape[1] > img.shape[0] > 100  # two panels side by side
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically (crosslocate.fileio)
    # a pipeline's curve is drawn too (here at 100% for every N: a line along the top of each panel)
    top = {k: {n: 1.0 for n in v} for k, v in recall.items()}
    with_best = _png(plots.plot_recall_curves(recall, tmp_path / "p.png", chance=chance, pipelines={"best": top}))
    without = _png(plots.plot_recall_curves(recall, tmp_path / "q.png", chance=chance))
    assert with_best.shape == without.shape and not np.array_equal(with_best, without)
    with pytest.raises(ValueError):
        plots.plot_recall_curves({}, tmp_path / "x.png")


def _bar_pixels(img):
    """Pixels of the first configuration's bars: matplotlib's C0 (31, 119, 180) at alpha 0.8 on white."""
    want = 0.8 * np.array([31, 119, 180]) + 0.2 * 255
    return int((np.abs(img.astype(np.float64) - want).max(axis=2) < 6).sum())


def test_configurations_bars_scale_with_the_values(tmp_path):
    """One configuration, one metric, one run: the bar's area is proportional to its value (axes 0-100 %)."""
    low = _png(plots.plot_configurations(["a"], [{"R@1": [20.0]}], tmp_path / "low.png"))
    high = _png(plots.plot_configurations(["a"], [{"R@1": [80.0]}], tmp_path / "high.png"))
    assert low.shape == high.shape
    assert _bar_pixels(low) > 500 and _bar_pixels(high) / _bar_pixels(low) == pytest.approx(4.0, rel=0.05)
    # several configurations, runs, spreads and a reference draw; mismatched inputs are refused
    both = plots.plot_configurations(
        ["a", "b"], [{"R@1": [10.0, 20.0], "R@10": [30.0]}, {"R@1": [15.0], "R@10": []}], tmp_path / "two.png",
        reference={"R@1": 21.2}, title="t",
    )  # fmt: skip
    assert _png(both).shape[1] > 400
    with pytest.raises(ValueError, match="2 labels for 1 value sets"):
        plots.plot_configurations(["a", "b"], [{"R@1": [1.0]}], tmp_path / "x.png")


def test_paired_differences_band_is_the_interval(tmp_path):
    """Two series over the same N, one with an interval twice as wide (8 points against 4), apart on
    the y axis: the wider band covers about twice the pixels (C0 and C1 at alpha 0.2 on white)."""
    ns = (1, 10, 100)
    series = {"a": {n: (10.0, 8.0, 12.0) for n in ns}, "b": {n: (-10.0, -14.0, -6.0) for n in ns}}
    img = _png(plots.plot_paired_differences(series, tmp_path / "p.png", title="t")).astype(np.float64)

    def band(rgb):
        return int((np.abs(img - (0.2 * np.array(rgb) + 0.8 * 255)).max(axis=2) < 6).sum())

    narrow, wide = band((31, 119, 180)), band((255, 127, 14))
    assert narrow > 500 and wide / narrow == pytest.approx(2.0, rel=0.15)
    with pytest.raises(ValueError, match="no series"):
        plots.plot_paired_differences({}, tmp_path / "x.png")


def test_recall_vs_distance_and_map_and_mosaic(tmp_path):
    d = np.array([20, 100, 1000, 5000.0])
    out = plots.plot_recall_vs_distance(d, {1: [0.1, 0.2, 0.4, 0.6], 10: [0.2, 0.4, 0.7, 0.9]}, tmp_path / "d.png")
    assert _png(out).ndim == 3
    q = np.array([[0.0, 0.0], [1000.0, 500.0]])
    r = q[:, None, :] + np.arange(3)[None, :, None] * 100.0
    hs = (np.linspace(0, 1, 100).reshape(10, 10), (-500.0, 1500.0, -500.0, 1000.0))
    out = plots.plot_retrieval_map(q, r, tmp_path / "m.png", database_xy=np.zeros((5, 2)), hillshade=hs)
    assert _png(out).shape[0] > 100
    rgb = np.zeros((8, 8, 3), np.uint8)
    out = plots.plot_retrieval_mosaic(
        [rgb, rgb], [[np.ones((8, 8))] * 2, [np.ones((8, 8))]], tmp_path / "mo.png", labels=[["a", "b"], ["c"]]
    )
    assert _png(out).shape[1] > _png(out).shape[0]  # 3 columns x 2 rows
