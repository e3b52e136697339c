"""A rerun into an output folder that holds another option set's outputs: refused, or replaced with --overwrite;
resume works from any working directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyogrio.raw
import pytest

from geoseg.batch import MARKER_DIR, run_batch
from geoseg.errors import InputError
from geoseg.prompts import Prompt

from .conftest import run_cli, write_scene

ROOF = "140,90,410,310"
OTHER_ROOF = "440,370,650,530"


@pytest.fixture()
def two(tmp_path: Path) -> Path:
    d = tmp_path / "scenes"
    d.mkdir()
    for i in range(2):
        write_scene(d / f"s{i}.tif", seed=i)
    return d


def _state(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_changed_options_are_refused_then_replaced_with_overwrite(tmp_path, two, capsys):
    out, merged = tmp_path / "out", tmp_path / "all.gpkg"
    base = ["segment", str(two), "--backend", "classical", "-o", str(out), "--workers", "0"]
    assert run_cli([*base, "--box", ROOF, "--vector", "fgb", "--score-raster", "on"]) == 0
    before = _state(out)
    capsys.readouterr()

    # another prompt and another vector format: one line naming what differs and the flag; nothing touched
    changed = [*base, "--box", OTHER_ROOF, "--vector", "gpkg", "--merged-vector", str(merged)]
    assert run_cli(changed) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the outputs of 2 scene(s) segmented with other options" in err[0]
    assert "differs in: prompts, score-raster, vector" in err[0] and "--overwrite" in err[0]
    assert _state(out) == before and not merged.exists()

    assert run_cli([*changed, "--overwrite"]) == 0
    report = capsys.readouterr().out
    assert "--overwrite: removed the outputs of 2 scene(s) segmented with other options" in report
    # only the new option set is left: no score raster, no FlatGeobuf of the first run
    assert sorted(p.name for p in out.iterdir() if p.name != MARKER_DIR) == ["s0.gpkg", "s0.tif", "s1.gpkg", "s1.tif"]
    meta, _, _, data = pyogrio.raw.read(merged)
    prompts = set(data[list(meta["fields"]).index("prompt")])
    assert prompts and all("440" in p for p in prompts), prompts  # the merged layer holds the second prompt only

    # the same options again: resumed, nothing refused
    assert run_cli([*changed]) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out


def test_a_changed_threshold_is_named(tmp_path, two):
    out = tmp_path / "out"
    box = [Prompt(box=(140.0, 90.0, 410.0, 310.0))]
    run_batch(two, out, box, backend="classical", backend_options={"mask_threshold": 0.5})
    with pytest.raises(InputError, match=r"differs in: mask-threshold\)"):
        run_batch(two, out, box, backend="classical", backend_options={"mask_threshold": 0.7})
    markers = [json.loads(p.read_text()) for p in (out / MARKER_DIR).glob("s[0-9]*.json")]
    assert [m["job_key"]["backend_options"] for m in markers] == [{"mask_threshold": 0.5}] * 2


def test_resume_from_another_working_directory(tmp_path, two, monkeypatch):
    """Markers written with a relative -o still find their outputs when the next run starts elsewhere."""
    box = [Prompt(box=(140.0, 90.0, 410.0, 310.0))]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    first = run_batch("scenes", "out", box, backend="classical", vector="gpkg", merged_vector="all.gpkg")
    assert first.count("done") == 2
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = run_batch(os.path.join("..", "scenes"), os.path.join("..", "out"), box, backend="classical",
                      vector="gpkg", merged_vector="all.gpkg")
    assert again.count("skipped") == 2 and again.count("done") == 0
    assert (tmp_path / "elsewhere" / "all.gpkg").is_file()  # the skipped scenes' layers were found and merged


def test_overwrite_keeps_the_earlier_outputs_when_the_run_cannot_start(tmp_path, two):
    """--overwrite removes the earlier option set only once the run starts: not for an unreachable
    scheduler, not for a backend that does not build."""
    import socket

    from geoseg.errors import GeosegError

    pytest.importorskip("distributed")
    out = tmp_path / "out"
    roof = [Prompt(box=tuple(float(v) for v in ROOF.split(",")))]
    other = [Prompt(box=tuple(float(v) for v in OTHER_ROOF.split(",")))]
    run_batch(two, out, roof, backend="classical", vector="gpkg")
    before = _state(out)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the socket is closed
    with pytest.raises(GeosegError, match="cannot reach the Dask scheduler"):
        run_batch(two, out, other, backend="classical", vector="gpkg", overwrite=True,
                  scheduler=f"tcp://127.0.0.1:{port}")
    assert _state(out) == before
    with pytest.raises(GeosegError):
        run_batch(two, out, other, backend="unified", checkpoint=str(tmp_path / "missing.pt"), vector="gpkg",
                  overwrite=True)
    assert _state(out) == before
    s = run_batch(two, out, other, backend="classical", vector="gpkg", overwrite=True)  # a run that starts replaces
    assert s.count("done") == 2 and s.earlier and "removed the outputs of 2 scene(s)" in s.earlier
