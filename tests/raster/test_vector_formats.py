"""FlatGeobuf and Shapefile polygon outputs: same polygons as the GeoPackage, provenance, multi-file safety."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import shapely
from rasterio.crs import CRS

import geoseg
from geoseg.errors import GeosegError
from geoseg.vector import _dbf_text, vector_files

from .conftest import roof_box, scene_array, write_plain


def _read(path: Path):
    """Features in ``id`` order (a FlatGeobuf stores them in its spatial index's order)."""
    _, _, wkb, (ids, prompt, score, area) = pyogrio.raw.read(path)
    order = np.argsort(ids)
    return shapely.from_wkb(wkb)[order], ids[order], prompt[order], score[order], area[order]


def test_fgb_and_shp_hold_the_gpkg_polygons_in_the_source_crs(utm_scene: Path, tmp_path: Path) -> None:
    boxes = [roof_box(0), roof_box(1)]
    for ext in ("gpkg", "fgb", "shp", "geojson"):
        geoseg.segment(utm_scene, output=tmp_path / f"m_{ext}.tif", boxes=boxes, backend="classical",
                       vector=tmp_path / f"v.{ext}")
    ref_geoms, ref_ids, ref_prompt, ref_score, ref_area = _read(tmp_path / "v.gpkg")
    assert len(ref_geoms) == 2
    for ext, driver in (("fgb", "FlatGeobuf"), ("shp", "ESRI Shapefile")):
        info = pyogrio.read_info(tmp_path / f"v.{ext}")
        assert info["driver"] == driver and info["layer_name"] == "v"
        assert CRS.from_user_input(info["crs"]) == CRS.from_epsg(32632)
        assert list(info["fields"]) == ["id", "prompt", "score", "area"]
        geoms, ids, prompt, score, area = _read(tmp_path / f"v.{ext}")
        assert list(ids) == list(ref_ids) and list(prompt) == list(ref_prompt)
        assert np.allclose(score, ref_score) and np.allclose(area, ref_area)
        for g, ref in zip(geoms, ref_geoms):
            # a Shapefile stores rings clockwise: same polygon, maybe another vertex order
            assert g.symmetric_difference(ref).area < 1e-6 * ref.area, ext
    assert sorted(p.name for p in tmp_path.glob("v.*")) == ["v.cpg", "v.dbf", "v.fgb", "v.geojson", "v.gpkg",
                                                           "v.prj", "v.shp", "v.shx"]
    # FlatGeobuf and GeoJSON carry the provenance in their layer description
    for ext in ("fgb", "geojson"):
        desc = json.loads(pyogrio.read_info(tmp_path / f"v.{ext}")["layer_metadata"]["DESCRIPTION"])
        assert desc["model"] == "classical" and desc["area_unit"] == "m2"
        assert desc["provenance"]["prompts"][1]["box"] == list(roof_box(1))


def test_rewriting_a_shapefile_replaces_every_part(utm_scene: Path, tmp_path: Path) -> None:
    shp = tmp_path / "out" / "v.shp"
    geoseg.segment(utm_scene, output=tmp_path / "a.tif", boxes=[roof_box(0)], backend="classical", vector=shp)
    assert (tmp_path / "out" / "v.prj").is_file()
    # the same path from a non-georeferenced image: no CRS, so the old .prj must not survive
    plain = write_plain(tmp_path / "plain.png", scene_array())
    geoseg.segment(plain, output=tmp_path / "b.tif", boxes=[roof_box(0), roof_box(1)], backend="classical",
                   vector=shp)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["v.cpg", "v.dbf", "v.shp", "v.shx"]
    info = pyogrio.read_info(shp)
    assert info["crs"] is None and info["features"] == 2


def test_a_failed_shapefile_write_leaves_no_part(utm_scene: Path, tmp_path: Path, monkeypatch) -> None:
    real_write = pyogrio.raw.write

    def write_then_fail(path, *args, **kwargs):
        real_write(path, *args, **kwargs)  # every part is on disk when the failure comes
        raise OSError("No space left on device")

    monkeypatch.setattr(pyogrio.raw, "write", write_then_fail)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="No space"):
        geoseg.segment(utm_scene, output=out / "m.tif", boxes=[roof_box(0)], backend="classical",
                       vector=out / "v.shp")
    assert sorted(p.name for p in out.iterdir()) == []


def test_shapefile_prompt_is_cut_on_a_character_boundary() -> None:
    text = np.array(["é" * 200, "short"], dtype=object)  # 400 bytes of UTF-8
    cut = _dbf_text(text)
    assert cut[0] == "é" * 127 and len(cut[0].encode("utf-8")) == 254
    assert cut[1] == "short" and text[0] == "é" * 200  # the input is left alone


def test_vector_files_and_unsupported_formats() -> None:
    assert vector_files("a/b.gpkg") == ["a/b.gpkg"]
    assert vector_files("a/b.shp") == ["a/b.shp", "a/b.shx", "a/b.dbf", "a/b.prj", "a/b.cpg"]
    assert vector_files("B.SHP") == ["B.SHP", "B.SHX", "B.DBF", "B.PRJ", "B.CPG"]
    with pytest.raises(GeosegError, match=r"unsupported vector output v\.kml"):
        geoseg.vector.vector_driver("v.kml")


def test_web_mercator_areas_are_ground_areas(tmp_path: Path) -> None:
    """EPSG:3857 enlarges areas by sec²(latitude): planar m² there would be 22 % too large at 25° N."""
    from pyproj import Geod, Transformer
    from rasterio.transform import from_origin

    from .conftest import write_geotiff

    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(55.27, 25.2)
    path = write_geotiff(tmp_path / "merc.tif", scene_array(), crs="EPSG:3857", transform=from_origin(x0, y0, 0.5, 0.5))
    result = geoseg.segment(path, output=tmp_path / "m.tif", boxes=[roof_box(0)], backend="classical",
                            vector=tmp_path / "v.gpkg")
    geoms, _, _, _, area = _read(tmp_path / "v.gpkg")
    to_ll = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True)
    ground = abs(Geod(ellps="WGS84").geometry_area_perimeter(
        shapely.transform(geoms[0], lambda xy: np.column_stack(to_ll.transform(xy[:, 0], xy[:, 1]))))[0])
    assert area[0] == pytest.approx(ground, rel=1e-6)
    assert geoms[0].area / area[0] == pytest.approx(1 / np.cos(np.radians(25.2)) ** 2, rel=0.01)  # what it was
    assert result.mask_area == pytest.approx(area.sum(), rel=0.01)  # the summary's area is on the ground too
