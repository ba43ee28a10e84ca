"""Land-cover classes (the one definition of semantic class ids).

``LandCover`` ids are what semantic views store (uint8). ``SKY`` is added by the renderer; the
other classes come from a land-cover raster (rule-based from the DEM, or a user raster).
"""

from __future__ import annotations

from enum import IntEnum


class LandCover(IntEnum):
    """Semantic class ids stored in semantic views (uint8)."""

    SKY = 0
    WATER = 1
    GLACIER = 2  # glacier and permanent snow
    ROCK = 3  # bare rock, scree
    FOREST = 4
    GRASSLAND = 5  # alpine meadows, pasture, shrubs, cropland
    BUILT = 6  # settlements (only from user rasters)


#: RGB palette, uint8, indexed by class id.
LANDCOVER_PALETTE: dict[LandCover, tuple[int, int, int]] = {
    LandCover.SKY: (135, 190, 235),
    LandCover.WATER: (40, 90, 200),
    LandCover.GLACIER: (240, 245, 250),
    LandCover.ROCK: (130, 120, 110),
    LandCover.FOREST: (30, 100, 40),
    LandCover.GRASSLAND: (150, 200, 90),
    LandCover.BUILT: (200, 60, 60),
}
