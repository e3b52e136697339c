"""A build is complete or absent: it is staged beside ``-o`` and swapped in only at the end.

Interruptions are injected mid-build (after some shards are finished) by making the scene
processing raise; the old build in the folder must come out byte-identical and no shard, staging
folder or output folder may be left behind.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geoseg.cli import main
from geoseg.data import engine
from geoseg.data.engine import BuildConfig, build
from geoseg.data.writer import ShardWriter, _host, stale_staging
from geoseg.errors import InputError

LAND, WATER, ROAD = (132, 41, 246), (226, 169, 41), (110, 193, 228)


def _dubai(root: Path, regions: int = 3, seed: int = 0) -> Path:
    """``regions`` tiny Dubai regions (random image, land with a pond and a road), seeded."""
    rng = np.random.default_rng(seed)
    for i in range(1, regions + 1):
        d = root / f"tile_{i}"
        (d / "images").mkdir(parents=True)
        (d / "masks").mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(d / "images" / "image_part_001.jpg")
        m = np.empty((96, 96, 3), np.uint8)
        m[:] = LAND
        y, x = rng.integers(5, 40, 2)
        m[y:y + 30, x:x + 35] = WATER
        m[70:78, :] = ROAD
        Image.fromarray(m).save(d / "masks" / "image_part_001.png")
    return root


def _cfg(data: Path, seed: int = 0) -> BuildConfig:
    return BuildConfig.from_dict({"seed": seed, "tile_size": 64, "stride": 32, "shard_rows": 20,
                                  "sources": [{"type": "dubai", "path": str(data),
                                               "splits": {"train": ["tile_1", "tile_2"], "test": ["tile_3"]}}]})


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _good_build(data: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A complete build in ``tmp_path/build`` and the digest of its files (to check it is left intact)."""
    out = tmp_path / "build"
    build(_cfg(data), out, workers=0, report=False)
    return out, _digest(out)


def _fail_on_scene(monkeypatch: pytest.MonkeyPatch, n: int, exc: BaseException) -> list[str]:
    """Make the ``n``-th processed scene raise ``exc`` (earlier scenes are written normally)."""
    seen: list[str] = []
    real = engine.process_scene

    def flaky(spec, ref, cfg):
        seen.append(ref.scene)
        if len(seen) == n:
            raise exc
        return real(spec, ref, cfg)

    monkeypatch.setattr(engine, "process_scene", flaky)
    return seen


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    return _dubai(tmp_path / "dubai")


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("disk full"), SystemExit(143)])
def test_an_interrupted_rebuild_keeps_the_old_build_intact(exc: BaseException, data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    out, before = _good_build(data, tmp_path)
    assert len([p for p in before if p.endswith(".parquet")]) >= 3  # several shards: a mix would show
    seen = _fail_on_scene(monkeypatch, 3, exc)
    with pytest.raises(type(exc)):
        build(_cfg(data, seed=7), out, workers=0, report=False)
    assert len(seen) == 3  # it did fail mid-build, after two scenes had been written
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "dubai"]  # no staging folder left


def test_a_failed_first_build_leaves_no_output_folder(data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_on_scene(monkeypatch, 2, KeyboardInterrupt())
    out = tmp_path / "new" / "deeper" / "build"
    with pytest.raises(KeyboardInterrupt):
        build(_cfg(data), out, workers=0, report=False)
    assert not (tmp_path / "new").exists()  # neither the folder nor the parents made for it


def test_a_build_error_leaves_no_output_folder(data: Path, tmp_path: Path) -> None:
    """A build that produces nothing (every instance filtered out) fails without creating ``-o``."""
    cfg = BuildConfig.from_dict({"tile_size": 64, "stride": 64, "filters": {"min_pixels": 10**6},
                                 "sources": [{"type": "dubai", "path": str(data)}]})
    with pytest.raises(InputError, match="produced no samples"):
        build(cfg, tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubai"]


def test_sigterm_stops_the_build_and_cleans_up(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        pytest.skip("the test runner handles SIGTERM itself")
    out, before = _good_build(data, tmp_path)
    real = engine.process_scene
    calls: list[int] = []

    def term(spec, ref, cfg):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(spec, ref, cfg)

    monkeypatch.setattr(engine, "process_scene", term)
    with pytest.raises(SystemExit) as info:
        build(_cfg(data, seed=3), out, workers=0, report=False)
    assert info.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "dubai"]


def test_a_complete_rebuild_replaces_the_folder_as_a_whole(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "build"
    build(_cfg(data), out, workers=0, report=False)
    (out / "train" / "part-00099.parquet").write_bytes(b"shard of an older, larger build")
    build(_cfg(data, seed=5), out, workers=0, report=False)
    fresh = tmp_path / "fresh"
    build(_cfg(data, seed=5), fresh, workers=0, report=False)
    assert _digest(out) == _digest(fresh)  # nothing of the old build is mixed in
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "dubai", "fresh"]


def test_a_folder_with_other_files_is_refused_and_left_alone(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"holds files a build does not write \(notes.txt\)") as info:
        build(_cfg(data), out, workers=0, report=False)
    assert "\n" not in str(info.value)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dubai", "mine"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is not a folder"):
        build(_cfg(data), tmp_path / "file", workers=0, report=False)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_killed_runs_staging_folder_is_no_build_and_is_removed(data: Path, tmp_path: Path) -> None:
    """``kill -9`` runs no cleanup: what it leaves is hidden, never read as the build, and removed next time."""
    from geoseg.data.dataset import shard_files

    out, before = _good_build(data, tmp_path)
    dead = tmp_path / f".build.staging.{_host()}.{_dead_pid()}.abc123"
    (dead / "train").mkdir(parents=True)
    (dead / "train" / "part-00000.parquet").write_bytes(b"half a build")
    live = tmp_path / f".build.staging.{_host()}.{os.getpid()}.zzz999"  # a concurrent run, still going
    live.mkdir()
    other = tmp_path / ".build.staging.something-else"  # not named by a build: never touched
    other.mkdir()
    assert stale_staging(out) == [dead]
    assert all(dead.name not in str(f) for f in shard_files(out))
    # a parent folder without a manifest is searched for shards, but not inside hidden (staging) folders
    found = shard_files(tmp_path)
    assert found and all(out in f.parents for f in found)
    build(_cfg(data), out, workers=0, report=False)
    assert not dead.exists() and live.exists() and other.exists()
    assert _digest(out) == before


def test_an_old_build_set_aside_by_a_killed_run_is_restored(data: Path, tmp_path: Path) -> None:
    """Killed between moving the old build aside and the new one in: the next run puts the old one back."""
    out, before = _good_build(data, tmp_path)
    pid = _dead_pid()
    out.rename(tmp_path / f".build.staging.{_host()}.{pid}.abc123-old")
    (tmp_path / f".build.staging.{_host()}.{pid}.abc123").mkdir()
    from geoseg.data.writer import clean_stale_staging

    clean_stale_staging(out)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "dubai"]


def test_cli_build_interrupted_exits_non_zero_and_keeps_the_old_build(data: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"tile_size: 64\nstride: 32\nshard_rows: 20\nsources:\n  - type: dubai\n    path: {data}\n")
    out = tmp_path / "build"
    main(["data", "build", "--config", str(cfg), "-o", str(out), "--workers", "0", "--no-report"])
    before = _digest(out)
    _fail_on_scene(monkeypatch, 2, KeyboardInterrupt())
    with pytest.raises(SystemExit) as info:
        main(["data", "build", "--config", str(cfg), "-o", str(out), "--workers", "0", "--seed", "4"])
    assert info.value.code != 0
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "c.yaml", "dubai"]


def test_dask_build_writes_only_into_the_staging_folder(data: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask workers only return rows; the writer (this process) writes into the staging folder, never ``-o``."""
    pytest.importorskip("distributed")
    out, before = _good_build(data, tmp_path)
    real = ShardWriter.write
    dirs: list[Path] = []

    def write(self, table):
        dirs.append(self.out)
        if len(dirs) == 2:
            raise KeyboardInterrupt
        return real(self, table)

    monkeypatch.setattr(ShardWriter, "write", write)
    with pytest.raises(KeyboardInterrupt):
        build(_cfg(data, seed=9), out, workers=1, report=False)
    assert dirs and all(d.parent == tmp_path and d.name.startswith(".build.staging.") for d in dirs)
    assert _digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "dubai"]
