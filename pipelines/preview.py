"""Pictures of a built database: a mosaic of the stored views of one position (all yaws x modalities).

Written as ``preview.png`` next to the manifest when a build completes, and on demand by
``crosslocate verify DB --preview PNG``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

PREVIEW_NAME = "preview.png"


def pick_position(table: np.ndarray, depth_of: Any, candidates: int = 24) -> int:
    """The position id, among the first ``candidates`` positions, whose views show the most relief.

    ``depth_of(view_index) -> (H, W) float32`` reads stored depth; relief = the spread (std) of the
    per-column horizon row over the position's views, so the preview is not a flat-looking valley.
    """
    from crosslocate.datasets.derived import horizon_line

    pids = np.unique(table["position_id"])[:candidates]
    best, score = int(pids[0]), -1.0
    for pid in pids:
        rows = np.flatnonzero(table["position_id"] == pid)
        lines = np.concatenate([horizon_line(depth_of(int(i))) for i in rows[:: max(1, len(rows) // 4)]])
        s = float(np.nanstd(lines)) if np.isfinite(lines).any() else 0.0
        if s > score:
            best, score = int(pid), s
    return best


def leading_table(db: Any, positions: int) -> np.ndarray:
    """(n,) VIEW_DTYPE rows of the first shards of ``db``, enough to hold ``positions`` whole positions.

    A prefix of ``db.table()`` (same view numbering), read shard by shard so a preview of a
    2-million-view database opens a handful of files, not all of them (100 s cold for Switzerland).
    Falls back to the whole table when the database holds fewer positions.
    """
    parts: list[np.ndarray] = []
    for reader in db.readers:
        parts.append(reader.table())
        pids = np.unique(np.concatenate(parts)["position_id"])
        if len(pids) > positions:  # the last position may continue in the next shard; one more is enough
            break
    return np.concatenate(parts) if parts else db.table()


def save_database_preview(
    db_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, position_id: int | None = None
) -> Path:
    """Mosaic PNG of every stored view of one position: one row per modality, one column per yaw.

    Returns the PNG path (default ``db_dir/preview.png``).
    """
    from crosslocate.datasets.schema import MODALITY_SPECS, Modality
    from crosslocate.datasets.shards import open_database
    from crosslocate.render.preview import save_mosaic, view_rgb

    db_dir = Path(db_dir)
    path = Path(out) if out is not None else db_dir / PREVIEW_NAME
    with open_database(db_dir) as db:
        candidates = 24
        table = db.table() if position_id is not None else leading_table(db, candidates)
        stored = {str(m) for m in db.manifest.render.get("modalities", [m.value for m in MODALITY_SPECS])}
        mods = [m for m in MODALITY_SPECS if m.value in stored]  # one row per modality, registry order
        if position_id is None:
            if Modality.DEPTH in mods:  # the most relief, judged from the horizon
                position_id = pick_position(table, lambda i: db.read(Modality.DEPTH, i), candidates)
            else:
                position_id = int(table["position_id"][0])
        rows = np.flatnonzero(table["position_id"] == position_id)
        rows = rows[np.argsort(table["yaw_deg"][rows], kind="stable")]
        images, titles = [], []
        for m in mods:
            for i in rows:
                images.append(view_rgb(m, db.read(m, int(i))))
                titles.append(f"{m.value} {table['yaw_deg'][i]:.0f}°")
    r = table[rows[0]]
    logger.info("preview of position %d (lon %.5f, lat %.5f) -> %s", position_id, r["lon"], r["lat"], path)
    return save_mosaic(images, path, titles, ncols=len(rows))


__all__ = ["PREVIEW_NAME", "leading_table", "pick_position", "save_database_preview"]
