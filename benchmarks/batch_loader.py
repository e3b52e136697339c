"""How fast training batches are built, by number of worker processes (``train.num_workers``).

Why: a GPU steps the unified model far faster than one process decodes masks and augments tiles,
so a GPU run is only as fast as its batch builders. This prints rows per second for each worker
count on the run's real rows, tiles and instruction embeddings (a pack's config works too), so
``num_workers`` can be sized against the cores of the machine that will train.

Usage: ``python benchmarks/batch_loader.py [--config configs/unigeoseg_gpu.yaml] [--workers 0 1 2]
[--batches 20] [--text-cache runs/text_cache.pt]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from geoseg.unified.config import load_config
from geoseg.unified.data import load_rows, row_text, training_tiles
from geoseg.unified.loader import BatchStream
from geoseg.unified.text_cache import encode_texts
from geoseg.unified.train import TaskSampler, task_weights


def rows_per_second(cfg, rows, tiles, texts, workers: int, batches: int) -> float:
    """Rows per second over ``batches`` batches after one warm-up batch (worker start-up excluded)."""
    tc, mc = cfg.train, cfg.model
    sampler = TaskSampler(rows, tc.seed, tc.no_target_share)
    stream = BatchStream(rows, lambda: sampler.batch(tc.batch_size, task_weights(tc, 0.5), tc.prompts_per_image),
                         tiles, texts, mc.classes, torch.zeros(3), torch.ones(3), tc.augment, tc.shadow_aug,
                         tc.prompts_per_image, np.random.default_rng(tc.seed), num_workers=workers, seed=tc.seed)
    try:
        stream.next()
        t0 = time.perf_counter()
        for _ in range(batches):
            stream.next()
        return batches * tc.batch_size / (time.perf_counter() - t0)
    finally:
        stream.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="configs/unigeoseg_gpu.yaml")
    ap.add_argument("--workers", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--batches", type=int, default=20, help="timed batches per worker count")
    ap.add_argument("--text-cache", default="runs/text_cache.pt")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(args.config)
    tc, mc = cfg.train, cfg.model
    rows = load_rows(tc.shards, "train", path_map=tc.image_path_map)
    tiles = training_tiles(rows, mc.input_size, tc.tile_store)
    texts = encode_texts([row_text(r) for r in rows], Path(args.text_cache), None, mc.max_tokens)
    print(f"{cfg.name}: {len(rows)} train rows, batches of {tc.batch_size} rows ({tc.prompts_per_image} per tile), "
          f"{mc.input_size}-px tiles")
    print("| workers | rows/s | ms per row |\n|---:|---:|---:|")
    for w in args.workers:
        r = rows_per_second(cfg, rows, tiles, texts, w, args.batches)
        print(f"| {w} | {r:.0f} | {1000 / r:.2f} |")


if __name__ == "__main__":
    main()
