"""Large outputs carry internal overviews, so a GIS shows them at any zoom without building pyramids first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio

import geoseg

from .conftest import BrightSegmenter, scene_array, write_geotiff


def test_large_outputs_have_overviews_of_the_mask_classes(tmp_path: Path) -> None:
    data = scene_array(1200, 900, seed=2)
    data[:, :, :100] = 0  # a nodata strip
    path = write_geotiff(tmp_path / "big.tif", data, nodata=0)
    geoseg.segment(path, text="bright", output=tmp_path / "m.tif", score_raster=tmp_path / "s.tif",
                   segmenter=BrightSegmenter(), tile_size=512)
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "s.tif") as s:
        assert m.overviews(1) == [2, 4] and s.overviews(1) == [2, 4]
        assert m.tags(ns="rio_overview") == {"resampling": "mode"}
        assert s.tags(ns="rio_overview") == {"resampling": "average"}
        full = m.read(1)
        small = m.read(1, out_shape=(225, 300))  # read from the 4x overview
        assert set(np.unique(small)) <= {0, 1, 255}  # mode keeps the classes: no blended values
        assert (small[:, :25] == 255).all()  # the nodata strip stays nodata
        assert abs((small == 1).mean() - (full == 1).mean()) < 0.02
        score = s.read(1, out_shape=(225, 300), masked=True)
        assert score.min() >= 0.0 and score.max() <= 1.0


def test_small_outputs_have_none(tmp_path: Path) -> None:
    path = write_geotiff(tmp_path / "small.tif", scene_array())
    geoseg.segment(path, text="bright", output=tmp_path / "m.tif", segmenter=BrightSegmenter())
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.overviews(1) == [] and m.tags(ns="rio_overview") == {}
