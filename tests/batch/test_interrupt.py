"""A batch stopped early (Ctrl-C, an unreachable scheduler) leaves only what it finished, and says so in one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import geoseg.batch.local
from geoseg.batch import MARKER_DIR, run_batch
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt

from .conftest import write_scene

BOX = [Prompt(box=(140.0, 90.0, 410.0, 310.0)), Prompt(box=(440.0, 370.0, 650.0, 530.0))]


def _scenes(folder: Path, n: int, size: int = 700) -> list[Path]:
    folder.mkdir()
    return [write_scene(folder / f"s{i}.tif", width=size, height=size, seed=i) for i in range(n)]


def _left(out: Path) -> list[str]:
    """Every file in ``out`` (hidden temp files included), the markers' folder listed apart."""
    return sorted(p.name for p in out.iterdir() if p.name != MARKER_DIR)


def _interrupt_at(monkeypatch, scene: str, group: int) -> None:
    """Ctrl-C while the given window group of ``scene`` is segmented (in this process, workers=0)."""
    real = geoseg.batch.local.process_group
    calls: dict[str, int] = {}

    def process_group(source, grp, spec):
        name = Path(source.path).stem
        calls[name] = calls.get(name, 0) + 1
        if name == scene and calls[name] == group + 1:
            raise KeyboardInterrupt
        return real(source, grp, spec)

    monkeypatch.setattr(geoseg.batch.local, "process_group", process_group)


def test_ctrl_c_in_process_keeps_the_finished_scenes_and_no_temp_file(tmp_path, monkeypatch):
    _scenes(tmp_path / "scenes", 3)
    out = tmp_path / "out"
    _interrupt_at(monkeypatch, "s1", group=1)  # s0 is done, s1 has painted its first window
    with pytest.raises(KeyboardInterrupt):
        run_batch(tmp_path / "scenes", out, BOX, backend="classical", vector="gpkg", score_raster=True,
                  tile_size=256, overlap=32)
    assert _left(out) == ["s0.gpkg", "s0.tif", "s0_score.tif"]  # no .s1.tif.XXXX.tmp.tif scratch file
    assert sorted(p.name for p in (out / MARKER_DIR).iterdir()) == ["s0.json"]
    monkeypatch.undo()
    again = run_batch(tmp_path / "scenes", out, BOX, backend="classical", vector="gpkg", score_raster=True,
                      tile_size=256, overlap=32)
    assert [o.status for o in again.scenes] == ["skipped", "done", "done"]


def test_ctrl_c_before_any_scene_finished_leaves_no_folder(tmp_path, monkeypatch):
    _scenes(tmp_path / "scenes", 2)
    out = tmp_path / "new" / "out"  # neither folder exists before the run
    _interrupt_at(monkeypatch, "s0", group=0)
    with pytest.raises(KeyboardInterrupt):
        run_batch(tmp_path / "scenes", out, BOX, backend="classical", vector="gpkg")
    assert not (tmp_path / "new").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_scheduler_leaves_no_output_folder(tmp_path):
    pytest.importorskip("distributed")
    _scenes(tmp_path / "scenes", 1, size=300)
    (tmp_path / "kept").mkdir()  # a folder that was there before the run stays
    for out in (tmp_path / "made" / "out", tmp_path / "kept"):
        with pytest.raises(GeosegError, match="cannot reach the Dask scheduler"):
            run_batch(tmp_path / "scenes", out, BOX, backend="classical",
                      scheduler=f"tcp://127.0.0.1:{_free_port()}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "scenes"]
    assert list((tmp_path / "kept").iterdir()) == []


def test_ctrl_c_on_a_local_cluster_is_one_line_exit_130_and_resumable(tmp_path):
    """The terminal's Ctrl-C (SIGINT to the whole process group, Dask workers included) on the real CLI.

    Without -q, as a user runs it: Dask then logs its warnings, which the interrupt used to set off.
    """
    pytest.importorskip("distributed")
    n = 6
    _scenes(tmp_path / "scenes", n, size=900)
    out = tmp_path / "out"
    boxes = [a for b in ("140,90,410,310", "440,370,650,530", "600,600,880,880") for a in ("--box", b)]
    cmd = [sys.executable, "-m", "geoseg", "segment", str(tmp_path / "scenes"), *boxes, "--backend",
           "classical", "-o", str(out), "--vector", "gpkg", "--tile-size", "256", "--overlap", "32"]
    proc = subprocess.Popen([*cmd, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True,  # its own process group, as a terminal's foreground job
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not list((out / MARKER_DIR).glob("s[0-9]*.json")):  # Ctrl-C once the first scene is done
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert stderr.split() == ["aborted"], stderr  # no Dask warnings or CancelledError tracebacks
    finished = sorted(p.stem for p in (out / MARKER_DIR).glob("s[0-9]*.json"))
    assert 1 <= len(finished) < n, finished  # the interrupt landed mid-batch
    assert _left(out) == sorted(f"{s}{ext}" for s in finished for ext in (".gpkg", ".tif"))  # no partial output

    rerun = subprocess.run([*cmd, "--workers", "0", "--json"], capture_output=True, text=True, timeout=300)
    summary = json.loads(rerun.stdout)
    assert rerun.returncode == 0, rerun.stderr
    assert (summary["skipped"], summary["done"]) == (len(finished), n - len(finished))
