"""The server shows (and segments) a multi-band GeoTIFF in the colours 'geoseg segment' reads it in."""

from __future__ import annotations

import io

import numpy as np
import pytest

pytest.importorskip("fastapi")


def _bgrn_geotiff(path) -> None:
    """A seeded 4-band uint16 scene stored blue, green, red, NIR with its colour interpretation declared;
    a rectangle that is red only (high in band 3) and one that is blue only (high in band 1)."""
    import rasterio
    from rasterio.enums import ColorInterp
    from rasterio.transform import from_origin

    rng = np.random.default_rng(3)
    img = (800 + rng.integers(0, 50, (4, 120, 160))).astype(np.uint16)
    img[2, 20:60, 20:70] = 9000  # red roof
    img[0, 70:110, 90:150] = 9000  # blue pool
    with rasterio.open(path, "w", driver="GTiff", width=160, height=120, count=4, dtype="uint16", crs="EPSG:32632",
                       transform=from_origin(512410.0, 6247200.0, 10.0, 10.0), photometric="minisblack") as dst:
        dst.write(img)
        dst.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]


def test_declared_band_colours_are_honoured(client, tmp_path):
    from PIL import Image

    from geoseg.raster.io import open_source

    path = tmp_path / "bgrn.tif"
    _bgrn_geotiff(path)
    with open(path, "rb") as fh:
        r = client.post("/api/images", files={"file": ("bgrn.tif", fh, "image/tiff")})
    assert r.status_code == 201, r.text
    preview = np.asarray(Image.open(io.BytesIO(client.get(f"/api/images/{r.json()['image_id']}/preview.jpg").content)))
    roof, pool = preview[40, 45].astype(int), preview[90, 120].astype(int)
    assert roof[0] > roof[2] + 100 and pool[2] > pool[0] + 100  # red roof shown red, blue pool blue
    with open_source(str(path)) as src:  # the segment command's reading of the same file
        assert tuple(src.bands) == (3, 2, 1)
