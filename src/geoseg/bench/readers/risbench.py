"""RISBench: JSON-lines ``{sent, file_name, segmentation}`` (COCO RLE), 512² images.

``path`` is a ``.jsonl`` file or a folder holding them (``split`` picks ``<split>.jsonl``
or files whose name contains it). Images are looked up next to the file and in
``images/``. Line *n* of ``<file>.jsonl`` is sample ``<file stem>/<n>``; an optional
``category`` key is used for the per-category table.
"""

from __future__ import annotations

import json
from pathlib import Path

from geoseg.bench.readers.common import find_image, lazy_mask, load_rgb, naming, text_prompt
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError
from geoseg.rle import rle_decode

NAME = "risbench"
DESCRIPTION = "RISBench (JSON lines of sent/file_name/segmentation)"


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".jsonl" else []
    return sorted(path.glob("*.jsonl"))


def detect(path: Path) -> bool:
    for f in _files(path)[:1]:
        with open(f, encoding="utf-8") as fh:
            first = fh.readline()
        try:
            d = json.loads(first)
        except json.JSONDecodeError:
            return False
        return isinstance(d, dict) and {"sent", "file_name", "segmentation"} <= set(d)
    return False


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    files = _files(path)
    if split is not None and path.is_dir():
        files = [f for f in files if split in f.stem]
    if not files:
        raise InputError(f"no RISBench .jsonl file in {path}", "give the .jsonl file or its folder")
    samples = []
    for f in files:
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                    text, fname, seg = d["sent"], d["file_name"], d["segmentation"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise InputError(f"line {n} of {f} is not a RISBench record ({exc})",
                                     "each line is JSON with sent, file_name, segmentation") from exc
                sid = f"{f.stem}/{n}"
                with naming(sid, f):
                    img = find_image(f.parent, fname, ("", "images", "imgs"))

                def load(seg=seg, sid=sid, f=f):
                    try:
                        return rle_decode(seg)
                    except Exception as exc:
                        raise InputError(f"sample {sid}: unreadable RLE in {f} ({exc})", "repair the file") from exc

                samples.append(BenchSample(
                    sample_id=sid, task="referring", prompt=text_prompt(text, "referring"), image_key=str(img),
                    load_image=lambda img=img: load_rgb(img), load_mask=lazy_mask(load, img, sid, str(f)),
                    source_file=str(f), category=str(d.get("category") or ""), instruction=text,
                ))
    return samples
