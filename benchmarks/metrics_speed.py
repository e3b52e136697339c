"""How long scoring 10,000 samples takes, end to end and by stage.

End to end = what ``geoseg bench run --rescore-only`` does after reading the benchmark:
load the prediction cache (``predictions.jsonl``), count I/U/|P|/|G| of every sample
against its target (RLE targets as in shards and the benchmark split: counted on the runs),
aggregate all figures under the three empty-target rules with every breakdown.

Target (issue 4): under 10 s on the project machine (2 cores). Prints the figures.
Run: ``PYTHONPATH=src python benchmarks/metrics_speed.py [--n 10000] [--size 512]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from geoseg.bench.metrics import Counts, evaluate, mask_counts, rle_counts
from geoseg.bench.runner import PredictionCache, metrics_of, score
from geoseg.bench.sample import BenchSample
from geoseg.prompts import Prompt
from geoseg.rle import rle_decode, rle_encode


def make_pairs(n: int, size: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """Seeded (prediction, target) RLE pairs: shifted rectangles, ~5 % empty targets."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(n):
        g = np.zeros((size, size), bool)
        if rng.random() > 0.05:
            r0, c0 = rng.integers(0, size // 2, 2)
            hh, ww = rng.integers(4, size // 2, 2)
            g[r0:r0 + hh, c0:c0 + ww] = True
        p = np.roll(g, (int(rng.integers(-8, 9)), int(rng.integers(-8, 9))), axis=(0, 1))
        pairs.append((rle_encode(p), rle_encode(g)))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    pairs = make_pairs(args.n, args.size)
    tasks = np.array(["interactive", "referring", "reasoning"], object)[np.arange(args.n) % 3]
    levels = np.array(["1", "2", "3"], object)[(np.arange(args.n) // 3) % 3]
    cats = np.array([f"class{k}" for k in range(100)], object)[np.arange(args.n) % 100]

    t0 = time.perf_counter()
    cols = np.zeros((4, args.n), np.int64)
    for i, (p, g) in enumerate(pairs):
        cols[:, i] = rle_counts(p, g)
    t1 = time.perf_counter()
    t_counts = t1 - t0
    n_dense = min(args.n, 1000)
    td = time.perf_counter()
    for i, (p, g) in enumerate(pairs[:n_dense]):
        assert tuple(int(v) for v in mask_counts(rle_decode(p), rle_decode(g))) == tuple(cols[:, i])
    td = (time.perf_counter() - td) / n_dense
    t1 = time.perf_counter()
    c = Counts(*cols, task=tasks, level=levels, category=cats)
    results = {rule: evaluate(c, rule) for rule in ("unigeoseg", "zero", "skip")}
    t2 = time.perf_counter()
    print(f"samples: {args.n} at {args.size}x{args.size}")
    print(f"per-sample counts on RLE: {t_counts:.2f} s ({1e6 * t_counts / args.n:.0f} us/sample)")
    print(f"(dense path, decode + numpy counts, checked equal on {n_dense}: {1e6 * td:.0f} us/sample)")
    print(f"aggregation (3 rules x overall/task/level/100 categories, incl. building Counts): {t2 - t1:.3f} s")
    print(f"total: {t_counts + t2 - t1:.2f} s (target < 10 s)")
    print(f"gIoU (unigeoseg) = {100 * results['unigeoseg']['overall']['gIoU']:.2f}")
    e2e = end_to_end(pairs, tasks, levels, cats)
    print(f"end to end (cache load + runner.score + metrics under 3 rules): {e2e:.2f} s for {args.n} samples "
          "(target < 10 s)")


def end_to_end(pairs, tasks, levels, cats) -> float:
    """Seconds for the runner's re-scoring of ``pairs`` from a real prediction cache file."""
    def never():  # RLE targets are never decoded
        raise AssertionError("decoded")

    samples = [BenchSample(sample_id=f"s{i}", task=str(tasks[i]), prompt=Prompt(text="x", task="referring"),
                           image_key=f"img{i // 10}", load_image=never, load_mask=never, level=int(levels[i]),
                           category=str(cats[i]), mask_rle=g) for i, (_, g) in enumerate(pairs)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        path.write_text("".join(json.dumps({"sample_id": f"s{i}", "prompt_digest": "-", "rle": p, "score": 1.0,
                                            "seconds": 0.0}) + "\n" for i, (p, _) in enumerate(pairs)))
        t0 = time.perf_counter()
        cache = PredictionCache(path)
        rows = score(samples, cache)
        for rule in ("unigeoseg", "zero", "skip"):
            metrics_of(rows, rule, {})
        return time.perf_counter() - t0


if __name__ == "__main__":
    main()
