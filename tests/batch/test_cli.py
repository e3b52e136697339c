"""``geoseg segment`` on a folder, glob or list file: batch mode through the real command line."""

from __future__ import annotations

import json

import pytest

from .conftest import box_in_map, run_cli, write_scene


def _box_args() -> list[str]:
    return ["--box", ",".join(str(v) for v in box_in_map((140, 90, 410, 310))), "--prompt-crs", "EPSG:32640",
            "--backend", "classical"]


def test_list_file_on_a_two_worker_local_cluster(tmp_path, capsys):
    pytest.importorskip("distributed")
    for i in range(2):
        write_scene(tmp_path / f"a{i}.tif", seed=i)
    lst = tmp_path / "scenes.txt"
    lst.write_text("a0.tif\na1.tif\n")
    out, merged = tmp_path / "out", tmp_path / "merged.gpkg"
    rc = run_cli(["-q", "segment", str(lst), *_box_args(), "-o", str(out), "--vector", "gpkg", "--merged-vector",
               str(merged), "--workers", "2", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert summary["done"] == 2 and summary["workers"] == 2 and summary["backend"] == "classical"
    assert summary["merged_vector"] == str(merged) and merged.is_file()
    assert sorted(p.name for p in out.glob("a*")) == ["a0.gpkg", "a0.tif", "a1.gpkg", "a1.tif"]


def test_glob_resume_and_on_error(tmp_path, capsys):
    for i in range(2):
        write_scene(tmp_path / f"b{i}.tif", seed=i)
    out = tmp_path / "out"
    args = ["segment", str(tmp_path / "b*.tif"), *_box_args(), "-o", str(out), "--workers", "0"]
    assert run_cli(args) == 0
    text = capsys.readouterr().out
    assert "2 scene(s): 2 done, 0 skipped" in text
    assert run_cli(args) == 0
    assert "0 done, 2 skipped" in capsys.readouterr().out
    assert run_cli([*args, "--no-resume"]) == 0
    assert "2 done, 0 skipped" in capsys.readouterr().out

    write_scene(tmp_path / "b2.tif", seed=2, shift=9000.0)  # the box misses this scene
    assert run_cli(args) == 1  # the batch finishes, and says some scenes failed
    captured = capsys.readouterr()
    assert "1 failed" in captured.out and "b2.tif" in captured.out and "does not overlap" in captured.out
    assert run_cli([*args, "--on-error", "fail"]) == 2
    assert "error: scene b2.tif failed" in capsys.readouterr().err
    assert not (out / "b2.tif").exists()


def test_batch_needs_an_output_folder_and_a_vector_format(tmp_path, capsys):
    write_scene(tmp_path / "c0.tif")
    (tmp_path / "taken").write_text("x")
    assert run_cli(["segment", str(tmp_path), *_box_args(), "-o", str(tmp_path / "taken"), "--workers", "0"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert run_cli(["segment", str(tmp_path), *_box_args(), "-o", str(tmp_path / "o"), "--vector", "x.kml",
                 "--workers", "0"]) == 2
    assert "--vector gpkg, geojson, fgb or shp" in capsys.readouterr().err


def test_prompt_file_alone_drives_a_batch(tmp_path, capsys):
    """``--prompt-file`` with no other prompt: each scene gets the features on it; one none touches fails."""
    import numpy as np
    import pyogrio.raw
    import shapely

    for i in range(2):
        write_scene(tmp_path / f"p{i}.tif", seed=i)
    write_scene(tmp_path / "far.tif", seed=2, shift=50000.0)
    layer = tmp_path / "roofs.gpkg"
    pyogrio.raw.write(layer, shapely.to_wkb(np.array([shapely.box(*box_in_map((140, 90, 410, 310)))], dtype=object)),
                      [], [], geometry_type="Polygon", crs="EPSG:32640")
    out = tmp_path / "out"
    rc = run_cli(["-q", "segment", str(tmp_path / "*.tif"), "--prompt-file", str(layer), "--backend", "classical",
               "-o", str(out), "--workers", "0", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert rc == 1  # one scene failed
    status = {s["scene"].rsplit("/", 1)[-1]: s for s in summary["scenes"]}
    assert status["p0.tif"]["status"] == status["p1.tif"]["status"] == "done"
    assert status["p0.tif"]["mask_pixels"] > 200 * 250 * 0.9
    assert status["far.tif"]["status"] == "failed" and "none of the 1 feature(s)" in status["far.tif"]["error"]
    assert not (out / "far.tif").exists()
