"""Photo-like query images: shaded, textured, hazy renders of a (perturbed) DEM.

One camera's depth and semantic views (:class:`crosslocate.render.views.ViewRenderer`) become an RGB
picture that looks more like a photograph than a database view (a real domain gap for retrieval):

1. **Normals** from the depth map (pure numpy): every pixel is back-projected with its camera ray
   (``P = depth * ray``, camera frame), tangents are one-sided differences towards the neighbour
   with the smaller depth jump (so occlusion edges do not smear), ``n = t_u x t_v`` faces the camera;
   then a Gaussian of ``NORMAL_SMOOTH_PX`` (normalised convolution) evens out renderer staircases.
2. **Lambert shading** ``ambient + (1 - ambient) * max(0, n . s)`` with the sun direction ``s``
   (azimuth clockwise from north, elevation above the horizon) in the camera's local ENU frame.
3. **Albedo** per :class:`~crosslocate.dem.landcover.LandCover` class (snow white, rock grey, forest
   dark green, meadow green, water blue with a Schlick-Fresnel reflection of the sky), modulated by
   seeded world-anchored texture: a sum of plane waves on the ground plane, each damped by
   ``exp(-(footprint / wavelength)^2)`` so far terrain (pixel footprint ``range / f``) does not alias.
4. **Aerial perspective**: ``c * T + haze * (1 - T)`` with transmittance ``T = exp(-d / V)``, ``d``
   the Euclidean range of the pixel (``depth * |ray|``, metres) and ``V`` the visibility.
5. **Sky**: a gradient in the sine of the ray elevation, horizon-bright to zenith-blue,
   ``t = clip(sin(el), 0, 1) ** sky_exponent``; optional clouds on a flat layer ``cloud_height_m``
   above the camera (seeded plane-wave noise, thresholded by the cover fraction).
6. **Camera**: exposure gain ``2 ** N(0, exposure_jitter_ev)`` and per-channel colour gains
   ``1 + N(0, color_jitter)``, Gaussian blur (``blur_sigma_px``), Gaussian sensor noise
   (``noise_sigma_dn`` in 8-bit digital numbers); output (H, W, 3) uint8 RGB, row 0 at the top.

All colours are display-space RGB in [0, 1] (no gamma), so the blends above are exact per channel.

Perturbed terrain: :mod:`crosslocate.render.perturb` (queries are rendered from a DEM with added
fine relief, so they are not pixel copies of database views).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields
from statistics import NormalDist
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from crosslocate.datasets.schema import Modality
from crosslocate.dem.landcover import LANDCOVER_NODATA, LandCover
from crosslocate.dem.poses import Pose
from crosslocate.errors import ConfigError, OutsideCoverageError, RenderError
from crosslocate.fileio import config_from_dict, config_to_dict
from crosslocate.render.camera import focal_px, pixel_rays_cam, rotation_cam_to_enu, validate_camera
from crosslocate.render.perturb import PerturbedDEM, PlaneWaves, perturb_dem

if TYPE_CHECKING:
    from crosslocate.render.config import RenderConfig

logger = logging.getLogger(__name__)

RGB = tuple[float, float, float]
FloatArray = npt.NDArray[np.float64]

#: Display-space albedo (RGB in [0, 1]) per LandCover id; unknown ids and nodata use ROCK.
CLASS_ALBEDO: dict[int, RGB] = {
    int(LandCover.WATER): (0.10, 0.22, 0.33),
    int(LandCover.GLACIER): (0.93, 0.95, 0.98),
    int(LandCover.ROCK): (0.52, 0.50, 0.47),
    int(LandCover.FOREST): (0.12, 0.24, 0.11),
    int(LandCover.GRASSLAND): (0.40, 0.56, 0.22),
    int(LandCover.BUILT): (0.62, 0.56, 0.50),
}
#: Schlick reflectance of water at normal incidence.
WATER_F0: float = 0.02
#: Texture wavelengths on the ground, metres (fine grain to field-size patches).
TEXTURE_WAVELENGTHS_M: tuple[float, ...] = (0.8, 3.0, 12.0, 40.0, 120.0)
#: Relative weights of those texture octaves.
TEXTURE_WEIGHTS: tuple[float, ...] = (1.0, 1.0, 0.8, 0.7, 0.5)
#: Gaussian smoothing of the depth normals (pixels; radius 2 sigma), against renderer staircase steps.
NORMAL_SMOOTH_PX: float = 1.0


def _rgb(value: Any, name: str) -> RGB:
    try:
        r, g, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"PhotoConfig.{name} must be three numbers (RGB in [0, 1]), got {value!r}") from None
    if not all(0.0 <= c <= 1.0 for c in (r, g, b)):
        raise ConfigError(f"PhotoConfig.{name} must be RGB in [0, 1], got {value!r}")
    return (r, g, b)


@dataclass(frozen=True, kw_only=True, slots=True)
class PhotoConfig:
    """Appearance of photo-like query renders (see the module docstring for the model).

    Attributes
    ----------
    sun_azimuth_deg, sun_elevation_deg : float
        Sun direction: azimuth clockwise from north, elevation above the horizon (degrees).
    sun_jitter_deg : float
        Per photo, azimuth and elevation are drawn uniformly within +- this (elevation kept in [5, 85]).
    ambient : float
        Share of sky light in [0, 1): shade = ambient + (1 - ambient) * max(0, n . s).
    visibility_m : float
        Haze e-folding distance V, metres: transmittance exp(-d / V).
    haze_rgb, sky_horizon_rgb, sky_zenith_rgb, cloud_rgb : RGB in [0, 1]
        Haze colour, sky colour at the horizon and at the zenith, cloud colour.
    sky_exponent : float
        Sky gradient parameter t = clip(sin(elevation), 0, 1) ** sky_exponent.
    cloud_cover : float
        Fraction of the cloud layer covered, [0, 1] (0: clear sky).
    cloud_height_m : float
        Height of the cloud layer above the camera, metres.
    texture_amplitude : float
        Relative albedo modulation of the ground texture, [0, 1).
    noise_sigma_dn : float
        Gaussian sensor noise, standard deviation in 8-bit digital numbers (0: none).
    blur_sigma_px : float
        Gaussian blur, pixels (0: none).
    exposure_jitter_ev, color_jitter : float
        Standard deviations of the exposure (stops) and of the per-channel gains.
    perturb_amplitude_m : float
        Bound of the fine-scale relief added by :class:`PerturbedDEM`, metres (0: none).
    perturb_wavelength_min_m, perturb_wavelength_max_m : float
        Wavelength range of that relief, metres.
    seed : int
        Seed of the terrain perturbation (per-photo randomness comes from the ``rng`` argument).
    """

    sun_azimuth_deg: float = 200.0
    sun_elevation_deg: float = 35.0
    sun_jitter_deg: float = 0.0
    ambient: float = 0.3
    visibility_m: float = 30_000.0
    haze_rgb: RGB = (0.80, 0.85, 0.91)
    sky_horizon_rgb: RGB = (0.80, 0.86, 0.93)
    sky_zenith_rgb: RGB = (0.22, 0.42, 0.78)
    sky_exponent: float = 0.5
    cloud_cover: float = 0.0
    cloud_height_m: float = 2000.0
    cloud_rgb: RGB = (0.96, 0.96, 0.97)
    texture_amplitude: float = 0.15
    noise_sigma_dn: float = 2.0
    blur_sigma_px: float = 0.5
    exposure_jitter_ev: float = 0.15
    color_jitter: float = 0.03
    perturb_amplitude_m: float = 3.0
    perturb_wavelength_min_m: float = 100.0
    perturb_wavelength_max_m: float = 300.0
    seed: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rgb"):
                object.__setattr__(self, f.name, _rgb(value, f.name))
            elif f.name == "seed":
                if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
                    raise ConfigError(f"PhotoConfig.seed must be a non-negative integer, got {value!r}")
            elif not (isinstance(value, int | float) and math.isfinite(value)):
                raise ConfigError(f"PhotoConfig.{f.name} must be a finite number, got {value!r}")
        checks = (
            ("sun_elevation_deg", 0.0 < self.sun_elevation_deg <= 90.0, "in (0, 90]"),
            ("sun_jitter_deg", 0.0 <= self.sun_jitter_deg <= 45.0, "in [0, 45]"),
            ("ambient", 0.0 <= self.ambient < 1.0, "in [0, 1)"),
            ("visibility_m", self.visibility_m > 0.0, "> 0"),
            ("sky_exponent", self.sky_exponent > 0.0, "> 0"),
            ("cloud_cover", 0.0 <= self.cloud_cover <= 1.0, "in [0, 1]"),
            ("cloud_height_m", self.cloud_height_m > 0.0, "> 0"),
            ("texture_amplitude", 0.0 <= self.texture_amplitude < 1.0, "in [0, 1)"),
            ("noise_sigma_dn", self.noise_sigma_dn >= 0.0, ">= 0"),
            ("blur_sigma_px", self.blur_sigma_px >= 0.0, ">= 0"),
            ("exposure_jitter_ev", self.exposure_jitter_ev >= 0.0, ">= 0"),
            ("color_jitter", 0.0 <= self.color_jitter < 0.5, "in [0, 0.5)"),
            ("perturb_amplitude_m", self.perturb_amplitude_m >= 0.0, ">= 0"),
            (
                "perturb_wavelength_min_m",
                0.0 < self.perturb_wavelength_min_m <= self.perturb_wavelength_max_m,
                "> 0 and <= perturb_wavelength_max_m",
            ),
        )
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"PhotoConfig.{name} must be {why}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (colours as lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhotoConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


#: Named appearance presets. ``clean`` has no randomness besides the terrain perturbation seed.
PHOTO_PRESETS: dict[str, PhotoConfig] = {
    "paper": PhotoConfig(sun_jitter_deg=25.0, cloud_cover=0.35, noise_sigma_dn=2.5, blur_sigma_px=0.6),
    "cpu": PhotoConfig(sun_jitter_deg=25.0, cloud_cover=0.3),
    "tiny": PhotoConfig(sun_jitter_deg=25.0, cloud_cover=0.3, blur_sigma_px=0.0),
    "clean": PhotoConfig(texture_amplitude=0.0, noise_sigma_dn=0.0, blur_sigma_px=0.0, exposure_jitter_ev=0.0,
                         color_jitter=0.0),
}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Geometry from depth


def sun_direction_enu(azimuth_deg: float, elevation_deg: float) -> FloatArray:
    """(3,) float64 unit vector towards the sun in ENU (azimuth clockwise from north)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])


def _tangent(points: FloatArray, valid: npt.NDArray[np.bool_], axis: int) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """One-sided difference of ``points`` (H, W, 3) along ``axis``, towards the smaller depth jump."""
    nxt = np.roll(points, -1, axis=axis)
    prv = np.roll(points, 1, axis=axis)
    v_nxt = valid & np.roll(valid, -1, axis=axis)
    v_prv = valid & np.roll(valid, 1, axis=axis)
    edge = [slice(None)] * 2
    edge[axis] = slice(-1, None)
    v_nxt[tuple(edge)] = False
    edge[axis] = slice(0, 1)
    v_prv[tuple(edge)] = False
    fwd = nxt - points
    bwd = points - prv
    use_fwd = v_nxt & (~v_prv | (np.abs(fwd[..., 2]) <= np.abs(bwd[..., 2])))
    return np.where(use_fwd[..., None], fwd, bwd), v_nxt | v_prv


def normals_from_depth(depth: npt.ArrayLike, rays_cam: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Surface normals of a depth map, camera frame.

    Parameters
    ----------
    depth : (H, W) float
        z-depth along the optical axis, metres; sky (``SKY_DEPTH_M``) or any value <= 0 is no surface.
    rays_cam : (H, W, 3) float
        Camera-frame rays with z = 1 (:func:`crosslocate.render.camera.pixel_rays_cam`).

    Returns
    -------
    normals : (H, W, 3) float64
        Unit normals in the camera frame (x right, y down, z forward), oriented towards the camera
        (``n . P <= 0``); zeros where undefined.
    ok : (H, W) bool
        True where the normal is defined (surface pixel with a surface neighbour along both axes).
    """
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0.0)
    points = np.where(valid[..., None], d[..., None] * np.asarray(rays_cam, np.float64), 0.0)
    t_u, ok_u = _tangent(points, valid, axis=1)
    t_v, ok_v = _tangent(points, valid, axis=0)
    n = np.cross(t_u, t_v)
    norm = np.linalg.norm(n, axis=-1)
    ok = valid & ok_u & ok_v & (norm > 0.0)
    n = np.where(ok[..., None], n / np.where(norm > 0.0, norm, 1.0)[..., None], 0.0)
    flip = np.einsum("hwc,hwc->hw", n, points) > 0.0
    n[flip] *= -1.0
    return n, ok


def _smooth_normals(normals: FloatArray, ok: npt.NDArray[np.bool_], sigma_px: float) -> FloatArray:
    """Normalised-convolution Gaussian smoothing of unit normals over the ``ok`` pixels (radius 2 sigma)."""
    if sigma_px <= 0.0 or not ok.any():
        return normals
    weight = ok.astype(np.float64)
    num = ndimage.gaussian_filter(normals * weight[..., None], (sigma_px, sigma_px, 0.0), mode="nearest", truncate=2.0)
    den = ndimage.gaussian_filter(weight, sigma_px, mode="nearest", truncate=2.0)
    n = num / np.maximum(den, 1e-12)[..., None]
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
    return np.where(ok[..., None], n, normals)


def lambert_shade(normals_cam: FloatArray, sun_cam: FloatArray, ambient: float) -> FloatArray:
    """(H, W) float64 shade ``ambient + (1 - ambient) * max(0, n . s)`` (normals/sun in one frame)."""
    cos = np.clip(np.einsum("hwc,c->hw", normals_cam, sun_cam), 0.0, None)
    return ambient + (1.0 - ambient) * cos


def sky_colour(sin_elevation: FloatArray, cfg: PhotoConfig) -> FloatArray:
    """(..., 3) float64 sky RGB for rays with the given sine of elevation (horizon below 0)."""
    t = np.clip(sin_elevation, 0.0, 1.0) ** cfg.sky_exponent
    hor = np.asarray(cfg.sky_horizon_rgb)
    zen = np.asarray(cfg.sky_zenith_rgb)
    return hor + (zen - hor) * t[..., None]


def haze_blend(rgb: FloatArray, distance_m: FloatArray, cfg: PhotoConfig) -> FloatArray:
    """(..., 3) ``rgb * T + haze * (1 - T)`` with ``T = exp(-distance_m / visibility_m)``."""
    t = np.exp(-np.asarray(distance_m, np.float64) / cfg.visibility_m)[..., None]
    return rgb * t + np.asarray(cfg.haze_rgb) * (1.0 - t)


def _albedo(semantic: npt.NDArray[np.integer[Any]]) -> FloatArray:
    lut = np.tile(np.asarray(CLASS_ALBEDO[int(LandCover.ROCK)]), (256, 1))
    for cls, rgb in CLASS_ALBEDO.items():
        lut[cls] = rgb
    lut[LANDCOVER_NODATA] = CLASS_ALBEDO[int(LandCover.ROCK)]
    return lut[np.asarray(semantic, np.intp)]


def _texture(points_enu: FloatArray, footprint_m: FloatArray, amplitude: float, rng: np.random.Generator) -> FloatArray:
    """(H, W) float64 multiplicative texture ``1 + noise``, ``|noise| <= amplitude``, world-anchored."""
    if amplitude == 0.0:
        return np.ones(points_enu.shape[:2])
    waves = [PlaneWaves.random(rng, 3, (lam * 0.7, lam * 1.3), 1.0) for lam in TEXTURE_WAVELENGTHS_M]
    weights = amplitude * np.asarray(TEXTURE_WEIGHTS) / sum(TEXTURE_WEIGHTS)
    total = np.zeros(points_enu.shape[:2])
    for w, pw in zip(weights, waves, strict=True):
        total += w * pw(points_enu[..., 0], points_enu[..., 1], damping=footprint_m)
    return 1.0 + total


def _clouds(dir_enu: FloatArray, focal: float, cfg: PhotoConfig, rng: np.random.Generator) -> FloatArray:
    """(H, W) float64 cloud opacity in [0, 1] on a flat layer ``cloud_height_m`` above the camera.

    The layer carries a plane-wave field (wavelengths 0.8-6 km); opacity ramps from 0 to 1 above the
    ``1 - cloud_cover`` quantile of the field (taken as Gaussian with the field's standard deviation)
    and fades out towards the horizon, where the haze dominates. ``focal`` (pixels) sets the pixel
    footprint on the layer that band-limits the waves.
    """
    if cfg.cloud_cover == 0.0:
        return np.zeros(dir_enu.shape[:2])
    waves = PlaneWaves.random(rng, 12, (800.0, 6000.0), 1.0)
    sigma = float(np.sqrt(np.sum(np.square(waves.weight)) / 2.0))
    threshold = NormalDist(0.0, sigma).inv_cdf(min(max(1.0 - cfg.cloud_cover, 1e-6), 1.0 - 1e-6))
    up = dir_enu[..., 2]
    above = up > 1e-3
    scale = np.where(above, cfg.cloud_height_m / np.where(above, up, 1.0), 0.0)
    footprint = scale / (focal * np.maximum(up, 0.02))  # metres per pixel on the layer, grazing-stretched
    field = waves(dir_enu[..., 0] * scale, dir_enu[..., 1] * scale, damping=footprint)
    opacity = np.clip((field - threshold) / (0.5 * sigma), 0.0, 1.0)
    fade = np.clip(up / 0.1, 0.0, 1.0)
    return np.where(above, opacity * fade, 0.0)


# ---------------------------------------------------------------------------------------------------
# Composition


def _check_views(depth: npt.ArrayLike, semantic: npt.ArrayLike) -> tuple[FloatArray, npt.NDArray[np.uint8]]:
    d = np.asarray(depth, dtype=np.float64)
    s = np.asarray(semantic)
    if d.ndim != 2 or s.shape != d.shape:
        raise RenderError(f"compose_photo needs depth and semantic of one (H, W) shape, got {d.shape} and {s.shape}")
    if not np.issubdtype(s.dtype, np.integer):
        raise RenderError(f"semantic must hold integer LandCover ids, got dtype {s.dtype}")
    return d, s.astype(np.uint8, copy=False)


def _terrain_rgb(
    d: FloatArray,
    semantic: npt.NDArray[np.uint8],
    rays: FloatArray,
    rot: FloatArray,
    sun_enu: FloatArray,
    fov_deg: float,
    cfg: PhotoConfig,
    rng: np.random.Generator,
) -> FloatArray:
    """(H, W, 3) lit, textured, hazy terrain colour (meaningless on sky pixels)."""
    w = d.shape[1]
    normals, ok = normals_from_depth(d, rays)
    normals = _smooth_normals(normals, ok, NORMAL_SMOOTH_PX)
    up_cam = rot.T @ np.array([0.0, 0.0, 1.0])
    normals[~ok] = up_cam
    shade = lambert_shade(normals, rot.T @ sun_enu, cfg.ambient)
    surface = np.isfinite(d) & (d > 0.0)
    dd = np.where(surface, d, 0.0)
    ray_len = np.linalg.norm(rays, axis=-1)
    distance = dd * ray_len
    points_enu = (dd[..., None] * rays) @ rot.T
    texture = _texture(points_enu, distance / focal_px(fov_deg, w), cfg.texture_amplitude, rng)
    rgb = _albedo(semantic) * (shade * texture)[..., None]
    water = semantic == int(LandCover.WATER)
    if water.any():
        dir_up = (rays @ rot.T)[..., 2] / ray_len
        cos_inc = np.clip(-dir_up, 0.0, 1.0)
        fresnel = (WATER_F0 + (1.0 - WATER_F0) * (1.0 - cos_inc) ** 5)[..., None]
        reflected = sky_colour(-dir_up, cfg)
        rgb = np.where(water[..., None], (1.0 - fresnel) * rgb + fresnel * reflected, rgb)
    return haze_blend(rgb, distance, cfg)


def compose_photo(
    depth: npt.ArrayLike,
    semantic: npt.ArrayLike,
    pose: Pose,
    cfg: PhotoConfig,
    rng: np.random.Generator,
) -> npt.NDArray[np.uint8]:
    """Turn one camera's depth and semantic views into a photo-like RGB image (pure numpy/scipy).

    Parameters
    ----------
    depth : (H, W) float
        z-depth along the optical axis, metres; sky = ``SKY_DEPTH_M`` (any value <= 0 or NaN is sky).
    semantic : (H, W) integer
        :class:`~crosslocate.dem.landcover.LandCover` ids (ignored on sky pixels).
    pose : Pose
        The camera (orientation and horizontal FOV are used; the image size comes from ``depth``).
    cfg : PhotoConfig
        Appearance.
    rng : numpy.random.Generator
        Per-photo randomness (sun jitter, texture, clouds, exposure, colour, sensor noise), drawn
        in that order.

    Returns
    -------
    (H, W, 3) uint8 RGB, row 0 at the top.
    """
    d, sem = _check_views(depth, semantic)
    h, w = d.shape
    validate_camera(pose.fov_deg, w, h)
    rays = pixel_rays_cam(pose.fov_deg, w, h)
    rot = rotation_cam_to_enu(pose.yaw_deg, pose.pitch_deg, pose.roll_deg)
    jitter = rng.uniform(-cfg.sun_jitter_deg, cfg.sun_jitter_deg, 2)
    sun_el = float(np.clip(cfg.sun_elevation_deg + jitter[1], min(5.0, cfg.sun_elevation_deg), 85.0))
    sun_enu = sun_direction_enu(cfg.sun_azimuth_deg + jitter[0], sun_el)
    surface = np.isfinite(d) & (d > 0.0)
    rgb = np.empty((h, w, 3))
    if surface.any():
        rgb[:] = _terrain_rgb(d, sem, rays, rot, sun_enu, pose.fov_deg, cfg, rng)
    dir_enu = (rays / np.linalg.norm(rays, axis=-1, keepdims=True)) @ rot.T
    sky = sky_colour(dir_enu[..., 2], cfg)
    if cfg.cloud_cover > 0.0:
        opacity = _clouds(dir_enu, focal_px(pose.fov_deg, w), cfg, rng)[..., None]
        sky = sky * (1.0 - opacity) + np.asarray(cfg.cloud_rgb) * opacity
    rgb = np.where(surface[..., None], rgb, sky)
    gain = 2.0 ** rng.normal(0.0, cfg.exposure_jitter_ev) * (1.0 + rng.normal(0.0, cfg.color_jitter, 3))
    rgb = rgb * gain
    if cfg.blur_sigma_px > 0.0:
        rgb = ndimage.gaussian_filter(rgb, sigma=(cfg.blur_sigma_px, cfg.blur_sigma_px, 0.0), mode="nearest")
    out = np.clip(rgb, 0.0, 1.0) * 255.0
    if cfg.noise_sigma_dn > 0.0:
        out = out + rng.normal(0.0, cfg.noise_sigma_dn, out.shape)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------
# Rendering through the view renderer


def square_render_geometry(fov_deg: float, width_px: int, height_px: int) -> tuple[int, float, int, int]:
    """A square render that contains a W x H camera: ``(size_px, square_fov_deg, row0, col0)``.

    The square has side ``S = max(W, H)`` and the focal length ``f`` of the W x H camera (so its
    horizontal FOV is ``2 atan(S / 2f)``); the W x H image is the crop ``[row0 : row0 + H, col0 :
    col0 + W]`` around the common principal point. When W and H differ in parity the crop is off by
    half a pixel along the shorter axis.
    """
    validate_camera(fov_deg, width_px, height_px)
    size = max(width_px, height_px)
    f = focal_px(fov_deg, width_px)
    square_fov = math.degrees(2.0 * math.atan(0.5 * size / f))
    return size, square_fov, (size - height_px) // 2, (size - width_px) // 2


class PhotoRenderer:
    """Renders photos of many cameras with one render backend (context manager, :meth:`close`).

    Depth and semantic views come from :class:`crosslocate.render.views.ViewRenderer` (one backend for
    all calls); a W x H camera is rendered as the square of :func:`square_render_geometry` and
    cropped, so any size and FOV work.

    Parameters
    ----------
    render_config : RenderConfig, optional
        Range, refraction, near plane and backend of the views (default: ``RenderConfig()``); its
        ``size_px`` and ``modalities`` are set per camera (the FOV comes from the pose).
    """

    def __init__(self, render_config: RenderConfig | None = None) -> None:
        from crosslocate.render.config import RenderConfig

        self.render_config = render_config if render_config is not None else RenderConfig()
        self._backend: Any = None
        self._views: Any = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Release the backend. Idempotent."""
        if self._views is not None:
            self._views.close()  # leaves the shared backend open
            self._views = None
        if self._backend is not None:
            backend, self._backend = self._backend, None
            backend.close()

    def views(
        self, dem: Any, pose: Pose, width_px: int, height_px: int
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
        """Depth and semantic views of one W x H camera.

        Returns
        -------
        depth : (H, W) float32
            z-depth metres, sky = ``SKY_DEPTH_M``.
        semantic : (H, W) uint8
            LandCover ids, sky = ``LandCover.SKY``.
        """
        import dataclasses

        from crosslocate.render.backends import open_backend
        from crosslocate.render.views import ViewRenderer

        size, fov, r0, c0 = square_render_geometry(pose.fov_deg, width_px, height_px)
        cfg = dataclasses.replace(self.render_config, size_px=size, modalities=(Modality.DEPTH, Modality.SEMANTIC))
        if self._views is None or self._views.dem is not dem or self._views.cfg != cfg:
            if self._backend is None:
                self._backend = open_backend(cfg)
            self._views = ViewRenderer(dem, cfg, backend=self._backend)
        batch = self._views.render([dataclasses.replace(pose, fov_deg=fov)])
        depth = np.asarray(batch.arrays[Modality.DEPTH][0], np.float32)[r0 : r0 + height_px, c0 : c0 + width_px]
        semantic = np.asarray(batch.arrays[Modality.SEMANTIC][0], np.uint8)[r0 : r0 + height_px, c0 : c0 + width_px]
        return depth, semantic

    def render(
        self, dem: Any, pose: Pose, width_px: int, height_px: int, rng: np.random.Generator, cfg: PhotoConfig
    ) -> npt.NDArray[np.uint8]:
        """(H, W, 3) uint8 photo of ``pose`` over ``dem`` (see :func:`render_photo`)."""
        _check_above_ground(dem, pose)
        depth, semantic = self.views(dem, pose, width_px, height_px)
        return compose_photo(depth, semantic, pose, cfg, rng)


def _check_above_ground(dem: Any, pose: Pose) -> None:
    ground = float(np.asarray(dem.sample([pose.lon], [pose.lat]), np.float64)[0])
    if not math.isfinite(ground):
        raise OutsideCoverageError(f"camera at lon={pose.lon:.6f}, lat={pose.lat:.6f} is outside the DEM coverage")
    if pose.alt_m <= ground:
        raise RenderError(
            f"camera at lon={pose.lon:.6f}, lat={pose.lat:.6f} is {ground - pose.alt_m:.2f} m below the terrain "
            f"(alt_m={pose.alt_m:.2f}, ground {ground:.2f} m); sample poses on the DEM that is rendered"
        )


def render_photo(
    dem: Any,
    pose: Pose,
    width_px: int,
    height_px: int,
    rng: np.random.Generator,
    cfg: PhotoConfig,
    *,
    render_config: RenderConfig | None = None,
) -> npt.NDArray[np.uint8]:
    """Render one photo-like image.

    Parameters
    ----------
    dem : DEM-like
        What is rendered as is -- pass :func:`perturb_dem` ``(dem, cfg)`` for query photos.
    pose : Pose
        Camera (any pitch/roll, horizontal FOV in (0, 180)); must be above the terrain.
    width_px, height_px : int
        Image size.
    rng : numpy.random.Generator
        Per-photo randomness (see :func:`compose_photo`).
    cfg : PhotoConfig
        Appearance.
    render_config : RenderConfig, optional
        Range / backend of the underlying views (see :class:`PhotoRenderer`).

    Returns
    -------
    (H, W, 3) uint8 RGB, row 0 at the top.
    """
    with PhotoRenderer(render_config) as renderer:
        return renderer.render(dem, pose, width_px, height_px, rng, cfg)


__all__ = [
    "CLASS_ALBEDO",
    "PHOTO_PRESETS",
    "PerturbedDEM",
    "PhotoConfig",
    "PhotoRenderer",
    "PlaneWaves",
    "compose_photo",
    "haze_blend",
    "lambert_shade",
    "normals_from_depth",
    "perturb_dem",
    "render_photo",
    "sky_colour",
    "square_render_geometry",
    "sun_direction_enu",
]
