"""COCO ``segmentation`` and ``bbox`` fields as pixel masks, checked before pycocotools sees them.

pycocotools trusts its input: a ``null`` or NaN polygon coordinate, or one far outside the
image, crashes the process (a segfault, or gigabytes allocated for the outline); a compressed
RLE string cut short decodes to whatever memory follows it. A researcher's own file can hold
any of these, so every value is checked here and a bad one is an :class:`InputError` naming
what is wrong (the scene is then skipped and listed in the manifest, like an unreadable image).
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from geoseg.errors import InputError

FIX = "use COCO polygons [[x, y, ...]] or RLE {size: [h, w], counts}"
#: polygon coordinates beyond this many image sizes are an error (pycocotools draws the outline at 5x,
#: so its memory grows with them); nearer ones outside the image are only clipped by drawing
FAR = 16


def decode_segmentation(seg: object, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as an ``H x W`` bool mask.

    A flat list of numbers is read as one polygon (a common way of writing a single one).
    Polygons with fewer than three points are empty.
    """
    if isinstance(seg, list):
        if seg and all(_is_number(v) for v in seg):
            seg = [seg]
        polys = [p.tolist() for p in (_polygon(p, height, width) for p in seg) if p.size >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        h, w = _rle_size(seg["size"])
        counts = seg["counts"]
        if isinstance(counts, (str, bytes)):
            counts = string_counts(counts.encode("utf-8") if isinstance(counts, str) else counts)
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": _checked_counts(counts, h * w)}, h, w)
    else:
        raise InputError(f"segmentation of type {type(seg).__name__} is neither polygons nor RLE", FIX)
    return mask_utils.decode(rle).astype(bool)


def bbox_mask(bbox: object, height: int, width: int) -> np.ndarray | None:
    """The pixels of a COCO ``[x, y, w, h]`` box as an ``H x W`` bool mask (``None`` when there is no usable box)."""
    try:
        x, y, bw, bh = (float(v) for v in bbox)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    if not np.isfinite((x, y, bw, bh)).all():
        return None
    x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
    x1, y1 = min(int(np.ceil(x + bw)), width), min(int(np.ceil(y + bh)), height)
    if x1 <= x0 or y1 <= y0:
        return None
    m = np.zeros((height, width), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _polygon(p: object, height: int, width: int) -> np.ndarray:
    """One polygon's coordinates as finite floats, none beyond ``FAR`` image sizes."""
    try:
        xy = np.asarray(p, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"a polygon holds a value that is not a number ({str(p)[:60]})", FIX) from exc
    if xy.ndim != 1:
        raise InputError(f"a polygon is not a flat list of x, y numbers ({str(p)[:60]})", FIX)
    if not np.isfinite(xy).all():
        raise InputError("a polygon holds a NaN or infinite coordinate", "give finite pixel coordinates")
    far = np.abs(xy).max(initial=0.0)
    if far > FAR * max(height, width):
        raise InputError(f"a polygon has the coordinate {far:g}, far outside its {width}x{height} image",
                         "polygon coordinates are pixels of the image; check its width and height")
    return xy


def _rle_size(size: object) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise InputError(f"RLE size {size!r} is not [height, width]", FIX) from exc
    if h <= 0 or w <= 0:
        raise InputError(f"RLE size {size!r} is not [height, width]", FIX)
    return h, w


def _checked_counts(counts: object, total: int) -> list[int]:
    """Run lengths that are whole numbers >= 0 and cover the ``h x w`` pixels exactly."""
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                                for c in counts):
        raise InputError("RLE counts are not run lengths (whole numbers >= 0)", FIX)
    if sum(counts) != total:
        raise InputError(f"RLE counts cover {sum(counts)} pixels, its size {total}",
                         "the RLE is cut short or belongs to another size; export it again")
    return counts


def string_counts(s: bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE ``counts`` string.

    The format (pycocotools' ``rleToString``): each run is written in 5-bit groups, lowest
    first, as characters ``48 + group`` with bit 0x20 set on every group but the last, and
    bit 0x10 of the last group as its sign; from the third run on, the value is the
    difference to the run two before.
    """
    out: list[int] = []
    value, shift = 0, 0
    for ch in s:
        c = ch - 48
        if not 0 <= c < 64:
            raise InputError(f"compressed RLE counts hold the character {chr(ch)!r}, not in the COCO alphabet",
                             "export the RLE again")
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:
            value -= 1 << shift
        if len(out) > 2:
            value += out[-2]
        out.append(value)
        value, shift = 0, 0
    if shift:
        raise InputError("compressed RLE counts end in the middle of a run", "the RLE is cut short; export it again")
    return out
