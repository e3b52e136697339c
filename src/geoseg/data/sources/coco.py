"""COCO instance annotations (the iSAID / SAMRS layout): one JSON file plus an image folder.

``path`` is the annotation JSON (``images``, ``annotations``, ``categories``). Each
annotation's ``segmentation`` is a list of polygons, an uncompressed RLE (``counts`` a
list) or a compressed RLE (``counts`` a string); pycocotools decodes all three. Instances
are painted into an instance-id map largest first, so a small object lying on a larger one
stays visible. ``iscrowd`` annotations are not single objects: they are never targets (counted),
and their class is neither asked for as a whole nor as absent in tiles they touch.

Regions (the split unit): iSAID patches of one source image (``P0001_0_800_0_800.png``)
overlap, so by default the region is the file stem with an iSAID patch suffix
``_<y0>_<y1>_<x0>_<x1>`` removed; ``region_pattern`` (a regex whose first group is the
region) overrides it.

Options:
    images: folder of the image files (default: ``images/`` next to the JSON if it exists,
        else the JSON's folder).
    region_pattern: regex applied to the file name; group 1 is the region.
    split: put every image in this split (a COCO file is often one split already).
    exhaustive: whether every object of the listed categories is annotated (default true;
        needed for no-target instructions).
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from geoseg.data.sources.base import UNLABELED, Scene, SceneRef, Source, check_size, fit_to
from geoseg.data.sources.raster import read_full
from geoseg.errors import InputError

ISAID_PATCH = re.compile(r"^(.*?)(?:_\d+_\d+_\d+_\d+)?$")


@lru_cache(maxsize=2)
def _index(path: str, mtime: float) -> tuple[dict[int, dict], dict[int, list[dict]], list[str], dict[int, int]]:
    """Images by id, annotations by image id, class names and category id -> class index (cached per process)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read COCO annotations {path} ({exc})", "pass a COCO instance JSON file") from exc
    if not isinstance(data, dict) or not {"images", "annotations", "categories"} <= set(data):
        raise InputError(f"{path} is not a COCO instance file", "it needs 'images', 'annotations' and 'categories'")
    for part, keys in (("categories", ("id", "name")), ("images", ("id", "file_name")),
                       ("annotations", ("image_id", "category_id"))):
        entries = data[part]
        if not isinstance(entries, list):
            raise InputError(f"{path}: '{part}' is a {type(entries).__name__}, not a list", "fix the COCO file")
        for n, e in enumerate(entries):
            missing = [k for k in keys if not isinstance(e, dict) or k not in e]
            bad_id = [k for k in keys if k != "name" and k != "file_name" and k not in missing
                      and not _is_int(e[k])]
            if missing or bad_id:
                what = f"lacks {', '.join(map(repr, missing))}" if missing else f"has a non-integer {bad_id[0]!r}"
                raise InputError(f"{path}: {part}[{n}] {what}",
                                 f"every entry of '{part}' needs {' and '.join(map(repr, keys))}")
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    names = [str(c["name"]) for c in cats]
    cat_index = {int(c["id"]): k for k, c in enumerate(cats)}
    images = {int(im["id"]): im for im in data["images"]}
    anns: dict[int, list[dict]] = {}
    for a in data["annotations"]:
        anns.setdefault(int(a["image_id"]), []).append(a)
    return images, anns, names, cat_index


def _is_int(v: object) -> bool:
    """Whether a COCO id is an integer (or a string of one), as ``int()`` reads it without loss."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return v.is_integer()
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()


def decode_segmentation(seg: object, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (polygons, uncompressed or compressed RLE) as an ``H x W`` bool mask."""
    from pycocotools import mask as mask_utils

    if isinstance(seg, list):
        polys = [p for p in seg if len(p) >= 6]
        if not polys:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(seg, dict) and "counts" in seg and "size" in seg:
        h, w = (int(v) for v in seg["size"])
        if isinstance(seg["counts"], list):
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            counts = seg["counts"]
            rle = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    else:
        raise InputError(f"segmentation of type {type(seg).__name__} is neither polygons nor RLE",
                         "use COCO polygons [[x, y, ...]] or {size, counts}")
    return mask_utils.decode(rle).astype(bool)


def _bbox_mask(bbox: object, height: int, width: int) -> np.ndarray | None:
    """The pixels of a COCO ``[x, y, w, h]`` box as an ``H x W`` bool mask (``None`` when there is no usable box)."""
    try:
        x, y, bw, bh = (float(v) for v in bbox)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    x0, y0 = max(int(np.floor(x)), 0), max(int(np.floor(y)), 0)
    x1, y1 = min(int(np.ceil(x + bw)), width), min(int(np.ceil(y + bh)), height)
    if x1 <= x0 or y1 <= y0:
        return None
    m = np.zeros((height, width), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


class CocoSource(Source):
    """Images with COCO instance annotations; every annotation is an instance of its category."""

    name = "coco"
    default_split = "train"

    def _index(self):
        p = Path(self.root)
        if not p.is_file():
            raise InputError(f"COCO annotation file {p} does not exist", "pass the instance JSON, e.g. coco=ann/train.json")
        return _index(str(p.resolve()), p.stat().st_mtime)

    def _image_dir(self) -> Path:
        given = self.options.get("images")
        base = Path(self.root).resolve().parent
        if given:
            d = Path(str(given))
            return d if d.is_absolute() else base / d
        return base / "images" if (base / "images").is_dir() else base

    def region_of(self, file_name: str) -> str:
        stem = Path(file_name).stem
        pattern = self.options.get("region_pattern")
        m = re.search(str(pattern), Path(file_name).name) if pattern else ISAID_PATCH.match(stem)
        if not m or not m.group(1):
            raise InputError(f"region_pattern {pattern!r} does not match {file_name}",
                             "give a regex whose first group is the region")
        return m.group(1)

    def scenes(self) -> list[SceneRef]:
        images, _, _, _ = self._index()
        if not images:
            raise InputError(f"{self.root} lists no images", "check the COCO file")
        idir = self._image_dir()
        refs = []
        for iid in sorted(images):
            im = images[iid]
            path = idir / str(im["file_name"])
            refs.append(SceneRef(self.name, str(Path(str(im["file_name"])).with_suffix("")), self.region_of(str(im["file_name"])),
                                 str(path), "", (1, 2, 3), (("image_id", iid),)))
        return refs

    def load(self, ref: SceneRef) -> Scene:
        from dataclasses import replace

        images, anns, names, cat_index = self._index()
        im = images[int(ref.option("image_id"))]  # type: ignore[arg-type]
        data = read_full(ref.image_path)
        h, w = data.shape[:2]
        if data.shape[2] < 3:
            ref = replace(ref, bands=(1,))
        data = data[:, :, [b - 1 for b in ref.bands]]
        if data.dtype != np.uint8:
            raise InputError(f"{ref.image_path} is {data.dtype}, COCO images are 8-bit",
                             "convert the images to 8-bit RGB (or use a raster source)")
        ah, aw = int(im.get("height", h)), int(im.get("width", w))
        notes: dict[str, int] = {}
        if (ah, aw) != (h, w):
            check_size((ah, aw), (h, w), f"annotation size of {im['file_name']}")
            notes["mask_size_adjusted"] = 1
        masks, classes = [], []
        crowd = None
        for a in anns.get(int(im["id"]), []):
            if int(a["category_id"]) not in cat_index:
                raise InputError(f"annotation {a.get('id')} has category {a['category_id']} not in 'categories'",
                                 "fix the COCO file")
            seg = a.get("segmentation")
            if not seg:
                # bbox-only (detection) annotation: no mask to target, but the object is there, so
                # its box is kept out of class-level / no-target questions like a crowd region
                notes["no_segmentation"] = notes.get("no_segmentation", 0) + 1
                box = _bbox_mask(a.get("bbox"), h, w)
                if box is not None:
                    if crowd is None:
                        crowd = np.full((h, w), UNLABELED, dtype=np.uint8)
                    crowd[box] = cat_index[int(a["category_id"])]
                continue
            m = decode_segmentation(seg, ah, aw)
            if m.shape != (h, w):
                check_size(m.shape, (h, w), f"mask of annotation {a.get('id')}")
                m, _ = fit_to(m, h, w, 0)
            if a.get("iscrowd"):
                notes["crowd_skipped"] = notes.get("crowd_skipped", 0) + 1
                if crowd is None:
                    crowd = np.full((h, w), UNLABELED, dtype=np.uint8)
                crowd[m] = cat_index[int(a["category_id"])]
                continue
            if not m.any():
                notes["empty_annotations"] = notes.get("empty_annotations", 0) + 1
                continue
            masks.append(m)
            classes.append(cat_index[int(a["category_id"])])
        inst = np.zeros((h, w), dtype=np.int32)
        order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
        for n, i in enumerate(order):
            inst[masks[i]] = n + 1
        if data.shape[2] == 1:
            data = np.repeat(data, 3, axis=2)
        return Scene(ref, np.ascontiguousarray(data[:, :, :3]), list(names), label=None, instances=inst,
                     instance_class=np.array([classes[i] for i in order], dtype=np.int32),
                     exhaustive=bool(self.options.get("exhaustive", True)), notes=notes, crowd=crowd)
