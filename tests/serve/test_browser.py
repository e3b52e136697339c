"""Drive the map page in headless Chromium (Debian's package, never a downloaded browser).

Open a real Dubai image, click a point on a building, type an instruction, and check
that the mask overlay appears and that a GeoJSON download is produced. A screenshot is
kept in the test's tmp dir and in ``test-artifacts/serve/`` (git-ignored), and in
``$GEOSEG_TEST_ARTIFACTS`` when set.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from .conftest import Brightness, LiveServer


def _find_chromium() -> Path | None:
    """$GEOSEG_CHROMIUM, else Debian's ``chromium`` on PATH (never a downloaded browser)."""
    for cand in (os.environ.get("GEOSEG_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if cand and Path(cand).is_file():
            return Path(cand)
    return None


CHROMIUM = _find_chromium()
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium, "
                       "or bash scripts/setup.sh --with-browser); the browser test never downloads a browser"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "serve"  # git-ignored


def _keep_artifact(path: Path) -> None:
    """Copy a screenshot to test-artifacts/serve/ (and to $GEOSEG_TEST_ARTIFACTS when set)."""
    for dest in (ARTIFACTS, os.environ.get("GEOSEG_TEST_ARTIFACTS")):
        if dest:
            os.makedirs(dest, exist_ok=True)
            shutil.copy(path, dest)




def drag_box(page, start: tuple[int, int], end: tuple[int, int]) -> dict:
    """Drag a box prompt from image pixel ``start`` to ``end``, wait for its answer to be drawn; the map's bounds."""
    page.check("input[name='mode'][value='box']")
    box = page.locator("#map").bounding_box()
    (x0, y0), (x1, y1) = (page.evaluate(f"window.geosegMap.pixelToScreen({x}, {y})") for x, y in (start, end))
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    page.mouse.move(box["x"] + x1, box["y"] + y1, steps=4)
    page.mouse.up()
    page.wait_for_selector("#map[data-overlay='1']", timeout=20_000)
    return box


def open_page(browser, url: str, viewport: dict, **kwargs):
    """A new page at ``url``, ready to use, and the list that collects its uncaught script errors."""
    page = browser.new_page(viewport=viewport, **kwargs)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
    return page, errors

def test_point_and_instruction_on_a_dubai_building(browser, live_server, dubai_building, tmp_path):
    image, (bx, by), building = dubai_building
    page, errors = open_page(browser, live_server.url + "/", viewport={"width": 1200, "height": 850}, accept_downloads=True)
    assert "classical" in page.inner_text("#backend")

    page.set_input_files("#file-input", str(image))
    page.wait_for_selector("#map[data-image]", timeout=20_000)
    info = page.evaluate("window.geosegMap.image()")
    assert (info["width"], info["height"]) == (building.shape[1], building.shape[0])
    assert info["georeferenced"] is False  # a JPG: shown as a plain image in pixel coordinates
    assert page.is_hidden("#band-picker")  # its colours are declared: nothing to pick

    # click the building: page pixel position of image pixel (bx, by)
    sx, sy = page.evaluate("([x, y]) => window.geosegMap.pixelToScreen(x + 0.5, y + 0.5)", [bx, by])
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + sx, box["y"] + sy)
    page.wait_for_selector("#map[data-overlay='1']", timeout=20_000)
    first = page.evaluate("window.geosegMap.result()")
    assert first["area_px"] > 0

    # the classical backend takes no instruction (the server would refuse one with a 422): the page
    # greys the field out and says why, and the point's mask stays
    assert page.is_disabled("#instruction")
    assert "not instructions" in page.get_attribute("#instruction", "placeholder")
    assert page.evaluate("window.geosegMap.result()")["mask_id"] == first["mask_id"]

    # the mask is on the building: most of its pixels are building in the real labels
    import cv2

    from geoseg.rle import rle_decode

    rle = page.evaluate(f"fetch('/api/images/{info['image_id']}/predict', {{method: 'POST', headers: "
                        "{'Content-Type': 'application/json'}, body: JSON.stringify({points: [[%d, %d]], "
                        "include: ['rle']})}).then(r => r.json())" % (bx, by))
    mask = rle_decode(rle["rle"])
    assert mask[by, bx]
    assert building[mask].mean() > 0.5

    # the overlay really is drawn: zoom in on the click (wheel), then a canvas pixel inside the mask and
    # away from the point marker is tinted cyan
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    page.mouse.wheel(0, -500)
    page.mouse.wheel(0, -500)
    page.wait_for_timeout(100)
    zoomed = page.evaluate("([x, y]) => window.geosegMap.pixelToScreen(x, y)", [bx + 1, by])
    scale = zoomed[0] - page.evaluate("([x, y]) => window.geosegMap.pixelToScreen(x, y)", [bx, by])[0]
    assert scale > 3, "the wheel should zoom in"
    deep = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3) >= 2
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    far = deep & (np.hypot(xx - bx, yy - by) * scale > 14)
    assert far.any()
    ty, tx = (int(v[0]) for v in np.nonzero(far))
    px, py = page.evaluate("([x, y]) => window.geosegMap.pixelToScreen(x + 0.5, y + 0.5)", [tx, ty])
    tint = page.evaluate("""([x, y]) => {
        const c = document.getElementById('map');
        const r = window.devicePixelRatio || 1;
        return Array.from(c.getContext('2d').getImageData(Math.round(x * r), Math.round(y * r), 1, 1).data);
    }""", [px, py])
    r0, g0, b0 = (int(v) for v in cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB)[ty, tx])
    # cyan (0, 229, 255) at ~50 % opacity: red drops by about half, blue does not drop
    assert tint[0] < 0.75 * r0 + 8 and tint[2] > 0.5 * b0 + 100, \
        f"expected the cyan overlay at pixel {(tx, ty)}: image RGB {(r0, g0, b0)}, canvas RGBA {tint}"

    # GeoJSON download
    with page.expect_download() as dl_info:
        page.click("#dl-geojson")
    download = dl_info.value
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    fc = json.loads(target.read_text())
    assert fc["type"] == "FeatureCollection" and fc["features"]
    assert fc["features"][0]["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert {"id", "prompt", "score", "area"} <= set(fc["features"][0]["properties"])

    shot = tmp_path / "serve_page.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    _keep_artifact(shot)
    assert not errors, errors
    page.close()


def test_georeferenced_geotiff_is_placed_on_the_map(browser, live_server, make_geotiff, tmp_path):
    path = make_geotiff("geo.tif", crs="EPSG:32640", origin=(300000.0, 2800000.0))
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(live_server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#file-input", str(path))
    page.wait_for_selector("#map[data-georeferenced='1']", timeout=20_000)
    # hover the image centre: the read-out shows its true lon/lat (UTM 40N, ~55.0E 25.3N)
    box = page.locator("#map").bounding_box()
    sx, sy = page.evaluate("window.geosegMap.pixelToScreen(160, 128)")
    page.mouse.move(box["x"] + sx, box["y"] + sy)
    readout = page.inner_text("#readout")
    assert "°N" in readout and "°E" in readout and "pixel 16" in readout
    lat = float(readout.split("°N")[0])
    lon = float(readout.split("°N")[1].split("°E")[0])
    from pyproj import Transformer

    exp_lon, exp_lat = Transformer.from_crs("EPSG:32640", "EPSG:4326", always_xy=True).transform(
        300000 + 160 * 0.5, 2800000 - 128 * 0.5)
    assert abs(lon - exp_lon) < 1e-5 and abs(lat - exp_lat) < 1e-5
    assert page.get_attribute("#map", "data-scale").endswith(" m")
    # drag a box over the bright rectangle (pixels 50..150 x 40..120): the mask fills it
    page.check("input[name='mode'][value='box']")
    (x0, y0), (x1, y1) = (page.evaluate(f"window.geosegMap.pixelToScreen({x}, {y})") for x, y in ((42, 32), (158, 128)))
    page.mouse.move(box["x"] + x0, box["y"] + y0)
    page.mouse.down()
    page.mouse.move(box["x"] + (x0 + x1) / 2, box["y"] + (y0 + y1) / 2)
    page.mouse.move(box["x"] + x1, box["y"] + y1)
    page.mouse.up()
    page.wait_for_selector("#map[data-overlay='1']", timeout=20_000)
    result = page.evaluate("window.geosegMap.result()")
    x0b, y0b, x1b, y1b = result["bbox"]
    assert abs(x0b - 50) <= 3 and abs(y0b - 40) <= 3 and abs(x1b - 150) <= 3 and abs(y1b - 120) <= 3
    feats = result["geojson"]["features"]
    assert feats and result["geojson"]["geoseg:coordinates"] == "lonlat"
    lon0, lat0 = np.asarray(feats[0]["geometry"]["coordinates"][0]).mean(axis=0)
    assert 54.9 < lon0 < 55.1 and 25.2 < lat0 < 25.4
    page.screenshot(path=str(tmp_path / "serve_geotiff.png"))
    _keep_artifact(tmp_path / "serve_geotiff.png")
    page.close()


def test_an_instruction_that_finds_nothing_shows_the_backends_advice(browser, brightness_server, make_geotiff):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)  # e.g. a missing favicon
    page.goto(brightness_server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#file-input", str(make_geotiff()))
    page.wait_for_selector("#map[data-image]", timeout=20_000)
    page.fill("#instruction", "white")
    page.press("#instruction", "Enter")
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    assert page.inner_text("#message") == "nothing found: nothing is as bright as 'white' asks"
    assert page.evaluate("window.geosegMap.result()")["area_px"] == 0
    page.fill("#instruction", "light")  # a non-empty answer shows no advice
    page.evaluate("document.getElementById('message').hidden = true")
    page.press("#instruction", "Enter")
    page.wait_for_function("() => window.geosegMap.result().area_px > 0", timeout=20_000)
    assert page.is_hidden("#message")
    assert not errors, errors
    page.close()


class _SlowPoints(Brightness):
    """Brightness that takes points too, and answers them slowly: a prompt still on its way when the user moves on."""

    name = "slow-points"
    capabilities = frozenset({"text", "point", "box"})

    def _predict(self, prompt):
        time.sleep(1.5)
        return super()._predict(prompt)


def test_an_old_answer_never_lands_on_the_next_image(browser, make_geotiff, tmp_path):
    from geoseg.serve import create_app

    app = create_app(segmenter_factory=_SlowPoints, upload_dir=tmp_path / "u")
    first, second = make_geotiff("a.tif", seed=0), make_geotiff("b.tif", seed=1)
    with LiveServer(app) as srv:
        page, errors = open_page(browser, srv.url + "/", viewport={"width": 900, "height": 700})
        page.set_input_files("#file-input", str(first))
        page.wait_for_selector("#map[data-image]", timeout=20_000)
        a = page.evaluate("window.geosegMap.image().image_id")
        assert page.evaluate("document.getElementById('file-input').value") == ""  # the same file can be chosen again
        box = page.locator("#map").bounding_box()
        sx, sy = page.evaluate("window.geosegMap.pixelToScreen(100, 80)")
        page.mouse.click(box["x"] + sx, box["y"] + sy)  # its answer takes 1.5 s ...
        page.set_input_files("#file-input", str(second))  # ... and meanwhile another image is opened
        page.wait_for_function(f"() => window.geosegMap.image().image_id !== '{a}'", timeout=20_000)
        page.wait_for_timeout(2500)  # the first image's answer has arrived by now
        assert page.evaluate("window.geosegMap.result()") is None  # it is not drawn on the second image
        assert page.get_attribute("#map", "data-overlay") == "0"
        assert page.get_attribute("#dl-geojson", "aria-disabled") == "true"

        # a link to an image the server no longer holds says so in the page's words and is dropped
        page.goto(srv.url + "/?image=" + "f" * 16)
        page.wait_for_selector("body[data-ready='1']")
        assert "no longer open on the server: open the file again" in page.inner_text("#message")
        assert "?image" not in page.url
        assert not errors, errors
        page.close()


def test_bands_of_a_sentinel2_stack_and_an_image_the_server_dropped(browser, s2_stack, make_geotiff, tmp_path):
    """A 6-band stack stored B2,B3,B4,B8,B11,B12 is first shown as bands 1,2,3; the band picker shows it in
    true colour (3,2,1) keeping the box, which is answered again. When the server drops the image (more
    opened elsewhere than it keeps), a click says so in plain words and 'Open it again' restores it all."""
    import httpx

    from geoseg.serve import create_app

    stack = s2_stack()
    with LiveServer(create_app("classical", upload_dir=tmp_path / "u", max_images=2)) as srv:
        page, errors = open_page(browser, srv.url + "/", viewport={"width": 1100, "height": 750})
        page.set_input_files("#file-input", str(stack))
        page.wait_for_selector("#map[data-image]", timeout=20_000)
        first = page.evaluate("window.geosegMap.image()")
        assert page.is_visible("#band-picker") and "6 band(s) float32 (bands 1,2,3 as RGB)" in page.inner_text(
            "#image-name")
        assert [page.input_value(f"#band-{c}") for c in "rgb"] == ["1", "2", "3"]
        assert page.eval_on_selector("#band-r", "s => s.options.length") == 6

        box = drag_box(page, (40, 40), (200, 180))
        prompt = page.evaluate("window.geosegMap.result().prompt")

        for c, band in zip("rgb", ("3", "2", "1")):
            page.select_option(f"#band-{c}", band)
        page.click("#band-apply")
        page.wait_for_function(f"() => window.geosegMap.result() && window.geosegMap.result().image_id !== "
                               f"'{first['image_id']}'", timeout=20_000)
        true_colour = page.evaluate("window.geosegMap.image()")
        assert true_colour["rgb_bands"] == [3, 2, 1] and "(bands 3,2,1 as RGB)" in page.inner_text("#image-name")
        assert page.evaluate("window.geosegMap.result().prompt") == prompt  # the same box, answered on the new bands

        with httpx.Client(base_url=srv.url, timeout=60) as c:  # another user opens two images: ours is dropped
            for name in ("a.tif", "b.tif"):
                with open(make_geotiff(name, seed=len(name) + ord(name[0])), "rb") as fh:
                    assert c.post("/api/images", files={"file": (name, fh)}).status_code == 201
        page.check("input[name='mode'][value='pos']")
        sx, sy = page.evaluate("window.geosegMap.pixelToScreen(120, 110)")
        page.mouse.click(box["x"] + sx, box["y"] + sy)
        page.wait_for_selector("#message-action", timeout=20_000)
        text = page.inner_text("#message")
        assert text.startswith("The server dropped s2_stack.tif because too many images were open: it keeps the 2 "
                               "most recently used images"), text
        assert "POST /api" not in text and page.inner_text("#message-action") == "Open it again"
        page.click("#message-action")
        page.wait_for_function("() => window.geosegMap.result() && window.geosegMap.result().prompt.includes('point')",
                               timeout=20_000)
        assert page.evaluate("window.geosegMap.image()")["rgb_bands"] == [3, 2, 1]
        assert page.evaluate("window.geosegMap.result().image_id") == page.evaluate("window.geosegMap.image().image_id")
        assert page.is_hidden("#message")
        page.screenshot(path=str(tmp_path / "serve_bands.png"))
        _keep_artifact(tmp_path / "serve_bands.png")
        assert not errors, errors
        page.close()


def test_band_change_closes_the_old_view_and_a_dropped_mask_is_explained(browser, s2_stack, tmp_path):
    """The page's band change closes its previous view on the server; its downloads are named as the server
    names them; a mask the server dropped (another client made 16 newer ones) is explained in plain words,
    and 'Segment again and download' makes it anew and saves it."""
    import re

    import cv2
    import httpx

    from geoseg.serve import create_app

    stack = s2_stack()
    with LiveServer(create_app("classical", upload_dir=tmp_path / "u", max_images=3)) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as other:
        page, errors = open_page(browser, srv.url + "/", viewport={"width": 1100, "height": 750}, accept_downloads=True)
        page.set_input_files("#file-input", str(stack))
        page.wait_for_selector("#map[data-image]", timeout=20_000)
        first = page.evaluate("window.geosegMap.image().image_id")
        drag_box(page, (40, 40), (200, 180))

        for c, band in zip("rgb", ("3", "2", "1")):
            page.select_option(f"#band-{c}", band)
        page.click("#band-apply")
        page.wait_for_function(f"() => window.geosegMap.result() && window.geosegMap.result().image_id !== '{first}'",
                               timeout=20_000)
        shown = page.evaluate("window.geosegMap.image().image_id")
        assert [i["image_id"] for i in other.get("/api/images").json()] == [shown]  # the old view is closed
        result = page.evaluate("window.geosegMap.result()")
        assert page.get_attribute("#dl-png", "download") == result["filenames"]["png"] == \
            f"s2_stack_{result['mask_id']}.png"

        for i in range(16):  # another client prompts the same image: the page's mask is dropped
            assert other.post(f"/api/images/{shown}/predict", json={"points": [[60 + i, 60]]}).status_code == 200
        page.click("#dl-png")
        page.wait_for_selector("#message-action", timeout=20_000)
        text = page.inner_text("#message")
        assert text.startswith("This mask is no longer on the server: it keeps the last 16 masks of each image, and "
                               "more were made on s2_stack.tif since"), text
        assert "410" not in text and "/api" not in text
        with page.expect_download() as dl_info:
            page.click("#message-action")
        download = dl_info.value
        again = page.evaluate("window.geosegMap.result()")
        assert again["mask_id"] != result["mask_id"] and again["prompt"] == result["prompt"]
        disposition = other.get(again["downloads"]["png"]).headers["content-disposition"]
        assert download.suggested_filename == again["filenames"]["png"] == \
            re.fullmatch(r'attachment; filename="(.+)"', disposition).group(1)
        target = tmp_path / download.suggested_filename
        download.save_as(target)
        assert int((cv2.imread(str(target), cv2.IMREAD_UNCHANGED) > 0).sum()) == again["area_px"]
        assert page.is_hidden("#message")
        assert not errors, errors
        page.close()


class _MeasuredBrightness(Brightness):
    """:class:`Brightness` with the unified backend's instruction measure: "xyzzy" is unlike its instructions."""

    cfg = SimpleNamespace(classes=("bright roof",))

    def instruction_distance(self, prompt):
        return (0.9, "the bright roof") if prompt.text == "xyzzy" else (0.0, prompt.text)


@pytest.fixture(scope="module")
def measured_server(tmp_path_factory):
    from geoseg.serve import create_app

    app = create_app(segmenter_factory=_MeasuredBrightness, upload_dir=tmp_path_factory.mktemp("up"), max_upload_mb=5)
    with LiveServer(app) as srv:
        yield srv


def test_an_unfamiliar_instruction_shows_its_note(browser, measured_server, make_geotiff):
    page = browser.new_page(viewport={"width": 900, "height": 700})
    page.goto(measured_server.url + "/")
    page.wait_for_selector("body[data-ready='1']")
    page.set_input_files("#file-input", str(make_geotiff()))
    page.wait_for_selector("#map[data-image]", timeout=20_000)
    page.fill("#instruction", "xyzzy")  # marks the bright roofs (a mask) and is noted
    page.press("#instruction", "Enter")
    page.wait_for_selector("#message:not([hidden])", timeout=20_000)
    assert page.evaluate("window.geosegMap.result()")["area_px"] > 0
    assert page.inner_text("#message").startswith("the instruction 'xyzzy' is unlike what this model was trained on")
    page.close()
