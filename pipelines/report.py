"""``crosslocate report RUN_DIR``: one self-contained ``report.html`` for a benchmark run.

Built from the files ``crosslocate benchmark`` writes into the run folder: ``results.json``
(recall tables, intervals, chance, baselines, configs, environment, plots), ``rankings.npz``
(per-query rankings, :func:`crosslocate.pipelines.rankings.save_rankings`) and the PNG plots.
The page needs no network and no script: charts are inline SVG drawn here, pictures are
``data:`` URIs (query photos as JPEG thumbnails, retrieved views as PNG previews read from the
databases named in ``rankings.npz``). Sections: the recall curves, the results table against
chance and the baselines, a map of the test spots with their top-K, one row per query (photo,
top-5 views with distance and yaw difference, hit or miss), the run's plots, configs and
environment. Without ``rankings.npz`` (runs from before it existed) the map and the per-query
rows say so instead.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.errors import ConfigError
from crosslocate.pipelines.rankings import load_rankings

logger = logging.getLogger(__name__)

REPORT_NAME = "report.html"
#: Distance (metres) of the hit/miss marks and the main table; a key of ``results["recall"]``.
HIT_THRESHOLD_M: float = 1000.0
#: N values of the results table.
TABLE_NS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)
#: Row names of the hybrid candidate set and of the pipeline chosen on validation (also in the text summary).
HYBRID_LABEL = "hybrid (ours ∪ horizon searched)"
BEST_LABEL = "best pipeline, chosen on validation"
#: Retrieved views shown per query, and the map's top-K lines.
TOP_SHOW: int = 5
#: Thumbnail sides, pixels.
PHOTO_PX, VIEW_PX = 200, 110
#: Largest number of per-query rows (one photo per spot first, then the rest).
MAX_ROWS: int = 250
_COLOURS = ("#1f6fb4", "#d9480f", "#2b8a3e", "#862e9c", "#5c940d", "#e8590c")

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff;max-width:1400px}
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th:first-child,td:first-child{text-align:left}.q td{text-align:center;vertical-align:top;font-size:12px}
.hit{color:#2b8a3e;font-weight:600}.miss{color:#c92a2a;font-weight:600}figure{display:inline-block;margin:4px}
pre{background:#f6f6f6;padding:8px;overflow:auto;max-height:420px;text-align:left}svg{background:#fff}
.q img{width:110px;image-rendering:pixelated}.q td:first-child img{width:200px;image-rendering:auto}
.in{outline:3px solid #2b8a3e}.out{outline:1px solid #bbb}.note{color:#666}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _png_uri(rgb: npt.NDArray[np.uint8], side_px: int, fmt: str = "PNG") -> str:
    """``data:`` URI of an (H, W[, 3]) uint8 image shrunk to fit ``side_px``."""
    from PIL import Image

    img = Image.fromarray(np.asarray(rgb, np.uint8))
    img.thumbnail((side_px, side_px))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=fmt, **({"quality": 82} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _file_uri(path: Path, side_px: int) -> str | None:
    """Thumbnail ``data:`` URI of an image file, or None when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return _png_uri(np.asarray(im.convert("RGB")), side_px, "JPEG" if side_px <= PHOTO_PX else "PNG")
    except (OSError, UnidentifiedImageError) as exc:
        logger.warning("report: cannot read image %s (%s)", path, exc)
        return None


def _row(table: dict[str, Any] | None, threshold: float) -> dict[int, float]:
    """``{N: recall}`` of one threshold of a results table (``{"<m>": {"<N>": v}}``), empty if absent."""
    for key, row in (table or {}).items():
        if float(key) == float(threshold):
            return {int(n): float(v) for n, v in row.items()}
    return {}


def recall_svg(curves: dict[str, dict[int, float]], title: str, width: int = 380, height: int = 260) -> str:
    """Inline SVG of recall@N curves (log N axis 1..100, recall 0..1); ``chance`` is dashed."""
    left, right, top, bottom = 44, 10, 24, 34
    pw, ph = width - left - right, height - top - bottom
    nmax = max((max(c) for c in curves.values() if c), default=100)
    lmax = np.log10(max(nmax, 2))

    def x(n: float) -> float:
        return left + pw * float(np.log10(n)) / lmax

    def y(v: float) -> float:
        return top + ph * (1.0 - v)

    parts = [f'<svg width="{width}" height="{height}" role="img">',
             f'<text x="{left}" y="16" font-size="13">{_esc(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']  # fmt: skip
    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{left}" x2="{left + pw}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" text-anchor="end">{v:.2f}</text>')
    for n in (1, 5, 10, 50, 100):
        if n <= nmax:
            parts.append(f'<text x="{x(n):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">{n}</text>')
    parts.append(f'<text x="{left + pw / 2:.0f}" y="{height - 4}" font-size="11" text-anchor="middle">N</text>')
    for k, (name, curve) in enumerate(c for c in curves.items() if c[1]):
        pts = " ".join(f"{x(n):.1f},{y(v):.1f}" for n, v in sorted(curve.items()))
        dash = ' stroke-dasharray="5,4"' if name == "chance" else ""
        colour = "#777" if name == "chance" else _COLOURS[k % len(_COLOURS)]
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        parts.append(f'<text x="{left + 8}" y="{top + 14 + 13 * k}" font-size="11" fill="{colour}">{_esc(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def map_svg(
    query_xy: npt.NDArray[np.float64],
    db_xy: npt.NDArray[np.float64],
    ranking: npt.NDArray[np.int64],
    hit: npt.NDArray[np.bool_],
    size: int = 560,
) -> str:
    """Inline SVG map (metres, north up): database views grey, query spots green (hit) / red (miss),
    lines to each spot's top-K retrieved positions (the top-1 thicker)."""
    pts = np.concatenate([db_xy, query_xy])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = float(max(hi[0] - lo[0], hi[1] - lo[1], 1.0))
    pad = 16

    def xy(p: npt.NDArray[np.float64]) -> tuple[float, float]:
        return pad + (size - 2 * pad) * (p[0] - lo[0]) / span, size - pad - (size - 2 * pad) * (p[1] - lo[1]) / span

    out = [f'<svg width="{size}" height="{size}" role="img">']
    out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="1.5" fill="#bbb"/>' for a, b in map(xy, np.unique(db_xy, axis=0))]
    for q, row, ok in zip(query_xy, ranking, hit, strict=True):
        qa, qb = xy(q)
        colour = "#2b8a3e" if ok else "#c92a2a"
        for r, j in enumerate(row[::-1]):
            a, b = xy(db_xy[j])
            width = 2.2 if r == len(row) - 1 else 0.7
            out.append(
                f'<line x1="{qa:.1f}" y1="{qb:.1f}" x2="{a:.1f}" y2="{b:.1f}" stroke="{colour}" stroke-width="{width}" opacity="0.6"/>'
            )
        out.append(f'<circle cx="{qa:.1f}" cy="{qb:.1f}" r="4.5" fill="{colour}" stroke="#000" stroke-width="0.6"/>')
    bar = 10 ** np.floor(np.log10(span / 4))
    px = (size - 2 * pad) * bar / span
    out.append(f'<line x1="{pad}" x2="{pad + px:.1f}" y1="{size - 6}" y2="{size - 6}" stroke="#000" stroke-width="2"/>')
    out.append(f'<text x="{pad + px + 4:.1f}" y="{size - 3}" font-size="10">{bar / 1000:g} km</text></svg>')
    return "".join(out)


def table_rows(
    results: dict[str, Any], threshold: float = HIT_THRESHOLD_M
) -> tuple[list[int], list[tuple[str, dict[int, float]]], dict[int, tuple[float, float]]]:
    """The results table's ``(Ns, [(row name, {N: recall})], ours' 95% interval {N: (lo, hi)})`` within
    ``threshold``: ours, orientation-restricted, baselines, skyline re-ranking and place voting
    (``refined``, when present), chance; names are plain text."""
    ours, chance = _row(results.get("recall"), threshold), _row(results.get("chance"), threshold)
    ns = [n for n in TABLE_NS if n in ours]
    ci = _row_ci(results.get("recall_ci95", {}), threshold)
    rows = [("ours (" + str(results.get("modality", "?")) + ")", ours)]
    rows.append(("… orientation-restricted", _row(results.get("recall_oriented"), threshold)))
    rows += [(str(name), _row(t, threshold)) for name, t in results.get("baselines", {}).items()]
    refined = results.get("refined", {})
    if "reranked" in refined:  # skyline re-ranking of the top K, then places with and without voting
        rows.append(("ours + skyline re-ranking", _row(refined["reranked"].get("recall"), threshold)))
        rows += [
            ("places: " + name.replace("_", " "), _row(refined["place"].get(name), threshold))
            for name in ("plain_views_as_places", "plain_voting", "reranked_voting")
        ]
        rows += [  # a baseline's own ranking read as places, the place-level reference for it
            ("places: " + name.replace("_", " "), _row(table, threshold))
            for name, table in refined["place"].items()
            if name.endswith("_views_as_places") and not name.startswith(("plain_", "reranked_"))
        ]
    hybrid = refined.get("hybrid")
    if hybrid:  # the network's and the horizon search's candidates re-ranked together
        rows.append((HYBRID_LABEL + " + re-ranking", _row(hybrid["reranked"].get("recall"), threshold)))
        rows.append(("places: hybrid re-ranked voting", _row(hybrid["place"].get("reranked_voting"), threshold)))
    best = results.get("best_pipeline") or {}
    if best.get("recall"):
        rows.append((BEST_LABEL, _row(best["recall"], threshold)))
    if results.get("chance_oriented"):
        rows.append(("chance, orientation-restricted (analytic)", _row(results.get("chance_oriented"), threshold)))
    rows.append(("chance (analytic)", chance))
    return ns, rows, ci


def results_table(results: dict[str, Any], threshold: float = HIT_THRESHOLD_M) -> str:
    """HTML table of recall@N within ``threshold`` (:func:`table_rows`) plus ours / chance."""
    ns, rows, ci = table_rows(results, threshold)
    ours, chance = rows[0][1], rows[-1][1]
    head = "".join(f"<th>R@{n}</th>" for n in ns)
    body = []
    for name, r in rows:
        body.append(
            f"<tr><td>{_esc(name)}</td>"
            + "".join(f"<td>{100 * r[n]:.1f}%</td>" if n in r else "<td>—</td>" for n in ns)
            + "</tr>"
        )
        if name.startswith("ours (") and ci:
            cells = "".join(
                f"<td>{100 * ci[n][0]:.1f}–{100 * ci[n][1]:.1f}%</td>" if n in ci else "<td>—</td>" for n in ns
            )
            body.append(f"<tr><td>… 95% interval (spots resampled)</td>{cells}</tr>")
    ratio = "".join(f"<td>{ours[n] / chance[n]:.1f}×</td>" if chance.get(n) else "<td>—</td>" for n in ns)
    body.append(f"<tr><td>ours / chance</td>{ratio}</tr>")
    return f"<table><tr><th>within {threshold / 1000:g} km</th>{head}</tr>{''.join(body)}</table>"


def markdown_table(results: dict[str, Any], threshold: float = HIT_THRESHOLD_M) -> str:
    """The same table as :func:`results_table` in Markdown (for the README), numbers from ``results``."""
    ns, rows, ci = table_rows(results, threshold)
    ours, chance = rows[0][1], rows[-1][1]
    lines = [f"| within {threshold / 1000:g} km | " + " | ".join(f"R@{n}" for n in ns) + " |"]
    lines.append("|---|" + "---|" * len(ns))
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[n]:.1f}%" if n in r else "—" for n in ns) + " |")
        if name.startswith("ours (") and ci:
            cells = " | ".join(f"{100 * ci[n][0]:.1f}–{100 * ci[n][1]:.1f}%" if n in ci else "—" for n in ns)
            lines.append(f"| … 95% interval (spots resampled) | {cells} |")
    ratio = " | ".join(f"{ours[n] / chance[n]:.1f}×" if chance.get(n) else "—" for n in ns)
    lines.append(f"| ours / chance | {ratio} |")
    return "\n".join(lines) + "\n"


def pipeline_note(results: dict[str, Any]) -> str:
    """One sentence on the pipeline chosen on the validation split (``results["pipeline_selection"]``,
    :func:`crosslocate.pipelines.refine.choose_pipeline`), or "" when the run did not choose one."""
    sel = results.get("pipeline_selection") or {}
    if "chosen" not in sel:
        return ""
    scores = ", ".join(
        f"{name} {100 * v.get('1', float('nan')):.1f}% / {100 * v.get('10', float('nan')):.1f}%"
        for name, v in sel.get("scores", {}).items()
    )
    weight, settings = sel.get("weight"), sel.get("scores_by_setting", {})
    weight_text = (
        f" The re-ranking setting was chosen with it among {len(settings)} (view or position panorama x "
        f"fusion weight): {'panorama' if sel.get('panorama') else 'view'}, weight {weight:g}; the test split "
        "is re-ranked with it."
        if weight is not None and settings
        else ""
    )
    return (
        f"The best pipeline was chosen on the validation split ({sel.get('n_queries', '?')} photos, "
        f"{sel.get('n_database', '?')} views) by {sel.get('rule', '?')}: {sel['chosen']}. Validation R@1 / R@10 "
        f"within 1 km: {scores}.{weight_text} The hybrid re-ranks the union of the network's and the "
        "pitch/roll-searched horizon baseline's top K."
    )


def shared_terrain_note(results: dict[str, Any]) -> str:
    """One sentence on how much terrain the test split shares with training (``results["shared_terrain"]``,
    :func:`crosslocate.dem.splits.shared_terrain`), or "" when the run did not record it."""
    st = results.get("shared_terrain") or {}
    test = st.get("test")
    if not test:
        return ""
    return (
        f"Test positions are geographically disjoint from training positions, but views reach "
        f"{st['range_m'] / 1000:g} km: {100 * test['seen_by_train']:.0f}% of the test area lies within reach of "
        f"training views, and {100 * test['view_terrain_in_train']:.0f}% of what the test views can see is "
        "training area."
    )


def markdown_spread_table(runs: list[dict[str, Any]], threshold: float = HIT_THRESHOLD_M) -> str:
    """Mean and standard deviation over runs (e.g. training seeds) of every :func:`table_rows` row, Markdown.

    Rows are matched by name; a row missing from a run is left out of that row's statistics.
    """
    tables = [table_rows(r, threshold) for r in runs]
    ns = tables[0][0]
    names = [name for name, _ in tables[0][1]]
    lines = [
        f"| within {threshold / 1000:g} km, mean ± sd over {len(runs)} runs | "
        + " | ".join(f"R@{n}" for n in ns)
        + " |",
        "|---|" + "---|" * len(ns),
    ]
    for name in names:
        cells = []
        for n in ns:
            vals = [100 * dict(rows)[name][n] for _, rows, _ in tables if name in dict(rows) and n in dict(rows)[name]]
            cells.append(
                f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1) if len(vals) > 1 else 0.0:.1f}%" if vals else "—"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: Config fields that differ between the seeds of one configuration (not part of its identity).
SEED_FIELDS: tuple[str, ...] = ("net.init_seed", "train.seed")
#: Columns of :func:`markdown_compare_table`: (header, source, N); source ``val`` is the chosen pipeline's
#: validation score (``pipeline_selection``), the others are rows of :func:`table_rows` (test split).
COMPARE_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("val: chosen R@1", "val", 1), ("val: chosen R@10", "val", 10),
    ("network R@1", "ours", 1), ("network R@10", "ours", 10), ("network R@100", "ours", 100),
    ("best pipeline R@1", BEST_LABEL, 1), ("best pipeline R@10", BEST_LABEL, 10),
)  # fmt: skip


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix[:-1]: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def _config_defaults() -> dict[str, Any]:
    """Flattened defaults of the network, training and evaluation configs (``train.extra_photos``: 0)."""
    from crosslocate.fileio import config_to_dict
    from crosslocate.model.config import EvalConfig, NetConfig, TrainConfig

    out: dict[str, Any] = {}
    for section, cls in (("net", NetConfig), ("train", TrainConfig), ("eval", EvalConfig)):
        out.update(_flat(config_to_dict(cls()), f"{section}."))
    return out


def _data_identity(results: dict[str, Any]) -> tuple[Any, ...]:
    qs, db = results.get("query_set") or {}, results.get("database") or {}
    return results.get("region"), qs.get("id"), db.get("what"), db.get("n_views", results.get("n_database"))


@dataclass(slots=True)
class Comparison:
    """Configurations side by side (:func:`compare_configurations`).

    ``labels``: one per configuration; ``n_runs``: runs (seeds) per configuration; ``values``:
    per configuration, per :data:`COMPARE_COLUMNS` header, the runs' values in percent (empty where a
    run lacks it); ``reference``: the searched horizon baseline's test recall per header, percent
    (none for validation columns, empty without the baseline); ``threshold_m``.
    """

    labels: list[str]
    n_runs: list[int]
    values: list[dict[str, list[float]]]
    reference: dict[str, float]
    threshold_m: float


def compare_configurations(runs: list[tuple[str, dict[str, Any]]], threshold: float = HIT_THRESHOLD_M) -> Comparison:
    """Group runs into configurations and collect the :data:`COMPARE_COLUMNS` values of each.

    ``runs``: (name, results.json content) pairs. Runs whose configs (``results["config"]``, flattened)
    agree except for :data:`SEED_FIELDS` are one configuration; a configuration is labelled by the
    config fields that differ between configurations (``net.pooling=netvlad``). Columns: the
    validation score of the pipeline each run chose (what a choice between configurations may look
    at), then the network's and the best pipeline's test recall within ``threshold``; the reference
    is the searched-pitch/roll horizon baseline's test recall, the same for every run. Raises
    ConfigError naming the two files when the runs were not scored on the same data (region, query
    set, database).
    """
    if not runs:
        raise ConfigError("nothing to compare: no results given")
    first_name, first = runs[0]
    for name, res in runs[1:]:
        if _data_identity(res) != _data_identity(first):
            raise ConfigError(
                f"{name} was scored on other data than {first_name} (region, query set, database: "
                f"{_data_identity(res)} vs {_data_identity(first)}); compare runs on the same data"
            )
    configs = [{k: v for k, v in _flat(res.get("config", {})).items() if k not in SEED_FIELDS} for _, res in runs]
    defaults = _config_defaults()
    for key in {k for cfg in configs for k in cfg} & set(defaults):
        for cfg in configs:  # a run made before a field existed ran with its default
            cfg.setdefault(key, defaults[key])
    groups: list[tuple[dict[str, Any], list[int]]] = []
    for i, cfg in enumerate(configs):
        for key, members in groups:
            if key == cfg:
                members.append(i)
                break
        else:
            groups.append((cfg, [i]))
    fields = sorted({k for cfg, _ in groups for k in cfg if len({json.dumps(c.get(k)) for c, _ in groups}) > 1})
    tables = [dict(table_rows(res, threshold)[1]) for _, res in runs]
    ours = next(iter(tables[0]))  # "ours (<modality>)"
    values: list[dict[str, list[float]]] = []
    for _, members in groups:
        cols: dict[str, list[float]] = {}
        for head, row, n in COMPARE_COLUMNS:
            if row == "val":
                sel = [runs[i][1].get("pipeline_selection") or {} for i in members]
                cols[head] = [
                    100 * s["scores"][s["chosen"]][str(n)]
                    for s in sel
                    if str(n) in s.get("scores", {}).get(s.get("chosen"), {})
                ]
            else:
                name = ours if row == "ours" else row
                cols[head] = [100 * tables[i][name][n] for i in members if n in tables[i].get(name, {})]
        values.append(cols)
    ref = tables[0].get("horizon_searched") or {}
    return Comparison(
        labels=[", ".join(f"{k}={cfg.get(k)}" for k in fields) or "all runs" for cfg, _ in groups],
        n_runs=[len(members) for _, members in groups],
        values=values,
        reference={head: 100 * ref[n] for head, row, n in COMPARE_COLUMNS if row != "val" and n in ref},
        threshold_m=float(threshold),
    )


def markdown_compare_table(cmp: Comparison) -> str:
    """A :func:`compare_configurations` result as a Markdown table: a row per configuration (mean ± sd
    over its runs; a single run's value alone), then the searched horizon baseline's row."""
    threshold = cmp.threshold_m
    heads = [h for h, _, _ in COMPARE_COLUMNS]
    lines = [
        f"| configuration (within {threshold / 1000:g} km, mean ± sd) | runs | " + " | ".join(heads) + " |",
        "|---|---|" + "---|" * len(heads),
    ]
    for label, n_runs, cols in zip(cmp.labels, cmp.n_runs, cmp.values, strict=True):
        cells = []
        for head in heads:
            vals = cols[head]
            if len(vals) > 1:
                cells.append(f"{np.mean(vals):.1f} ± {np.std(vals, ddof=1):.1f}%")
            else:  # one run: no spread to give
                cells.append(f"{vals[0]:.1f}%" if vals else "—")
        lines.append(f"| {label} | {n_runs} | " + " | ".join(cells) + " |")
    if cmp.reference:
        cells = [f"{cmp.reference[h]:.1f}%" if h in cmp.reference else "—" for h in heads]
        lines.append("| horizon_searched (baseline, all runs) | — | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _row_ci(table: dict[str, Any], threshold: float) -> dict[int, tuple[float, float]]:
    for key, row in table.items():
        if float(key) == float(threshold):
            return {int(n): (float(v[0]), float(v[1])) for n, v in row.items()}
    return {}


class _Views:
    """Preview thumbnails of database views, databases opened once each (None when unreadable)."""

    def __init__(self, db_dirs: list[str], modality: str) -> None:
        self.db_dirs, self.modality, self.open = db_dirs, modality, {}

    def uri(self, part: int, index: int) -> str | None:
        from crosslocate.datasets.derived import view_to_rgb
        from crosslocate.datasets.shards import open_database
        from crosslocate.errors import CrosslocateError

        if part not in self.open:
            try:
                self.open[part] = open_database(self.db_dirs[part])
            except (CrosslocateError, OSError) as exc:
                logger.warning("report: database %s unavailable (%s); views are left out", self.db_dirs[part], exc)
                self.open[part] = None
        db = self.open[part]
        if db is None:
            return None
        return _png_uri(view_to_rgb(self.modality, db.read(self.modality, int(index))), VIEW_PX)

    def close(self) -> None:
        for db in self.open.values():
            if db is not None:
                db.close()


def _order(spot: npt.NDArray[np.int64], limit: int) -> npt.NDArray[np.int64]:
    """Query indices to show: the first photo of every spot, then the others, at most ``limit``."""
    first = np.sort(np.unique(spot, return_index=True)[1])
    rest = np.setdiff1d(np.arange(len(spot)), first)
    return np.concatenate([first, rest])[:limit].astype(np.int64)


def query_rows(rk: dict[str, Any], max_rows: int = MAX_ROWS) -> str:
    """One table row per query: photo, top-5 views (distance, yaw difference), hit@1 / hit@5 / miss."""
    from crosslocate.dem.poses import yaw_difference_deg

    ranking, dist = rk["ranking"], rk["distance_m"]
    views = _Views([str(d) for d in rk["db_dirs"]], str(rk["modality"]))
    k = min(TOP_SHOW, ranking.shape[1])
    rows = [
        "<table class='q'><tr><th>query</th>" + "".join(f"<th>#{r + 1}</th>" for r in range(k)) + "<th>result</th></tr>"
    ]
    try:
        for i in _order(rk["spot"], max_rows):
            photo = _file_uri(Path(str(rk["query_image"][i])), PHOTO_PX)
            cell = f"<img src='{photo}' alt='query {i}'>" if photo else "<span class='note'>photo not found</span>"
            cells = [f"<td>{cell}<br>#{i} · yaw {rk['query_yaw_deg'][i]:.0f}° · FOV {rk['query_fov_deg'][i]:.0f}°</td>"]
            for r in range(k):
                j = int(ranking[i, r])
                uri = views.uri(int(rk["db_part"][j]), int(rk["db_index"][j]))
                cls = "in" if dist[i, r] <= HIT_THRESHOLD_M else "out"
                pic = (
                    f"<img class='{cls}' src='{uri}' alt='view {j}'>"
                    if uri
                    else "<span class='note'>view unavailable</span>"
                )
                dyaw = float(yaw_difference_deg(rk["db_yaw_deg"][j], rk["query_yaw_deg"][i]))
                cells.append(f"<td>{pic}<br>{dist[i, r] / 1000:.2f} km · {dyaw:.0f}°</td>")
            verdict = _verdict(dist[i])
            cells.append(f"<td class='{'miss' if verdict == 'miss' else 'hit'}'>{verdict}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
    finally:
        views.close()
    return "".join(rows) + "</table>"


def _verdict(dist_m: npt.NDArray[np.float64]) -> str:
    """``hit@1`` / ``hit@5`` / ``miss``: is a view within :data:`HIT_THRESHOLD_M` at rank 1 / in the top 5."""
    if dist_m[0] <= HIT_THRESHOLD_M:
        return "hit@1"
    return "hit@5" if np.any(dist_m[:TOP_SHOW] <= HIT_THRESHOLD_M) else "miss"


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A run's ``results.json`` content: ``path`` is the file itself or the run folder holding it.

    Raises ConfigError (one line, naming the path) when it is missing or not valid JSON.
    """
    return _run_json(
        path, "results.json", "run `crosslocate benchmark` for this run first", "; re-run `crosslocate benchmark`"
    )


def _run_json(path: str | os.PathLike[str], name: str, missing: str, invalid: str = "") -> Any:
    """The JSON file ``name`` of a run (``path``: the file or the run folder); ConfigError naming the path."""
    p = Path(path)
    file = p if p.is_file() else p / name
    if not file.is_file():
        raise ConfigError(f"{p}: no {name}; {missing}")
    try:
        return json.loads(file.read_text())
    except ValueError as exc:
        raise ConfigError(f"{file}: not valid JSON ({exc}){invalid}") from exc


#: The per-epoch value ``--curves`` plots by default (validation recall@10 within 1 km).
CURVE_KEY = "val_recall@10_1km"


def seed_stem(name: str) -> str:
    """A run's configuration name: ``X`` for ``X``, ``X-seed1``, ``X-seed2`` (its seeds)."""
    return re.sub(r"-seed\d+$", "", name)


def training_curves(
    histories: list[tuple[str, list[dict[str, Any]]]], key: str = CURVE_KEY
) -> dict[str, dict[int, list[float]]]:
    """Per-epoch validation curves of several runs, seeds pooled.

    ``histories``: (file name, ``metrics.json`` content: one dict per epoch) pairs. Files named
    ``X``, ``X-seed1``, ``X-seed2`` (stem without ``-seed<N>``) are the seeds of one configuration,
    labelled ``X``. Returns ``{label: {epoch: [value of each seed, percent]}}``, epochs ascending.
    Raises ConfigError naming the file when a history is not a list of epochs or none has ``key``.
    """
    out: dict[str, dict[int, list[float]]] = {}
    for name, history in histories:
        if not isinstance(history, list) or not all(isinstance(e, dict) and "epoch" in e for e in history):
            raise ConfigError(f"{name}: not a training history (metrics.json: a list of epochs)")
        points = [(int(e["epoch"]), 100.0 * float(e[key])) for e in history if e.get(key) is not None]
        if not points:
            raise ConfigError(f"{name}: no epoch has {key!r}")
        label = seed_stem(Path(name).stem)
        for epoch, value in points:
            out.setdefault(label, {}).setdefault(epoch, []).append(value)
    return {label: dict(sorted(c.items())) for label, c in out.items()}


def markdown_curves_table(curves: dict[str, dict[int, list[float]]], key: str = CURVE_KEY) -> str:
    """:func:`training_curves` as Markdown: per configuration its runs, the epoch of the best mean
    (the earliest on ties) and the last epoch, each with its mean, and the mean over the second half
    of the epochs (those after half the last one: 13-24 of 24), which one lucky epoch moves less than
    the best (a validation set of a hundred photos swings by several points between epochs)."""
    lines = [
        f"| configuration | runs | best epoch (mean {key}) | mean there | last epoch | mean there "
        "| mean over epochs > last / 2 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, by_epoch in curves.items():
        means = {e: float(np.mean(v)) for e, v in by_epoch.items()}
        best, last = max(means, key=lambda e: (means[e], -e)), max(means)
        late = float(np.mean([m for e, m in means.items() if e > last / 2]))
        n = max(len(v) for v in by_epoch.values())
        lines.append(f"| {label} | {n} | {best} | {means[best]:.1f}% | {last} | {means[last]:.1f}% | {late:.1f}% |")
    return "\n".join(lines) + "\n"


def run_confusers(path: str | os.PathLike[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """Where a run's wrong top-10 views lie (:func:`crosslocate.model.evaluate.confuser_profile`), as
    (split, ranking, profile) rows: the validation split's network ranking when the benchmark recorded
    it, and the test split's from ``results.json`` or, for runs from before it, from ``rankings.npz``
    (the network's ranking; nothing is searched or scored again)."""
    from crosslocate.model.evaluate import confuser_profile

    p = Path(path)
    results = load_results(p)
    rows = []
    val = results.get("pipeline_selection", {}).get("network_confusers")
    if val:
        rows.append(("val", "network", val))
    test = results.get("confusers")
    if test:
        rows.extend(("test", name, prof) for name, prof in test.items())
    elif p.is_dir() and (rk := load_rankings(p, results)) is not None:
        rows.append(("test", "network", confuser_profile(rk["distance_m"], rk["query_xy"], rk["db_xy"])))
    if not rows:
        raise ConfigError(
            f"{p}: no confuser profile (results from before it) and no rankings.npz beside it; pass the run folder"
        )
    return rows


def markdown_confusers_table(runs: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]]) -> str:
    """:func:`run_confusers` of several runs as Markdown: per bin, the share of the wrong top-N views
    and, in brackets, of all wrong database views (a ranking blind to geography)."""
    bins = next(prof["bins"] for _, rows in runs for _, _, prof in rows)
    head = " | ".join(bins)
    lines = [f"| run | split | ranking | wrong views | {head} |", "|---|---|---|---|" + "---|" * len(bins)]
    for name, rows in runs:
        for split, ranking, prof in rows:
            cells = " | ".join(
                f"{100 * w:.1f}% ({100 * d:.1f}%)" for w, d in zip(prof["wrong"], prof["database"], strict=True)
            )
            lines.append(f"| {name} | {split} | {ranking} top {prof['top_n']} | {prof['n_wrong']} | {cells} |")
    return "\n".join(lines) + "\n"


def load_history(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A run's ``metrics.json`` (the file, or the run folder holding it); ConfigError naming the path."""
    return _run_json(path, "metrics.json", "train the run first")


def _load(run_dir: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    results = load_results(run_dir)
    return results, load_rankings(run_dir, results)


def _plots(results: dict[str, Any], run_dir: Path) -> str:
    figs = []
    for p in results.get("plots", []):
        path = run_dir / Path(p).name
        uri = _file_uri(path, 1100) if path.is_file() else None
        if uri:
            figs.append(
                f"<figure><img src='{uri}' alt='{_esc(path.name)}' style='max-width:100%'><figcaption>{_esc(path.name)}</figcaption></figure>"
            )
    return "".join(figs) or "<p class='note'>no plot files in the run folder</p>"


def render_report(run_dir: str | os.PathLike[str], *, max_rows: int = MAX_ROWS) -> str:
    """The report's HTML text (see the module docstring)."""
    from crosslocate.pipelines.benchinfo import environment_info

    run_dir = Path(run_dir)
    results, rk = _load(run_dir)
    panels = []
    for key in sorted(results.get("recall", {}), key=float):
        t = float(key)
        curves = {
            "ours": _row(results["recall"], t),
            **{n: _row(v, t) for n, v in results.get("baselines", {}).items()},
        }
        curves["chance"] = _row(results.get("chance"), t)
        panels.append(
            recall_svg(curves, f"recall@N within {t / 1000:g} km" if t >= 1000 else f"recall@N within {t:g} m")
        )
    if rk is not None:
        show = _order(rk["spot"], len(rk["spot"]))[: len(np.unique(rk["spot"]))]
        k = min(TOP_SHOW, rk["ranking"].shape[1])
        hit = rk["distance_m"][:, 0] <= HIT_THRESHOLD_M
        the_map = map_svg(rk["query_xy"][show], rk["db_xy"], rk["ranking"][show, :k], hit[show])
        the_map += f"<p class='note'>{len(show)} spots (first photo of each); lines to the top {k}, top 1 thick; green = hit@1 within {HIT_THRESHOLD_M / 1000:g} km.</p>"
        per_query = query_rows(rk, max_rows)
    else:
        the_map = per_query = (
            "<p class='note'>this run has no rankings.npz (made before rankings were saved); re-run `crosslocate benchmark`.</p>"
        )
    meta = {
        k: results.get(k)
        for k in (
            "region",
            "preset",
            "modality",
            "n_queries",
            "n_spots",
            "n_database",
            "device",
            "init",
            "checkpoint",
            "timings",
        )
    }
    title = f"crosslocate benchmark · {results.get('region', '?')} / {results.get('preset', '?')} / {results.get('modality', '?')}"
    return "".join([
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1><p>{_esc(results.get('n_queries', '?'))} test photos ({_esc(results.get('n_spots', '?'))} spots) "
        f"against {_esc(results.get('n_database', '?'))} database views.</p>",
        "<h2>Recall curves</h2>", "".join(panels),
        "<h2>Results vs chance and baselines</h2>", results_table(results),
        f"<p class='note'>{_esc(shared_terrain_note(results))}</p>",
        f"<p class='note'>{_esc(pipeline_note(results))}</p>",
        "<h2>Map of the test spots</h2>", the_map,
        "<h2>Per query</h2>", per_query,
        "<h2>Plots of the run</h2>", _plots(results, run_dir),
        "<h2>Run</h2><pre>", _esc(json.dumps(meta, indent=2, default=str)), "</pre>",
        "<h2>Configs</h2><pre>", _esc(json.dumps(results.get("config", {}), indent=2, default=str)), "</pre>",
        "<h2>Environment</h2><pre>", _esc(json.dumps(results.get("environment", "not recorded in results.json"), indent=2, default=str)),
        "</pre><p class='note'>report written on:</p><pre>", _esc(json.dumps(environment_info(), indent=2, default=str)), "</pre>",
        "</body></html>\n",
    ])  # fmt: skip


def write_report(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *, max_rows: int = MAX_ROWS
) -> Path:
    """Write ``report.html`` (default: into ``run_dir``) atomically; returns its path."""
    from crosslocate.fileio import write_text_atomic

    path = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    write_text_atomic(path, render_report(run_dir, max_rows=max_rows))
    logger.info("wrote %s", path)
    return path


__all__ = [
    "REPORT_NAME",
    "map_svg",
    "markdown_confusers_table",
    "query_rows",
    "recall_svg",
    "render_report",
    "results_table",
    "run_confusers",
    "seed_stem",
    "write_report",
]
