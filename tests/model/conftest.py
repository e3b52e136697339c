"""Fixtures of the unified-model tests: a tiny generated shard, a tiny config, a trained-for-seconds checkpoint."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def load_module(name: str, path: Path):
    """Import a Python file that is not in a package (the test data writer, a benchmark script)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _load_data_module():
    return load_module("geoseg_model_test_data", HERE / "data.py")


@pytest.fixture(scope="session")
def tiny_shard(tmp_path_factory) -> Path:
    return _load_data_module().write_shard(tmp_path_factory.mktemp("shard"))


@pytest.fixture(scope="session")
def text_cache_path(tmp_path_factory) -> Path:
    """One instruction-embedding cache shared by every training test of the session."""
    return tmp_path_factory.mktemp("textcache") / "text_cache.pt"


def tiny_config(shard: Path, out: Path, **train_overrides):
    from geoseg.unified.config import ExperimentConfig, ModelConfig, TrainConfig

    model = ModelConfig(channels=(16, 32, 48, 64), depths=(1, 1, 1, 1), fpn_dim=32, query_dim=64, tile_size=128,
                        input_size=64, classes=("water", "building", "vegetation"))
    train = dict(shards=str(shard), out_dir=str(out), batch_size=8, epochs=3, steps_per_epoch=12, warmup_steps=4,
                 log_every=4, val_samples=0, lr=2e-3, threads=2)
    train.update(train_overrides)
    return ExperimentConfig(name="tiny", model=model, train=TrainConfig(**train))



def stop_and_resume(tiny_shard: Path, text_cache_path: Path, tmp_path: Path, monkeypatch, **train_overrides
                    ) -> tuple[dict, dict]:
    """The ``last.pt`` payloads of an uninterrupted tiny run (``tmp_path/straight``) and of the same run
    stopped after epoch 1 (its ``last.pt`` of then kept) and resumed (``tmp_path/resumed``)."""
    import shutil

    import torch

    import geoseg.unified.train as unified_train

    save = unified_train.save_checkpoint

    def keep_epoch_1(path, model, mc, norm, meta, **kw):
        out = save(path, model, mc, norm, meta, **kw)
        if Path(path).name == "last.pt" and meta["epoch"] == 1 and Path(path).parent.name == "straight":
            shutil.copy(path, tmp_path / "epoch1.pt")
        return out

    monkeypatch.setattr(unified_train, "save_checkpoint", keep_epoch_1)
    unified_train.train(tiny_config(tiny_shard, tmp_path / "straight", **train_overrides), device="cpu",
                        text_cache=str(text_cache_path))
    (tmp_path / "resumed").mkdir()
    shutil.copy(tmp_path / "epoch1.pt", tmp_path / "resumed" / "last.pt")
    unified_train.train(tiny_config(tiny_shard, tmp_path / "resumed", **train_overrides), resume=True,
                        device="cpu", text_cache=str(text_cache_path))
    return tuple(torch.load(tmp_path / run / "last.pt", weights_only=False) for run in ("straight", "resumed"))

@pytest.fixture(scope="session")
def trained_run(tiny_shard, text_cache_path, tmp_path_factory) -> dict:
    """A tiny model trained for a few dozen CPU steps (shared by the training and checkpoint tests)."""
    from geoseg.unified.train import train

    out = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tiny_shard, out)
    summary = train(cfg, device="cpu", text_cache=str(text_cache_path))
    return {"cfg": cfg, "summary": summary, "out": out}


def run_quiet_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run ``geoseg -q ARGS``; its exit code (0 when it returned) and stderr."""
    from geoseg.cli import main

    try:
        main(["-q", *args])
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err
