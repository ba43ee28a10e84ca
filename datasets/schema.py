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

The modality registry
---------------------
Every rule that differs between modalities is one field of that modality's :class:`ModalitySpec`
in :data:`MODALITY_SPECS`: decoded dtype, sky value, the physically possible values (what readers
and ``crosslocate verify`` accept), the default stored codec and the :class:`ShardConfig` fields
that tune it, the network input encoding and the preview colours. Every layer looks these up
(:func:`modality_spec`) instead of branching on the modality. Code and configs name modalities
through :func:`parse_modality` / :func:`parse_modalities` (one
:class:`~crosslocate.errors.ConfigError` wording that lists the valid names); CLI flags take their
``choices`` from :func:`modality_names`. Adding a modality is one :class:`Modality` member, one
registry entry, and its renderer in each backend.

Network input (:attr:`ModalitySpec.to_input`, all ``(3, H, W) float32``, versioned by
:data:`INPUT_ENCODING`; :mod:`crosslocate.datasets.transforms` wraps them in torch tensors):

* depth: log distance ``v = 2 log(d / DEPTH_NEAR_M) / log(DEPTH_FAR_M / DEPTH_NEAR_M) - 1`` clipped
  to [-1, 1] (10 m -> -1, 1 km -> 0, 100 km -> 1), sky -> :data:`SKY_ENCODED` (+2), so sky stays
  distinguishable from the farthest terrain; the channel is copied to three. The polarity follows
  aerial perspective in photographs (near ground dark, distant ridges lighter and hazier, sky
  brightest; ImageNet-normalised photo values run from about -1.5 to +2): a shared network sees the
  skyline as the same kind of edge in both modalities. Measured against the former inverse
  encoding (near 1, far 0, sky -1) on the cpu preset, same data and seed: training loss after 8
  epochs 0.84 instead of 1.07, test R@10 39% instead of 36%.
* silhouette: 1.0 on edges, 0.0 elsewhere, copied to three channels.
* semantic: the land-cover palette RGB (:func:`semantic_palette`), ImageNet-normalised like photos
  (:func:`rgb_to_input`).

Previews (:attr:`ModalitySpec.preview`, ``(..., H, W, 3) uint8``; the database mosaic, ``render-view``
PNGs, benchmark mosaics and the report all use them): depth as a yellow (near) to purple (far)
log ramp with white sky, semantic through the land-cover palette, silhouettes as **light edges on
a dark background** (white on black: the stored 1 is the bright value, as in the network input
and the exported silhouette PNGs).

Derived on demand (never stored): horizon line, silhouettes from depth
(:mod:`crosslocate.datasets.derived`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from crosslocate.dem.landcover import LANDCOVER_PALETTE, LandCover
from crosslocate.errors import ConfigError

#: Bump when the on-disk layout changes; readers refuse other versions.
SCHEMA_VERSION: int = 1

#: Depth value of sky pixels (the released CrossLocate data used -1 as well).
SKY_DEPTH_M: float = -1.0

#: Semantic id of sky pixels.
SKY_CLASS: int = int(LandCover.SKY)

#: Largest plausible decoded depth, metres: no terrain on Earth is visible this far (the horizon
#: from Everest is ~370 km), so a larger value can only come from corrupted bytes.
MAX_DEPTH_M: float = 1_000_000.0


class Modality(StrEnum):
    """Stored modalities (their rules: :data:`MODALITY_SPECS`)."""

    DEPTH = "depth"
    SILHOUETTE = "silhouette"
    SEMANTIC = "semantic"


#: Database kinds (manifest ``kind``): views at the query positions, the uniform grid near training
#: queries, the uniform grid over the region, and its val and test splits (optionally only near the
#: held-out photos): what validation and the benchmark search (:mod:`crosslocate.pipelines.build`).
DB_KINDS: tuple[str, ...] = ("sparse", "compact", "uniform", "heldout")

#: Split codes in the per-view table.
SPLIT_CODES: dict[str, int] = {"train": 0, "val": 1, "test": 2, "none": 255}

#: Per-view table columns (HDF5 compound dataset ``views``) and their dtypes. Every column is a pure
#: function of the build configuration (no timings), so rebuilt shards are byte-identical.
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
)
#: Columns of shards written before the table became deterministic; readers drop them.
LEGACY_VIEW_COLUMNS: tuple[str, ...] = ("render_time_s",)
VIEW_DTYPE: np.dtype = np.dtype(list(VIEW_COLUMNS))


# --------------------------------------------------------------------------------------------------
# Per-modality rules (pure numpy); gathered in MODALITY_SPECS below.

#: ImageNet channel statistics (RGB, fractions of 255).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Depth input range (metres): terrain at NEAR encodes to -1, at FAR to +1.
DEPTH_NEAR_M: float = 10.0
DEPTH_FAR_M: float = 100_000.0
#: Encoded value of sky pixels in depth input (terrain is in [-1, 1]).
SKY_ENCODED: float = 2.0
#: Version of the model-input encodings (2: depth as log distance, sky brightest; 1: inverse depth,
#: sky -1). Stored in checkpoints; a network is refused on inputs encoded another way. Bump it when
#: any ``to_input`` of :data:`MODALITY_SPECS` changes.
INPUT_ENCODING: int = 2

#: Colour of sky pixels in depth previews (RGB uint8).
SKY_RGB: tuple[int, int, int] = (255, 255, 255)
#: Silhouette preview colours: light edges on a dark background (RGB uint8).
SILHOUETTE_EDGE_RGB: tuple[int, int, int] = (255, 255, 255)
SILHOUETTE_BACKGROUND_RGB: tuple[int, int, int] = (0, 0, 0)
#: Anchors of the depth colour ramp (near -> far), RGB uint8, interpolated linearly (viridis-like).
_RAMP = np.array(
    [[253, 231, 37], [94, 201, 98], [33, 145, 140], [59, 82, 139], [68, 1, 84]],
    dtype=np.float64,
)


def _check_depth(depth: npt.ArrayLike) -> npt.NDArray[np.float32]:
    d = np.asarray(depth, dtype=np.float32)
    if d.ndim < 2:
        raise ConfigError(f"depth must be (..., H, W), got shape {d.shape}")
    return d


def is_sky(depth: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """(..., H, W) bool: sky pixels (depth <= 0, e.g. ``SKY_DEPTH_M``, or non-finite)."""
    d = _check_depth(depth)
    return ~(np.isfinite(d) & (d > 0.0))


def semantic_palette() -> np.ndarray:
    """(256, 3) uint8 RGB lookup table for semantic ids (unknown ids are black)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    for cls, rgb in LANDCOVER_PALETTE.items():
        lut[int(cls)] = rgb
    return lut


def _depth_invalid(a: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    return ~((np.isfinite(a) & (a >= 0) & (a <= MAX_DEPTH_M)) | (a == SKY_DEPTH_M))


def _silhouette_invalid(a: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    return a > 1


def _semantic_invalid(a: npt.NDArray[Any]) -> npt.NDArray[np.bool_]:
    return ~np.isin(a, np.array([int(c) for c in LandCover], dtype=a.dtype))


def rgb_to_input(rgb: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """(H, W, 3) uint8 RGB (or (H, W) grey, or RGBA) -> (3, H, W) float32 ``(x/255 - mean)/std`` (ImageNet)."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ConfigError(f"an RGB image must be (H, W, 3), got shape {a.shape}")
    x = a[:, :, :3].astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return x.transpose(2, 0, 1)


def depth_to_input(depth: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Log distance in [-1, 1] for terrain, :data:`SKY_ENCODED` (+2) for sky.

    Parameters
    ----------
    depth : (H, W) float
        Metres of z-depth; sky (and any non-positive or non-finite value) is ``SKY_DEPTH_M``.

    Returns
    -------
    (H, W) float32
        ``2 log(d/DEPTH_NEAR_M)/log(DEPTH_FAR_M/DEPTH_NEAR_M) - 1`` clipped to [-1, 1]; sky -> +2.
    """
    d = np.asarray(depth, dtype=np.float64)
    sky = ~(np.isfinite(d) & (d > 0.0))
    safe = np.where(sky, DEPTH_FAR_M, np.maximum(d, 1e-6))
    u = np.clip(np.log(safe / DEPTH_NEAR_M) / math.log(DEPTH_FAR_M / DEPTH_NEAR_M), 0.0, 1.0)
    v = 2.0 * u - 1.0
    v[sky] = SKY_ENCODED
    return v.astype(np.float32)


def _three(v: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(H, W) -> (3, H, W), the channel copied (a read-only broadcast view)."""
    return np.broadcast_to(v, (3, *v.shape))


def _depth_input(depth: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return _three(depth_to_input(depth))


def _silhouette_input(sil: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return _three((np.asarray(sil) > 0).astype(np.float32))


def _semantic_input(sem: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    return rgb_to_input(semantic_palette()[np.asarray(sem, dtype=np.uint8)])


def relative_depth(depth: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Per-view normalised inverse depth in [0, 1]: ``d_min / d`` on terrain, 0 on sky.

    ``d_min`` is the nearest terrain depth of each view (last two axes), so the nearest pixel is 1 and
    values fall towards 0 with distance; the result is invariant to scaling the depth. Views without
    terrain are all 0.

    Returns
    -------
    (..., H, W) float32.
    """
    d = _check_depth(depth)
    sky = is_sky(d)
    pos = np.where(sky, np.inf, d)
    dmin = pos.min(axis=(-2, -1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(sky | ~np.isfinite(dmin), 0.0, dmin / pos)
    return np.clip(rel, 0.0, 1.0).astype(np.float32)


def depth_to_rgb(depth: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Colourised depth preview: a yellow (near) to purple (far) ramp over :func:`relative_depth` in
    a log scale, sky = :data:`SKY_RGB`.

    Returns
    -------
    (..., H, W, 3) uint8 RGB.
    """
    d = _check_depth(depth)
    rel = relative_depth(d).astype(np.float64)
    sky = rel <= 0.0
    # log scale: ln(d / d_min) mapped so the farthest pixel of a 1000x depth range is the ramp's end
    pos = np.clip(-np.log(np.where(sky, 1.0, rel)) / np.log(1000.0), 0.0, 1.0) * (len(_RAMP) - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), len(_RAMP) - 2)
    frac = (pos - i0)[..., None]
    rgb = _RAMP[i0] * (1.0 - frac) + _RAMP[i0 + 1] * frac
    rgb[sky] = SKY_RGB
    return np.rint(rgb).astype(np.uint8)


def silhouette_to_rgb(silhouette: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(..., H, W) silhouette -> (..., H, W, 3) uint8: :data:`SILHOUETTE_EDGE_RGB` where > 0, else the background."""
    s = np.asarray(silhouette)
    if s.ndim < 2:
        raise ConfigError(f"silhouette must be (..., H, W), got shape {s.shape}")
    lut = np.array([SILHOUETTE_BACKGROUND_RGB, SILHOUETTE_EDGE_RGB], dtype=np.uint8)
    return lut[(s > 0).astype(np.intp)]


def semantic_to_rgb(semantic: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """Colourised semantic view via :func:`semantic_palette`.

    Parameters
    ----------
    semantic : (..., H, W) uint8 LandCover ids.

    Returns
    -------
    (..., H, W, 3) uint8 RGB (unknown ids black).
    """
    s = np.asarray(semantic)
    if s.ndim < 2:
        raise ConfigError(f"semantic must be (..., H, W), got shape {s.shape}")
    return semantic_palette()[s.astype(np.uint8)]


# --------------------------------------------------------------------------------------------------
# The registry


@dataclass(frozen=True, slots=True)
class ModalitySpec:
    """Everything that differs between modalities (one entry of :data:`MODALITY_SPECS`).

    Attributes
    ----------
    modality : Modality
    dtype : numpy dtype
        dtype of the decoded (H, W) array.
    sky : float or int
        Value of sky pixels in the decoded array.
    valid : str
        The physically possible decoded values, in words (for messages and docs).
    invalid : callable
        ``(..., H, W) decoded -> bool mask`` of values no renderer produces (corruption).
    codec : str
        Default stored codec (:mod:`crosslocate.datasets.codecs`): ``logq16``, ``float32`` or ``raw``.
    codec_setting : str or None
        ``ShardConfig`` field that chooses another codec (``depth_codec``), or None.
    shuffle_setting : str
        ``ShardConfig`` field with the dataset's Blosc shuffle.
    to_input : callable
        ``(H, W) decoded -> (3, H, W) float32`` network input (see the module docstring).
    preview : callable
        ``(..., H, W) decoded -> (..., H, W, 3) uint8`` RGB preview.
    """

    modality: Modality
    dtype: np.dtype
    sky: float | int
    valid: str
    invalid: Callable[[npt.NDArray[Any]], npt.NDArray[np.bool_]]
    codec: str
    codec_setting: str | None
    shuffle_setting: str
    to_input: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]]
    preview: Callable[[npt.ArrayLike], npt.NDArray[np.uint8]]


#: The rules of every modality, in storage order.
MODALITY_SPECS: dict[Modality, ModalitySpec] = {
    Modality.DEPTH: ModalitySpec(
        modality=Modality.DEPTH,
        dtype=np.dtype(np.float32),
        sky=SKY_DEPTH_M,
        valid=f"finite metres in [0, {MAX_DEPTH_M:g}] or exactly {SKY_DEPTH_M} (sky)",
        invalid=_depth_invalid,
        codec="logq16",
        codec_setting="depth_codec",
        shuffle_setting="depth_shuffle",
        to_input=_depth_input,
        preview=depth_to_rgb,
    ),
    Modality.SILHOUETTE: ModalitySpec(
        modality=Modality.SILHOUETTE,
        dtype=np.dtype(np.uint8),
        sky=0,
        valid="0 or 1",
        invalid=_silhouette_invalid,
        codec="raw",
        codec_setting=None,
        shuffle_setting="mask_shuffle",
        to_input=_silhouette_input,
        preview=silhouette_to_rgb,
    ),
    Modality.SEMANTIC: ModalitySpec(
        modality=Modality.SEMANTIC,
        dtype=np.dtype(np.uint8),
        sky=SKY_CLASS,
        valid="a LandCover id (" + ", ".join(str(int(c)) for c in LandCover) + ")",
        invalid=_semantic_invalid,
        codec="raw",
        codec_setting=None,
        shuffle_setting="label_shuffle",
        to_input=_semantic_input,
        preview=semantic_to_rgb,
    ),
}

ALL_MODALITIES: tuple[Modality, ...] = tuple(MODALITY_SPECS)


def modality_names() -> tuple[str, ...]:
    """Names of every modality, in registry order."""
    return tuple(m.value for m in MODALITY_SPECS)


def parse_modality(name: Modality | str, flag: str | None = None) -> Modality:
    """The :class:`Modality` called ``name`` (case and surrounding blanks ignored).

    ``flag`` (e.g. ``"--modality"``) prefixes the message. Raises :class:`ConfigError`
    ``"[flag: ]unknown modality 'x'; choose one of depth, silhouette, semantic"``.
    """
    key = str(name).strip().lower()
    try:
        m = Modality(key)
    except ValueError:
        m = None
    if m is None or m not in MODALITY_SPECS:
        prefix = f"{flag}: " if flag else ""
        raise ConfigError(f"{prefix}unknown modality {str(name)!r}; choose one of {', '.join(modality_names())}")
    return m


def parse_modalities(names: str | Sequence[Modality | str], flag: str | None = None) -> tuple[Modality, ...]:
    """Parse ``"depth,semantic"`` or a list into distinct modalities (given order); see :func:`parse_modality`.

    Raises :class:`ConfigError` on an unknown name or when none is given.
    """
    items = names.split(",") if isinstance(names, str) else list(names)
    out = [parse_modality(raw, flag) for raw in items if str(raw).strip()]
    if not out:
        prefix = f"{flag}: " if flag else ""
        raise ConfigError(f"{prefix}no modality requested; choose from {', '.join(modality_names())}")
    return tuple(dict.fromkeys(out))


def modality_spec(modality: Modality | str) -> ModalitySpec:
    """The :class:`ModalitySpec` of ``modality`` (:class:`ConfigError` for an unknown name)."""
    return MODALITY_SPECS[parse_modality(modality)]


def invalid_values(modality: Modality | str, decoded: np.ndarray) -> np.ndarray:
    """Bool mask (same shape) of decoded values no renderer can produce, i.e. corruption.

    The modality's :attr:`ModalitySpec.invalid`: depth NaN, +-inf, negatives other than
    ``SKY_DEPTH_M``, or above :data:`MAX_DEPTH_M`; silhouette not in {0, 1}; semantic not a
    :class:`LandCover` id.
    """
    return modality_spec(modality).invalid(np.asarray(decoded))


def first_invalid(modality: Modality | str, decoded: np.ndarray, indices: Sequence[int] | None = None) -> str | None:
    """``"<modality> view V pixel (R, C) has invalid value X (expected ...)"`` for the first invalid value, or None.

    ``decoded`` is (n, H, W); ``indices`` (n,) names the views (default ``0..n-1``).
    """
    spec = modality_spec(modality)
    bad = spec.invalid(np.asarray(decoded))
    if not bad.any():
        return None
    v, r, c = (int(i) for i in np.argwhere(bad)[0])
    view = v if indices is None else int(indices[v])
    value = decoded[v, r, c].item()
    return f"{spec.modality.value} view {view} pixel ({r}, {c}) has invalid value {value!r} (expected {spec.valid})"


def view_input(modality: Modality | str, view: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """(3, H, W) float32 network input of one decoded (H, W) view (:attr:`ModalitySpec.to_input`)."""
    return modality_spec(modality).to_input(np.asarray(view))


def view_preview(modality: Modality | str, view: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    """(..., H, W, 3) uint8 RGB preview of decoded views (:attr:`ModalitySpec.preview`)."""
    return modality_spec(modality).preview(np.asarray(view))
