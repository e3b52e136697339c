"""Areas on the ground in every kind of CRS: geographic, distorting projections, local grids.

Each expected area is measured independently of geoseg: the written mask is traced with
rasterio into map-coordinate polygons, and those are measured with pyproj's geodesic
polygon area on the CRS's own ellipsoid (what QGIS reports as the ellipsoidal area).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer
from rasterio.features import shapes
from rasterio.transform import from_origin
from shapely.geometry import shape

import geoseg
from geoseg.raster.io import open_source

from .conftest import ROOFS, roof_box, scene_array, write_geotiff


def _mask_polygons(path: Path) -> tuple[list, CRS]:
    """The target pixels of a written mask as map-coordinate polygons, and the mask's CRS."""
    with rasterio.open(path) as m:
        data = m.read(1)
        polys = [shape(g) for g, _ in shapes(data, mask=data == 1, transform=m.transform)]
        return polys, CRS.from_user_input(m.crs.to_wkt())


def _ground_area(polys: list, crs: CRS) -> float:
    """Total geodesic area (m²) of ``polys`` in ``crs`` on its own ellipsoid."""
    geodetic = crs.geodetic_crs
    to_ll = Transformer.from_crs(crs, geodetic, always_xy=True)
    geod = geodetic.get_geod()
    total = 0.0
    for p in polys:
        ll = shapely.transform(p, lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1])))
        total += abs(geod.geometry_area_perimeter(ll)[0])
    return total


@pytest.mark.parametrize(("crs", "origin"), [("EPSG:4326", (55.20, 25.10)), ("EPSG:4326", (20.0, 70.0)),
                                             ("EPSG:4267", (-100.0, 40.0))])
def test_geographic_scene_areas_are_m2_on_the_ellipsoid(tmp_path: Path, crs: str, origin: tuple) -> None:
    """An EPSG:4326 (or NAD27) scene used to report areas in pixels: 0.0001° pixels are 111 m² at 25° N, 38 m² at 70° N."""
    scene = write_geotiff(tmp_path / "geo.tif", scene_array(), crs=crs, transform=from_origin(*origin, 1e-4, 1e-4))
    res = geoseg.segment(scene, output=tmp_path / "m.tif", boxes=[roof_box(0), roof_box(1)], backend="classical",
                         vector=tmp_path / "v.gpkg")
    polys, mask_crs = _mask_polygons(tmp_path / "m.tif")
    truth = _ground_area(polys, mask_crs)
    assert res.area_unit == "m2"
    assert res.mask_area == pytest.approx(truth, rel=1e-5)
    _, _, _, (_, _, _, area) = pyogrio.raw.read(tmp_path / "v.gpkg")
    assert area.sum() == pytest.approx(truth, rel=1e-6)
    assert pyogrio.read_info(tmp_path / "v.gpkg")["layer_metadata"]["area_unit"] == "m2"
    assert abs(res.mask_area - res.mask_pixels) > 0.3 * res.mask_pixels  # not a pixel count under another name


def test_geojson_of_a_geographic_scene_carries_m2(tmp_path: Path) -> None:
    """The RFC 7946 file of a lon/lat scene: areas in m², its description says so."""
    import json

    scene = write_geotiff(tmp_path / "geo.tif", scene_array(), crs="EPSG:4326")
    geoseg.segment(scene, output=tmp_path / "m.tif", boxes=[roof_box(0)], backend="classical",
                   vector=tmp_path / "v.geojson")
    doc = json.loads((tmp_path / "v.geojson").read_text())
    assert json.loads(doc["description"])["area_unit"] == "m2"
    polys, crs = _mask_polygons(tmp_path / "m.tif")
    assert doc["features"][0]["properties"]["area"] == pytest.approx(_ground_area(polys, crs), rel=1e-6)


def test_rotated_geographic_grid_cells_match_the_geodesic_area(tmp_path: Path) -> None:
    """Per-pixel cell areas follow each pixel's latitude also on a rotated lon/lat grid."""
    from geoseg.raster.areas import MaskArea, cell_areas

    t = Affine.translation(10.0, 60.0) @ Affine.rotation(25) @ Affine.scale(0.001, -0.001)
    scene = write_geotiff(tmp_path / "rot.tif", scene_array(), crs="EPSG:4326", transform=t)
    with open_source(scene) as src:
        cells = cell_areas(src.crs, src.transform, rasterio.windows.Window(0, 0, src.width, src.height))
        meter = MaskArea(src)
        mask = np.zeros((src.height, src.width), bool)
        r0, r1, c0, c1 = ROOFS[1]
        mask[r0:r1, c0:c1] = True
        meter.add(mask, rasterio.windows.Window(0, 0, src.width, src.height))
    corners = [t @ (c, r) for c, r in ((c0, r0), (c1, r0), (c1, r1), (c0, r1))]
    truth = abs(Geod(ellps="WGS84").geometry_area_perimeter(shapely.Polygon(corners))[0])
    assert meter.total == pytest.approx(truth, rel=1e-5)
    assert cells[r0:r1, c0:c1].sum() == pytest.approx(truth, rel=1e-5)
    assert cells[0].mean() < cells[-1].mean()  # row 0 lies further north: smaller cells


def test_web_mercator_summary_matches_the_polygons(tmp_path: Path) -> None:
    """EPSG:3857 at 25° N: the summary used the scene centre's PROJ scale (against a sphere), 0.4 % off its own polygons."""
    scene = write_geotiff(tmp_path / "merc.tif", scene_array(), crs="EPSG:3857",
                          transform=from_origin(6145000, 2887000, 10, 10))
    res = geoseg.segment(scene, output=tmp_path / "m.tif", boxes=[roof_box(0), roof_box(1)], backend="classical",
                         vector=tmp_path / "v.gpkg")
    polys, crs = _mask_polygons(tmp_path / "m.tif")
    truth = _ground_area(polys, crs)
    _, _, _, (_, _, _, area) = pyogrio.raw.read(tmp_path / "v.gpkg")
    assert area.sum() == pytest.approx(truth, rel=1e-6)
    assert res.mask_area == pytest.approx(truth, rel=2e-4)
    from geoseg.raster.areas import pixel_area

    with open_source(scene) as src:
        one, unit = pixel_area(src)
    assert unit == "m2" and 80 < one < 85  # 100 m² of map at 25° N is about 82 m² of ground


def test_local_engineering_grid_in_metres_reports_m2(tmp_path: Path) -> None:
    """A site grid (LOCAL_CS in metres, 0.5 m pixels) is not geographic: its areas are planar m², not pixels."""
    local = 'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    scene = write_geotiff(tmp_path / "local.tif", scene_array(),
                          crs=rasterio.crs.CRS.from_wkt(local), transform=from_origin(1000, 2000, 0.5, 0.5))
    res = geoseg.segment(scene, output=tmp_path / "m.tif", boxes=[roof_box(0)], backend="classical",
                         vector=tmp_path / "v.gpkg")
    polys, _ = _mask_polygons(tmp_path / "m.tif")
    planar = sum(p.area for p in polys)
    assert res.area_unit == "m2" and res.mask_area == pytest.approx(planar) == pytest.approx(0.25 * res.mask_pixels)
    _, _, _, (_, _, _, area) = pyogrio.raw.read(tmp_path / "v.gpkg")
    assert area.sum() == pytest.approx(planar)


def test_state_plane_feet_areas_are_m2(tmp_path: Path) -> None:
    """EPSG:2263 (US survey feet): planar ft² times 0.3048006² — kept as it was, now from the CRS's axis unit."""
    scene = write_geotiff(tmp_path / "ft.tif", scene_array(), crs="EPSG:2263",
                          transform=from_origin(980000, 200000, 30, 30))
    res = geoseg.segment(scene, output=tmp_path / "m.tif", boxes=[roof_box(0)], backend="classical")
    polys, _ = _mask_polygons(tmp_path / "m.tif")
    assert res.mask_area == pytest.approx(sum(p.area for p in polys) * (1200 / 3937) ** 2)


def test_predictor_and_serve_areas_agree_with_segment_on_a_geographic_scene(tmp_path: Path) -> None:
    """The Python predictor's ``area`` and serve's features measure each pixel where it lies, as segment does."""
    from geoseg.predictor import SegmentPredictor
    from geoseg.serve.images import open_image
    from geoseg.serve.outputs import mask_features

    scene = write_geotiff(tmp_path / "geo.tif", scene_array(), crs="EPSG:4326",
                          transform=from_origin(20.0, 70.0, 1e-3, 1e-3))  # 70° N: rows differ by ~2.5 % top to bottom
    res = geoseg.segment(scene, output=tmp_path / "m.tif", boxes=[roof_box(1)], backend="classical")
    polys, crs = _mask_polygons(tmp_path / "m.tif")
    truth = _ground_area(polys, crs)
    pred = SegmentPredictor("classical")
    pred.set_image(scene)
    r = pred.predict(box=roof_box(1))
    assert r.area_unit == "m2" and r.area == pytest.approx(truth, rel=1e-5) == pytest.approx(res.mask_area, rel=1e-5)
    assert abs(r.area - r.pixels * r.pixel_area) > 1e-4 * r.area  # the centre pixel times a count is not it
    record = open_image(scene)
    feats = mask_features(r.full_mask(), record, "box", r.score)
    assert sum(f["properties"]["area"] for f in feats) == pytest.approx(truth, rel=1e-5)
