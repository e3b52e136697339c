"""An image's name and bands as the user gave them, and why an image id is no longer open.

- The same file uploaded under another name is its own image: that name is shown and names its downloads
  (the embedding is computed once all the same).
- A multi-band image (real Sentinel-2 reflectance stored B2,B3,B4,B8,B11,B12, no declared colours) reports
  its band count and the bands in use, and can be shown with other bands without uploading it again.
- An image dropped because more were opened says so (``code`` ``image_dropped``), as does a closed one.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from geoseg.serve import create_app  # noqa: E402

from .conftest import S2_BANDS, uploaded_files  # noqa: E402


def _upload(client, path, name=None, **data):
    with open(path, "rb") as fh:
        return client.post("/api/images", files={"file": (name or path.name, fh, "application/octet-stream")},
                           data=data)


def _stretched(band: np.ndarray) -> np.ndarray:
    """A band as 0..255 by its 2nd-98th percentiles: what a viewer shows of it."""
    lo, hi = np.percentile(band, [2, 98])
    return np.clip((band - lo) * 255.0 / (hi - lo), 0, 255)


def _preview(client, image_id: str) -> np.ndarray:
    from PIL import Image

    r = client.get(f"/api/images/{image_id}/preview.jpg")
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content))).astype(float)


def _shown_bands(preview: np.ndarray, source: np.ndarray) -> list[int]:
    """For each preview channel, the 1-based source band it shows (closest in mean absolute difference)."""
    return [1 + int(np.argmin([np.abs(preview[..., c] - _stretched(b)).mean() for b in source])) for c in range(3)]


def test_the_same_file_under_another_name_is_shown_and_downloaded_under_that_name(client, dubai_building, tmp_path):
    image, (bx, by), _ = dubai_building
    first = _upload(client, image, name="dubai_2019.jpg").json()
    second = _upload(client, image, name="dubai_2020.jpg")
    assert second.status_code == 201, second.text
    second = second.json()
    assert second["name"] == "dubai_2020.jpg" and second["image_id"] != first["image_id"]
    assert second["embedding_cached"] is True  # the pixels are the same: the embedding is shared, not recomputed
    store = client.app.state.store
    assert sum(s.embed_count for s in store.list()) == 1
    assert {i["name"] for i in client.get("/api/images").json()} == {"dubai_2019.jpg", "dubai_2020.jpg"}
    # the same name again is the same image
    assert _upload(client, image, name="dubai_2020.jpg").json()["image_id"] == second["image_id"]

    for info, stem in ((second, "dubai_2020_"), (first, "dubai_2019_")):
        r = client.post(f"/api/images/{info['image_id']}/predict", json={"points": [[bx, by]], "include": []})
        assert r.status_code == 200, r.text
        for fmt in ("tif", "geojson", "png"):
            disposition = client.get(r.json()["downloads"][fmt]).headers["content-disposition"]
            assert f'filename="{stem}{r.json()["mask_id"]}.{fmt}"' in disposition
    # closing one keeps the other (and its file) usable
    assert client.delete(f"/api/images/{first['image_id']}").status_code == 204
    assert client.post(f"/api/images/{second['image_id']}/predict", json={"points": [[bx, by]]}).status_code == 200
    assert len(uploaded_files(tmp_path / "uploads")) == 1


def test_a_six_band_stack_reports_its_bands_and_is_shown_with_others(client, s2_stack, tmp_path):
    import rasterio

    path = s2_stack(descriptions=True)
    with rasterio.open(path) as src:
        source = src.read()
    r = _upload(client, path)
    assert r.status_code == 201, r.text
    info = r.json()
    assert info["bands"] == 6 and info["rgb_bands"] == [1, 2, 3] and info["rgb_declared"] is False
    assert info["band_names"] == list(S2_BANDS)
    assert _shown_bands(_preview(client, info["image_id"]), source) == [1, 2, 3]  # blue shown as red

    r = client.post(f"/api/images/{info['image_id']}/bands", json={"bands": [3, 2, 1]})
    assert r.status_code == 201, r.text
    true_colour = r.json()
    assert true_colour["rgb_bands"] == [3, 2, 1] and true_colour["image_id"] != info["image_id"]
    assert (true_colour["name"], true_colour["bands"], true_colour["geo"]) == (info["name"], 6, info["geo"])
    assert _shown_bands(_preview(client, true_colour["image_id"]), source) == [3, 2, 1]
    # the same choice again is the same image; the bands in use already: the image itself
    again = client.post(f"/api/images/{info['image_id']}/bands", json={"bands": [3, 2, 1]}).json()
    assert again["image_id"] == true_colour["image_id"] and again["embedding_cached"] is True
    assert client.post(f"/api/images/{info['image_id']}/bands", json={"bands": [1, 2, 3]}).json()["image_id"] == \
        info["image_id"]
    # one band as grey; a prompt in pixels works on each
    grey = client.post(f"/api/images/{info['image_id']}/bands", json={"bands": [4]}).json()
    assert grey["rgb_bands"] == [4]
    for iid in (info["image_id"], true_colour["image_id"], grey["image_id"]):
        assert client.post(f"/api/images/{iid}/predict", json={"box": [20, 20, 120, 120]}).status_code == 200

    # the original closed, the others keep their own copy of the upload; closing them all leaves nothing
    assert client.delete(f"/api/images/{info['image_id']}").status_code == 204
    assert client.get(f"/api/images/{true_colour['image_id']}/preview.jpg").status_code == 200
    again = client.post(f"/api/images/{true_colour['image_id']}/bands", json={"bands": [4, 3, 2]})
    assert again.status_code == 201 and again.json()["rgb_bands"] == [4, 3, 2]
    for i in client.get("/api/images").json():
        client.delete(f"/api/images/{i['image_id']}")
    assert uploaded_files(tmp_path / "uploads") == []


def test_other_bands_of_an_image_opened_by_path_read_it_in_place(client, s2_stack):
    path = s2_stack()
    info = client.post("/api/images/reference", json={"path": str(path)}).json()
    assert info["band_names"] == [""] * 6  # nothing declared: the page numbers them
    r = client.post(f"/api/images/{info['image_id']}/bands", json={"bands": [4, 3, 2]})
    assert r.status_code == 201 and r.json()["rgb_bands"] == [4, 3, 2]
    for i in client.get("/api/images").json():
        assert client.delete(f"/api/images/{i['image_id']}").status_code == 204
    assert path.is_file()  # a file under an --image-root is never removed


@pytest.mark.parametrize("bands, words", [
    ([7, 2, 1], "bands [7, 2, 1] do not fit an image with 6 band(s) (give one or three 1-based indices between 1 and 6)"),
    ([0, 2, 1], "do not fit an image with 6 band(s)"),
    ([3, 2], "bands [3, 2] do not fit an image with 6 band(s)"),
])
def test_bands_that_do_not_fit_are_refused_in_one_line(client, s2_stack, bands, words):
    iid = _upload(client, s2_stack()).json()["image_id"]
    r = client.post(f"/api/images/{iid}/bands", json={"bands": bands})
    assert r.status_code == 400 and words in r.json()["detail"] and "\n" not in r.json()["detail"]
    assert [i["image_id"] for i in client.get("/api/images").json()] == [iid]  # nothing else opened


def test_why_an_image_id_is_unknown(make_geotiff, tmp_path):
    app = create_app("classical", upload_dir=tmp_path / "u", max_images=2)
    paths = [make_geotiff(f"s{i}.tif", seed=i) for i in range(3)]
    with TestClient(app) as c:
        ids = [_upload(c, p).json()["image_id"] for p in paths]
        r = c.post(f"/api/images/{ids[0]}/predict", json={"box": [42, 32, 158, 128]})
        assert r.status_code == 404 and r.json()["code"] == "image_dropped"
        assert r.json()["detail"] == (
            f"image '{ids[0]}' was dropped: the server keeps the 2 most recently used images and more were opened "
            "after it (open it again: upload the file with POST /api/images, or start the server with a higher "
            "--max-images)")
        assert c.post(f"/api/images/{ids[0]}/bands", json={"bands": [1]}).json()["code"] == "image_dropped"
        assert c.delete(f"/api/images/{ids[1]}").status_code == 204
        r = c.get(f"/api/images/{ids[1]}")
        assert r.status_code == 404 and r.json()["code"] == "image_closed"
        assert r.json()["detail"] == f"image '{ids[1]}' was closed (open it again with POST /api/images)"
        assert c.get("/api/images/" + "0" * 16).json()["code"] == "unknown_image"
        assert _upload(c, paths[0]).json()["image_id"] == ids[0]  # opened again: known again
        assert c.post(f"/api/images/{ids[0]}/predict", json={"box": [42, 32, 158, 128]}).status_code == 200
