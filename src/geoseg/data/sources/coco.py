"""COCO instance annotations (the iSAID / SAMRS layout): one JSON file plus an image folder.

``path`` is the annotation JSON (``images``, ``annotations``, ``categories``). Each
annotation's ``segmentation`` is a list of polygons, an uncompressed RLE (``counts`` a
list) or a compressed RLE (``counts`` a string); pycocotools decodes all three. Instances
are painted into an instance-id map largest first, so a small object lying on a larger one
stays visible. ``iscrowd`` annotations are not single objects: they are never targets (counted),
and their class is neither asked for as a whole nor as absent in tiles they touch. An annotation
of a category ``categories`` does not list is no target either and, since it may be a listed class
by another name, blocks those questions for every class in the tiles it touches (counted, its image
kept); annotations of no listed image are left out and counted (all of them: an error).

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
import logging
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from geoseg.data.sources.base import ANY_CLASS, NO_CROWD, Scene, SceneRef, Source, check_size, fit_to
from geoseg.data.sources.coco_masks import bbox_mask, decode_segmentation
from geoseg.data.sources.raster import read_full_palette
from geoseg.errors import InputError

log = logging.getLogger(__name__)
ISAID_PATCH = re.compile(r"^(.*?)(?:_\d+_\d+_\d+_\d+)?$")


@dataclass(frozen=True)
class CocoIndex:
    """A COCO file as the adapter uses it.

    Attributes:
        images: image entries by id.
        anns: annotations by image id (only those of listed images).
        names: class names, one per distinct category name (ordered by lowest category id).
        cat_index: category id -> class index (ids sharing a name share a class).
        annotations: how many annotations the file holds.
        orphans: annotations whose ``image_id`` is no image's id (never used, counted).
        orphan_ids: the first few of those image ids, for messages.
        unknown_categories: category ids of annotations that ``categories`` does not list, with their counts.
    """

    images: dict[int, dict]
    anns: dict[int, list[dict]]
    names: list[str]
    cat_index: dict[int, int]
    annotations: int
    orphans: int
    orphan_ids: tuple[int, ...]
    unknown_categories: dict[int, int]


@lru_cache(maxsize=2)
def _index(path: str, mtime: float) -> CocoIndex:
    """The checked index of a COCO file (cached per process)."""
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
            if part == "images" and (not isinstance(e["file_name"], str) or not e["file_name"].strip()):
                raise InputError(f"{path}: images[{n}] has file_name {e['file_name']!r}",
                                 "give every image the name of its file, relative to the image folder")
        if part != "annotations":
            _check_unique_ids(path, part, entries)
    cats = sorted(data["categories"], key=lambda c: int(c["id"]))
    names: list[str] = []
    cat_index: dict[int, int] = {}
    for c in cats:  # one class per name: two ids named alike are one class to the instructions
        name = str(c["name"])
        if name not in names:
            names.append(name)
        cat_index[int(c["id"])] = names.index(name)
    if len(names) < len(cats):
        log.warning("%s: %d categories share a name with another; each name is one class", path,
                    len(cats) - len(names))
    images = {int(im["id"]): im for im in data["images"]}
    anns: dict[int, list[dict]] = {}
    orphan_ids: list[int] = []
    unknown: dict[int, int] = {}
    for a in data["annotations"]:
        iid = int(a["image_id"])
        if iid not in images:
            orphan_ids.append(iid)
            continue
        anns.setdefault(iid, []).append(a)
        if int(a["category_id"]) not in cat_index:
            unknown[int(a["category_id"])] = unknown.get(int(a["category_id"]), 0) + 1
    shown = tuple(sorted(set(orphan_ids))[:5])
    return CocoIndex(images, anns, names, cat_index, len(data["annotations"]), len(orphan_ids), shown, unknown)


def _check_unique_ids(path: str, part: str, entries: list[dict]) -> None:
    """Raise naming the first ``images``/``categories`` entry that repeats an earlier entry's id."""
    first: dict[int, int] = {}
    for n, e in enumerate(entries):
        k = int(e["id"])
        if k in first:
            raise InputError(f"{path}: {part}[{n}] repeats the id {k} of {part}[{first[k]}]",
                             f"give every entry of '{part}' its own id")
        first[k] = n


def _is_int(v: object) -> bool:
    """Whether a COCO id is an integer (or a string of one), as ``int()`` reads it without loss."""
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    if isinstance(v, float):
        return v.is_integer()
    return isinstance(v, str) and v.strip().lstrip("-").isdigit()


class CocoSource(Source):
    """Images with COCO instance annotations; every annotation is an instance of its category."""

    name = "coco"
    default_split = "train"

    def _index(self) -> CocoIndex:
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
        idx = self._index()
        if not idx.images:
            raise InputError(f"{self.root} lists no images", "check the COCO file")
        if idx.orphans and idx.orphans == idx.annotations:
            raise InputError(f"{self.root}: none of its {idx.annotations} annotations points at a listed image "
                             f"(image_id {', '.join(map(str, idx.orphan_ids))}{', ...' if idx.orphans > 5 else ''}; "
                             f"image ids {_id_range(idx.images)})",
                             "annotations[].image_id must be an images[].id: pair the annotations with their own images")
        if idx.orphans:
            log.warning("%s: %d of %d annotations point at no listed image (image_id %s); they are left out",
                        self.root, idx.orphans, idx.annotations, ", ".join(map(str, idx.orphan_ids)))
        if idx.unknown_categories:
            log.warning("%s: %d annotations have a category_id not in 'categories' (%s); they are no targets, and "
                        "no tile they touch asks about a class by name or as absent", self.root,
                        sum(idx.unknown_categories.values()), ", ".join(map(str, sorted(idx.unknown_categories))))
        idir = self._image_dir()
        refs = []
        for iid in sorted(idx.images):
            im = idx.images[iid]
            path = idir / str(im["file_name"])
            refs.append(SceneRef(self.name, str(Path(str(im["file_name"])).with_suffix("")), self.region_of(str(im["file_name"])),
                                 str(path), "", (1, 2, 3), (("image_id", iid),)))
        return refs

    def source_notes(self) -> dict[str, int]:
        """``orphan_annotations``: annotations whose ``image_id`` is no listed image's id (left out)."""
        return {"orphan_annotations": self._index().orphans}

    def load(self, ref: SceneRef) -> Scene:
        idx = self._index()
        im = idx.images[int(ref.option("image_id"))]  # type: ignore[arg-type]
        data, lut = read_full_palette(ref.image_path)
        h, w = data.shape[:2]
        if data.shape[2] < 3:
            ref = replace(ref, bands=(1,))
        data = data[:, :, [b - 1 for b in ref.bands]]
        if lut is not None:  # indexed colour: its table's colours, as read_rgb shows the rows
            data = lut[data[:, :, 0]]
        if data.dtype != np.uint8:
            raise InputError(f"{ref.image_path} is {data.dtype}, COCO images are 8-bit",
                             "convert the images to 8-bit RGB (or use a raster source)")
        ah, aw = _annotated_size(im, h, w)
        notes: dict[str, int] = {}

        def note(key: str) -> None:
            notes[key] = notes.get(key, 0) + 1

        if (ah, aw) != (h, w):
            check_size((ah, aw), (h, w), f"annotation size of {im['file_name']}")
            note("mask_size_adjusted")
        masks, classes = [], []
        crowd = np.full((h, w), NO_CROWD, dtype=np.int16)
        unknown = np.zeros((h, w), dtype=bool)
        for a in idx.anns.get(int(im["id"]), []):
            cls = idx.cat_index.get(int(a["category_id"]))
            seg = a.get("segmentation")
            if not seg:
                # bbox-only (detection) annotation: no mask to target, but the object is there, so
                # its box is kept out of class-level / no-target questions like a crowd region
                m = bbox_mask(a.get("bbox"), h, w)
            else:
                try:
                    m = decode_segmentation(seg, ah, aw)
                except InputError as exc:
                    raise InputError(f"annotation {a.get('id')} of {im['file_name']}: {exc.problem}", exc.fix) from exc
                if m.shape != (h, w):
                    check_size(m.shape, (h, w), f"mask of annotation {a.get('id')}")
                    m, _ = fit_to(m, h, w, 0)
            if cls is None:
                # a category 'categories' does not list: no target, and it may be any class by
                # another name, so no tile it touches says a class is absent (or unique)
                note("unknown_category")
                if m is not None:
                    unknown |= m
                continue
            if not seg:
                note("no_segmentation")
                if m is not None:
                    crowd[m] = cls
                continue
            if _is_crowd(a.get("iscrowd")):
                note("crowd_skipped")
                crowd[m] = cls
                continue
            if not m.any():
                note("empty_annotations")
                continue
            masks.append(m)
            classes.append(cls)
        crowd[unknown] = ANY_CLASS  # last: no crowd region of one class hides it
        inst = np.zeros((h, w), dtype=np.int32)
        order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
        for n, i in enumerate(order):
            inst[masks[i]] = n + 1
        if data.shape[2] == 1:
            data = np.repeat(data, 3, axis=2)
        return Scene(ref, np.ascontiguousarray(data[:, :, :3]), list(idx.names), label=None, instances=inst,
                     instance_class=np.array([classes[i] for i in order], dtype=np.int32),
                     exhaustive=bool(self.options.get("exhaustive", True)), notes=notes,
                     crowd=crowd if (crowd != NO_CROWD).any() else None)


def _is_crowd(v: object) -> bool:
    """Whether an ``iscrowd`` value says crowd (``1``/``true``; a string ``"0"`` does not)."""
    if isinstance(v, str):
        return v.strip().lower() not in ("", "0", "false")
    return bool(v)


def _annotated_size(im: dict, h: int, w: int) -> tuple[int, int]:
    """The ``height``/``width`` an image entry gives its annotations (the file's own when absent or null)."""
    out = []
    for key, own in (("height", h), ("width", w)):
        v = im.get(key)
        if v is None:
            out.append(own)
        elif _is_int(v) and int(v) > 0:
            out.append(int(v))
        else:
            raise InputError(f"image {im['file_name']} has {key} {v!r}, not a pixel count",
                             f"give its {key} in pixels, or leave it out")
    return out[0], out[1]


def _id_range(images: dict[int, dict]) -> str:
    """The span of the image ids, for a message (``1-250``, or the one id)."""
    lo, hi = min(images), max(images)
    return str(lo) if lo == hi else f"{lo}-{hi}"
