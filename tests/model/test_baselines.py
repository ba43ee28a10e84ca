"""Baselines on synthetic cases with a known answer: horizon geometry, photo horizons, rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crosslocate.datasets.schema import SKY_DEPTH_M
from crosslocate.errors import ConfigError
from crosslocate.model import baselines as B
from crosslocate.model.config import NetConfig


def test_horizon_elevation_hand_values():
    # W = 4, FOV 90: f = 2 px, column centres x = -1.5, -0.5, 0.5, 1.5
    h = 10
    az, el = B.horizon_elevation(np.array([5.0, 5.0, 5.0, 5.0 - 2.5]), 90.0, h)
    np.testing.assert_allclose(az, np.degrees(np.arctan([-0.75, -0.25, 0.25, 0.75])))
    # row 5 = image centre -> 0 deg; column 3: 2.5 px above the centre, sqrt(2^2 + 1.5^2) = 2.5 -> 45 deg
    np.testing.assert_allclose(el, [0.0, 0.0, 0.0, 45.0], atol=1e-12)
    with pytest.raises(ConfigError):
        B.horizon_elevation(np.zeros(4), 180.0, h)


def test_horizon_angles_level_equals_horizon_elevation_and_pitch_adds_on_axis():
    rows = np.array([[3.0, 7.5, np.nan, 20.0, 11.0, 0.0]])
    az0, el0 = B.horizon_elevation(rows, 50.0, 24)
    az1, el1 = B.horizon_angles(rows, 50.0, 24)
    np.testing.assert_allclose(np.broadcast_to(az0, az1.shape)[:, [0, 1, 3, 4, 5]], az1[:, [0, 1, 3, 4, 5]])
    np.testing.assert_allclose(el0, el1, equal_nan=True)
    # on the optical axis column (odd width: centre column) pitch simply adds to the elevation
    f = 2.5 / math.tan(math.radians(25.0))
    _, el = B.horizon_angles(np.array([0.0, 0.0, 1.0, 0.0, 0.0]), 50.0, 6, pitch_deg=8.0)
    assert el[2] == pytest.approx(math.degrees(math.atan2(3.0 - 1.0, f)) + 8.0)


@pytest.mark.parametrize(("pitch", "roll"), [(0.0, 0.0), (7.0, 0.0), (-4.0, 3.5), (9.0, -5.0)])
def test_horizon_angles_invert_the_renderers_projection(pitch, roll):
    from crosslocate.render.camera import project_enu, rotation_cam_to_enu

    w, h, fov = 40, 30, 55.0
    rows = np.random.default_rng(1).uniform(2, h - 2, w)
    az, el = B.horizon_angles(rows, fov, h, pitch, roll)
    a, e = np.radians(az), np.radians(el)
    pts = 1000.0 * np.stack([np.sin(a) * np.cos(e), np.cos(a) * np.cos(e), np.sin(e)], axis=1)
    row, col, z = project_enu(pts, np.zeros(3), rotation_cam_to_enu(0.0, pitch, roll), fov, w, h)
    assert (z > 0).all()
    np.testing.assert_allclose(col, np.arange(w) + 0.5, atol=1e-9)
    np.testing.assert_allclose(row, rows, atol=1e-9)


def test_horizon_distances_hand_case():
    nan = np.nan
    q = np.array([[1.0, 2.0, 3.0, nan]])
    db = np.array(
        [
            [1.0, 2.0, 3.0, 4.0],  # identical on the query's points
            [2.0, 3.0, 4.0, 5.0],  # +1 everywhere; equal to the query one step to the right
            [nan, nan, nan, 9.0],  # no overlap
            [11.0, 12.0, 13.0, 14.0],  # +10: only a constant offset
        ]
    )
    d0 = B.horizon_distances(q, db, step_deg=1.0, max_shift_deg=0.0)
    np.testing.assert_allclose(d0, [[0.0, 1.0, np.inf, 100.0]], atol=1e-12)
    d1 = B.horizon_distances(q, db, step_deg=1.0, max_shift_deg=1.0)
    # shift -1: query points 1, 2 meet db points 0, 1 -> (2-2, 3-3) -> 0 (2 points >= 50% of 3)
    np.testing.assert_allclose(d1, [[0.0, 0.0, np.inf, 81.0]], atol=1e-12)
    dm = B.horizon_distances(q, db, step_deg=1.0, max_shift_deg=0.0, subtract_mean=True)
    np.testing.assert_allclose(dm, [[0.0, 0.0, np.inf, 0.0]], atol=1e-12)
    with pytest.raises(ConfigError, match="grid"):
        B.horizon_distances(q, db[:, :3], 1.0)


def _brute_force_distances(q, db, step, max_shift, min_overlap=0.5, subtract_mean=False):
    """The definition, one (query, view, shift) at a time."""
    s_max, g = round(max_shift / step), q.shape[1]
    out = np.full((len(q), len(db)), np.inf)
    for i, qi in enumerate(q):
        need = max(2, math.ceil(min_overlap * np.isfinite(qi).sum()))
        for j, dj in enumerate(db):
            for s in range(-s_max, s_max + 1):
                pairs = [(qi[t], dj[t + s]) for t in range(g) if 0 <= t + s < g]
                e = np.array([b - a for a, b in pairs if np.isfinite(a) and np.isfinite(b)])
                if len(e) >= need:
                    e = e - e.mean() if subtract_mean else e
                    out[i, j] = min(out[i, j], float(np.mean(e * e)))
    return out


@pytest.mark.parametrize("subtract_mean", [False, True])
def test_horizon_distances_match_the_brute_force_definition(subtract_mean):
    rng = np.random.default_rng(4)
    db = 3 * rng.standard_normal((30, 15))
    db[rng.random(db.shape) < 0.2] = np.nan
    db[0, :12] = np.nan  # too little overlap with most queries
    q = 3 * rng.standard_normal((4, 15))
    q[rng.random(q.shape) < 0.3] = np.nan
    q[1] = np.nan  # no horizon at all
    got = B.horizon_distances(q, db, 0.5, 1.5, subtract_mean=subtract_mean)
    want = _brute_force_distances(q, db, 0.5, 1.5, subtract_mean=subtract_mean)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert np.isinf(got[1]).all() and np.isfinite(got).sum() > 60
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-9, atol=1e-9)


def _place_elevation(k, az_deg):
    """Elevation (deg) of the skyline of synthetic place k at world azimuth az_deg."""
    a = np.radians(az_deg)
    return 3.0 + 2.5 * np.sin(2 * a + 0.9 * k) + 1.5 * np.sin(5 * a + 2.1 * k) + 0.8 * np.cos(11 * a + k)


def _rows(k, yaw_deg, fov_deg, w, h):
    """Horizon rows of a level camera at place k (inverse of horizon_elevation)."""
    f = (w / 2) / math.tan(math.radians(fov_deg) / 2)
    x = np.arange(w) + 0.5 - w / 2
    el = _place_elevation(k, yaw_deg + np.degrees(np.arctan2(x, f)))
    return h / 2 - np.tan(np.radians(el)) * np.sqrt(f * f + x * x)


def test_horizon_baseline_finds_the_place_of_a_rotated_narrower_query():
    n_places, w, h = 8, 120, 90
    db_rows = np.stack([_rows(k, 40.0, 60.0, w, h) for k in range(n_places)])
    # queries: place k seen 3 deg further right (within the 5 deg shift search), 40 deg FOV, other size
    q_rows = np.stack([_rows(k, 43.0, 40.0, 80, 60) for k in range(n_places)])
    res = B.horizon_baseline(q_rows, np.full(n_places, 40.0), 60, 3, db_rows=db_rows, db_height_px=h)
    assert res.indices[:, 0].tolist() == list(range(n_places))
    assert res.indices.shape == (n_places, 3) and (np.diff(res.distances, axis=1) >= 0).all()
    assert res.distances[:, 0].max() < 0.01 < res.distances[:, 1].min()  # near-exact match vs the rest
    # without the shift search the 3 deg rotation is not recovered as a near-exact match
    res0 = B.horizon_baseline(q_rows, 40.0, 60, 1, db_rows=db_rows, db_height_px=h, max_shift_deg=0.0)
    assert res0.distances[:, 0].min() > 0.01


def test_horizon_baseline_central_crop_of_database_view_k():
    n_places, w, h = 6, 100, 100
    db_rows = np.stack([_rows(k, 200.0, 60.0, w, h) for k in range(n_places)])
    f = (w / 2) / math.tan(math.radians(30.0))
    crop = slice(20, 80)  # central 60 columns: same camera, FOV 2 atan(30 / f)
    fov_c = 2 * math.degrees(math.atan(30 / f))
    for k in range(n_places):
        res = B.horizon_baseline(db_rows[k : k + 1, crop], [fov_c], h, n_places, db_rows=db_rows, db_height_px=h)
        assert res.indices[0, 0] == k and res.distances[0, 0] < 1e-3


def test_horizon_baseline_from_depth_and_lists_of_widths():
    w = h = 48
    db_rows = np.stack([np.round(_rows(k, 0.0, 60.0, w, h)) for k in range(4)])
    rr = np.arange(h)[:, None]
    depth = np.where(rr >= db_rows[:, None, :], 1000.0, SKY_DEPTH_M).astype(np.float32)  # (4, H, W)
    q = [np.round(_rows(2, 0.0, 60.0, w, h)), np.round(_rows(1, 0.0, 60.0, 64, 40))[8:56]]
    fov1 = 2 * math.degrees(math.atan(24 / (32 / math.tan(math.radians(30)))))  # 48 of 64 columns
    res = B.horizon_baseline(q, [60.0, fov1], [h, 40], 2, db_depth=depth)
    assert res.indices[:, 0].tolist() == [2, 1]
    with pytest.raises(ConfigError, match="exactly one"):
        B.horizon_baseline(q[:1], 60.0, h, 1)


def _sky_photo(boundary, h, rng):
    """RGB uint8 photo: a sky gradient with a cloud above ``boundary`` (first terrain row), terrain below."""
    w = len(boundary)
    t = np.linspace(1, 0, h)[:, None, None]  # 1 at the top
    sky = (1 - t) * np.array([0.80, 0.86, 0.93]) + t * np.array([0.22, 0.42, 0.78])
    img = np.broadcast_to(sky, (h, w, 3)).copy()
    rows = np.arange(h)[:, None]
    ground = rows >= boundary[None, :]
    green = np.array([0.25, 0.35, 0.15]) + 0.05 * rng.standard_normal((h, w, 1))
    img = np.where(ground[..., None], green, img)
    img[1:3, 5:9] = 0.96  # a cloud in the sky
    img[h - 3, 2] = (0.3, 0.4, 0.6)  # a bluish (water) pixel low in the terrain
    img = img + 0.01 * rng.standard_normal(img.shape)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def test_photo_horizon_rows_recovers_the_boundary():
    rng = np.random.default_rng(0)
    h = 30
    boundary = np.array([12, 12, 13, 14, 16, 18, 18, 17, 15, 10, 8, 8, 9, 30, 0], float)
    img = _sky_photo(boundary, h, rng)
    got = B.photo_horizon_rows(img)
    # all-terrain column (boundary 0) -> NaN; all-sky column (30) -> H; else the first terrain row
    np.testing.assert_array_equal(got[:13], boundary[:13])
    assert got[13] == h and np.isnan(got[14])
    mask = B.sky_mask_rgb(img)
    assert mask[1, 5] and mask[0, 0] and not mask[h - 1, 0]  # cloud and blue sky are sky, terrain is not
    with pytest.raises(ConfigError):
        B.sky_mask_rgb(np.zeros((4, 4)))


def test_photo_horizon_of_a_rendered_scene_ranks_the_right_place():
    # a photo of place 3 (sky/terrain from the analytic skyline) is matched against depth-free curves
    w, h = 90, 60
    db_rows = np.stack([_rows(k, 10.0, 60.0, w, h) for k in range(6)])
    rng = np.random.default_rng(3)
    b = np.clip(np.ceil(_rows(3, 12.0, 45.0, 80, 60)), 0, 60)
    photo = _sky_photo(b, 60, rng)
    res = B.horizon_baseline(
        [B.photo_horizon_rows(photo)], [45.0], 60, 6, db_rows=db_rows, db_height_px=h, max_shift_deg=5.0
    )
    assert res.indices[0, 0] == 3


def test_chance_baseline_hand_value():
    db_xy = np.stack([np.arange(0, 100, 10.0), np.zeros(10)], axis=1)
    got = B.chance_baseline([[0.0, 0.0]], db_xy, (20.0,), (1, 2))
    assert got[20.0][1] == pytest.approx(3 / 10) and got[20.0][2] == pytest.approx(1 - 21 / 45)


@pytest.fixture
def one_torch_thread():
    """A tiny net: intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_untrained_baseline_ranks_identical_inputs_first(one_torch_thread):
    cfg = NetConfig(width=0.0625, input_size_px=64, imagenet_weights="/nonexistent/vgg16.pth")
    images = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def embed(net, src):
        with torch.no_grad():
            return net(src).numpy()

    # random_weights=True drops the (missing) ImageNet file; queries are copies of views 3 and 1
    res = B.untrained_baseline(cfg, embed, images, images[[3, 1]], k=2)
    assert res.indices[:, 0].tolist() == [3, 1]
    np.testing.assert_allclose(res.distances[:, 0], 0.0, atol=1e-6)
    assert res.info["init"].startswith("random") and "seed=0" in res.info["init"]


def test_horizon_baseline_query_without_sky_gets_a_random_not_storage_order_ranking():
    db_rows = np.stack([_rows(k, 0.0, 60.0, 40, 40) for k in range(50)])
    no_sky = np.full((1, 40), np.nan)  # a photo of a slope: no horizon at all
    firsts = {int(B.horizon_baseline(no_sky, 60.0, 40, 5, db_rows=db_rows, tie_seed=s).indices[0, 0]) for s in range(8)}
    assert len(firsts) >= 5  # the order among the all-inf distances depends on the seed
    res = B.horizon_baseline(no_sky, 60.0, 40, 50, db_rows=db_rows)
    assert sorted(res.indices[0].tolist()) == list(range(50)) and np.isinf(res.distances).all()
    assert res.info["queries_without_horizon"] == 1 and res.info["queries_without_match"] == 1


def _tilted_rows(k, yaw_deg, fov_deg, w, h, pitch_deg, roll_deg):
    """Horizon rows of a camera with pitch and roll at place k: the skyline projected by the
    renderer's camera model (``render.camera``), read at the column centres."""
    from crosslocate.render.camera import project_enu, rotation_cam_to_enu

    az = np.linspace(yaw_deg - 60.0, yaw_deg + 60.0, 4001)
    a, e = np.radians(az), np.radians(_place_elevation(k, az))
    pts = 1e4 * np.stack([np.sin(a) * np.cos(e), np.cos(a) * np.cos(e), np.sin(e)], axis=1)
    row, col, z = project_enu(pts, np.zeros(3), rotation_cam_to_enu(yaw_deg, pitch_deg, roll_deg), fov_deg, w, h)
    ok = z > 0
    return np.interp(np.arange(w) + 0.5, col[ok], row[ok])


def test_gravity_grid_covers_the_ranges():
    g = B.gravity_grid(4.0, 2.0, 2.0)
    assert g.shape == (5 * 3, 2) and [0.0, 0.0] in g.tolist()  # pitch -4..4, roll -2..2, step 2
    assert g[:, 0].min() == -4.0 and g[:, 1].max() == 2.0
    g = B.gravity_grid(10.0, 5.0, 5.0, 1.0)
    assert sorted(set(g[:, 0])) == [-10.0, -5.0, 0.0, 5.0, 10.0] and sorted(set(g[:, 1])) == list(range(-5, 6))
    with pytest.raises(ConfigError):
        B.gravity_grid(4.0, 2.0, 0.0)
    with pytest.raises(ConfigError):
        B.gravity_grid(4.0, 2.0, 1.0, -1.0)


def test_horizon_baseline_gravity_search_recovers_an_unknown_pitch_and_roll():
    """Photos taken with pitch 6 deg and roll -4 deg, matched without knowing them: assuming a level
    camera mismatches the skylines, the searched gravity finds each place again (and the tilt)."""
    n_places, w, h, pitch, roll = 8, 120, 90, 6.0, -4.0
    db_rows = np.stack([_rows(k, 40.0, 60.0, w, h) for k in range(n_places)])
    q_rows = np.stack([_tilted_rows(k, 43.0, 40.0, 80, 60, pitch, roll) for k in range(n_places)])
    common = dict(db_rows=db_rows, db_height_px=h)
    truth = B.horizon_baseline(q_rows, 40.0, 60, 3, q_pitch_deg=pitch, q_roll_deg=roll, **common)
    assert truth.indices[:, 0].tolist() == list(range(n_places)) and truth.distances[:, 0].max() < 0.01
    level = B.horizon_baseline(q_rows, 40.0, 60, 3, **common)
    assert level.distances[:, 0].min() > 1.0  # assumed level, the skylines lie degrees apart (deg^2 > 1)
    searched = B.horizon_baseline(q_rows, 40.0, 60, 3, gravity_search=B.gravity_grid(10.0, 5.0, 1.0), **common)
    assert searched.indices[:, 0].tolist() == list(range(n_places))
    assert searched.distances[:, 0].max() < 0.01 and searched.info["gravity_candidates"] == 21 * 11
    np.testing.assert_allclose(searched.gravity_deg, np.tile([pitch, roll], (n_places, 1)))
    # a coarser grid (2 deg) leaves at most 1 deg of tilt unexplained and still finds the places
    coarse = B.horizon_baseline(q_rows, 40.0, 60, 3, gravity_search=B.gravity_grid(10.0, 5.0, 2.0), **common)
    assert coarse.indices[:, 0].tolist() == list(range(n_places))
    assert np.abs(coarse.gravity_deg - [pitch, roll]).max() <= 1.0 + 1e-9
    # pitch on a 5 deg grid (6 deg is 1 deg off it), roll on 1 deg, the mean offset removed: the
    # pitch left over is almost a uniform shift of the skyline, and the places are found near-exactly
    mean = B.horizon_baseline(
        q_rows, 40.0, 60, 3, gravity_search=B.gravity_grid(10.0, 5.0, 5.0, 1.0), subtract_mean=True, **common
    )
    assert mean.indices[:, 0].tolist() == list(range(n_places)) and mean.distances[:, 0].max() < 0.01
    np.testing.assert_allclose(mean.gravity_deg[:, 1], roll)  # roll is on the grid
    assert np.abs(mean.gravity_deg[:, 0] - pitch).max() <= 2.5  # pitch only to the grid's half step
