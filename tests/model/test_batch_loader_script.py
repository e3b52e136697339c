"""``benchmarks/batch_loader.py``: rows per second of the real batch builder, in the loop and in workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from .conftest import load_module, tiny_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "batch_loader.py"


def test_prints_a_rate_per_worker_count(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.data import load_rows, row_text, training_tiles

    script = load_module("batch_loader", SCRIPT)
    cfg = tiny_config(tiny_shard, tmp_path)
    rows = load_rows(tiny_shard, "train")
    tiles = training_tiles(rows, cfg.model.input_size)
    texts = {row_text(r): torch.ones(3, 384) for r in rows}
    for workers in (0, 1):
        assert script.rows_per_second(cfg, rows, tiles, texts, workers, batches=3) > 0
    # the command line, on a config file of the tiny run
    (tmp_path / "tiny.yaml").write_text(cfg.to_yaml())
    out = subprocess.run([sys.executable, str(SCRIPT), "--config", str(tmp_path / "tiny.yaml"), "--workers", "0", "1",
                          "--batches", "2", "--text-cache", str(text_cache_path)],
                         capture_output=True, text=True, check=True).stdout
    lines = [x for x in out.splitlines() if x.startswith("| ") and x[2].isdigit()]
    assert [x.split("|")[1].strip() for x in lines] == ["0", "1"]
    assert all(float(x.split("|")[2]) > 0 for x in lines)
