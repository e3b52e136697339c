"""COCO segmentations a researcher's file may hold: checked before pycocotools (which trusts them) decodes them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from geoseg.data.engine import build
from geoseg.data.sources import get_source
from geoseg.data.sources.coco_masks import decode_segmentation, string_counts
from geoseg.errors import InputError

from .test_coco_user_input import H, W, _cfg, _rect, _write


def _blobs(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.zeros((H, W), np.uint8)
    for _ in range(6):
        x, y = rng.integers(0, W - 40), rng.integers(0, H - 30)
        m[y:y + rng.integers(1, 30), x:x + rng.integers(1, 40)] = 1
    return m


@pytest.mark.parametrize("seed", range(5))
def test_string_counts_are_the_run_lengths_pycocotools_wrote(seed: int) -> None:
    m = _blobs(seed)
    counts = string_counts(mask_utils.encode(np.asfortranarray(m))["counts"])
    flat = m.ravel(order="F")
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[-1], flat, [-1]])) != 0))
    expect = runs.tolist() if flat[0] == 0 else [0, *runs.tolist()]
    assert counts == expect and sum(counts) == H * W
    string = mask_utils.encode(np.asfortranarray(m))["counts"].decode("ascii")
    assert np.array_equal(decode_segmentation({"size": [H, W], "counts": string}, H, W), m.astype(bool))


def _string_rle(seed: int = 0) -> dict:
    return {"size": [H, W], "counts": mask_utils.encode(np.asfortranarray(_blobs(seed)))["counts"].decode("ascii")}


BAD = [
    ("none", [[20, None, 50, 20, 50, 40, 20, 40]], "NaN or infinite"),        # pycocotools: segfault
    ("nan", [[20, float("nan"), 50, 20, 50, 40, 20, 40]], "NaN or infinite"),
    ("huge", [[0, 0, 2e30, 0, 2e30, 1e30]], "far outside its 200x100 image"),  # pycocotools: segfault / gigabytes
    ("text", [[20, "x", 50, 20, 50, 40]], "not a number"),
    ("nested", [[[20, 20], [50, 20], [50, 40]]], "not a flat list"),
    ("cut_string", {"size": [H, W], "counts": _string_rle()["counts"][:7]}, "cut short|cover"),  # read past its end
    ("bad_alphabet", {"size": [H, W], "counts": "@@@garbage!!"}, "not in the COCO alphabet"),
    ("short_list", {"size": [H, W], "counts": [5, 10]}, "cover 15 pixels, its size 20000"),   # decoded silently before
    ("negative", {"size": [H, W], "counts": [5, -10, 3]}, "whole numbers >= 0"),
    ("bad_size", {"size": ["a", "b"], "counts": "abc"}, r"size \['a', 'b'\] is not \[height, width\]"),
]


@pytest.mark.parametrize("case, seg, message", BAD, ids=[c for c, _, _ in BAD])
def test_malformed_segmentation_is_one_line(case: str, seg: object, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        decode_segmentation(seg, H, W)
    assert "\n" not in str(info.value)


def test_a_malformed_annotation_skips_its_image_not_the_build(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 2, "file_name": "b.png", "height": H, "width": W}]
    bad = {**_rect(3, 2, 1, 0, 0), "segmentation": {"size": [H, W], "counts": _string_rle()["counts"][:7]}}
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20), _rect(2, 2, 1, 20, 20), bad], images=images)
    manifest = build(_cfg(ann), tmp_path / "out", workers=0, report=False)
    (skip,) = manifest["skipped"]
    assert skip.startswith("coco/b: annotation 3 of b.png:") and manifest["rows"] > 0


def test_forgiven_forms(tmp_path: Path) -> None:
    """A flat polygon list is one polygon, iscrowd "0" is no crowd, a null height is the file's own."""
    flat = {**_rect(2, 1, 1, 120, 20), "segmentation": [120, 20, 150, 20, 150, 40, 120, 40]}
    not_crowd = {**_rect(3, 1, 2, 60, 60), "iscrowd": "0"}
    images = [{"id": 1, "file_name": "a.png", "height": None, "width": W}]
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20), flat, not_crowd], images=images)
    src = get_source("coco", str(ann))
    scene = src.load(src.scenes()[0])
    assert sorted(scene.instance_class.tolist()) == [0, 0, 1] and scene.crowd is None and scene.notes == {}
    assert (scene.instances[25, 125] > 0) and scene.instances[25, 125] != scene.instances[25, 25]


def test_image_entry_without_a_usable_file_name_or_size_is_one_line(tmp_path: Path) -> None:
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20)])
    data = json.loads(ann.read_text())
    data["images"][0]["file_name"] = None
    ann.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"images\[0\] has file_name None"):
        get_source("coco", str(ann)).scenes()
    data["images"][0].update(file_name="a.png", height="tall")
    ann.write_text(json.dumps(data))
    src = get_source("coco", str(ann))
    with pytest.raises(InputError, match="image a.png has height 'tall', not a pixel count"):
        src.load(src.scenes()[0])
