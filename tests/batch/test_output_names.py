"""Scene names that used to collide with the batch's own files or with one another's outputs."""

from __future__ import annotations

import pytest

from geoseg.batch import run_batch
from geoseg.errors import InputError
from geoseg.prompts import Prompt

from .conftest import write_scene

BOX = [Prompt(box=(140.0, 90.0, 410.0, 310.0))]


def test_a_scene_named_summary_resumes_like_any_other(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    for i, name in enumerate(["summary.tif", "my scene (2).tif", "ünïcode.tif"]):
        write_scene(d / name, width=450, height=350, seed=i)
    out = tmp_path / "out"
    assert run_batch(d, out, BOX, backend="classical").count("done") == 3
    again = run_batch(d, out, BOX, backend="classical")
    assert again.count("skipped") == 3, [(o.scene, o.status) for o in again.scenes]


def test_outputs_that_would_overwrite_one_another_are_refused(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    write_scene(d / "ndvi.tif", width=450, height=350)
    write_scene(d / "ndvi_score.tif", width=450, height=350, seed=1)
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"two scenes would write the same output ndvi_score.tif"):
        run_batch(d, out, BOX, backend="classical", score_raster=True)
    assert not out.exists()
    assert run_batch(d, out, BOX, backend="classical").count("done") == 2  # without score rasters they do not clash
    with pytest.raises(InputError, match=r"--merged-vector .*ndvi.gpkg is the vector output of .*ndvi.tif"):
        run_batch(d, out, BOX, backend="classical", vector="gpkg", merged_vector=out / "ndvi.gpkg")
