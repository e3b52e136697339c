"""The evaluation subset used in docs/model_card.md, until the project's benchmark manifest lands.

Takes the benchmark pool built by ``geoseg data build --config configs/data/bench.yaml -o
data/bench`` (Dubai tile_7, Danish fields, ukis clouds: no region the model trained on) and
keeps every dk_fields and ukis row plus a seeded sample of ``PER_TASK`` Dubai rows per task,
so the three tasks weigh the same and the run takes minutes on a CPU.

Usage: ``python benchmarks/model_bench_subset.py data/bench runs/bench_subset/test.parquet [400]``
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

TASKS = ("interactive", "referring", "reasoning")


def main() -> None:
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    per_task = int(sys.argv[3]) if len(sys.argv) > 3 else 400
    table = pa.concat_tables([pq.read_table(p) for p in sorted(src.rglob("*.parquet"))])
    rows = table.select(["source", "task"]).to_pylist()
    keep = [i for i, r in enumerate(rows) if r["source"] != "dubai"]
    rng = random.Random(0)
    for task in TASKS:
        idx = [i for i, r in enumerate(rows) if r["source"] == "dubai" and r["task"] == task]
        keep += rng.sample(idx, min(per_task, len(idx)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp")
    pq.write_table(table.take(sorted(keep)), tmp)
    tmp.replace(dst)
    print(f"{len(keep)} rows -> {dst}")


if __name__ == "__main__":
    main()
