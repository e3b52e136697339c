"""Small seeded scenes written in real formats (GeoTIFF in several CRSs/dtypes, JPG, PNG).

Every scene is dark noisy ground with bright rectangular "roofs" at known pixel
positions, so a box or point prompt has a known right answer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

#: UTM 32N (Denmark), 10 m pixels — like dk_fields
UTM_ORIGIN, UTM_RES = (510000.0, 6250000.0), 10.0
#: EPSG:4326, ~0.0001° pixels near Dubai
GEO_ORIGIN, GEO_RES = (55.20, 25.10), 0.0001

#: (row0, row1, col0, col1) of the bright objects in a default 320 x 280 scene
ROOFS = ((40, 120, 60, 170), (170, 250, 190, 290))

#: values of ground and roof per dtype (uint16 like Sentinel-2 reflectance, float like 0..1 reflectance)
LEVELS = {"uint8": (50, 20, 210), "uint16": (900, 300, 4200), "float32": (0.08, 0.03, 0.55)}


def scene_array(width: int = 320, height: int = 280, count: int = 3, dtype: str = "uint8", seed: int = 0,
                roofs=ROOFS) -> np.ndarray:
    """``count x height x width`` pixels: noisy ground, bright roofs."""
    rng = np.random.default_rng(seed)
    ground, noise, roof = LEVELS[dtype]
    img = ground + rng.random((count, height, width)) * noise
    for r0, r1, c0, c1 in roofs:
        img[:, r0:r1, c0:c1] = roof + rng.random((count, r1 - r0, c1 - c0)) * noise * 0.3
    return img.astype(dtype)


def utm_transform():
    return from_origin(UTM_ORIGIN[0], UTM_ORIGIN[1], UTM_RES, UTM_RES)


def geo_transform():
    return from_origin(GEO_ORIGIN[0], GEO_ORIGIN[1], GEO_RES, GEO_RES)


def write_geotiff(path: Path, data: np.ndarray, crs: str | None = "EPSG:32632", transform=None,
                  nodata: float | None = None, **extra) -> Path:
    """Write ``data`` (C x H x W) as a GeoTIFF; ``crs=None`` writes no georeference."""
    count, height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": count, "dtype": data.dtype.name, **extra}
    if crs is not None:
        profile["crs"] = crs
        profile["transform"] = transform if transform is not None else (
            geo_transform() if crs == "EPSG:4326" else utm_transform())
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def write_plain(path: Path, data: np.ndarray) -> Path:
    """Write ``3 x H x W`` uint8 pixels as a plain JPG or PNG (no georeference)."""
    from PIL import Image

    Image.fromarray(np.transpose(data, (1, 2, 0))).save(path, quality=95)
    return path


def roof_mask(width: int = 320, height: int = 280, index: int = 0) -> np.ndarray:
    r0, r1, c0, c1 = ROOFS[index]
    m = np.zeros((height, width), dtype=bool)
    m[r0:r1, c0:c1] = True
    return m


def roof_box(index: int = 0, pad: int = 12) -> tuple[float, float, float, float]:
    """A pixel box around roof ``index`` (x0, y0, x1, y1)."""
    r0, r1, c0, c1 = ROOFS[index]
    return (c0 - pad, r0 - pad, c1 + pad, r1 + pad)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def utm_box_to_map(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """A pixel box of a UTM scene written by :func:`write_geotiff` in EPSG:32632 map coordinates."""
    x0, y0, x1, y1 = box
    ox, oy = UTM_ORIGIN
    return (ox + x0 * UTM_RES, oy - y1 * UTM_RES, ox + x1 * UTM_RES, oy - y0 * UTM_RES)


@pytest.fixture()
def utm_scene(tmp_path: Path) -> Path:
    """A 3-band uint8 UTM scene."""
    return write_geotiff(tmp_path / "utm.tif", scene_array())


class BrightSegmenter(Segmenter):
    """A text backend that marks bright pixels: deterministic per pixel, so any seam is the tiler's fault."""

    name = "bright"
    capabilities = frozenset({"text"})

    def __init__(self) -> None:
        super().__init__()
        self.windows: list[tuple[int, int]] = []

    def _set_image(self, image: np.ndarray) -> None:
        self._grey = image.mean(axis=2)
        self.windows.append(image.shape[:2])

    def _predict(self, prompt: Prompt) -> Prediction:
        prob = (self._grey / 255.0).astype(np.float32)
        return Prediction(self._grey > 128, 0.8, prob)
