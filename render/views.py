"""Render views of a DEM for camera poses: one backend, silhouettes from depth.

:class:`ViewRenderer` opens the backend once (``open_backend(cfg)``) and groups the poses of a call by
position (same lon/lat/alt: the 12 yaws of a database position are rendered together). Terrain
comes from one of two sources:

* **atlases** (given to the renderer, ``cpu`` backend): the region's terrain prepared once
  (:mod:`crosslocate.render.atlas`); each position costs a pyproj metric (a fraction of a
  millisecond) and no resampling. Database builds use this.
* otherwise **a pyramid per position** (:func:`crosslocate.render.terrain.build_terrain`, the exact
  reference; the last one is cached, so consecutive calls for one position build it once).

:func:`render_views` is the one-shot form.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Self

import numpy as np

from crosslocate.datasets.schema import modality_spec, parse_modalities
from crosslocate.errors import RenderError
from crosslocate.render.atlas import TerrainAtlas, atlas_camera, camera_height, camera_metric, near_patch
from crosslocate.render.backends import open_backend
from crosslocate.render.backends.base import FrameCamera, RenderBackend, ViewBatch
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


#: Height above the DEM (metres) a camera needs to be rendered from a neighbour's terrain
#: (:meth:`ViewRenderer.terrain`); database cameras stand 10 m up, query photos 1.7 m.
REUSE_MIN_CLEARANCE_M: float = 5.0


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
    atlases : sequence of TerrainAtlas, optional
        The region's prepared terrain (module docstring); used when the backend supports it
        (``RenderBackend.supports_atlas``), each position rendered from the atlas whose camera box
        holds it. A position outside all of them raises :class:`RenderError`.
    """

    def __init__(
        self,
        dem: DEM,
        cfg: RenderConfig,
        backend: RenderBackend | None = None,
        atlases: Sequence[TerrainAtlas] = (),
    ) -> None:
        self.dem = dem
        self.cfg = cfg
        self._own_backend = backend is None
        self.backend: RenderBackend | None = open_backend(cfg) if backend is None else backend
        self._terrain: LocalTerrain | None = None
        self._prepared: LocalTerrain | TerrainAtlas | None = None
        self.atlases: tuple[TerrainAtlas, ...] = tuple(atlases) if self.backend.supports_atlas else ()
        if atlases and not self.atlases:
            logger.info("the %s backend renders a terrain pyramid per position (no atlas support)", cfg.backend)
        self.terrain_build_s: list[float] = []
        #: Build times of the near patches of positions rendered from a neighbour's pyramid.
        self.near_patch_build_s: list[float] = []
        #: Seconds the last :meth:`render` call spent on terrain setup (atlas cameras and near patches,
        #: or per-position pyramids), summed over its positions.
        self.last_setup_s = 0.0

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

    def terrain(self, lon: float, lat: float, alt_m: float | None = None) -> LocalTerrain:
        """The terrain around ``(lon, lat)``; raises ``OutsideCoverageError``.

        The last one is kept and reused while positions stay within the backend's
        ``terrain_reuse_m`` of its origin (0: only for the same position), so neighbouring positions
        share one pyramid (and a mesh-based backend's meshes); only for cameras (``alt_m``) at least
        :data:`REUSE_MIN_CLEARANCE_M` above the DEM, since away from its origin the triangulated
        surface may differ from the DEM's bilinear height by a few metres (a camera 1.7 m above a
        steep slope gets a pyramid of its own, with a node under it).
        """
        t = self._terrain
        # sharing needs a backend that draws each position's own near patch (render_near)
        reuse_m = float(getattr(self.backend, "terrain_reuse_m", 0.0)) if hasattr(self.backend, "render_near") else 0.0
        if t is not None and reuse_m > 0.0 and alt_m is not None and (t.lon0, t.lat0) != (float(lon), float(lat)):
            x, y, _ = t.to_frame(lon, lat, 0.0)
            ground = float(self.dem.sample([lon], [lat])[0])
            if math.hypot(float(x), float(y)) <= reuse_m and alt_m - ground >= REUSE_MIN_CLEARANCE_M:
                return t
        if t is None or (t.lon0, t.lat0) != (float(lon), float(lat)):
            t = build_terrain(self.dem, lon, lat, self.cfg, lod_cells=self.cfg.lod_cells)
            self.terrain_build_s.append(t.build_time_s)
            self._terrain = t
        return t

    def _near_patch(
        self, lon: float, lat: float, poses: Sequence[Pose], size: int
    ) -> tuple[LocalTerrain, list[FrameCamera]]:
        """The position's own finest level within ``cfg.near_patch_cells`` DEM cells and the cameras in
        its frame, for a position rendered from a neighbour's pyramid (:meth:`terrain`): near the
        camera, the neighbour's nodes sample the DEM elsewhere, which is another surface."""
        import dataclasses

        reach = max(1, int(self.cfg.near_patch_cells)) * float(self.dem.resolution_m)
        cfg = dataclasses.replace(self.cfg, range_m=min(reach, float(self.cfg.range_m)))
        patch = build_terrain(self.dem, lon, lat, cfg, lod_cells=self.cfg.lod_cells)
        self.near_patch_build_s.append(patch.build_time_s)
        return patch, [frame_camera(patch, p, size) for p in poses]

    def _atlas_cameras(
        self, lon: float, lat: float, alt: float, poses: Sequence[Pose], size: int
    ) -> tuple[TerrainAtlas, list[FrameCamera]]:
        """The atlas serving ``(lon, lat)`` and the cameras of ``poses`` in its frame."""
        for atlas in self.atlases:
            metric = camera_metric(atlas.spec, lon, lat, self.cfg.refraction_k)
            if bool(atlas.spec.contains(metric.xy[0], metric.xy[1])):
                z = camera_height(atlas, self.dem, metric, lon, lat, alt)
                cells = self.cfg.near_patch_cells
                patch = (
                    near_patch(self.dem, lon, lat, cells, atlas.spec.spacing_m, self.cfg.refraction_k)
                    if cells
                    else None
                )
                return atlas, [atlas_camera(atlas, p, size, metric, z, patch) for p in poses]
        raise RenderError(
            f"position lon={lon:.6f}, lat={lat:.6f} lies outside every terrain atlas of this renderer "
            f"({len(self.atlases)}); plan the atlases from all positions to render (render.atlas.plan_atlas)"
        )

    def render(self, poses: Sequence[Pose], modalities: Sequence[str] | None = None) -> ViewBatch:
        """Render ``poses`` (any mix of positions), in input order.

        Parameters
        ----------
        poses : sequence of Pose
            Cameras; ``fov_deg`` per pose, image size ``cfg.size_px`` (square).
        modalities : sequence of str, optional
            Default ``cfg.modalities``; unknown names raise :class:`ConfigError`.

        Returns
        -------
        ViewBatch
            ``depth`` (N, H, W) float32 z-depth metres along the optical axis (sky ``SKY_DEPTH_M``),
            ``silhouette`` (N, H, W) uint8 {0, 1} (from depth by the backend, bit for bit
            :func:`~crosslocate.datasets.derived.silhouette_from_depth` with ``cfg.silhouette_rel_jump``), ``semantic`` (N, H, W) uint8 LandCover ids (sky
            ``SKY_CLASS``); ``render_time_s`` (N,) float32 includes each position's terrain build
            time shared evenly among its views.

        Raises
        ------
        OutsideCoverageError
            A position without DEM data (the message names the coordinate).
        ConfigError
            Unknown modality (:func:`~crosslocate.datasets.schema.parse_modalities`).
        RenderError
            Closed renderer, a modality the backend does not render, bad FOV or size.
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
        groups = group_by_position(poses)
        arrays = {m: np.empty((n, size, size), modality_spec(m).dtype) for m in mods} if len(groups) > 1 else {}
        times = np.zeros(n, np.float32)
        self.last_setup_s = 0.0
        for (lon, lat, alt), idx in groups.items():
            t0 = time.perf_counter()
            if self.atlases:
                terrain, cams = self._atlas_cameras(lon, lat, alt, [poses[i] for i in idx], size)
            else:
                terrain = self.terrain(lon, lat, alt)
                cams = [frame_camera(terrain, poses[i], size) for i in idx]
            if self._prepared is not terrain:
                self.backend.prepare(terrain)
                self._prepared = terrain
            near = None
            if not self.atlases and (terrain.lon0, terrain.lat0) != (float(lon), float(lat)):
                near = self._near_patch(lon, lat, [poses[i] for i in idx], size)
            setup_s = time.perf_counter() - t0
            self.last_setup_s += setup_s
            if near is None:
                batch = self.backend.render(cams, tuple(mods))
            else:
                batch = self.backend.render_near(cams, tuple(mods), *near)
            sel = np.asarray(idx)
            for m in mods:
                if len(groups) > 1:
                    arrays[m][sel] = batch.arrays[m]
                else:  # one position in input order: the backend's arrays as they are
                    arrays[m] = batch.arrays[m]
            times[sel] = batch.render_time_s + np.float32(setup_s / len(idx))
        return ViewBatch(arrays, times)


def render_views(dem: DEM, poses: Sequence[Pose], cfg: RenderConfig, backend: RenderBackend | None = None) -> ViewBatch:
    """Render ``poses`` of ``dem`` with ``cfg`` (see :meth:`ViewRenderer.render`).

    ``backend``: an open backend to reuse (left open); default: open ``cfg.backend`` for this call.
    """
    with ViewRenderer(dem, cfg, backend) as renderer:
        return renderer.render(poses)
