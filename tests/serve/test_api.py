"""The REST API: set an image once, prompt it many times; outputs in every format; bad input gets 4xx."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from geoseg.rle import rle_decode  # noqa: E402
from geoseg.serve import create_app  # noqa: E402

from .conftest import Brightness, uploaded_files  # noqa: E402


def _upload(client, path, name=None, **data):
    with open(path, "rb") as fh:
        return client.post("/api/images", files={"file": (name or path.name, fh, "application/octet-stream")},
                           data=data)


def test_box_on_georeferenced_geotiff_all_formats(client, make_geotiff, tmp_path):
    import rasterio
    from PIL import Image

    path = make_geotiff()
    r = _upload(client, path)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["georeferenced"] and info["geo"]["crs"] == "EPSG:32640"
    assert info["geo"]["fit_error_px"] < 0.5
    iid = info["image_id"]

    r = client.post(f"/api/images/{iid}/predict", json={"box": [42, 32, 158, 128], "include": ["rle", "geojson",
                                                                                               "overlay"]})
    assert r.status_code == 200, r.text
    d = r.json()
    mask = rle_decode(d["rle"])
    truth = np.zeros((256, 320), bool)
    truth[40:120, 50:150] = True
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou > 0.9
    assert d["area_px"] == int(mask.sum())
    assert d["overlay_png"].startswith("data:image/png;base64,")
    assert d["embedding_cached"] is True
    assert d["provenance"]["model"] == "classical"

    # GeoJSON: EPSG:4326 polygons at the rectangle's true place, area in m² (0.5 m pixels)
    fc = d["geojson"]
    assert fc["geoseg:coordinates"] == "lonlat" and len(fc["features"]) == 1
    feat = fc["features"][0]
    assert abs(feat["properties"]["area"] - mask.sum() * 0.25) < 1e-6 * mask.sum()
    from pyproj import Transformer

    lon, lat = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True).transform(300000 + 100 * 0.5,
                                                                                        2800000 - 80 * 0.5)
    ring = np.asarray(feat["geometry"]["coordinates"][0])
    assert abs(ring[:, 0].mean() - lon) < 2e-4 and abs(ring[:, 1].mean() - lat) < 2e-4

    # downloads: PNG equals the RLE, the GeoTIFF carries the source georeference and the prompt
    png = client.get(d["downloads"]["png"])
    assert png.headers["content-type"] == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png.content))) > 0, mask)
    tif = client.get(d["downloads"]["tif"])
    assert tif.status_code == 200 and "attachment" in tif.headers["content-disposition"]
    out = tmp_path / "mask.tif"
    out.write_bytes(tif.content)
    with rasterio.open(out) as dst, rasterio.open(path) as src:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.nodata == 255
        assert np.array_equal(dst.read(1) == 1, mask)
        assert "box" in dst.tags()["prompt"] and dst.tags()["model"] == "classical"
    gj = client.get(d["downloads"]["geojson"])
    assert gj.headers["content-type"] == "application/geo+json"
    assert json.loads(gj.content)["features"][0]["geometry"] == feat["geometry"]

    # the same box in lon/lat gives the same mask; ?format=png answers with the file
    t = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True)
    (lx0, lx1), (ly0, ly1) = t.transform([300000 + 42 * 0.5, 300000 + 158 * 0.5], [2800000 - 32 * 0.5, 2800000 - 128 * 0.5])
    r = client.post(f"/api/images/{iid}/predict?format=png",
                    json={"box": [lx0, min(ly0, ly1), lx1, max(ly0, ly1)], "coords": "lonlat"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    ll_mask = np.asarray(Image.open(io.BytesIO(r.content))) > 0
    assert (ll_mask & mask).sum() / (ll_mask | mask).sum() > 0.95


def test_embedding_computed_once_per_image(client, dubai_building):
    image, (bx, by), building = dubai_building
    first = _upload(client, image)
    assert first.status_code == 201 and first.json()["embedding_cached"] is False
    again = _upload(client, image)  # the same file under the same name (another name: test_names_and_bands.py)
    assert again.json()["image_id"] == first.json()["image_id"] and again.json()["embedding_cached"] is True
    iid = first.json()["image_id"]
    results = []
    for dx in (0, 3, -3):
        r = client.post(f"/api/images/{iid}/predict", json={"points": [[bx + dx, by]], "include": ["rle"]})
        assert r.status_code == 200, r.text
        results.append(r.json())
    sess = client.app.state.store.get(iid)
    assert sess.embed_count == 1 and sess.predict_count == 3
    assert all(r["embedding_cached"] and r["timing_ms"]["embed"] == 0.0 for r in results)
    mask = rle_decode(results[0]["rle"])
    assert mask[by, bx] and building[mask].mean() > 0.5
    listed = client.get("/api/images").json()
    assert [i["image_id"] for i in listed] == [iid]
    assert not listed[0]["georeferenced"]


@pytest.mark.parametrize("body, status, words", [
    ({"points": [[5000, 10]]}, 422, "is outside the 320x256 image (send pixel coordinates inside the image, or lon/lat"),
    ({"box": [400, 300, 500, 400]}, 422, "does not overlap"),
    ({"box": [50, 50, 10, 10]}, 422, "inverted"),
    ({"points": [[1, 2, 3]]}, 422, "points.0"),
    ({"points": [[1, 2]], "labels": [1, 0]}, 422, "labels"),
    ({"points": [[1, 2]], "labels": [7]}, 422, "labels.0"),
    ({"colour": "red"}, 422, "colour"),
    ({}, 422, "empty"),
    ({"text": "the red roof"}, 422, "cannot use text"),
    ({"points": [[10, 10]], "coords": "lonlat"}, 422, "outside"),
    ({"points": [[10, 10]] * 65}, 422, "points"),
])
def test_bad_prompts_get_4xx_and_the_server_keeps_serving(client, make_geotiff, body, status, words):
    iid = _upload(client, make_geotiff()).json()["image_id"]
    r = client.post(f"/api/images/{iid}/predict", json=body)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]
    ok = client.post(f"/api/images/{iid}/predict", json={"box": [42, 32, 158, 128]})
    assert ok.status_code == 200


def test_bad_requests(client, make_geotiff, tmp_path):
    iid = _upload(client, make_geotiff()).json()["image_id"]
    r = client.post(f"/api/images/{iid}/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "JSON" in r.json()["detail"]
    r = client.post("/api/images/0123456789abcdef/predict", json={"points": [[1, 1]]})
    assert r.status_code == 404 and "unknown image id" in r.json()["detail"] and "upload" in r.json()["detail"]
    r = client.get(f"/api/images/{iid}/masks/nope.png")
    assert r.status_code == 404 and "unknown mask id" in r.json()["detail"]
    r = client.get(f"/api/images/{iid}/masks/nope.exe")
    assert r.status_code == 422
    # not an image, an empty file, bad bands
    bad = tmp_path / "notes.tif"
    bad.write_text("this is not a raster")
    r = _upload(client, bad)
    assert r.status_code == 400 and "unsupported image format" in r.json()["detail"]
    bad.write_bytes(b"II*\x00" + b"not really a TIFF" * 8)  # looks like a TIFF, is not one
    r = _upload(client, bad)
    assert r.status_code == 400 and "cannot read the image" in r.json()["detail"]
    assert str(tmp_path) not in r.json()["detail"]  # the server's folders are not shown to clients
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert _upload(client, empty).status_code == 400
    r = _upload(client, make_geotiff("b.tif", seed=3), bands="4,3,2")
    assert r.status_code == 400 and "bands" in r.json()["detail"]
    r = _upload(client, make_geotiff("c.tif", seed=5), bands="x")
    assert r.status_code == 400
    # the upload folder holds no leftovers of the refused uploads
    kept = uploaded_files(tmp_path / "uploads")
    assert len(kept) == 1 and kept[0].startswith(iid)
    assert client.get("/api/health").json()["status"] == "ok"


def test_size_limits(tmp_path, make_geotiff):
    big = make_geotiff("big.tif", width=1200, height=1000)  # ~3.6 MB uncompressed GeoTIFF
    app = create_app("classical", upload_dir=tmp_path / "up", max_upload_mb=1, max_json_kb=4, max_pixels=100_000)
    with TestClient(app) as c:
        r = _upload(c, big)
        assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"]

        def chunks():  # no Content-Length: counted while streaming
            data = big.read_bytes()
            for i in range(0, len(data), 65536):
                yield data[i:i + 65536]

        r = c.post("/api/images", content=chunks(), headers={"content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 413
        r = _upload(c, make_geotiff("px.tif", width=400, height=300))  # 120,000 px > max_pixels
        assert r.status_code == 413 and "geoseg segment" in r.json()["detail"]
        small = _upload(c, make_geotiff("ok.tif", width=300, height=256))
        assert small.status_code == 201
        r = c.post(f"/api/images/{small.json()['image_id']}/predict", json={"text": "x" * 5000})
        assert r.status_code == 413
        kept = uploaded_files(tmp_path / "up")
        assert kept and all(Path(n).suffix == ".tif" for n in kept)


def test_reference_images_only_under_roots(client, make_geotiff, tmp_path):
    path = make_geotiff("ref.tif")
    r = client.post("/api/images/reference", json={"path": str(path)})
    assert r.status_code == 201 and r.json()["name"] == "ref.tif"
    r = client.post("/api/images/reference", json={"path": "/etc/passwd"})
    assert r.status_code == 403 and "outside the allowed image roots" in r.json()["detail"]
    r = client.post("/api/images/reference", json={"path": str(tmp_path / "missing.tif")})
    assert r.status_code == 400
    app = create_app("classical", upload_dir=tmp_path / "u2")
    with TestClient(app) as c:
        r = c.post("/api/images/reference", json={"path": str(path)})
        assert r.status_code == 403 and "--image-root" in r.json()["detail"]


def test_lru_eviction_and_delete(tmp_path, make_geotiff):
    app = create_app("classical", upload_dir=tmp_path / "u", max_images=1)
    with TestClient(app) as c:
        a = _upload(c, make_geotiff("a.tif", seed=0)).json()["image_id"]
        b = _upload(c, make_geotiff("b.tif", seed=1)).json()["image_id"]
        assert c.get(f"/api/images/{a}").status_code == 404
        assert c.get(f"/api/images/{b}").status_code == 200
        assert c.delete(f"/api/images/{b}").status_code == 204
        assert c.get(f"/api/images/{b}").status_code == 404


def test_internal_error_is_a_500_and_the_server_keeps_serving(tmp_path, make_geotiff):
    from geoseg.segmenters.classical import GrabCutSegmenter

    class Flaky(GrabCutSegmenter):
        """The real classical backend, failing on one specific prompt."""

        def _predict(self, prompt):
            if prompt.points and prompt.points[0] == (13.0, 13.0):
                raise RuntimeError("backend exploded")
            return super()._predict(prompt)

    app = create_app(segmenter_factory=Flaky, upload_dir=tmp_path / "u")
    with TestClient(app, raise_server_exceptions=False) as c:
        iid = _upload(c, make_geotiff()).json()["image_id"]
        r = c.post(f"/api/images/{iid}/predict", json={"points": [[13, 13]]})
        assert r.status_code == 500 and "backend exploded" in r.json()["detail"]
        assert c.post(f"/api/images/{iid}/predict", json={"box": [42, 32, 158, 128]}).status_code == 200


def test_empty_answers_carry_the_backends_hint(tmp_path, make_geotiff):
    app = create_app(segmenter_factory=Brightness, upload_dir=tmp_path / "u")
    with TestClient(app) as c:
        iid = _upload(c, make_geotiff()).json()["image_id"]
        empty = c.post(f"/api/images/{iid}/predict", json={"text": "white"}).json()
        assert empty["area_px"] == 0 and empty["hint"] == "nothing is as bright as 'white' asks"
        found = c.post(f"/api/images/{iid}/predict", json={"text": "light"}).json()
        assert found["area_px"] > 0 and found["hint"] is None


def test_openapi_and_page(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/images", "/api/images/{image_id}/predict", "/api/images/{image_id}/masks/{mask_id}.{fmt}"} <= set(
        schema["paths"])
    assert "PredictRequest" in schema["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "<canvas id=\"map\"" in page.text
    for asset in ("/static/app.js", "/static/app.css"):
        r = client.get(asset)
        assert r.status_code == 200 and "http" not in r.text.replace("http://", "").split("//")[0]
    # no CDN: nothing the page loads points off the server
    assert "https://" not in page.text and "cdn" not in page.text.lower()
    assert client.get("/api/backend").json()["capabilities"] == ["box", "point"]


def test_concurrent_prompts_on_a_live_server(live_server, make_geotiff):
    httpx = pytest.importorskip("httpx")
    path = make_geotiff("live.tif")
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        with open(path, "rb") as fh:
            iid = c.post("/api/images", files={"file": ("live.tif", fh)}).json()["image_id"]
    codes: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        with httpx.Client(base_url=live_server.url, timeout=60) as c:
            r = c.post(f"/api/images/{iid}/predict", json={"box": [42 + k, 32, 158, 128], "include": ["rle"]})
            with lock:
                codes.append(r.status_code)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 6
    with httpx.Client(base_url=live_server.url, timeout=60) as c:
        info = c.get(f"/api/images/{iid}").json()
        assert info["embedding_cached"] is True
        r = c.post(f"/api/images/{iid}/predict", content=b"[[[", headers={"content-type": "application/json"})
        assert r.status_code == 422
        assert c.get("/api/health").json()["status"] == "ok"
