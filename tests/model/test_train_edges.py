"""geoseg train at the edges of a research workflow: a build without a validation split, exporting a run
that has not finished an epoch, resuming a run that already finished."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from .conftest import _load_data_module, run_quiet_cli, stop_and_resume, tiny_config


@pytest.fixture(scope="module")
def no_val_shard(tmp_path_factory) -> Path:
    """A build whose split has train rows only (a val split of 0 scenes)."""
    return _load_data_module().write_shard(tmp_path_factory.mktemp("noval"), n_train=4, n_val=0, seed=0)


def test_a_run_without_val_rows_keeps_a_best_checkpoint(no_val_shard, text_cache_path, tmp_path):
    """Without val rows an epoch scores minus its train loss; best.pt started from a score of -1, so a run
    whose loss stayed above 1 never wrote one (and --export then had nothing to export)."""
    from geoseg.unified.checkpoint import read_checkpoint
    from geoseg.unified.train import export_checkpoint, train

    summary = train(tiny_config(no_val_shard, tmp_path / "run", epochs=2, steps_per_epoch=2), device="cpu",
                    text_cache=str(text_cache_path))
    hist = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [h["val"] for h in hist] == [{}, {}] and min(h["train_loss"] for h in hist) > 1  # the case above
    best = read_checkpoint(tmp_path / "run" / "best.pt")["meta"]
    assert summary["best"] == pytest.approx(-min(h["train_loss"] for h in hist), abs=1e-3)
    assert best["step"] == next(h["step"] for h in hist if -h["train_loss"] == pytest.approx(summary["best"], abs=1e-3))
    assert export_checkpoint(tmp_path / "run" / "best.pt", tmp_path / "m.pt").is_file()


def test_cli_says_a_run_without_val_rows_was_scored_by_its_train_loss(no_val_shard, text_cache_path, tmp_path,
                                                                       capsys):
    """Before, it printed "best mean task gIoU -2.3": minus the train loss, named as a gIoU."""
    from geoseg.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(no_val_shard, tmp_path / "run", epochs=2, steps_per_epoch=2).to_yaml())
    main(["-q", "train", "--config", str(cfg), "--device", "cpu", "--text-cache", str(text_cache_path)])
    said = capsys.readouterr().out
    hist = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    lowest = min(h["train_loss"] for h in hist)
    assert f"best train loss {lowest:.3f} (no val rows);" in said and "gIoU" not in said, said
    assert "best train loss" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("score, best_of, words", [
    (41.26, "val", "mean task gIoU 41.3"),
    (41.26, "val_tuned", "mean task gIoU 41.3 (tuned thresholds)"),
    (-2.3046, "train_loss", "train loss 2.305 (no val rows)"),
    (float("-inf"), "val", "none (no epoch finished)"),
])
def test_describe_score_names_what_the_score_is(score, best_of, words):
    from geoseg.unified.train import describe_score

    assert describe_score(score, best_of) == words


def test_tune_decision_without_val_rows_is_refused_before_training(no_val_shard, text_cache_path, tmp_path, capsys):
    """Before, the whole run trained and the error came after its last epoch."""
    out = tmp_path / "run"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(no_val_shard, out, epochs=1, steps_per_epoch=1).to_yaml())
    for flag in ("--tune-decision", "--fit-selector"):
        code, err = run_quiet_cli(["train", "--config", str(cfg), "--text-cache", str(text_cache_path), "--device", "cpu",
                          "--export", str(tmp_path / "m.pt"), flag], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"error: {flag} needs the run's val rows") and str(no_val_shard) in err
        assert not out.exists() and not (tmp_path / "m.pt").exists()


def test_export_only_of_a_run_without_best_checkpoint_says_why(tiny_shard, tmp_path, capsys):
    """A run stopped before its first epoch ended has a train.log but no best.pt."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text("12:00:00 experiment tiny: geoseg, device cpu\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(tiny_shard, out).to_yaml())
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--export-only", "--export", str(tmp_path / "m.pt")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{out / 'best.pt'} does not exist" in err and "not finished an epoch" in err and "--resume" in err
    assert not (tmp_path / "m.pt").exists()


def test_resuming_a_finished_run_reports_it_and_changes_nothing(trained_run, tiny_shard, text_cache_path, tmp_path,
                                                                 capsys):
    """Before, the summary was empty: the CLI said "0 steps in 0 min, best mean task gIoU nan"."""
    for name in ("last.pt", "best.pt", "history.jsonl"):
        shutil.copy(trained_run["out"] / name, tmp_path / name)
    before = {n: (tmp_path / n).read_bytes() for n in ("last.pt", "best.pt", "history.jsonl")}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(tiny_shard, tmp_path).to_yaml())
    from geoseg.cli import main

    main(["-q", "train", "--config", str(cfg), "--resume", "--device", "cpu", "--text-cache", str(text_cache_path)])
    said = capsys.readouterr().out
    done = trained_run["summary"]
    assert said.startswith(f"trained tiny: {done['steps']} steps in {done['minutes']} min, best mean task gIoU "
                           f"{done['best']:.1f}")
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert "already finished" in (tmp_path / "train.log").read_text()


def test_resume_after_a_stop_trains_the_same_weights_as_an_uninterrupted_run(tiny_shard, text_cache_path, tmp_path,
                                                                             monkeypatch):
    """A run stopped after epoch 1 (its last.pt of then kept) and resumed ends where the uninterrupted run
    ends. Before, the augmentation generator restarted from the seed on resume: the same flips and jitter
    were drawn again and the weights differed (without augmentation they already matched)."""
    import torch

    straight, resumed = stop_and_resume(tiny_shard, text_cache_path, tmp_path, monkeypatch,
                                        epochs=2, steps_per_epoch=3, augment=True, shadow_aug=0.5)
    a, b = straight["state_dict"], resumed["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
