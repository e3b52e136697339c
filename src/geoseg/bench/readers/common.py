"""Helpers shared by the format readers: image/mask loading and the size-reconciliation rule.

**Mask size rule.** Some public benchmarks ship masks a pixel or two larger or smaller
than their image (RRSIS-D is the known case). A mask whose height and width each differ
from the image's by at most :data:`SIZE_TOLERANCE` pixels is aligned at the top-left
corner: extra rows/columns at the bottom/right are cropped, missing ones are padded with
background. A larger mismatch is an error naming the sample and the file, because it
means the mask belongs to another image.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from geoseg.data.imagery import raster_shape
from geoseg.errors import InputError
from geoseg.prompts import Prompt

log = logging.getLogger(__name__)

SIZE_TOLERANCE = 2
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def reconcile_mask(mask: np.ndarray, height: int, width: int, sample_id: str = "", source: str = "") -> np.ndarray:
    """Bring ``mask`` to ``height`` x ``width`` by the documented rule (see module docstring)."""
    mh, mw = mask.shape[:2]
    if (mh, mw) == (height, width):
        return mask
    if abs(mh - height) > SIZE_TOLERANCE or abs(mw - width) > SIZE_TOLERANCE:
        raise InputError(
            f"sample {sample_id}: mask of size {mh}x{mw} does not fit its {height}x{width} image ({source})",
            f"masks may differ from their image by at most {SIZE_TOLERANCE} px; check that the mask belongs to this image",
        )
    out = np.zeros((height, width), dtype=bool)
    h, w = min(mh, height), min(mw, width)
    out[:h, :w] = mask[:h, :w]
    log.debug("sample %s: mask %dx%d reconciled to image %dx%d", sample_id, mh, mw, height, width)
    return out


def _stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    out = np.empty(arr.shape, np.uint8)
    for i in range(arr.shape[2]):
        band = arr[:, :, i].astype(np.float64)
        finite = band[np.isfinite(band)]
        lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
        scaled = (band - lo) * (255.0 / max(hi - lo, 1e-12))
        out[:, :, i] = np.clip(np.nan_to_num(scaled), 0, 255).astype(np.uint8)
    return out


def load_rgb(path: str | Path) -> np.ndarray:
    """An image file as ``H x W x 3`` uint8 RGB (GeoTIFFs: first three bands, 2–98 % stretch if not 8-bit)."""
    path = str(path)
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import rasterio

            with rasterio.open(path) as src:
                idx = list(range(1, min(src.count, 3) + 1))
                arr = np.transpose(src.read(idx), (1, 2, 0))
            arr = _stretch_to_uint8(arr)
        else:
            from PIL import Image

            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read image {path} ({exc})", "check that the file exists and is an image") from exc
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def load_mask_file(path: str | Path) -> np.ndarray:
    """A mask image as boolean (any non-zero value in any band = target)."""
    path = str(path)
    try:
        if path.lower().endswith((".tif", ".tiff")):
            import rasterio

            with rasterio.open(path) as src:
                arr = src.read()
            return np.any(arr != 0, axis=0)
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
    except Exception as exc:
        raise InputError(f"cannot read mask {path} ({exc})", "check that the file exists and is a mask image") from exc
    return np.any(arr != 0, axis=2) if arr.ndim == 3 else arr != 0


def read_json(path: str | Path):
    """Parse a JSON annotation file, turning any failure into an error naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"annotation file {path} does not exist", "check the --data path") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"annotation file {path} is not valid JSON ({exc})", "re-download or repair the file") from exc


def find_image(root: Path, name: str, dirs: Sequence[str] = ("", "images", "JPEGImages", "imgs")) -> Path:
    """Locate ``name`` (a relative path or a bare stem) under ``root``'s usual image folders."""
    p = Path(name)
    if p.is_absolute() and p.exists():
        return p
    for d in dirs:
        cand = root / d / name
        if cand.exists():
            return cand
    if not p.suffix:
        for d in dirs:
            for ext in IMAGE_EXTS:
                cand = root / d / (name + ext)
                if cand.exists():
                    return cand
    raise InputError(f"image {name!r} not found under {root}", f"expected it in one of {', '.join(d or '.' for d in dirs)}")


@contextmanager
def naming(sample_id: str, source: str | Path = "") -> Iterator[None]:
    """Re-raise an :class:`InputError` from the block with the sample (and its annotation file) named.

    Errors that already name the sample pass unchanged, so nesting is harmless.
    """
    try:
        yield
    except InputError as exc:
        if f"sample {sample_id}" in exc.problem:
            raise
        where = f" ({source})" if source and str(source) not in exc.problem else ""
        raise InputError(f"sample {sample_id}{where}: {exc.problem}", exc.fix) from exc


def lazy_mask(load, image_path: str | Path, sample_id: str, source: str):
    """A loader returning ``load()`` reconciled to the size of the image at ``image_path``."""
    def _load() -> np.ndarray:
        with naming(sample_id, source):
            m = load()
            h, w = raster_shape(image_path)
            return reconcile_mask(m, h, w, sample_id, source)
    return _load


_BOX_RE = re.compile(r"x0\s*,\s*y0\s*=\s*\[\s*([\d.]+)\s*,\s*([\d.]+)\s*\]\s*,\s*x1\s*,\s*y1\s*=\s*\[\s*([\d.]+)\s*,\s*([\d.]+)\s*\]")
_POINT_RE = re.compile(r"\[\s*([01](?:\.\d+)?)\s*,\s*([01](?:\.\d+)?)\s*\]")


def parse_interactive(text: str, height: int, width: int) -> tuple[tuple[float, float, float, float] | None,
                                                                 list[tuple[float, float]]]:
    """Geometry of a UniGeoSeg interactive instruction, in pixels.

    ``... the box x0,y0=[0.434,0.113], x1,y1=[0.717,0.287].`` gives a box; otherwise every
    ``[x, y]`` pair of normalised coordinates is a positive point.
    """
    m = _BOX_RE.search(text)
    if m:
        x0, y0, x1, y1 = (float(v) for v in m.groups())
        return (x0 * width, y0 * height, x1 * width, y1 * height), []
    pts = [(float(a) * width, float(b) * height) for a, b in _POINT_RE.findall(text)]
    return None, pts


def text_prompt(text: str, task: str) -> Prompt:
    return Prompt(text=text, task=task)  # type: ignore[arg-type]


def interactive_prompt(text: str, image_path: str | Path) -> Prompt:
    """A prompt holding both the instruction text and its parsed geometry (pixels of the image)."""
    h, w = raster_shape(image_path)
    box, pts = parse_interactive(text, h, w)
    return Prompt(points=tuple(pts), labels=tuple(1 for _ in pts), box=box, text=text or None, task="interactive")
