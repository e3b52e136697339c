"""Prompts from a vector file (--prompt-file): one target per point / polygon feature, in any CRS."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pyogrio
import pyogrio.raw
import pytest
import rasterio
import shapely
from pyproj import Transformer

import geoseg
from geoseg.errors import InputError, PromptError
from geoseg.prompt_layer import read_prompt_layer

from .conftest import (
    ROOFS,
    UTM_ORIGIN,
    UTM_RES,
    iou,
    roof_box,
    roof_mask,
    scene_array,
    write_geotiff,
    write_plain,
)
from .test_cli_segment import run_cli


def _utm(col: float, row: float) -> tuple[float, float]:
    return UTM_ORIGIN[0] + col * UTM_RES, UTM_ORIGIN[1] - row * UTM_RES


def _write_layer(path: Path, geoms: list, crs: str | None, fids: list[int] | None = None) -> Path:
    wkb = shapely.to_wkb(np.array(geoms, dtype=object))
    names = np.array([f"f{i}" for i in range(len(geoms))], dtype=object)
    geometry_type = "Unknown" if len({g.geom_type for g in geoms}) > 1 else geoms[0].geom_type
    with warnings.catch_warnings():  # a layer without CRS (pixel coordinates) is what some tests want
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        pyogrio.raw.write(path, wkb, [names], ["name"], geometry_type=geometry_type, crs=crs)
    return path


def _roof_features_4326() -> list:
    """Roof 0 as a point at its centre, roof 1 as a polygon around it, one point off the scene (lon/lat)."""
    to_ll = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    r0, r1, c0, c1 = ROOFS[0]
    point = shapely.Point(to_ll.transform(*_utm((c0 + c1) / 2, (r0 + r1) / 2)))
    x0, y0, x1, y1 = roof_box(1, pad=6)
    ring = [to_ll.transform(*_utm(c, r)) for c, r in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    far = shapely.Point(to_ll.transform(*_utm(5000, 5000)))
    return [point, shapely.Polygon(ring), far]


def test_points_and_polygons_in_another_crs_segment_their_targets(utm_scene: Path, tmp_path: Path) -> None:
    layer_path = _write_layer(tmp_path / "prompts.gpkg", _roof_features_4326(), "EPSG:4326")
    res = geoseg.segment(utm_scene, output=tmp_path / "m.tif", prompt_file=layer_path, backend="classical",
                         vector=tmp_path / "v.gpkg")
    assert res.n_prompts == 2  # the third feature lies 50 km away: left out, not an error
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1) == 1
        provenance = json.loads(ds.tags()["provenance_json"])
    assert iou(mask, roof_mask(index=0) | roof_mask(index=1)) > 0.8
    # the outputs name the layer the prompts came from
    assert provenance["prompt_file"] == read_prompt_layer(layer_path).provenance()
    meta, _, wkb, (_, prompt, _, _, feature) = pyogrio.raw.read(tmp_path / "v.gpkg")
    assert list(meta["fields"]) == ["id", "prompt", "score", "area", "feature"]
    by_feature = {str(f): shapely.from_wkb(w) for f, w in zip(feature, wkb)}
    assert sorted(by_feature) == ["1", "2"]  # the GeoPackage's FIDs, for joining back
    assert prompt[0].startswith("points +(") and prompt[0].endswith("| feature 1") and "box (" in prompt[1]
    # each feature's polygon covers its own roof (map coordinates of the scene's CRS)
    r0, r1, c0, c1 = ROOFS[0]
    assert by_feature["1"].contains(shapely.Point(_utm((c0 + c1) / 2, (r0 + r1) / 2)))
    r0, r1, c0, c1 = ROOFS[1]
    assert by_feature["2"].contains(shapely.Point(_utm((c0 + c1) / 2, (r0 + r1) / 2)))


def test_a_layer_without_crs_is_in_pixels_or_in_prompt_crs(utm_scene: Path, tmp_path: Path) -> None:
    x0, y0, x1, y1 = roof_box(0)
    pixels = _write_layer(tmp_path / "px.shp", [shapely.box(x0, y0, x1, y1)], None)
    assert not (tmp_path / "px.prj").exists()
    res = geoseg.segment(utm_scene, output=tmp_path / "a.tif", prompt_file=pixels, backend="classical")
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert iou(ds.read(1) == 1, roof_mask(index=0)) > 0.8
    assert res.n_prompts == 1
    # the same file read as EPSG:32632 metres: the coordinates are then far off the scene
    with pytest.raises(PromptError, match=r"none of the 1 feature\(s\) of .*px.shp fall on utm.tif"):
        geoseg.segment(utm_scene, output=tmp_path / "b.tif", prompt_file=pixels, backend="classical",
                       prompt_crs="EPSG:32632")
    assert not (tmp_path / "b.tif").exists()
    # a file with its own CRS ignores --prompt-crs (with a warning) and still lands on the roof
    utm_layer = _write_layer(tmp_path / "utm.gpkg", [shapely.box(*_utm(x0, y1), *_utm(x1, y0))], "EPSG:32632")
    layer = read_prompt_layer(utm_layer, "EPSG:4326")
    assert "32632" in layer.crs and layer.kinds == frozenset({"box"})


def test_bad_prompt_files(utm_scene: Path, tmp_path: Path) -> None:
    line = _write_layer(tmp_path / "line.gpkg", [shapely.LineString([(0, 0), (10, 10)])], None)
    with pytest.raises(PromptError, match="feature 1 of .*line.gpkg is a LineString"):
        read_prompt_layer(line)
    with pytest.raises(InputError, match="does not exist"):
        read_prompt_layer(tmp_path / "nothing.gpkg")
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a geopackage")
    with pytest.raises(InputError, match="cannot read prompt file"):
        read_prompt_layer(junk)
    two = tmp_path / "two.gpkg"
    for name in ("a", "b"):
        pyogrio.raw.write(two, shapely.to_wkb(np.array([shapely.Point(1, 1)], dtype=object)), [], [],
                          layer=name, geometry_type="Point", append=name == "b", crs="EPSG:32632")
    with pytest.raises(InputError, match=r"holds 2 layers \(a, b\)"):
        read_prompt_layer(two)
    # map coordinates cannot be placed on an image without a georeference
    plain = write_plain(tmp_path / "plain.png", scene_array())
    ll = _write_layer(tmp_path / "ll.gpkg", _roof_features_4326()[:1], "EPSG:4326")
    with pytest.raises(InputError, match="plain.png has no CRS, so the features of .*ll.gpkg cannot be placed"):
        geoseg.segment(plain, output=tmp_path / "p.tif", prompt_file=ll, backend="classical")
    assert not (tmp_path / "p.tif").exists()


def test_a_csv_table_of_points_or_wkt(utm_scene: Path, tmp_path: Path) -> None:
    """A CSV of lon/lat (or x/y, or WKT) rows is a prompt layer, as QGIS reads a delimited-text layer.

    Before, GDAL opened the CSV as a table without geometry and the read failed with a TypeError.
    """
    to_ll = Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True)
    r0, r1, c0, c1 = ROOFS[0]
    lon, lat = to_ll.transform(*_utm((c0 + c1) / 2, (r0 + r1) / 2))
    lonlat = tmp_path / "roofs.csv"
    lonlat.write_text(f"id,Longitude,Latitude\n7,{lon:.9f},{lat:.9f}\n")
    geoseg.segment(utm_scene, output=tmp_path / "a.tif", prompt_file=lonlat, prompt_crs="EPSG:4326",
                   backend="classical")
    with rasterio.open(tmp_path / "a.tif") as ds:
        assert iou(ds.read(1) == 1, roof_mask(index=0)) > 0.8
    x0, y0, x1, y1 = roof_box(1)
    wkt = tmp_path / "boxes.csv"
    wkt.write_text(f'name,wkt\nroof,"{shapely.box(x0, y0, x1, y1).wkt}"\n')
    layer = read_prompt_layer(wkt)
    assert layer.kinds == frozenset({"box"}) and len(layer.fids) == 1
    bare = tmp_path / "names.csv"
    bare.write_text("name\nroof\n")
    with pytest.raises(PromptError, match="names.csv has no geometry .*x/y .*columns"):
        read_prompt_layer(bare)


def test_cli_prompt_file_and_its_errors(utm_scene: Path, tmp_path: Path, capsys) -> None:
    layer_path = _write_layer(tmp_path / "prompts.gpkg", _roof_features_4326(), "EPSG:4326")
    rc, out, _ = run_cli(["segment", str(utm_scene), "--prompt-file", str(layer_path), "--backend", "classical",
                          "-o", str(tmp_path / "out" / "m.tif"), "--vector", str(tmp_path / "out" / "v.shp")], capsys)
    assert rc == 0 and "from 2 prompt(s)" in out and "wrote " in out
    assert pyogrio.read_info(tmp_path / "out" / "v.shp")["features"] == 2
    line = _write_layer(tmp_path / "line.gpkg", [shapely.LineString([(0, 0), (10, 10)])], None)
    rc, _, err = run_cli(["segment", str(utm_scene), "--prompt-file", str(line), "--backend", "classical",
                          "-o", str(tmp_path / "bad" / "m.tif")], capsys)
    err = err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: feature 1 of") and "LineString" in err[0]
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_layer_covering_two_scenes_in_a_batch(tmp_path: Path) -> None:
    from geoseg.batch import run_batch

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_geotiff(scenes / "west.tif", scene_array(seed=1))
    east = rasterio.transform.from_origin(UTM_ORIGIN[0] + 320 * UTM_RES, UTM_ORIGIN[1], UTM_RES, UTM_RES)
    write_geotiff(scenes / "east.tif", scene_array(seed=2), transform=east)
    # roof 0 of the west scene, roof 1 of the east scene (its pixel columns shifted by the scene width)
    x0, y0, x1, y1 = roof_box(1)
    geoms = [shapely.box(*_utm(roof_box(0)[0], roof_box(0)[3]), *_utm(roof_box(0)[2], roof_box(0)[1])),
             shapely.box(*_utm(x0 + 320, y1), *_utm(x1 + 320, y0))]
    layer_path = _write_layer(tmp_path / "both.gpkg", geoms, "EPSG:32632")
    out = tmp_path / "out"
    s = run_batch(scenes, out, [], prompt_file=layer_path, backend="classical", vector="gpkg",
                  merged_vector=tmp_path / "all.fgb")
    assert s.count("done") == 2
    meta, _, _, data = pyogrio.raw.read(tmp_path / "all.fgb")
    fields = list(meta["fields"])
    merged = dict(zip(data[fields.index("scene")], data[fields.index("feature")]))
    assert merged == {"west": 1, "east": 2}  # each scene's answer names the feature that asked for it
    for name, index in (("west", 0), ("east", 1)):
        with rasterio.open(out / f"{name}.tif") as ds:
            assert iou(ds.read(1) == 1, roof_mask(index=index)) > 0.8, name
    # the resume key follows the layer's content: changing a feature redoes the scenes
    assert run_batch(scenes, out, [], prompt_file=layer_path, backend="classical", vector="gpkg").count("skipped") == 2
    _write_layer(layer_path, [geoms[0], shapely.box(*_utm(x0 + 330, y1), *_utm(x1 + 330, y0))], "EPSG:32632")
    assert run_batch(scenes, out, [], prompt_file=layer_path, backend="classical", vector="gpkg").count("done") == 2


def test_danish_parcels_as_box_prompts(shared_data: Path, tmp_path: Path) -> None:
    """Real data: the 276 parcel polygons (their own CRS file) prompt the Sentinel-2 scene, one answer each."""
    folder = shared_data / "dk_fields"
    if not (folder / "marker2016_small.shp").exists():
        pytest.skip(f"{folder} has no marker2016_small.shp")
    res = geoseg.segment(folder / "RGB_small.tif", output=tmp_path / "m.tif", bands="3,2,1",
                         prompt_file=folder / "marker2016_small.shp", backend="classical", vector=tmp_path / "v.gpkg")
    parcels = pyogrio.raw.read(folder / "marker2016_small.shp", return_fids=True)
    assert res.n_prompts == len(parcels[1]) == 276
    truth = dict(zip(parcels[1].tolist(), shapely.from_wkb(parcels[2])))
    _, _, wkb, (_, _, _, _, feature) = pyogrio.raw.read(tmp_path / "v.gpkg")
    answers: dict[int, list] = {}
    for f, g in zip(feature, shapely.from_wkb(wkb)):
        answers.setdefault(int(f), []).append(g)
    fids = sorted(answers)
    own = [shapely.union_all(answers[f]).intersection(truth[f]).area / shapely.union_all(answers[f]).area
           for f in fids]
    shifted = [shapely.union_all(answers[f]).intersection(truth[fids[(i + 7) % len(fids)]]).area
               / shapely.union_all(answers[f]).area for i, f in enumerate(fids)]
    # most of each answer lies on the parcel whose feature asked for it, not on another one
    assert len(fids) > 250 and np.median(own) > 0.6 and np.median(shifted) < 0.05


def test_neighbouring_parcels_each_keep_their_answer(shared_data: Path, tmp_path: Path) -> None:
    """Real data: clicks on 60 neighbouring Danish parcels; answers overlap, and each feature keeps its polygons."""
    folder = shared_data / "dk_fields"
    if not (folder / "marker2016_small.shp").exists():
        pytest.skip(f"{folder} has no marker2016_small.shp")
    parcels = shapely.from_wkb(pyogrio.raw.read(folder / "marker2016_small.shp")[2])
    near = parcels[np.argsort(shapely.distance(shapely.centroid(parcels), shapely.centroid(parcels[0])))[:60]]
    layer = _write_layer(tmp_path / "clicks.gpkg", list(shapely.point_on_surface(near)), "EPSG:32632")
    res = geoseg.segment(folder / "RGB_small.tif", output=tmp_path / "m.tif", bands="3,2,1", prompt_file=layer,
                         vector=tmp_path / "v.gpkg")
    _, _, wkb, (_, _, _, area, feature) = pyogrio.raw.read(tmp_path / "v.gpkg")
    answered = {i + 1 for i, s in enumerate(res.prompt_scores) if s is not None}  # a GeoPackage's FIDs start at 1
    assert len(answered) > 40 and set(feature.tolist()) == answered
    # the answers overlap (a click paints more than its parcel), and the mask is their union
    assert area.sum() > 1.2 * shapely.union_all(shapely.from_wkb(wkb)).area
    assert res.mask_area == pytest.approx(shapely.union_all(shapely.from_wkb(wkb)).area)
