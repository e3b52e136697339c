"""What ``geoseg train`` prints: progress once a run has started, nothing but the error when it fails to start.

Run as a real process: the CLI configures logging for the whole process (a root handler, ``-q``'s level),
which an in-process call under pytest (its own root handlers) would not show.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import tiny_config


def _geoseg(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geoseg", *args], capture_output=True, text=True, timeout=600)


def _yaml(cfg, path: Path) -> Path:
    path.write_text(cfg.to_yaml())
    return path


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["default", "quiet"])
def test_a_failed_start_prints_the_error_and_nothing_else(trained_run, tiny_shard, text_cache_path, tmp_path, quiet):
    """A setting that passes loading but fails the start-up (a module to freeze that does not exist):
    before, "HH:MM:SS experiment tiny: geoseg ..., device cpu" came first (with -q too, as an INFO line)."""
    out = tmp_path / "run"
    cfg = _yaml(tiny_config(tiny_shard, out, epochs=1, steps_per_epoch=1, freeze=("backbon",)), tmp_path / "c.yaml")
    done = _geoseg([*quiet, "train", "--config", str(cfg), "--device", "cpu", "--text-cache", str(text_cache_path)])
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: train.freeze names no module") and len(done.stderr.splitlines()) == 1
    assert not out.exists()


def test_quiet_run_prints_only_its_result_and_a_default_run_its_progress(trained_run, tiny_shard, text_cache_path,
                                                                          tmp_path):
    """-q ("only errors"): before, every progress line of the run reached stderr through the root handler."""
    cfg = _yaml(tiny_config(tiny_shard, tmp_path / "q", epochs=1, steps_per_epoch=1), tmp_path / "q.yaml")
    done = _geoseg(["-q", "train", "--config", str(cfg), "--device", "cpu", "--text-cache", str(text_cache_path)])
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and done.stdout.startswith("trained tiny: 1 steps")
    assert "epoch 1 done" in (tmp_path / "q" / "train.log").read_text()  # the run's log is complete all the same

    cfg = _yaml(tiny_config(tiny_shard, tmp_path / "v", epochs=1, steps_per_epoch=1), tmp_path / "v.yaml")
    done = _geoseg(["train", "--config", str(cfg), "--device", "cpu", "--text-cache", str(text_cache_path)])
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    # the start-up messages held until the start succeeded come first, once each, then the epochs
    assert "experiment tiny" in lines[0] and sum("experiment tiny" in x for x in lines) == 1
    assert any("epoch 1 done" in x for x in lines)
    assert (tmp_path / "v" / "train.log").read_text().count("experiment tiny") == 1
