"""Depth codec: hand-computed codes, the stated relative error bound, exact sky, reversible deltas."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from crosslocate.datasets import codecs
from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.schema import SKY_DEPTH_M
from crosslocate.errors import ConfigError, RenderError

CFG = ShardConfig()


def _roundtrip(depth, cfg=CFG):
    spec = codecs.codec_spec("depth", cfg)
    return codecs.decode(spec, codecs.encode(spec, depth, cfg.depth_max_m))


def test_hand_computed_codes():
    eps, dmin = 1e-3, 2.0
    step = 2 * math.log(1 + eps)
    d = np.array([SKY_DEPTH_M, 0.0, 1.0, dmin, dmin * (1 + eps) ** 2, dmin * (1 + eps) ** 20], np.float32)
    codes = codecs.encode_depth_logq16(d, dmin, step)
    assert codes.tolist() == [0, 1, 1, 1, 2, 11]
    back = codecs.decode_depth_logq16(codes, dmin, step)
    assert back[0] == SKY_DEPTH_M
    np.testing.assert_allclose(back[1:4], dmin)  # below depth_min_m: absolute error < depth_min_m


@pytest.mark.parametrize("eps", [5e-4, 1e-3, 4e-3])
def test_random_depths_within_stated_bound(eps):
    cfg = replace(CFG, depth_rel_error=eps)
    rng = np.random.default_rng(1)
    d = np.exp(rng.uniform(math.log(cfg.depth_min_m), math.log(cfg.depth_max_m), (8, 64, 64))).astype(np.float32)
    sky = rng.random(d.shape) < 0.3
    d[sky] = SKY_DEPTH_M
    back = _roundtrip(d, cfg)
    assert back.dtype == np.float32
    assert np.array_equal(back[sky], np.full(sky.sum(), SKY_DEPTH_M, np.float32))
    rel = np.abs(back[~sky].astype(np.float64) / d[~sky] - 1.0)
    bound = codecs.depth_max_relative_error(cfg)
    assert rel.max() <= bound
    assert rel.max() > 0.9 * eps  # the bound is tight: half a log step is reached


def test_analytic_ground_plane_depth():
    """Level camera h above a flat plane: z-depth of image row r below the centre is h * f / (r + 0.5 - cy)."""
    h, size, fov = 200.0, 256, 60.0
    f = 0.5 * size / math.tan(math.radians(fov) / 2)
    rows = np.arange(size) + 0.5 - size / 2
    col = np.where(rows > 0, h * f / np.where(rows > 0, rows, 1), SKY_DEPTH_M)
    d = np.repeat(col[:, None], size, axis=1).astype(np.float32)[None]
    back = _roundtrip(d)
    ground = d > 0
    assert np.all(back[~ground] == SKY_DEPTH_M)
    assert np.abs(back[ground] / d[ground] - 1).max() <= codecs.depth_max_relative_error(CFG)
    assert back[ground].max() > 65_504  # far ground near the horizon: would overflow fp16, kept here


@pytest.mark.parametrize("delta", ["none", "row", "col"])
def test_delta_is_exactly_reversible_with_wraparound(delta):
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 65536, (3, 17, 23), dtype=np.uint16)
    codes[0, :, :3] = [65535, 0, 65535]  # wrap-around jumps
    enc = codecs.delta_encode(codes, delta)
    assert enc.dtype == np.uint16
    assert np.array_equal(codecs.delta_decode(enc, delta), codes)


def test_row_delta_of_linear_ramp_is_constant():
    codes = np.tile(np.arange(10, 60, 5, dtype=np.uint16), (4, 1))
    enc = codecs.delta_encode(codes, "row")
    assert np.all(enc[:, 0] == 10) and np.all(enc[:, 1:] == 5)


def test_float32_codec_is_lossless():
    cfg = replace(CFG, depth_codec="float32")
    d = np.array([[[SKY_DEPTH_M, 0.0, 1.2345678, 59_999.99]]], np.float32)
    assert np.array_equal(_roundtrip(d, cfg), d)
    assert codecs.depth_max_relative_error(cfg) == 0.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.5, 2e6])
def test_invalid_depths_are_refused(bad):
    d = np.array([[[100.0, bad]]], np.float32)
    with pytest.raises(RenderError, match="index"):
        _roundtrip(d)


def test_uint8_modalities_are_stored_unchanged():
    spec = codecs.codec_spec("semantic", CFG)
    a = np.arange(24, dtype=np.uint8).reshape(1, 4, 6)
    assert np.array_equal(codecs.decode(spec, codecs.encode(spec, a)), a)
    with pytest.raises(RenderError):
        codecs.encode(spec, a.astype(np.int32))


def test_codebook_must_fit_uint16():
    with pytest.raises(ConfigError, match="65535"):
        ShardConfig(depth_rel_error=1e-5)
    n_codes = math.log(CFG.depth_max_m / CFG.depth_min_m) / codecs.depth_step(CFG.depth_rel_error) + 2
    assert n_codes < 65535


def test_spec_attrs_roundtrip():
    spec = codecs.codec_spec("depth", CFG)
    assert codecs.CodecSpec.from_attrs(spec.to_attrs()) == spec


@pytest.mark.parametrize("eps", [5e-4, 1e-3])
def test_lookup_encoder_equals_the_logarithm_at_every_threshold(eps):
    """The lookup-table encoder gives the codes of ``1 + rint(ln(d / d_min) / step)`` exactly, also for
    the float32 values right at, just below and just above every code threshold."""
    dmin, step = 0.5, codecs.depth_step(eps)
    c = np.arange(1, 8000, dtype=np.float64)
    t = (dmin * np.exp((c - 0.5) * step)).astype(np.float32)
    t = t[t < 1e6]
    rng = np.random.default_rng(3)
    d = np.concatenate([
        t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf)),
        np.exp(rng.uniform(math.log(1e-3), math.log(1e6), 200_000)).astype(np.float32),
        np.array([0.0, dmin, 1e6], np.float32),
    ])  # fmt: skip
    expected = 1.0 + np.rint(np.log(np.maximum(d.astype(np.float64), dmin) / dmin) / step)
    assert np.array_equal(codecs.encode_depth_logq16(d, dmin, step, 1e6), expected.astype(np.uint16))


def test_depth_beyond_the_code_book_is_refused():
    step = codecs.depth_step(1e-4)  # the book ends at 0.5 m * e^(65533.5 * step), about 250 km
    top = codecs.codebook_max_m(0.5, step)
    assert 2e5 < top < 3e5
    codecs.encode_depth_logq16(np.array([top], np.float32), 0.5, step)
    with pytest.raises(RenderError, match="code book"):
        codecs.encode_depth_logq16(np.array([1.01 * top], np.float32), 0.5, step)


@pytest.mark.parametrize("delta", ["row", "none", "col"])
def test_compiled_encoder_equals_the_logarithm_and_the_numpy_encoder(delta):
    """The builds' one-pass encoder (codec_kernels) gives the codes of ``1 + rint(ln(d / d_min) / step)``
    at, just below and just above every code threshold, sky as code 0, and the same delta residuals
    (modulo 2^16) as the numpy path, so shards keep their bytes."""
    dmin, step = CFG.depth_min_m, codecs.depth_step(CFG.depth_rel_error)
    c = np.arange(1, 14_000, dtype=np.float64)
    t = (dmin * np.exp((c - 0.5) * step)).astype(np.float32)
    t = t[t < CFG.depth_max_m]
    rng = np.random.default_rng(5)
    d = np.concatenate([
        t, np.nextafter(t, np.float32(0)), np.nextafter(t, np.float32(np.inf)),
        np.exp(rng.uniform(math.log(1e-3), math.log(CFG.depth_max_m), 100_000)).astype(np.float32),
        np.array([0.0, dmin, CFG.depth_max_m], np.float32),
    ])  # fmt: skip
    d[rng.random(d.size) < 0.2] = SKY_DEPTH_M
    d = d[: d.size // 120 * 120].reshape(-1, 4, 30)
    expected = 1.0 + np.rint(np.log(np.maximum(d.astype(np.float64), dmin) / dmin) / step)
    expected = np.where(d == SKY_DEPTH_M, codecs.SKY_CODE, expected).astype(np.uint16)
    fast = codecs.encode_depth_fast(d, dmin, step, delta, CFG.depth_max_m)
    assert fast.dtype == np.uint16 and fast.shape == d.shape
    assert np.array_equal(fast, codecs.delta_encode(expected, delta))
    assert np.array_equal(codecs.delta_decode(fast, delta), expected)


@pytest.mark.parametrize("bad", [np.nan, -np.inf, -0.5, 2e6])
def test_compiled_encoder_refuses_what_the_numpy_encoder_refuses(bad):
    d = np.full((2, 3, 5), 100.0, np.float32)
    d[1, 2, 3] = bad
    with pytest.raises(RenderError, match=r"index \(1, 2, 3\)"):
        codecs.encode_depth_fast(d, CFG.depth_min_m, codecs.depth_step(CFG.depth_rel_error), "row", CFG.depth_max_m)
    step = codecs.depth_step(1e-4)
    top = codecs.codebook_max_m(0.5, step)
    with pytest.raises(RenderError, match="code book"):
        codecs.encode_depth_fast(np.array([[1.01 * top]], np.float32), 0.5, step, "none")
