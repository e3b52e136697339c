"""The ablation table of the unified model, from the runs' own validation logs.

Each ablation is one ``geoseg train --config configs/ablation_NAME.yaml`` run (equal step
budget, same data, same seed); this script reads every run's ``history.jsonl`` and prints a
Markdown table of the last epoch's validation metrics (gIoU per task, mean task gIoU,
no-target accuracy) with the difference to ``ablation_baseline``.

Usage: ``python benchmarks/model_ablations.py [RUNS_DIR]`` (default ``runs``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = [("ablation_baseline", "full model (TATE + latent memory + progressive schedule)"),
        ("ablation_no_tate", "without TATE (masked mean pooling for every task)"),
        ("ablation_no_memory", "without the latent knowledge memory"),
        ("ablation_no_progressive", "without the progressive schedule (uniform task mix)"),
        ("ablation_classwise_memory", "with GeoPix's class-wise memory")]
TASKS = ("interactive", "referring", "reasoning")


def last_entry(run: Path) -> dict | None:
    """The last epoch's record of a run, or None when it has not finished an epoch."""
    hist = run / "history.jsonl"
    if not hist.is_file():
        return None
    lines = [ln for ln in hist.read_text().splitlines() if ln.strip()]
    return json.loads(lines[-1]) if lines else None


def no_target(val: dict) -> float | None:
    """No-target accuracy over all tasks (None when the validation subset held no empty target)."""
    return val.get("all", {}).get("no_target_acc")


def main() -> None:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs")
    base = last_entry(runs / "ablation_baseline")
    base_mean = None
    print("| variant | steps | min | interactive gIoU | referring gIoU | reasoning gIoU | mean | Δ mean | no-target acc |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, label in ROWS:
        e = last_entry(runs / name)
        if e is None:
            print(f"| {label} | not run | | | | | | | |")
            continue
        val = e["val"]
        g = [val.get(t, {}).get("gIoU") for t in TASKS]
        mean = sum(x for x in g if x is not None) / max(1, sum(x is not None for x in g))
        if name == "ablation_baseline":
            base_mean = mean
        delta = "–" if base_mean is None or name == "ablation_baseline" else f"{mean - base_mean:+.1f}"
        nt = no_target(val)
        cells = " | ".join("–" if x is None else f"{x:.1f}" for x in g)
        print(f"| {label} | {e['step']} | {e['minutes']:.0f} | {cells} | {mean:.1f} | {delta} | "
              f"{'–' if nt is None else f'{nt:.1f}'} |")
    if base is not None:
        print(f"\nvalidation: {base['val'].get('all', {}).get('n', '?')} task-balanced rows of the val split "
              "(Dubai tile_6), empty-target rule unigeoseg")


if __name__ == "__main__":
    main()
