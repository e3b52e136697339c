"""Bad input found by exploratory testing: each gets a clear 4xx (or a clean start-up error), never a 500,
never a file read outside the image roots, never a leftover file."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from geoseg.errors import GeosegError  # noqa: E402
from geoseg.serve import create_app  # noqa: E402

from .conftest import LiveServer, uploaded_files  # noqa: E402


def _upload(client, path: Path, name: str | None = None, **data):
    with open(path, "rb") as fh:
        return client.post("/api/images", files={"file": (name or path.name, fh, "application/octet-stream")},
                           data=data)


def _leftovers(tmp_path: Path) -> list[str]:
    return uploaded_files(tmp_path / "uploads")


# -- 1. GDAL virtual rasters must not read files outside the roots ------------------------------------
@pytest.fixture()
def secret(tmp_path_factory) -> Path:
    """A GeoTIFF outside every image root, whose pixels are all 77."""
    import rasterio

    path = tmp_path_factory.mktemp("outside") / "secret.tif"
    with rasterio.open(path, "w", driver="GTiff", width=16, height=16, count=1, dtype="uint8") as dst:
        dst.write(np.full((1, 16, 16), 77, np.uint8))
    return path


def _vrt_simple(source: Path) -> str:
    return ('<VRTDataset rasterXSize="16" rasterYSize="16"><VRTRasterBand dataType="Byte" band="1">'
            f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename><SourceBand>1</SourceBand>'
            '</SimpleSource></VRTRasterBand></VRTDataset>')


def _vrt_raw(source: Path) -> str:
    return ('<VRTDataset rasterXSize="16" rasterYSize="4"><VRTRasterBand dataType="Byte" band="1" '
            f'subClass="VRTRawRasterBand"><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
            '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>16</LineOffset>'
            '</VRTRasterBand></VRTDataset>')


@pytest.mark.parametrize("make_vrt", [_vrt_simple, _vrt_raw], ids=["SimpleSource", "VRTRawRasterBand"])
def test_uploaded_vrt_pointing_outside_the_roots_is_refused(client, tmp_path, secret, make_vrt):
    vrt = tmp_path / "evil.vrt"
    vrt.write_text(make_vrt(secret))
    for name in ("evil.vrt", "evil.tif"):  # the file name does not matter: the bytes are not an allowed format
        r = _upload(client, vrt, name=name)
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert detail.startswith("unsupported image format") and "give a GeoTIFF, JPEG or PNG" in detail
        assert "\n" not in detail and str(secret) not in detail
    assert _leftovers(tmp_path) == []
    assert client.get("/api/images").json() == []


@pytest.mark.parametrize("make_vrt", [_vrt_simple, _vrt_raw], ids=["SimpleSource", "VRTRawRasterBand"])
def test_referenced_vrt_under_a_root_pointing_outside_is_refused(client, tmp_path, secret, make_vrt):
    vrt = tmp_path / "inside.vrt"  # under the root, its source is not
    vrt.write_text(make_vrt(secret))
    r = client.post("/api/images/reference", json={"path": str(vrt)})
    assert r.status_code == 400, r.text
    assert "unsupported image format" in r.json()["detail"] and "GeoTIFF, JPEG or PNG" in r.json()["detail"]
    assert client.get("/api/images").json() == []


def test_allowed_formats_still_open(client, tmp_path, make_geotiff):
    import cv2

    img = np.zeros((40, 60, 3), np.uint8)
    img[10:30, 20:40] = 200
    for ext in (".png", ".jpg"):
        cv2.imwrite(str(tmp_path / f"plain{ext}"), img)
        r = _upload(client, tmp_path / f"plain{ext}")
        assert r.status_code == 201, r.text
        assert (r.json()["width"], r.json()["height"]) == (60, 40)
    r = client.post("/api/images/reference", json={"path": str(make_geotiff("ref.tif"))})
    assert r.status_code == 201, r.text


# -- 2. non-Latin-1 file names ------------------------------------------------------------------------
def test_non_latin1_upload_name_gives_rfc6266_downloads(client, make_geotiff):
    from urllib.parse import quote

    r = _upload(client, make_geotiff(), name="迪拜_建筑.tif")
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "迪拜_建筑.tif"
    iid = r.json()["image_id"]
    pred = client.post(f"/api/images/{iid}/predict", json={"box": [42, 32, 158, 128]})
    assert pred.status_code == 200, pred.text
    mask_id = pred.json()["mask_id"]
    for ext, url in pred.json()["downloads"].items():
        got = client.get(url)
        assert got.status_code == 200, got.text
        cd = got.headers["content-disposition"]
        assert cd.isascii()
        assert f'filename="______{mask_id}.{ext}"' in cd  # 迪拜_建筑_ with each CJK char as _
        assert f"filename*=UTF-8''{quote('迪拜_建筑_')}{mask_id}.{ext}" in cd
    r = client.post(f"/api/images/{iid}/predict?format=png", json={"box": [42, 32, 158, 128]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


# -- 3. a 500 keeps the connection usable ---------------------------------------------------------------
class _Exploding:
    """A backend that fails on every prompt (an unexpected bug)."""

    @staticmethod
    def factory():
        from geoseg.segmenters.classical import GrabCutSegmenter

        class Exploding(GrabCutSegmenter):
            def _predict(self, prompt):
                raise RuntimeError("backend exploded\nsecond line of the message")

        return Exploding()


def test_500_does_not_propagate_and_is_one_line(tmp_path, make_geotiff):
    app = create_app(segmenter_factory=_Exploding.factory, upload_dir=tmp_path / "u")
    with TestClient(app) as c:  # raise_server_exceptions=True: an exception escaping the app fails here
        iid = _upload(c, make_geotiff()).json()["image_id"]
        r = c.post(f"/api/images/{iid}/predict", json={"box": [42, 32, 158, 128]})
        assert r.status_code == 500
        detail = r.json()["detail"]
        assert "RuntimeError: backend exploded" in detail and "\n" not in detail
        assert c.get("/api/health").status_code == 200


def test_500_keeps_the_kept_alive_connection(tmp_path, make_geotiff):
    app = create_app(segmenter_factory=_Exploding.factory, upload_dir=tmp_path / "u")
    body = make_geotiff().read_bytes()
    boundary = "geosegboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"s.tif\"\r\n"
            "Content-Type: image/tiff\r\n\r\n").encode() + body + f"\r\n--{boundary}--\r\n".encode()
    with LiveServer(app) as srv:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            conn.request("POST", "/api/images", body=form,
                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            up = conn.getresponse()
            iid = json.loads(up.read())["image_id"]
            sock = conn.sock
            conn.request("POST", f"/api/images/{iid}/predict", body=json.dumps({"box": [42, 32, 158, 128]}),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.status == 500 and "backend exploded" in json.loads(r.read())["detail"]
            assert (r.getheader("connection") or "").lower() != "close"
            assert conn.sock is sock  # http.client would have dropped a socket the server said it closes
            conn.request("GET", "/api/health")  # the same socket: reset by the old server
            ok = conn.getresponse()
            assert ok.status == 200 and json.loads(ok.read())["status"] == "ok"
            assert conn.sock is sock
        finally:
            conn.close()


# -- 4. other client errors that were 500s ----------------------------------------------------------------
def test_truncated_tiff_is_a_400(client, make_geotiff, tmp_path):
    cut = tmp_path / "cut.tif"
    cut.write_bytes(make_geotiff().read_bytes()[:3000])
    r = _upload(client, cut)
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "truncated or corrupt" in detail and "send the complete" in detail
    assert str(tmp_path) not in detail and "\n" not in detail
    assert _leftovers(tmp_path) == []
    r = client.post("/api/images/reference", json={"path": str(cut)})
    assert r.status_code == 400 and "truncated or corrupt" in r.json()["detail"]


def test_upload_with_a_very_long_extension(client, make_geotiff, tmp_path):
    name = "scene." + "x" * 300
    r = _upload(client, make_geotiff(), name=name)
    assert r.status_code == 201, r.text  # the bytes are a GeoTIFF: the client's name does not matter
    assert r.json()["name"] == name
    assert [Path(n).suffix for n in _leftovers(tmp_path)] == [".tif"]
    pred = client.post(f"/api/images/{r.json()['image_id']}/predict?format=tif", json={"box": [42, 32, 158, 128]})
    assert pred.status_code == 200
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    r = _upload(client, notes, name="n." + "y" * 300)
    assert r.status_code == 400 and "unsupported image format" in r.json()["detail"]
    assert str(tmp_path) not in r.json()["detail"]


def test_reference_path_with_a_nul_byte_is_a_400(client):
    r = client.post("/api/images/reference", json={"path": "/root/\u0000x"})
    assert r.status_code == 400, r.text
    assert "NUL" in r.json()["detail"]


def test_empty_band_list_is_the_default(client, make_geotiff):
    path = make_geotiff("ref.tif")
    a = client.post("/api/images/reference", json={"path": str(path)}).json()["image_id"]
    b = client.post("/api/images/reference", json={"path": str(path), "bands": []}).json()["image_id"]
    assert a == b and len(client.get("/api/images").json()) == 1


# -- 5. temporary upload folders ---------------------------------------------------------------------------
def test_temporary_upload_folder_is_removed_at_shutdown(private_tmp, make_geotiff):
    app = create_app("classical")
    assert list(private_tmp.iterdir()) == []  # nothing made before the first upload
    with TestClient(app) as c:
        assert _upload(c, make_geotiff()).status_code == 201
        (folder,) = private_tmp.iterdir()
        assert folder.name.startswith("geoseg-serve-")
        assert sorted(p.name for p in folder.iterdir())[0] == ".geoseg-serve.lock"  # the running server's marker
        assert len(list(folder.iterdir())) == 2  # ... and the upload
    assert list(private_tmp.iterdir()) == []


def test_given_upload_folder_is_emptied_at_shutdown(tmp_path, make_geotiff):
    app = create_app("classical", upload_dir=tmp_path / "uploads")
    with TestClient(app) as c:
        assert _upload(c, make_geotiff()).status_code == 201
        assert len(_leftovers(tmp_path)) == 1
    assert _leftovers(tmp_path) == []


@pytest.fixture()
def no_listen(monkeypatch):
    """Make ``uvicorn.run`` fail loudly, so a start that should have failed cannot hang the test."""
    import uvicorn

    def run(*_a, **_k):
        raise AssertionError("the server started listening")

    monkeypatch.setattr(uvicorn, "run", run)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    from geoseg.cli import main

    with pytest.raises(SystemExit) as info:
        main(["-q", *args])
    return info.value.code, capsys.readouterr().err


def test_failed_start_leaves_no_folder(private_tmp, no_listen, capsys):
    code, err = _cli(["serve", "--backend", "nope"], capsys)
    assert code == 2 and "unknown segmenter backend" in err
    assert list(private_tmp.iterdir()) == []


# -- 6. --checkpoint checked before listening ---------------------------------------------------------------
def test_missing_checkpoint_fails_before_listening(private_tmp, no_listen, capsys):
    code, err = _cli(["serve", "--backend", "unified", "--checkpoint", "/nonexistent.pt"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "checkpoint /nonexistent.pt does not exist" in err
    assert list(private_tmp.iterdir()) == []


def test_checkpoint_for_a_backend_without_weights_is_refused(tmp_path, private_tmp, no_listen, capsys):
    code, err = _cli(["serve", "--backend", "classical", "--checkpoint", "/nonexistent.pt"], capsys)
    assert code == 2 and "loads no weights" in err and "leave out --checkpoint" in err
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"weights")
    code, err = _cli(["serve", "--backend", "classical", "--checkpoint", str(ckpt)], capsys)
    assert code == 2 and "loads no weights" in err
    assert list(private_tmp.iterdir()) == []


# -- 7. API answers give fixes an API client can apply -------------------------------------------------------
def test_json_too_large_names_an_api_fix(tmp_path, make_geotiff):
    app = create_app("classical", upload_dir=tmp_path / "up", max_json_kb=4)
    with TestClient(app) as c:
        iid = _upload(c, make_geotiff()).json()["image_id"]
        r = c.post(f"/api/images/{iid}/predict", json={"text": "x" * 5000})
        assert r.status_code == 413
        detail = r.json()["detail"]
        assert "4 KB" in detail and "fewer points or a shorter text" in detail
        assert "--max-upload-mb" not in detail and "restart" not in detail
        # the same when the body is streamed without a Content-Length
        r = c.post(f"/api/images/{iid}/predict", content=iter([b'{"text": "', b"x" * 5000, b'"}']),
                   headers={"content-type": "application/json"})
        assert r.status_code == 413 and "--max-upload-mb" not in r.json()["detail"]


def test_malformed_json_names_line_column_and_fix(client, make_geotiff):
    iid = _upload(client, make_geotiff()).json()["image_id"]
    r = client.post(f"/api/images/{iid}/predict", content=b'{\n  "box": [1, 2, 3, 4],\n  oops\n}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("malformed JSON at line 3, column 3: ") and "Content-Type: application/json" in detail


# -- 8. the OpenAPI schema says what really comes back --------------------------------------------------------
def test_openapi_declares_the_real_error_answers_and_media_types(client):
    schema = client.get("/openapi.json").json()
    err = {"$ref": "#/components/schemas/ErrorResponse"}
    assert schema["components"]["schemas"]["ErrorResponse"]["properties"]["detail"]["type"] == "string"
    ops = {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()}
    for op in ops.values():
        for code, resp in op["responses"].items():
            if code.startswith(("4", "5")):
                assert resp["content"]["application/json"]["schema"] == err, (op["operationId"], code)
        assert "500" in op["responses"], op["operationId"]
    upload = ops[("/api/images", "post")]["responses"]
    assert {"201", "400", "413", "422", "500"} <= set(upload)
    assert "403" in ops[("/api/images/reference", "post")]["responses"]
    predict = ops[("/api/images/{image_id}/predict", "post")]["responses"]
    assert {"application/json", "image/png", "application/geo+json", "image/tiff"} <= set(predict["200"]["content"])
    assert {"404", "413", "422", "500"} <= set(predict)
    assert "HTTPValidationError" not in json.dumps(schema)


def test_web_mercator_areas_are_ground_areas():
    """GeoJSON areas of an EPSG:3857 image are ellipsoidal m², not planar Mercator m² (+22 % at 25° N)."""
    from types import SimpleNamespace

    from pyproj import Geod, Transformer
    from rasterio.transform import from_origin
    from shapely.geometry import shape

    from geoseg.serve.outputs import mask_features

    x0, y0 = Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(55.27, 25.2)
    mask = np.zeros((100, 120), bool)
    mask[20:60, 30:90] = True
    record = SimpleNamespace(geo=SimpleNamespace(crs="EPSG:3857", transform=tuple(from_origin(x0, y0, 0.5, 0.5))[:6]))
    feat = mask_features(mask, record, "a box", 1.0)[0]
    ground = abs(Geod(ellps="WGS84").geometry_area_perimeter(shape(feat["geometry"]))[0])
    assert feat["properties"]["area"] == pytest.approx(ground, rel=1e-3)
    assert mask.sum() * 0.25 / feat["properties"]["area"] == pytest.approx(1 / np.cos(np.radians(25.2)) ** 2, rel=0.01)


def test_nodata_and_palette_images_reach_the_model_as_the_segment_command_reads_them(tmp_path):
    """A nodata collar is shown black but reaches the model as the nearest valid colour, and answers never
    include it; an indexed-colour PNG is read through its colour table (not as its indices in grey)."""
    import rasterio

    from geoseg.rle import rle_decode
    from geoseg.segmenters.base import Prediction, Segmenter

    seen: list[np.ndarray] = []

    class Dark(Segmenter):  # answers "the dark pixels" (a black collar would be one)
        name, capabilities = "dark", frozenset({"text"})

        def _set_image(self, image):
            seen.append(image.copy())
            self._dark = image.mean(axis=2) < 30

        def _predict(self, prompt):
            return Prediction(self._dark, 1.0, self._dark.astype(np.float32))

    scene = np.full((3, 60, 80), 150, np.uint8)
    scene[:, :, :20] = 0  # a nodata collar down the left side
    path = tmp_path / "collar.tif"
    with rasterio.open(path, "w", driver="GTiff", width=80, height=60, count=3, dtype="uint8", nodata=0) as ds:
        ds.write(scene)
    pal = tmp_path / "pal.png"
    with rasterio.open(pal, "w", driver="PNG", width=80, height=60, count=1, dtype="uint8") as ds:
        ds.write(np.ones((60, 80), np.uint8), 1)
        ds.write_colormap(1, {0: (0, 0, 0, 255), 1: (200, 60, 20, 255)})
    app = create_app(segmenter_factory=Dark, upload_dir=tmp_path / "u", image_roots=[tmp_path])
    with TestClient(app) as c:
        iid = _upload(c, path).json()["image_id"]
        r = c.post(f"/api/images/{iid}/predict", json={"text": "dark", "include": ["rle"]})
        assert r.status_code == 200, r.text
        assert not rle_decode(r.json()["rle"]).any()  # the collar is not "dark" to the model, nor in the answer
        assert (seen[-1][:, :20] == 150).all()
        pid = _upload(c, pal).json()["image_id"]
        c.post(f"/api/images/{pid}/predict", json={"text": "dark", "include": ["rle"]})
        assert (seen[-1] == (200, 60, 20)).all()


# -- 9. --device, like geoseg segment's, checked before listening ---------------------------------------------
@pytest.mark.parametrize("device, words", [("tpu", "unknown device 'tpu'"), ("cuda:x", "unknown device 'cuda:x'")])
def test_unknown_device_fails_before_listening(private_tmp, no_listen, capsys, device, words):
    code, err = _cli(["serve", "--backend", "classical", "--device", device], capsys)
    assert code == 2 and err.strip().count("\n") == 0, err
    assert words in err and "use --device auto, cpu, cuda or cuda:N" in err
    assert list(private_tmp.iterdir()) == []


def test_device_reaches_the_backend(tmp_path, monkeypatch, make_geotiff):
    from geoseg import segmenters
    from geoseg.segmenters.classical import GrabCutSegmenter

    seen: list[object] = []

    def factory(**kwargs):
        seen.append(kwargs.get("device"))
        return GrabCutSegmenter(**kwargs)

    monkeypatch.setitem(segmenters._REGISTRY, "recording", factory)
    with TestClient(create_app("recording", device="cpu", upload_dir=tmp_path / "u")) as c:
        assert _upload(c, make_geotiff()).status_code == 201
    assert seen == ["cpu"]
    with pytest.raises(GeosegError, match="use --device auto, cpu, cuda or cuda:N"):
        create_app("recording", device="tpu")
    assert seen == ["cpu"]  # refused before the backend is built
