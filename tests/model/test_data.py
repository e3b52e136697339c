"""Training-data plumbing: tiles decoded once, geometry follows augmentation, orientation words block flips."""

from __future__ import annotations

import warnings

import numpy as np

from geoseg.unified.data import (
    TileCache,
    augment,
    cast_shadow,
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


def test_tiles_of_one_plain_png_are_cut_from_one_read_without_georeference_warnings(tmp_path):
    from PIL import Image
    from rasterio.errors import NotGeoreferencedWarning

    from geoseg.data.imagery import raster_shape

    rgb = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    path = str(tmp_path / "scene.png")
    Image.fromarray(rgb).save(path)
    rows = [{"image_path": path, "image_key": "", "bands": [1, 2, 3], "stretch": [],
             "window": {"col_off": c, "row_off": 8, "width": 32, "height": 32}} for c in (0, 40)]
    cache = TileCache(32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert raster_shape(path) == (48, 80)
        cache.fill(rows)
    # a JPEG/PNG source has no georeference by design: training logs must not fill with warnings about it
    assert not [w for w in caught if issubclass(w.category, NotGeoreferencedWarning)]
    assert len(cache.tiles) == 2
    for r, c in zip(rows, (0, 40)):
        assert np.array_equal(cache.get(r), rgb[8:40, c:c + 32])


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


def test_cast_shadow_darkens_one_region_and_keeps_labels(tiny_shard):
    r = next(r for r in load_rows(tiny_shard, "train") if r["task"] == "referring")
    img = np.full((64, 64, 3), 200.0, np.float32)
    out = cast_shadow(img, np.random.default_rng(3))
    dark = out[..., 0] < 199
    assert 0.005 < dark.mean() < 0.5                  # one region, not the whole tile
    assert (out <= img + 1e-4).all()                  # only darkens
    assert out[..., 0].min() < 0.65 * 200             # at least 35 % darker at its core
    core = out[..., 0] == out[..., 0].min()
    assert (out[core][:, 2] > out[core][:, 0]).all()  # skylight: blue dimmed less than red
    # through augment: same flips and jitter as without the shadow, the mask untouched
    cache = TileCache(64)
    base = cache.get(r)
    mask = mask_target(r, 64)
    a = augment(base, mask, geometry(r), np.random.default_rng(5), geometric=False, shadow=0.0)
    b = augment(base, mask, geometry(r), np.random.default_rng(5), geometric=False, shadow=1.0)
    assert np.array_equal(a[1], b[1]) and (b[0] <= a[0] + 1e-4).all() and (b[0] < a[0] - 1).any()
