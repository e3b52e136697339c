"""A text prompt's overlapping tiles: their answers are united, not cut to each tile's core.

A backend answers with context: the same object can be marked by one tile and not by its
neighbour. Keeping each tile's core cut such an object along a straight seam at the middle of
the overlap; the whole answers are now united (``geoseg.windows.STITCHING``), in the mask, the
score raster, the polygons (each object once) and the predictor alike.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio.raw
import rasterio
import shapely

import geoseg
from geoseg.prompts import Prompt
from geoseg.raster.tiling import plan_tiles
from geoseg.segmenters.base import Prediction, Segmenter

from .conftest import write_geotiff

TILE, OVERLAP = 128, 48


class ContextSegmenter(Segmenter):
    """Marks the pixels brighter than its window's mean: what it marks depends on what the window holds."""

    name = "context"
    capabilities = frozenset({"text"})

    def _set_image(self, image: np.ndarray) -> None:
        self._grey = image.mean(axis=2)

    def _predict(self, prompt: Prompt) -> Prediction:
        grey = self._grey
        return Prediction(grey > grey.mean() + 10, 0.7, (grey / 255.0).astype(np.float32))


def _scene(tmp_path: Path) -> Path:
    """A dark left part with a mid-grey field across the first tile border, a bright right part.

    The first tile sees the field as bright; the second tile, half bright ground, does not. The
    core border (column 104) cuts the field, which reaches to column 118. The bright ground is
    marked by the tiles that hold it.
    """
    data = np.full((3, 160, 240), 40, np.uint8)
    data[:, :, 150:] = 230
    data[:, 30:70, 60:118] = 120
    data[:, 100:120, 20:40] = 120  # a field inside the first tile only
    return write_geotiff(tmp_path / "s.tif", data)


def _union_of_tiles(path: Path, seg: Segmenter) -> np.ndarray:
    with rasterio.open(path) as ds:
        rgb = ds.read().transpose(1, 2, 0)
        height, width = ds.height, ds.width
    out = np.zeros((height, width), bool)
    for tile in plan_tiles(width, height, TILE, OVERLAP):
        r = tile.read
        rows = slice(int(r.row_off), int(r.row_off + r.height))
        cols = slice(int(r.col_off), int(r.col_off + r.width))
        seg.set_image(rgb[rows, cols])
        out[rows, cols] |= seg.predict(Prompt(text="fields")).mask
    return out


def test_overlapping_tiles_answers_are_united_in_mask_polygons_and_predictor(tmp_path: Path) -> None:
    path = _scene(tmp_path)
    res = geoseg.segment(path, text="fields", output=tmp_path / "m.tif", vector=tmp_path / "v.gpkg",
                         score_raster=tmp_path / "p.tif", segmenter=ContextSegmenter(), tile_size=TILE,
                         overlap=OVERLAP)
    assert res.n_windows > 1
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1) == 1
    expected = _union_of_tiles(path, ContextSegmenter())
    assert np.array_equal(mask, expected)
    assert mask[30:70, 60:118].all()  # the field whole, not cut at the core border (column 104)

    _, _, wkb, _ = pyogrio.raw.read(tmp_path / "v.gpkg")
    polys = shapely.from_wkb(wkb)
    # the two fields and the bright ground, each once though several tiles marked them
    assert all(p.is_valid for p in polys) and res.n_objects == len(polys) == 3
    assert np.isclose(shapely.union_all(polys).area, sum(p.area for p in polys))  # no two overlap
    with rasterio.open(tmp_path / "p.tif") as ds:
        score = ds.read(1)
    assert np.allclose(score[30:70, 60:118], 120 / 255, atol=1e-3)  # the field's probability from its tiles

    pred = geoseg.SegmentPredictor(segmenter=ContextSegmenter(), tile_size=TILE, overlap=OVERLAP)
    pred.set_image(path)
    assert np.array_equal(pred.predict(text="fields").full_mask(), mask)
