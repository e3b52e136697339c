"""The Dubai path end to end on real regions: uniqueness, masks, tasks/levels, splits, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from geoseg.data import attributes as A
from geoseg.data import instances as I
from geoseg.data.dataset import ShardDataset, read_rows
from geoseg.data.engine import build
from geoseg.data.instructions import predicates as P
from geoseg.data.schema import SHARD_SCHEMA
from geoseg.data.sources import get_source
from geoseg.rle import rle_decode

from .conftest import SPLITS, dubai_config


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_schema_and_masks_decode_to_tile_size(dubai_build: Path) -> None:
    files = sorted(dubai_build.rglob("*.parquet"))
    assert files and not list(dubai_build.rglob("*.tmp"))
    for f in files:
        assert pq.read_schema(f).remove_metadata().equals(SHARD_SCHEMA.remove_metadata())
    rows = read_rows(dubai_build)
    assert len(rows) > 300
    assert len({r["sample_id"] for r in rows}) == len(rows)
    for r in rows[::7]:
        m = rle_decode(r["mask"])
        assert m.shape == (r["window"]["height"], r["window"]["width"])
        assert m.any() != r["empty_target"]


def test_tasks_and_levels_all_occur(dubai_build: Path) -> None:
    rows = read_rows(dubai_build, columns=["task", "level", "empty_target"])
    pairs = Counter((r["task"], r["level"]) for r in rows)
    for task in ("interactive", "referring", "reasoning"):
        for level in (1, 2, 3):
            assert pairs[(task, level)] > 0, (task, level, pairs)
    assert any(r["empty_target"] for r in rows)


def test_splits_do_not_share_regions(dubai_build: Path) -> None:
    rows = read_rows(dubai_build, columns=["split", "region"])
    by_split: dict[str, set[str]] = {}
    for r in rows:
        by_split.setdefault(r["split"], set()).add(r["region"])
    assert set(by_split) == {"train", "val", "test"}
    for split, regions in by_split.items():
        assert regions <= set(SPLITS[split])
    assert not (by_split["train"] & by_split["val"]) and not (by_split["train"] & by_split["test"])
    manifest = json.loads((dubai_build / "manifest.json").read_text())
    assert manifest["splits"]["test"] == ["dubai/tile_7"]


def test_referring_targets_are_unique_among_the_instance_set(dubai_dir: Path, dubai_build: Path) -> None:
    """Recompute each tile's instances from the source mask and re-check every expression."""
    rows = [r for r in read_rows(dubai_build, tasks=["referring"]) if not r["empty_target"]]
    assert rows
    src = get_source("dubai", str(dubai_dir), splits=SPLITS)
    scenes = {}
    checked = 0
    for r in rows:
        ref = next(x for x in src.scenes() if x.scene == r["scene"]) if r["scene"] not in scenes else None
        if ref is not None:
            scenes[r["scene"]] = src.load(ref)
        sc = scenes[r["scene"]]
        w = r["window"]
        sl = (slice(w["row_off"], w["row_off"] + w["height"]), slice(w["col_off"], w["col_off"] + w["width"]))
        inst = I.from_class_map(sc.label[sl], sc.classes)
        att = A.compute(inst, sc.rgb[sl])
        target = rle_decode(r["mask"])
        k = r["instance_id"]
        assert np.array_equal(inst.mask(k), target)
        assert sc.classes[int(inst.cls[k])] == r["category"]
        preds = json.loads(r["attributes"])["expression"]["predicates"]
        cls = int(inst.cls[k])
        idx = P.visible(inst, att, cls, 0.001)
        ok = np.ones(idx.size, dtype=bool)
        for p in preds:
            ok &= P.evaluate(p, inst, att, idx)
        assert idx[ok].tolist() == [k], (r["instruction"], idx[ok].tolist(), k)
        # level 1 only when the category alone is enough
        if r["level"] == 1:
            assert idx.size == 1
        checked += 1
    assert checked == len(rows)


def test_interactive_prompts_lie_inside_the_target(dubai_build: Path) -> None:
    rows = read_rows(dubai_build, tasks=["interactive"])
    for r in rows:
        m = rle_decode(r["mask"])
        p = json.loads(r["prompt"])
        if "points" in p:
            assert 1 <= len(p["points"]) <= 3
            for x, y in p["points"]:
                assert m[int(y), int(x)]
            assert r["level"] == (3 if len(p["points"]) == 1 else 2)
        else:
            x0, y0, x1, y1 = p["box"]
            ys, xs = np.nonzero(m)
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
            assert f"[{round(x0 / m.shape[1], 3):g}," in r["instruction"]


def test_no_target_rows_ask_for_an_absent_class(dubai_dir: Path, dubai_build: Path) -> None:
    rows = [r for r in read_rows(dubai_build) if r["empty_target"]]
    assert rows
    src = get_source("dubai", str(dubai_dir), splits=SPLITS)
    refs = {x.scene: x for x in src.scenes()}
    for r in rows[:20]:
        sc = src.load(refs[r["scene"]])
        w = r["window"]
        tile = sc.label[w["row_off"]:w["row_off"] + w["height"], w["col_off"]:w["col_off"] + w["width"]]
        assert not np.any(tile == sc.classes.index(r["category"]))
        assert r["instance_id"] == -1 and r["task"] in ("referring", "reasoning")


def test_same_seed_gives_identical_bytes(dubai_dir: Path, dubai_build: Path, tmp_path: Path) -> None:
    build(dubai_config(dubai_dir), tmp_path / "again", workers=0)
    assert _digest(tmp_path / "again") == _digest(dubai_build)
    build(dubai_config(dubai_dir, seed=1), tmp_path / "other", workers=0)
    assert _digest(tmp_path / "other") != _digest(dubai_build)


def test_dataset_decodes_windows_and_masks_lazily(dubai_dir: Path, dubai_build: Path) -> None:
    torch = pytest.importorskip("torch")
    ds = ShardDataset(dubai_build, split="train")
    assert len(ds) > 0 and all(r["split"] == "train" for r in ds.rows)
    item = ds[0]
    row = ds.rows[0]
    h, w = row["window"]["height"], row["window"]["width"]
    assert item["image"].shape == (3, h, w) and item["image"].dtype == torch.uint8
    assert item["mask"].shape == (h, w) and item["mask"].dtype == torch.bool
    from PIL import Image

    full = np.asarray(Image.open(row["image_path"]).convert("RGB")).astype(int)
    crop = full[row["window"]["row_off"]:row["window"]["row_off"] + h, row["window"]["col_off"]:row["window"]["col_off"] + w]
    assert np.abs(item["image"].permute(1, 2, 0).numpy().astype(int) - crop).mean() < 3  # same pixels (JPEG decoders)
    sized = ShardDataset(dubai_build, split="test", tasks=["interactive"], size=128)
    it = sized[0]
    assert it["image"].shape == (3, 128, 128) and it["mask"].shape == (128, 128)
    assert it["task"] == "interactive"


def test_dask_cluster_build_gives_the_same_bytes(dubai_dir: Path, dubai_build: Path, tmp_path: Path) -> None:
    """Local Dask workers or an existing scheduler, scenes finishing in any order: same bytes as in-process."""
    pytest.importorskip("distributed")
    build(dubai_config(dubai_dir), tmp_path / "dask", workers=2, max_in_flight=2)
    assert _digest(tmp_path / "dask") == _digest(dubai_build)
    from distributed import LocalCluster  # an existing cluster, reached by its address (--scheduler)

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        build(dubai_config(dubai_dir), tmp_path / "remote", scheduler=cluster.scheduler_address)
    assert _digest(tmp_path / "remote") == _digest(dubai_build)


def test_no_target_settings_set_their_count_and_wording(dubai_dir: Path, dubai_build: Path, tmp_path: Path) -> None:
    """More no-target rows per absent class, all worded at level 2 (or all at level 1) when asked."""
    base = [r for r in read_rows(dubai_build, columns=["empty_target", "level"]) if r["empty_target"]]
    many = {"no_target_ratio": 0.5, "no_target_per_absent": 6}
    build(dubai_config(dubai_dir, instructions={**many, "no_target_level2_share": 1.0}), tmp_path / "l2", workers=0)
    l2 = [r for r in read_rows(tmp_path / "l2", columns=["empty_target", "level"]) if r["empty_target"]]
    assert len(l2) > 2 * len(base)
    assert {r["level"] for r in l2} == {2}
    build(dubai_config(dubai_dir, instructions={**many, "no_target_level2_share": 0.0}), tmp_path / "l1", workers=0)
    l1 = [r for r in read_rows(tmp_path / "l1", columns=["empty_target", "level"]) if r["empty_target"]]
    assert {r["level"] for r in l1} == {1}


def test_regions_missing_from_the_split_map_are_held_out(dubai_dir: Path) -> None:
    src = get_source("dubai", str(dubai_dir), splits={"train": ["tile_1", "tile_2"]})
    assert src.split_of("tile_1") == "train"
    assert src.split_of("tile_6") == "test" and src.split_of("tile_7") == "test"
