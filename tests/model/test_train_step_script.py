"""``benchmarks/train_step.py``: times the real training step on a batch shaped like collate's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .conftest import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_step.py"


@pytest.fixture(scope="module")
def script():
    return load_module("train_step", SCRIPT)


def test_synthetic_batch_has_collates_keys_and_shapes(script, tiny_shard):
    from geoseg.unified.data import TileCache, collate, load_rows, row_text, tile_key

    rows = load_rows(tiny_shard, "train")
    first = rows[0]
    same = [r for r in rows if tile_key(r) == tile_key(first)][:2]
    real = collate(same, TileCache(64), {row_text(r): torch.ones(3, 384) for r in same}, ("water",),
                   torch.zeros(3), torch.ones(3), prompts_per_image=2)
    fake = script.synthetic_batch(2, 2, 64, 1)
    assert set(fake) == set(real)
    for key in real:
        if key not in ("tokens", "token_mask"):  # token count varies with the instruction
            assert fake[key].shape == real[key].shape and fake[key].dtype == real[key].dtype, key


def test_step_seconds_times_a_step_and_the_encoders_share(script, tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("name: tiny\nmodel: {arch: unigeoseg_tiny, channels: [8, 16, 24, 32], depths: [1, 1, 1, 1], "
                   "fpn_dim: 16, query_dim: 32, input_size: 64, semantic_aux: true, class_memory: true}\n"
                   "train: {batch_size: 4}\n")
    for k in (1, 2):
        step, encoder = script.step_seconds(str(cfg), k, batch=4, repeats=1)
        assert 0 < encoder < step
