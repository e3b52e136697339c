"""``benchmarks/model_ablations.py --checkpoints``: trained checkpoints scored on all val rows, paired."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import load_module

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "model_ablations.py"


def _script():
    return load_module("model_ablations", SCRIPT)


def test_checkpoint_table_pairs_each_checkpoint_with_the_first_at_its_tuned_thresholds(
        trained_run, text_cache_path, capsys):
    from geoseg.unified.train import tune_decision

    best = trained_run["out"] / "best.pt"
    _script().checkpoint_table([best, best], trained_run["cfg"].train.shards, str(text_cache_path), threads=2)
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith(f"| {best} |")]
    assert len(lines) == 2
    first, second = ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)
    assert first[5] == "–"
    # the same weights against themselves: every paired difference and its interval is zero
    assert second[5] == " / ".join(["+0.0 [+0.0, +0.0]"] * 3)
    # tuned figures: the thresholds `--tune-decision` would store, on the same rows
    _, report = tune_decision(trained_run["cfg"], best, device="cpu", text_cache=str(text_cache_path))
    tuned = [float(x) for x in first[3].split(" / ")]
    for value, task in zip(tuned, ("interactive", "referring", "reasoning"), strict=True):
        assert value == pytest.approx(report[task]["gIoU@threshold"], abs=0.051)
    # the per-category table: one row per category of the rows whose target exists, a column per checkpoint,
    # each the mean tuned IoU of that category's rows
    import numpy as np

    from geoseg.unified.decision import record_ious, tune_with_presence
    from geoseg.unified.train import val_records

    records, _ = val_records(trained_run["cfg"], best, "cpu", str(text_cache_path))
    ious = record_ious(records, tune_with_presence(records)[0])
    cat_rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in out.split("by category")[1].splitlines()
                if ln.startswith("| ") and not ln.startswith("| category")]
    assert len(cat_rows) >= 2
    for name, n, a, b in cat_rows:
        rows = [i for i, r in enumerate(records) if r["category"] == name and not r["empty"]]
        assert int(n) == len(rows) > 0 and a == b  # the same weights twice
        assert float(a) == pytest.approx(100 * float(np.mean(ious[rows])), abs=0.051)
    assert sum(int(r[1]) for r in cat_rows) == sum(not r["empty"] for r in records)

def test_checkpoint_table_says_when_a_checkpoint_is_missing(trained_run, text_cache_path, capsys, tmp_path):
    best = trained_run["out"] / "best.pt"
    _script().checkpoint_table([best, tmp_path / "nowhere.pt"], trained_run["cfg"].train.shards,
                               str(text_cache_path), threads=2)
    assert f"not run ({tmp_path / 'nowhere.pt'} missing)" in capsys.readouterr().out
