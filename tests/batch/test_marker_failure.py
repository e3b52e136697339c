"""A scene whose done marker cannot be written (full disk, read-only marker folder) leaves no output behind.

Its outputs are only vouched for by the marker: without it a rerun redoes the scene, but meanwhile the
folder would hold files no marker lists (taken for done work, next to what --overwrite puts back).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import pyogrio.raw
import pytest

from geoseg.batch import MARKER_DIR, run_batch
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt

from .conftest import run_cli, write_scene

BOX = [Prompt(box=(140.0, 90.0, 410.0, 310.0)), Prompt(box=(440.0, 370.0, 650.0, 530.0))]
KW = dict(backend="classical", vector="shp", score_raster=True, tile_size=256, overlap=32)
SHP = ["{}.tif", "{}_score.tif", "{}.shp", "{}.shx", "{}.dbf", "{}.prj", "{}.cpg"]  # a scene's outputs with KW


def _scenes(folder: Path, n: int = 2) -> Path:
    folder.mkdir()
    for i in range(n):
        write_scene(folder / f"s{i}.tif", seed=i)
    return folder


def _files(out: Path) -> list[str]:
    """Every file in ``out`` (hidden temp files included) and in its markers' folder, the run summary apart."""
    top = [p.name for p in out.iterdir() if p.is_file()]
    markers = [f"{MARKER_DIR}/{p.name}" for p in (out / MARKER_DIR).glob("*") if p.is_file()]
    return sorted(top + markers)


def _of(files: list[str], stem: str) -> list[str]:
    return [f for f in files if Path(f).name.lstrip(".").startswith(stem)]


def _markers_fail(monkeypatch, stems: set[str] | None, how: str) -> None:
    """The done markers of ``stems`` cannot be written: as on a full disk (``write``), or a read-only folder (``rename``).

    Only the markers' files fail, the scenes' outputs and the run summary are written as usual;
    with ``stems=None`` every file in the markers' folder fails, the run summary too.
    """
    def hit(path) -> bool:
        p = Path(path)
        if stems is None:
            return MARKER_DIR in p.parts
        return p.parent.name == MARKER_DIR and p.name.split(".json")[0] in stems

    real_write, real_replace = Path.write_text, os.replace

    def write_text(self, *args, **kwargs):
        if hit(self):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if hit(dst):
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    if how == "write":
        monkeypatch.setattr(Path, "write_text", write_text)
    else:
        monkeypatch.setattr(os, "replace", replace)


def _check_failed(outcome, why: str) -> None:
    assert outcome.status == "failed"
    assert outcome.outputs == {}
    assert "\n" not in outcome.error
    assert outcome.error.startswith(f"cannot write the done marker of {Path(outcome.scene).name} (")
    assert why in outcome.error
    assert "its outputs were removed" in outcome.error
    assert "free some space or make" in outcome.error and "writable" in outcome.error


@pytest.mark.parametrize("how, why", [("write", "No space left on device"), ("rename", "Permission denied")])
def test_in_process_the_scene_leaves_nothing_and_the_batch_goes_on(tmp_path, monkeypatch, how, why):
    d = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    _markers_fail(monkeypatch, {"s0"}, how)
    s = run_batch(d, out, BOX, workers=0, merged_vector=tmp_path / "merged.gpkg", **KW)
    assert [o.status for o in s.scenes] == ["failed", "done"]
    left = _files(out)
    assert _of(left, "s0") == []  # no mask, score raster, Shapefile part, temp file or marker of s0
    assert _of(left, "s1") == sorted([f.format("s1") for f in SHP] + [f"{MARKER_DIR}/s1.json"])
    _check_failed(s.scenes[0], why)
    assert f"failed: {s.scenes[0].scene}: cannot write the done marker of s0.tif (" in s.report()
    meta, _, _, data = pyogrio.raw.read(tmp_path / "merged.gpkg")
    assert set(data[list(meta["fields"]).index("scene")]) == {"s1"}

    monkeypatch.undo()
    again = run_batch(d, out, BOX, workers=0, **KW)
    assert [o.status for o in again.scenes] == ["done", "skipped"]
    assert _of(_files(out), "s0") == sorted([f.format("s0") for f in SHP] + [f"{MARKER_DIR}/s0.json"])


def test_on_error_fail_stops_with_the_reason_and_leaves_nothing(tmp_path, monkeypatch):
    d = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    _markers_fail(monkeypatch, {"s0"}, "write")
    with pytest.raises(GeosegError) as err:
        run_batch(d, out, BOX, workers=0, on_error="fail", **KW)
    assert not out.exists() or _files(out) == []  # stopped at s0, which left nothing
    assert re.match(r"scene s0.tif failed: cannot write the done marker of s0.tif \(.*No space left on device.*\); "
                    r"its outputs were removed \(free some space or make .* writable, then run again", str(err.value))
    assert "\n" not in str(err.value)


def test_on_dask_the_scene_leaves_nothing_and_the_batch_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    d = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    _markers_fail(monkeypatch, {"s0"}, "rename")  # the client writes the markers: patched in this process
    s = run_batch(d, out, BOX, workers=1, **KW)
    assert [o.status for o in s.scenes] == ["failed", "done"]
    left = _files(out)
    assert _of(left, "s0") == []
    assert _of(left, "s1") == sorted([f.format("s1") for f in SHP] + [f"{MARKER_DIR}/s1.json"])
    _check_failed(s.scenes[0], "Permission denied")

    monkeypatch.undo()
    again = run_batch(d, out, BOX, workers=0, **KW)
    assert [o.status for o in again.scenes] == ["done", "skipped"]


def test_an_output_that_cannot_be_removed_is_named_in_the_line(tmp_path, monkeypatch):
    d = _scenes(tmp_path / "scenes", 1)
    out = tmp_path / "out"
    _markers_fail(monkeypatch, {"s0"}, "write")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if Path(path).name == "s0.dbf":
            raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    s = run_batch(d, out, BOX, workers=0, **KW)
    assert _of(_files(out), "s0") == ["s0.dbf"]  # every other file of it went
    assert s.scenes[0].status == "failed" and "\n" not in s.scenes[0].error
    assert re.match(r"cannot write the done marker of s0.tif \(.*No space left on device.*\); its outputs could not "
                    r"all be removed \(.*Permission denied.*\): delete \S*/out/s0.dbf \(free some space or make ",
                    s.scenes[0].error)


def _digests(out: Path) -> dict[str, str]:
    return {f: hashlib.sha256((out / f).read_bytes()).hexdigest() for f in _files(out)
            if not f.startswith(f"{MARKER_DIR}/run")}


def test_overwrite_that_writes_no_marker_puts_the_earlier_outputs_back_alone(tmp_path, monkeypatch):
    """No scene done, so --overwrite puts the earlier outputs back: with nothing of the failed run next to them."""
    d = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    run_batch(d, out, BOX, workers=0, backend="classical", vector="gpkg", tile_size=256, overlap=32)
    before = _digests(out)
    _markers_fail(monkeypatch, {"s0", "s1"}, "write")
    s = run_batch(d, out, BOX, workers=0, backend="classical", vector="fgb", tile_size=256, overlap=32,
                  overwrite=True)
    assert [o.status for o in s.scenes] == ["failed", "failed"]
    assert s.earlier and "kept the outputs" in s.earlier
    assert _digests(out) == before  # no s0.fgb / s1.fgb, and the put-back masks are the earlier ones


def test_a_full_disk_fails_every_scene_in_one_line_each_and_leaves_nothing(tmp_path, monkeypatch, capsys, caplog):
    """The summary cannot be written either: a warning, and the run still ends with its report (exit 1)."""
    d = _scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    assert run_cli(["segment", str(d), "--box", "140,90,410,310", "--backend", "classical", "-o", str(out),
                    "--vector", "shp", "--workers", "0"]) == 0
    capsys.readouterr()
    _markers_fail(monkeypatch, None, "write")
    code = run_cli(["segment", str(d), "--box", "140,90,410,310", "--backend", "classical", "-o", str(out),
                    "--vector", "shp", "--workers", "0", "--no-resume"])
    assert code == 1
    # the new outputs replaced the first run's, then went: its markers list files gone, so a rerun redoes both
    assert _files(out) == [f"{MARKER_DIR}/s0.json", f"{MARKER_DIR}/s1.json"]
    assert not (out / MARKER_DIR / "run" / "summary.json").exists()  # the first run's: it is not this run's
    text = capsys.readouterr().out
    assert "2 scene(s): 0 done, 0 skipped (already complete), 2 failed" in text
    for stem in ("s0", "s1"):
        assert re.search(rf"^failed: .*{stem}.tif: cannot write the done marker of {stem}.tif \(.*No space left on "
                         rf"device.*\); its outputs were removed \(free some space or make .* writable, then run "
                         rf"again: the scene is redone\)$", text, re.M)
    assert "could not write the run summary" in caplog.text

    monkeypatch.undo()
    assert run_cli(["segment", str(d), "--box", "140,90,410,310", "--backend", "classical", "-o", str(out),
                    "--vector", "shp", "--workers", "0"]) == 0
    assert "2 scene(s): 2 done, 0 skipped" in capsys.readouterr().out
