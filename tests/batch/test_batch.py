"""Batch segmentation in one process: scene lists, one output set per scene, merged layer, resume, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.batch import (
    MARKER_DIR,
    SUMMARY_FILE,
    BatchSummary,
    SceneOutcome,
    expand_scenes,
    is_batch_input,
    run_batch,
)
from geoseg.errors import GeosegError, InputError
from geoseg.prompts import Prompt

from .conftest import box_in_map, write_scene

ROOF = (slice(100, 300), slice(150, 400))  # rows, cols of the first roof in every scene
ROOF_BOX_PX = (140.0, 90.0, 410.0, 310.0)


def _roof_prompt() -> list[Prompt]:
    return [Prompt(box=box_in_map(ROOF_BOX_PX))]


def _iou(mask: np.ndarray) -> float:
    truth = np.zeros_like(mask, bool)
    truth[ROOF] = True
    m = mask == 1
    return float((m & truth).sum() / (m | truth).sum())


def test_expand_scenes_folder_glob_list(tmp_path, scenes):
    names = ["scene_0.tif", "scene_1.tif", "scene_2.tif"]
    assert [p.name for p in expand_scenes(scenes)] == names
    assert [p.name for p in expand_scenes(str(scenes / "scene_[01].tif"))] == names[:2]
    (scenes / "notes.txt").write_text("not a raster")
    assert [p.name for p in expand_scenes(scenes)] == names  # non-rasters in a folder are ignored
    lst = tmp_path / "list.txt"
    lst.write_text("# my scenes\nscenes/scene_2.tif\n\n%s  # absolute\nscenes/scene_2.tif\n" % (scenes / "scene_0.tif"))
    assert [p.name for p in expand_scenes(lst)] == ["scene_2.tif", "scene_0.tif"]  # list order, no duplicates
    assert [p.name for p in expand_scenes([str(scenes / "scene_1.tif"), lst])] == ["scene_1.tif", "scene_2.tif",
                                                                                  "scene_0.tif"]
    assert is_batch_input(str(scenes)) and is_batch_input(str(scenes / "*.tif")) and is_batch_input(str(lst))
    assert not is_batch_input(str(scenes / "scene_0.tif"))

    lst.write_text("scenes/missing.tif\n")
    with pytest.raises(InputError, match="missing.tif"):
        expand_scenes(lst)
    with pytest.raises(InputError, match="no scenes found"):
        expand_scenes(str(tmp_path / "nothing*.tif"))
    with pytest.raises(InputError, match="does not exist"):
        expand_scenes(tmp_path / "nowhere")


def test_one_output_per_scene_merged_layer_and_resume(tmp_path, scenes):
    import pyogrio.raw
    import shapely

    out = tmp_path / "out"
    merged = tmp_path / "all.geojson"
    s = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg",
                  merged_vector=merged, tile_size=512, overlap=64)
    assert (s.count("done"), s.count("skipped"), s.count("failed")) == (3, 0, 0)
    assert s.backend == "classical" and s.km2_per_min and s.km2_per_min > 0
    for i in range(3):
        with rasterio.open(out / f"scene_{i}.tif") as ds:
            assert ds.crs.to_epsg() == 32640
            assert _iou(ds.read(1)) > 0.9
            assert "classical" in json.dumps(ds.tags())  # provenance travels with the output
        assert (out / f"scene_{i}.gpkg").is_file()
    meta, _, wkb, data = pyogrio.raw.read(merged)
    assert sorted(set(data[meta["fields"].tolist().index("scene")])) == ["scene_0", "scene_1", "scene_2"]
    assert meta["crs"] == "EPSG:4326"
    lon, lat = shapely.from_wkb(wkb[0]).centroid.coords[0]
    assert 54.0 < lon < 55.5 and 25.0 < lat < 25.5  # UTM 40N near Dubai
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert summary["done"] == 3 and len(summary["scenes"]) == 3
    assert "3 scene(s): 3 done" in s.report()

    # resume: nothing to do; a changed scene is redone; other prompts redo everything
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    s2 = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg",
                   tile_size=512, overlap=64)
    assert s2.count("skipped") == 3 and s2.count("done") == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == before
    write_scene(scenes / "scene_1.tif", seed=7)
    s3 = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg",
                   tile_size=512, overlap=64)
    assert [o.status for o in s3.scenes] == ["skipped", "done", "skipped"]
    (out / "scene_2.gpkg").unlink()  # an output went missing: that scene is redone
    s4 = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg",
                   tile_size=512, overlap=64)
    assert [o.status for o in s4.scenes] == ["skipped", "skipped", "done"]
    # other prompts: refused (the folder would mix two option sets) unless overwrite is asked for
    other = [Prompt(box=box_in_map((440, 370, 650, 530)))]
    with pytest.raises(InputError, match=r"3 scene\(s\) segmented with other options \(differs in: prompts\)"):
        run_batch(scenes, out, other, backend="classical", prompt_crs="EPSG:32640", vector="gpkg", tile_size=512,
                  overlap=64)
    s5 = run_batch(scenes, out, other, backend="classical", prompt_crs="EPSG:32640", vector="gpkg", tile_size=512,
                   overlap=64, overwrite=True)
    assert s5.count("done") == 3 and "removed the outputs of 3 scene(s)" in s5.earlier
    s6 = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg",
                   tile_size=512, overlap=64, resume=False, overwrite=True)
    assert s6.count("done") == 3


def test_flatgeobuf_per_scene_and_a_merged_shapefile(tmp_path, scenes):
    import pyogrio
    import pyogrio.raw
    import shapely

    out, merged = tmp_path / "out", tmp_path / "all.shp"
    s = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="fgb",
                  merged_vector=merged, tile_size=512, overlap=64)
    assert s.count("done") == 3
    per_scene = []
    for i in range(3):
        info = pyogrio.read_info(out / f"scene_{i}.fgb")
        assert info["driver"] == "FlatGeobuf" and info["crs"] == "EPSG:32640" and info["features"] >= 1
        per_scene.append(info["features"])
    meta, _, wkb, data = pyogrio.raw.read(merged)
    assert meta["crs"] == "EPSG:4326" and list(meta["fields"]) == ["id", "scene", "scene_id", "prompt", "score", "area"]
    assert sorted(data[1]) == sorted(f"scene_{i}" for i in range(3) for _ in range(per_scene[i]))
    lon, lat = shapely.from_wkb(wkb[0]).centroid.coords[0]
    assert 54.0 < lon < 55.5 and 25.0 < lat < 25.5
    assert sorted(p.name for p in tmp_path.glob("all.*")) == ["all.cpg", "all.dbf", "all.prj", "all.shp", "all.shx"]
    with pytest.raises(GeosegError, match="unsupported vector output"):
        run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="kml")


def test_report_names_the_scenes_that_found_nothing():
    """An empty mask is a result, not a failure; the report says where it happened (first five named)."""
    done = [SceneOutcome(f"/data/s{i}.tif", "done", mask_pixels=0 if i % 2 else 10) for i in range(14)]
    s = BatchSummary([*done, SceneOutcome("/data/bad.tif", "failed", error="cannot read"),
                      SceneOutcome("/data/old.tif", "skipped")], seconds=3.0, backend="classical", workers=1)
    assert "nothing found in 7 of 14 scene(s) done: s1.tif, s3.tif, s5.tif, s7.tif, s9.tif and 2 more" in s.report()
    everything = BatchSummary(done[::2], seconds=1.0, backend="classical", workers=1)
    assert "nothing found" not in everything.report()


def test_failed_scene_is_reported_and_leaves_nothing(tmp_path, scenes):
    (scenes / "scene_1b.tif").write_bytes(b"this is not a GeoTIFF")
    write_scene(scenes / "scene_3.tif", seed=3, shift=5000.0)  # the map-coordinate box falls outside it
    out = tmp_path / "out"
    s = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg")
    status = {Path(o.scene).name: o.status for o in s.scenes}
    assert status == {"scene_0.tif": "done", "scene_1.tif": "done", "scene_1b.tif": "failed", "scene_2.tif": "done",
                      "scene_3.tif": "failed"}
    errors = {Path(o.scene).name: o.error for o in s.failed}
    assert "scene_1b.tif" in errors["scene_1b.tif"] or "cannot" in errors["scene_1b.tif"].lower()
    assert "does not overlap" in errors["scene_3.tif"]
    assert "failed: " in s.report() and "scene_3.tif" in s.report()
    left = sorted(p.name for p in out.iterdir() if p.name != MARKER_DIR)
    assert left == ["scene_0.gpkg", "scene_0.tif", "scene_1.gpkg", "scene_1.tif", "scene_2.gpkg", "scene_2.tif"]
    # failed scenes are retried on the next run; completed ones are skipped
    s2 = run_batch(scenes, out, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", vector="gpkg")
    assert [o.status for o in s2.scenes] == ["skipped", "skipped", "failed", "skipped", "failed"]

    out_fail = tmp_path / "out_fail"
    with pytest.raises(GeosegError, match="scene scene_1b.tif failed"):
        run_batch(scenes, out_fail, _roof_prompt(), backend="classical", prompt_crs="EPSG:32640", on_error="fail")
    assert not (out_fail / "scene_1b.tif").exists()
    assert not [p for p in out_fail.iterdir() if p.name.endswith(".tmp") or ".tmp" in p.name]


def test_bad_batch_arguments(tmp_path, scenes):
    with pytest.raises(GeosegError, match="no prompt"):
        run_batch(scenes, tmp_path / "o", [], backend="classical")
    with pytest.raises(GeosegError, match="on-error"):
        run_batch(scenes, tmp_path / "o", _roof_prompt(), backend="classical", on_error="ignore")
    (tmp_path / "file").write_text("x")
    with pytest.raises(GeosegError, match="is a file"):
        run_batch(scenes, tmp_path / "file", _roof_prompt(), backend="classical")
    with pytest.raises(GeosegError, match="is a file, not a folder"):  # a file above the output folder
        run_batch(scenes, tmp_path / "file" / "o", _roof_prompt(), backend="classical")
    real_access = os.access  # a folder this process may not write to (faked: root may write anywhere)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "access", lambda p, mode, **kw: False if os.fspath(p) == os.fspath(tmp_path) else
                   real_access(p, mode, **kw))
        with pytest.raises(GeosegError, match="no permission to write"):
            run_batch(scenes, tmp_path / "ro", _roof_prompt(), backend="classical")
    assert not (tmp_path / "ro").exists()
    other = tmp_path / "other"
    other.mkdir()
    write_scene(other / "scene_0.tif")
    with pytest.raises(InputError, match="same output scene_0.tif"):
        run_batch([scenes, other], tmp_path / "o", _roof_prompt(), backend="classical")
    assert not os.path.exists(tmp_path / "o" / "scene_0.tif")
