"""Client mistakes found by exploring the API as a user would: each answer is one line naming the problem and the fix."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")


def _form(parts: list[tuple[str, str | None, bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body as a browser builds it: ``(field, file name or None, content)`` per part."""
    boundary = "----geosegFormBoundary7MA4YWxkTrZu0gW"
    body = b""
    for name, filename, content in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        ctype = "Content-Type: application/octet-stream\r\n" if filename is not None else ""
        body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n{ctype}\r\n".encode() + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, {"content-type": f"multipart/form-data; boundary={boundary}"}


@pytest.mark.parametrize("parts", [
    [("file", "", b""), ("bands", None, b"")],  # a form sent with no file chosen (what browsers send)
    [("file", None, b"II*\x00abc")],  # a file part without a filename attribute is read as text
    [("bands", None, b"1,2,3")],  # no file part at all
], ids=["no-file-chosen", "no-file-name", "no-file-part"])
def test_upload_without_a_file_names_the_problem_and_the_fix(client, parts):
    body, headers = _form(parts)
    r = client.post("/api/images", content=body, headers=headers)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("no image file in the upload") and "no file chosen" in detail
    assert "choose a GeoTIFF, JPG or PNG file" in detail and "curl -F file=@" in detail
    assert "UploadFile" not in detail and "<class" not in detail and "\n" not in detail
    assert client.get("/api/images").json() == []


def test_unknown_long_ids_are_not_echoed_in_full(client, make_geotiff):
    long_id = "x" * 5000
    for method, url in [("get", f"/api/images/{long_id}"), ("delete", f"/api/images/{long_id}"),
                        ("get", f"/api/images/{long_id}/preview.jpg")]:
        r = client.request(method, url)
        assert r.status_code == 404, r.text
        detail = r.json()["detail"]
        assert f"'{'x' * 64}…'" in detail and "x" * 65 not in detail and len(r.content) < 600
    r = client.post(f"/api/images/{long_id}/predict", json={"points": [[10, 10]]})
    assert r.status_code == 404 and "x" * 65 not in r.text
    with open(make_geotiff(), "rb") as fh:
        iid = client.post("/api/images", files={"file": ("a.tif", fh, "image/tiff")}).json()["image_id"]
    r = client.get(f"/api/images/{iid}/masks/{'m' * 3000}.png")
    assert r.status_code == 404 and f"'{'m' * 64}…'" in r.json()["detail"] and "m" * 65 not in r.text
    r = client.get("/api/images/abc")  # a short id is shown whole
    assert r.status_code == 404 and "unknown image id 'abc'" in r.json()["detail"]
