"""Image transforms: FOV scaling of queries (pinhole rule), augmentation, and model-input encoders.

FOV scaling
-----------
Database views have a horizontal FOV ``db_fov_deg`` (60 deg) over ``canvas_px`` pixels. A query with
horizontal FOV ``f`` is resized so that one pixel spans the same angle near the image centre as in the
database (pinhole rule) and is centred on the canvas::

    width_px = canvas_px * tan(f / 2) / tan(db_fov / 2)      (500 px canvas, f = 30 deg -> 232 px)

and its height follows the aspect ratio. A query wider than the database (``f > db_fov``) first has
its centre cropped to ``db_fov`` (same rule, both axes), then fills the canvas width. Rows that do not
fit vertically are cropped symmetrically. The rest of the canvas is filled with ``fill``:
:data:`QUERY_FILL_RGB` (the ImageNet mean, which :func:`encode_rgb` maps to 0) for query photos.

Encoders (model input, all ``(3, H, W) float32`` torch tensors)
--------------------------------------------------------------
Each stored modality is encoded by its registry rule
(:attr:`crosslocate.datasets.schema.ModalitySpec.to_input`, documented in
:mod:`crosslocate.datasets.schema` and versioned by :data:`INPUT_ENCODING`): depth as log distance
(10 m -> -1, 100 km -> +1, sky :data:`SKY_ENCODED` = +2), silhouette 1.0 on edges, semantic as the
ImageNet-normalised palette RGB. Query photos: ``(x / 255 - IMAGENET_MEAN) / IMAGENET_STD`` per
channel (:func:`encode_rgb`). This module only wraps those numpy arrays in torch tensors.

Augmentation is numpy-only and seeded by an explicit ``np.random.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from crosslocate.datasets.schema import (
    DEPTH_FAR_M,
    DEPTH_NEAR_M,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INPUT_ENCODING,
    SKY_DEPTH_M,
    SKY_ENCODED,
    Modality,
    depth_to_input,
    rgb_to_input,
    view_input,
)
from crosslocate.errors import ConfigError, RenderError
from crosslocate.fileio import config_to_dict

#: Padding colour of FOV-scaled query photos (uint8 RGB ImageNet mean: encodes to ~0).
QUERY_FILL_RGB: tuple[int, int, int] = (124, 116, 104)


def fov_scaled_width(canvas_px: int, fov_deg: float, db_fov_deg: float = 60.0) -> float:
    """Width in pixels a photo of horizontal FOV ``fov_deg`` takes on a database canvas (pinhole rule).

    Returns ``canvas_px * tan(min(fov, db_fov)/2) / tan(db_fov/2)`` (not rounded).
    """
    _check_fov(fov_deg, "fov_deg")
    _check_fov(db_fov_deg, "db_fov_deg")
    f = min(fov_deg, db_fov_deg)
    return canvas_px * math.tan(math.radians(f) / 2.0) / math.tan(math.radians(db_fov_deg) / 2.0)


def _check_fov(value: float, name: str) -> None:
    if not (math.isfinite(value) and 0.0 < value < 180.0):
        raise ConfigError(f"{name} must be in (0, 180) degrees, got {value!r}")


def fov_scale(
    image: npt.NDArray[Any],
    fov_deg: float,
    canvas_px: int,
    db_fov_deg: float = 60.0,
    fill: float | tuple[float, ...] = 0,
) -> npt.NDArray[Any]:
    """Place a photo on a square database canvas at the database's angular scale.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array, any dtype
        The photo, row 0 at the top.
    fov_deg : float
        Horizontal field of view of ``image``, degrees.
    canvas_px : int
        Side of the square output (the database view size), pixels.
    db_fov_deg : float
        Horizontal FOV of the database views, degrees.
    fill : float or per-channel tuple
        Value of canvas pixels not covered by the photo.

    Returns
    -------
    (canvas_px, canvas_px[, C]) array, same dtype as ``image``
        The photo scaled by the pinhole rule (see the module docstring), centred:
        ``place_centered(fov_resize(image, ...), canvas_px, fill)``.
    """
    return place_centered(fov_resize(image, fov_deg, canvas_px, db_fov_deg), canvas_px, fill)


def fov_resize(image: npt.NDArray[Any], fov_deg: float, canvas_px: int, db_fov_deg: float = 60.0) -> npt.NDArray[Any]:
    """The photo at the database's angular scale, not yet placed on the canvas (first half of :func:`fov_scale`).

    Returns
    -------
    (h, w[, C]) array, same dtype as ``image``
        ``w = round(canvas_px * tan(min(f, db_fov)/2) / tan(db_fov/2))`` (at most ``canvas_px``),
        ``h`` by the aspect ratio and cropped symmetrically to at most ``canvas_px``; a photo wider
        than ``db_fov_deg`` has its centre cropped to ``db_fov_deg`` first.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise RenderError(f"fov_scale expects an (H, W) or (H, W, C) image, got shape {image.shape}")
    if canvas_px < 1:
        raise ConfigError(f"canvas_px must be >= 1, got {canvas_px}")
    _check_fov(fov_deg, "fov_deg")
    _check_fov(db_fov_deg, "db_fov_deg")
    h, w = image.shape[:2]
    if fov_deg > db_fov_deg:
        ratio = math.tan(math.radians(db_fov_deg) / 2.0) / math.tan(math.radians(fov_deg) / 2.0)
        cw, ch = max(1, round(w * ratio)), max(1, round(h * ratio))
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        image = image[y0 : y0 + ch, x0 : x0 + cw]
        h, w = image.shape[:2]
    out_w = max(1, min(canvas_px, round(fov_scaled_width(canvas_px, fov_deg, db_fov_deg))))
    out_h = max(1, round(out_w * h / w))
    interp = cv2.INTER_AREA if out_w < w else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(image), (out_w, out_h), interpolation=interp)
    if resized.ndim == 2 and image.ndim == 3:
        resized = resized[:, :, None]
    if out_h > canvas_px:
        top = (out_h - canvas_px) // 2
        resized = resized[top : top + canvas_px]
    return resized


def place_centered(image: npt.NDArray[Any], canvas_px: int, fill: float | tuple[float, ...] = 0) -> npt.NDArray[Any]:
    """An (h, w[, C]) image (h, w <= canvas_px) centred on a (canvas_px, canvas_px[, C]) canvas of ``fill``."""
    out_h, out_w = image.shape[:2]
    if out_h > canvas_px or out_w > canvas_px:
        raise RenderError(f"place_centered: image {image.shape[:2]} does not fit a {canvas_px} px canvas")
    canvas = np.empty((canvas_px, canvas_px, *image.shape[2:]), dtype=image.dtype)
    canvas[...] = np.asarray(fill, dtype=np.float64).astype(image.dtype)
    y0, x0 = (canvas_px - out_h) // 2, (canvas_px - out_w) // 2
    canvas[y0 : y0 + out_h, x0 : x0 + out_w] = image
    return canvas


# --------------------------------------------------------------------------------------------------
# Encoders


def _to_tensor3(chw: npt.NDArray[np.float32]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))


def encode_view(modality: Modality | str, array: npt.NDArray[Any]) -> torch.Tensor:
    """Encode one stored (H, W) view of ``modality`` as a (3, H, W) float32 tensor (its registry ``to_input``)."""
    return _to_tensor3(view_input(modality, array))


def encode_depth(depth: npt.NDArray[np.floating[Any]]) -> torch.Tensor:
    """(H, W) float depth (metres, sky = ``SKY_DEPTH_M``) -> (3, H, W) float32, see :func:`depth_to_input`."""
    return encode_view(Modality.DEPTH, depth)


def encode_silhouette(sil: npt.NDArray[Any]) -> torch.Tensor:
    """(H, W) uint8 silhouette (1 = edge) -> (3, H, W) float32 with 1.0 on edges, 0.0 elsewhere."""
    return encode_view(Modality.SILHOUETTE, sil)


def encode_semantic(sem: npt.NDArray[np.uint8]) -> torch.Tensor:
    """(H, W) uint8 ``LandCover`` ids -> palette RGB -> (3, H, W) float32 ImageNet-normalised."""
    return encode_view(Modality.SEMANTIC, sem)


def encode_rgb(rgb: npt.NDArray[np.uint8]) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ImageNet-normalised (``(x/255 - mean)/std``)."""
    a = np.asarray(rgb)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise RenderError(f"encode_rgb expects an (H, W, 3) RGB image, got shape {a.shape}")
    return _to_tensor3(rgb_to_input(a))


# --------------------------------------------------------------------------------------------------
# Augmentation


@dataclass(frozen=True, kw_only=True, slots=True)
class AugmentConfig:
    """Random augmentation strengths (0 disables each part).

    Attributes
    ----------
    shift_frac : float
        Maximal translation as a fraction of the image side (uniform in +-).
    rotate_deg : float
        Maximal in-plane rotation, degrees (uniform in +-).
    flip_p : float
        Probability of a horizontal flip (applied to a whole training tuple so it stays consistent).
    brightness, contrast, saturation : float
        Query colour jitter: factors drawn uniformly in ``[1 - v, 1 + v]``.
    blur_p : float
        Probability of a Gaussian blur of sigma in ``[0.3, blur_sigma_max]`` px on queries.
    blur_sigma_max : float
    noise_std : float
        Maximal std of additive Gaussian noise on queries, in 0..255 units.
    """

    shift_frac: float = 0.04
    rotate_deg: float = 3.0
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    blur_p: float = 0.3
    blur_sigma_max: float = 1.5
    noise_std: float = 4.0

    def __post_init__(self) -> None:
        for name in AugmentConfig.__dataclass_fields__:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"AugmentConfig.{name} must be a finite number >= 0, got {value!r}")
        for name in ("flip_p", "blur_p", "brightness", "contrast", "saturation", "shift_frac"):
            if getattr(self, name) > 1.0:
                raise ConfigError(f"AugmentConfig.{name} must be <= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, float]:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AugmentConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


#: No augmentation at all.
NO_AUGMENT = AugmentConfig(
    shift_frac=0, rotate_deg=0, flip_p=0, brightness=0, contrast=0, saturation=0, blur_p=0, noise_std=0
)


def random_affine(
    image: npt.NDArray[Any], rng: np.random.Generator, cfg: AugmentConfig, *, nearest: bool = False
) -> npt.NDArray[Any]:
    """Small random shift and rotation about the centre (border pixels replicated).

    Parameters
    ----------
    image : (H, W) or (H, W, C) array
        Any dtype cv2 handles (uint8, float32).
    nearest : bool
        Nearest-neighbour sampling (for depth/semantic/silhouette, so sentinels and ids survive).

    Returns
    -------
    array of the same shape and dtype.
    """
    h, w = image.shape[:2]
    angle = float(rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)) if cfg.rotate_deg > 0 else 0.0
    tx, ty = (rng.uniform(-cfg.shift_frac, cfg.shift_frac, size=2) * (w, h)) if cfg.shift_frac > 0 else (0.0, 0.0)
    if angle == 0.0 and tx == 0.0 and ty == 0.0:
        return image
    m = cv2.getRotationMatrix2D((w / 2.0 - 0.5, h / 2.0 - 0.5), angle, 1.0)
    m[:, 2] += (tx, ty)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    out = cv2.warpAffine(np.ascontiguousarray(image), m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(image.shape)


def augment_view(
    array: npt.NDArray[Any], rng: np.random.Generator, cfg: AugmentConfig, *, flip: bool = False
) -> npt.NDArray[Any]:
    """Database-side augmentation of one stored (H, W) view: optional flip, small shift/rotation.

    Nearest-neighbour resampling keeps ``SKY_DEPTH_M`` and class ids exact. ``flip`` is decided by
    the caller (once per training tuple, see :class:`AugmentConfig.flip_p`).
    """
    out = array[:, ::-1] if flip else array
    return random_affine(np.ascontiguousarray(out), rng, cfg, nearest=True)


def augment_query(
    rgb: npt.NDArray[np.uint8], rng: np.random.Generator, cfg: AugmentConfig, *, flip: bool = False
) -> npt.NDArray[np.uint8]:
    """Query augmentation of an (H, W, 3) uint8 photo: flip, shift/rotation, colour jitter, blur, noise.

    ``photometric_jitter(random_affine(flipped photo))``; :class:`~crosslocate.datasets.views.QueryDataset`
    applies it to the photo already scaled to the model input (blur and noise in input pixels).
    """
    img = np.ascontiguousarray(rgb[:, ::-1] if flip else rgb)
    return photometric_jitter(random_affine(img, rng, cfg), rng, cfg)


def photometric_jitter(
    rgb: npt.NDArray[np.uint8], rng: np.random.Generator, cfg: AugmentConfig
) -> npt.NDArray[np.uint8]:
    """Colour jitter (brightness, contrast, saturation), optional Gaussian blur and noise of an (H, W, 3) uint8 photo.

    Blur sigma and noise are in pixels / 0..255 units of the image given.
    """
    img = rgb.astype(np.float32)
    if cfg.brightness > 0:
        img *= rng.uniform(1 - cfg.brightness, 1 + cfg.brightness)
    if cfg.contrast > 0:
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - cfg.contrast, 1 + cfg.contrast) + mean
    if cfg.saturation > 0:
        grey = img.mean(axis=2, keepdims=True)
        img = (img - grey) * rng.uniform(1 - cfg.saturation, 1 + cfg.saturation) + grey
    if cfg.blur_p > 0 and rng.random() < cfg.blur_p:
        sigma = float(rng.uniform(0.3, max(0.3, cfg.blur_sigma_max)))
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    if cfg.noise_std > 0:
        img += rng.normal(0.0, rng.uniform(0, cfg.noise_std), size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def augment_encoded(
    chw: torch.Tensor, rng: np.random.Generator, cfg: AugmentConfig, *, flip: bool = False
) -> torch.Tensor:
    """Database-side augmentation (flip, small shift/rotation) of an already encoded (C, H, W) float32 input.

    For inputs resized to the network (area-averaged, so sentinels are already mixed at edges):
    bilinear resampling, replicated borders; the same draws as :func:`augment_view`.
    """
    img = np.ascontiguousarray(chw.numpy().transpose(1, 2, 0))
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
    img = random_affine(img, rng, cfg)
    return torch.from_numpy(np.ascontiguousarray(img.reshape(chw.shape[1], chw.shape[2], -1).transpose(2, 0, 1)))


__all__ = [
    "DEPTH_FAR_M",
    "DEPTH_NEAR_M",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INPUT_ENCODING",
    "NO_AUGMENT",
    "QUERY_FILL_RGB",
    "SKY_DEPTH_M",
    "SKY_ENCODED",
    "AugmentConfig",
    "augment_encoded",
    "augment_query",
    "augment_view",
    "depth_to_input",
    "encode_depth",
    "encode_rgb",
    "encode_semantic",
    "encode_silhouette",
    "encode_view",
    "fov_resize",
    "fov_scale",
    "fov_scaled_width",
    "photometric_jitter",
    "place_centered",
    "random_affine",
]
