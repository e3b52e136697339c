"""Generate a tiny, seeded shard in the real format for the unified-model tests.

Scenes are 128×128 PNG images of a sandy background with a blue "water" rectangle, one
or two grey "building" squares and a green "vegetation" disc; each scene is one tile.
Rows follow :data:`geoseg.data.schema.SHARD_SCHEMA`: interactive (box or point),
referring (class or position phrases), reasoning (purpose queries) and no-target rows.
Run as a script to write ``tests/model/generated`` by hand; the tests call :func:`write_shard`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from geoseg.data.schema import SHARD_SCHEMA
from geoseg.rle import rle_encode

SIZE = 128
REASONING = {
    "water": "Where could a boat sail in this image?",
    "building": "Where do people live or work here?",
    "vegetation": "Which area gives shade from plants?",
}


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    img = np.empty((SIZE, SIZE, 3), np.uint8)
    img[:] = (194, 178, 128)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    inst: dict[str, list[np.ndarray]] = {"water": [], "building": [], "vegetation": []}
    m = np.zeros((SIZE, SIZE), np.uint8)
    x0, y0 = rng.integers(0, 60, 2)
    w, h = rng.integers(30, 60, 2)
    cv2.rectangle(m, (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), 1, -1)
    img[m > 0] = (40, 80, 170)
    inst["water"].append(m > 0)
    for _ in range(int(rng.integers(1, 3))):
        m = np.zeros((SIZE, SIZE), np.uint8)
        x, y = rng.integers(5, SIZE - 30, 2)
        s = int(rng.integers(12, 24))
        cv2.rectangle(m, (int(x), int(y)), (int(x + s), int(y + s)), 1, -1)
        m[np.any([i > 0 for i in inst["water"]], axis=0)] = 0
        if m.sum() > 40:
            img[m > 0] = (120, 120, 125)
            inst["building"].append(m > 0)
    m = np.zeros((SIZE, SIZE), np.uint8)
    cx, cy = rng.integers(20, SIZE - 20, 2)
    cv2.circle(m, (int(cx), int(cy)), int(rng.integers(8, 16)), 1, -1)
    for other in inst["water"] + inst["building"]:
        m[other] = 0
    if m.sum() > 40:
        img[m > 0] = (50, 140, 50)
        inst["vegetation"].append(m > 0)
    return img, inst


def _row(scene: str, path: str, split: str, task: str, level: int, category: str, instruction: str, mask: np.ndarray,
         prompt: dict, k: int) -> dict:
    return {
        "sample_id": f"synthetic/{scene}/0/{k}/{task}-0", "source": "synthetic", "scene": scene, "region": scene,
        "split": split, "image_path": path, "image_key": "",
        "window": {"col_off": 0, "row_off": 0, "width": SIZE, "height": SIZE}, "bands": [1, 2, 3], "stretch": [],
        "mask": rle_encode(mask), "task": task, "level": level, "category": category, "instruction": instruction,
        "prompt": json.dumps(prompt), "answer": "", "empty_target": not mask.any(), "instance_id": k,
        "attributes": "{}",
    }


def write_shard(out: Path, n_train: int = 12, n_val: int = 4, seed: int = 0) -> Path:
    """Write images and ``out/shard-00000.parquet``; returns ``out``."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        img, inst = _scene(rng)
        path = str(out / f"scene_{i:03d}.png")
        cv2.imwrite(path, img[:, :, ::-1])
        k = 0
        for cat, masks in inst.items():
            for m in masks:
                ys, xs = np.nonzero(m)
                box = [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]
                j = int(rng.integers(len(xs)))
                pt = [float(xs[j]) + 0.5, float(ys[j]) + 0.5]
                if rng.random() < 0.5:
                    bn = [round(v / SIZE, 3) for v in box]
                    text = (f"Please segment the target corresponding to the box x0,y0=[{bn[0]},{bn[1]}], "
                            f"x1,y1=[{bn[2]},{bn[3]}].")
                    prompt = {"box": box, "box_norm": bn}
                else:
                    pn = [round(v / SIZE, 3) for v in pt]
                    text = f"Please segment the target corresponding to the point [{pn[0]}, {pn[1]}]."
                    prompt = {"points": [pt], "labels": [1], "points_norm": [pn]}
                rows.append(_row(f"s{i}", path, split, "interactive", 1, cat, text, m, prompt, k))
                k += 1
            if masks:
                union = np.any(masks, axis=0)
                rows.append(_row(f"s{i}", path, split, "referring", 1, cat, f"the {cat}", union, {}, k))
                rows.append(_row(f"s{i}", path, split, "reasoning", 2, cat, REASONING[cat], union, {}, k + 1))
                k += 2
        rows.append(_row(f"s{i}", path, split, "referring", 1, "road", "the road", np.zeros((SIZE, SIZE), bool), {}, k))
    table = pa.Table.from_pylist(rows, schema=SHARD_SCHEMA)
    pq.write_table(table, out / "shard-00000.parquet")
    return out


if __name__ == "__main__":  # pragma: no cover
    print(write_shard(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/model/generated")))
