"""SegmentPredictor: set the image once, prompt many times, georeferenced results."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform as warp_transform

import geoseg
from geoseg.errors import GeosegError, PromptError
from geoseg.segmenters.classical import GrabCutSegmenter

from .conftest import (
    ROOFS,
    UTM_RES,
    BrightSegmenter,
    iou,
    roof_box,
    roof_mask,
    scene_array,
    utm_transform,
    write_geotiff,
)


class CountingGrabCut(GrabCutSegmenter):
    """The classical backend, counting how often its image state is computed, and sharing windows as SAM does
    (the predictor's embedding cache is what these tests exercise)."""

    set_calls = 0
    shares_windows = True

    def _set_image(self, image: np.ndarray) -> None:
        CountingGrabCut.set_calls += 1
        super()._set_image(image)


@pytest.fixture()
def counting() -> type[CountingGrabCut]:
    CountingGrabCut.set_calls = 0
    return CountingGrabCut


def test_set_image_once_prompt_many_times(utm_scene: Path, counting) -> None:
    pred = geoseg.SegmentPredictor(segmenter=counting())
    pred.set_image(utm_scene)
    assert counting.set_calls == 1  # embedded by set_image, like SAM
    a = pred.predict(box=roof_box(0))
    b = pred.predict(box=roof_box(1))
    r0, r1, c0, c1 = ROOFS[1]
    c = pred.predict(points=[((c0 + c1) / 2, (r0 + r1) / 2)])
    many = pred.predict_many([geoseg.Prompt(box=roof_box(0)), {"box": list(roof_box(1))}])
    assert counting.set_calls == 1 and pred.embed_count == 1
    assert iou(a.full_mask(), roof_mask(index=0)) > 0.85
    assert iou(b.full_mask(), roof_mask(index=1)) > 0.85
    assert iou(c.full_mask(), roof_mask(index=1)) > 0.85
    assert np.array_equal(many[0].full_mask(), a.full_mask()) and np.array_equal(many[1].full_mask(), b.full_mask())
    assert 0.0 < a.score <= 1.0
    # a new image is embedded again
    pred.set_image(write_geotiff(utm_scene.parent / "other.tif", scene_array(seed=3)))
    assert counting.set_calls == 2


def test_results_are_georeferenced(utm_scene: Path) -> None:
    pred = geoseg.SegmentPredictor("classical")
    pred.set_image(utm_scene)
    res = pred.predict(box=roof_box(0))
    assert res.crs == CRS.from_epsg(32632) and res.area_unit == "m2"
    assert res.area == pytest.approx(res.pixels * UTM_RES**2)
    polys = res.polygons()
    assert len(polys) == 1
    r0, r1, c0, c1 = ROOFS[0]
    t = utm_transform()
    expect = (t.c + c0 * UTM_RES, t.f - r1 * UTM_RES, t.c + c1 * UTM_RES, t.f - r0 * UTM_RES)
    assert np.allclose(polys[0].bounds, expect, atol=3 * UTM_RES)
    assert polys[0].area == pytest.approx(res.area)
    lonlat = res.polygons("EPSG:4326")[0]
    xs, ys = warp_transform("EPSG:32632", "EPSG:4326", [expect[0]], [expect[3]])
    assert lonlat.bounds[0] == pytest.approx(xs[0], abs=1e-3) and lonlat.bounds[3] == pytest.approx(ys[0], abs=1e-3)
    # window transform places the window's mask on the map
    assert res.transform @ (0, 0) == t @ (res.window.col_off, res.window.row_off)


def test_prompt_crs_matches_pixel_prompt(utm_scene: Path) -> None:
    from .conftest import utm_box_to_map

    pred = geoseg.SegmentPredictor("classical", prompt_crs="EPSG:32632")
    pred.set_image(utm_scene)
    in_map = pred.predict(box=utm_box_to_map(roof_box(0)))
    in_px = pred.predict_many([geoseg.Prompt(box=roof_box(0))], prompt_crs="pixels")[0]
    assert in_map.prompt.box == pytest.approx(roof_box(0))
    # the same ground given in lon/lat
    x0, y0, x1, y1 = utm_box_to_map(roof_box(0))
    lon, lat = warp_transform("EPSG:32632", "EPSG:4326", [x0, x1], [y0, y1])
    in_ll = pred.predict(box=(lon[0], lat[0], lon[1], lat[1]), prompt_crs="EPSG:4326")
    assert iou(in_map.full_mask(), in_px.full_mask()) > 0.95
    assert iou(in_ll.full_mask(), roof_mask(index=0)) > 0.85


def test_array_input_with_georeference_and_nodata() -> None:
    data = scene_array(dtype="uint16", count=4)
    data[:, :, :40] = 0  # a nodata strip on the left
    hwc = np.transpose(data, (1, 2, 0))
    pred = geoseg.SegmentPredictor("classical")
    pred.set_image(hwc, bands="3,2,1", transform=utm_transform(), crs="EPSG:32632", nodata=0)
    assert pred.source.bands == (3, 2, 1) and pred.source.stretch is not None
    res = pred.predict(box=(20, 30, 180, 130))  # covers roof 0 and part of the nodata strip
    assert iou(res.full_mask(), roof_mask(index=0)) > 0.8
    assert not res.full_mask()[:, :40].any()
    assert res.area_unit == "m2"
    # a plain array without georeference: polygons in pixels, areas in pixels
    plain = geoseg.SegmentPredictor("classical")
    plain.set_image(np.transpose(scene_array(), (1, 2, 0)))
    r = plain.predict(box=roof_box(1))
    assert r.area_unit == "px" and r.area == r.pixels and r.crs is None
    r0, r1, c0, c1 = ROOFS[1]
    assert np.allclose(r.polygons()[0].bounds, (c0, r0, c1, r1), atol=3)
    with pytest.raises(GeosegError, match="no CRS"):
        r.polygons("EPSG:4326")
    with pytest.raises(GeosegError, match="out of range"):
        plain.set_image(np.zeros((50, 60, 3), np.uint8), bands="4")
    with pytest.raises(GeosegError, match="shape"):
        plain.set_image(np.zeros((2, 3, 4, 5), np.uint8))


def test_large_scene_shares_tile_embeddings(tmp_path: Path, counting) -> None:
    roofs = ((30, 60, 30, 70), (70, 100, 80, 120), (300, 340, 320, 350), (150, 330, 140, 330))
    path = write_geotiff(tmp_path / "big.tif", scene_array(400, 380, roofs=roofs))
    pred = geoseg.SegmentPredictor(segmenter=counting(), tile_size=160, overlap=48)
    pred.set_image(path)
    assert counting.set_calls == 0  # several windows: embedded on demand
    boxes = [(22, 22, 78, 68), (72, 62, 128, 108)]  # two small roofs in the first tile
    first = pred.predict_many([geoseg.Prompt(box=b) for b in boxes])
    assert counting.set_calls == 1
    for res, (r0, r1, c0, c1) in zip(first, roofs[:2]):
        truth = np.zeros((380, 400), bool)
        truth[r0:r1, c0:c1] = True
        assert iou(res.full_mask(), truth) > 0.8
    pred.predict(box=boxes[0])  # cached
    assert counting.set_calls == 1
    far = pred.predict(box=(312, 292, 358, 348))  # another tile
    assert counting.set_calls == 2 and far.window.col_off > 0
    big = pred.predict(box=(130, 140, 340, 340))  # larger than a tile: own context window, read decimated
    assert big.mask.shape == (int(big.window.height), int(big.window.width))
    truth = np.zeros((380, 400), bool)
    truth[150:330, 140:330] = True
    assert iou(big.full_mask(), truth) > 0.8


def test_text_prompts_reuse_every_tile(tmp_path: Path) -> None:
    roofs = ((40, 210, 50, 250), (230, 260, 270, 300))
    path = write_geotiff(tmp_path / "s.tif", scene_array(320, 280, roofs=roofs))
    seg = BrightSegmenter()
    pred = geoseg.SegmentPredictor(segmenter=seg, tile_size=96, overlap=24)
    pred.set_image(path)
    n_tiles = len(pred._tiles)
    a = pred.predict(text="bright roofs")
    b = pred.predict(text="the bright roofs again")
    assert pred.embed_count == n_tiles > 4  # the second text prompt reused every tile
    whole = BrightSegmenter()
    whole.set_image(pred.source.read_rgb()[0])
    ref = whole.predict(geoseg.Prompt(text="x"))
    assert np.array_equal(a.full_mask(), ref.mask) and np.array_equal(b.mask, a.mask)  # stitched without seams
    assert np.allclose(a.prob, ref.prob, atol=1e-6) and a.score == pytest.approx(0.8)
    assert len(a.polygons()) == 2  # the big roof crosses tile borders and is one polygon
    small = geoseg.SegmentPredictor(segmenter=BrightSegmenter(), tile_size=96, overlap=24, max_windows=2)
    small.set_image(path)
    small.predict(text="x")
    small.predict(text="y")
    assert small.embed_count == 2 * n_tiles  # a cache smaller than the grid re-embeds


def test_text_on_classical_and_bad_prompts(utm_scene: Path) -> None:
    pred = geoseg.SegmentPredictor("classical")
    with pytest.raises(RuntimeError, match="set_image"):
        pred.predict(box=(1, 1, 5, 5))
    pred.set_image(utm_scene)
    with pytest.raises(PromptError, match="cannot use text"):
        pred.predict(text="the largest building")
    with pytest.raises(PromptError, match="cannot use the text part of this prompt"):  # not silently dropped
        pred.predict(text="the largest building", box=(10, 10, 60, 60))
    with pytest.raises(PromptError, match="outside"):
        pred.predict(points=[(1000, 5)])
    with pytest.raises(PromptError, match="empty"):
        pred.predict()


def test_backends_that_do_not_share_windows_answer_as_segment_does(tmp_path: Path) -> None:
    """classical (and unified, trainfree) answer each box on its own context window in ``geoseg.segment``; the
    predictor used the shared grid tile instead, so the same box got another mask from the Python API."""
    roofs = ((30, 60, 30, 70), (70, 100, 80, 120), (300, 340, 320, 350), (150, 330, 140, 330))
    path = write_geotiff(tmp_path / "big.tif", scene_array(400, 380, roofs=roofs))
    boxes = [(22, 22, 78, 68), (312, 292, 358, 348), (130, 140, 340, 340)]
    ref = geoseg.segment(path, output=tmp_path / "s.tif", boxes=boxes, backend="classical", tile_size=160,
                         overlap=48)
    pred = geoseg.SegmentPredictor("classical", tile_size=160, overlap=48)
    pred.set_image(path)
    assert pred.embed_count == 0  # nothing every prompt shares: no window is embedded up front
    results = pred.predict_many([geoseg.Prompt(box=b) for b in boxes])
    summary = pred.write(results, tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as a, rasterio.open(tmp_path / "s.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))
    assert summary.mask_pixels == ref.mask_pixels
    n = pred.embed_count
    pred.predict(box=boxes[1])  # the same prompt again: its window is cached
    assert pred.embed_count == n


def test_write_matches_segment(utm_scene: Path, tmp_path: Path) -> None:
    pred = geoseg.SegmentPredictor("classical")
    pred.set_image(utm_scene)
    results = pred.predict_many([geoseg.Prompt(box=roof_box(0)), geoseg.Prompt(box=roof_box(1))])
    summary = pred.write(results, tmp_path / "p.tif", vector=tmp_path / "p.gpkg")
    ref = geoseg.segment(utm_scene, output=tmp_path / "s.tif", boxes=[roof_box(0), roof_box(1)], backend="classical")
    with rasterio.open(tmp_path / "p.tif") as a, rasterio.open(tmp_path / "s.tif") as b:
        pa, pb = a.read(1), b.read(1)
        assert a.crs == b.crs and a.transform == b.transform
        assert a.tags()["model"] == "classical"
    assert np.array_equal(pa == 1, results[0].full_mask() | results[1].full_mask())
    assert iou(pa == 1, pb == 1) > 0.95
    assert summary.mask_pixels == ref.mask_pixels or abs(summary.mask_pixels - ref.mask_pixels) < 0.05 * ref.mask_pixels
    info = pyogrio.read_info(tmp_path / "p.gpkg")
    assert info["features"] == 2 and CRS.from_user_input(info["crs"]) == CRS.from_epsg(32632)


def test_real_dubai_building(dubai_dir: Path) -> None:
    """A box on a real building of a Dubai JPG: the mask lies mostly inside the box and on building pixels."""
    from PIL import Image

    image = dubai_dir / "tile_7" / "images" / "image_part_001.jpg"
    label = np.asarray(Image.open(dubai_dir / "tile_7" / "masks" / "image_part_001.png").convert("RGB"))
    building = np.all(label == (60, 16, 152), axis=2)
    from scipy import ndimage

    comps, n = ndimage.label(building)
    sizes = ndimage.sum_labels(building, comps, index=np.arange(1, n + 1))
    # a mid-sized building away from the border
    order = np.argsort(sizes)[::-1]
    h, w = building.shape
    target = None
    for k in order:
        ys, xs = np.nonzero(comps == k + 1)
        if 800 < sizes[k] < 20000 and xs.min() > 10 and ys.min() > 10 and xs.max() < w - 10 and ys.max() < h - 10:
            target = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            break
    assert target is not None
    pad = 6
    box = (target[0] - pad, target[1] - pad, target[2] + pad, target[3] + pad)
    pred = geoseg.SegmentPredictor("classical")
    pred.set_image(image)
    res = pred.predict(box=box)
    m = res.full_mask()
    inside = np.zeros_like(m)
    inside[box[1]:box[3], box[0]:box[2]] = True
    assert res.pixels > 0
    assert (m & inside).sum() / m.sum() > 0.9
    assert (m & building).sum() / m.sum() > 0.5
    assert res.crs is None and res.area_unit == "px"
