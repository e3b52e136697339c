"""The COCO adapter on a small seeded file written to the COCO instance format (iSAID-style names)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from geoseg.data.engine import BuildConfig, build
from geoseg.data.sources import get_source
from geoseg.errors import InputError
from geoseg.rle import rle_decode

SIZE = 200
CATS = [{"id": 1, "name": "ship"}, {"id": 2, "name": "storage-tank"}, {"id": 5, "name": "plane"}]


def _disk(cx: int, cy: int, r: int) -> np.ndarray:
    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(m, (cx, cy), r, 1, -1)
    return m.astype(bool)


def write_coco(root: Path, seed: int = 0) -> tuple[Path, dict[int, np.ndarray]]:
    """Three 200 px patches of two source images; polygons, list RLE, string RLE and a crowd region."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    names = ["P0001_0_200_0_200.png", "P0001_0_200_100_300.png", "P0002_0_200_0_200.png"]
    images, anns, truth = [], [], {}
    aid = 0
    for iid, name in enumerate(names, start=1):
        img = rng.integers(40, 90, (SIZE, SIZE, 3), dtype=np.uint8)
        images.append({"id": iid, "file_name": name, "height": SIZE, "width": SIZE})
        x0 = int(rng.integers(10, 40))
        objects = [
            (1, "poly", [[x0, 20, x0 + 60, 20, x0 + 60, 45, x0, 45]]),           # ship: a rectangle polygon
            (1, "poly", [[x0 + 80, 120, x0 + 140, 120, x0 + 140, 140, x0 + 80, 140]]),
            (2, "rle_list", _disk(60, 100, 18)),                                  # tank: uncompressed RLE
            (2, "rle_str", _disk(150, 60, 14)),                                   # tank: compressed RLE
            (5, "crowd", _disk(150, 170, 12)),
        ]
        for cat, kind, geom in objects:
            aid += 1
            if kind == "poly":
                seg = geom
                m = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(geom, SIZE, SIZE))).astype(bool)
            else:
                m = geom
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                if kind == "rle_str":
                    seg = {"size": [SIZE, SIZE], "counts": rle["counts"].decode("ascii")}
                else:  # column-major run lengths starting with a background run
                    flat = m.ravel(order="F").astype(np.int8)
                    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])) != 0)
                    seg = {"size": [SIZE, SIZE], "counts": np.diff(np.concatenate([[0], change])).tolist()}
            img[m] = (200, 200, 210) if cat == 2 else (30, 30, 150)
            anns.append({"id": aid, "image_id": iid, "category_id": cat, "segmentation": seg,
                         "iscrowd": int(kind == "crowd"), "area": int(m.sum()), "bbox": [0, 0, 1, 1]})
            if kind != "crowd":
                truth[aid] = m
        Image.fromarray(img).save(root / "images" / name)
    ann = root / "train.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATS}))
    return ann, truth


def test_coco_polygons_and_both_rle_forms_become_instances(tmp_path: Path) -> None:
    ann, truth = write_coco(tmp_path)
    src = get_source("coco", str(ann))
    refs = src.scenes()
    assert [r.region for r in refs] == ["P0001", "P0001", "P0002"]  # iSAID patches grouped by source image
    scene = src.load(refs[0])
    assert scene.classes == ["ship", "storage-tank", "plane"]
    assert scene.notes["crowd_skipped"] == 1
    ids = scene.instances
    assert len(np.unique(ids)) - 1 == 4
    data = json.loads(ann.read_text())
    for a in data["annotations"]:
        if a["image_id"] != 1 or a["iscrowd"]:
            continue
        m = truth[a["id"]]
        k = int(np.bincount(ids[m]).argmax())
        assert k > 0 and np.array_equal(ids == k, m)
        assert scene.classes[scene.instance_class[k - 1]] == {1: "ship", 2: "storage-tank"}[a["category_id"]]


def test_coco_build_rows_split_by_source_image(tmp_path: Path) -> None:
    ann, _ = write_coco(tmp_path)
    cfg = BuildConfig.from_dict({"tile_size": SIZE, "stride": SIZE, "instructions": {"no_target_ratio": 0.5}, "sources": [
        {"type": "coco", "path": str(ann), "splits": {"train": ["P0001"], "val": ["P0002"]}}]})
    manifest = build(cfg, tmp_path / "out", workers=0)
    assert manifest["splits"] == {"train": ["coco/P0001"], "val": ["coco/P0002"]}
    rows = [r for f in sorted((tmp_path / "out").rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert {r["category"] for r in rows if not r["empty_target"]} == {"ship", "storage-tank"}
    assert {r["task"] for r in rows} == {"interactive", "referring", "reasoning"}
    for r in rows:
        m = rle_decode(r["mask"])
        assert m.shape == (SIZE, SIZE) and bool(m.any()) != r["empty_target"]
    # "plane" is only a crowd region: never a target, and never asked for as absent either
    assert not any(r["category"] == "plane" for r in rows)
    assert manifest["counts"]["notes/crowd_skipped"] == 3


def test_coco_bad_input(tmp_path: Path) -> None:
    ann, _ = write_coco(tmp_path)
    data = json.loads(ann.read_text())
    data["images"][0]["height"] = SIZE + 1  # annotation one pixel off its image: aligned and counted
    ann.write_text(json.dumps(data))
    src = get_source("coco", str(ann))
    assert src.load(src.scenes()[0]).notes["mask_size_adjusted"] == 1
    data["images"][0]["height"] = SIZE + 40
    ann.write_text(json.dumps(data))
    src = get_source("coco", str(ann))
    with pytest.raises(InputError, match="pair each image with its own mask"):
        src.load(src.scenes()[0])
    data["images"][0]["height"] = SIZE
    data["annotations"][0]["segmentation"] = "garbage"
    ann.write_text(json.dumps(data))
    src = get_source("coco", str(ann))
    with pytest.raises(InputError, match="neither polygons nor RLE"):
        src.load(src.scenes()[0])
    with pytest.raises(InputError, match="is not a COCO instance file"):
        (tmp_path / "x.json").write_text("[]")
        get_source("coco", str(tmp_path / "x.json")).scenes()
    with pytest.raises(InputError, match="does not exist"):
        get_source("coco", str(tmp_path / "missing.json")).scenes()
