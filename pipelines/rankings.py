"""A benchmark run's per-query rankings (``<run>/rankings.npz``): written, completed, read, compared.

API
---
- ``save_rankings(path, qset, pool, idx, spots, baselines)``: the network's ranking with what the
  report needs to show it, and the horizon baselines' rankings (they do not depend on the network:
  every run of one region and query set holds the same ones).
- ``backfill_baseline_rankings(inp, path, results)``: add the baselines' rankings to a kept run's
  file written before they were saved, searched again and checked against ``results.json``.
- ``load_rankings(run_dir, results)``: the arrays, or None when the run has no file.
- ``pipeline_key(name)``: the key of a refined pipeline's (Q, K) distances in the file
  (``distance_pipeline_<name>``), saved by runs from 2026-12-04 on.
- ``paired_comparison(runs, against=..., versus=..., pipeline=...)`` and ``markdown_paired_table``:
  recall of one configuration's runs (e.g. seeds) minus a baseline's (or another configuration's)
  photo by photo on the same test photos, with a spot-bootstrap interval
  (:func:`crosslocate.model.evaluate.paired_difference`): ``crosslocate report --paired``. With
  ``pipeline`` the runs are scored through that pipeline (``best``: each run's own choice on
  validation) instead of the network alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError
from crosslocate.fileio import write_npz_atomic

logger = logging.getLogger(__name__)

#: Per-query rankings of a benchmark run, for ``crosslocate report`` (see :func:`save_rankings`).
RANKINGS_NAME = "rankings.npz"
#: Arrays every ``rankings.npz`` holds (:func:`save_rankings`); baselines' rankings come on top.
RANKINGS_KEYS: tuple[str, ...] = ("ranking", "distance_m", "query_image", "query_xy", "query_yaw_deg", "query_fov_deg",
                                  "spot", "db_xy", "db_yaw_deg", "db_dirs", "db_part", "db_index", "modality")  # fmt: skip

#: Prefix of a baseline's ranking in ``rankings.npz`` (``ranking_horizon_searched``, ...).
BASELINE_RANKING_PREFIX = "ranking_"
#: Prefix of a refined pipeline's (Q, K) metres to what it ranks in ``rankings.npz`` (:func:`pipeline_key`).
PIPELINE_DISTANCE_PREFIX = "distance_pipeline_"
#: ``--pipeline`` value that takes each run's pipeline chosen on validation (``results["best_pipeline"]``).
BEST_PIPELINE = "best"
#: The baselines whose rankings ``rankings.npz`` keeps: those that do not depend on the network, so
#: that every run of one region and query set holds the same ones (paired comparisons,
#: ``crosslocate report --paired``).
SAVED_BASELINES: tuple[str, ...] = ("horizon", "horizon_searched")


def pipeline_key(name: str) -> str:
    """The ``rankings.npz`` key of pipeline ``name`` (a ``refine.PIPELINES`` name): ``network + re-ranking
    + voting`` -> ``distance_pipeline_network_re_ranking_voting``."""
    words = [w for w in name.replace("+", " ").replace("-", "_").split() if w]
    return PIPELINE_DISTANCE_PREFIX + "_".join(words)


def baseline_rankings(rankings: dict[str, npt.NDArray[np.int64]]) -> dict[str, npt.NDArray[np.int64]]:
    """The entries of a benchmark's rankings (method name: (Q, K) indices) that ``rankings.npz`` keeps."""
    return {name: rankings[name] for name in SAVED_BASELINES if name in rankings}


def save_rankings(
    path: Path,
    qset: Any,
    pool: Any,
    idx: npt.NDArray[np.int64],
    spots: npt.NDArray[np.int64],
    baselines: dict[str, npt.NDArray[np.int64]] | None = None,
    pipelines: dict[str, npt.NDArray[np.float64]] | None = None,
) -> Path:
    """Write the network's ranking with what is needed to show it (``np.savez``, no pickle; atomic).

    Arrays: ``ranking`` (Q, K) int64 pool indices, best first; ``distance_m`` (Q, K) float64 metres
    to the query; ``query_image`` (Q,) str; ``query_xy`` (Q, 2) and ``db_xy`` (N, 2) metres in
    the region's CRS; ``query_yaw_deg`` (Q,), ``query_fov_deg`` (Q,), ``spot`` (Q,) int64;
    ``db_yaw_deg`` (N,); ``db_dirs`` (D,) str database folders (absolute); ``db_part`` (N,) int64 index into
    ``db_dirs``; ``db_index`` (N,) int64 view index in that database; ``modality`` () str; and per
    entry of ``baselines`` (name: (Q, K') int64 pool indices) ``ranking_<name>``; per entry of
    ``pipelines`` (a refined pipeline's name: (Q, K'') float64 metres from each query to the views, or
    voted place centres, it ranks first to last; ``inf`` past the end) :func:`pipeline_key` of it.
    """
    parts = np.concatenate([np.full(len(d), k, np.int64) for k, d in enumerate(pool.datasets)])
    write_npz_atomic(
        path,
        dict(
            ranking=idx.astype(np.int64),
            distance_m=np.linalg.norm(pool.xy[idx] - qset.xy[:, None, :], axis=2),
            query_image=np.array([q.image for q in qset.dataset.queries], dtype=str),
            query_xy=qset.xy,
            query_yaw_deg=qset.yaw_deg,
            query_fov_deg=np.array([q.pose.fov_deg for q in qset.dataset.queries], np.float64),
            spot=spots,
            db_xy=pool.xy,
            db_yaw_deg=pool.yaw_deg,
            db_dirs=np.array([str(Path(d.db_dir).resolve()) for d in pool.datasets], dtype=str),
            db_part=parts,
            db_index=np.concatenate([np.asarray(d.indices, np.int64) for d in pool.datasets]),
            modality=np.array(pool.datasets[0].modality.value),
            **{BASELINE_RANKING_PREFIX + name: r.astype(np.int64) for name, r in (baselines or {}).items()},
            **{pipeline_key(name): np.asarray(d, np.float64) for name, d in (pipelines or {}).items()},
        ),
    )
    return path


def backfill_baseline_rankings(inp: Any, path: Path, results: dict[str, Any]) -> bool:
    """Add the horizon baselines' rankings to a kept run's ``rankings.npz`` written before they were
    saved; returns whether the file was rewritten.

    The baselines do not depend on the network: they are searched again (minutes on a large
    database) and kept only when their recall tables equal those of ``results.json`` to 1e-12, so
    the file never holds a ranking the results do not report. The network is not run and nothing
    is scored or logged as a test evaluation. Nothing is done when the file is absent, already
    holds them, or the results have no horizon baselines.
    """
    from crosslocate.model import evaluate
    from crosslocate.pipelines.refine import horizon_rankings

    reported = results.get("baselines", {})
    names = tuple(n for n in SAVED_BASELINES if n in reported)
    if not path.is_file() or not names:
        return False
    with np.load(path, allow_pickle=False) as z:  # the key list alone unless something is missing
        names = tuple(n for n in names if BASELINE_RANKING_PREFIX + n not in z.files)
        arrays = {k: z[k] for k in z.files} if names else {}
    if not names:
        return False
    logger.info("%s predates the baselines' rankings: searching %s again (the network is not run)", path, names)
    qset, pool = inp.qset, inp.pool
    q_fov = np.array([q.pose.fov_deg for q in qset.dataset.queries], np.float64)
    got = horizon_rankings(qset, pool, int(arrays["ranking"].shape[1]), float(inp.preset.render.fov_deg), inp.eval,
                           methods=names, cache_dir=inp.ctx.baselines_dir)  # fmt: skip
    added = {}
    for name, (idx, _) in got.items():
        table = evaluate.evaluate_retrieval(idx, qset.xy, qset.yaw_deg, q_fov, pool.xy, pool.yaw_deg, inp.eval,
                                            chance=False)["recall"]  # fmt: skip
        if not _same_table(table, reported[name]):
            logger.warning("%s: the %s ranking searched again does not reproduce results.json's table; not saved",
                           path, name)  # fmt: skip
            continue
        added[BASELINE_RANKING_PREFIX + name] = idx.astype(np.int64)
    if added:
        write_npz_atomic(path, {**arrays, **added})
        logger.info("added %s to %s", sorted(added), path)
    return bool(added)


def _same_table(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-12) -> bool:
    """Whether two recall tables (``{threshold: {N: value}}``, JSON keys) hold the same numbers."""
    if set(a) != set(b) or any(set(a[t]) != set(b[t]) for t in a):
        return False
    return all(abs(float(a[t][n]) - float(b[t][n])) <= tol for t in a for n in a[t])


def load_rankings(run_dir: Path, results: dict[str, Any]) -> dict[str, Any] | None:
    """The run's ``rankings.npz`` (named in ``results``) as arrays; None when absent, ConfigError when broken."""
    rk_path = Path(run_dir) / str(results.get("rankings", RANKINGS_NAME))
    if not rk_path.is_file():
        return None
    try:
        with np.load(rk_path, allow_pickle=False) as z:
            rk = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{rk_path}: unreadable ({exc}); re-run `crosslocate benchmark`") from exc
    missing = sorted(set(RANKINGS_KEYS) - set(rk))
    if missing:
        raise ConfigError(f"{rk_path}: missing {', '.join(missing)}; re-run `crosslocate benchmark`")
    return rk


@dataclass(frozen=True)
class PairedComparison:
    """Recall of ``label_a`` minus ``label_b`` on the same photos (:func:`paired_comparison`).

    ``stats``: ``{N: paired_difference's dict}`` (fractions; ``only_a``/``only_b`` in photos);
    ``runs_a``/``runs_b``: the run folders pooled on each side (none for a baseline);
    ``recall_a``/``recall_b``: ``{N: [recall of each run]}``, the spread over runs beside the
    interval (one entry for a baseline).
    """

    label_a: str
    label_b: str
    threshold_m: float
    level: float
    n_spots: int
    runs_a: tuple[str, ...]
    runs_b: tuple[str, ...]
    stats: dict[int, dict[str, Any]]
    recall_a: dict[int, list[float]]
    recall_b: dict[int, list[float]]

    def to_dict(self) -> dict[str, Any]:
        """JSON layout (string N keys), for committing a comparison beside the results it pairs."""
        return {
            "a": self.label_a,
            "b": self.label_b,
            "threshold_m": self.threshold_m,
            "level": self.level,
            "n_spots": self.n_spots,
            "runs_a": list(self.runs_a),
            "runs_b": list(self.runs_b),
            "stats": {str(n): v for n, v in self.stats.items()},
            "recall_a_runs": {str(n): v for n, v in self.recall_a.items()},
            "recall_b_runs": {str(n): v for n, v in self.recall_b.items()},
        }


def _config_label(paths: list[Path]) -> str:
    from crosslocate.pipelines.report import seed_stem

    names = sorted({seed_stem(p.name) for p in paths})
    return names[0] if len(names) == 1 else " + ".join(names)


def _run_rankings(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the run's ``rankings.npz`` arrays, its ``results.json``)."""
    from crosslocate.pipelines.report import load_results

    if not path.is_dir():
        raise ConfigError(
            f"{path}: not a run folder (--paired reads a run's rankings.npz); run `crosslocate benchmark`"
        )
    results = load_results(path)
    rk = load_rankings(path, results)
    if rk is None:
        raise ConfigError(f"{path}: no rankings.npz in this run folder; run `crosslocate benchmark` for it")
    return rk, results


def pipeline_distances(
    path: Path, rk: dict[str, Any], results: dict[str, Any], pipeline: str | None, threshold_m: float
) -> tuple[npt.NDArray[np.float64], str]:
    """(M, K) metres from each test photo to what the run ranks through ``pipeline`` (None or
    ``network``: the network alone; ``best``: the run's choice on validation; else a ``refine.PIPELINES``
    name), and that pipeline's name. A refined pipeline's distances must reproduce its recall table
    in ``results.json`` at ``threshold_m`` (to 1e-12), so a comparison never pairs numbers the run
    did not report."""
    from crosslocate.model.evaluate import recall_at_n, retrieved_distances
    from crosslocate.pipelines.refine import PIPELINES, pipeline_table

    name = "network" if pipeline is None else pipeline
    if name == BEST_PIPELINE:
        name = str((results.get("best_pipeline") or {}).get("name", ""))
        if not name:
            raise ConfigError(f"{path}: results.json has no best_pipeline (no validation split or no skylines)")
    if name not in PIPELINES:
        raise ConfigError(f"unknown pipeline {name!r}; choose {BEST_PIPELINE!r} or one of: {', '.join(PIPELINES)}")
    if name == "network":
        return retrieved_distances(rk["ranking"], rk["query_xy"], rk["db_xy"]), name
    key = pipeline_key(name)
    if key not in rk:
        raise ConfigError(
            f"{path}: rankings.npz holds no {name!r} ranking (runs before 2026-12-04 saved the network's and the "
            "baselines' only); score a run of this configuration again to compare its pipelines photo by photo"
        )
    dist = np.asarray(rk[key], np.float64)
    table = pipeline_table(results, name) or {}
    row = table.get(f"{threshold_m:g}")
    if row is None:
        raise ConfigError(f"{path}: results.json has no {name!r} table within {threshold_m:g} m")
    got = recall_at_n(dist, (threshold_m,), tuple(int(n) for n in row))[float(threshold_m)]
    if not _same_table({"t": {str(n): r for n, r in got.items()}}, {"t": row}):
        raise ConfigError(f"{path}: the saved {name!r} ranking does not reproduce results.json's table")
    return dist, name


def _check_same_photos(first: tuple[Path, dict[str, Any]], other: tuple[Path, dict[str, Any]]) -> None:
    """ConfigError naming ``other`` unless it ranked the same views for the same photos as ``first``."""
    (p0, r0), (p, r) = first, other
    for key in ("query_image", "query_xy", "db_xy"):
        if r[key].shape != r0[key].shape or not np.array_equal(r[key], r0[key]):
            raise ConfigError(
                f"{p}: its {key} differs from {p0}'s; a paired comparison needs the same photos and views"
            )


def paired_comparison(
    runs: list[str | Path],
    *,
    against: str = "horizon_searched",
    versus: list[str | Path] | None = None,
    threshold_m: float = 1000.0,
    ns: tuple[int, ...] = (1, 5, 10, 20, 50, 100),
    level: float = 0.95,
    pipeline: str | None = None,
) -> PairedComparison:
    """Recall of the networks of ``runs`` (one configuration's seeds, pooled per photo) minus that of
    the baseline ``against`` or, with ``versus``, of those runs' networks, photo by photo.

    Every run must have ranked the same database views for the same test photos (checked). The
    baseline's ranking is read from the runs' ``rankings.npz`` (every run of one query set holds the
    same; they must agree); runs from before it was saved get it from ``crosslocate benchmark``
    with their settings, which adds it without running the network. Spots (``spot``) are the
    bootstrap's groups. ``pipeline`` (:func:`pipeline_distances`) scores the runs of both sides
    through that pipeline instead of the network alone (``best``: each run's own choice).
    """
    from crosslocate.model.evaluate import paired_difference, retrieved_distances

    if not runs:
        raise ConfigError("--paired needs at least one run folder")
    paths_a = [Path(p) for p in runs]
    paths_b = [Path(p) for p in versus or []]
    opened = [(p, *_run_rankings(p)) for p in paths_a + paths_b]
    loaded = [(p, rk) for p, rk, _ in opened]
    for item in loaded[1:]:
        _check_same_photos(loaded[0], item)
    rk0 = loaded[0][1]
    scored = [pipeline_distances(p, rk, res, pipeline, threshold_m) for p, rk, res in opened]

    def stack(part: list[tuple[npt.NDArray[np.float64], str]]) -> npt.NDArray[np.float64]:
        width = max(d.shape[1] for d, _ in part)  # place rankings may be shorter than view rankings
        return np.stack([np.pad(d, ((0, 0), (0, width - d.shape[1])), constant_values=np.inf) for d, _ in part])

    def through(part: list[tuple[npt.NDArray[np.float64], str]]) -> str:
        if pipeline is None:
            return ""
        names = sorted({n for _, n in part})
        return f" ({names[0]})" if len(names) == 1 else f" (each run's best: {', '.join(names)})"

    dist_a = stack(scored[: len(paths_a)])
    if paths_b:
        dist_b = stack(scored[len(paths_a) :])
        label_b = _config_label(paths_b) + through(scored[len(paths_a) :])
    else:
        key = BASELINE_RANKING_PREFIX + against
        held = [(p, rk[key]) for p, rk in loaded if key in rk]
        if not held:
            raise ConfigError(
                f"no run among {', '.join(map(str, paths_a))} holds the {against!r} ranking (rankings.npz from before "
                f"baselines were saved; saved: {', '.join(SAVED_BASELINES)}): run `crosslocate benchmark` for one of "
                "them again, which adds it without running the network"
            )
        for p, r in held[1:]:
            if r.shape != held[0][1].shape or not np.array_equal(r, held[0][1]):
                raise ConfigError(
                    f"{p}: its {against} ranking differs from {held[0][0]}'s on the same photos and views"
                )
        dist_b = retrieved_distances(held[0][1], rk0["query_xy"], rk0["db_xy"])
        label_b = against
    stats = paired_difference(dist_a, dist_b, rk0["spot"], threshold_m, ns, level=level)
    b_runs = dist_b if dist_b.ndim == 3 else dist_b[None]
    label_a = _config_label(paths_a) + through(scored[: len(paths_a)])
    if label_b == label_a:  # seeds of one configuration against each other: name the folders
        label_a, label_b = ", ".join(p.name for p in paths_a), ", ".join(p.name for p in paths_b)
    return PairedComparison(
        label_a=label_a,
        label_b=label_b,
        threshold_m=float(threshold_m),
        level=level,
        n_spots=len(np.unique(rk0["spot"])),
        runs_a=tuple(map(str, paths_a)),
        runs_b=tuple(map(str, paths_b)),
        stats=stats,
        recall_a=_run_recalls(dist_a, threshold_m, ns),
        recall_b=_run_recalls(b_runs, threshold_m, ns),
    )


def _run_recalls(dist: npt.NDArray[np.float64], threshold_m: float, ns: tuple[int, ...]) -> dict[int, list[float]]:
    """``{N: [recall@N of each run]}`` of (S, M, K) distances."""
    from crosslocate.model.evaluate import recall_at_n

    tables = [recall_at_n(d, (threshold_m,), ns)[float(threshold_m)] for d in dist]
    return {int(n): [t[int(n)] for t in tables] for n in ns}


def _sd(values: list[float]) -> str:
    return f" ± {100 * np.std(values, ddof=1):.1f}" if len(values) > 1 else ""


def _photos(x: float) -> str:
    return f"{x:.0f}" if float(x).is_integer() else f"{x:.1f}"


def markdown_paired_table(cmp: PairedComparison) -> str:
    """:func:`paired_comparison` as Markdown: one row per N."""

    def side(runs: int) -> str:
        return f"mean ± sd over {runs} runs" if runs > 1 else "1 run"

    b_side = f" ({side(len(cmp.runs_b))})" if cmp.runs_b else " (baseline)"
    lines = [
        f"A = {cmp.label_a} ({side(len(cmp.runs_a))}), B = {cmp.label_b}{b_side}; {next(iter(cmp.stats.values()))['n']} test photos at "
        f"{cmp.n_spots} spots, within {cmp.threshold_m / 1000:g} km; interval: {100 * cmp.level:g}% bootstrap "
        "over spots of the per-photo difference (runs averaged per photo)",
        "",
        "| N | A recall | B recall | A − B | interval | photos only A finds | photos only B finds |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, s in cmp.stats.items():
        lines.append(
            f"| {n} | {100 * s['a']:.1f}{_sd(cmp.recall_a[n])}% | {100 * s['b']:.1f}{_sd(cmp.recall_b[n])}% | {100 * s['diff']:+.1f} | "
            f"[{100 * s['low']:+.1f}, {100 * s['high']:+.1f}] | {_photos(s['only_a'])} | {_photos(s['only_b'])} |"
        )
    return "\n".join(lines) + "\n"


__all__ = [
    "BASELINE_RANKING_PREFIX",
    "BEST_PIPELINE",
    "PIPELINE_DISTANCE_PREFIX",
    "RANKINGS_KEYS",
    "RANKINGS_NAME",
    "SAVED_BASELINES",
    "PairedComparison",
    "backfill_baseline_rankings",
    "baseline_rankings",
    "load_rankings",
    "markdown_paired_table",
    "paired_comparison",
    "pipeline_distances",
    "pipeline_key",
    "save_rankings",
]
