"""A researcher's own COCO file: unknown categories, orphan annotations, palette images, repeated ids.

Every fixture is a small seeded COCO instance JSON with PNG images, written in the real formats.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.cli import main
from geoseg.data.dataset import read_rows
from geoseg.data.engine import BuildConfig, build
from geoseg.data.imagery import read_rgb
from geoseg.data.sources import get_source
from geoseg.data.sources.base import ANY_CLASS
from geoseg.errors import InputError

H, W = 100, 200  # two 100 px tiles side by side
CATS = [{"id": 1, "name": "ship"}, {"id": 2, "name": "plane"}]


def _rect(aid: int, iid: int, cat: int, x0: int, y0: int, w: int = 30, h: int = 20, **extra: object) -> dict:
    return {"id": aid, "image_id": iid, "category_id": cat, "iscrowd": 0,
            "segmentation": [[x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]], **extra}


def _write(root: Path, anns: list[dict], cats: list[dict] | None = None, images: list[dict] | None = None,
           pixels: np.ndarray | Image.Image | None = None, seed: int = 0) -> Path:
    """A COCO JSON over ``images`` (default: one 200 x 100 PNG ``a.png``, id 1) and their image files."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = images or [{"id": 1, "file_name": "a.png", "height": H, "width": W}]
    rng = np.random.default_rng(seed)
    for im in images:
        pic = pixels if pixels is not None else rng.integers(40, 90, (H, W, 3), dtype=np.uint8)
        (pic if isinstance(pic, Image.Image) else Image.fromarray(pic)).save(root / "images" / im["file_name"])
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats or CATS}))
    return ann


def _cfg(ann: Path, **instructions: object) -> BuildConfig:
    return BuildConfig.from_dict({"tile_size": 100, "stride": 100, "instructions": instructions,
                                  "sources": [{"type": "coco", "path": str(ann)}]})


def test_unknown_category_skips_the_annotation_not_the_image(tmp_path: Path) -> None:
    """The image is built; the annotation is counted, is no target, and its tile says nothing by class name."""
    boat = _rect(3, 1, 7, 55, 60, w=25, h=15)  # category 7 is not listed: maybe a 'ship' by another name
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20), _rect(2, 1, 1, 130, 40), boat])
    src = get_source("coco", str(ann))
    scene = src.load(src.scenes()[0])
    assert scene.notes == {"unknown_category": 1}
    assert scene.instance_class.tolist() == [0, 0]  # the two ships only
    assert (scene.crowd[60:75, 55:80] == ANY_CLASS).all() and (scene.crowd[:, 100:] != ANY_CLASS).all()

    manifest = build(_cfg(ann, no_target_ratio=0.5), tmp_path / "out", workers=0, report=False)
    assert manifest["skipped"] == [] and manifest["counts"]["notes/unknown_category"] == 1
    rows = list(read_rows(tmp_path / "out"))
    left = [r for r in rows if r["window"]["col_off"] == 0]
    right = [r for r in rows if r["window"]["col_off"] == 100]
    # the tile with the unknown object: only interactive rows (no "there is no plane", no "the only ship")
    assert left and {r["task"] for r in left} == {"interactive"}
    # the other tile is built as usual, no-target questions included
    assert {"referring", "interactive"} <= {r["task"] for r in right}
    assert any(r["empty_target"] and r["category"] == "plane" for r in right)
    assert not any(r["category"] not in ("ship", "plane") for r in rows)


def test_orphan_annotations_are_counted_and_all_orphans_is_one_line(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    ann = _write(tmp_path / "some", [_rect(1, 1, 1, 20, 20), _rect(2, 9, 1, 20, 20), _rect(3, 12, 1, 20, 20)])
    manifest = build(_cfg(ann), tmp_path / "out", workers=0, report=False)
    assert manifest["counts"]["notes/orphan_annotations"] == 2 and manifest["rows"] > 0

    ann = _write(tmp_path / "all", [_rect(1, 9, 1, 20, 20), _rect(2, 12, 1, 20, 20)])
    with pytest.raises(InputError, match=r"none of its 2 annotations points at a listed image "
                                         r"\(image_id 9, 12; image ids 1\)") as info:
        get_source("coco", str(ann)).scenes()
    assert "\n" not in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "build", "--source", f"coco={ann}", "-o", str(tmp_path / "none"), "--workers", "0"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "image_id" in err
    assert not (tmp_path / "none").exists()


def _palette_png() -> tuple[Image.Image, np.ndarray]:
    """A 4-colour indexed PNG and the RGB a viewer shows for it."""
    table = np.array([[200, 30, 30], [30, 180, 60], [40, 60, 220], [240, 230, 40]], np.uint8)
    idx = np.random.default_rng(3).integers(0, 4, (H, W)).astype(np.uint8)
    idx[20:40, 20:50] = 3
    im = Image.fromarray(idx, mode="P")
    im.putpalette(table.ravel().tolist())
    return im, table[idx]


def test_palette_png_is_read_in_its_colours(tmp_path: Path) -> None:
    pic, shown = _palette_png()
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20), _rect(2, 1, 2, 130, 40)], pixels=pic)
    src = get_source("coco", str(ann))
    scene = src.load(src.scenes()[0])
    assert np.array_equal(scene.rgb, shown)  # not the indices 0..3 as grey
    build(_cfg(ann), tmp_path / "out", workers=0, report=False)
    rows = list(read_rows(tmp_path / "out"))
    assert rows
    for r in rows[:5]:
        win = r["window"]
        tile = shown[win["row_off"]:win["row_off"] + win["height"], win["col_off"]:win["col_off"] + win["width"]]
        assert np.array_equal(read_rgb(r), tile)
    # the colour words of the attributes come from the colours, not from near-black indices
    (ship,) = [json.loads(r["attributes"]) for r in rows if r["category"] == "ship" and r["task"] == "interactive"]
    assert ship["colour"] == "yellow" and ship["brightness"] > 150  # table entry 3, index 3 as grey is black
    # and training sees the same colours (its tile cache reads each image once for all its tiles)
    from geoseg.unified.data import TileCache

    cache = TileCache(size=64)
    cache.fill(rows)
    for r in rows:
        assert np.array_equal(cache.get(r), cache._resize(read_rgb(r)))


def test_repeated_image_or_category_id_is_one_line(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "height": H, "width": W},
              {"id": 1, "file_name": "b.png", "height": H, "width": W}]
    ann = _write(tmp_path / "img", [_rect(1, 1, 1, 20, 20)], images=images)
    with pytest.raises(InputError, match=r"images\[1\] repeats the id 1 of images\[0\]") as info:
        get_source("coco", str(ann)).scenes()
    assert "\n" not in str(info.value)
    ann = _write(tmp_path / "cat", [_rect(1, 1, 1, 20, 20)], cats=[*CATS, {"id": 1, "name": "boat"}])
    with pytest.raises(InputError, match=r"categories\[2\] repeats the id 1 of categories\[0\]"):
        get_source("coco", str(ann)).scenes()


def test_categories_named_alike_are_one_class(tmp_path: Path) -> None:
    """Two ids named 'ship' (merged files): one class, so 'no ship' is never said next to a ship."""
    cats = [*CATS, {"id": 9, "name": "ship"}]
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20), _rect(2, 1, 9, 20, 60)], cats=cats)
    src = get_source("coco", str(ann))
    scene = src.load(src.scenes()[0])
    assert scene.classes == ["ship", "plane"]
    assert sorted(scene.instance_class.tolist()) == [0, 0]


def test_many_categories_with_a_crowd_region(tmp_path: Path) -> None:
    """A crowd region of the 300th category (LVIS-sized files): kept out of questions, not an overflow."""
    cats = [{"id": i, "name": f"thing {i}"} for i in range(1, 301)]
    crowd = _rect(2, 1, 300, 130, 40, iscrowd=1)
    ann = _write(tmp_path, [_rect(1, 1, 1, 20, 20), crowd], cats=cats)
    src = get_source("coco", str(ann))
    scene = src.load(src.scenes()[0])
    assert scene.notes["crowd_skipped"] == 1 and (scene.crowd[45, 140] == 299)
