"""A torch ``Dataset`` over data-engine shards: image windows and masks decoded lazily per item.

Only the light columns are held in memory (ids, paths, windows, RLE strings, text);
pixels are read from the source image with :func:`geoseg.data.imagery.read_rgb` and
masks decoded with :func:`geoseg.rle.rle_decode` when an item is requested.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.dataset as pads

from geoseg.data.imagery import read_bands, read_rgb
from geoseg.errors import InputError, require
from geoseg.rle import rle_decode


def shard_files(path: str | Path, split: str | None = None) -> list[Path]:
    """The Parquet shards of a build folder (through its manifest), or a single shard file."""
    p = Path(path)
    if p.is_file():
        return [p]
    man = p / "manifest.json"
    if man.exists():
        shards = json.loads(man.read_text())["shards"]
        files = [p / s["path"] for s in shards if split is None or s["split"] == split]
    else:  # not hidden ones: a build in progress fills a hidden staging folder (``data.writer.staged_dir``)
        files = sorted(f for f in p.rglob("*.parquet")
                       if not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files and not man.exists():
        raise InputError(f"no shards under {p}", "build them with 'geoseg data build -o DIR'")
    return files


def read_rows(path: str | Path, split: str | None = None, tasks: Sequence[str] | None = None,
              columns: Sequence[str] | None = None) -> list[dict]:
    """Rows of a build (optionally one split and some tasks) as dicts."""
    files = shard_files(path, split)
    if not files:
        return []
    ds = pads.dataset([str(f) for f in files], format="parquet")
    flt = None
    if split is not None:
        flt = pads.field("split") == split
    if tasks:
        f2 = pads.field("task").isin(list(tasks))
        flt = f2 if flt is None else flt & f2
    return ds.to_table(columns=list(columns) if columns else None, filter=flt).to_pylist()


class ShardDataset:
    """``torch.utils.data.Dataset`` of triplets from a build folder.

    Each item is a dict: ``image`` (uint8 tensor ``3 x H x W``), ``mask`` (bool tensor ``H x W``),
    ``instruction``, ``task``, ``level``, ``category``, ``empty_target``, ``prompt`` (dict in tile
    pixels), ``sample_id``. With ``size`` set, image and mask are resized to ``size x size``
    (bilinear / nearest) and the prompt's pixel coordinates are scaled accordingly, so items batch.
    With ``all_bands=True`` an item also has ``bands``: every source band of the window as a
    float32 tensor ``C x H x W`` in source units (e.g. the six reflectance bands of a ukis tile),
    resized like the image.
    """

    def __init__(self, path: str | Path, split: str | None = None, tasks: Sequence[str] | None = None,
                 size: int | None = None, all_bands: bool = False) -> None:
        require("torch", "model")
        self.rows = read_rows(path, split, tasks)
        self.size = size
        self.all_bands = all_bands

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        import torch

        row = self.rows[i]
        image = read_rgb(row)
        mask = rle_decode(row["mask"])
        prompt = json.loads(row["prompt"] or "{}")
        bands = None
        if self.all_bands:
            bands = read_bands(row["image_path"], row["window"], None, row.get("image_key") or "").astype(np.float32)
        if self.size:
            import cv2

            h, w = mask.shape
            if bands is not None:
                bands = cv2.resize(bands, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
                if bands.ndim == 2:
                    bands = bands[:, :, None]
            sx, sy = self.size / w, self.size / h
            image = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            mask = cv2.resize(mask.view(np.uint8), (self.size, self.size), interpolation=cv2.INTER_NEAREST).astype(bool)
            if "points" in prompt:
                prompt["points"] = [[x * sx, y * sy] for x, y in prompt["points"]]
            if "box" in prompt:
                b = prompt["box"]
                prompt["box"] = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
        item = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "mask": torch.from_numpy(mask),
            "instruction": row["instruction"],
            "task": row["task"],
            "level": int(row["level"]),
            "category": row["category"],
            "empty_target": bool(row["empty_target"]),
            "prompt": prompt,
            "sample_id": row["sample_id"],
        }
        if bands is not None:
            item["bands"] = torch.from_numpy(np.ascontiguousarray(bands.transpose(2, 0, 1)))
        return item
