"""Render settings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from crosslocate.datasets.schema import ALL_MODALITIES, Modality, parse_modality
from crosslocate.errors import ConfigError
from crosslocate.fileio import config_from_dict, config_to_dict
from crosslocate.render.backends import BACKENDS

#: Backend names: the keys of the registry :data:`crosslocate.render.backends.BACKENDS` (listing it
#: imports no backend).
BACKEND_NAMES: tuple[str, ...] = tuple(BACKENDS)
#: Largest view side, pixels (one 4096 px view is 64 MiB per float32 array; a database shard holds
#: hundreds): ``render-view --size`` and ``build --size-px`` alike.
MAX_SIZE_PX: int = 4096


@dataclass(frozen=True, kw_only=True, slots=True)
class RenderConfig:
    """How views are rendered.

    Attributes
    ----------
    size_px : int
        Square image side, pixels (paper: 500), at most :data:`MAX_SIZE_PX`.
    fov_deg : float
        Horizontal field of view of database views, degrees (paper: 60).
    range_m : float
        Maximum rendered distance, metres (terrain beyond is sky). At least 30 km by default.
    refraction_k : float
        Atmospheric refraction coefficient; the effective earth radius is R / (1 - k).
    near_m : float
        Kept for configuration compatibility; neither backend clips near terrain any more (the cpu
        ray caster starts at the camera, pyrender uses a 1 cm near plane with reversed float depth),
        so the closest visible ground is always drawn.
    backend : str
        ``"cpu"`` (numba heightfield marcher) or ``"pyrender"`` (trimesh + OpenGL offscreen).
    gl_platform : str
        ``"egl"`` (default; GPU, or Mesa llvmpipe on CPU machines) or ``"osmesa"``.
    silhouette_rel_jump : float
        A silhouette edge is drawn where depth jumps by more than this fraction of the nearer depth.
    modalities : tuple of Modality
        Modalities to render.
    lod_cells : int
        Terrain level of detail: pyramid level ``L`` (node spacing ``s0 2^L``) serves distances up to
        ``lod_cells * s0 * 2^L``, so a node spans ``1 / lod_cells`` rad at the far edge of its level.
        256 keeps that under ~2 px at 500 px / 60 deg; scale it with the pixel size (128 for 256 px).
        The build cost grows with ``lod_cells**2``.
    near_patch_cells : int
        Cameras rendered from a region's terrain atlas (database builds) see the exact per-position
        finest level within this many nodes (:func:`crosslocate.render.atlas.near_patch`); 0: the atlas
        alone. The ground right around a camera a few metres up fills much of a level view, and it
        must not depend on where the atlas lattice happens to fall.
    atlas : bool
        Database builds render from the region's terrain prepared once (:mod:`crosslocate.render.atlas`,
        ``cpu`` backend) instead of a pyramid per position (the exact reference, ~50x slower end to end).
    """

    size_px: int = 500
    fov_deg: float = 60.0
    range_m: float = 60_000.0
    refraction_k: float = 0.13
    near_m: float = 5.0
    backend: str = "cpu"
    gl_platform: str = "egl"
    silhouette_rel_jump: float = 0.15
    modalities: tuple[Modality, ...] = field(default=ALL_MODALITIES)
    lod_cells: int = 256
    near_patch_cells: int = 64
    atlas: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.size_px, int) or not 1 <= self.size_px <= MAX_SIZE_PX:
            raise ConfigError(f"size_px {self.size_px!r}: the view side must be within 1..{MAX_SIZE_PX} pixels")
        if not (math.isfinite(self.fov_deg) and 0.0 < self.fov_deg < 180.0):
            raise ConfigError(f"fov_deg must be in (0, 180), got {self.fov_deg}")
        if not self.range_m > self.near_m > 0.0:
            raise ConfigError(f"need range_m > near_m > 0, got range_m={self.range_m}, near_m={self.near_m}")
        if not 0.0 <= self.refraction_k < 1.0:
            raise ConfigError(f"refraction_k must be in [0, 1), got {self.refraction_k}")
        if self.backend not in BACKEND_NAMES:
            raise ConfigError(f"unknown render backend {self.backend!r}; choose one of {BACKEND_NAMES}")
        if self.gl_platform not in ("egl", "osmesa"):
            raise ConfigError(f"gl_platform must be 'egl' or 'osmesa', got {self.gl_platform!r}")
        if not self.silhouette_rel_jump > 0.0:
            raise ConfigError(f"silhouette_rel_jump must be > 0, got {self.silhouette_rel_jump}")
        if not isinstance(self.lod_cells, int) or self.lod_cells < 4:
            raise ConfigError(f"lod_cells must be an integer >= 4, got {self.lod_cells!r}")
        if not isinstance(self.near_patch_cells, int) or self.near_patch_cells < 0:
            raise ConfigError(f"near_patch_cells must be an integer >= 0, got {self.near_patch_cells!r}")
        object.__setattr__(
            self, "modalities", tuple(parse_modality(m, "RenderConfig.modalities") for m in self.modalities)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (modalities as strings), fields in declaration order."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


#: Named render settings, complete (the end-to-end presets of :mod:`crosslocate.pipelines.presets`
#: use them as they are).
RENDER_PRESETS: dict[str, RenderConfig] = {
    "paper": RenderConfig(),
    "cpu": RenderConfig(size_px=256, range_m=35_000.0, lod_cells=128),
    "tiny": RenderConfig(size_px=64, range_m=20_000.0, lod_cells=64),
}
