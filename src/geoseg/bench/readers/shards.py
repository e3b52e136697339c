"""The project's own Parquet shards (:data:`geoseg.data.schema.SHARD_SCHEMA`).

``path`` is a ``.parquet`` file or a folder holding them (searched recursively). Pixels
are rendered exactly as the data engine defines them (:func:`geoseg.data.imagery.read_rgb`);
masks are the rows' COCO RLE at tile size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from geoseg.bench.readers.common import reconcile_mask
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError
from geoseg.prompts import Prompt

NAME = "shards"
DESCRIPTION = "geoseg Parquet shards (geoseg data build)"


def shard_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path] if path.suffix == ".parquet" else []
    return sorted(path.rglob("*.parquet"))


def detect(path: Path) -> bool:
    if path.is_dir() and (path / "split.json").exists():  # a materialised benchmark split: format "split"
        return False
    files = shard_files(path)
    if not files:
        return False
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(files[0]).names)
    except Exception:
        return False
    return {"sample_id", "mask", "window", "instruction"} <= names


def read_rows(files: list[Path], split: str | None = None) -> list[tuple[dict, Path]]:
    """All rows of ``files`` (optionally only one ``split``), each with the file it came from."""
    import pyarrow.parquet as pq

    out = []
    for f in files:
        try:
            table = pq.read_table(f)
        except Exception as exc:
            raise InputError(f"cannot read shard {f} ({exc})", "rebuild it with geoseg data build") from exc
        missing = {"sample_id", "mask", "window", "task", "instruction", "image_path"} - set(table.column_names)
        if missing:
            raise InputError(f"shard {f} lacks columns {', '.join(sorted(missing))}", "rebuild it with geoseg data build")
        for row in table.to_pylist():
            if split is None or row.get("split") == split:
                out.append((row, f))
    return out


def row_prompt(row: dict) -> Prompt:
    """The segmenter prompt of a row: geometry (interactive) plus the instruction text."""
    p = json.loads(row.get("prompt") or "{}")
    task = row["task"]
    text = (row.get("instruction") or "").strip() or None
    if task == "interactive":
        pts = tuple((float(x), float(y)) for x, y in p.get("points") or [])
        labels = tuple(int(v) for v in p.get("labels") or [1] * len(pts))
        box = tuple(float(v) for v in p["box"]) if p.get("box") else None
        return Prompt(points=pts, labels=labels, box=box, text=text, task="interactive")
    return Prompt(text=text, task=task)


def class_regions_of(path: Path):
    """A :class:`~geoseg.bench.class_regions.ClassRegions` from the build's ``manifest.json``, if there is one."""
    from geoseg.bench.class_regions import ClassRegions

    folder = path if path.is_dir() else path.parent
    for d in (folder, folder.parent):
        man = d / "manifest.json"
        if man.is_file():
            try:
                return ClassRegions(json.loads(man.read_text(encoding="utf-8"))["config"]["sources"])
            except (OSError, ValueError, KeyError, TypeError):
                return None
    return None


def row_to_sample(row: dict, source: Path, regions=None) -> BenchSample:
    from geoseg.data.imagery import read_rgb
    from geoseg.rle import rle_decode

    win = row["window"]
    h, w = int(win["height"]), int(win["width"])
    sid = row["sample_id"]
    key = json.dumps([row["image_path"], row.get("image_key") or "", win, row.get("bands"), row.get("stretch")],
                     default=str)

    def load_mask() -> np.ndarray:
        try:
            m = rle_decode(row["mask"])
        except Exception as exc:
            raise InputError(f"sample {sid}: unreadable mask RLE in {source} ({exc})", "rebuild the shard") from exc
        return reconcile_mask(m, h, w, sid, str(source))

    try:
        prompt = row_prompt(row)
    except Exception as exc:
        raise InputError(f"sample {sid}: bad prompt in {source} ({exc})", "rebuild the shard") from exc
    return BenchSample(
        sample_id=sid, task=row["task"], prompt=prompt, image_key=key,
        load_image=lambda: read_rgb(row), load_mask=load_mask, source_file=str(source),
        level=int(row["level"]) if row.get("level") is not None else None,
        category=row.get("category") or "", instruction=row.get("instruction") or "",
        empty_target=bool(row.get("empty_target")) if row.get("empty_target") is not None else None,
        meta={"source": row.get("source"), "region": row.get("region"), "answer": row.get("answer"),
              "scene": row.get("scene"), "window": win, "class_regions": regions},
        mask_rle=row["mask"] if [int(v) for v in (row["mask"] or {}).get("size", ())] == [h, w] else None,
    )


def read(path: Path, split: str | None = None, ids: set[str] | None = None) -> list[BenchSample]:
    files = shard_files(path)
    if not files:
        raise InputError(f"no .parquet shards under {path}", "build them with geoseg data build")
    rows = read_rows(files, split)
    regions = class_regions_of(path)
    return [row_to_sample(r, f, regions) for r, f in rows if ids is None or r["sample_id"] in ids]
