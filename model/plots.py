"""Figures of a benchmark: recall curves, configurations side by side, recall vs distance, a retrieval map
and a retrieval mosaic.

matplotlib is imported lazily and only through its object API with the Agg canvas
(``Figure`` + ``FigureCanvasAgg``), so no global backend or display is touched. Each function
writes one PNG and returns its path.

Recall dictionaries use the layout of ``results.json``: ``{"<threshold_m>": {"<N>": fraction}}``
(string keys, as JSON has them; int/float keys are accepted too).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import missing_dependency
from crosslocate.fileio import save_figure_atomic

logger = logging.getLogger(__name__)

RecallTable = Mapping[Any, Mapping[Any, float]]


def _figure(width_in: float, height_in: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - matplotlib is a core dependency
        raise missing_dependency("matplotlib") from exc
    fig = Figure(figsize=(width_in, height_in), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    out = save_figure_atomic(fig, path, bbox_inches="tight")
    logger.info("wrote %s", out)
    return out


def _curve(table: Mapping[Any, float]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    items = sorted((int(k), float(v)) for k, v in table.items())
    return np.array([k for k, _ in items], np.int64), np.array([v for _, v in items], np.float64)


def _threshold_key(table: RecallTable, threshold: Any) -> Any:
    for k in table:
        if float(k) == float(threshold):
            return k
    return None


def plot_recall_curves(
    recall: RecallTable,
    path: str | os.PathLike[str],
    *,
    chance: RecallTable | None = None,
    baselines: Mapping[str, RecallTable] | None = None,
    pipelines: Mapping[str, RecallTable] | None = None,
    title: str = "",
) -> Path:
    """Recall@N vs N (log x), one panel per distance threshold, with chance, baselines and pipelines.

    Parameters
    ----------
    recall, chance : {threshold_m: {N: fraction in [0, 1]}}
        Our network and the analytic chance level.
    baselines : {name: same layout}
        E.g. ``untrained``, ``horizon`` (thin lines).
    pipelines : {label: same layout}
        End-to-end pipelines built on the network, e.g. the best one chosen on validation (thick
        dash-dot lines).
    """
    if not recall:
        raise ValueError("plot_recall_curves: empty recall table")
    thresholds = sorted(recall, key=float)
    fig = _figure(4.2 * len(thresholds), 3.6)
    axes = fig.subplots(1, len(thresholds), squeeze=False)[0]
    for ax, thr in zip(axes, thresholds, strict=True):
        n, r = _curve(recall[thr])
        ax.plot(n, 100 * r, "-", lw=2, label="ours (network)")
        for name, table in (pipelines or {}).items():
            key = _threshold_key(table, thr)
            if key is not None:
                pn, pr = _curve(table[key])
                ax.plot(pn, 100 * pr, "-.", lw=2, label=name)
        for name, table in (baselines or {}).items():
            key = _threshold_key(table, thr)
            if key is not None:
                bn, br = _curve(table[key])
                ax.plot(bn, 100 * br, "-", lw=1, label=name)
        if chance is not None and (key := _threshold_key(chance, thr)) is not None:
            cn, cr = _curve(chance[key])
            ax.plot(cn, 100 * cr, "k--", lw=1, label="chance")
        ax.set_xscale("log")
        ax.set_ylim(0, 100)
        ax.set_xlabel("N (candidates)")
        ax.set_ylabel("recall@N [%]")
        ax.set_title(f"within {float(thr):g} m")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, y=1.03)  # above the panel titles
    return _save(fig, path)


def plot_configurations(
    labels: Sequence[str],
    values: Sequence[Mapping[str, Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    reference: Mapping[str, float] | None = None,
    reference_label: str = "baseline",
    title: str = "",
) -> Path:
    """Configurations side by side: a bar (mean) with the sample sd and every run's value as a dot,
    per configuration, grouped by metric; a reference value per metric as a black bar across its group.

    Parameters
    ----------
    labels : (C,) str
        One per configuration (legend).
    values : (C,) {metric: runs' values, percent}
        Metrics in the first configuration's order; an empty list draws nothing.
    reference : {metric: percent}
        E.g. the horizon baseline's recall (metrics without one get no bar).
    """
    if not labels or len(labels) != len(values):
        raise ValueError(f"plot_configurations: {len(labels)} labels for {len(values)} value sets")
    metrics = list(values[0])
    width = 0.8 / len(labels)
    fig = _figure(max(6.0, 1.3 * len(metrics) + 1.5), 3.8)
    ax = fig.subplots()
    x = np.arange(len(metrics), dtype=np.float64)
    for c, (label, cols) in enumerate(zip(labels, values, strict=True)):
        xs = x - 0.4 + width * (c + 0.5)
        means = [np.mean(cols.get(m, [])) if len(cols.get(m, [])) else np.nan for m in metrics]
        sds = [np.std(cols[m], ddof=1) if len(cols.get(m, [])) > 1 else 0.0 for m in metrics]
        ax.bar(xs, means, width * 0.9, yerr=sds, capsize=3, label=label, alpha=0.8)
        for xi, m in zip(xs, metrics, strict=True):
            ax.plot(np.full(len(cols.get(m, [])), xi), cols.get(m, []), "o", ms=3, color="k", alpha=0.6)
    labelled = False
    for i, m in enumerate(metrics):
        if reference and m in reference:
            ax.hlines(
                reference[m], x[i] - 0.45, x[i] + 0.45, colors="k", lw=2, label=None if labelled else reference_label
            )
            labelled = True
    ax.set_xticks(x)
    ax.set_xticklabels(metrics, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("recall [%]")
    ax.set_ylim(0, 100)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25))  # below the ticks: bars stay clear
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_paired_differences(
    series: Mapping[str, Mapping[int, Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    ylabel: str = "recall difference [points]",
    title: str = "",
) -> Path:
    """Paired recall differences over N: per series a line (the difference) in a band (its interval),
    against the zero line; N on a log axis.

    Parameters
    ----------
    series : {label: {N: (difference, low, high)}}
        Percent points, e.g. :func:`crosslocate.pipelines.rankings.paired_comparison`'s stats x 100.
    """
    if not series:
        raise ValueError("plot_paired_differences: no series")
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    for label, by_n in series.items():
        ns = np.array(sorted(by_n), dtype=np.int64)
        d, lo, hi = (np.array([by_n[n][i] for n in ns], dtype=np.float64) for i in range(3))
        (line,) = ax.plot(ns, d, "o-", ms=3, label=label)
        ax.fill_between(ns, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(0.0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("N")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_training_curves(
    curves: Mapping[str, Mapping[int, Sequence[float]]],
    path: str | os.PathLike[str],
    *,
    ylabel: str = "validation recall [%]",
    title: str = "",
) -> Path:
    """Per-epoch curves of configurations: the mean over runs as a line, the runs' range as a band.

    Parameters
    ----------
    curves : {label: {epoch: runs' values}}
        E.g. :func:`crosslocate.pipelines.report.training_curves` (percent).
    """
    if not curves:
        raise ValueError("plot_training_curves: no curves")
    fig = _figure(6.5, 3.6)
    ax = fig.subplots()
    for label, by_epoch in curves.items():
        epochs = np.array(sorted(by_epoch), dtype=np.int64)
        runs = [np.asarray(by_epoch[e], np.float64) for e in epochs]
        mean = np.array([r.mean() for r in runs])
        (line,) = ax.plot(epochs, mean, "-o", ms=2.5, lw=1.5, label=f"{label} ({max(map(len, runs))} runs)")
        ax.fill_between(epochs, [r.min() for r in runs], [r.max() for r in runs], color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_recall_vs_distance(
    distances_m: npt.ArrayLike,
    recalls: Mapping[int, npt.ArrayLike],
    path: str | os.PathLike[str],
    *,
    title: str = "",
) -> Path:
    """Recall@N as a function of the distance threshold.

    Parameters
    ----------
    distances_m : (T,) float
        Distance thresholds, metres (increasing).
    recalls : {N: (T,) float in [0, 1]}
        Recall@N at each threshold.
    """
    d = np.asarray(distances_m, dtype=np.float64)
    fig = _figure(5.0, 3.6)
    ax = fig.subplots()
    for n, r in sorted(recalls.items()):
        ax.plot(d, 100 * np.asarray(r, dtype=np.float64), label=f"R@{n}")
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("distance threshold [m]")
    ax.set_ylabel("recall [%]")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_retrieval_map(
    query_xy: npt.ArrayLike | None,
    retrieved_xy: npt.ArrayLike,
    path: str | os.PathLike[str],
    *,
    database_xy: npt.ArrayLike | None = None,
    hillshade: tuple[npt.NDArray[np.floating[Any]], tuple[float, float, float, float]] | None = None,
    title: str = "",
) -> Path:
    """Map of queries and their top-K retrieved positions (projected metres).

    Parameters
    ----------
    query_xy : (Q, 2) float or None
        True query positions (x east, y north), metres in the database CRS; None when unknown
        (``crosslocate localize``: one photo, candidates only).
    retrieved_xy : (Q, K, 2) float
        Retrieved positions, best first (the best gets a larger marker and a line to its query).
    database_xy : (M, 2) float or None
        All database positions, drawn as faint dots.
    hillshade : ((H, W) float, (xmin, xmax, ymin, ymax)) or None
        Background relief in [0, 1], row 0 north, with its extent in the same CRS.
    """
    known = query_xy is not None
    r = np.asarray(retrieved_xy, dtype=np.float64)
    r = r.reshape(-1, r.shape[-2] if r.ndim == 3 else r.shape[0], 2)
    q = np.asarray(query_xy, dtype=np.float64).reshape(-1, 2) if known else r[:, 0, :]
    fig = _figure(6.0, 6.0)
    ax = fig.subplots()
    if hillshade is not None:
        ax.imshow(hillshade[0], extent=hillshade[1], cmap="gray", origin="upper", alpha=0.6)
    if database_xy is not None:
        db = np.asarray(database_xy, dtype=np.float64).reshape(-1, 2)
        ax.scatter(db[:, 0], db[:, 1], s=1, c="0.6", label="database")
    colors = [f"C{i % 10}" for i in range(len(q))]
    for i in range(len(q)):
        ax.scatter(r[i, :, 0], r[i, :, 1], s=12, c=colors[i], alpha=0.5, marker="o")
        for j in range(r.shape[1]):
            ax.annotate(str(j + 1), (r[i, j, 0], r[i, j, 1]), fontsize=6)
        if known:
            ax.plot([q[i, 0], r[i, 0, 0]], [q[i, 1], r[i, 0, 1]], "-", c=colors[i], lw=0.8)
        ax.scatter(r[i, 0, 0], r[i, 0, 1], s=40, c=colors[i], marker="s", edgecolors="k")
    if known:
        ax.scatter(q[:, 0], q[:, 1], s=90, c=colors, marker="*", edgecolors="k", label="query (truth)", zorder=5)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")
    ax.legend(fontsize=8, loc="best")
    ax.set_title(title or "queries (stars) and top-K retrieved positions (squares = best)")
    return _save(fig, path)


def plot_retrieval_mosaic(
    query_images: Sequence[npt.NDArray[Any]],
    retrieved_images: Sequence[Sequence[npt.NDArray[Any]]],
    path: str | os.PathLike[str],
    *,
    labels: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Grid: one row per query (first column), its retrieved views to the right.

    Parameters
    ----------
    query_images : Q arrays (H, W, 3) uint8 or (H, W) float
        Query photos (as fed to the network, e.g. FOV-scaled).
    retrieved_images : Q sequences of K arrays (H, W[, 3])
        Retrieved database views (e.g. ``depth_to_rgb`` of depth).
    labels : Q sequences of K strings or None
        Captions of the retrieved views (e.g. "1.2 km, 30 deg").
    """
    nq = len(query_images)
    if nq == 0:
        raise ValueError("plot_retrieval_mosaic: no queries")
    k = max(len(r) for r in retrieved_images)
    fig = _figure(1.8 * (k + 1), 1.8 * nq)
    axes = fig.subplots(nq, k + 1, squeeze=False)
    for i in range(nq):
        row = [query_images[i], *retrieved_images[i]]
        for j in range(k + 1):
            ax = axes[i, j]
            ax.set_axis_off()
            if j < len(row):
                img = np.asarray(row[j])
                ax.imshow(img, cmap=None if img.ndim == 3 else "viridis")
                caption = "query" if j == 0 else (labels[i][j - 1] if labels else f"#{j}")
                ax.set_title(caption, fontsize=7)
    return _save(fig, path)


__all__ = [
    "plot_configurations",
    "plot_recall_curves",
    "plot_recall_vs_distance",
    "plot_retrieval_map",
    "plot_retrieval_mosaic",
    "plot_training_curves",
]
