"""UniGeoSeg's GeoSeg-Bench.

Layout: ``{split}.json`` = list of ``{"img": path, "mask": path, "json": path}`` (paths
relative to the split file's folder, or absolute); masks are PNG 0/255; each QA json holds
``{"question": [...], "reason": [...]}``. The task is the folder name in the path:
``/intera/`` interactive, ``/ref/`` referring, ``/reason/`` reasoning. Every question is
one sample (``<split>/<qa stem>#<k>``). Interactive questions carry their geometry as
normalised coordinates (``box x0,y0=[..], x1,y1=[..]`` or ``point [x, y]``), which is
parsed into pixel points/box so geometry-only backends can run. The category is taken
from the QA json's ``category``/``class`` key when present.
"""

from __future__ import annotations

from pathlib import Path

from geoseg.bench.readers.common import (
    interactive_prompt,
    lazy_mask,
    load_mask_file,
    load_rgb,
    naming,
    read_json,
    text_prompt,
)
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError

NAME = "unigeoseg"
DESCRIPTION = "UniGeoSeg GeoSeg-Bench ({split}.json of img/mask/json triplets)"
_TASK_DIRS = {"intera": "interactive", "interactive": "interactive", "ref": "referring", "referring": "referring",
              "reason": "reasoning", "reasoning": "reasoning"}


def _split_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".json" else []
    return sorted(p for p in path.glob("*.json"))


def _is_split_file(p: Path) -> bool:
    try:
        data = read_json(p)
    except InputError:
        return False
    return isinstance(data, list) and bool(data) and isinstance(data[0], dict) and {"img", "mask", "json"} <= set(data[0])


def detect(path: Path) -> bool:
    return any(_is_split_file(p) for p in _split_files(path))


def task_of(*paths: str) -> str:
    for p in paths:
        for part in Path(p).parts:
            if part.lower() in _TASK_DIRS:
                return _TASK_DIRS[part.lower()]
    raise ValueError("no task folder")


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    files = [p for p in _split_files(path) if _is_split_file(p)]
    if split is not None:
        files = [p for p in files if p.stem == split]
    if not files:
        raise InputError(f"no GeoSeg-Bench split file{' ' + split + '.json' if split else ''} in {path}",
                         "give the folder holding test.json (list of img/mask/json) or the file itself")
    samples: list[BenchSample] = []
    for sf in files:
        root = sf.parent
        for i, entry in enumerate(read_json(sf)):
            try:
                img, msk, qa = (root / entry["img"], root / entry["mask"], root / entry["json"])
            except (KeyError, TypeError) as exc:
                raise InputError(f"entry {i} of {sf} lacks img/mask/json", "each entry needs all three paths") from exc
            try:
                task = task_of(entry["json"], entry["img"])
            except ValueError:
                raise InputError(f"entry {i} of {sf}: no task folder (intera/ref/reason) in {entry['json']}",
                                 "keep GeoSeg-Bench's folder layout") from None
            with naming(f"{sf.stem}/{task}/{Path(entry['json']).stem}", sf):
                qa_data = read_json(qa)
                if not isinstance(qa_data, dict) or "question" not in qa_data:
                    raise InputError(f"QA file {qa} has no 'question' list",
                                     "each QA json holds {question: [...], reason: [...]}")
            questions = qa_data["question"] if isinstance(qa_data["question"], list) else [qa_data["question"]]
            reasons = qa_data.get("reason") or []
            category = str(qa_data.get("category") or qa_data.get("class") or "")
            for k, q in enumerate(questions):
                sid = f"{sf.stem}/{task}/{Path(entry['json']).stem}#{k}"
                with naming(sid, qa):
                    prompt = interactive_prompt(q, img) if task == "interactive" else text_prompt(q, task)
                samples.append(BenchSample(
                    sample_id=sid, task=task, prompt=prompt, image_key=str(img),
                    load_image=lambda img=img: load_rgb(img),
                    load_mask=lazy_mask(lambda msk=msk: load_mask_file(msk), img, sid, str(msk)),
                    source_file=str(qa), category=category, instruction=q,
                    meta={"reason": reasons[k] if k < len(reasons) else (reasons[0] if reasons else "")},
                ))
    return samples
