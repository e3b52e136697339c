"""SceneWriter and the scene presence rule: held answers are painted only for prompts some window proved present.

A seeded 3-band GeoTIFF stands in for a scene; the window results are what ``predict_tasks`` hands
the writer for a segmenter that decides presence per scene (``present`` / ``held``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

from geoseg.errors import InputError
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.raster.writer import SceneWriter, WindowResult
from geoseg.unified.decision import ScenePresence
from geoseg.windows import scene_gate

RULE = {"rule": "hysteresis", "low_factor": 0.3, "low": 0.09, "threshold": 0.3}
LEFT, RIGHT = Window(0, 0, 32, 64), Window(32, 0, 32, 64)


@pytest.fixture
def scene(tmp_path):
    path = tmp_path / "scene.tif"
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:32640",
                       transform=from_origin(500000, 2800000, 1, 1)) as ds:
        ds.write(rng.integers(0, 255, (3, 64, 64), dtype=np.uint8))
    src = open_source(path)
    yield src
    src.close()


def _block(r0: int, r1: int) -> np.ndarray:
    m = np.zeros((64, 32), bool)
    m[r0:r1, 4:28] = True
    return m


def _write(scene, tmp_path, results, name="mask.tif"):
    prompts = [Prompt(text="the water"), Prompt(text="buildings")]
    with SceneWriter(scene, str(tmp_path / name), prompts, {"model": "unified", "scene_presence": RULE},
                     vector=str(tmp_path / (name + ".gpkg"))) as w:
        for r in results:
            w.add(r)
        summary = w.finish()
    with rasterio.open(tmp_path / name) as ds:
        return ds.read(1), json.loads(ds.tags()["provenance_json"]), summary


def test_held_answers_follow_the_scene(scene, tmp_path):
    water_pass = WindowResult(0, LEFT, _block(0, 40), 0.9, present=True)
    water_held = WindowResult(0, RIGHT, np.zeros((64, 32), bool), 0.28, present=False, held=_block(10, 50))
    # buildings: no window reaches the threshold, so its grey-band answer is dropped
    bld_low = WindowResult(1, LEFT, np.zeros((64, 32), bool), 0.05, present=False)
    bld_held = WindowResult(1, RIGHT, np.zeros((64, 32), bool), 0.2, present=False, held=_block(52, 60))
    mask, prov, summary = _write(scene, tmp_path, [water_held, bld_low, water_pass, bld_held])
    assert (mask[:, 32:] == 1).sum() == _block(10, 50).sum()  # the held water window is painted
    assert not mask[52:, 32:].any()  # the buildings' held answer is not
    assert mask.sum() == _block(0, 40).sum() + _block(10, 50).sum()
    assert prov["scene_presence"] == {**RULE, "held_windows": 2, "painted_windows": 1}
    assert summary.prompt_scores[1] is None and summary.prompt_scores[0] is not None
    assert summary.n_polygons >= 1

    # the order results arrive in does not matter
    again, _, _ = _write(scene, tmp_path, [bld_held, water_pass, water_held, bld_low], "again.tif")
    assert np.array_equal(mask, again)


def test_the_rule_is_recorded_only_where_it_could_act(scene, tmp_path):
    one = WindowResult(0, Window(0, 0, 64, 64), np.zeros((64, 64), bool), 0.2, present=False,
                       held=np.ones((64, 64), bool))
    mask, prov, _ = _write(scene, tmp_path, [one])
    assert not mask.any() and "scene_presence" not in prov  # one window: answered as before
    plain = WindowResult(0, Window(0, 0, 64, 64), np.ones((64, 64), bool), 0.9)  # no presence decision
    mask, prov, _ = _write(scene, tmp_path, [plain], "plain.tif")
    assert mask.all() and "scene_presence" not in prov


def test_scene_gate_reads_the_segmenters_answer():
    held = np.ones((4, 4), bool)
    assert scene_gate({}) == (None, None)
    assert scene_gate({"presence_gate": "pass"}) == (True, None)
    present, got = scene_gate({"presence_gate": "hold", "held_mask": held})
    assert present is False and got is not None and got.all()
    assert scene_gate({"presence_gate": "drop"}) == (False, None)


def test_scene_presence_bands_and_bad_factor():
    rule = ScenePresence(0.3)
    assert [rule.gate(p, 0.3) for p in (0.3, 0.299, 0.09, 0.089)] == ["pass", "hold", "hold", "drop"]
    assert rule.to_dict(0.3) == {"rule": "hysteresis", "low_factor": 0.3, "low": 0.09, "threshold": 0.3}
    assert ScenePresence(0.0).gate(0.0, 0.3) == "hold"
    with pytest.raises(InputError, match="outside"):
        ScenePresence(1.5)


def test_an_aborted_scene_leaves_no_held_scratch_file(scene, tmp_path):
    out = tmp_path / "out"
    held = WindowResult(0, RIGHT, np.zeros((64, 32), bool), 0.2, present=False, held=_block(10, 50))
    with pytest.raises(RuntimeError, match="worker died"), SceneWriter(scene, str(out / "mask.tif"),
                                                                       [Prompt(text="the water")], {}) as w:
        w.add(held)
        assert len(list(out.iterdir())) == 2  # the scratch mask and the held answers
        raise RuntimeError("worker died")
    assert list(out.iterdir()) == []
