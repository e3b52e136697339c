"""The main job on real data: dk_fields Sentinel-2 (uint16, EPSG:32632) with its field polygons, a Dubai JPG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.features import rasterize

import geoseg
from geoseg.vector import reproject_geoms


@pytest.fixture(scope="module")
def fields(dk_fields_dir: Path):
    """The ten largest field polygons away from the border, in the raster's pixels and as masks."""
    scene = dk_fields_dir / "RGB_small.tif"
    shp = dk_fields_dir / "marker2016_small.shp"
    crs = pyogrio.read_info(shp)["crs"]
    _, _, wkb, _ = pyogrio.raw.read(shp)
    with rasterio.open(scene) as ds:
        geoms = reproject_geoms(shapely.from_wkb(wkb), crs, ds.crs)
        w, h, t = ds.width, ds.height, ds.transform
    out = []
    for g in sorted(geoms, key=lambda g: -g.area):
        truth = rasterize([(g, 1)], out_shape=(h, w), transform=t).astype(bool)
        ys, xs = np.nonzero(truth)
        if len(xs) == 0 or xs.min() < 5 or ys.min() < 5 or xs.max() > w - 6 or ys.max() > h - 6:
            continue
        out.append(((float(xs.min() - 3), float(ys.min() - 3), float(xs.max() + 4), float(ys.max() + 4)), truth))
        if len(out) == 10:
            break
    return scene, out


def test_dk_fields_boxes_give_the_fields(fields, tmp_path: Path) -> None:
    scene, items = fields
    pred = geoseg.SegmentPredictor("classical")
    pred.set_image(scene)
    assert pred.source.dtype == "uint16" and pred.source.stretch is not None
    ious = []
    for box, truth in items:
        res = pred.predict(box=box)
        m = res.full_mask()
        inside = np.zeros_like(m)
        inside[int(box[1]):int(np.ceil(box[3])), int(box[0]):int(np.ceil(box[2]))] = True
        assert res.pixels > 0 and (m & inside).sum() / m.sum() > 0.95
        ious.append((m & truth).sum() / (m | truth).sum())
    assert pred.embed_count <= len(items)  # classical: each box on its own window, as geoseg segment does
    assert np.mean(ious) > 0.65 and min(ious) > 0.3


def test_dk_fields_cli_outputs(fields, tmp_path: Path, capsys) -> None:
    from geoseg.cli import main

    scene, items = fields
    boxes = [b for b, _ in items[:3]]
    args = ["-q", "segment", str(scene), "--backend", "classical", "-o", str(tmp_path / "m.tif"),
            "--vector", str(tmp_path / "f.gpkg")]
    for b in boxes:
        args += ["--box", ",".join(f"{v:g}" for v in b)]
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    assert not exc.value.code
    with rasterio.open(scene) as a, rasterio.open(tmp_path / "m.tif") as m:
        assert m.crs == a.crs == CRS.from_epsg(32632) and m.transform == a.transform
        mask = m.read(1)
    info = pyogrio.read_info(tmp_path / "f.gpkg")
    assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(32632)
    assert list(info["fields"]) == ["id", "prompt", "score", "area"]
    _, _, wkb, (ids, prompt, score, area) = pyogrio.raw.read(tmp_path / "f.gpkg")
    polys = shapely.from_wkb(wkb)
    assert all(p.is_valid for p in polys) and len(polys) >= 3
    assert area.sum() == pytest.approx((mask == 1).sum() * 100.0)  # 10 m pixels, m²
    assert ((score > 0) & (score <= 1)).all()
    # polygons lie on the raster's ground (UTM 32N metres)
    with rasterio.open(scene) as a:
        left, bottom, right, top = a.bounds
    minx, miny, maxx, maxy = shapely.total_bounds(polys)
    assert left <= minx and maxx <= right and bottom <= miny and maxy <= top


def test_dubai_jpg_segment(dubai_dir: Path, tmp_path: Path) -> None:
    """A plain JPG (no georeference) through geoseg.segment: pixel-space outputs, mask inside the box."""
    image = dubai_dir / "tile_7" / "images" / "image_part_002.jpg"
    with rasterio.open(image) as ds:
        w, h = ds.width, ds.height
    box = (w * 0.4, h * 0.4, w * 0.55, h * 0.55)
    res = geoseg.segment(image, output=tmp_path / "m.tif", boxes=[box], backend="classical",
                         vector=tmp_path / "v.gpkg")
    with rasterio.open(tmp_path / "m.tif") as m:
        assert m.crs is None and (m.width, m.height) == (w, h)
        mask = m.read(1) == 1
    ys, xs = np.nonzero(mask)
    assert len(xs) and xs.min() >= box[0] - 0.03 * w and xs.max() <= box[2] + 0.03 * w
    assert res.area_unit == "px" and pyogrio.read_info(tmp_path / "v.gpkg")["crs"] is None
