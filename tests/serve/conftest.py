"""Fixtures for the server and batch tests: a live uvicorn server, real and generated scenes."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

BUILDING_RGB = (60, 16, 152)  # the Dubai masks' building colour (see shared/data/README.md)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dubai_building(dubai_dir: Path) -> tuple[Path, tuple[int, int], np.ndarray]:
    """A real Dubai image, a pixel deep inside its largest building, and its building mask."""
    import cv2

    img = dubai_dir / "tile_1" / "images" / "image_part_009.jpg"
    mask_rgb = cv2.cvtColor(cv2.imread(str(img.parent.parent / "masks" / (img.stem + ".png"))), cv2.COLOR_BGR2RGB)
    building = np.all(mask_rgb == BUILDING_RGB, axis=2)
    n, lab = cv2.connectedComponents(building.astype(np.uint8))
    sizes = np.bincount(lab.ravel())[1:]
    biggest = lab == (1 + int(np.argmax(sizes)))
    dist = cv2.distanceTransform(biggest.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return img, (int(x), int(y)), building


@pytest.fixture()
def make_geotiff(tmp_path: Path):
    """Write a small seeded 3-band uint8 GeoTIFF (bright rectangles on a dark ground) and return its path."""
    import rasterio
    from rasterio.transform import from_origin

    def make(name: str = "scene.tif", width: int = 320, height: int = 256, seed: int = 0, crs: str | None = "EPSG:32640",
             origin: tuple[float, float] = (300000.0, 2800000.0), res: float = 0.5) -> Path:
        rng = np.random.default_rng(seed)
        img = np.full((3, height, width), 60, np.uint8) + rng.integers(0, 12, (3, height, width), dtype=np.uint8)
        img[:, 40:120, 50:150] = np.array((210, 200, 190) if seed % 2 == 0 else (200, 60, 50))[:, None, None]
        img[:, 150:220, 180:290] = np.array((180, 190, 220))[:, None, None]
        path = tmp_path / name
        profile = {"driver": "GTiff", "width": width, "height": height, "count": 3, "dtype": "uint8"}
        if crs:
            profile.update(crs=crs, transform=from_origin(origin[0], origin[1], res, res))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(img)
        return path

    return make


S2_BANDS = ("B2", "B3", "B4", "B8", "B11", "B12")  # ukis_tiles' band order: blue, green, red, NIR, SWIR1, SWIR2


@pytest.fixture()
def s2_stack(ukis_dir: Path, tmp_path: Path):
    """Write real Sentinel-2 reflectance (ukis_tiles, 6 bands stored B2,B3,B4,B8,B11,B12) as a float32 GeoTIFF
    with no declared colour interpretation; ``descriptions=True`` names the bands as SNAP or gdal_merge do."""
    import rasterio
    from rasterio.transform import from_origin

    def make(name: str = "s2_stack.tif", descriptions: bool = False, size: int = 256) -> Path:
        img = np.load(ukis_dir / "sentinel2.npz")["img"][:size, :size].transpose(2, 0, 1).astype(np.float32)
        path = tmp_path / name
        with rasterio.open(path, "w", driver="GTiff", width=img.shape[2], height=img.shape[1], count=6,
                           dtype="float32", crs="EPSG:32632", transform=from_origin(500000.0, 6000000.0, 10, 10),
                           photometric="minisblack") as dst:
            dst.write(img)
            if descriptions:
                dst.descriptions = S2_BANDS
        return path

    return make


def uploaded_files(folder: Path) -> list[str]:
    """Names of the uploads a server keeps under ``folder`` (its ``upload_dir``): in its own locked subfolder."""
    from geoseg.serve.uploads import MARKER, PREFIX

    if not folder.exists():
        return []
    return sorted(f.name for d in folder.glob(PREFIX + "*") for f in d.iterdir() if f.name != MARKER)


class LiveServer:
    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Brightness(Segmenter):
    """A text backend for tests: "white" marks pixels above 250 (none in ``make_geotiff``'s scenes),
    any other text those above 128 (its rectangles); an empty answer comes with advice."""

    name = "brightness"
    capabilities = frozenset({"text"})

    def _set_image(self, image: np.ndarray) -> None:
        self._grey = image.mean(axis=2)

    def _predict(self, prompt: Prompt) -> Prediction:
        mask = self._grey > (250 if prompt.text == "white" else 128)
        return Prediction(mask, 0.9, mask.astype(np.float32))

    def empty_answer_hint(self, prompt: Prompt) -> str:
        return f"nothing is as bright as {prompt.text!r} asks"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """A real uvicorn server on loopback running the app with the classical backend."""
    from geoseg.serve import create_app

    app = create_app("classical", upload_dir=tmp_path_factory.mktemp("uploads"), max_upload_mb=5)
    with LiveServer(app) as srv:
        yield srv


@pytest.fixture(scope="module")
def brightness_server(tmp_path_factory):
    """A real uvicorn server on loopback running the app with the :class:`Brightness` text backend."""
    from geoseg.serve import create_app

    app = create_app(segmenter_factory=Brightness, upload_dir=tmp_path_factory.mktemp("uploads"), max_upload_mb=5)
    with LiveServer(app) as srv:
        yield srv


@pytest.fixture()
def client(tmp_path):
    """A test client of the app on the classical backend, uploads under ``tmp_path``, which is also its image root."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from geoseg.serve import create_app

    app = create_app("classical", upload_dir=tmp_path / "uploads", max_upload_mb=2, image_roots=[tmp_path])
    with TestClient(app) as c:
        yield c


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch) -> Path:
    """A fresh system temporary directory for this test (where servers make their upload folders)."""
    import tempfile

    d = tmp_path / "systmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d
