"""The merged layer: ids unique across scenes in every format, and (scene, scene_id) joins back to each scene."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from geoseg.batch import run_batch
from geoseg.prompts import Prompt

from .conftest import box_in_map

TWO_ROOFS = [Prompt(box=box_in_map((140.0, 90.0, 410.0, 310.0))), Prompt(box=box_in_map((440.0, 370.0, 650.0, 530.0)))]


@pytest.mark.parametrize("ext", ["geojson", "gpkg", "fgb", "shp"])
def test_merged_ids_are_unique_and_join_back_to_their_scene(tmp_path, scenes, ext):
    import pyogrio.raw

    out, merged = tmp_path / "out", tmp_path / f"all.{ext}"
    s = run_batch(scenes, out, TWO_ROOFS, backend="classical", prompt_crs="EPSG:32640", merged_vector=merged,
                  tile_size=512, overlap=64)
    assert s.count("done") == 3
    with warnings.catch_warnings(record=True) as caught:  # GDAL's warnings reach Python through pyogrio's
        warnings.simplefilter("always")  # error handler, which swallows an exception: record them instead
        meta, _, _, data = pyogrio.raw.read(merged)
    assert not [str(w.message) for w in caught]  # e.g. "Several features with id = 1 have been found"
    col = dict(zip(meta["fields"].tolist(), data, strict=True))
    assert list(col)[:3] == ["id", "scene", "scene_id"]
    ids = np.asarray(col["id"])
    per_scene = {f"scene_{i}": pyogrio.raw.read(out / f"scene_{i}.gpkg") for i in range(3)}
    assert len(ids) == sum(len(d[2]) for d in per_scene.values()) >= 6  # every polygon of every scene
    assert sorted(ids.tolist()) == list(range(1, len(ids) + 1))  # unique across scenes
    for scene, scene_id, area in zip(col["scene"], col["scene_id"], col["area"], strict=True):
        m, _, _, d = per_scene[scene]
        own = dict(zip(m["fields"].tolist(), d, strict=True))
        row = own["id"].tolist().index(scene_id)
        assert own["area"][row] == pytest.approx(area)  # the same polygon in its scene's own layer
