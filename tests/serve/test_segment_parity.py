"""`geoseg serve` answers as `geoseg segment` does: the nodata hint, --simplify / --min-area, lon/lat boxes.

Each test runs the real app (FastAPI TestClient) on a small seeded GeoTIFF and compares with what the
command's own functions give for the same image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from geoseg.serve import create_app  # noqa: E402

from .conftest import Brightness  # noqa: E402


def _upload(client: TestClient, path: Path) -> str:
    with open(path, "rb") as fh:
        r = client.post("/api/images", files={"file": (path.name, fh, "image/tiff")})
    assert r.status_code == 201, r.text
    return r.json()["image_id"]


def _write(path: Path, img: np.ndarray, crs: str, origin: tuple[float, float], res: float,
           nodata: float | None = None) -> Path:
    import rasterio
    from rasterio.transform import from_origin

    with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=img.shape[0],
                       dtype=img.dtype, crs=crs, transform=from_origin(*origin, res, res), nodata=nodata) as dst:
        dst.write(img)
    return path


@pytest.fixture()
def brightness_client(tmp_path):
    """The app on the :class:`Brightness` text backend ("bright" marks the pixels above 128)."""
    app = create_app(segmenter_factory=Brightness, upload_dir=tmp_path / "uploads", max_upload_mb=2)
    with TestClient(app) as c:
        yield c


# -- 1. a point or box on nodata only -------------------------------------------------------------
def _collared_scene(tmp_path: Path) -> Path:
    """A 3-band UTM scene whose left 80 columns are its nodata value 0 (a clipped scene's collar)."""
    rng = np.random.default_rng(3)
    img = (60 + rng.integers(0, 12, (3, 160, 240))).astype(np.uint8)
    img[:, 40:110, 120:200] = 210
    img[:, :, :80] = 0
    return _write(tmp_path / "collar.tif", img, "EPSG:32640", (300000.0, 2800000.0), 0.5, nodata=0)


def test_a_point_or_box_on_nodata_is_told_so_in_the_apis_words(client, brightness_client, tmp_path):
    import geoseg
    from geoseg.pipeline import NODATA_PROMPT_HINT

    path = _collared_scene(tmp_path)
    iid = _upload(client, path)
    info = client.get(f"/api/images/{iid}").json()
    (lon0, lat0), (lon1, lat1) = info["geo"]["corners_lonlat"][0], info["geo"]["corners_lonlat"][2]
    collar_lonlat = [lon0 + (lon1 - lon0) * 20 / 240, lat0 + (lat1 - lat0) * 80 / 160]  # pixel (20, 80)
    for body in ({"points": [[20, 80]]}, {"box": [5, 10, 70, 150]}, {"points": [[10, 30], [60, 120]]},
                 {"points": [collar_lonlat], "coords": "lonlat"}):
        r = client.post(f"/api/images/{iid}/predict", json=body)
        assert r.status_code == 200, r.text
        d = r.json()
        hint = d["hint"] or ""  # was None: the classical backend has no advice
        assert d["area_px"] == 0 and hint.startswith("it lies on nodata pixels only; move it onto the image's "
                                                     "valid data"), (body, hint)
        assert "coords='lonlat'" in hint and "--prompt-crs" not in hint
    # the command says the same of the same point (its hint names --prompt-crs instead)
    res = geoseg.segment(path, output=tmp_path / "m.tif", points=[(20, 80)], backend="classical")
    assert len(res.hints) == 1 and res.hints[0].endswith(f": {NODATA_PROMPT_HINT}")

    # a box reaching valid data, and a text prompt, are not about nodata
    r = client.post(f"/api/images/{iid}/predict", json={"box": [60, 30, 210, 120]})
    assert r.json()["area_px"] > 0 and r.json()["hint"] is None
    iid = _upload(brightness_client, path)
    d = brightness_client.post(f"/api/images/{iid}/predict", json={"text": "white"}).json()
    assert d["area_px"] == 0 and d["hint"] == "nothing is as bright as 'white' asks"


# -- 2. GeoJSON export with simplify / min_area ---------------------------------------------------
def _blob_scene(tmp_path: Path) -> Path:
    """A UTM scene (0.5 m pixels: 0.25 m² each) with bright shapes on a dark ground: a disk (staircase
    outline) with a 3x3 dark hole (2.25 m²), an ellipse, a 2x2 speck (1 m²) and two 10x10 squares touching
    at a corner only."""
    rng = np.random.default_rng(5)
    h, w = 200, 240
    img = (40 + rng.integers(0, 10, (3, h, w))).astype(np.uint8)
    yy, xx = np.mgrid[:h, :w]
    bright = ((xx - 70) ** 2 + (yy - 80) ** 2 < 50 ** 2) | (((xx - 180) / 40.0) ** 2 + ((yy - 140) / 22.0) ** 2 < 1)
    bright[79:82, 69:72] = False  # the hole
    bright[20:22, 200:202] = True  # the speck
    bright[150:160, 20:30] = bright[160:170, 30:40] = True
    img[:, bright] = 220
    return _write(tmp_path / "blobs.tif", img, "EPSG:32640", (300000.0, 2800000.0), 0.5)


def _vertices(fc: dict) -> int:
    return sum(len(ring) for f in fc["features"] for ring in f["geometry"]["coordinates"])


def test_geojson_export_simplify_and_min_area_as_the_command_writes_them(brightness_client, tmp_path):
    import shapely
    from shapely.geometry import shape

    import geoseg

    path = _blob_scene(tmp_path)
    iid = _upload(brightness_client, path)
    d = brightness_client.post(f"/api/images/{iid}/predict", json={"text": "bright", "include": []}).json()
    url = d["downloads"]["geojson"]

    def export(**params) -> dict:
        r = brightness_client.get(url, params=params)
        assert r.status_code == 200, r.text
        return json.loads(r.content)

    exact, simple, cleaned = export(), export(simplify=1), export(simplify=1, min_area=5)
    # traced as the command traces them: the squares are two polygons, not one whose outline touches itself
    assert len(exact["features"]) == len(simple["features"]) == 5
    assert all(shape(f["geometry"]).is_valid for f in exact["features"] + simple["features"])
    assert _vertices(simple) < 0.6 * _vertices(exact)  # the staircases are gone
    areas = sorted(f["properties"]["area"] for f in exact["features"])
    assert areas[0] == pytest.approx(1.0)  # the speck
    assert len(cleaned["features"]) == 4 and all(f["properties"]["area"] >= 5 for f in cleaned["features"])
    assert all(len(f["geometry"]["coordinates"]) == 1 for f in cleaned["features"])  # the disk's hole is filled
    assert any(len(f["geometry"]["coordinates"]) == 2 for f in simple["features"])
    assert cleaned["geoseg:provenance"]["vector"] == {"simplify": 1.0, "simplify_unit": "px", "min_area": 5.0,
                                                     "min_area_unit": "m2"}
    assert exact["geoseg:provenance"]["vector"]["simplify"] == 0.0

    # the command, on the same scene with the same backend and options, writes the same polygons
    geoseg.segment(path, output=tmp_path / "m.tif", text="bright", segmenter=Brightness(),
                   vector=tmp_path / "cli.geojson", simplify=1, min_area=5)
    cli = json.loads((tmp_path / "cli.geojson").read_text())["features"]
    theirs_all = [shape(f["geometry"]) for f in cli]
    served = [shape(f["geometry"]) for f in cleaned["features"]]
    assert len(theirs_all) == len(served)
    for mine in served:
        theirs = min(theirs_all, key=lambda g: g.centroid.distance(mine.centroid))
        assert shapely.get_num_coordinates(theirs) == shapely.get_num_coordinates(mine)
        assert theirs.hausdorff_distance(mine) < 2e-7  # degrees (~2 cm; the command's GeoJSON keeps 7 decimals)
    assert sorted(round(f["properties"]["area"], 1) for f in cli) == sorted(round(f["properties"]["area"], 1)
                                                                           for f in cleaned["features"])

    # bad values: the usual one-line 422 in the API's words (the command's advice kept)
    for params, problem in (({"simplify": -1}, "simplify -1.0 is not a number >= 0"),
                            ({"min_area": "nan"}, "min_area nan is not a number >= 0"),
                            ({"simplify": "inf"}, "simplify inf is not a number >= 0")):
        r = brightness_client.get(url, params=params)
        assert r.status_code == 422, (params, r.text)
        body = r.json()
        assert body["problem"] == problem and "\n" not in body["detail"] and "--" not in body["problem"]
        assert body["detail"] == f"{body['problem']} ({body['fix']})"
    r = brightness_client.get(d["downloads"]["png"], params={"simplify": 1})
    assert r.status_code == 422 and r.json()["problem"].startswith("simplify shapes the GeoJSON polygons")
    assert brightness_client.get(d["downloads"]["tif"], params={"simplify": 0}).status_code == 200
    assert brightness_client.get(url, params={"simplify": "abc"}).status_code == 422


# -- 3. lon/lat boxes with densified edges --------------------------------------------------------
def test_a_lonlat_box_covers_the_pixels_the_command_gives_it(client, make_geotiff):
    """In a polar stereographic scene (EPSG:3413, 2 km pixels) the lat 70° edge of a lon/lat box bows
    ~17 pixels beyond its corners: the API must take the box the command takes, edges densified."""
    from rasterio.crs import CRS
    from rasterio.transform import from_origin
    from rasterio.warp import transform as warp_transform

    from geoseg.georef import prompt_to_pixels
    from geoseg.prompts import Prompt

    origin, res = (-400000.0, -1900000.0), 2000.0
    iid = _upload(client, make_geotiff("polar.tif", width=400, height=160, crs="EPSG:3413", origin=origin, res=res))
    box = [-55.0, 70.0, -35.0, 72.0]
    r = client.post(f"/api/images/{iid}/predict", json={"box": box, "coords": "lonlat", "include": []})
    assert r.status_code == 200, r.text
    served = r.json()["provenance"]["prompt"]["box"]

    transform = from_origin(*origin, res, res)
    cli = prompt_to_pixels(Prompt(box=tuple(box)), "EPSG:4326", CRS.from_epsg(3413), transform).box
    assert served == pytest.approx(cli, abs=1e-6)
    xs, ys = warp_transform("EPSG:4326", "EPSG:3413", [box[0], box[2], box[2], box[0]], [box[1], box[1], box[3], box[3]])
    corners_only = max((~transform @ (x, y))[1] for x, y in zip(xs, ys))
    assert served[3] - corners_only > 10  # the bulge the corners miss (was served == the corners' box)

    # the client-facing errors for boxes are kept
    r = client.post(f"/api/images/{iid}/predict", json={"box": [200, 95, 210, 96], "coords": "lonlat"})
    assert r.status_code == 422 and "is not a longitude, latitude" in r.json()["detail"]
    r = client.post(f"/api/images/{iid}/predict", json={"box": [10, 60, 20, 62], "coords": "lonlat"})
    assert r.status_code == 422 and r.json()["problem"].startswith("box (lon 10 to 20, lat 60 to 62) does not overlap")
    assert all(math.isfinite(v) for v in served)


def test_nan_pixels_are_nodata_for_the_server_as_for_the_command(client, brightness_client, tmp_path):
    """A float image without a nodata value whose collar is NaN: the command never marks NaN pixels and
    tells a prompt there that it lies on nodata; the server counted them as data."""
    import geoseg

    img = np.full((3, 120, 160), 200.0, np.float32)
    img[:, :, :60] = np.nan
    img[:, 20:40, 80:100] = 50.0
    path = _write(tmp_path / "nan.tif", img, "EPSG:32640", (300000.0, 2800000.0), 0.5)
    iid = _upload(brightness_client, path)
    r = brightness_client.post(f"/api/images/{iid}/predict", json={"text": "bright", "include": ["rle"]})
    assert r.status_code == 200, r.text
    res = geoseg.segment(path, output=tmp_path / "m.tif", text="bright", segmenter=Brightness())
    import rasterio

    with rasterio.open(tmp_path / "m.tif") as ds:
        command = ds.read(1) == 1
    assert r.json()["area_px"] == res.mask_pixels == int(command.sum())
    assert not command[:, :60].any()
    box = client.post(f"/api/images/{_upload(client, path)}/predict", json={"box": [5, 5, 50, 100]}).json()
    assert box["area_px"] == 0 and (box["hint"] or "").startswith("it lies on nodata pixels only")


def test_a_bare_class_name_says_what_the_model_was_asked(tmp_path):
    """The unified backend asks "vegetation" as the class's question (geoseg.unified.class_questions); the server's
    answer says so in its provenance, as geoseg segment's mask does."""
    from geoseg.data.instructions.knowledge import load_kb
    from geoseg.unified.segmenter import UnifiedSegmenter, default_checkpoint_path

    if not default_checkpoint_path().is_file():
        pytest.skip("the default unified checkpoint is not installed in this build")
    app = create_app(segmenter_factory=lambda: UnifiedSegmenter(device="cpu"), upload_dir=tmp_path / "up",
                     max_upload_mb=2)
    img = (60 + np.random.default_rng(1).integers(0, 60, (3, 96, 128))).astype(np.uint8)
    path = _write(tmp_path / "s.tif", img, "EPSG:32640", (300000.0, 2800000.0), 0.5)
    with TestClient(app) as c:
        iid = _upload(c, path)
        asked = c.post(f"/api/images/{iid}/predict", json={"text": "vegetation"}).json()["provenance"]
        literal = c.post(f"/api/images/{iid}/predict", json={"text": "the largest patch of vegetation"}).json()
    assert asked["read_as"] == load_kb().uses("vegetation")[0].query and asked["class_questions"] is True
    assert "read_as" not in literal["provenance"]


def test_the_predict_answer_shapes_its_geojson_as_the_download_does(brightness_client, tmp_path):
    path = _blob_scene(tmp_path)
    iid = _upload(brightness_client, path)
    body = {"text": "bright", "include": ["geojson"], "simplify": 1, "min_area": 5}
    answer = brightness_client.post(f"/api/images/{iid}/predict", json=body).json()
    download = json.loads(brightness_client.get(answer["downloads"]["geojson"],
                                                params={"simplify": 1, "min_area": 5}).content)
    assert [f["geometry"] for f in answer["geojson"]["features"]] == [f["geometry"] for f in download["features"]]
    assert len(answer["geojson"]["features"]) == 4  # the speck dropped
    as_file = brightness_client.post(f"/api/images/{iid}/predict", params={"format": "geojson"}, json=body)
    assert [f["geometry"] for f in json.loads(as_file.content)["features"]] == \
        [f["geometry"] for f in download["features"]]
    # refused before the model runs: nothing to shape, or a value the command refuses
    for bad in ({"text": "bright", "include": ["rle"], "simplify": 1}, {"text": "bright", "simplify": -1}):
        r = brightness_client.post(f"/api/images/{iid}/predict", json=bad)
        assert r.status_code == 422 and len(r.json()["problem"].splitlines()) == 1, r.text
