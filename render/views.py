"""Render views of a DEM for camera poses: terrain per position, one backend, silhouettes from depth.

:class:`ViewRenderer` opens the backend once (``open_backend(cfg)``), groups the poses of a call by
position (same lon/lat/alt: the 12 yaws of a database position share one terrain) and caches the
terrain of the last origin, so consecutive calls for the same position build it once.
:func:`render_views` is the one-shot form.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import numpy as np

from crosslocate.datasets.derived import silhouette_from_depth
from crosslocate.datasets.schema import MODALITY_DTYPES, Modality, parse_modalities
from crosslocate.errors import RenderError
from crosslocate.render.backends import open_backend
from crosslocate.render.backends.base import RenderBackend, ViewBatch
from crosslocate.render.camera import validate_camera
from crosslocate.render.terrain import LocalTerrain, build_terrain, frame_camera

if TYPE_CHECKING:
    from crosslocate.dem.mosaic import DEM
    from crosslocate.dem.poses import Pose
    from crosslocate.render.config import RenderConfig

logger = logging.getLogger(__name__)


def group_by_position(poses: Sequence[Pose]) -> dict[tuple[float, float, float], list[int]]:
    """Indices of ``poses`` grouped by ``(lon, lat, alt_m)``, groups in order of first appearance."""
    groups: dict[tuple[float, float, float], list[int]] = {}
    for i, p in enumerate(poses):
        groups.setdefault((float(p.lon), float(p.lat), float(p.alt_m)), []).append(i)
    return groups


class ViewRenderer:
    """Renders poses of one DEM with one backend (context manager; ``close()`` frees the backend).

    Parameters
    ----------
    dem : DEM
        Elevation + land cover source.
    cfg : RenderConfig
        Size, range, refraction, backend, modalities, silhouette threshold.
    backend : RenderBackend, optional
        An open backend to use (not closed by this renderer); default ``open_backend(cfg)``.
    """

    def __init__(self, dem: DEM, cfg: RenderConfig, backend: RenderBackend | None = None) -> None:
        self.dem = dem
        self.cfg = cfg
        self._own_backend = backend is None
        self.backend: RenderBackend | None = open_backend(cfg) if backend is None else backend
        self._terrain: LocalTerrain | None = None
        self._prepared: LocalTerrain | None = None
        self.terrain_build_s: list[float] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the backend if this renderer opened it. Idempotent."""
        if self.backend is not None and self._own_backend:
            self.backend.close()
        self.backend = None
        self._terrain = self._prepared = None

    def terrain(self, lon: float, lat: float) -> LocalTerrain:
        """The terrain around ``(lon, lat)`` (the last one is cached); raises ``OutsideCoverageError``."""
        t = self._terrain
        if t is None or (t.lon0, t.lat0) != (float(lon), float(lat)):
            t = build_terrain(self.dem, lon, lat, self.cfg, lod_cells=self.cfg.lod_cells)
            self.terrain_build_s.append(t.build_time_s)
            self._terrain = t
        return t

    def render(self, poses: Sequence[Pose], modalities: Sequence[str] | None = None) -> ViewBatch:
        """Render ``poses`` (any mix of positions), in input order.

        Parameters
        ----------
        poses : sequence of Pose
            Cameras; ``fov_deg`` per pose, image size ``cfg.size_px`` (square).
        modalities : sequence of str, optional
            Default ``cfg.modalities``; unknown names raise :class:`RenderError`.

        Returns
        -------
        ViewBatch
            ``depth`` (N, H, W) float32 z-depth metres along the optical axis (sky ``SKY_DEPTH_M``),
            ``silhouette`` (N, H, W) uint8 {0, 1} (from depth, :func:`silhouette_from_depth` with
            ``cfg.silhouette_rel_jump``), ``semantic`` (N, H, W) uint8 LandCover ids (sky
            ``SKY_CLASS``); ``render_time_s`` (N,) float32 includes each position's terrain build
            time shared evenly among its views.

        Raises
        ------
        OutsideCoverageError
            A position without DEM data (the message names the coordinate).
        RenderError
            Closed renderer, unknown modality, bad FOV or size.
        """
        if self.backend is None:
            raise RenderError("ViewRenderer is closed; open a new one")
        mods = self.cfg.modalities if modalities is None else parse_modalities(tuple(modalities))
        if not mods:
            raise RenderError("no modality requested")
        size = self.cfg.size_px
        for p in poses:
            validate_camera(p.fov_deg, size, size)
        n = len(poses)
        arrays = {m: np.empty((n, size, size), MODALITY_DTYPES[m]) for m in mods}
        times = np.zeros(n, np.float32)
        need: list[Modality] = []
        if Modality.DEPTH in mods or Modality.SILHOUETTE in mods:
            need.append(Modality.DEPTH)
        if Modality.SEMANTIC in mods:
            need.append(Modality.SEMANTIC)
        for (lon, lat, _alt), idx in group_by_position(poses).items():
            t0 = time.perf_counter()
            terrain = self.terrain(lon, lat)
            if self._prepared is not terrain:
                self.backend.prepare(terrain)
                self._prepared = terrain
            setup_s = time.perf_counter() - t0
            cams = [frame_camera(terrain, poses[i], size) for i in idx]
            batch = self.backend.render(cams, tuple(need))
            sel = np.asarray(idx)
            if Modality.DEPTH in batch.arrays:
                depth = batch.arrays[Modality.DEPTH]
                if Modality.DEPTH in arrays:
                    arrays[Modality.DEPTH][sel] = depth
                if Modality.SILHOUETTE in arrays:
                    arrays[Modality.SILHOUETTE][sel] = silhouette_from_depth(depth, self.cfg.silhouette_rel_jump)
            if Modality.SEMANTIC in arrays:
                arrays[Modality.SEMANTIC][sel] = batch.arrays[Modality.SEMANTIC]
            times[sel] = batch.render_time_s + np.float32(setup_s / len(idx))
        return ViewBatch(arrays, times)


def render_views(dem: DEM, poses: Sequence[Pose], cfg: RenderConfig, backend: RenderBackend | None = None) -> ViewBatch:
    """Render ``poses`` of ``dem`` with ``cfg`` (see :meth:`ViewRenderer.render`).

    ``backend``: an open backend to reuse (left open); default: open ``cfg.backend`` for this call.
    """
    with ViewRenderer(dem, cfg, backend) as renderer:
        return renderer.render(poses)
