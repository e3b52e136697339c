"""A backend fallback is told once, in the printed summary: not per scene, not per Dask worker, not only in --json."""

from __future__ import annotations

import pytest

from .conftest import run_cli, write_scene

NOTE = "the unified backend is not available"


def test_fallback_note_printed_once_on_dask(tmp_path, monkeypatch, capfd):
    pytest.importorskip("distributed")
    monkeypatch.setenv("GEOSEG_TEXT_ENCODER", str(tmp_path / "no-encoder"))  # the default unified model cannot load
    for i in range(2):
        write_scene(tmp_path / f"s{i}.tif", width=300, height=300, seed=i)
    rc = run_cli(["segment", str(tmp_path / "*.tif"), "--box", "140,90,290,290", "-o", str(tmp_path / "out"),
                  "--workers", "1"])
    out, err = capfd.readouterr()  # fd level: the workers are other processes writing to the same stderr
    assert rc == 0 and "2 done" in out and "[backend classical, workers 1]" in out
    notes = [line for line in out.splitlines() if NOTE in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "classical backend" in notes[0]
    assert NOTE not in err
