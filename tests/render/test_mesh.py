"""LOD terrain mesh: exact heights at nodes, no gaps from above or from the side, LOD face counts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from crosslocate.errors import RenderError
from crosslocate.render.mesh import GridLevel, build_terrain_mesh, level_extent

SPACING = 30.0
N = 257


def _pyramid(z0: np.ndarray, cls0: np.ndarray, n_levels: int = 4) -> list[GridLevel]:
    """Decimation pyramid centred on the origin (level k keeps every 2**k-th node)."""
    x0 = -(N - 1) / 2 * SPACING
    return [
        GridLevel(z0[:: 2**k, :: 2**k].astype(np.float32), cls0[:: 2**k, :: 2**k].copy(), x0, -x0, SPACING * 2**k)
        for k in range(n_levels)
    ]


def _rough(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = np.cumsum(np.cumsum(rng.normal(0.0, 1.0, (N, N)), 0), 1)
    z = 0.5 * (z - z.mean()) + 1500.0
    cls = rng.integers(1, 6, (N, N)).astype(np.uint8)
    return z, cls


def _mesh(levels, focus=((300.0, -200.0),), range_m=3500.0):
    return build_terrain_mesh(levels, np.array(focus), range_m, lod_base_m=300.0, tile_cells=8)


@pytest.fixture(scope="module")
def rough_mesh():
    z, cls = _rough()
    levels = _pyramid(z, cls)
    return levels, _mesh(levels)


def _on_tile_border(mesh, v: np.ndarray) -> np.ndarray:
    b = mesh.tile_bounds[mesh.vertex_tile]
    eps = 1e-2
    return (
        (np.abs(v[:, 0] - b[:, 0]) < eps)
        | (np.abs(v[:, 0] - b[:, 2]) < eps)
        | (np.abs(v[:, 1] - b[:, 1]) < eps)
        | (np.abs(v[:, 1] - b[:, 3]) < eps)
    )


def test_uses_several_levels(rough_mesh):
    _, mesh = rough_mesh
    assert len(set(mesh.tile_level.tolist())) >= 3
    assert mesh.faces.max() < mesh.vertices.shape[0]


def test_vertex_heights_and_classes_equal_heightfield_at_nodes(rough_mesh):
    levels, mesh = rough_mesh
    v = mesh.vertices.astype(np.float64)
    inner = (mesh.vertex_level >= 0) & ~_on_tile_border(mesh, v)
    checked = 0
    for lvl, lv in enumerate(levels):
        sel = np.flatnonzero(inner & (mesh.vertex_level == lvl))
        fc = (v[sel, 0] - lv.x0) / lv.spacing_m
        fr = (lv.y0 - v[sel, 1]) / lv.spacing_m
        node = (np.abs(fc - np.rint(fc)) < 1e-4) & (np.abs(fr - np.rint(fr)) < 1e-4)
        r, c = np.rint(fr[node]).astype(int), np.rint(fc[node]).astype(int)
        np.testing.assert_allclose(v[sel[node], 2], lv.z[r, c], atol=1e-3)
        np.testing.assert_array_equal(mesh.cls[sel[node]], lv.cls[r, c])
        checked += int(node.sum())
    assert checked > 1000


def test_plane_is_reproduced_exactly_including_stitched_borders():
    a, b, c = 0.013, -0.021, 800.0
    x = (np.arange(N) - (N - 1) / 2) * SPACING
    gx, gy = np.meshgrid(x, -x)
    levels = _pyramid(a * gx + b * gy + c, np.full((N, N), 4, np.uint8))
    mesh = _mesh(levels)
    v = mesh.vertices.astype(np.float64)
    surf = mesh.vertex_level >= 0
    np.testing.assert_allclose(v[surf, 2], a * v[surf, 0] + b * v[surf, 1] + c, atol=2e-3)
    assert (v[~surf, 2] < (a * v[~surf, 0] + b * v[~surf, 1] + c) - 5.0).all()


def test_watertight_from_above(rough_mesh):
    """Vertical rays at random points within range of the focus all hit a surface triangle."""
    levels, mesh = rough_mesh
    xmin, ymin, xmax, ymax = level_extent(levels[-1])
    rng = np.random.default_rng(7)
    pts = rng.uniform([xmin, ymin], [xmax, ymax], (6000, 2))
    pts = pts[np.hypot(pts[:, 0] - 300.0, pts[:, 1] + 200.0) < 3400.0][:1500]
    tri = mesh.vertices[mesh.faces[mesh.surface_face_mask()]].astype(np.float64)[:, :, :2]
    hit = np.zeros(len(pts), bool)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    for k in range(0, len(pts), 100):
        p = pts[k : k + 100, None, :]
        w1 = ((b[:, 1] - c[:, 1]) * (p[..., 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (p[..., 1] - c[:, 1])) / den
        w2 = ((c[:, 1] - a[:, 1]) * (p[..., 0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (p[..., 1] - c[:, 1])) / den
        w3 = 1.0 - w1 - w2
        tol = -1e-9
        hit[k : k + 100] = ((w1 >= tol) & (w2 >= tol) & (w3 >= tol)).any(axis=1)
    assert len(pts) > 1000
    assert hit.all(), f"{(~hit).sum()} vertical rays fall through, e.g. at {pts[~hit][:3]}"


def _border(mesh, v, tile, axis, value):
    sel = (mesh.vertex_level >= 0) & (mesh.vertex_tile == tile) & (np.abs(v[:, axis] - value) < 1e-2)
    p = v[sel]
    order = np.argsort(p[:, 1 - axis])
    return p[order, 1 - axis], p[order, 2]


def test_no_side_gaps_between_tiles(rough_mesh):
    """Along every shared tile border either the two border polylines coincide or the higher one's skirt
    reaches below the lower one, so no sight line can pass between tiles."""
    _, mesh = rough_mesh
    v = mesh.vertices.astype(np.float64)
    bottom = mesh.tile_zrange[:, 0]
    b = mesh.tile_bounds
    n_edges = n_stitched = 0
    for i in range(len(b)):
        for j in range(len(b)):
            for axis, (lo_i, hi_j) in ((0, (2, 0)), (1, (3, 1))):
                if abs(b[j, hi_j] - b[i, lo_i]) > 1e-6:
                    continue
                o = 1 - axis
                lo, hi = max(b[i, o], b[j, o]), min(b[i, o + 2], b[j, o + 2])
                if hi - lo <= 1e-6:
                    continue
                q = np.linspace(lo, hi, 41)
                zi = np.interp(q, *_border(mesh, v, i, axis, b[i, lo_i]))
                zj = np.interp(q, *_border(mesh, v, j, axis, b[j, hi_j]))
                higher_bottom = np.where(zi >= zj, bottom[i], bottom[j])
                assert (higher_bottom <= np.minimum(zi, zj) + 1e-6).all()
                n_edges += 1
                n_stitched += bool(np.abs(zi - zj).max() < 1e-2)
    assert n_edges > 50
    assert n_stitched >= 0.6 * n_edges  # most borders coincide exactly; skirts cover the rest


def test_face_counts_shrink_with_lod(rough_mesh):
    levels, mesh = rough_mesh
    density = []
    for lvl in sorted(set(mesh.tile_level.tolist())):
        t = np.flatnonzero(mesh.tile_level == lvl)
        area = np.prod(mesh.tile_bounds[t, 2:] - mesh.tile_bounds[t, :2], axis=1).sum()
        density.append(mesh.tile_surface_faces[t].sum() / area)
        # a full-resolution grid of that level has 2 faces per cell
        assert density[-1] == pytest.approx(2.0 / levels[lvl].spacing_m ** 2, rel=0.35)
    assert all(b < a for a, b in itertools.pairwise(density))
    full = build_terrain_mesh(levels[:1], np.array([[300.0, -200.0]]), 3500.0, tile_cells=8)
    assert mesh.n_faces < full.n_faces / 3
    finer = build_terrain_mesh(levels, np.array([[300.0, -200.0]]), 3500.0, lod_base_m=900.0, tile_cells=8)
    assert finer.n_faces > mesh.n_faces


def test_bad_inputs_raise():
    z, cls = _rough()
    z[5, 5] = np.nan
    with pytest.raises(RenderError, match="non-finite"):
        _mesh(_pyramid(z, cls))
    z, cls = _rough()
    with pytest.raises(RenderError, match="no terrain within"):
        _mesh(_pyramid(z, cls), focus=((1e6, 1e6),), range_m=1000.0)
