"""Reader round-trips: small, seeded files written in each documented format, read back."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from PIL import Image

from geoseg.bench.readers import detect_format, load_benchmark
from geoseg.bench.readers.common import SIZE_TOLERANCE, reconcile_mask
from geoseg.bench.readers.geopix import strip_box_tokens
from geoseg.data.schema import SHARD_SCHEMA
from geoseg.errors import InputError
from geoseg.rle import rle_encode

RNG = np.random.default_rng(7)


def rgb(h, w):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def rect(h, w, r0, r1, c0, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


def save_png(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def save_mask(path: Path, mask, value=255):
    save_png(path, (mask * value).astype(np.uint8))


def save_tif(path: Path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=arr.shape[2],
                       dtype=arr.dtype) as dst:
        dst.write(np.transpose(arr, (2, 0, 1)))


def check(samples, masks: dict, images: dict | None = None):
    by_id = {s.sample_id: s for s in samples}
    for sid, mask in masks.items():
        s = by_id[sid]
        got = s.load_mask()
        assert got.dtype == bool and got.shape == mask.shape
        assert np.array_equal(got, mask), sid
        if images and sid in images:
            assert np.array_equal(s.load_image(), images[sid])


# -- UniGeoSeg GeoSeg-Bench -----------------------------------------------------------------
def write_unigeoseg(root: Path):
    img = rgb(40, 50)
    m1, m2 = rect(40, 50, 5, 20, 10, 30), rect(40, 50, 0, 10, 0, 10)
    save_png(root / "intera/img/a.png", img)
    save_mask(root / "intera/mask/a.png", m1)
    (root / "intera/json").mkdir(parents=True)
    (root / "intera/json/a.json").write_text(json.dumps({
        "question": ["Please segment the target corresponding to the box x0,y0=[0.2,0.125], x1,y1=[0.6,0.5].",
                     "Please segment the target corresponding to the point [0.4, 0.3]."], "reason": []}))
    save_png(root / "ref/img/b.png", img)
    save_mask(root / "ref/mask/b.png", m2)
    (root / "ref/json").mkdir(parents=True)
    (root / "ref/json/b.json").write_text(json.dumps({"question": ["the small field at the top left"],
                                                      "reason": ["it is the only one"], "category": "field"}))
    entries = [{"img": "intera/img/a.png", "mask": "intera/mask/a.png", "json": "intera/json/a.json"},
               {"img": "ref/img/b.png", "mask": "ref/mask/b.png", "json": "ref/json/b.json"}]
    (root / "test.json").write_text(json.dumps(entries))
    return img, m1, m2


def test_unigeoseg_roundtrip(tmp_path):
    img, m1, m2 = write_unigeoseg(tmp_path)
    assert detect_format(tmp_path) == "unigeoseg"
    samples, fmt = load_benchmark(tmp_path)
    assert fmt == "unigeoseg" and len(samples) == 3
    by = {s.sample_id: s for s in samples}
    box = by["test/interactive/a#0"]
    assert box.task == "interactive" and box.prompt.box == pytest.approx((10, 5, 30, 20))
    pt = by["test/interactive/a#1"]
    assert pt.prompt.points[0] == pytest.approx((20.0, 12.0)) and pt.prompt.labels == (1,)
    ref = by["test/referring/b#0"]
    assert ref.task == "referring" and ref.prompt.text == "the small field at the top left" and ref.category == "field"
    assert box.image_key == pt.image_key != ref.image_key
    check(samples, {"test/interactive/a#0": m1, "test/referring/b#0": m2}, {"test/referring/b#0": img})


# -- GeoSeg 810-pair benchmark -------------------------------------------------------------
def test_geoseg810_roundtrip(tmp_path):
    img = rgb(30, 30)
    m = rect(30, 30, 3, 9, 4, 12)
    save_png(tmp_path / "images/x1.png", img)
    save_mask(tmp_path / "masks/x1_m.png", m)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/Harbor.json").write_text(json.dumps([
        {"id": 7, "file_name": "x1.png", "mask_path": "x1_m.png", "height": 30, "width": 30, "difficulty": "Level2",
         "question": "Where could ships unload cargo?"},
        {"id": 8, "file_name": "x1.png", "mask_path": "x1_m.png", "height": 30, "width": 30, "difficulty": "Level1",
         "question": "the harbor basin"}]))
    samples, fmt = load_benchmark(tmp_path)
    assert fmt == "geoseg810"
    by = {s.sample_id: s for s in samples}
    assert by["Harbor/7"].level == 2 and by["Harbor/7"].task == "reasoning" and by["Harbor/7"].category == "Harbor"
    assert by["Harbor/8"].level == 1 and by["Harbor/8"].task == "referring"
    check(samples, {"Harbor/7": m}, {"Harbor/7": img})


# -- RRSIS-D ------------------------------------------------------------------------------
def write_rrsisd(root: Path, corrupt_pickle=False):
    img = rgb(32, 32)
    save_png(root / "images/rrsisd/JPEGImages/00001.jpg".replace(".jpg", ".png"), img)
    m_rle = rect(33, 32, 2, 10, 3, 9)           # 1 px taller than the image (RRSIS-D quirk)
    poly = [[20.0, 20.0, 30.0, 20.0, 30.0, 30.0, 20.0, 30.0]]
    inst = {"images": [{"id": 1, "file_name": "00001.png", "height": 32, "width": 32}],
            "annotations": [{"id": 11, "image_id": 1, "category_id": 3, "segmentation": rle_encode(m_rle)},
                            {"id": 12, "image_id": 1, "category_id": 4, "segmentation": poly}],
            "categories": [{"id": 3, "name": "vehicle"}, {"id": 4, "name": "storage tank"}]}
    (root / "instances.json").write_text(json.dumps(inst))
    refs = [{"ref_id": 100, "ann_id": 11, "image_id": 1, "split": "test", "category_id": 3,
             "sentences": [{"sent": "the vehicle on the left", "raw": "The vehicle on the left"}]},
            {"ref_id": 101, "ann_id": 12, "image_id": 1, "split": "val", "category_id": 4,
             "sentences": [{"sent": "the tank bottom right"}, {"sent": "lower right tank"}]}]
    with open(root / "refs(unc).p", "wb") as f:
        if corrupt_pickle:
            f.write(b"\x80\x04not a pickle")
        else:
            pickle.dump(refs, f)
    return m_rle[:32], poly


def test_rrsisd_roundtrip_with_one_px_off_mask(tmp_path):
    m_rle, poly = write_rrsisd(tmp_path)
    assert detect_format(tmp_path) == "rrsisd"
    samples, _ = load_benchmark(tmp_path)
    assert sorted(s.sample_id for s in samples) == ["test/100#0", "val/101#0", "val/101#1"]
    test_only, _ = load_benchmark(tmp_path, split="test")
    assert [s.sample_id for s in test_only] == ["test/100#0"]
    by = {s.sample_id: s for s in samples}
    assert by["test/100#0"].category == "vehicle" and by["val/101#1"].prompt.text == "lower right tank"
    check(samples, {"test/100#0": m_rle})      # cropped back to 32x32 by the 2-px rule
    tank = by["val/101#0"].load_mask()
    assert tank.shape == (32, 32) and tank[25, 25] and not tank[5, 5] and 90 <= tank.sum() <= 130


def test_rrsisd_corrupt_pickle_names_file(tmp_path):
    write_rrsisd(tmp_path, corrupt_pickle=True)
    with pytest.raises(InputError, match=r"refs\(unc\)\.p"):
        load_benchmark(tmp_path, "rrsisd")


# -- RefSegRS -----------------------------------------------------------------------------
def test_refsegrs_roundtrip(tmp_path):
    img = rgb(24, 24)
    m = rect(24, 24, 0, 12, 0, 24)
    save_tif(tmp_path / "images/17.tif", img)
    save_tif(tmp_path / "masks/17.tif", (m * 255).astype(np.uint8))
    save_tif(tmp_path / "images/18.tif", img)
    save_tif(tmp_path / "masks/18.tif", np.zeros((24, 24), np.uint8))
    (tmp_path / "output_phrase_test.txt").write_text("17 road along the top\n18 vehicle in the lake\n")
    samples, fmt = load_benchmark(tmp_path)
    assert fmt == "refsegrs" and [s.sample_id for s in samples] == ["test/17", "test/18"]
    assert samples[0].prompt.text == "road along the top"
    check(samples, {"test/17": m, "test/18": np.zeros((24, 24), bool)}, {"test/17": img})


# -- EarthReason --------------------------------------------------------------------------
def test_earthreason_roundtrip_with_empty_target(tmp_path):
    d = tmp_path / "test"
    img = rgb(20, 28)
    m = rect(20, 28, 4, 8, 4, 20)
    for stem, mask in (("e1", m), ("e2", np.zeros((20, 28), bool))):
        save_png(d / f"images/{stem}.jpg".replace(".jpg", ".png"), img)
        save_mask(d / f"labels/{stem}.png", mask, value=1)
        (d / "QAs").mkdir(exist_ok=True)
        (d / f"QAs/{stem}.json").write_text(json.dumps({"questions": ["Where could a boat sail?", "Where is water?"],
                                                        "answer": "the canal"}))
    (tmp_path / "train").mkdir()  # a split without the three folders is ignored
    assert detect_format(tmp_path) == "earthreason"
    samples, _ = load_benchmark(tmp_path, split="test")
    assert len(samples) == 4 and all(s.task == "reasoning" for s in samples)
    check(samples, {"test/e1#0": m, "test/e2#1": np.zeros((20, 28), bool)})
    assert samples[0].meta["answer"] == "the canal"


# -- RISBench -----------------------------------------------------------------------------
def test_risbench_roundtrip(tmp_path):
    img = rgb(16, 16)
    m = rect(16, 16, 1, 5, 1, 5)
    save_png(tmp_path / "images/r1.png", img)
    lines = [{"sent": "the square roof", "file_name": "r1.png", "segmentation": rle_encode(m), "category": "building"},
             {"sent": "nothing", "file_name": "r1.png", "segmentation": rle_encode(np.zeros((16, 16), bool))}]
    (tmp_path / "test.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    samples, fmt = load_benchmark(tmp_path / "test.jsonl")
    assert fmt == "risbench" and [s.sample_id for s in samples] == ["test/1", "test/2"]
    assert samples[0].category == "building"
    check(samples, {"test/1": m}, {"test/1": img})


# -- GeoPixInstruct -----------------------------------------------------------------------
def test_geopix_roundtrip(tmp_path):
    img = rgb(20, 20)
    m = rect(20, 20, 10, 20, 10, 20)
    save_png(tmp_path / "images/g1.png", img)
    recs = [{"image": "g1.png", "instances": [{
        "bbox": [10, 10, 20, 20], "category": "ship", "category_id": 2, "instance_id": 5,
        "description": "the ship {<50><50><100><100>} at the bottom right", "mask": rle_encode(m)}]}]
    (tmp_path / "geopix_test.json").write_text(json.dumps(recs))
    samples, fmt = load_benchmark(tmp_path / "geopix_test.json")
    assert fmt == "geopix" and samples[0].sample_id == "g1/5" and samples[0].category == "ship"
    assert samples[0].prompt.text == "the ship at the bottom right"
    assert "{<50>" in samples[0].instruction
    check(samples, {"g1/5": m})
    assert strip_box_tokens("a {<1.5><2><3><4>} b") == "a b"


# -- project shards -----------------------------------------------------------------------
def write_shard(path: Path, image_path: Path, h=32, w=40):
    arr = RNG.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    np.savez(image_path, img=arr)
    m = rect(h, w, 2, 12, 3, 20)
    base = {"source": "synthetic", "scene": "s0", "region": "r0", "split": "test", "image_path": str(image_path),
            "image_key": "img", "window": {"col_off": 8, "row_off": 4, "width": w, "height": h}, "bands": [1, 2, 3],
            "stretch": [], "mask": rle_encode(m), "level": 2, "category": "building", "answer": "",
            "empty_target": False, "instance_id": 0, "attributes": "{}"}
    rows = [
        {**base, "sample_id": "synthetic/s0/t0/0/interactive-0", "task": "interactive",
         "instruction": "Please segment the target corresponding to the point [0.25, 0.2].",
         "prompt": json.dumps({"points": [[10.0, 6.0]], "labels": [1], "points_norm": [[0.25, 0.2]]})},
        {**base, "sample_id": "synthetic/s0/t0/0/referring-0", "task": "referring", "instruction": "the building",
         "prompt": "{}"},
        {**base, "sample_id": "synthetic/s0/t0/-1/reasoning-0", "task": "reasoning", "split": "train",
         "instruction": "where could planes land?", "prompt": "{}", "empty_target": True, "instance_id": -1,
         "mask": rle_encode(np.zeros((h, w), bool))},
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SHARD_SCHEMA), path)
    return arr[4:4 + h, 8:8 + w], m


def test_shards_roundtrip(tmp_path):
    (tmp_path / "shards").mkdir()
    tile, m = write_shard(tmp_path / "shards/part-0.parquet", tmp_path / "img.npz")
    assert detect_format(tmp_path / "shards") == "shards"
    samples, _ = load_benchmark(tmp_path / "shards")
    assert len(samples) == 3
    test_only, _ = load_benchmark(tmp_path / "shards", split="test")
    assert len(test_only) == 2
    by = {s.sample_id: s for s in samples}
    it = by["synthetic/s0/t0/0/interactive-0"]
    assert it.prompt.points == ((10.0, 6.0),) and it.level == 2 and it.task == "interactive"
    assert by["synthetic/s0/t0/0/referring-0"].prompt.kinds == {"text"}
    assert it.image_key == by["synthetic/s0/t0/0/referring-0"].image_key
    check(samples, {"synthetic/s0/t0/0/interactive-0": m}, {"synthetic/s0/t0/0/interactive-0": tile})
    assert not by["synthetic/s0/t0/-1/reasoning-0"].load_mask().any()


# -- size rule and bad input --------------------------------------------------------------
def test_reconcile_rule():
    m = np.ones((5, 6), bool)
    assert reconcile_mask(m, 4, 7).shape == (4, 7)
    out = reconcile_mask(m, 4, 7)
    assert out[:, :6].all() and not out[:, 6].any()
    with pytest.raises(InputError, match="sample s1.*mask.txt"):
        reconcile_mask(m, 5 + SIZE_TOLERANCE + 1, 6, "s1", "mask.txt")


def test_mask_far_off_names_sample_and_file(tmp_path):
    save_png(tmp_path / "images/r1.png", rgb(16, 16))
    line = {"sent": "x", "file_name": "r1.png", "segmentation": rle_encode(np.ones((30, 16), bool))}
    (tmp_path / "val.jsonl").write_text(json.dumps(line) + "\n")
    samples, _ = load_benchmark(tmp_path)
    with pytest.raises(InputError, match=r"sample val/1: mask of size 30x16 .*val\.jsonl"):
        samples[0].load_mask()


def test_unknown_format_and_corrupt_annotation(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unknown benchmark format"):
        load_benchmark(tmp_path)
    with pytest.raises(InputError, match="unknown benchmark format 'coco'"):
        load_benchmark(tmp_path, "coco")
    write_unigeoseg(tmp_path / "u")
    (tmp_path / "u/ref/json/b.json").write_text("{not json")
    with pytest.raises(InputError, match=r"b\.json is not valid JSON"):
        load_benchmark(tmp_path / "u")
    (tmp_path / "r").mkdir()
    (tmp_path / "r/test.jsonl").write_text('{"sent": "a", "file_name": "x.png", "segmentation": {}}\n{broken\n')
    with pytest.raises(InputError, match=r"image 'x.png' not found|line 2 of .*test\.jsonl"):
        load_benchmark(tmp_path / "r", "risbench")
