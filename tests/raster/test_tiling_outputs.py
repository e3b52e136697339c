"""Tiling without seams, one polygon across tile/block borders, and the outputs' formats and fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.windows import Window

import geoseg
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.raster.tiling import plan_tiles
from geoseg.raster.writer import SceneWriter, WindowResult

from .conftest import UTM_RES, BrightSegmenter, roof_box, scene_array, write_geotiff


def test_tile_cores_partition_the_scene() -> None:
    for w, h, tile, ov in ((1000, 700, 256, 64), (300, 300, 128, 0), (257, 90, 128, 32), (64, 64, 128, 16)):
        count = np.zeros((h, w), np.int32)
        for t in plan_tiles(w, h, tile, ov):
            r, c = t.read, t.core
            assert r.width <= tile and r.height <= tile
            assert r.col_off <= c.col_off and c.col_off + c.width <= r.col_off + r.width
            assert r.row_off <= c.row_off and c.row_off + c.height <= r.row_off + r.height
            count[c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] += 1
        assert (count == 1).all()


def test_text_over_tiles_has_no_seams_and_one_polygon(tmp_path: Path) -> None:
    # one big roof crossing several tile borders, one small roof inside a tile
    roofs = ((40, 210, 50, 250), (230, 260, 270, 300))
    data = scene_array(320, 280, roofs=roofs)
    path = write_geotiff(tmp_path / "s.tif", data)
    seg = BrightSegmenter()
    res = geoseg.segment(path, output=tmp_path / "m.tif", text="bright roofs", segmenter=seg, tile_size=96,
                         overlap=24, vector=tmp_path / "v.gpkg", score_raster=tmp_path / "p.tif")
    assert res.n_windows == len(plan_tiles(320, 280, 96, 24)) > 4
    assert all(max(s) <= 96 for s in seg.windows)
    with rasterio.open(tmp_path / "m.tif") as m, rasterio.open(tmp_path / "p.tif") as p:
        mask, prob = m.read(1), p.read(1)
    whole = BrightSegmenter()
    rgb, _ = open_source(path).read_rgb()
    whole.set_image(rgb)
    ref = whole.predict(Prompt(text="x"))
    assert np.array_equal(mask == 1, ref.mask)  # exactly as on the whole image: no seam
    assert np.allclose(prob, ref.prob, atol=1e-6)
    _, _, wkb, fields = pyogrio.raw.read(tmp_path / "v.gpkg")
    polys = shapely.from_wkb(wkb)
    assert len(polys) == 2  # the big roof crosses tile borders and still is ONE polygon
    big = max(polys, key=lambda g: g.area)
    assert big.area == pytest.approx(170 * 200 * UTM_RES**2)


def test_polygon_across_writer_blocks_is_one(utm_scene: Path, tmp_path: Path) -> None:
    src = open_source(utm_scene)
    mask = np.zeros((280, 320), bool)
    mask[30:250, 20:300] = True
    mask[100:120, 100:250] = False  # a notch, so the shape is not a plain rectangle
    prompts = [Prompt(box=(10, 10, 310, 270))]
    with SceneWriter(src, str(tmp_path / "m.tif"), prompts, {"model": "test"}, vector=str(tmp_path / "v.geojson"),
                     block=64) as w:
        w.add(WindowResult(0, Window(0, 0, 320, 280), mask, 0.7))
        summary = w.finish()
    assert summary.n_polygons == 1 and summary.mask_pixels == mask.sum()
    _, _, wkb, _ = pyogrio.raw.read(tmp_path / "v.geojson")
    assert len(wkb) == 1


def test_overlapping_answers_each_keep_their_whole_polygons(tmp_path: Path) -> None:
    """Two prompts whose answers overlap: each keeps its polygon; the mask is their union; nodata is left out."""
    data = scene_array(320, 280)
    data[:, 200:, 250:] = 0  # a nodata corner, inside the second answer
    src = open_source(write_geotiff(tmp_path / "s.tif", data, nodata=0))
    a = np.zeros((280, 320), bool)
    a[20:150, 30:170] = True
    b = np.zeros((140, 160), bool)  # the whole scene read at half resolution
    b[40:130, 40:150] = True  # = scene rows 80-260, columns 80-300
    prompts = [Prompt(box=(30, 20, 170, 150)), Prompt(box=(80, 80, 300, 260))]
    with SceneWriter(src, str(tmp_path / "m.tif"), prompts, {"model": "test"}, vector=str(tmp_path / "v.gpkg"),
                     block=64) as w:
        w.add(WindowResult(0, Window(0, 0, 320, 280), a, 0.9))
        w.add(WindowResult(1, Window(0, 0, 320, 280), b, 0.6))
        summary = w.finish()
    valid = (data != 0).any(axis=0)
    b_full = np.zeros((280, 320), bool)
    b_full[80:260, 80:300] = True
    with rasterio.open(tmp_path / "m.tif") as m:
        mask = m.read(1)
    assert np.array_equal(mask == 1, (a | b_full) & valid) and summary.mask_pixels == ((a | b_full) & valid).sum()
    _, _, wkb, fields = pyogrio.raw.read(tmp_path / "v.gpkg")
    polys = shapely.from_wkb(wkb)
    by_prompt = {p: shapely.union_all([g for g, text in zip(polys, fields[1]) if text == prompts[p].describe()])
                 for p in (0, 1)}
    area = UTM_RES ** 2
    assert by_prompt[0].area == pytest.approx(a.sum() * area)  # not cut where the second answer overlaps it
    assert by_prompt[1].area == pytest.approx((b_full & valid).sum() * area)
    assert by_prompt[0].intersection(by_prompt[1]).area == pytest.approx((a & b_full).sum() * area)


def test_vector_outputs_fields_crs_and_area(utm_scene: Path, tmp_path: Path) -> None:
    boxes = [roof_box(0), roof_box(1)]
    res = geoseg.segment(utm_scene, output=tmp_path / "m.tif", boxes=boxes, backend="classical",
                         vector=tmp_path / "v.gpkg")
    geoseg.segment(utm_scene, output=tmp_path / "m2.tif", boxes=boxes, backend="classical",
                   vector=tmp_path / "v.geojson")
    gpkg = pyogrio.read_info(tmp_path / "v.gpkg")
    gj = pyogrio.read_info(tmp_path / "v.geojson")
    assert CRS.from_user_input(gpkg["crs"]) == CRS.from_epsg(32632)
    assert CRS.from_user_input(gj["crs"]) == CRS.from_epsg(4326)
    for info in (gpkg, gj):
        assert list(info["fields"]) == ["id", "prompt", "score", "area"] and info["features"] == 2
    _, _, wkb, (ids, prompt, score, area) = pyogrio.raw.read(tmp_path / "v.gpkg")
    polys = shapely.from_wkb(wkb)
    assert list(ids) == [1, 2]
    assert prompt[0].startswith("box (48.0,28.0") and prompt[1].startswith("box (178.0,158.0")
    assert np.allclose(area, [g.area for g in polys])  # m² in a metric CRS
    assert area.sum() == pytest.approx(res.mask_area) and res.area_unit == "m2"
    assert np.allclose(score, res.prompt_scores)
    _, _, wkb4326, (_, _, _, area4326) = pyogrio.raw.read(tmp_path / "v.geojson")
    lon, lat = shapely.from_wkb(wkb4326)[0].centroid.coords[0]
    assert 8.9 < lon < 9.3 and 56.3 < lat < 56.5  # UTM 32N near 510 km E, 6250 km N
    assert np.allclose(area4326, area)
    # a geographic scene: m² on the ellipsoid (tests/raster/test_georef_areas.py checks the values)
    geo = write_geotiff(tmp_path / "geo.tif", scene_array(), crs="EPSG:4326")
    r = geoseg.segment(geo, output=tmp_path / "g.tif", boxes=boxes, backend="classical", vector=tmp_path / "g.gpkg")
    _, _, _, (_, _, _, area_geo) = pyogrio.raw.read(tmp_path / "g.gpkg")
    assert r.area_unit == "m2" and area_geo.sum() == pytest.approx(r.mask_area, rel=1e-5)
    meta = pyogrio.read_info(tmp_path / "g.gpkg")["layer_metadata"]
    assert meta["area_unit"] == "m2" and meta["model"] == "classical"


def test_prompt_crs_to_pixels(utm_scene: Path, tmp_path: Path) -> None:
    """Map coordinates in the raster's CRS and in other CRSs land on the same pixels."""
    from rasterio.warp import transform as warp

    from .conftest import utm_box_to_map

    px = geoseg.segment(utm_scene, output=tmp_path / "a.tif", boxes=[roof_box(0)], backend="classical")
    mx0, my0, mx1, my1 = utm_box_to_map(roof_box(0))
    same = geoseg.segment(utm_scene, output=tmp_path / "b.tif", boxes=[(mx0, my0, mx1, my1)], backend="classical",
                          prompt_crs="EPSG:32632")
    (lx0, lx1), (ly0, ly1) = warp("EPSG:32632", "EPSG:4326", [mx0, mx1], [my0, my1])
    ll = geoseg.segment(utm_scene, output=tmp_path / "c.tif", boxes=[(lx0, ly0, lx1, ly1)], backend="classical",
                        prompt_crs="EPSG:4326")
    (wx,), (wy,) = warp("EPSG:32632", "EPSG:3857", [(mx0 + mx1) / 2], [(my0 + my1) / 2])
    pt = geoseg.segment(utm_scene, output=tmp_path / "d.tif", points=[(wx, wy)], backend="classical",
                        prompt_crs="EPSG:3857")
    masks = {}
    for k in "abcd":
        with rasterio.open(tmp_path / f"{k}.tif") as m:
            masks[k] = m.read(1) == 1
    assert np.array_equal(masks["a"], masks["b"])
    assert (masks["a"] & masks["c"]).sum() / (masks["a"] | masks["c"]).sum() > 0.9
    assert (masks["a"] & masks["d"]).sum() / (masks["a"] | masks["d"]).sum() > 0.8
    assert px.prompt_scores[0] == pytest.approx(same.prompt_scores[0])
    assert ll.mask_pixels > 0 and pt.mask_pixels > 0
