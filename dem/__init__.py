"""Geographic foundation: DEM sources, geodesy, land cover, regions, positions and splits."""
