"""Heightfield -> one crack-free triangle mesh with distance-based level of detail (pyrender path).

The terrain pyramid (``LocalTerrain.levels``: level 0 finest, each level a regular heightfield in the
terrain's local ENU frame) is cut into square tiles by a quadtree around the *focus* (the bounding
box of the cameras of one block). Every tile is meshed at the level chosen from its distance to the
focus. By default that is the pyramid's own schedule, level ``L`` up to
``levels[L].max_distance_m`` (:class:`~crosslocate.render.terrain.TerrainLevel`), which is exactly
the surface the ``cpu`` backend casts rays against; with ``lod_base_m`` (or for levels without
``max_distance_m``) level 0 is used up to ``lod_base_m`` and level ``L`` up to ``lod_base_m * 2**L``.
Tiles that straddle a level boundary are split down to ``MIN_TILE_CELLS`` cells and take the level of
their centre, so the mesh changes level within a couple of cells of the boundary circle. A tile only
uses a level whose node lattice covers it (else the next coarser one), and the mesh covers the union
of the levels' extents (the coarsest level reaches the render range). One mesh serves every camera of
the block (prepare once, render many).

Cells are split into two triangles along their south-west / north-east diagonal.

Crack-freeness, in two layers:

1. **Stitched borders.** Tiles are meshed coarsest level first. Where a tile borders a coarser tile,
   it takes over the coarser tile's border vertices (extra columns/rows) and snaps its own border
   heights onto the coarser tile's border polyline, so both borders are the same polyline.
   Equal-level borders coincide by construction (bilinear interpolation is linear along a line).
   Left over: short segments next to a tile corner where neighbours of different levels meet.
2. **Skirts** close those (and T-junction rasterisation drop-outs). Every tile border hangs a
   vertical skirt down to ``SKIRT_MARGIN_M`` below the lowest point of the tile *and its
   neighbours*; where two borders differ, the higher border's skirt therefore reaches below the
   lower border and the gap is closed. For a camera above a continuous heightfield a skirt is
   hidden behind the surface (a sight line reaching below the surface must cross it first).

Frames and units: vertex ``x`` east, ``y`` north, ``z`` up, metres, in the terrain frame (curvature
and refraction already applied by :mod:`crosslocate.render.terrain`). Grid convention of a level:
node ``[r, c]`` is at ``(x0 + c * spacing_m, y0 - r * spacing_m)`` (row 0 is north).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from crosslocate.errors import RenderError

if TYPE_CHECKING:
    import trimesh

logger = logging.getLogger(__name__)

#: Default number of cells along a tile side (a tile at level L spans at most this many L-cells).
DEFAULT_TILE_CELLS: int = 32
#: Default level-0 radius in level-0 cells: ``lod_base_m = DEFAULT_LOD_BASE_CELLS * spacing_0``.
DEFAULT_LOD_BASE_CELLS: float = 64.0
#: Tiles straddling a level boundary are split down to this many cells of their level per side.
MIN_TILE_CELLS: int = 4
#: Skirts end this far (m) below the lowest point of their tile and its neighbours.
SKIRT_MARGIN_M: float = 10.0
#: Skirt vertices are marked with this level in :attr:`TerrainMesh.vertex_level`.
SKIRT_LEVEL: int = -1


class HeightLevel(Protocol):
    """What the mesher needs from one pyramid level (``LocalTerrain.levels[i]`` fits).

    ``z`` : (ny, nx) float32 metres up; ``cls`` : (ny, nx) uint8 LandCover ids; ``x0``, ``y0`` :
    east/north (m) of node [0, 0]; ``spacing_m`` : node spacing (m).
    """

    z: npt.NDArray[np.float32]
    cls: npt.NDArray[np.uint8]
    x0: float
    y0: float
    spacing_m: float


@dataclass(frozen=True, slots=True)
class GridLevel:
    """A plain :class:`HeightLevel` (tests and callers without a ``LocalTerrain``)."""

    z: npt.NDArray[np.float32]
    cls: npt.NDArray[np.uint8]
    x0: float
    y0: float
    spacing_m: float


@dataclass(frozen=True, slots=True)
class TerrainMesh:
    """An LOD terrain mesh; faces are grouped by tile (surface faces, then that tile's skirt).

    Attributes
    ----------
    vertices : (N, 3) float32
        Terrain-frame ENU metres.
    faces : (M, 3) uint32
        Vertex indices; winding is not consistent (render without back-face culling).
    cls : (N,) uint8
        LandCover id per vertex (nearest node of the tile's level; skirts copy their top vertex).
    vertex_level : (N,) int8
        Pyramid level of the vertex's tile; :data:`SKIRT_LEVEL` (-1) for skirt vertices.
    vertex_tile : (N,) int32
        Tile index of every vertex.
    tile_bounds : (T, 4) float64
        ``(xmin, ymin, xmax, ymax)`` of each tile, metres.
    tile_zrange : (T, 2) float64
        ``(zmin, zmax)`` of each tile including its skirt, metres (for frustum culling).
    tile_level : (T,) int8
        Pyramid level of each tile.
    tile_face_start : (T + 1,) int64
        Faces of tile ``t`` are ``faces[tile_face_start[t]:tile_face_start[t + 1]]``.
    tile_surface_faces : (T,) int64
        Number of surface (non-skirt) faces at the start of each tile's range.
    """

    vertices: npt.NDArray[np.float32]
    faces: npt.NDArray[np.uint32]
    cls: npt.NDArray[np.uint8]
    vertex_level: npt.NDArray[np.int8]
    vertex_tile: npt.NDArray[np.int32]
    tile_bounds: npt.NDArray[np.float64]
    tile_zrange: npt.NDArray[np.float64]
    tile_level: npt.NDArray[np.int8]
    tile_face_start: npt.NDArray[np.int64]
    tile_surface_faces: npt.NDArray[np.int64]

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def surface_face_mask(self) -> npt.NDArray[np.bool_]:
        """(M,) bool, True for terrain-surface faces, False for skirt faces."""
        mask = np.zeros(self.n_faces, dtype=bool)
        for t in range(self.tile_level.shape[0]):
            s = int(self.tile_face_start[t])
            mask[s : s + int(self.tile_surface_faces[t])] = True
        return mask

    def to_trimesh(self) -> trimesh.Trimesh:
        """The mesh as a ``trimesh.Trimesh`` (no processing/merging); class ids in ``vertex_attributes``."""
        import trimesh

        mesh = trimesh.Trimesh(vertices=self.vertices, faces=self.faces, process=False)
        mesh.vertex_attributes["cls"] = self.cls
        return mesh


# --------------------------------------------------------------------------------------------- levels


def _check_levels(levels: Sequence[HeightLevel]) -> None:
    if len(levels) == 0:
        raise RenderError("terrain has no heightfield levels; build it with render.terrain.build_terrain")
    for i, lv in enumerate(levels):
        z = np.asarray(lv.z)
        if z.ndim != 2 or min(z.shape) < 2:
            raise RenderError(f"terrain level {i}: z must be a 2-D grid of at least 2x2 nodes, got shape {z.shape}")
        if np.asarray(lv.cls).shape != z.shape:
            raise RenderError(f"terrain level {i}: cls shape {np.asarray(lv.cls).shape} != z shape {z.shape}")
        if not (math.isfinite(lv.spacing_m) and lv.spacing_m > 0.0):
            raise RenderError(f"terrain level {i}: spacing_m must be positive, got {lv.spacing_m}")
        if not np.isfinite(z).all():
            raise RenderError(f"terrain level {i}: z has {int((~np.isfinite(z)).sum())} non-finite heights; fill voids")


def level_extent(level: HeightLevel) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a level's node lattice, metres."""
    ny, nx = np.asarray(level.z).shape
    s = float(level.spacing_m)
    return (float(level.x0), float(level.y0) - (ny - 1) * s, float(level.x0) + (nx - 1) * s, float(level.y0))


def sample_level(
    level: HeightLevel, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.uint8]]:
    """Height of the level's triangulated surface (float64 m) and nearest-node class (uint8) at points.

    Cell ``(r, c)`` is split along its south-west / north-east diagonal (``wc + wr = 1`` in fractional
    indices, rows counted southward), the triangulation of :func:`_grid_faces` and of the ``cpu``
    backend, so vertices inserted between nodes (tile borders, a coarser neighbour's border vertices)
    lie on the very surface the caster sees. Exact at nodes. Points outside are clamped onto the lattice.
    """
    z = np.asarray(level.z)
    ny, nx = z.shape
    s = float(level.spacing_m)
    fc = np.clip((np.asarray(x, np.float64) - level.x0) / s, 0.0, nx - 1.0)
    fr = np.clip((level.y0 - np.asarray(y, np.float64)) / s, 0.0, ny - 1.0)
    c0 = np.minimum(np.floor(fc).astype(np.int64), nx - 2)
    r0 = np.minimum(np.floor(fr).astype(np.int64), ny - 2)
    wc = fc - c0
    wr = fr - r0
    z00, z01 = z[r0, c0].astype(np.float64), z[r0, c0 + 1].astype(np.float64)
    z10, z11 = z[r0 + 1, c0].astype(np.float64), z[r0 + 1, c0 + 1].astype(np.float64)
    upper = wc + wr <= 1.0  # the triangle holding the north-west node
    h = np.where(
        upper,
        z00 + wc * (z01 - z00) + wr * (z10 - z00),
        z11 + (1.0 - wc) * (z10 - z11) + (1.0 - wr) * (z01 - z11),
    )
    cls = np.asarray(level.cls)[np.rint(fr).astype(np.int64), np.rint(fc).astype(np.int64)]
    return h, cls.astype(np.uint8)


def _nodes_between(origin: float, spacing: float, lo: float, hi: float, descending: bool) -> npt.NDArray[np.float64]:
    """Node coordinates strictly inside (lo, hi); ``descending`` for the north-origin y axis."""
    if descending:  # y = origin - k * spacing
        k = np.arange(math.floor((origin - hi) / spacing), math.ceil((origin - lo) / spacing) + 1)
        v = origin - k * spacing
    else:
        k = np.arange(math.floor((lo - origin) / spacing), math.ceil((hi - origin) / spacing) + 1)
        v = origin + k * spacing
    tol = 1e-9 * max(1.0, abs(hi) + abs(lo))
    return np.sort(v[(v > lo + tol) & (v < hi - tol)])


def lod_level(distance_m: npt.ArrayLike, lod_base_m: float, n_levels: int) -> npt.NDArray[np.int64]:
    """Pyramid level for a horizontal distance from the focus: 0 below ``lod_base_m``, +1 per doubling."""
    d = np.asarray(distance_m, dtype=np.float64)
    with np.errstate(divide="ignore"):
        lvl = np.where(d < lod_base_m, 0, np.floor(np.log2(np.maximum(d, lod_base_m) / lod_base_m)) + 1)
    return np.clip(lvl, 0, n_levels - 1).astype(np.int64)


def lod_level_by_distances(distance_m: npt.ArrayLike, level_distances_m: Sequence[float]) -> npt.NDArray[np.int64]:
    """Pyramid level for a horizontal distance: the first ``L`` with ``distance < level_distances_m[L]``.

    Distances beyond the last entry get the last level.
    """
    d = np.asarray(distance_m, dtype=np.float64)
    edges = np.asarray(level_distances_m, dtype=np.float64)
    return np.minimum(np.searchsorted(edges, d, side="right"), edges.size - 1).astype(np.int64)


# --------------------------------------------------------------------------------------------- quadtree


@dataclass(frozen=True, slots=True)
class _Tile:
    ix0: int  # integer bounds in quadtree units
    iy0: int
    ix1: int
    iy1: int
    level: int


def _rect_distance(b: npt.NDArray[np.float64], focus: tuple[float, float, float, float]) -> npt.NDArray[np.float64]:
    """Distance from rectangles (K, 4) to the focus rectangle (0 when they overlap)."""
    dx = np.maximum(0.0, np.maximum(focus[0] - b[..., 2], b[..., 0] - focus[2]))
    dy = np.maximum(0.0, np.maximum(focus[1] - b[..., 3], b[..., 1] - focus[3]))
    return np.hypot(dx, dy)


def _rect_far_distance(b: npt.NDArray[np.float64], focus: tuple[float, float, float, float]) -> float:
    """Largest distance from a point of the rectangle ``b`` to the focus rectangle (the nearer of its points)."""
    best = 0.0
    for x in (b[0], b[2]):
        for y in (b[1], b[3]):
            dx = max(0.0, focus[0] - x, x - focus[2])
            dy = max(0.0, focus[1] - y, y - focus[3])
            best = max(best, math.hypot(dx, dy))
    return best


def _aligned_root(levels: Sequence[HeightLevel], xmin: float, ymin: float, size: float) -> tuple[float, float, float]:
    """A quadtree root square covering ``[xmin, xmin + size] x [ymin, ymin + size]`` whose lines fall on nodes.

    The corner snaps down onto the lattice of the coarsest level ``c`` such that levels ``0..c`` are
    nested (each level's nodes lie on the node lines of level 0, spacings doubling), and the side is
    ``spacing_0 * 2**k``; every quadtree line is then a node line of level 0, and tile borders of
    levels ``<= c`` fall on their own node lines (fewer split cells). ``LocalTerrain`` pyramids are
    not nested beyond level 0 (coarser nodes are centres of finer 2x2 blocks), so there ``c = 0``.
    """
    s0 = float(levels[0].spacing_m)
    c = 0
    for k in range(1, len(levels)):
        sk = float(levels[k].spacing_m)
        ratio = sk / s0
        nested = abs(ratio - 2.0**k) < 1e-9 * ratio
        for a, b in ((levels[k].x0, levels[0].x0), (levels[k].y0, levels[0].y0)):
            q = (float(a) - float(b)) / s0
            nested = nested and abs(q - round(q)) < 1e-6
        if not nested:
            break
        c = k
    sc = float(levels[c].spacing_m)
    x = float(levels[c].x0) + math.floor((xmin - float(levels[c].x0)) / sc) * sc
    y0_c = float(levels[c].y0)
    y = y0_c - math.ceil((y0_c - ymin) / sc) * sc
    need = max(xmin + size - x, ymin + size - y)
    side = s0 * 2.0 ** max(0, math.ceil(math.log2(max(need / s0, 1.0))))
    return x, y, side


def _quadtree_tiles(
    root: tuple[float, float, float],
    focus: tuple[float, float, float, float],
    spacings: Sequence[float],
    level_of: Callable[[float], int],
    tile_cells: int,
    range_m: float,
) -> tuple[list[_Tile], float]:
    """Leaves of a quadtree over the square ``root = (xmin, ymin, size)``; returns (tiles, unit_m).

    ``level_of(d)`` is the LOD level at distance ``d`` from the focus. A node is split while it spans
    more than ``tile_cells`` cells of the level of its nearest point, or while it straddles a level
    boundary and spans more than ``MIN_TILE_CELLS`` cells; a straddling leaf takes its centre's level.
    """
    xmin, ymin, size = root
    min_cells = min(MIN_TILE_CELLS, tile_cells)
    depth = max(0, math.ceil(math.log2(max(size / (min_cells * spacings[0]), 1.0))))
    unit = size / 2**depth
    out: list[_Tile] = []
    stack = [(0, 0, 2**depth)]
    while stack:
        ix, iy, n = stack.pop()
        b = np.array([xmin + ix * unit, ymin + iy * unit, xmin + (ix + n) * unit, ymin + (iy + n) * unit])
        d = float(_rect_distance(b, focus))
        if d > range_m:
            continue  # never within range of any camera of the block
        lvl = level_of(d)
        far = level_of(_rect_far_distance(b, focus))
        split = n * unit > tile_cells * spacings[lvl] * (1 + 1e-9)
        if far != lvl and n * unit > min_cells * spacings[lvl] * (1 + 1e-9):
            split = True
        if n > 1 and split:
            h = n // 2
            stack.extend([(ix, iy, h), (ix + h, iy, h), (ix, iy + h, h), (ix + h, iy + h, h)])
            continue
        if far != lvl:
            c = 0.5 * (b[:2] + b[2:])
            lvl = level_of(float(_rect_distance(np.array([c[0], c[1], c[0], c[1]]), focus)))
        out.append(_Tile(ix, iy, ix + n, iy + n, lvl))
    return out, unit


def _neighbours(tiles: list[_Tile]) -> list[dict[str, list[int]]]:
    """For each tile, the indices of tiles touching each side (``w``, ``e``, ``s``, ``n``)."""
    a = np.array([[t.ix0, t.iy0, t.ix1, t.iy1] for t in tiles], dtype=np.int64)
    out: list[dict[str, list[int]]] = []
    for t in tiles:
        ovx = (np.minimum(a[:, 2], t.ix1) - np.maximum(a[:, 0], t.ix0)) > 0
        ovy = (np.minimum(a[:, 3], t.iy1) - np.maximum(a[:, 1], t.iy0)) > 0
        out.append(
            {
                "w": np.flatnonzero((a[:, 2] == t.ix0) & ovy).tolist(),
                "e": np.flatnonzero((a[:, 0] == t.ix1) & ovy).tolist(),
                "s": np.flatnonzero((a[:, 3] == t.iy0) & ovx).tolist(),
                "n": np.flatnonzero((a[:, 1] == t.iy1) & ovx).tolist(),
            }
        )
    return out


# --------------------------------------------------------------------------------------------- meshing


@dataclass(slots=True)
class _TileGrid:
    bounds: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax (m)
    level: int
    xs: npt.NDArray[np.float64]  # (nx,) ascending east
    ys: npt.NDArray[np.float64]  # (ny,) ascending north
    z: npt.NDArray[np.float64]  # (ny, nx) heights, row i at ys[i]
    cls: npt.NDArray[np.uint8]  # (ny, nx)


def _tile_axes(
    b: tuple[float, float, float, float], lv: HeightLevel, coarser: dict[str, list[_TileGrid]]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vertex columns/rows of a tile: its bounds, its level's nodes, and its coarser neighbours' border vertices."""
    s = float(lv.spacing_m)
    xs = [np.array([b[0], b[2]]), _nodes_between(float(lv.x0), s, b[0], b[2], descending=False)]
    ys = [np.array([b[1], b[3]]), _nodes_between(float(lv.y0), s, b[1], b[3], descending=True)]
    for nb in coarser["s"] + coarser["n"]:
        xs.append(nb.xs[(nb.xs > b[0]) & (nb.xs < b[2])])
    for nb in coarser["w"] + coarser["e"]:
        ys.append(nb.ys[(nb.ys > b[1]) & (nb.ys < b[3])])
    return _unique_sorted(np.concatenate(xs)), _unique_sorted(np.concatenate(ys))


def _unique_sorted(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Sorted values with near-duplicates (closer than 1 mm) merged, keeping the first."""
    v = np.sort(v)
    keep = np.concatenate([[True], np.diff(v) > 1e-3])
    return v[keep]


def _stitch(tile: _TileGrid, coarser: dict[str, list[_TileGrid]]) -> None:
    """Snap the tile's border heights onto the border polylines of its coarser neighbours (in place)."""
    xs, ys, z = tile.xs, tile.ys, tile.z
    for side, nbs in coarser.items():
        for nb in nbs:
            if side in ("s", "n"):
                sel = (xs >= nb.bounds[0] - 1e-6) & (xs <= nb.bounds[2] + 1e-6)
                row, nb_row = (0, -1) if side == "s" else (-1, 0)
                z[row, sel] = np.interp(xs[sel], nb.xs, nb.z[nb_row, :])
            else:
                sel = (ys >= nb.bounds[1] - 1e-6) & (ys <= nb.bounds[3] + 1e-6)
                col, nb_col = (0, -1) if side == "w" else (-1, 0)
                z[sel, col] = np.interp(ys[sel], nb.ys, nb.z[:, nb_col])


def _grid_faces(ny: int, nx: int) -> npt.NDArray[np.int64]:
    """(2 (ny-1)(nx-1), 3) faces of a regular vertex grid indexed ``row * nx + col``."""
    idx = np.arange(ny * nx, dtype=np.int64).reshape(ny, nx)
    a, b = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel()
    c, d = idx[1:, :-1].ravel(), idx[1:, 1:].ravel()
    return np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def _boundary_loop(ny: int, nx: int) -> npt.NDArray[np.int64]:
    """Grid indices around the border, closed (first index repeated at the end)."""
    idx = np.arange(ny * nx, dtype=np.int64).reshape(ny, nx)
    loop = np.concatenate([idx[0, :], idx[1:, -1], idx[-1, -2::-1], idx[-2:0:-1, 0]])
    return np.concatenate([loop, loop[:1]])


def _tile_arrays(
    tile: _TileGrid, bottom: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64], npt.NDArray[np.uint8], int]:
    """Vertices (V, 3), faces (F, 3), cls (V,) and the number of surface vertices; skirts reach ``bottom``."""
    ny, nx = tile.z.shape
    gx, gy = np.meshgrid(tile.xs, tile.ys)
    surf = np.stack([gx.ravel(), gy.ravel(), tile.z.ravel()], axis=1)
    loop = _boundary_loop(ny, nx)
    ring = loop[:-1]
    skirt = surf[ring].copy()
    skirt[:, 2] = bottom
    n = ny * nx
    top0, top1 = loop[:-1], loop[1:]
    k = np.arange(ring.shape[0])
    bot0, bot1 = n + k, n + (k + 1) % ring.shape[0]
    skirt_faces = np.concatenate([np.stack([top0, top1, bot1], 1), np.stack([top0, bot1, bot0], 1)])
    faces = np.concatenate([_grid_faces(ny, nx), skirt_faces])
    cls = np.concatenate([tile.cls.ravel(), tile.cls.ravel()[ring]])
    return np.concatenate([surf, skirt]), faces, cls, n


def build_terrain_mesh(
    levels: Sequence[HeightLevel],
    focus_xy: npt.ArrayLike,
    range_m: float,
    *,
    lod_base_m: float | None = None,
    tile_cells: int = DEFAULT_TILE_CELLS,
) -> TerrainMesh:
    """Mesh a heightfield pyramid with distance-based LOD around the cameras of one block.

    Parameters
    ----------
    levels : sequence of HeightLevel
        Pyramid, level 0 finest, spacing non-decreasing (``LocalTerrain.levels``).
    focus_xy : (K, 2) float
        East/north (m, terrain frame) of the cameras (or any points) the mesh must serve; LOD
        distances are measured from their bounding box.
    range_m : float
        Horizontal render range, metres; tiles farther than this from the focus box are left out.
    lod_base_m : float, optional
        Radius of the full-resolution zone; level L is used up to ``lod_base_m * 2**L``. Default: the
        levels' own ``max_distance_m`` when they all have one (the ``cpu`` backend's schedule), else
        ``DEFAULT_LOD_BASE_CELLS * levels[0].spacing_m``.
    tile_cells : int
        Tiles span at most this many cells of their level per side.

    Returns
    -------
    TerrainMesh
        Covers the union of the levels' extents within ``range_m`` of the focus box.
    """
    _check_levels(levels)
    spacings = [float(lv.spacing_m) for lv in levels]
    if any(b < a for a, b in itertools.pairwise(spacings)):
        raise RenderError(f"terrain levels must be ordered fine to coarse, got spacings {spacings} m")
    if not (isinstance(tile_cells, int) and tile_cells >= 2):
        raise RenderError(f"tile_cells must be an integer >= 2, got {tile_cells!r}")
    if not range_m > 0:
        raise RenderError(f"range_m must be positive, got {range_m}")
    schedule = [getattr(lv, "max_distance_m", None) for lv in levels]
    n_levels = len(levels)
    if lod_base_m is None and all(d is not None for d in schedule):
        edges = [float(d) for d in schedule]  # type: ignore[arg-type]

        def level_of(d: float) -> int:
            return int(lod_level_by_distances(d, edges))

    else:
        base = DEFAULT_LOD_BASE_CELLS * spacings[0] if lod_base_m is None else float(lod_base_m)
        if not base > 0:
            raise RenderError(f"lod_base_m must be positive, got {lod_base_m}")

        def level_of(d: float) -> int:
            return int(lod_level(d, base, n_levels))

    pts = np.asarray(focus_xy, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 0 or not np.isfinite(pts).all():
        raise RenderError(f"focus_xy must hold at least one finite (east, north) point, got {pts!r}")
    focus = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
    ext = np.array([level_extent(lv) for lv in levels])
    domain = (ext[:, 0].min(), ext[:, 1].min(), ext[:, 2].max(), ext[:, 3].max())  # union of the extents
    half = range_m + max(focus[2] - focus[0], focus[3] - focus[1]) / 2.0
    cx, cy = (focus[0] + focus[2]) / 2.0, (focus[1] + focus[3]) / 2.0
    root3 = _aligned_root(levels, cx - half, cy - half, 2.0 * half)
    qt, unit = _quadtree_tiles(root3, focus, spacings, level_of, tile_cells, range_m)
    root = (root3[0], root3[1])
    tiles: list[_Tile] = []
    bounds: list[tuple[float, float, float, float]] = []
    tol = 1e-6
    for t in qt:
        b = (
            max(root[0] + t.ix0 * unit, domain[0]),
            max(root[1] + t.iy0 * unit, domain[1]),
            min(root[0] + t.ix1 * unit, domain[2]),
            min(root[1] + t.iy1 * unit, domain[3]),
        )
        # the finest level at or above the LOD level whose lattice covers the tile (else the coarsest,
        # with the tile clipped to it)
        lvl = t.level
        while lvl < n_levels - 1 and not (
            ext[lvl, 0] <= b[0] + tol
            and ext[lvl, 1] <= b[1] + tol
            and b[2] <= ext[lvl, 2] + tol
            and b[3] <= ext[lvl, 3] + tol
        ):
            lvl += 1
        e = ext[lvl]
        b = (max(b[0], e[0]), max(b[1], e[1]), min(b[2], e[2]), min(b[3], e[3]))
        if b[2] - b[0] > 1e-3 and b[3] - b[1] > 1e-3:
            tiles.append(_Tile(t.ix0, t.iy0, t.ix1, t.iy1, lvl))
            bounds.append(b)
    if not tiles:
        raise RenderError(f"no terrain within {range_m:.0f} m of the cameras (focus box {focus}, terrain {domain})")
    return _assemble(tiles, bounds, levels, _neighbours(tiles))


def _assemble(
    tiles: list[_Tile],
    bounds: list[tuple[float, float, float, float]],
    levels: Sequence[HeightLevel],
    nbrs: list[dict[str, list[int]]],
) -> TerrainMesh:
    """Mesh tiles coarsest first (so neighbours to stitch to are final) and concatenate by tile."""
    grids: dict[int, _TileGrid] = {}
    for i in sorted(range(len(tiles)), key=lambda k: -tiles[k].level):
        lv = levels[tiles[i].level]
        coarser = {s: [grids[j] for j in js if tiles[j].level > tiles[i].level] for s, js in nbrs[i].items()}
        xs, ys = _tile_axes(bounds[i], lv, coarser)
        gx, gy = np.meshgrid(xs, ys)
        z, cls = sample_level(lv, gx.ravel(), gy.ravel())
        g = _TileGrid(bounds[i], tiles[i].level, xs, ys, z.reshape(gx.shape), cls.reshape(gx.shape))
        _stitch(g, coarser)
        grids[i] = g
    verts, faces, cls_all, vlevel, vtile = [], [], [], [], []
    zr = np.zeros((len(tiles), 2))
    face_start = [0]
    n_surface_faces = []
    offset = 0
    zmin = np.array([grids[i].z.min() for i in range(len(tiles))])
    for i in range(len(tiles)):
        # The skirt reaches below every neighbour's lowest point, so wherever two borders differ the
        # higher border's skirt closes the gap down to the lower one.
        near = [i] + [j for js in nbrs[i].values() for j in js]
        bottom = float(zmin[near].min()) - SKIRT_MARGIN_M
        v, f, c, n_surf = _tile_arrays(grids[i], bottom)
        verts.append(v)
        faces.append(f + offset)
        cls_all.append(c)
        vl = np.full(v.shape[0], SKIRT_LEVEL, np.int8)
        vl[:n_surf] = tiles[i].level
        vlevel.append(vl)
        vtile.append(np.full(v.shape[0], i, np.int32))
        zr[i] = (bottom, float(grids[i].z.max()))
        n_surface_faces.append(2 * (grids[i].z.shape[0] - 1) * (grids[i].z.shape[1] - 1))
        face_start.append(face_start[-1] + f.shape[0])
        offset += v.shape[0]
    mesh = TerrainMesh(
        vertices=np.concatenate(verts).astype(np.float32),
        faces=np.concatenate(faces).astype(np.uint32),
        cls=np.concatenate(cls_all).astype(np.uint8),
        vertex_level=np.concatenate(vlevel),
        vertex_tile=np.concatenate(vtile),
        tile_bounds=np.asarray(bounds, dtype=np.float64),
        tile_zrange=zr,
        tile_level=np.array([t.level for t in tiles], dtype=np.int8),
        tile_face_start=np.asarray(face_start, dtype=np.int64),
        tile_surface_faces=np.asarray(n_surface_faces, dtype=np.int64),
    )
    logger.debug(
        "terrain mesh: %d tiles, %d vertices, %d faces (levels %s)",
        len(tiles),
        mesh.vertices.shape[0],
        mesh.n_faces,
        np.bincount(mesh.tile_level).tolist(),
    )
    return mesh
