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

from enum import StrEnum

import numpy as np

from crosslocate.dem.landcover import LANDCOVER_PALETTE, LandCover

#: Bump when the on-disk layout changes; readers refuse other versions.
SCHEMA_VERSION: int = 1

#: Depth value of sky pixels (the released CrossLocate data used -1 as well).
SKY_DEPTH_M: float = -1.0

#: Semantic id of sky pixels.
SKY_CLASS: int = int(LandCover.SKY)


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

#: Split codes in the per-view table.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2, "none": 255}

#: Per-view table columns (HDF5 compound dataset ``views``) and their dtypes.
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
    ("render_time_s", "<f4"),  # wall time spent rendering this view
)
VIEW_DTYPE: np.dtype = np.dtype(list(VIEW_COLUMNS))


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
