"""The ablation table of the unified model, from the runs' own validation logs.

Each ablation is one ``geoseg train --config configs/ablation_NAME.yaml`` run (equal step
budget, same data, same seed); this script reads every run's ``history.jsonl`` and prints a
Markdown table of the last epoch's validation metrics (gIoU per task, mean task gIoU,
no-target accuracy) with the difference to ``ablation_baseline``.

Usage: ``python benchmarks/model_ablations.py [RUNS_DIR]`` (default ``runs``).

``--full-val CONFIG_DIR`` (e.g. ``configs/ablation_1200``, one YAML per variant, the reference
named ``baseline.yaml``) re-scores every variant's final weights (``last.pt``: the equal
budget) on *all* validation rows instead of the per-epoch subset, at fixed (0.5) and at its own
tuned thresholds, with the paired per-row difference to the reference and a 95 % bootstrap
interval. Why: on the 160 rows per task of the per-epoch subset, gaps under about 3 points
are noise; the paired interval on all rows says which gaps are not due to the rows drawn. It
does not cover training noise: more seeds of the reference (``baseline_seed1.yaml``, ``baseline_seed2.yaml``) show
how far two runs of one model differ.

``--checkpoints A.pt B.pt ...`` scores any trained checkpoints (a run's ``best.pt``, an exported
bundle such as the shipped ``src/geoseg/weights/unigeoseg_default.pt``) the same way on all val
rows of ``--val-shards`` (default ``data/shards/dubai``), paired against the first: how a
candidate network compares with the shipped one on validation before it is benchmarked. It
scores the network's answers (decision thresholds only: no instance selector, no re-cut).
Both modes end with a per-category table (tuned gIoU over the rows whose target exists), since
task means hide a category a change helps or hurts — roads, the weakest, are 24 of the
validation region's rows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROWS = [("ablation_baseline", "full model (TATE + latent memory + progressive schedule)"),
        ("ablation_baseline_seed1", "full model, another training seed (how far two runs of one model differ)"),
        ("ablation_baseline_seed2", "full model, a third training seed"),
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


def history_table(runs: Path) -> None:
    """The table of the runs' last per-epoch validation records."""
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


def _per_task(records: list[dict], ious: np.ndarray) -> list[float]:
    """gIoU (%) of each task in ``TASKS`` from per-record IoUs."""
    return [100 * float(ious[[r["task"] == t for r in records]].mean()) for t in TASKS]


def _full_val_rows(entries: list[tuple[str, object, Path, object]], text_cache: str | None, weights: str = "") -> None:
    """Print one table row per ``(label, config, checkpoint, steps)`` entry, paired against the first.

    Each checkpoint predicts all val rows of its config's shards once; it is scored at fixed (0.5)
    thresholds and at presence and mask thresholds tuned on the same rows. ``weights`` says which
    weights the entries are (printed under the table).
    """
    from geoseg.bench.compare import paired_difference
    from geoseg.unified.decision import Decision, record_ious, tune_with_presence
    from geoseg.unified.train import val_records

    print("| variant | steps | gIoU @0.5 (int / ref / rea) | tuned gIoU (int / ref / rea) | tuned mean "
          f"| Δ vs {entries[0][0]}, paired [95 % CI] (int / ref / rea) | no-target acc (tuned) |")
    print("|---|---:|---|---|---:|---|---:|")
    base_rows, where = None, ""
    by_category: list[tuple[str, dict[str, float]]] = []  # per scored checkpoint (labels may repeat)
    counts: dict[str, int] = {}
    for label, cfg, ck, step in entries:
        if not ck.is_file():
            print(f"| {label} | not run ({ck} missing) | | | | | |")
            continue
        records, where = val_records(cfg, ck, "cpu", text_cache, desc=label)
        fixed = record_ious(records, Decision())
        decision, _ = tune_with_presence(records)
        tuned = record_ious(records, decision)
        rows = {r["sample_id"]: (r["task"], float(v)) for r, v in zip(records, tuned, strict=True)}
        g_fixed, g_tuned = _per_task(records, fixed), _per_task(records, tuned)
        if base_rows is None:
            base_rows, delta = rows, "–"
        else:
            pd = paired_difference(base_rows, rows)
            delta = " / ".join(f"{100 * pd[t]['diff']:+.1f} [{100 * pd[t]['low']:+.1f}, {100 * pd[t]['high']:+.1f}]"
                               for t in TASKS)
        empties = [bool(r["empty"]) for r in records]
        nt = 100 * float(np.mean(tuned[empties] == 1.0)) if any(empties) else float("nan")
        cat_giou, counts = _per_category(records, tuned)
        by_category.append((label, cat_giou))
        print(f"| {label} | {step} | {' / '.join(f'{x:.1f}' for x in g_fixed)} | "
              f"{' / '.join(f'{x:.1f}' for x in g_tuned)} | {np.mean(g_tuned):.1f} | {delta} | {nt:.1f} |")
    if where:
        print(f"\nvalidation: all {where}{weights}; tuned = each model's own presence and mask thresholds tuned on "
              "these rows; empty-target rule unigeoseg")
        print("\nby category (rows whose target exists, all tasks, tuned gIoU):\n")
        print("| category | rows | " + " | ".join(label for label, _ in by_category) + " |")
        print("|---|---:|" + "---:|" * len(by_category))
        for cat in sorted(counts):
            print(f"| {cat} | {counts[cat]} | " + " | ".join(f"{g[cat]:.1f}" for _, g in by_category) + " |")


def _per_category(records: list[dict], ious: np.ndarray) -> tuple[dict[str, float], dict[str, int]]:
    """gIoU (%) and row count per category over the rows whose target exists (roads, buildings, ...)."""
    cats = np.array([r["category"] for r in records])
    target = np.array([not r["empty"] for r in records])
    names = sorted(set(cats[target]))
    return ({c: 100 * float(ious[target & (cats == c)].mean()) for c in names},
            {c: int((target & (cats == c)).sum()) for c in names})


def full_val_table(config_dir: Path, text_cache: str | None, threads: int = 0) -> None:
    """Every variant's ``last.pt`` (the equal budget) on all val rows, paired against ``baseline.yaml``'s run."""
    from geoseg.unified.config import load_config

    order = [name for name, _ in ROWS]
    configs = sorted(config_dir.glob("*.yaml"), key=lambda f: (f.stem != "baseline", (
        order.index(f"ablation_{f.stem}") if f"ablation_{f.stem}" in order else len(order)), f.stem))
    if not configs or configs[0].stem != "baseline":
        raise SystemExit(f"error: {config_dir} has no baseline.yaml; put the reference variant's config there")
    labels = dict(ROWS)
    entries = []
    for f in configs:
        cfg = load_config(f)
        if threads:
            cfg.train.threads = threads
        run = Path(cfg.train.out_dir)
        entries.append((labels.get(cfg.name, cfg.name), cfg, run / "last.pt", (last_entry(run) or {}).get("step", "?")))
    _full_val_rows(entries, text_cache, ", final weights (last.pt)")


def checkpoint_table(checkpoints: list[Path], val_shards: str, text_cache: str | None, threads: int = 0) -> None:
    """Trained checkpoints (any run's ``best.pt``/``last.pt`` or exported bundle) on all val rows of
    ``val_shards``, paired against the first: how a candidate model compares with the shipped one
    on validation, before it is ever benchmarked."""
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.config import ExperimentConfig

    cfg = ExperimentConfig()
    cfg.train.shards, cfg.train.threads = val_shards, threads
    entries = []
    for ck in checkpoints:
        step = read_checkpoint(ck).get("meta", {}).get("step", "?") if ck.is_file() else "?"
        entries.append((str(ck), cfg, ck, step))
    _full_val_rows(entries, text_cache)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="?", default="runs", help="folder holding the ablation runs (history mode)")
    ap.add_argument("--full-val", metavar="CONFIG_DIR", help="re-score each config's last.pt on all val rows")
    ap.add_argument("--text-cache", help="instruction-embedding cache shared with training")
    ap.add_argument("--checkpoints", nargs="+", type=Path, metavar="CKPT",
                    help="score these checkpoints on all val rows, paired against the first")
    ap.add_argument("--val-shards", default="data/shards/dubai", help="shards whose val split --checkpoints uses")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads for --full-val / --checkpoints (0 = the configs' own / torch default)")
    args = ap.parse_args()
    if args.checkpoints:
        checkpoint_table(args.checkpoints, args.val_shards, args.text_cache, args.threads)
    elif args.full_val:
        full_val_table(Path(args.full_val), args.text_cache, args.threads)
    else:
        history_table(Path(args.runs))


if __name__ == "__main__":
    main()
