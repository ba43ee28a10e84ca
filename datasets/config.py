"""Storage settings of rendered databases (:class:`ShardConfig`, :data:`SHARD_PRESETS`).

Pure dataclasses (standard library + errors only): the codec math lives in
:mod:`crosslocate.datasets.codecs`, the HDF5 mechanics in :mod:`crosslocate.datasets.shards`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from crosslocate.errors import ConfigError
from crosslocate.fileio import config_from_dict, config_to_dict

#: Blosc compressors understood by the shard writer.
COMPRESSORS: tuple[str, ...] = ("zstd", "lz4", "lz4hc", "zlib", "blosclz")
#: Blosc shuffle filters (``none``, byte ``shuffle``, ``bitshuffle``).
SHUFFLES: tuple[str, ...] = ("none", "byte", "bit")
#: Depth codecs (see :mod:`crosslocate.datasets.codecs`).
DEPTH_CODECS: tuple[str, ...] = ("logq16", "float32")
#: Reversible prediction transforms applied to depth codes before compression.
DEPTH_DELTAS: tuple[str, ...] = ("none", "row", "col")


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardConfig:
    """How views are grouped into shard files and encoded.

    Attributes
    ----------
    views_per_shard : int
        Target number of views per shard file (rounded down to whole positions, at least one
        position per shard). Shards are the unit of parallelism, resume and verification.
    depth_codec : str
        ``"logq16"``: log-quantised uint16 codes with a stated maximum relative error (default);
        ``"float32"``: lossless float32 metres (about 12x larger; see :mod:`crosslocate.datasets.codecs`).
    depth_rel_error : float
        Maximum relative error of ``logq16`` for depths in ``[depth_min_m, depth_max_m]``
        (decoded / true - 1, absolute value). 5e-4 is 15 m at 30 km, far below the 30-90 m
        DEM spacing that shapes the depth maps.
    depth_min_m, depth_max_m : float
        Range of the ``logq16`` code book, metres. Depths in ``[0, depth_min_m)`` decode to
        ``depth_min_m`` (absolute error below ``depth_min_m``); depths above ``depth_max_m`` are
        refused when encoding.
    depth_delta : str
        Reversible predictor on the uint16 codes before compression: ``"row"`` (difference to the
        pixel on the left, along each row, modulo 2^16), ``"col"`` (difference to the pixel above)
        or ``"none"``.
    compressor : str
        Blosc compressor (``zstd`` default; ``lz4`` is faster to decode, larger).
    clevel : int
        Blosc compression level, 1..9. Default 2: on 500 px real-SRTM views (one core, zstd) level 2
        costs ~1.8 ms per view for all three modalities and stores 43 KB, level 5 costs ~7 ms and
        stores 33 KB; at 300 views/s on 2 cores a build has ~6.7 ms per view for everything.
    depth_shuffle, mask_shuffle, label_shuffle : str
        Blosc shuffle of the depth codes, the silhouette masks and the semantic labels
        (``byte``, ``bit`` or ``none``). Bit shuffle packs the {0, 1} silhouettes 8 per byte.
    """

    views_per_shard: int = 120
    depth_codec: str = "logq16"
    depth_rel_error: float = 5e-4
    depth_min_m: float = 0.5
    depth_max_m: float = 1_000_000.0
    depth_delta: str = "row"
    compressor: str = "zstd"
    clevel: int = 2
    depth_shuffle: str = "byte"
    mask_shuffle: str = "bit"
    label_shuffle: str = "byte"

    def __post_init__(self) -> None:
        if not isinstance(self.views_per_shard, int) or self.views_per_shard < 1:
            raise ConfigError(f"ShardConfig.views_per_shard must be an integer >= 1, got {self.views_per_shard!r}")
        if self.depth_codec not in DEPTH_CODECS:
            raise ConfigError(f"ShardConfig.depth_codec {self.depth_codec!r}: choose one of {DEPTH_CODECS}")
        if not (math.isfinite(self.depth_rel_error) and 0.0 < self.depth_rel_error < 0.1):
            raise ConfigError(f"ShardConfig.depth_rel_error must be in (0, 0.1), got {self.depth_rel_error}")
        if not (0.0 < self.depth_min_m < self.depth_max_m < math.inf):
            raise ConfigError(
                f"ShardConfig needs 0 < depth_min_m < depth_max_m < inf, got {self.depth_min_m}, {self.depth_max_m}"
            )
        if self.depth_delta not in DEPTH_DELTAS:
            raise ConfigError(f"ShardConfig.depth_delta {self.depth_delta!r}: choose one of {DEPTH_DELTAS}")
        if self.compressor not in COMPRESSORS:
            raise ConfigError(f"ShardConfig.compressor {self.compressor!r}: choose one of {COMPRESSORS}")
        if not isinstance(self.clevel, int) or not 1 <= self.clevel <= 9:
            raise ConfigError(f"ShardConfig.clevel must be an integer in 1..9, got {self.clevel!r}")
        for name in ("depth_shuffle", "mask_shuffle", "label_shuffle"):
            if getattr(self, name) not in SHUFFLES:
                raise ConfigError(f"ShardConfig.{name} {getattr(self, name)!r}: choose one of {SHUFFLES}")
        if self.depth_codec == "logq16":
            n_codes = math.log(self.depth_max_m / self.depth_min_m) / (2.0 * math.log1p(self.depth_rel_error)) + 2
            if n_codes > 65535:
                raise ConfigError(
                    f"ShardConfig: logq16 needs {n_codes:.0f} codes for depth_rel_error={self.depth_rel_error} over "
                    f"[{self.depth_min_m}, {self.depth_max_m}] m, more than 65535; raise depth_rel_error or narrow the range"
                )

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the fields."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        return config_from_dict(cls, data)


#: Named storage settings. ``tiny`` uses small shards so a handful of positions gives several files.
SHARD_PRESETS: dict[str, ShardConfig] = {
    "paper": ShardConfig(views_per_shard=240),
    "cpu": ShardConfig(views_per_shard=120),
    "tiny": ShardConfig(views_per_shard=24),
}
