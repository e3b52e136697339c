"""``geoseg train --resume`` with a changed ``train`` section: the run's length may change, nothing that shapes it.

Before, every change was taken silently: the step, sampler and optimiser came back from ``last.pt``
while the schedule, batches, losses and validation were rebuilt from the new config, so a changed
``lr`` or ``steps_per_epoch`` made the learning rate and task mix jump mid-run and changed ``shards``
mixed two data sets into one run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from geoseg.errors import InputError

from .conftest import run_quiet_cli, tiny_config


def _run_copy(trained_run: dict, folder: Path) -> dict[str, bytes]:
    """The trained run's last.pt, history.jsonl and config.yaml copied into ``folder``; their bytes."""
    for name in ("last.pt", "history.jsonl", "config.yaml"):
        shutil.copy(trained_run["out"] / name, folder / name)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("key, value, shown", [
    ("lr", 1e-3, "lr 0.002 -> 0.001"),                                  # the learning rate jumps
    ("steps_per_epoch", 8, "steps_per_epoch 12 -> 8"),                  # the schedule's progress jumps
    ("batch_size", 4, "batch_size 8 -> 4"),
    ("seed", 7, "seed 0 -> 7"),                                         # another val subset and worker draws
    ("ramp_frac", 0.1, "ramp_frac 0.4 -> 0.1"),                         # the task mix jumps
    ("progressive", False, "progressive True -> False"),
    ("freeze", ("backbone",), "freeze [] -> ['backbone']"),
    ("dice_weight", 2.0, "dice_weight 1.0 -> 2.0"),                     # another objective mid-run
])
def test_resume_with_a_changed_train_setting_is_one_line_and_writes_nothing(trained_run, tiny_shard, text_cache_path,
                                                                            tmp_path, key, value, shown):
    from geoseg.unified.train import train

    before = _run_copy(trained_run, tmp_path)
    cfg = tiny_config(tiny_shard, tmp_path, epochs=4, **{key: value})
    with pytest.raises(InputError) as exc:
        train(cfg, resume=True, device="cpu", text_cache=str(text_cache_path))
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"--resume: the run in {tmp_path} was started with other train settings")
    assert f"({shown})" in msg and "epochs" not in msg.split("(")[1]  # the raised epochs is not a complaint
    assert str(tmp_path / "config.yaml") in msg and "fresh run" in msg and f"init_from: {tmp_path / 'last.pt'}" in msg
    assert {p.name: p.read_bytes() for p in sorted(tmp_path.iterdir())} == before  # no train.log, nothing rewritten


def test_resume_from_other_shards_is_refused_even_with_the_same_rows(trained_run, tiny_shard, text_cache_path,
                                                                     tmp_path, capsys):
    """The CLI's --shards override included: another folder is another data set as far as the run can tell."""
    run = tmp_path / "run"
    run.mkdir()
    before = _run_copy(trained_run, run)
    other = shutil.copytree(tiny_shard, tmp_path / "other_shards")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(tiny_config(tiny_shard, run, epochs=4).to_yaml())
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--resume", "--shards", str(other), "--device", "cpu",
                               "--text-cache", str(text_cache_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"shards '{tiny_shard}' -> '{other}'" in err
    assert {p.name: p.read_bytes() for p in sorted(run.iterdir())} == before


def test_every_changed_setting_is_named_in_the_one_line(trained_run, tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.train import train

    _run_copy(trained_run, tmp_path)
    cfg = tiny_config(tiny_shard, tmp_path, lr=1e-2, warmup_steps=0, no_target_share=0.2, val_samples=5)
    with pytest.raises(InputError) as exc:
        train(cfg, resume=True, device="cpu", text_cache=str(text_cache_path))
    assert "(lr 0.002 -> 0.01, warmup_steps 4 -> 0, no_target_share 0.0 -> 0.2, val_samples 0 -> 5)" in str(exc.value)


def test_resume_may_train_longer_and_move_where_and_how_fast_it_runs(trained_run, tiny_shard, text_cache_path,
                                                                     tmp_path):
    """Raising epochs or the budget, another folder, threads, workers, logging and the (ignored) start weights."""
    from geoseg.unified.config import load_config
    from geoseg.unified.train import train

    _run_copy(trained_run, tmp_path)
    cfg = tiny_config(tiny_shard, tmp_path, epochs=4, max_minutes=30.0, threads=1, log_every=5, amp=False,
                      init_from=str(tmp_path / "anything.pt"), shards=str(tiny_shard) + "/")
    summary = train(cfg, resume=True, device="cpu", text_cache=str(text_cache_path))
    assert summary["epochs"] == 4 and summary["steps"] == 4 * 12
    assert load_config(tmp_path / "config.yaml").train.epochs == 4  # config.yaml says how the run goes on
    hist = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]


def test_a_setting_the_run_predates_counts_as_its_default():
    """A last.pt written before a train setting existed ran with its default: only a non-default value is a change."""
    from dataclasses import asdict

    from geoseg.unified.config import TrainConfig
    from geoseg.unified.config_checks import RESUME_MAY_CHANGE, check_resume_train, resume_changes

    saved = asdict(TrainConfig(lr=3e-3))
    del saved["ema"], saved["select_on"]
    assert resume_changes(saved, TrainConfig(lr=0.003)) == []
    assert resume_changes(saved, TrainConfig(lr=0.003, ema=0.9)) == [("ema", 0.0, 0.9)]
    moved = dict(epochs=60, max_minutes=5.0, num_workers=4, out_dir="elsewhere", threads=2, amp=False, log_every=1,
                 tile_store="tiles.npz", image_path_map={"/a": "/b"}, init_from="x.pt", backbone_weights="b.pt")
    assert set(moved) == set(RESUME_MAY_CHANGE)
    assert resume_changes(saved, TrainConfig(lr=0.003, **moved)) == []
    with pytest.raises(InputError, match=r"\(select_on 'fixed' -> 'tuned'\)"):
        check_resume_train(saved, TrainConfig(lr=0.003, select_on="tuned"), "runs/x/last.pt")
