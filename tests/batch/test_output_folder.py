"""Batch runs whose output folder is, or lies inside, the scenes' folder; an interrupted run's temp files;
a malformed scheduler address."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from geoseg.batch import expand_scenes, run_batch
from geoseg.errors import GeosegError, InputError
from geoseg.prompts import Prompt

from .conftest import write_scene

BOX = [Prompt(box=(140.0, 90.0, 410.0, 310.0))]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _two_scenes(folder: Path) -> list[Path]:
    folder.mkdir()
    return [write_scene(folder / f"s{i}.tif", width=450, height=350, seed=i) for i in range(2)]


def test_output_folder_equal_to_the_scenes_folder_never_overwrites_a_scene(tmp_path):
    scenes = _two_scenes(tmp_path / "scenes")
    before = {p: _digest(p) for p in scenes}
    with pytest.raises(InputError, match="would overwrite the scene"):
        run_batch(tmp_path / "scenes", tmp_path / "scenes", BOX, backend="classical")
    assert {p: _digest(p) for p in scenes} == before
    assert not (tmp_path / "scenes" / ".geoseg-batch").exists()


def test_a_rerun_does_not_take_its_own_outputs_for_scenes(tmp_path):
    _two_scenes(tmp_path / "scenes")
    pattern = str(tmp_path / "scenes" / "**" / "*.tif")  # also matches scenes/out/*.tif
    out = tmp_path / "scenes" / "out"
    first = run_batch(pattern, out, BOX, backend="classical", score_raster=True)
    assert first.count("done") == 2
    again = run_batch(pattern, out, BOX, backend="classical", score_raster=True)
    assert [Path(s.scene).name for s in again.scenes] == ["s0.tif", "s1.tif"]
    assert again.count("skipped") == 2 and not again.failed


def test_an_interrupted_runs_temp_files_are_removed_and_never_read_as_scenes(tmp_path):
    _two_scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    out.mkdir()
    # what a run killed with SIGKILL while writing s1 leaves behind (writer.temp_path_for names)
    stale = [out / ".s1.tif.ab12cd.tmp.tif", out / ".s1_score.tif.x_9y.tmp.tif", out / ".s1.gpkg.q1w2.tmp.gpkg"]
    for p in stale:
        p.write_bytes(b"partial")
    other = out / ".keep.tif.ab12cd.tmp.tif"  # not an output of this batch: left alone
    other.write_bytes(b"someone else's")
    summary = run_batch(tmp_path / "scenes", out, BOX, backend="classical", score_raster=True, vector="gpkg")
    assert summary.count("done") == 2
    assert not any(p.exists() for p in stale)
    assert other.exists()
    # hidden temp files in a scenes folder are not scenes
    (tmp_path / "scenes" / ".s0.tif.zz99.tmp.tif").write_bytes(b"partial")
    assert [p.name for p in expand_scenes(tmp_path / "scenes")] == ["s0.tif", "s1.tif"]


@pytest.mark.parametrize("address", ["notanaddress", "tcp://127.0.0.1:notaport"])
def test_a_malformed_scheduler_address_is_a_one_line_error(address):
    pytest.importorskip("distributed")
    from geoseg.cluster import dask_client

    with pytest.raises(GeosegError, match="cannot reach the Dask scheduler"):
        with dask_client(address):
            pass
