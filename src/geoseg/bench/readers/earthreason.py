"""EarthReason: ``images/``, ``labels/*.png``, ``QAs/*.json`` ``{"questions": [...], "answer": ...}``.

``path`` is the folder holding the three sub-folders, or a dataset root with one such
folder per split (``train/``, ``val/``, ``test/``; choose with ``split``). Image, label
and QA share a stem. Each question is one reasoning sample (``<split>/<stem>#<k>``). A label
with no foreground is an empty target (the format has them); the empty-target rule decides
how it is scored.
"""

from __future__ import annotations

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

NAME = "earthreason"
DESCRIPTION = "EarthReason (images/, labels/, QAs/)"


def _is_split_dir(p: Path) -> bool:
    return (p / "QAs").is_dir() and (p / "labels").is_dir() and (p / "images").is_dir()


def _split_dirs(path: Path, split: str | None) -> list[tuple[str, Path]]:
    if _is_split_dir(path):
        return [(split or path.name, path)]
    subs = [(p.name, p) for p in sorted(path.iterdir()) if p.is_dir() and _is_split_dir(p)] if path.is_dir() else []
    return [(n, p) for n, p in subs if split is None or n == split]


def detect(path: Path) -> bool:
    return bool(_split_dirs(path, None))


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    dirs = _split_dirs(path, split)
    if not dirs:
        raise InputError(f"no EarthReason images/labels/QAs folders{' for split ' + split if split else ''} in {path}",
                         "give the split folder or the dataset root")
    samples = []
    for sp, d in dirs:
        for qa in sorted((d / "QAs").glob("*.json")):
            with naming(f"{sp}/{qa.stem}"):
                data = read_json(qa)
                if not isinstance(data, dict) or "questions" not in data:
                    raise InputError(f"QA file {qa} has no 'questions' list", "EarthReason QAs hold {questions, answer}")
                img = find_image(d, qa.stem, ("images",))
                lab = find_image(d, qa.stem, ("labels",))
            questions = data["questions"] if isinstance(data["questions"], list) else [data["questions"]]
            for k, q in enumerate(questions):
                sid = f"{sp}/{qa.stem}#{k}"
                samples.append(BenchSample(
                    sample_id=sid, task="reasoning", prompt=text_prompt(q, "reasoning"), image_key=str(img),
                    load_image=lambda img=img: load_rgb(img),
                    load_mask=lazy_mask(lambda lab=lab: load_mask_file(lab), img, sid, str(lab)),
                    source_file=str(qa), category=str(data.get("category") or ""), instruction=q,
                    meta={"answer": data.get("answer")},
                ))
    return samples
