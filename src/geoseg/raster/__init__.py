"""Raster input and output: open/validate sources, scene-level stretch, window planning, the scene writer."""

from geoseg.raster.io import RasterSource, open_source, parse_bands, to_display_rgb

__all__ = ["RasterSource", "open_source", "parse_bands", "to_display_rgb"]
