"""The renderer backend interface: chosen once per run, used as a context manager.

A backend renders views of one :class:`~crosslocate.render.terrain.LocalTerrain` (a metric
heightfield in a local ENU frame with earth curvature and refraction already applied) for a batch
of cameras given in that frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from crosslocate.datasets.schema import Modality, parse_modality
from crosslocate.errors import RenderError

if TYPE_CHECKING:
    from crosslocate.render.atlas import PackedLevels
    from crosslocate.render.config import RenderConfig
    from crosslocate.render.terrain import LocalTerrain


@dataclass(frozen=True, slots=True)
class FrameCamera:
    """A camera in a terrain's local frame.

    Attributes
    ----------
    position : (3,) float64
        Camera centre in the terrain frame (east, north, up), metres.
    rotation : (3, 3) float64
        ``v_frame = rotation @ v_cam`` (camera axes: x right, y down, z forward).
    fov_deg : float
        Horizontal FOV, degrees.
    width_px, height_px : int
        Image size.
    curvature : (2, 2) float64 or None
        Per-camera earth curvature for a frame whose heights are *not* reduced for it (a
        :class:`~crosslocate.render.atlas.TerrainAtlas`): a point at horizontal frame offset ``g``
        from the camera is drawn ``g^T curvature g`` lower (curvature minus refraction). None for a
        :class:`~crosslocate.render.terrain.LocalTerrain`, whose heights already include it.
    curvature_h : float
        The drop grows by ``curvature_h * h * |to_true g|^2`` for a point at height ``h`` (1/m^2).
    to_true : (2, 2) float64 or None
        Maps a frame offset to the true local (east, north) offset in metres; depths and the range
        are measured in true metres. None: the frame is metric (identity).
    patch : PackedLevels or None
        The near patch of an atlas camera (:func:`crosslocate.render.atlas.near_patch`): the exact
        per-position pyramid's finest level within a few hundred metres to a few km, in the camera's
        own true frame (camera at x = y = 0, curvature baked in), rendered before the atlas.
    patch_z : float
        The camera's height in the patch frame, metres.
    """

    position: npt.NDArray[np.float64]
    rotation: npt.NDArray[np.float64]
    fov_deg: float
    width_px: int
    height_px: int
    curvature: npt.NDArray[np.float64] | None = None
    curvature_h: float = 0.0
    to_true: npt.NDArray[np.float64] | None = None
    patch: PackedLevels | None = None
    patch_z: float = 0.0


@dataclass(slots=True)
class ViewBatch:
    """Rendered views, one entry per camera, only for the requested modalities.

    Attributes
    ----------
    arrays : dict Modality -> (N, H, W) array
        ``depth`` float32 z-depth metres (sky = ``SKY_DEPTH_M``), ``silhouette`` uint8 {0, 1},
        ``semantic`` uint8 LandCover ids (sky = ``SKY_CLASS``).
    render_time_s : (N,) float32
        Wall time per view (batch time divided evenly when rendered together).
    """

    arrays: dict[Modality, np.ndarray] = field(default_factory=dict)
    render_time_s: npt.NDArray[np.float32] = field(default_factory=lambda: np.zeros(0, np.float32))

    def __len__(self) -> int:
        return int(self.render_time_s.shape[0])


class RenderBackend(ABC):
    """Base class of render backends. Use ``with open_backend(cfg) as backend: ...``."""

    #: Registry name.
    name: str = "base"
    #: Whether :meth:`prepare` accepts a :class:`~crosslocate.render.atlas.TerrainAtlas` (cameras then
    #: carry their own curvature, :class:`FrameCamera`).
    supports_atlas: bool = False
    #: A :class:`~crosslocate.render.terrain.LocalTerrain` is reused for positions up to this far (metres,
    #: horizontal) from its origin: the backend renders cameras anywhere in it exactly, taking the
    #: refraction lift relative to each camera (0: a terrain per position).
    terrain_reuse_m: float = 0.0
    #: Modalities :meth:`render` produces (each backend has a renderer per modality; a request for
    #: another one is refused by :meth:`requested`).
    rendered_modalities: tuple[Modality, ...] = ()

    def __init__(self, config: RenderConfig) -> None:
        self.config = config

    def requested(self, modalities: tuple[Modality | str, ...]) -> tuple[Modality, ...]:
        """The modalities of a :meth:`render` call, parsed; :class:`RenderError` when none is given
        or this backend has no renderer for one of them."""
        mods = tuple(parse_modality(m) for m in modalities)
        if not mods:
            raise RenderError("no modality requested")
        other = [m.value for m in mods if m not in self.rendered_modalities]
        if other:
            have = ", ".join(m.value for m in self.rendered_modalities)
            raise RenderError(f"the {self.name} backend does not render {', '.join(other)} (it renders {have})")
        return mods

    @abstractmethod
    def prepare(self, terrain: LocalTerrain) -> None:
        """Load a terrain (build meshes / pyramids); later :meth:`render` calls use it."""

    @abstractmethod
    def render(self, cameras: list[FrameCamera], modalities: tuple[Modality, ...]) -> ViewBatch:
        """Render the cameras of the prepared terrain."""

    def set_threads(self, n: int) -> None:  # noqa: B027 - optional hook, default: not threaded
        """Use ``n`` CPU threads for rendering from the calling thread on (``0``: the backend's default)."""

    def close(self) -> None:  # noqa: B027 - optional hook, default: nothing to free
        """Release GL contexts / buffers. Idempotent."""

    def __enter__(self) -> RenderBackend:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
