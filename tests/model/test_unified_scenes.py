"""The default unified model on scenes a GIS analyst brings: nodata frames, multispectral stacks, odd text.

Real pixels throughout: a Dubai image inside a larger GeoTIFF whose frame is nodata, and the
6-band Sentinel-2 reflectance tile of ``ukis_tiles`` written as a float32 GeoTIFF.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import geoseg
from geoseg.errors import PromptError
from geoseg.pipeline import band_choice_note, plan_windows
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.unified.segmenter import UnifiedSegmenter

from .conftest import run_quiet_cli

LONG = "please find the large blue water body next to the road " * 30  # about 330 word pieces


class CountingUnified(UnifiedSegmenter):
    """The shipped model, counting its image embeddings (``set_image``)."""

    def __init__(self) -> None:
        super().__init__(device="cpu")
        self.embedded = 0

    def _set_image(self, image: np.ndarray) -> None:
        self.embedded += 1
        super()._set_image(image)


@pytest.fixture(scope="module")
def seg() -> CountingUnified:
    return CountingUnified()


@pytest.fixture(scope="module")
def framed_scene(dubai_dir, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A real Dubai image at an offset inside a 1200 x 1000 frame of nodata (0): the scene and its valid mask."""
    img = cv2.imread(str(dubai_dir / "tile_2" / "images" / "image_part_003.jpg"))[:, :, ::-1]
    h, w = img.shape[:2]
    data = np.zeros((3, 1000, 1200), np.uint8)
    data[:, 420:420 + h, 620:620 + w] = np.maximum(img.transpose(2, 0, 1), 1)  # keep valid pixels off nodata
    path = tmp_path_factory.mktemp("framed") / "framed.tif"
    with rasterio.open(path, "w", driver="GTiff", width=1200, height=1000, count=3, dtype="uint8", nodata=0,
                       crs="EPSG:32640", transform=from_origin(300000, 2800000, 0.5, 0.5)) as ds:
        ds.write(data)
    return path, data[0] > 0


def test_tiles_whose_core_is_all_nodata_do_not_run_the_model(seg, framed_scene, tmp_path):
    path, valid = framed_scene
    tasks = plan_windows(1200, 1000, [Prompt(text="the roads")], 512, 64)
    cores = [t.core for t in tasks]
    with_data = sum(bool(valid[int(c.row_off):int(c.row_off + c.height),
                               int(c.col_off):int(c.col_off + c.width)].any()) for c in cores)
    assert 0 < with_data < len(tasks)  # the frame holds whole tiles of nodata
    seg.embedded = 0
    res = geoseg.segment(path, text="the roads", output=tmp_path / "m.tif", segmenter=seg, tile_size=512,
                         overlap=64, score_raster=tmp_path / "s.tif")
    assert res.n_windows == len(tasks) and seg.embedded == with_data
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "s.tif") as s:
        mask, score = m.read(1), s.read(1)
    assert (mask[~valid] == 255).all() and (score[~valid] == -1).all()
    assert (mask[valid] == 1).any() and (mask[valid] != 255).all()  # roads found on the image, nowhere else


def test_an_instruction_too_long_for_the_encoder_fails_before_any_tile(seg, framed_scene, tmp_path, capsys):
    path, _ = framed_scene
    seg.embedded = 0
    with pytest.raises(PromptError, match="word pieces long.*at most 128"):
        geoseg.segment(path, text=["the water", LONG], output=tmp_path / "m.tif", segmenter=seg, tile_size=512)
    assert seg.embedded == 0 and not list(tmp_path.iterdir())
    code, err = run_quiet_cli(["segment", str(path), "--text", LONG, "-o", str(tmp_path / "m.tif")], capsys)
    assert code == 2 and "shorten the instruction" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def sentinel_stack(ukis_dir, tmp_path_factory) -> Path:
    """The 6-band Sentinel-2 reflectance tile (Blue, Green, Red, NIR, SWIR1, SWIR2) as a named float32 GeoTIFF."""
    img = np.load(ukis_dir / "sentinel2.npz")["img"].transpose(2, 0, 1)
    path = tmp_path_factory.mktemp("s2") / "s2.tif"
    with rasterio.open(path, "w", driver="GTiff", width=512, height=512, count=6, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(500000, 5400000, 10, 10)) as ds:
        ds.write(img)
        ds.descriptions = ("Blue", "Green", "Red", "NIR", "SWIR1", "SWIR2")
    return path


def test_a_multispectral_stack_read_without_bands_says_which_bands_it_read(seg, sentinel_stack, tmp_path):
    res = geoseg.segment(sentinel_stack, text="the clouds", output=tmp_path / "m.tif", segmenter=seg)
    note = [n for n in res.notes if "as R,G,B" in n]
    assert len(note) == 1 and "read bands 3,2,1 of s2.tif (6 bands: 1=Blue" in note[0]  # by the band names
    assert "chosen by their band names" in note[0]
    chosen = geoseg.segment(sentinel_stack, text="the clouds", output=tmp_path / "c.tif", segmenter=seg,
                            bands="3,2,1")
    assert not any("as R,G,B" in n for n in chosen.notes)
    with rasterio.open(tmp_path / "m.tif") as a, rasterio.open(tmp_path / "c.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))  # the names chose what --bands 3,2,1 chooses


def test_the_band_note_without_band_names_and_on_declared_rgb(sentinel_stack, tmp_path):
    with rasterio.open(sentinel_stack) as ds:
        data, profile = ds.read(), ds.profile
    bare = tmp_path / "bare.tif"
    with rasterio.open(bare, "w", **profile) as ds:
        ds.write(data)
    with open_source(bare) as src:
        note = band_choice_note(src)
    assert note is not None and "(6 bands)" in note and "give --bands R,G,B to choose" in note
    rgb = tmp_path / "rgb.tif"
    with rasterio.open(rgb, "w", **{**profile, "count": 3}, photometric="RGB") as ds:
        ds.write(data[[2, 1, 0]])
    with open_source(rgb) as src:
        assert band_choice_note(src) is None
