"""crosslocate: rendered DEM databases and cross-modal visual geo-localization in mountains."""

__version__ = "0.1.0"
