"""Reading display RGB the way :func:`geoseg.data.imagery.read_rgb` renders rows."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from geoseg.data.imagery import apply_stretch
from geoseg.errors import InputError


def read_full(path: str, bands: Sequence[int] | None = None) -> np.ndarray:
    """All pixels of ``bands`` (1-based; all when ``None``) of a raster as ``H x W x C``."""
    return read_full_palette(path, bands)[0]


def read_full_palette(path: str, bands: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """All pixels of ``bands`` as ``H x W x C``, and the colour table when they are one palette band.

    The table is :func:`geoseg.raster.io.palette_lut`'s ``N x 3`` uint8 lookup (``None`` for any
    other image): an indexed-colour PNG or GeoTIFF stores table indices, which are shown as the
    table's colours, as :func:`geoseg.data.imagery.read_rgb` renders rows and segment/serve read them.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    from geoseg.raster.io import palette_lut

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                idx = list(bands) if bands else list(range(1, src.count + 1))
                if max(idx) > src.count:
                    raise InputError(f"{path} has {src.count} bands, band {max(idx)} was asked for",
                                     "choose bands that exist (1-based)")
                data = src.read(idx)
                lut = palette_lut(src, idx)
    except RasterioIOError as exc:
        raise InputError(f"cannot read image {path} ({exc})", "check that the file exists and is a readable raster") from exc
    return np.transpose(data, (1, 2, 0)), lut


def scene_stretch(data: np.ndarray, low: float = 2.0, high: float = 98.0,
                  valid: np.ndarray | None = None) -> list[list[float]]:
    """Scene-level percentile stretch per band (one for the whole scene, so tiles have no seams)."""
    out = []
    for i in range(data.shape[2]):
        band = data[:, :, i].astype(np.float64)
        vals = band[valid] if valid is not None else band.ravel()
        vals = vals[np.isfinite(vals)]
        if vals.size == 0:
            out.append([0.0, 1.0])
            continue
        lo, hi = np.percentile(vals, [low, high])
        if hi <= lo:
            hi = lo + 1.0
        out.append([float(np.float32(lo)), float(np.float32(hi))])
    return out


def to_display(data: np.ndarray, stretch: list[list[float]]) -> np.ndarray:
    """Display RGB (uint8, 3 channels) of ``data`` under ``stretch``, as ``read_rgb`` does."""
    rgb = apply_stretch(data, stretch)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[:, :, :3])
