"""RRSIS-D (RefCOCO style): ``refs(unc).p`` pickle + ``instances.json`` (COCO).

``refs(unc).p`` is a list of refs ``{ref_id, ann_id, image_id, split, category_id,
sentences: [{sent, raw?}]}``; ``instances.json`` holds ``images`` (``id, file_name,
height, width``), ``annotations`` (``id, segmentation`` as COCO RLE — compressed or not —
or polygons) and ``categories``. Images are looked up under the root, ``images/``,
``JPEGImages/`` and ``images/rrsisd/JPEGImages/``. Every sentence is one sample
(``<split>/<ref_id>#<k>``). Masks are decoded at the annotation's size and reconciled to
the real image size by the 2-px rule (RRSIS-D has masks 1 px off).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from geoseg.bench.readers.common import find_image, lazy_mask, load_rgb, read_json, text_prompt
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError
from geoseg.rle import polygons_to_mask, rle_decode

NAME = "rrsisd"
DESCRIPTION = "RRSIS-D / RefCOCO style (refs(unc).p + instances.json)"
_IMAGE_DIRS = ("", "images", "JPEGImages", "images/rrsisd/JPEGImages", "rrsisd/JPEGImages")


def _root(path: Path) -> Path:
    return path.parent if path.is_file() else path


def detect(path: Path) -> bool:
    root = _root(path)
    return (root / "refs(unc).p").exists() and (root / "instances.json").exists()


def _load_refs(p: Path) -> list[dict]:
    try:
        with open(p, "rb") as f:
            refs = pickle.load(f)
    except FileNotFoundError as exc:
        raise InputError(f"{p} does not exist", "RRSIS-D needs refs(unc).p next to instances.json") from exc
    except Exception as exc:
        raise InputError(f"cannot read {p} ({exc})", "the refs pickle is corrupt: re-download it") from exc
    if not isinstance(refs, list):
        raise InputError(f"{p} does not hold a list of refs", "re-download refs(unc).p")
    return refs


def decode_segmentation(seg, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` (RLE dict or polygon list) as a boolean mask."""
    if isinstance(seg, dict):
        return rle_decode(seg)
    return polygons_to_mask(seg, height, width)


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    root = _root(path)
    refs = _load_refs(root / "refs(unc).p")
    inst_file = root / "instances.json"
    inst = read_json(inst_file)
    try:
        images = {im["id"]: im for im in inst["images"]}
        anns = {a["id"]: a for a in inst["annotations"]}
        cats = {c["id"]: c.get("name", str(c["id"])) for c in inst.get("categories", [])}
    except (KeyError, TypeError) as exc:
        raise InputError(f"{inst_file} is not COCO instances ({exc} missing)", "re-download instances.json") from exc
    samples = []
    for r in refs:
        if split is not None and r.get("split") != split:
            continue
        try:
            ann = anns[r["ann_id"]]
            im = images[r.get("image_id", ann.get("image_id"))]
        except KeyError as exc:
            raise InputError(f"ref {r.get('ref_id')} points at missing annotation/image {exc}", f"check {inst_file}") from exc
        img = find_image(root, im["file_name"], _IMAGE_DIRS)
        category = cats.get(r.get("category_id", ann.get("category_id")), "")
        for k, s in enumerate(r.get("sentences") or []):
            text = s.get("sent") or s.get("raw") or ""
            sid = f"{r.get('split', 'all')}/{r.get('ref_id')}#{k}"

            def load(seg=ann["segmentation"], h=int(im["height"]), w=int(im["width"]), sid=sid):
                try:
                    return decode_segmentation(seg, h, w)
                except Exception as exc:
                    raise InputError(f"sample {sid}: unreadable segmentation in {inst_file} ({exc})",
                                     "re-download instances.json") from exc

            samples.append(BenchSample(
                sample_id=sid, task="referring", prompt=text_prompt(text, "referring"), image_key=str(img),
                load_image=lambda img=img: load_rgb(img), load_mask=lazy_mask(load, img, sid, str(inst_file)),
                source_file=str(inst_file), category=category, instruction=text,
            ))
    return samples
