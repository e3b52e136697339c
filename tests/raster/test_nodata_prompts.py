"""A point or box that lies only on nodata pixels (the collar of a rotated scene, a NaN area) finds nothing,
and the "nothing found" note said the backend's generic advice (rephrase, another class) instead of why."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from rasterio.windows import Window

import geoseg
from geoseg.cli import cli
from geoseg.prompts import Prompt
from geoseg.raster.io import open_source
from geoseg.segmenters.base import Prediction, Segmenter

from .conftest import UTM_ORIGIN, UTM_RES, scene_array, write_geotiff

ON_NODATA = "lies on nodata pixels only; move it onto the image's valid data"


class EmptySegmenter(Segmenter):
    """Finds nothing anywhere, with advice of its own: which advice reaches the user is the point."""

    name = "empty"
    capabilities = frozenset({"box", "point"})

    def _set_image(self, image: np.ndarray) -> None:
        pass

    def _predict(self, prompt: Prompt) -> Prediction:
        return Prediction(np.zeros(self.image_shape, bool), 0.0)

    def empty_answer_hint(self, prompt: Prompt) -> str:
        return "the backend's own advice"


def rotated_scene(path: Path, dtype: str = "uint16") -> Path:
    """A 320 x 280 UTM scene whose valid data is a diamond (a rotated acquisition); the corners are nodata."""
    data = scene_array(dtype=dtype, seed=3)
    rows, cols = np.mgrid[0:280, 0:320]
    collar = np.abs(cols - 160) / 160 + np.abs(rows - 140) / 140 > 1
    if dtype.startswith("float"):
        data[:, collar] = np.nan
        return write_geotiff(path, data)
    data[:, collar] = 0
    return write_geotiff(path, data, nodata=0)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])  # a nodata value; NaN in float data
def test_a_prompt_on_nodata_only_is_told_so(tmp_path: Path, dtype: str) -> None:
    scene = rotated_scene(tmp_path / "rot.tif", dtype)
    res = geoseg.segment(scene, output=tmp_path / "m.tif", segmenter=EmptySegmenter(),
                         prompts=[Prompt(box=(2, 2, 50, 40)),  # top-left collar
                                  Prompt(points=((300.5, 270.5),), labels=(1,)),  # bottom-right collar
                                  Prompt(box=(140, 120, 180, 160)),  # the middle: valid data
                                  Prompt(box=(0, 100, 60, 180)),  # collar and valid data
                                  Prompt(points=((5, 5), (160, 140)), labels=(1, 1))])  # one point on data
    assert res.prompt_scores == [None] * 5
    assert [ON_NODATA in h for h in res.hints] == [True, True, False, False, False]
    assert res.hints[0] == (f"nothing found for 'box (2.0,2.0,50.0,40.0)': it {ON_NODATA} "
                            "(check --prompt-crs if map coordinates were meant)")
    assert all(h.endswith("the backend's own advice") for h in res.hints[2:])


def test_a_negative_point_on_nodata_does_not_count(tmp_path: Path) -> None:
    """Only the pixels a prompt marks as the target decide: a negative click in the collar is no reason."""
    scene = rotated_scene(tmp_path / "rot.tif")
    res = geoseg.segment(scene, output=tmp_path / "m.tif", segmenter=EmptySegmenter(),
                         prompts=[Prompt(points=((160, 140), (3, 3)), labels=(1, 0)),
                                  Prompt(points=((150, 130), (3, 3)), labels=(0, 1))])
    assert [ON_NODATA in h for h in res.hints] == [False, True]


def test_the_cli_says_a_map_point_lies_on_nodata(tmp_path: Path) -> None:
    """A point in map coordinates that lands in the collar: the note names nodata and --prompt-crs."""
    scene = rotated_scene(tmp_path / "rot.tif")
    x, y = UTM_ORIGIN[0] + 6.5 * UTM_RES, UTM_ORIGIN[1] - 4.5 * UTM_RES  # pixel (6.5, 4.5)
    res = CliRunner().invoke(cli, ["-q", "segment", str(scene), "--point", f"{x},{y}", "--prompt-crs", "EPSG:32632",
                                   "--backend", "classical", "-o", str(tmp_path / "m.tif"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["mask_pixels"] == 0 and summary["prompt_scores"] == [None]
    assert summary["hints"] == [f"nothing found for 'points +(6.5,4.5)': it {ON_NODATA} "
                                "(check --prompt-crs if map coordinates were meant)"]


def test_the_nodata_check_reads_small_windows_and_stops_at_valid_data(tmp_path: Path, monkeypatch) -> None:
    """A box over most of a scene is checked window by window at full resolution, not read whole or decimated
    (a decimated read could miss a small valid area); it stops at the first valid pixel."""
    data = np.zeros((3, 280, 320), np.uint16)
    data[:, 279, 319] = 500  # one valid pixel, in the last corner
    scene = write_geotiff(tmp_path / "corner.tif", data, nodata=0)
    with open_source(scene) as src:
        reads: list[tuple[int, int]] = []
        read_valid = src.read_valid
        monkeypatch.setattr(src, "read_valid",
                            lambda win, *a, **k: reads.append((int(win.height), int(win.width))) or read_valid(win, *a, **k))
        assert src.any_valid(Window(0, 0, 320, 280), chunk=64)
        assert max(h * w for h, w in reads) <= 64 * 64 and len(reads) == 5 * 5  # the valid pixel is read last
        reads.clear()
        assert not src.any_valid(Window(0, 0, 319, 280), chunk=64)
        assert src.any_valid(Window(300, 270, 500, 500))  # clipped to the scene
        assert not src.any_valid(Window(400, 0, 10, 10))  # off the scene
