"""Several prompts per image pass (``train.prompts_per_image``): batches grouped by tile, one augmentation
per group applied alike to the image and every target on it, bad settings refused."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from geoseg.errors import InputError
from geoseg.unified.config import load_config
from geoseg.unified.data import (
    TileCache,
    collate,
    draw_augmentation,
    load_rows,
    mask_target,
    orientation_free,
    tile_key,
)
from geoseg.unified.train import TaskSampler

from .conftest import tiny_config

MIX = {"interactive": 0.4, "referring": 0.4, "reasoning": 0.2}


def _text_cache(rows: list[dict]) -> dict[str, torch.Tensor]:
    from geoseg.unified.data import row_text

    return {row_text(r): torch.ones(3, 8) for r in rows}


def test_grouped_batches_hold_runs_of_one_tile_with_the_task_mix(tiny_shard):
    rows = load_rows(tiny_shard, "train")
    sampler = TaskSampler(rows, seed=0)
    picks = []
    for _ in range(200):
        batch = sampler.batch(16, MIX, prompts_per_image=4)
        assert len(batch) == 16
        for i in range(0, 16, 4):
            assert len({tile_key(r) for r in batch[i:i + 4]}) == 1
        assert len({tile_key(r) for r in batch}) > 1  # a batch spans several tiles
        picks += batch
    share = Counter(r["task"] for r in picks)
    for task, w in MIX.items():
        assert share[task] / len(picks) == pytest.approx(w, abs=0.04), share


def test_a_group_is_flippable_when_its_first_instruction_is(tiny_shard):
    base = load_rows(tiny_shard, "train")
    tile = tile_key(base[0])
    same = [r for r in base if tile_key(r) == tile]
    oriented = [dict(r, instruction=r["instruction"] + " at the top left", sample_id=r["sample_id"] + "-tl")
                for r in same if r["task"] != "interactive"]
    rows = same + oriented
    assert any(not orientation_free(r) for r in rows)
    sampler = TaskSampler(rows, seed=3)
    mixed = 0
    for _ in range(300):
        group = sampler.batch(4, MIX, prompts_per_image=4)
        if orientation_free(group[0]):
            assert all(orientation_free(r) for r in group)
        else:
            mixed += any(orientation_free(r) for r in group[1:])
    assert mixed > 0  # a group led by a position word may hold any rows (it is simply not flipped)


def test_collate_stacks_each_tile_once_and_augments_image_and_targets_alike(tiny_shard):
    rows = [r for r in load_rows(tiny_shard, "train") if not r["empty_target"]]
    by_tile: dict[tuple, list[dict]] = {}
    for r in rows:
        by_tile.setdefault(tile_key(r), []).append(r)
    groups = [g[:2] for g in by_tile.values() if len(g) >= 2][:6]
    flat = [r for g in groups for r in g]
    tiles = TileCache(64)
    mean, std = torch.zeros(3), torch.ones(3)
    plain = collate(flat, tiles, _text_cache(flat), ("water", "building", "vegetation"), mean, std,
                    prompts_per_image=2)
    assert plain["image"].shape == (len(groups), 3, 64, 64)
    assert plain["image_of"].tolist() == [i // 2 for i in range(len(flat))]
    assert plain["target"].shape[0] == len(flat)
    flipped = 0
    for seed in range(4):
        rng = np.random.default_rng(seed)
        batch = collate(flat, tiles, _text_cache(flat), ("water", "building", "vegetation"), mean, std,
                        rng=rng, prompts_per_image=2)
        replay = np.random.default_rng(seed)
        for gi, g in enumerate(groups):
            aug = draw_augmentation((64, 64), replay, all(orientation_free(r) for r in g))
            img = batch["image"][gi].permute(1, 2, 0).numpy()
            src = tiles.get(g[0]).astype(np.float32)
            for j, r in enumerate(g):
                t = batch["target"][gi * 2 + j, 0].numpy() > 0.5
                before = src[mask_target(r, 64) > 0.5].mean(0)
                # the image and this target moved together: the pixels under the augmented mask are the
                # target's own pixels with the group's brightness/contrast jitter
                expect = np.clip(before * aug.gain + aug.bias, 0, 255)
                assert np.abs(img[t].mean(0) - expect).max() < 6.0, (seed, gi, j)
                flipped += not np.array_equal(t, mask_target(r, 64) > 0.5)
    assert flipped > 0  # some groups were flipped, so the check above saw geometry move


def test_collate_refuses_groups_that_mix_tiles(tiny_shard):
    rows = load_rows(tiny_shard, "train")
    a = rows[0]
    b = next(r for r in rows if tile_key(r) != tile_key(a))
    with pytest.raises(ValueError, match="different tiles"):
        collate([a, b], TileCache(64), _text_cache([a, b]), ("water",), torch.zeros(3), torch.ones(3),
                prompts_per_image=2)
    with pytest.raises(ValueError, match="groups of 2"):
        collate([a], TileCache(64), _text_cache([a]), ("water",), torch.zeros(3), torch.ones(3),
                prompts_per_image=2)


def test_prompts_per_image_that_does_not_divide_the_batch_is_a_clear_error(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: bad\nmodel: {arch: unigeoseg_tiny}\ntrain: {batch_size: 16, prompts_per_image: 3}\n")
    with pytest.raises(InputError, match="prompts_per_image"):
        load_config(cfg)


def test_training_with_four_prompts_per_image_learns(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path, prompts_per_image=4)
    summary = train(cfg, device="cpu", text_cache=str(text_cache_path))
    hist = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert summary["steps"] == 36 and len(hist) == 3
    assert hist[-1]["train_loss"] < 0.85 * hist[0]["train_loss"], hist
