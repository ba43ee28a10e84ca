"""The view contract between producers (render/) and consumers (model/), schema version 1.

A *view* is one rendered camera (a :class:`~crosslocate.dem.poses.Pose`) with one array per
modality, all (H, W) with row 0 at the top:

================  =========  ==================================================================
modality          dtype      meaning
================  =========  ==================================================================
``depth``         float32    z-depth (distance along the optical axis), metres; sky = ``SKY_DEPTH_M``
``silhouette``    uint8      1 on terrain discontinuities (depth edges incl. the horizon), else 0
``semantic``      uint8      :class:`~crosslocate.dem.landcover.LandCover` id; sky = ``LandCover.SKY``
================  =========  ==================================================================

Derived on demand (never stored): horizon line, relative depth, RGB previews
(:mod:`crosslocate.datasets.derived`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

import numpy as np

from crosslocate.dem.landcover import LANDCOVER_PALETTE, LandCover

#: Bump when the on-disk layout changes; readers refuse other versions.
SCHEMA_VERSION: int = 1

#: Depth value of sky pixels (the released CrossLocate data used -1 as well).
SKY_DEPTH_M: float = -1.0

#: Semantic id of sky pixels.
SKY_CLASS: int = int(LandCover.SKY)

#: Largest plausible decoded depth, metres: no terrain on Earth is visible this far (the horizon
#: from Everest is ~370 km), so a larger value can only come from corrupted bytes.
MAX_DEPTH_M: float = 1_000_000.0


class Modality(StrEnum):
    """Stored modalities."""

    DEPTH = "depth"
    SILHOUETTE = "silhouette"
    SEMANTIC = "semantic"


#: dtype of each modality's decoded array.
MODALITY_DTYPES: dict[Modality, np.dtype] = {
    Modality.DEPTH: np.dtype(np.float32),
    Modality.SILHOUETTE: np.dtype(np.uint8),
    Modality.SEMANTIC: np.dtype(np.uint8),
}

ALL_MODALITIES: tuple[Modality, ...] = (Modality.DEPTH, Modality.SILHOUETTE, Modality.SEMANTIC)

#: Database kinds (manifest ``kind``): views at the query positions, the uniform grid near training
#: queries, the uniform grid over the region (:mod:`crosslocate.pipelines.build`).
DB_KINDS: tuple[str, ...] = ("sparse", "compact", "uniform")

#: Split codes in the per-view table.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2, "none": 255}

#: Per-view table columns (HDF5 compound dataset ``views``) and their dtypes. Every column is a pure
#: function of the build configuration (no timings), so rebuilt shards are byte-identical.
VIEW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("view_id", "<i8"),  # unique within the database, deterministic
    ("position_id", "<i8"),  # index into the database's position list
    ("lon", "<f8"),  # degrees, EPSG:4326
    ("lat", "<f8"),
    ("alt_m", "<f8"),  # camera altitude above the vertical datum
    ("x", "<f8"),  # projected coordinates in the manifest's CRS (metres)
    ("y", "<f8"),
    ("yaw_deg", "<f4"),  # clockwise from north
    ("pitch_deg", "<f4"),
    ("roll_deg", "<f4"),
    ("fov_deg", "<f4"),  # horizontal
    ("split", "u1"),  # SPLIT_CODES
)
#: Columns of shards written before the table became deterministic; readers drop them.
LEGACY_VIEW_COLUMNS: tuple[str, ...] = ("render_time_s",)
VIEW_DTYPE: np.dtype = np.dtype(list(VIEW_COLUMNS))


def invalid_values(modality: Modality | str, decoded: np.ndarray) -> np.ndarray:
    """Bool mask (same shape) of decoded values no renderer can produce, i.e. corruption.

    depth: NaN, +-inf, negatives other than ``SKY_DEPTH_M``, or above :data:`MAX_DEPTH_M`;
    silhouette: not in {0, 1}; semantic: not a :class:`LandCover` id.
    """
    m = Modality(modality)
    a = np.asarray(decoded)
    if m is Modality.DEPTH:
        return ~((np.isfinite(a) & (a >= 0) & (a <= MAX_DEPTH_M)) | (a == SKY_DEPTH_M))
    if m is Modality.SILHOUETTE:
        return a > 1
    return ~np.isin(a, np.array([int(c) for c in LandCover], dtype=a.dtype))


def first_invalid(modality: Modality | str, decoded: np.ndarray, indices: Sequence[int] | None = None) -> str | None:
    """``"<modality> view V pixel (R, C) has invalid value X"`` for the first invalid value, or None.

    ``decoded`` is (n, H, W); ``indices`` (n,) names the views (default ``0..n-1``).
    """
    bad = invalid_values(modality, decoded)
    if not bad.any():
        return None
    v, r, c = (int(i) for i in np.argwhere(bad)[0])
    view = v if indices is None else int(indices[v])
    return f"{Modality(modality).value} view {view} pixel ({r}, {c}) has invalid value {decoded[v, r, c].item()!r}"


def parse_modalities(names: str | list[str] | tuple[str, ...]) -> tuple[Modality, ...]:
    """Parse ``"depth,semantic"`` or a list into modalities; raises ``RenderError`` on unknown names."""
    from crosslocate.errors import RenderError

    items = names.split(",") if isinstance(names, str) else list(names)
    out: list[Modality] = []
    for raw in items:
        name = str(raw).strip().lower()
        if not name:
            continue
        try:
            out.append(Modality(name))
        except ValueError:
            known = ", ".join(m.value for m in Modality)
            raise RenderError(f"unknown modality {raw!r}; known: {known}") from None
    if not out:
        raise RenderError("no modality requested")
    return tuple(dict.fromkeys(out))


def semantic_palette() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table for semantic ids (unknown ids are black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for cls, rgb in LANDCOVER_PALETTE.items():
        lut[int(cls)] = rgb
    return lut
