"""geoseg train on bad input: one-line errors before any training, and no run folder written or mixed.

Each test here failed before these checks existed: a bad ``--export`` path was found after the
last epoch (a traceback), a second fresh start into a run folder silently mixed two runs, a
``--resume`` with another model section died in ``load_state_dict`` after rewriting the run's
``config.yaml``, and a failed start left a folder with ``config.yaml`` and ``train.log``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from geoseg.errors import GeosegError, InputError

from .conftest import run_quiet_cli, tiny_config


def _yaml(cfg, path: Path) -> Path:
    path.write_text(cfg.to_yaml())
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("where", ["under_a_file", "proc"])
def test_bad_export_path_fails_before_training_in_one_line(tiny_shard, text_cache_path, tmp_path, capsys, where):
    (tmp_path / "afile").write_text("x")
    export = {"under_a_file": tmp_path / "afile" / "m.pt", "proc": Path("/proc/m.pt")}[where]
    out = tmp_path / "run"
    cfg = _yaml(tiny_config(tiny_shard, out, epochs=1, steps_per_epoch=1), tmp_path / "c.yaml")
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--text-cache", str(text_cache_path), "--device", "cpu",
                      "--export", str(export)], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: cannot write") and str(export) in err
    assert not out.exists()  # refused before training started


def test_out_dir_that_cannot_be_written_fails_before_anything(tiny_shard, text_cache_path, tmp_path):
    from geoseg.unified.train import train

    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "run"):
        with pytest.raises(GeosegError, match="is a file"):
            train(tiny_config(tiny_shard, out), device="cpu", text_cache=str(text_cache_path))
    assert (tmp_path / "afile").read_text() == "x"


def test_fresh_start_into_a_run_folder_is_refused_and_leaves_it_untouched(trained_run, tiny_shard, text_cache_path,
                                                                           tmp_path):
    from geoseg.unified.train import train

    for name in ("last.pt", "history.jsonl"):  # a copy: the shared run must stay as it is
        shutil.copy(trained_run["out"] / name, tmp_path / name)
    before = _snapshot(tmp_path)
    with pytest.raises(InputError, match=r"already holds a run \(last.pt / history.jsonl\).*--resume"):
        train(tiny_config(tiny_shard, tmp_path, epochs=1, steps_per_epoch=1), device="cpu",
              text_cache=str(text_cache_path))
    assert _snapshot(tmp_path) == before  # no config.yaml, train.log or checkpoint written or rewritten


def test_a_folder_without_run_artefacts_may_be_started_in_and_gets_a_fresh_log(tiny_shard, text_cache_path,
                                                                               tmp_path):
    """train.log of a start stopped before its first epoch: nothing to resume, so a fresh start is
    allowed, and its log is the new run's alone."""
    from geoseg.unified.train import train

    (tmp_path / "train.log").write_text("12:00:00 an attempt stopped before its first epoch\n")
    summary = train(tiny_config(tiny_shard, tmp_path, epochs=1, steps_per_epoch=1), device="cpu",
                    text_cache=str(text_cache_path))
    assert summary["steps"] == 1
    log = (tmp_path / "train.log").read_text()
    assert "an attempt stopped" not in log and "experiment tiny" in log and "epoch 1 done" in log


def test_export_only_and_pack_still_read_a_finished_run(trained_run, text_cache_path, tmp_path, capsys):
    from geoseg.unified.checkpoint import read_checkpoint

    out = trained_run["out"]
    before = _snapshot(out)
    cfg = _yaml(trained_run["cfg"], tmp_path / "c.yaml")
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--export-only", "--export", str(tmp_path / "m.pt")], capsys)
    assert code == 0, err
    assert read_checkpoint(tmp_path / "m.pt")["meta"] == read_checkpoint(out / "best.pt")["meta"]
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--text-cache", str(text_cache_path),
                      "--pack", str(tmp_path / "pack")], capsys)
    assert code == 0, err
    assert (tmp_path / "pack" / "data" / "config.yaml").is_file()
    assert _snapshot(out) == before


@pytest.mark.parametrize("change, message", [
    ({"fpn_dim": 48}, r"model.fpn_dim = 32, the config gives 48"),                 # weights no longer fit
    ({"arch": "unigeoseg_small"}, r"holds a 'unigeoseg_tiny' model, the config builds 'unigeoseg_small'"),
    ({"memory_lambda": 0.5}, r"model.memory_lambda = 0.2, the config gives 0.5"),   # fits, but another model
])
def test_resume_with_another_model_section_is_one_line_and_rewrites_nothing(trained_run, tiny_shard, text_cache_path,
                                                                              tmp_path, change, message):
    import dataclasses

    from geoseg.unified.train import train

    for name in ("last.pt", "history.jsonl", "config.yaml"):
        shutil.copy(trained_run["out"] / name, tmp_path / name)
    before = _snapshot(tmp_path)
    cfg = tiny_config(tiny_shard, tmp_path, epochs=4)
    cfg.model = dataclasses.replace(cfg.model, **change)
    with pytest.raises(InputError, match=message) as exc:
        train(cfg, resume=True, device="cpu", text_cache=str(text_cache_path))
    assert "\n" not in str(exc.value) and "config.yaml" in str(exc.value)
    assert _snapshot(tmp_path) == before  # config.yaml still says how the run was made; no train.log


def test_resume_rewrites_history_to_match_the_checkpoint(trained_run, tiny_shard, text_cache_path, tmp_path):
    """A run stopped after writing an epoch's history line but before its last.pt: the resumed run
    repeats that epoch, and history.jsonl must not hold it twice."""
    from geoseg.unified.train import train

    shutil.copy(trained_run["out"] / "last.pt", tmp_path / "last.pt")
    lines = (trained_run["out"] / "history.jsonl").read_text().splitlines()
    stale = {**json.loads(lines[-1]), "epoch": 4, "step": 48}
    (tmp_path / "history.jsonl").write_text("\n".join([*lines, json.dumps(stale)]) + "\n")
    train(tiny_config(tiny_shard, tmp_path, epochs=4), resume=True, device="cpu", text_cache=str(text_cache_path))
    hist = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[:3] == [json.loads(x) for x in lines]


@pytest.mark.parametrize("key, value", [("freeze", ("backbon",)), ("init_from", "{tmp}/missing.pt"),
                                        ("shards", "{tmp}/no_shards")])
def test_a_failed_start_in_a_new_folder_leaves_nothing(tiny_shard, text_cache_path, tmp_path, key, value):
    from geoseg.unified.train import train

    value = value.format(tmp=tmp_path) if isinstance(value, str) else value
    cfg = tiny_config(tiny_shard, tmp_path / "new" / "run", epochs=1, steps_per_epoch=1, **{key: value})
    with pytest.raises(GeosegError):
        train(cfg, device="cpu", text_cache=str(text_cache_path))
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("key, value", [("epochs", 0), ("lr", -1e-3), ("batch_size", 0), ("max_minutes", -1.0)])
def test_train_checks_values_of_a_config_built_in_code(tiny_shard, text_cache_path, tmp_path, key, value):
    """Configs built in code (and command-line overrides) get the load-time checks too: epochs 0
    used to "train" 0 steps and exit 0 without a checkpoint."""
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", **{"epochs": 1, "steps_per_epoch": 1, key: value})
    with pytest.raises(InputError, match=rf"train\.{key} = {value!r}.* allowed is"):
        train(cfg, device="cpu", text_cache=str(text_cache_path))
    assert not (tmp_path / "run").exists()


def test_cli_max_minutes_override_is_checked(tiny_shard, text_cache_path, tmp_path, capsys):
    cfg = _yaml(tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=1), tmp_path / "c.yaml")
    code, err = run_quiet_cli(["train", "--config", str(cfg), "--text-cache", str(text_cache_path), "--device", "cpu",
                      "--max-minutes", "-5"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "train.max_minutes = -5.0" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("key, value, message", [
    ("heads", 3, r"model\.heads = 3 does not divide model\.query_dim 64"),   # torch: embed_dim must be divisible
    ("fpn_dim", -8, r"model\.fpn_dim = -8 is out of range"),                 # torch: negative dimension
    ("memory_lambda", 2.0, r"model\.memory_lambda = 2\.0 is out of range"),   # trained, with λ 2
    # trained on MiniLM embeddings, the config and checkpoints saying bert
    ("text_encoder", "bert-base-uncased", r"model\.text_encoder = 'bert-base-uncased' is not supported"),
])
def test_train_checks_the_model_section_of_a_config_built_in_code(tiny_shard, text_cache_path, tmp_path, key, value,
                                                                  message):
    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=1)
    setattr(cfg.model, key, value)
    with pytest.raises(InputError, match=message):
        train(cfg, device="cpu", text_cache=str(text_cache_path))
    assert not (tmp_path / "run").exists()


def test_text_dim_other_than_the_encoders_is_one_line_before_training(tiny_shard, text_cache_path, tmp_path):
    """Before, the first step failed in a matrix product (mat1 and mat2 shapes cannot be multiplied),
    after config.yaml and train.log had been written."""
    import dataclasses

    from geoseg.unified.train import train

    cfg = tiny_config(tiny_shard, tmp_path / "run", epochs=1, steps_per_epoch=1)
    cfg.model = dataclasses.replace(cfg.model, text_dim=256)
    with pytest.raises(InputError, match=r"model\.text_dim = 256, but the instruction embeddings .* are 384 wide"):
        train(cfg, device="cpu", text_cache=str(text_cache_path))
    assert not (tmp_path / "run").exists()
