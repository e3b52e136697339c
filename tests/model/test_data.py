"""Training-data plumbing: tiles decoded once, geometry follows augmentation, orientation words block flips."""

from __future__ import annotations

import numpy as np

from geoseg.unified.data import (
    TileCache,
    augment,
    geometry,
    load_rows,
    mask_target,
    orientation_free,
    row_text,
)


def test_rows_tiles_and_canonical_text(tiny_shard):
    rows = load_rows(tiny_shard, "train")
    assert rows and {r["split"] for r in rows} == {"train"}
    cache = TileCache(64)
    cache.fill(rows)
    assert len(cache.tiles) == len({r["image_path"] for r in rows})
    assert cache.get(rows[0]).shape == (64, 64, 3)
    inter = next(r for r in rows if r["task"] == "interactive")
    assert "#" in row_text(inter) and not any(ch.isdigit() for ch in row_text(inter))
    ref = next(r for r in rows if r["task"] == "referring")
    assert row_text(ref) == ref["instruction"]


def test_augmented_geometry_stays_on_the_target(tiny_shard):
    rows = [r for r in load_rows(tiny_shard, "train") if r["task"] == "interactive"]
    cache = TileCache(64)
    rng = np.random.default_rng(0)
    for r in rows[:12]:
        img, mask, geo = augment(cache.get(r), mask_target(r, 64), geometry(r), rng, geometric=True)
        pts, labels, box, valid = geo
        ys, xs = np.nonzero(mask > 0.5)
        if valid:
            assert box[0] < box[2] and box[1] < box[3]
            assert xs.min() >= box[0] * 64 - 1.5 and xs.max() <= box[2] * 64 + 1.5
            assert ys.min() >= box[1] * 64 - 1.5 and ys.max() <= box[3] * 64 + 1.5
        for (x, y), lab in zip(pts, labels):
            if lab == 1:
                cy, cx = min(int(y * 64), 63), min(int(x * 64), 63)
                assert mask[max(cy - 1, 0): cy + 2, max(cx - 1, 0): cx + 2].max() > 0


def test_position_words_block_geometric_augmentation():
    assert orientation_free({"task": "referring", "instruction": "the building"})
    assert not orientation_free({"task": "referring", "instruction": "the building at the top left"})
    assert not orientation_free({"task": "reasoning", "instruction": "Which water lies north of the road?"})
    assert orientation_free({"task": "interactive", "instruction": "the point at the left [0.1, 0.2]"})
