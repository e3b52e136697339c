"""GeoPixInstruct instance annotations (COCO RLE masks).

Accepted layouts of the JSON file (or every ``*.json`` in a folder): a list of image
records ``{"image" | "file_name": name, "instances" | "annotations": [instance, ...]}``
or a mapping ``{image name: [instance, ...]}``. An instance is ``{bbox, category,
category_id, description, instance_id, mask: {counts, size}}``; each one with a
description is a referring sample (``<image stem>/<instance_id>``). GeoPix writes boxes
into text as ``{<x1><y1><x2><y2>}`` on a 0–100 grid; they are removed from the prompt text
the model sees (the benchmark's instruction keeps them) so the target is not given away.
"""

from __future__ import annotations

import re
from pathlib import Path

from geoseg.bench.readers.common import find_image, lazy_mask, load_rgb, read_json, text_prompt
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError
from geoseg.rle import rle_decode

NAME = "geopix"
DESCRIPTION = "GeoPixInstruct (per-instance description + COCO RLE mask)"
_BOX_TOKENS = re.compile(r"\{\s*(?:<\s*\d+(?:\.\d+)?\s*>\s*){4}\}")


def strip_box_tokens(text: str) -> str:
    """``"the car {<10><20><30><40>} left"`` → ``"the car left"``."""
    return re.sub(r"\s+", " ", _BOX_TOKENS.sub(" ", text)).strip()


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".json" else []
    return sorted(path.glob("*.json"))


def _records(data) -> list[tuple[str, list]]:
    if isinstance(data, dict):
        return [(k, v) for k, v in data.items() if isinstance(v, list)]
    out = []
    for rec in data if isinstance(data, list) else []:
        if isinstance(rec, dict):
            name = rec.get("image") or rec.get("file_name")
            inst = rec.get("instances") or rec.get("annotations")
            if name and isinstance(inst, list):
                out.append((str(name), inst))
    return out


def _is_instance(d) -> bool:
    return isinstance(d, dict) and "description" in d and isinstance(d.get("mask"), dict) and "counts" in d["mask"]


def detect(path: Path) -> bool:
    for f in _files(path)[:1]:
        try:
            recs = _records(read_json(f))
        except InputError:
            return False
        return bool(recs) and bool(recs[0][1]) and _is_instance(recs[0][1][0])
    return False


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    files = _files(path)
    if split is not None and path.is_dir():
        files = [f for f in files if split in f.stem]
    if not files:
        raise InputError(f"no GeoPixInstruct .json in {path}", "give the annotation file or its folder")
    samples = []
    for f in files:
        recs = _records(read_json(f))
        if not recs:
            raise InputError(f"{f} holds no image records with instances", "see docs/bench.md for the layout")
        for name, insts in recs:
            img = find_image(f.parent, name, ("", "images", "imgs"))
            for j, inst in enumerate(insts):
                if not _is_instance(inst):
                    raise InputError(f"instance {j} of image {name} in {f} lacks description/mask",
                                     "each instance needs description and mask {counts, size}")
                sid = f"{Path(name).stem}/{inst.get('instance_id', j)}"
                raw = str(inst["description"])

                def load(seg=inst["mask"], sid=sid, f=f):
                    try:
                        return rle_decode(seg)
                    except Exception as exc:
                        raise InputError(f"sample {sid}: unreadable RLE in {f} ({exc})", "repair the file") from exc

                samples.append(BenchSample(
                    sample_id=sid, task="referring", prompt=text_prompt(strip_box_tokens(raw) or raw, "referring"),
                    image_key=str(img), load_image=lambda img=img: load_rgb(img),
                    load_mask=lazy_mask(load, img, sid, str(f)), source_file=str(f),
                    category=str(inst.get("category") or ""), instruction=raw,
                ))
    return samples
