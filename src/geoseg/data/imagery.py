"""Read a tile of a source image as display RGB, the way every consumer must see it.

Used by the dataset reader, the benchmark and training so that a row's pixels are
rendered identically everywhere (same bands, same scene-level stretch).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np

from geoseg.errors import InputError


@lru_cache(maxsize=8)
def _load_npz(path: str, key: str) -> np.ndarray:
    try:
        with np.load(path) as z:
            arr = np.asarray(z[key])
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"cannot read array {key!r} from {path} ({exc})", "check the file and the image_key") from exc
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr  # H x W x C


@contextmanager
def _open_raster(path: str) -> Iterator:
    """``rasterio.open`` without the NotGeoreferencedWarning: plain JPEG/PNG sources and tiles cut for
    training have no georeference, by design."""
    import rasterio

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            yield src


def raster_shape(image_path: str | Path, image_key: str = "") -> tuple[int, int]:
    """``(height, width)`` of an image file, or of array ``image_key`` of an ``.npz``, without decoding
    its pixels (GeoTIFFs through rasterio, plain JPEG/PNG through PIL, which has no georeference to
    warn about); an unreadable file is an :class:`InputError`."""
    path = str(image_path)
    try:
        if path.endswith(".npz"):
            with np.load(path) as z:
                h, w = z[image_key or "img"].shape[:2]
                return int(h), int(w)
        if path.lower().endswith((".tif", ".tiff")):
            with _open_raster(path) as src:
                return int(src.height), int(src.width)
        from PIL import Image

        with Image.open(path) as im:
            return int(im.height), int(im.width)
    except Exception as exc:
        raise InputError(f"cannot read image {path} ({exc})", "check that the file exists and is an image") from exc


def read_bands(image_path: str, window: Mapping[str, int], bands: Sequence[int] | None = None,
               image_key: str = "") -> np.ndarray:
    """Read ``bands`` (1-based; all when ``None``) of ``window`` as a ``H x W x C`` array of the source dtype."""
    return read_window(image_path, window, bands, image_key)[0]


def read_window(image_path: str, window: Mapping[str, int], bands: Sequence[int] | None,
                 image_key: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``read_bands``, and the colour table when the bands are one palette band
    (:func:`geoseg.raster.io.palette_lut`; ``None`` otherwise), from one open of the file."""
    c0, r0, w, h = int(window["col_off"]), int(window["row_off"]), int(window["width"]), int(window["height"])
    if image_path.endswith(".npz"):
        arr = _load_npz(image_path, image_key or "img")
        idx = [b - 1 for b in bands] if bands else list(range(arr.shape[2]))
        out = arr[r0:r0 + h, c0:c0 + w][:, :, idx]
        if out.shape[:2] != (h, w):
            raise InputError(f"window {dict(window)} exceeds {image_path} of size {arr.shape[:2]}", "rebuild the shards")
        return out, None
    import rasterio
    from rasterio.windows import Window

    from geoseg.raster.io import palette_lut

    try:
        with _open_raster(image_path) as src:
            idx = list(bands) if bands else list(range(1, src.count + 1))
            data = src.read(idx, window=Window(c0, r0, w, h), boundless=False)
            lut = palette_lut(src, idx)
    except rasterio.errors.RasterioIOError as exc:
        raise InputError(f"cannot read image {image_path} ({exc})", "check that the file exists and is a raster") from exc
    return np.transpose(data, (1, 2, 0)), lut


def apply_stretch(data: np.ndarray, stretch: Sequence[Sequence[float]] | None) -> np.ndarray:
    """Map each band linearly from its ``[lo, hi]`` to 0..255 (uint8 data passes through when no stretch)."""
    if not stretch:
        if data.dtype == np.uint8:
            return data
        return np.clip(data, 0, 255).astype(np.uint8)
    out = np.empty(data.shape, dtype=np.uint8)
    for i, (lo, hi) in enumerate(stretch):
        band = (data[:, :, i].astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
        out[:, :, i] = np.clip(np.nan_to_num(band, nan=0.0), 0, 255).astype(np.uint8)
    return out


def read_rgb(row: Mapping) -> np.ndarray:
    """The display RGB tile (``H x W x 3`` uint8) of a shard row.

    An indexed-colour image (one palette band of a PNG or GeoTIFF) is shown in its table's
    colours, not as its indices (a near-black grey), as segment and serve show it.
    """
    bands = list(row["bands"]) if row.get("bands") else None
    data, lut = read_window(row["image_path"], row["window"], bands, row.get("image_key") or "")
    return to_display(data, lut, row.get("stretch"))


def to_display(data: np.ndarray, lut: np.ndarray | None, stretch: Sequence[Sequence[float]] | None) -> np.ndarray:
    """Pixels as read (``H x W x C``) to display RGB uint8: through the colour table ``lut`` when
    they are palette indices, else stretched (:func:`apply_stretch`); one band becomes grey."""
    rgb = lut[data[:, :, 0]] if lut is not None else apply_stretch(data, stretch)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[:, :, :3])
