"""Orchestration: presets, dask build graphs, end-to-end flows and the command line."""
