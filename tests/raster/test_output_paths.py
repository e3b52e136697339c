"""Output locations that cannot be written fail early with one line; a writer that fails to open leaves nothing.

Permission cases fake :func:`os.access` for one folder, so they run as root too (root's
CAP_DAC_OVERRIDE makes a real ``chmod 555`` folder writable); one test uses a real
read-only folder and is skipped where the process can write there anyway.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import geoseg.pipeline
import geoseg.raster.writer as writer_mod
from geoseg.cli import main
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.raster.writer import SceneWriter, check_output_paths

from .conftest import scene_array, write_geotiff

#: one bright roof (row0, row1, col0, col1) in the small 100 x 80 scenes used here
SMALL_ROOFS = ((10, 40, 20, 60),)


def deny_writes_in(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make :func:`os.access` report ``folder`` (only) as not writable, as it is for a non-root user of a 0o555 folder."""
    real_access = os.access
    denied = os.path.abspath(folder)

    def fake_access(path, mode, *args, **kwargs) -> bool:
        if os.path.abspath(path) == denied and mode & os.W_OK:
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", fake_access)


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """Run the real CLI entry point; its exit code and stderr."""
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    return int(exc.value.code or 0), capsys.readouterr().err


def all_files(root: Path) -> list[str]:
    """Every file and folder under ``root``, relative, sorted (hidden temporary files included)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("which", ["output", "score_raster", "vector"])
@pytest.mark.parametrize("sub", ["", "new/deeper"])
def test_unwritable_folder_is_one_line_naming_path_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              which: str, sub: str) -> None:
    """Every output is checked, also below folders still to be made (the nearest existing one is what counts)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    deny_writes_in(monkeypatch, ro)
    paths = {"output": str(tmp_path / "m.tif"), "score_raster": str(tmp_path / "s.tif"),
             "vector": str(tmp_path / "v.gpkg")}
    name = {"output": "m.tif", "score_raster": "s.tif", "vector": "v.gpkg"}[which]
    bad = ro / sub / name if sub else ro / name
    paths[which] = str(bad)
    with pytest.raises(GeosegError) as exc:
        check_output_paths(paths["output"], paths["score_raster"], paths["vector"])
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(bad) in msg and f"folder {ro} " in msg and "folder you can write to" in msg
    assert all_files(tmp_path) == ["ro"]  # the check makes nothing


def test_parent_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    image = tmp_path / "tiny.tif"
    image.write_bytes(b"II*\0")
    for out in (image / "m.tif", image / "sub" / "m.tif"):
        with pytest.raises(GeosegError, match=r"tiny\.tif is a file, not a folder \(give an output path inside"):
            check_output_paths(str(out))
    with pytest.raises(GeosegError, match="is a file, not a folder"):
        check_output_paths(str(tmp_path / "m.tif"), vector=str(image / "v.gpkg"))


def test_shapefile_companion_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "v.dbf").mkdir()
    with pytest.raises(GeosegError, match=r"v\.dbf \(part of .*v\.shp\) is a folder"):
        check_output_paths(str(tmp_path / "m.tif"), vector=str(tmp_path / "v.shp"))


def test_writable_paths_pass_and_nothing_is_made(tmp_path: Path) -> None:
    check_output_paths(str(tmp_path / "a" / "b" / "m.tif"), str(tmp_path / "s.tif"), str(tmp_path / "c" / "v.shp"))
    assert all_files(tmp_path) == []


def test_real_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("this process may write into a 0o555 folder (root with CAP_DAC_OVERRIDE); "
                        "the faked-access tests cover the check")
        with pytest.raises(GeosegError, match="no permission to write in folder"):
            check_output_paths(str(ro / "m.tif"))
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("flag,name", [("-o", "m.tif"), ("--vector", "v.gpkg"), ("--score-raster", "s.tif")])
def test_cli_unwritable_output_fails_before_the_model_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys, flag: str, name: str) -> None:
    scene = write_geotiff(tmp_path / "scene.tif", scene_array(100, 80, roofs=SMALL_ROOFS))
    ro = tmp_path / "ro"
    ro.mkdir()
    out = tmp_path / "out"
    deny_writes_in(monkeypatch, ro)

    def no_model(*args, **kwargs):
        raise AssertionError("the backend was built although an output cannot be written")

    monkeypatch.setattr(geoseg.pipeline, "build_backend", no_model)
    args = {"-o": str(out / "m.tif"), "--vector": None, "--score-raster": None}
    args[flag] = str(ro / name)
    cmd = ["segment", str(scene), "--box", "20,10,60,40", "--backend", "classical"]
    cmd += [x for k, v in args.items() if v for x in (k, v)]
    code, err = run_cli(cmd, capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write output ") and str(ro / name) in lines[0]
    assert all_files(tmp_path) == ["ro", "scene.tif"]


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the writer's ``n``-th scratch-raster creation (1 = mask, 2 = score) fail like a full disk."""
    real_open = writer_mod._open
    calls = {"n": 0}

    def failing_open(path: str, mode: str, **kw):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError(28, "No space left on device", path)
        return real_open(path, mode, **kw)

    monkeypatch.setattr(writer_mod, "_open", failing_open)


@pytest.mark.parametrize("n", [1, 2])
def test_open_that_fails_part_way_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """``__enter__`` failing means ``__exit__`` never runs: ``open`` itself must remove what it made."""
    src = open_source(write_geotiff(tmp_path / "scene.tif", scene_array(100, 80, roofs=SMALL_ROOFS)))
    _fail_on_call(monkeypatch, n)
    w = SceneWriter(src, str(tmp_path / "new" / "m.tif"), [Prompt(box=(5, 5, 50, 50))], {"model": "test"},
                    score_raster=str(tmp_path / "scores" / "s.tif"), vector=str(tmp_path / "v.gpkg"))
    with pytest.raises(OSError, match="No space left on device"):
        with w:
            raise AssertionError("the block must not run")
    assert all_files(tmp_path) == ["scene.tif"]  # no scratch raster, no folder made for the outputs
    w.close(abort=True)  # a caller's own cleanup afterwards (as the batch runner does) is harmless
