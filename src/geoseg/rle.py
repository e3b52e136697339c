"""COCO run-length encoding of binary masks (pycocotools), the project's mask interchange format.

RLE is what the data engine stores in its shards, what the benchmark caches as
predictions and what the server returns: compact, exact and readable by every
COCO tool. ``counts`` is kept as a UTF-8 string so it fits JSON and Parquet.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def rle_encode(mask: np.ndarray) -> dict:
    """Encode a 2-D boolean/0-1 mask as ``{"size": [h, w], "counts": str}``."""
    if mask.ndim != 2:
        raise ValueError(f"rle_encode takes a 2-D mask, got shape {mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def rle_decode(rle: dict) -> np.ndarray:
    """Decode a compressed or uncompressed COCO RLE to an ``H x W`` boolean mask."""
    size = [int(v) for v in rle["size"]]
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed RLE (iscrowd annotations)
        obj = mask_utils.frPyObjects({"size": size, "counts": counts}, size[0], size[1])
    else:
        obj = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(obj).astype(bool)


def rle_area(rle: dict) -> int:
    """Foreground pixel count without decoding."""
    size = [int(v) for v in rle["size"]]
    counts = rle["counts"]
    obj = {"size": size, "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return int(mask_utils.area(obj))


def polygons_to_mask(polygons: list[list[float]], height: int, width: int) -> np.ndarray:
    """Rasterise COCO polygons (``[[x0, y0, x1, y1, ...], ...]``) to a boolean mask."""
    if not polygons:
        return np.zeros((height, width), dtype=bool)
    rles = mask_utils.frPyObjects(polygons, height, width)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)
