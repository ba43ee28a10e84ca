"""Rendering of DEM views: camera model, local terrain frame, backends, derived modalities."""
