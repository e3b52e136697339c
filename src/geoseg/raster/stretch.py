"""Scene-level display statistics, computed once per scene and never per tile.

Stretching every tile by its own percentiles makes neighbouring tiles look different
and the model sees seams. Here the statistics come from one cheap look at the whole
scene: a decimated read (GDAL serves it from an overview when the file has one) for
small or pyramided files, or a regular grid of sample windows for big flat files, so
the cost does not grow with the scene. The same pass detects an empty or
all-nodata scene.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
from rasterio.windows import Window

from geoseg.errors import InputError

if TYPE_CHECKING:
    from geoseg.raster.io import RasterSource

log = logging.getLogger(__name__)

#: percentiles mapped to 0 and 255
LOW_PCT, HIGH_PCT = 2.0, 98.0
#: long side of the decimated read used for small or pyramided scenes
OVERVIEW_SIZE = 1024
#: scenes up to this many pixels per side are read decimated even without overviews
DECIMATE_LIMIT = 4096
#: sample grid for big scenes without overviews: GRID x GRID windows of SAMPLE px
GRID, SAMPLE = 8, 256


def _decimated_shape(src: RasterSource, size: int = OVERVIEW_SIZE) -> tuple[int, int]:
    scale = min(1.0, size / max(src.width, src.height))
    return max(1, round(src.height * scale)), max(1, round(src.width * scale))


def _sample_windows(src: RasterSource) -> list[Window]:
    n = GRID
    w = min(SAMPLE, src.width)
    h = min(SAMPLE, src.height)
    cols = np.linspace(0, src.width - w, n).round().astype(int)
    rows = np.linspace(0, src.height - h, n).round().astype(int)
    return [Window(int(c), int(r), w, h) for r in rows for c in cols]


def sample_pixels(src: RasterSource) -> tuple[np.ndarray, np.ndarray]:
    """A scene-wide sample of the chosen bands: ``(values C x N, valid N)``, bounded in size."""
    has_overviews = bool(src.dataset.overviews(src.bands[0]))
    if has_overviews or max(src.width, src.height) <= DECIMATE_LIMIT:
        win = Window(0, 0, src.width, src.height)
        shape = _decimated_shape(src)
        raw = src.read_raw(win, shape)
        valid = src.read_valid(win, shape, raw=raw)
        return raw.reshape(raw.shape[0], -1), valid.reshape(-1)
    raws, valids = [], []
    for win in _sample_windows(src):
        raw = src.read_raw(win)
        raws.append(raw.reshape(raw.shape[0], -1))
        valids.append(src.read_valid(win, raw=raw).reshape(-1))
    return np.concatenate(raws, axis=1), np.concatenate(valids)


def scene_stretch(src: RasterSource) -> list[list[float]] | None:
    """Per display band ``[lo, hi]`` (2nd/98th percentile of valid pixels), or ``None`` for uint8 data.

    Raises:
        InputError: when the scene has no valid pixel (empty or all nodata).
    """
    values, valid = sample_pixels(src)
    if not valid.any():
        # the sample may have missed a small valid area: look at the whole scene, decimated
        win = Window(0, 0, src.width, src.height)
        shape = _decimated_shape(src, 2048)
        raw = src.read_raw(win, shape)
        full_valid = src.read_valid(win, shape, raw=raw)
        if not full_valid.any():
            raise InputError(
                f"{src.path} has no valid pixels (every pixel is nodata)",
                "check the nodata value of the file or give another scene",
            )
        values, valid = raw.reshape(raw.shape[0], -1), full_valid.reshape(-1)
    if np.dtype(src.dtype) == np.uint8:
        return None
    out: list[list[float]] = []
    for band in values:
        v = band[valid].astype(np.float64)
        v = v[np.isfinite(v)]
        if v.size == 0:
            raise InputError(f"{src.path} has no finite values in the chosen bands", "choose other bands with --bands")
        lo, hi = (float(x) for x in np.percentile(v, [LOW_PCT, HIGH_PCT]))
        if not math.isfinite(hi - lo) or hi <= lo:
            lo, hi = float(v.min()), float(v.max())
            if hi <= lo:
                hi = lo + 1.0
        out.append([lo, hi])
    log.info("scene stretch for %s: %s", src.path, out)
    return out
