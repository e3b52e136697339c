"""``geoseg segment`` through the real entry point: bad input gives one line, exit != 0 and no file left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

import geoseg
from geoseg.cli import main

from .conftest import BrightSegmenter, roof_box, scene_array, write_geotiff, write_plain


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def box_arg(box) -> str:
    return ",".join(str(v) for v in box)


def test_cli_success_json(utm_scene: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, _ = run_cli(["-q", "segment", str(utm_scene), "--box", box_arg(roof_box(0)), "--backend",
                               "classical", "-o", str(out / "m.tif"), "--vector", str(out / "v.geojson"), "--json"],
                              capsys)
    assert code == 0
    summary = json.loads(stdout)
    assert summary["backend"] == "classical" and summary["n_objects"] == 1 and summary["area_unit"] == "m2"
    assert sorted(p.name for p in out.iterdir()) == ["m.tif", "v.geojson"]


def _bad_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    scene = write_geotiff(tmp / "scene.tif", scene_array(count=3, dtype="uint16"))
    plain = write_plain(tmp / "plain.png", scene_array())
    nodata = write_geotiff(tmp / "nodata.tif", np.zeros((3, 30, 40), np.uint16), nodata=0)
    junk = tmp / "junk.tif"
    junk.write_text("not an image")
    empty = tmp / "empty.tif"
    empty.write_bytes(b"")
    box = ["--box", box_arg(roof_box(0))]
    return [
        ("missing", [str(tmp / "nope.tif"), *box], "does not exist"),
        ("unreadable", [str(junk), *box], "cannot read image"),
        ("zero-byte", [str(empty), *box], "cannot read image"),
        ("box outside", [str(scene), "--box", "1000,1000,1200,1200"], "does not overlap the 320x280 image"),
        ("point outside", [str(scene), "--point", "-5,10"], "outside the 320x280 image"),
        ("map point outside", [str(scene), "--point", "100000,100000", "--prompt-crs", "EPSG:32632"],
         "point(s) (100000, 100000) in EPSG:32632 falls outside the 320x280 image"),
        ("unknown crs", [str(scene), *box, "--prompt-crs", "EPSG:99999"], "unknown CRS"),
        ("untransformable", [str(scene), "--point", "9.2,95.0", "--prompt-crs", "EPSG:4326"], "cannot be transformed"),
        ("no crs to place", [str(plain), *box, "--prompt-crs", "EPSG:4326"], "has no CRS"),
        ("bands range", [str(scene), *box, "--bands", "4,3,2"], "band 4 is out of range"),
        ("bands zero", [str(scene), *box, "--bands", "0"], "start at 1"),
        ("all nodata", [str(nodata), "--box", "1,1,20,20"], "no valid pixels"),
        ("text classical", [str(scene), "--text", "the largest building"], "cannot use text"),
        ("bad vector", [str(scene), *box, "--vector", str(tmp / "out" / "v.kml")], "unsupported vector output"),
        ("geojson no crs", [str(plain), *box, "--vector", str(tmp / "out" / "v.geojson")], "cannot be written as GeoJSON"),
        ("bad box", [str(scene), "--box", "1,2,3"], "cannot read box"),
        ("tile size", [str(scene), *box, "--tile-size", "32"], "too small"),
    ]


def test_cli_bad_input(tmp_path: Path, capsys) -> None:
    cases = _bad_cases(tmp_path)
    inputs = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "out"
    for name, args, message in cases:
        code, stdout, err = run_cli(["segment", *args, "--backend", "classical", "-o", str(out / "m.tif")], capsys)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code != 0, name
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (name, err)
        assert "(" in lines[0]  # the fix is named
        assert not out.exists() or not any(out.iterdir()), name
        assert sorted(p.name for p in tmp_path.iterdir() if p.name != "out") == inputs, name


def test_failure_mid_run_leaves_nothing(utm_scene: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """A backend failing after the writer opened its scratch files: no output and no temp file remain."""
    from geoseg.errors import GeosegError
    from geoseg.segmenters.classical import GrabCutSegmenter

    calls = {"n": 0}
    original = GrabCutSegmenter._predict

    def flaky(self, prompt):
        calls["n"] += 1
        if calls["n"] == 2:
            raise GeosegError("the backend ran out of patience", "try again")
        return original(self, prompt)

    monkeypatch.setattr(GrabCutSegmenter, "_predict", flaky)
    out = tmp_path / "out"
    code, _, err = run_cli(["segment", str(utm_scene), "--box", box_arg(roof_box(0)), "--box", box_arg(roof_box(1)),
                            "--backend", "classical", "-o", str(out / "m.tif"), "--score-raster",
                            str(out / "s.tif"), "--vector", str(out / "v.gpkg")], capsys)
    assert code != 0 and "ran out of patience" in err and calls["n"] == 2
    assert list(out.iterdir()) == []


def test_cli_subprocess_entry_point(utm_scene: Path, tmp_path: Path) -> None:
    """The installed-style entry (python -m geoseg): exit code and message in a real process."""
    import os

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    bad = subprocess.run([sys.executable, "-m", "geoseg", "segment", str(tmp_path / "missing.tif"), "--box", "1,1,9,9",
                          "-o", str(tmp_path / "m.tif")], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error: image") and "does not exist" in bad.stderr
    assert not (tmp_path / "m.tif").exists()
    ok = subprocess.run([sys.executable, "-m", "geoseg", "segment", str(utm_scene), "--box", box_arg(roof_box(1)),
                         "--backend", "classical", "-o", str(tmp_path / "m.tif")], capture_output=True, text=True,
                        env=env)
    assert ok.returncode == 0, ok.stderr
    with rasterio.open(tmp_path / "m.tif") as m:
        assert (m.read(1) == 1).sum() > 1000


class AdvisingBright(BrightSegmenter):
    """The bright-pixel text backend with advice for prompts that find nothing."""

    name = "advising-bright"

    def empty_answer_hint(self, prompt):
        return f"no pixel is bright enough for {prompt.text}"


def test_prompts_that_find_nothing_get_a_note(tmp_path: Path, capsys, monkeypatch) -> None:
    """An empty answer is a valid result (exit 0, an all-zero mask), and the CLI says which prompt found nothing."""
    from geoseg import segmenters

    monkeypatch.setitem(segmenters._REGISTRY, "advising-bright", lambda **_: AdvisingBright())
    dark = write_geotiff(tmp_path / "dark.tif", scene_array(roofs=()))
    bright = write_geotiff(tmp_path / "bright.tif", scene_array())
    args = ["--text", "roofs", "--backend", "advising-bright"]
    code, stdout, _ = run_cli(["segment", str(dark), *args, "-o", str(tmp_path / "d.tif")], capsys)
    assert code == 0 and "0 target pixels" in stdout
    assert stdout.splitlines()[-1] == "note: nothing found for 'roofs': no pixel is bright enough for roofs"
    with rasterio.open(tmp_path / "d.tif") as m:
        assert not (m.read(1) == 1).any()
    code, stdout, _ = run_cli(["segment", str(bright), *args, "-o", str(tmp_path / "b.tif"), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["hints"] == []
    code, stdout, _ = run_cli(["-q", "segment", str(dark), *args, "-o", str(tmp_path / "q.tif")], capsys)
    assert code == 0 and stdout == ""  # --quiet prints nothing, the note included
    # a backend without advice still names the prompt
    res = geoseg.segment(dark, output=tmp_path / "p.tif", text=["roofs", "bright things"], segmenter=BrightSegmenter())
    assert res.hints == ["nothing found for 'roofs'", "nothing found for 'bright things'"]
    # many prompts that find nothing (a prompt file of hundreds of features): five notes, then a count
    many = [a for i in range(7) for a in ("--text", f"roof {i}")]
    code, stdout, _ = run_cli(["segment", str(dark), *many, "--backend", "advising-bright",
                               "-o", str(tmp_path / "many.tif")], capsys)
    notes = [line for line in stdout.splitlines() if line.startswith("note: ")]
    assert code == 0 and len(notes) == 6 and notes[4].startswith("note: nothing found for 'roof 4'")
    assert notes[5] == "note: ... and 2 more prompt(s) found nothing (--json lists them)"
