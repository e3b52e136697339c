"""GeoSeg's 810-pair benchmark (training-free GeoSeg, also called GeoSeg-Bench).

Layout: ``annotations/<Category>.json`` = list of ``{id, file_name, mask_path, height,
width, difficulty: "Level1|2|3", question}``. ``file_name`` is looked up under the root,
``images/``, ``imgs/`` and ``images/<Category>/``; ``mask_path`` under the root and
``masks/``. The category is the annotation file's stem, the level the digit of
``difficulty``; the task is ``reasoning`` or ``referring`` as
:func:`geoseg.prompts.infer_task` classifies the question.
"""

from __future__ import annotations

import re
from pathlib import Path

from geoseg.bench.readers.common import (
    find_image,
    lazy_mask,
    load_mask_file,
    load_rgb,
    naming,
    read_json,
    text_prompt,
)
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError
from geoseg.prompts import infer_task

NAME = "geoseg810"
DESCRIPTION = "GeoSeg training-free benchmark (annotations/<Category>.json, Level1-3)"


def _root(path: Path) -> Path:
    return path.parent if path.name == "annotations" else path


def detect(path: Path) -> bool:
    ann = _root(path) / "annotations"
    if not ann.is_dir():
        return False
    for f in sorted(ann.glob("*.json"))[:1]:
        try:
            data = read_json(f)
        except InputError:
            return False
        return isinstance(data, list) and bool(data) and {"difficulty", "question", "mask_path"} <= set(data[0])
    return False


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    root = _root(path)
    files = sorted((root / "annotations").glob("*.json"))
    if not files:
        raise InputError(f"no annotations/*.json under {root}", "give the benchmark's root folder")
    samples = []
    for f in files:
        category = f.stem
        data = read_json(f)
        if not isinstance(data, list):
            raise InputError(f"{f} is not a list of annotations", "each annotations/<Category>.json is a JSON list")
        for i, a in enumerate(data):
            try:
                q, fname, mpath = a["question"], a["file_name"], a["mask_path"]
            except (KeyError, TypeError) as exc:
                raise InputError(f"annotation {i} of {f} lacks {exc}", "entries need file_name, mask_path, question") from exc
            sid = f"{category}/{a.get('id', i)}"
            with naming(sid, f):
                img = find_image(root, fname, ("", "images", "imgs", f"images/{category}"))
                mask = find_image(root, mpath, ("", "masks", f"masks/{category}"))
            m = re.search(r"(\d)", str(a.get("difficulty", "")))
            task = infer_task(q)
            samples.append(BenchSample(
                sample_id=sid, task=task, prompt=text_prompt(q, task), image_key=str(img),
                load_image=lambda img=img: load_rgb(img),
                load_mask=lazy_mask(lambda mask=mask: load_mask_file(mask), img, sid, str(mask)),
                source_file=str(f), level=int(m.group(1)) if m else None, category=category, instruction=q,
            ))
    return samples
