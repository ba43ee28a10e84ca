"""Seeded fine-scale relief added to a DEM, so query photos are not pixel copies of database views.

Database views are rendered from the DEM itself. Queries are rendered from :class:`PerturbedDEM`, a
wrapper that duck-types the DEM contract and adds seeded fine-scale relief: the sum of ``n_waves``
plane waves with wavelengths uniform in ``[perturb_wavelength_min_m, perturb_wavelength_max_m]``
(default 100-300 m), random directions and phases, and positive weights summing to
``perturb_amplitude_m`` -- so ``|perturbed - original| <= perturb_amplitude_m`` everywhere, exactly,
and coverage (NaN outside) is unchanged. The waves live in the DEM's own projected CRS, centred on its bounds
(an azimuthal-equidistant frame at the DEM centre when the DEM is geographic), so the renderer's
native-coordinate sampling needs no reprojection.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import numpy.typing as npt

from crosslocate.dem import geodesy
from crosslocate.errors import ConfigError

if TYPE_CHECKING:
    from crosslocate.render.photo import PhotoConfig

FloatArray = npt.NDArray[np.float64]


# ---------------------------------------------------------------------------------------------------
# Smooth bounded noise: sums of plane waves (exact amplitude bound, evaluable at any point)


@dataclass(frozen=True, slots=True)
class PlaneWaves:
    """``f(x, y) = sum_k w_k cos(kx_k x + ky_k y + phase_k)``; ``|f| <= sum_k w_k``.

    Attributes
    ----------
    kx, ky : (K,) float64
        Wave vectors, radians per metre (x east, y north).
    phase : (K,) float64
        Radians.
    weight : (K,) float64
        Non-negative amplitudes.
    """

    kx: FloatArray
    ky: FloatArray
    phase: FloatArray
    weight: FloatArray

    @classmethod
    def random(
        cls, rng: np.random.Generator, n_waves: int, wavelength_m: tuple[float, float], amplitude: float
    ) -> PlaneWaves:
        """K waves, wavelengths uniform in ``wavelength_m``, weights in [0.5, 1] scaled to sum to ``amplitude``."""
        theta = rng.uniform(0.0, 2.0 * math.pi, n_waves)
        lam = rng.uniform(wavelength_m[0], wavelength_m[1], n_waves)
        phase = rng.uniform(0.0, 2.0 * math.pi, n_waves)
        w = rng.uniform(0.5, 1.0, n_waves)
        w *= amplitude / w.sum()
        k = 2.0 * math.pi / lam
        return cls(kx=k * np.cos(theta), ky=k * np.sin(theta), phase=phase, weight=w)

    def __call__(self, x: npt.ArrayLike, y: npt.ArrayLike, damping: npt.ArrayLike | None = None) -> FloatArray:
        """Evaluate at metres ``x``, ``y`` (any broadcastable shape), float64.

        ``damping`` (optional, same shape as the points) is a length in metres: wave ``k`` is scaled
        by ``exp(-(damping * |k| / 2 pi) ** 2)`` (band-limiting for a pixel footprint of that size).
        """
        # float32 arithmetic (phases of the callers' centred coordinates stay below ~1e4 rad, where
        # float32 keeps ~1e-3 rad): 3-4x faster than float64 on the millions of terrain nodes.
        xa, ya = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float32)
        shape = np.broadcast_shapes(xa.shape, ya.shape)
        out = np.zeros(shape, np.float32)
        arg = np.empty(shape, np.float32)
        tmp = np.empty(shape, np.float32)
        kabs = np.hypot(self.kx, self.ky) / (2.0 * math.pi)
        damp = None if damping is None else np.asarray(damping, np.float32)
        for k in range(self.kx.size):
            np.multiply(xa, np.float32(self.kx[k]), out=arg)
            np.multiply(ya, np.float32(self.ky[k]), out=tmp)
            arg += tmp
            arg += np.float32(self.phase[k])
            np.cos(arg, out=arg)
            arg *= np.float32(self.weight[k])
            if damp is not None:
                np.multiply(damp, np.float32(kabs[k]), out=tmp)
                np.square(tmp, out=tmp)
                np.negative(tmp, out=tmp)
                np.exp(tmp, out=tmp)
                arg *= tmp
            out += arg
        return out.astype(np.float64)


# ---------------------------------------------------------------------------------------------------
# The perturbed DEM


def _delegated(name: str, doc: str) -> property:
    """A read-only property returning ``self.base.<name>``."""
    return property(lambda self: getattr(self.base, name), doc=doc)


class PerturbedDEM:
    """A DEM wrapper adding seeded, smooth fine-scale relief (see the module docstring).

    Duck-types :class:`crosslocate.dem.mosaic.DEM`: ``sample``, ``elevation``, ``sample_native``,
    ``sample_xy`` add the relief; ``covers``, ``landcover``, ``to_native`` and the metadata are the
    base DEM's; ``checksum`` hashes the base checksum with the perturbation parameters. The wrapper
    does not own the base DEM: :meth:`close` leaves it open.

    Parameters
    ----------
    dem : DEM
        The base DEM.
    amplitude_m : float
        Bound of ``|perturbed - base|``, metres.
    wavelength_m : (float, float)
        Wavelength range of the relief, metres.
    seed : int
        Seed of the waves.
    n_waves : int
        Number of plane waves.
    """

    def __init__(
        self,
        dem: Any,
        amplitude_m: float,
        wavelength_m: tuple[float, float] = (100.0, 300.0),
        seed: int = 0,
        n_waves: int = 24,
    ) -> None:
        if not (math.isfinite(amplitude_m) and amplitude_m >= 0.0):
            raise ConfigError(f"PerturbedDEM amplitude_m must be >= 0, got {amplitude_m!r}")
        if not 0.0 < wavelength_m[0] <= wavelength_m[1] or n_waves < 1:
            raise ConfigError(
                f"PerturbedDEM needs 0 < min <= max wavelength and n_waves >= 1, got {wavelength_m}, {n_waves}"
            )
        self.base = dem
        self.amplitude_m = float(amplitude_m)
        self.wavelength_m = (float(wavelength_m[0]), float(wavelength_m[1]))
        self.seed = int(seed)
        self.n_waves = int(n_waves)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 0x7E4B]))
        self.waves = PlaneWaves.random(rng, self.n_waves, self.wavelength_m, self.amplitude_m)
        # The waves live in a metric frame: the base DEM's own CRS when it is projected (then the
        # renderer's native-coordinate sampling needs no reprojection), else a local azimuthal
        # equidistant frame at the DEM centre.
        # Coordinates are centred on ``frame_origin`` so the wave phases stay small.
        if geodesy.crs_is_projected(dem.crs_wkt):
            self.frame_wkt: str = dem.crs_wkt
            x0, y0, x1, y1 = (float(v) for v in dem.bounds_native)
            self.frame_origin = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
        else:
            west, south, east, north = (float(v) for v in dem.bounds_lonlat)
            self.frame_wkt = geodesy.aeqd_crs_wkt((west + east) / 2.0, (south + north) / 2.0)
            self.frame_origin = (0.0, 0.0)

    @classmethod
    def from_config(cls, dem: Any, cfg: PhotoConfig) -> PerturbedDEM:
        """Wrap ``dem`` with the perturbation settings of ``cfg``."""
        return cls(dem, cfg.perturb_amplitude_m, (cfg.perturb_wavelength_min_m, cfg.perturb_wavelength_max_m), cfg.seed)

    # ------------------------------------------------------------------ lifecycle / metadata
    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to free (the base DEM belongs to the caller)."""

    def params(self) -> dict[str, Any]:
        """The perturbation parameters (JSON-friendly)."""
        return {
            "amplitude_m": self.amplitude_m,
            "wavelength_m": list(self.wavelength_m),
            "seed": self.seed,
            "n_waves": self.n_waves,
        }

    @property
    def checksum(self) -> str:
        """sha256 over the base checksum and :meth:`params`."""
        text = json.dumps({"base": self.base.checksum, "perturbation": self.params()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    sources = _delegated("sources", "The base DEM's tile paths.")
    synthetic = _delegated("synthetic", "Whether the base DEM is generated terrain.")
    crs_wkt = _delegated("crs_wkt", "Native CRS of the base DEM (WKT).")
    bounds_lonlat = _delegated("bounds_lonlat", "(west, south, east, north) degrees EPSG:4326 of the base DEM.")
    bounds_native = _delegated("bounds_native", "Cell-edge footprint of the base DEM in its native CRS.")
    resolution_m = _delegated("resolution_m", "Approximate ground spacing of the base DEM, metres.")

    def info(self) -> dict[str, Any]:
        """The base DEM's :meth:`info` with ``perturbation`` and this checksum."""
        out = dict(self.base.info())
        out["perturbation"] = self.params()
        out["checksum"] = self.checksum
        return out

    # ------------------------------------------------------------------ sampling
    def offset_lonlat(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> FloatArray:
        """(N,) float64 relief added at lon/lat degrees (EPSG:4326), metres, ``|.| <= amplitude_m``."""
        return self._offset_crs(lon, lat, "EPSG:4326")

    def _offset_crs(self, x: npt.ArrayLike, y: npt.ArrayLike, crs: str) -> FloatArray:
        if crs == self.frame_wkt:
            fx, fy = np.ravel(x), np.ravel(y)
        else:
            fx, fy = geodesy.transform_xy(np.ravel(x), np.ravel(y), crs, self.frame_wkt)
        return self.waves(
            np.asarray(fx, np.float64) - self.frame_origin[0], np.asarray(fy, np.float64) - self.frame_origin[1]
        )

    def sample(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> FloatArray:
        """Perturbed bilinear elevation, (N,) float64 metres; NaN outside coverage (as the base)."""
        return np.asarray(self.base.sample(lon, lat), np.float64) + self.offset_lonlat(lon, lat)

    def elevation(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> FloatArray:
        """Like :meth:`sample`; raises :class:`OutsideCoverageError` (from the base) outside coverage."""
        return np.asarray(self.base.elevation(lon, lat), np.float64) + self.offset_lonlat(lon, lat)

    def sample_native(self, x: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
        """Perturbed elevation at native coordinates of the base DEM, (N,) float64; NaN outside."""
        return np.asarray(self.base.sample_native(x, y), np.float64) + self._offset_crs(x, y, self.crs_wkt)

    def sample_xy(self, x: npt.ArrayLike, y: npt.ArrayLike, crs: str | None = None) -> FloatArray:
        """Perturbed elevation at projected ``(x, y)`` in ``crs`` (default native), (N,) float64."""
        src = self.crs_wkt if crs is None else geodesy.crs_wkt(crs)
        return np.asarray(self.base.sample_xy(x, y, crs), np.float64) + self._offset_crs(x, y, src)

    def to_native(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
        return self.base.to_native(lon, lat)  # type: ignore[no-any-return]

    def covers(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.bool_]:
        return np.asarray(self.base.covers(lon, lat), bool)

    def landcover(self, lon: npt.ArrayLike, lat: npt.ArrayLike) -> npt.NDArray[np.uint8]:
        """The base DEM's land cover (a few metres of relief do not change classes)."""
        return np.asarray(self.base.landcover(lon, lat), np.uint8)


def perturb_dem(dem: Any, cfg: PhotoConfig) -> Any:
    """``PerturbedDEM.from_config(dem, cfg)``, or ``dem`` itself when ``cfg.perturb_amplitude_m == 0``."""
    if cfg.perturb_amplitude_m == 0.0:
        return dem
    return PerturbedDEM.from_config(dem, cfg)


__all__ = ["PerturbedDEM", "PlaneWaves", "perturb_dem"]
