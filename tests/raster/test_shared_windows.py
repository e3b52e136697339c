"""Backends that resize every window to one input (SAM) share windows between point/box prompts.

Before, ``geoseg segment --backend sam`` with three boxes and a point on one 512-px tile ran the
ViT image encoder four times (211 s on the 2-core machine), once per prompt's context crop.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import geoseg
from geoseg.pipeline import plan_windows
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

from .conftest import roof_box, scene_array, write_geotiff


class CountingBoxes(Segmenter):
    """Answers a box with the box and a point with a 9-px square; counts its image embeddings."""

    name = "counting"
    capabilities = frozenset({"point", "box"})

    def __init__(self, shares: bool) -> None:
        super().__init__()
        self.shares_windows = shares  # type: ignore[misc]
        self.embedded: list[tuple[int, int]] = []

    def _set_image(self, image: np.ndarray) -> None:
        self.embedded.append(image.shape[:2])

    def _predict(self, prompt: Prompt) -> Prediction:
        h, w = self.image_shape
        m = np.zeros((h, w), bool)
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        else:
            (x, y), = prompt.points
            x0, y0, x1, y1 = int(x) - 4, int(y) - 4, int(x) + 5, int(y) + 5
        m[max(y0, 0):y1, max(x0, 0):x1] = True
        return Prediction(mask=m, score=1.0)


PROMPTS = [Prompt(box=roof_box(0)), Prompt(box=roof_box(1)), Prompt(box=(20.0, 200.0, 60.0, 250.0)),
           Prompt(points=((150.0, 150.0),), labels=(1,))]


@pytest.mark.parametrize("shares", [False, True])
def test_prompts_on_a_small_scene_share_one_embedding(tmp_path: Path, shares: bool) -> None:
    scene = write_geotiff(tmp_path / "s.tif", scene_array())
    seg = CountingBoxes(shares)
    geoseg.segment(scene, PROMPTS, output=tmp_path / "m.tif", segmenter=seg)
    if shares:
        assert seg.embedded == [(280, 320)]  # the whole scene, once
    else:
        assert len(seg.embedded) == 4  # one crop per prompt
    import rasterio

    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1) == 1
    x0, y0, x1, y1 = (int(v) for v in roof_box(0))
    assert mask[y0:y1, x0:x1].all()  # the answer lands where it belongs either way
    assert mask[146:155, 146:155].all()


def test_large_scene_prompts_share_the_tile_that_holds_them() -> None:
    prompts = [Prompt(box=(100.0, 100.0, 200.0, 200.0)), Prompt(box=(300.0, 250.0, 380.0, 330.0)),
               Prompt(box=(1500.0, 1500.0, 1600.0, 1600.0)), Prompt(box=(10.0, 10.0, 1900.0, 1900.0))]
    tasks = plan_windows(2000, 2000, prompts, tile_size=1024, overlap=128, shared=True)
    reads = [(int(t.read.col_off), int(t.read.row_off), int(t.read.width), int(t.read.height)) for t in tasks]
    assert reads[0] == reads[1] and reads[0][2:] == (1024, 1024)  # one tile for the two top-left boxes
    assert reads[2] != reads[0] and reads[2][2:] == (1024, 1024)
    assert tasks[3].out_shape[0] <= 1024 and reads[3][2] > 1024  # no tile holds it: its own decimated window
    alone = plan_windows(2000, 2000, prompts, tile_size=1024, overlap=128)
    assert len({t.key for t in alone}) == 4


def test_registry_knows_which_backends_share_windows() -> None:
    """A batch client plans windows before any worker builds a backend: the registry must agree with the classes."""
    from geoseg.segmenters import _REGISTRY, _resolve, shares_windows
    from geoseg.segmenters.classical import GrabCutSegmenter

    assert shares_windows("sam") and shares_windows("sam2")
    assert not shares_windows(None) and not shares_windows("classical") and not shares_windows("model.pt")
    assert not GrabCutSegmenter.shares_windows
    for name in ("sam", "sam2"):
        assert _resolve(_REGISTRY[name]).shares_windows


def test_batch_shares_windows_for_such_backends(tmp_path: Path) -> None:
    from geoseg.batch import run_batch
    from geoseg.segmenters import _REGISTRY, _SHARES_WINDOWS, register_segmenter

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    write_geotiff(scenes / "a.tif", scene_array())
    made: list[CountingBoxes] = []

    def factory(**_: object) -> CountingBoxes:
        made.append(CountingBoxes(True))
        return made[-1]

    register_segmenter("counting-shared", factory, shares_windows=True)
    try:
        run_batch(scenes, tmp_path / "out", PROMPTS[:3], backend="counting-shared", workers=0)
    finally:
        _REGISTRY.pop("counting-shared")
        _SHARES_WINDOWS.discard("counting-shared")
    assert sum(len(s.embedded) for s in made) == 1 and made[0].embedded == [(280, 320)]
