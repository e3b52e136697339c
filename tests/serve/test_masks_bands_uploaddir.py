"""Masks an image no longer keeps, band changes that close the view they replace, download names, --upload-dir.

- Each image keeps its last 16 masks: an older one's download is answered 410 ``mask_dropped`` saying why,
  the limit and the prompt to send again (not a bare "unknown mask").
- ``POST /api/images/{id}/bands`` with ``close_previous`` (what the page sends) closes the view it replaces,
  taking its place among the ``--max-images`` open images, unless it was opened more than once.
- A mask file has one name, ``<image stem>_<mask id>.<format>``, in Content-Disposition and in ``filenames``.
- ``geoseg serve --upload-dir DIR`` keeps uploads in a locked subfolder of DIR; a DIR that cannot be used
  stops the start, before listening, in one line.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from geoseg.serve import create_app  # noqa: E402
from geoseg.serve.uploads import MARKER, PREFIX  # noqa: E402

from .conftest import uploaded_files  # noqa: E402

BOX = [42, 32, 158, 128]  # the bright rectangle of make_geotiff's scenes


def _upload(client, path: Path, name: str | None = None):
    with open(path, "rb") as fh:
        return client.post("/api/images", files={"file": (name or path.name, fh, "application/octet-stream")})


def _open_ids(client) -> list[str]:
    return [i["image_id"] for i in client.get("/api/images").json()]


# -- 1. a mask dropped for newer ones ------------------------------------------------------------------------
def test_a_dropped_mask_is_answered_410_with_why_and_how_to_get_it_again(client, make_geotiff):
    iid = _upload(client, make_geotiff()).json()["image_id"]
    first = client.post(f"/api/images/{iid}/predict", json={"box": BOX}).json()
    later = [client.post(f"/api/images/{iid}/predict", json={"points": [[60 + i, 50]]}).json() for i in range(16)]
    for fmt in ("png", "geojson", "tif"):
        r = client.get(first["downloads"][fmt])
        body = r.json()
        assert r.status_code == 410 and body["code"] == "mask_dropped", r.text
        assert body["detail"] == (
            f"mask '{first['mask_id']}' of image '{iid}' was dropped: the server keeps the last 16 masks of each "
            "image and more were predicted on this image after it (predict it again with the same prompt "
            "(box (42.0,32.0,158.0,128.0)) and download the new mask)")
    assert all(client.get(m["downloads"]["png"]).status_code == 200 for m in later)  # the last 16 are all kept
    r = client.get(f"/api/images/{iid}/masks/{'0' * 12}.png")  # never made here: still a plain 404
    assert r.status_code == 404 and r.json()["code"] == "unknown_mask" and "unknown mask id" in r.json()["detail"]
    spec = client.get("/openapi.json").json()["paths"]["/api/images/{image_id}/masks/{mask_id}.{fmt}"]["get"]
    assert "410" in spec["responses"]
    assert client.get("/api/health").json()["limits"]["max_masks"] == 16  # the page words its message with it


# -- 3. one name for a mask file ------------------------------------------------------------------------------
def test_a_mask_file_has_one_name_in_the_answer_and_in_its_download(client, make_geotiff):
    iid = _upload(client, make_geotiff("Field B.tif")).json()["image_id"]
    pred = client.post(f"/api/images/{iid}/predict", json={"box": BOX}).json()
    assert set(pred["filenames"]) == set(pred["downloads"]) == {"png", "geojson", "tif"}
    for fmt, url in pred["downloads"].items():
        assert pred["filenames"][fmt] == f"Field B_{pred['mask_id']}.{fmt}"
        disposition = client.get(url).headers["content-disposition"]
        assert re.fullmatch(r'attachment; filename="(.+)"', disposition).group(1) == pred["filenames"][fmt]
        r = client.post(f"/api/images/{iid}/predict", params={"format": fmt}, json={"box": BOX})
        assert re.fullmatch(r'attachment; filename="Field B_[0-9a-f]{12}\.' + fmt + '"', r.headers["content-disposition"])


# -- 2. a band change closes the view it replaces ----------------------------------------------------------------
def test_a_band_change_closes_the_view_it_replaces_and_takes_its_place(s2_stack, make_geotiff, tmp_path):
    stack, other = s2_stack(), make_geotiff("other.tif")
    with TestClient(create_app("classical", upload_dir=tmp_path / "u", max_images=2)) as c:
        first = _upload(c, stack).json()["image_id"]
        kept = _upload(c, other).json()["image_id"]
        r = c.post(f"/api/images/{first}/bands", json={"bands": [3, 2, 1], "close_previous": True})
        assert r.status_code == 201, r.text
        true_colour = r.json()["image_id"]
        # the new view took the old one's place: the other image (least recently used) is still open
        assert sorted(_open_ids(c)) == sorted([kept, true_colour])
        gone = c.get(f"/api/images/{first}").json()
        assert gone["code"] == "image_closed" and gone["detail"] == (
            f"image '{first}' was closed when its file was shown with other bands as image '{true_colour}' "
            "(use that image, or open this one again with POST /api/images)")
        assert len(uploaded_files(tmp_path / "u")) == 2  # the closed view's upload is removed; the new one has its own
        assert c.post(f"/api/images/{true_colour}/predict", json={"box": [20, 20, 120, 120]}).status_code == 200
        # back to the first bands: again one view of the file, and one upload of it
        back = c.post(f"/api/images/{true_colour}/bands", json={"bands": [1, 2, 3], "close_previous": True}).json()
        assert back["rgb_bands"] == [1, 2, 3] and sorted(_open_ids(c)) == sorted([kept, back["image_id"]])
        assert len(uploaded_files(tmp_path / "u")) == 2


def test_a_band_change_keeps_a_view_another_client_opened(client, s2_stack):
    stack = s2_stack()
    mine = _upload(client, stack).json()["image_id"]
    assert _upload(client, stack).json()["image_id"] == mine  # another tab or client opens the same file
    other = client.post(f"/api/images/{mine}/bands", json={"bands": [3, 2, 1], "close_previous": True}).json()
    assert sorted(_open_ids(client)) == sorted([mine, other["image_id"]])  # still used by the other client
    # without close_previous (the API's default) nothing is closed either
    grey = client.post(f"/api/images/{mine}/bands", json={"bands": [4]}).json()
    assert set(_open_ids(client)) == {mine, other["image_id"], grey["image_id"]}
    # bands that cannot be shown close nothing
    assert client.post(f"/api/images/{mine}/bands", json={"bands": [9], "close_previous": True}).status_code == 400
    assert mine in _open_ids(client)


def test_a_band_change_of_a_file_opened_by_path_never_removes_the_file(client, s2_stack):
    path = s2_stack()
    first = client.post("/api/images/reference", json={"path": str(path)}).json()["image_id"]
    new = client.post(f"/api/images/{first}/bands", json={"bands": [4, 3, 2], "close_previous": True}).json()
    assert _open_ids(client) == [new["image_id"]] and path.is_file()


# -- 4. geoseg serve --upload-dir ----------------------------------------------------------------------------------
def _serve(args: list[str], capsys) -> tuple[int, str]:
    from geoseg.cli import main

    with pytest.raises(SystemExit) as info:
        main(["-q", "serve", "--backend", "classical", *args])
    return info.value.code, capsys.readouterr().err


@pytest.fixture()
def no_listen(monkeypatch):
    """``uvicorn.run`` fails loudly: a start that should have failed cannot hang the test."""
    import uvicorn

    def run(*_a, **_k):
        raise AssertionError("the server started listening")

    monkeypatch.setattr(uvicorn, "run", run)


def test_an_upload_dir_that_cannot_be_used_stops_the_start_in_one_line(tmp_path, private_tmp, no_listen, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    cases = [(a_file, f"the upload folder '{a_file}' is a file, not a folder"),
             (a_file / "uploads", f"the upload folder '{a_file / 'uploads'}' is under '{a_file}', which is not a folder")]
    if Path("/proc/self").is_dir():  # a folder nobody may write in, not even root
        cases.append((Path("/proc/self/uploads"), "cannot write in the upload folder '/proc/self/uploads' "
                                                  "(it would be made in '/proc/self')"))
    for folder, words in cases:
        code, err = _serve(["--upload-dir", str(folder)], capsys)
        assert code == 2 and err.strip().count("\n") == 0, err
        assert words in err and "give --upload-dir a folder you can write in" in err, err
    assert a_file.read_text() == "x" and list(private_tmp.iterdir()) == []


def test_upload_dir_keeps_uploads_in_a_locked_subfolder_of_it(tmp_path, private_tmp, monkeypatch, make_geotiff):
    import uvicorn

    from geoseg.cli import main

    given = tmp_path / "new" / "uploads"  # made on the first upload, not before
    seen: dict[str, object] = {}

    def run(app, **_k):  # instead of listening: use the app the CLI built
        assert not given.exists()
        with TestClient(app) as c:
            assert _upload(c, make_geotiff()).status_code == 201
            (sub,) = given.iterdir()
            seen["sub"] = sub
            seen["files"] = sorted(p.name for p in sub.iterdir())
        seen["after"] = sorted(given.iterdir())

    monkeypatch.setattr(uvicorn, "run", run)
    main(["-q", "serve", "--backend", "classical", "--upload-dir", str(given)])
    assert seen["sub"].name.startswith(PREFIX) and MARKER in seen["files"] and len(seen["files"]) == 2
    assert seen["after"] == [] and given.is_dir()  # its own subfolder removed at shutdown, the given folder kept
    assert list(private_tmp.iterdir()) == []  # nothing in the system's temporary directory
