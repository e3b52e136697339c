"""--overwrite loses nothing when the new run produces nothing: the earlier outputs are set aside, not deleted,
and put back unless a scene of the new run is done (every scene failed, Ctrl-C, an error, a run killed)."""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import geoseg.batch.local
from geoseg.batch import MARKER_DIR, SUMMARY_FILE, run_batch
from geoseg.errors import GeosegError, InputError
from geoseg.prompts import Prompt

from .conftest import run_cli, write_scene

ROOF, OTHER_ROOF = "140,90,410,310", "440,370,650,530"
ASIDE = f"{MARKER_DIR}/overwritten"  # where the docs say an unfinished --overwrite keeps the earlier outputs
EARLIER = dict(backend="classical", vector="shp", score_raster=True)  # a Shapefile's companions, a score raster
NEW = dict(backend="classical", vector="gpkg")


def _box(text: str) -> list[Prompt]:
    return [Prompt(box=tuple(float(v) for v in text.split(",")))]


@pytest.fixture()
def earlier(tmp_path: Path) -> tuple[Path, Path, dict]:
    """Two scenes and an output folder an earlier batch filled with other options; its files' bytes and times."""
    scenes, out = tmp_path / "scenes", tmp_path / "out"
    scenes.mkdir()
    for i in range(2):
        write_scene(scenes / f"s{i}.tif", seed=i)
    assert run_batch(scenes, out, _box(ROOF), **EARLIER).count("done") == 2
    state = _state(out)
    assert {"s0.shp", "s0.dbf", "s0.shx", "s0_score.tif", f"{MARKER_DIR}/s1.json"} <= set(state)
    return scenes, out, state


def _state(out: Path) -> dict[str, tuple[str, int]]:
    """Every file in ``out`` (markers and the set-aside folder included, the last run's summary not): content, mtime."""
    return {p.relative_to(out).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in out.rglob("*") if p.is_file() and p != out / SUMMARY_FILE}


def _unreadable(scene: Path) -> None:
    scene.write_bytes(b"not a GeoTIFF: a download that failed")


def _outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.name != MARKER_DIR)


def test_every_scene_failing_keeps_the_earlier_outputs_byte_for_byte(earlier, capsys):
    pytest.importorskip("distributed")  # the CLI's default: two local Dask workers
    scenes, out, before = earlier
    for s in scenes.iterdir():
        _unreadable(s)
    code = run_cli(["segment", str(scenes), "--box", OTHER_ROOF, "--backend", "classical", "-o", str(out),
                    "--vector", "gpkg", "--overwrite"])
    report = capsys.readouterr().out
    assert code == 1  # scenes failed (--on-error skip)
    assert ("--overwrite: kept the outputs of 2 scene(s) segmented with other options (differs in: prompts, "
            "score-raster, vector), as no scene of this run was done") in report
    assert _state(out) == before  # outputs, Shapefile companions, score rasters and markers: as they were
    with pytest.raises(InputError, match="holds the outputs of 2 scene"):  # still refused without --overwrite
        run_batch(scenes, out, _box(OTHER_ROOF), **NEW)


def test_one_scene_done_replaces_the_earlier_outputs_and_they_wait_aside_until_then(earlier, monkeypatch):
    scenes, out, before = earlier
    _unreadable(scenes / "s1.tif")
    real, seen = geoseg.batch.local.process_group, []

    def process_group(source, group, spec):  # while s0 is segmented, nothing is done yet: the earlier files wait
        seen.append(sorted(p.name for p in (out / ASIDE / "files").iterdir()))
        return real(source, group, spec)

    monkeypatch.setattr(geoseg.batch.local, "process_group", process_group)
    # the same names as the earlier run's masks (s0.tif, s1.tif): the new s0.tif is written over an empty place
    s = run_batch(scenes, out, _box(OTHER_ROOF), overwrite=True, **NEW)
    assert seen and seen[0] == sorted([MARKER_DIR, *(n for n in before if "/" not in n)])
    assert [o.status for o in s.scenes] == ["done", "failed"]
    assert s.earlier == ("--overwrite: removed the outputs of 2 scene(s) segmented with other options "
                         "(differs in: prompts, score-raster, vector)")
    assert _outputs(out) == ["s0.gpkg", "s0.tif"]  # the earlier s1.tif went with the rest of its option set
    assert sorted(_state(out)) == [f"{MARKER_DIR}/s0.json", "s0.gpkg", "s0.tif"]
    assert _state(out)["s0.tif"] != before["s0.tif"]
    assert run_batch(scenes, out, _box(OTHER_ROOF), **NEW).count("skipped") == 1  # resumes the new option set


def _interrupt_in(monkeypatch, scene: str) -> None:
    """Ctrl-C while ``scene`` is segmented (in this process)."""
    real = geoseg.batch.local.process_group

    def process_group(source, group, spec):
        if Path(source.path).stem == scene:
            raise KeyboardInterrupt
        return real(source, group, spec)

    monkeypatch.setattr(geoseg.batch.local, "process_group", process_group)


def test_ctrl_c_or_an_error_before_a_scene_is_done_puts_the_earlier_outputs_back(earlier, monkeypatch):
    scenes, out, before = earlier
    _interrupt_in(monkeypatch, "s0")
    with pytest.raises(KeyboardInterrupt):
        run_batch(scenes, out, _box(OTHER_ROOF), overwrite=True, **NEW)
    assert _state(out) == before
    monkeypatch.undo()

    _unreadable(scenes / "s0.tif")  # --on-error fail: the first failed scene ends the run
    with pytest.raises(GeosegError, match="scene s0.tif failed") as info:
        run_batch(scenes, out, _box(OTHER_ROOF), overwrite=True, on_error="fail", **NEW)
    assert _state(out) == before
    if sys.version_info >= (3, 11):
        assert any("kept the outputs of 2 scene(s)" in n for n in info.value.__notes__)

    # Ctrl-C once s0 is done: that scene is this run's, so the earlier option set goes, and a rerun resumes
    write_scene(scenes / "s0.tif", seed=0)
    _interrupt_in(monkeypatch, "s1")
    with pytest.raises(KeyboardInterrupt):
        run_batch(scenes, out, _box(OTHER_ROOF), overwrite=True, **NEW)
    assert sorted(_state(out)) == [f"{MARKER_DIR}/s0.json", "s0.gpkg", "s0.tif"]
    monkeypatch.undo()
    again = run_batch(scenes, out, _box(OTHER_ROOF), **NEW)
    assert [o.status for o in again.scenes] == ["skipped", "done"] and again.earlier is None


def test_a_disk_that_fails_while_setting_aside_changes_nothing(earlier, monkeypatch):
    scenes, out, before = earlier
    real, moves = os.replace, []

    def replace(src, dst):  # the third file to go aside finds the disk full
        if ASIDE in Path(dst).as_posix():
            moves.append(dst)
            if len(moves) == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(GeosegError, match=r"could not set the earlier outputs aside .*No space left.*nothing was "):
        run_batch(scenes, out, _box(OTHER_ROOF), overwrite=True, **NEW)
    assert _state(out) == before and not (out / ASIDE).exists()


KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import geoseg.batch.local
from geoseg.batch import run_batch
from geoseg.prompts import Prompt

real = geoseg.batch.local.process_group

def process_group(source, group, spec):  # SIGKILL (the OOM killer, kill -9) while this scene is segmented
    if Path(source.path).stem == sys.argv[3]:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(source, group, spec)

geoseg.batch.local.process_group = process_group
run_batch(sys.argv[1], sys.argv[2], [Prompt(box=({box}))], backend="classical", vector="gpkg", overwrite=True)
"""


def _killed_run(scenes: Path, out: Path, during: str) -> None:
    script = textwrap.dedent(KILLED_RUN).replace("{box}", OTHER_ROOF)
    proc = subprocess.run([sys.executable, "-c", script, str(scenes), str(out), during], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr


def test_a_killed_run_that_did_no_scene_is_undone_by_the_next_run(earlier, caplog):
    scenes, out, before = earlier
    _killed_run(scenes, out, during="s0")
    assert (out / ASIDE / "files" / "s0.shp").is_file() and not (out / "s0.shp").exists()  # aside, not lost
    caplog.set_level("WARNING", logger="geoseg.batch.earlier")
    s = run_batch(scenes, out, _box(ROOF), **EARLIER)  # the earlier command again: everything is back, complete
    assert s.count("skipped") == 2 and s.count("done") == 0
    assert _state(out) == before
    assert "did not end (killed?)" in caplog.text and "put them back, as it had done no scene" in caplog.text


def test_a_killed_run_that_did_a_scene_owns_the_folder_at_the_next_run(earlier, caplog):
    scenes, out, before = earlier
    _killed_run(scenes, out, during="s1")
    assert (out / ASIDE / "files" / "s1.shp").is_file()
    caplog.set_level("WARNING", logger="geoseg.batch.earlier")
    s = run_batch(scenes, out, _box(OTHER_ROOF), **NEW)  # the killed command again, no --overwrite needed
    assert [o.status for o in s.scenes] == ["skipped", "done"] and s.earlier is None
    assert sorted(_state(out)) == [f"{MARKER_DIR}/s0.json", f"{MARKER_DIR}/s1.json", "s0.gpkg", "s0.tif",
                                   "s1.gpkg", "s1.tif"]
    assert "removed them, as it had done a scene" in caplog.text


def test_a_run_killed_while_writing_its_list_of_moves(earlier):
    """Killed before the list was in place, so before any file moved: the folder is dropped. Files there without
    a list are not this code's doing: they are left alone, and the error says how to put them back."""
    scenes, out, before = earlier
    stray = out / ASIDE / "files" / "s9.tif"
    stray.parent.mkdir(parents=True)
    (out / ASIDE / "moves.json.tmp").write_text('{"descr')
    stray.write_bytes(b"a file someone put there")
    with pytest.raises(GeosegError, match="holds files set aside by --overwrite, but not their list.*move the files"):
        run_batch(scenes, out, _box(ROOF), **EARLIER)
    assert stray.read_bytes() == b"a file someone put there"
    stray.unlink()
    assert run_batch(scenes, out, _box(ROOF), **EARLIER).count("skipped") == 2
    assert not (out / ASIDE).exists() and _state(out) == before
