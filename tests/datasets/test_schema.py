"""The modality registry: one complete spec per modality, used by codecs, readers, encoders and previews."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crosslocate.datasets import codecs
from crosslocate.datasets import schema as S
from crosslocate.datasets import transforms as T
from crosslocate.datasets.config import ShardConfig
from crosslocate.datasets.derived import view_to_rgb
from crosslocate.datasets.export import view_png
from crosslocate.datasets.schema import (
    ALL_MODALITIES,
    MODALITY_SPECS,
    SILHOUETTE_BACKGROUND_RGB,
    SILHOUETTE_EDGE_RGB,
    VIEW_DTYPE,
    Modality,
    first_invalid,
    modality_spec,
    parse_modalities,
    parse_modality,
)
from crosslocate.datasets.shards import ShardReader, ShardWriter
from crosslocate.errors import ConfigError
from crosslocate.render.config import RenderConfig
from crosslocate.render.preview import view_rgb

CFG = ShardConfig()
NAMES = "depth, silhouette, semantic"


def _sample(m: Modality) -> np.ndarray:
    """(2, 6, 8) valid decoded views of ``m``: sky in the top two rows, typical values below."""
    spec = MODALITY_SPECS[m]
    rng = np.random.default_rng(7)
    a = np.full((2, 6, 8), spec.sky, spec.dtype)
    body = {
        Modality.DEPTH: lambda: rng.uniform(CFG.depth_min_m, 200_000.0, (2, 4, 8)),
        Modality.SILHOUETTE: lambda: rng.integers(0, 2, (2, 4, 8)),
        Modality.SEMANTIC: lambda: rng.integers(1, 7, (2, 4, 8)),
    }[m]
    a[:, 2:] = body()
    return a


#: One value per modality that no renderer produces.
BAD = {Modality.DEPTH: [np.nan, np.inf, -5.0, 2e6], Modality.SILHOUETTE: [2, 255], Modality.SEMANTIC: [7, 200]}


def test_every_modality_has_a_complete_spec():
    assert set(MODALITY_SPECS) == set(Modality) and ALL_MODALITIES == tuple(Modality)
    fields = {f.name for f in dataclasses.fields(ShardConfig)}
    for m, spec in MODALITY_SPECS.items():
        assert spec.modality is m and isinstance(spec.dtype, np.dtype) and spec.valid
        assert spec.codec in ("logq16", "float32", "raw") and spec.shuffle_setting in fields
        assert spec.codec_setting is None or spec.codec_setting in fields
        view = _sample(m)[0]
        x = spec.to_input(view)
        assert x.shape == (3, 6, 8) and x.dtype == np.float32 and np.isfinite(x).all()
        rgb = spec.preview(view)
        assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
        assert not spec.invalid(view).any()
    assert BAD.keys() == MODALITY_SPECS.keys()


@pytest.mark.parametrize("m", list(Modality))
def test_codec_round_trip_driven_by_the_registry(m):
    spec = modality_spec(m)
    a = _sample(m)
    cs = codecs.codec_spec(m, CFG)
    assert cs.codec == spec.codec and cs.shuffle == getattr(CFG, spec.shuffle_setting)
    stored = codecs.encode(cs, a, CFG.depth_max_m)
    assert stored.dtype == np.dtype(cs.stored_dtype)
    back = codecs.decode(cs, stored)
    assert back.dtype == spec.dtype and back.shape == a.shape
    sky = a == spec.sky
    assert np.all(back[sky] == spec.sky)
    if spec.dtype.kind == "f":
        rel = np.abs(back[~sky] / a[~sky] - 1.0)
        assert rel.max() <= codecs.depth_max_relative_error(CFG)
    else:
        assert np.array_equal(back, a)


def test_codec_setting_picks_another_codec():
    cs = codecs.codec_spec(Modality.DEPTH, ShardConfig(depth_codec="float32"))
    a = _sample(Modality.DEPTH)
    assert cs.codec == "float32" and np.array_equal(codecs.decode(cs, codecs.encode(cs, a)), a)


@pytest.mark.parametrize("m", list(Modality))
def test_validation_rejects_values_outside_the_bounds(m):
    spec = modality_spec(m)
    assert first_invalid(m, _sample(m)) is None
    for bad in BAD[m]:
        a = _sample(m)
        a[1, 4, 3] = bad
        assert S.invalid_values(m, a).sum() == 1
        msg = first_invalid(m, a, indices=[10, 11])
        assert msg is not None and msg.startswith(f"{m.value} view 11 pixel (4, 3) has invalid value")
        assert f"(expected {spec.valid})" in msg


def test_previews_agree_and_draw_light_silhouette_edges_on_dark():
    sil = np.zeros((4, 5), np.uint8)
    sil[2] = 1
    for picture in (view_rgb(Modality.SILHOUETTE, sil), view_to_rgb("silhouette", sil)):
        assert tuple(picture[2, 0]) == SILHOUETTE_EDGE_RGB and tuple(picture[0, 0]) == SILHOUETTE_BACKGROUND_RGB
        assert picture[2, 0].astype(int).sum() > picture[0, 0].astype(int).sum()  # edges are the light side
    for m in Modality:  # the render-view PNGs / database mosaic and the benchmark mosaics / report: one picture
        view = _sample(m)[0]
        assert np.array_equal(view_rgb(m, view), view_to_rgb(m, view))


def test_parse_modality_names_the_valid_ones():
    assert parse_modality(" Depth ") is Modality.DEPTH and parse_modality(Modality.SEMANTIC) is Modality.SEMANTIC
    assert parse_modalities("semantic, depth,semantic") == (Modality.SEMANTIC, Modality.DEPTH)
    with pytest.raises(ConfigError, match=f"^--modality: unknown modality 'rgb'; choose one of {NAMES}$"):
        parse_modality("rgb", "--modality")
    with pytest.raises(ConfigError, match=f"no modality requested; choose from {NAMES}"):
        parse_modalities(" , ")
    # every consumer refuses an unknown name with the same wording
    for call in (
        lambda: RenderConfig(modalities=("depth", "rgb")),
        lambda: T.encode_view("rgb", np.zeros((2, 2))),
        lambda: codecs.codec_spec("rgb", CFG),
        lambda: view_png("rgb", np.zeros((2, 2))),
        lambda: view_rgb("rgb", np.zeros((2, 2))),
    ):
        with pytest.raises(ConfigError, match=f"unknown modality 'rgb'; choose one of {NAMES}"):
            call()


def test_consumers_follow_a_changed_registry_entry(monkeypatch, tmp_path):
    """A registry entry is the only place a rule lives: replacing it changes readers, encoders and previews."""
    spec = MODALITY_SPECS[Modality.SILHOUETTE]
    three_level = dataclasses.replace(
        spec,
        valid="0, 1 or 2",
        invalid=lambda a: a > 2,
        shuffle_setting="label_shuffle",
        to_input=lambda a: np.broadcast_to(np.asarray(a, np.float32) / 2.0, (3, *np.shape(a))),
        preview=lambda a: np.repeat((np.asarray(a, np.uint8) * 100)[..., None], 3, axis=-1),
    )
    monkeypatch.setitem(MODALITY_SPECS, Modality.SILHOUETTE, three_level)
    sil = np.array([[[0, 1, 2, 2]]], np.uint8)
    assert codecs.codec_spec("silhouette", CFG).shuffle == CFG.label_shuffle
    path = tmp_path / "shard-00000.h5"
    with ShardWriter(path, [Modality.SILHOUETTE], 4, CFG) as w:
        w.add({"silhouette": np.repeat(sil, 4, axis=1)}, np.zeros(1, VIEW_DTYPE))
        w.commit()
    with ShardReader(path) as r:
        assert r.read_batch("silhouette", [0], check=True)[0, 0].tolist() == [0, 1, 2, 2]  # 2 is valid now
    assert first_invalid("silhouette", sil + 1) is not None  # 3 is not
    assert T.encode_view("silhouette", sil[0]).numpy()[:, 0].tolist() == [[0.0, 0.5, 1.0, 1.0]] * 3
    assert view_rgb("silhouette", sil[0])[0, :, 0].tolist() == [0, 100, 200, 200]
    assert view_to_rgb("silhouette", sil[0])[0, :, 0].tolist() == [0, 100, 200, 200]
