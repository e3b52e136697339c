"""Malformed Python-API input to SegmentPredictor / Prompt: a PromptError or InputError naming it.

Before, a three-number box, a bare ``(x, y)`` given as ``points``, an unknown key in a prompt
dict or a list given as the image surfaced as Python's own unpacking/type errors, and an
all-NaN array was reported under an internal ``/vsimem`` path.
"""

from __future__ import annotations

import numpy as np
import pytest

import geoseg
from geoseg.errors import InputError, PromptError
from geoseg.prompts import Prompt

from .conftest import roof_box, scene_array, write_geotiff


@pytest.fixture(scope="module")
def predictor():
    p = geoseg.SegmentPredictor(backend="classical")
    p.set_image(np.moveaxis(scene_array(), 0, 2))
    return p


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"box": (1, 2, 3)}, "cannot read box (1, 2, 3)"),
    ({"box": "1,2,3,4"}, "cannot read box '1,2,3,4'"),
    ({"points": [(1, 2, 3)]}, "cannot read point (1, 2, 3)"),
    ({"points": ["a,b"]}, "cannot read point 'a,b'"),
    ({"points": (100, 80)}, "points=(100, 80) is a list of numbers, not of points"),
    ({"negative_points": [(1,)]}, "cannot read negative point (1,)"),
])
def test_malformed_keywords_are_prompt_errors(predictor, kwargs, words):
    with pytest.raises(PromptError) as err:
        predictor.predict(**kwargs)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("d", "words"), [
    ({"bx": [1, 2, 3, 4]}, "unknown prompt key(s) 'bx'"),
    ({"box": [1, 2]}, "cannot read box [1, 2]"),
    ({"points": [[5, 5]], "labels": ["yes"]}, "cannot read prompt labels"),
    ({"points": 5}, "are not a list"),
    ({"text": 5}, "text prompt is a int"),
    (["box", 1, 2, 3, 4], "a prompt is a list"),
])
def test_malformed_prompt_dicts_are_prompt_errors(predictor, d, words):
    with pytest.raises(PromptError) as err:
        predictor.predict_many([d])
    assert words in str(err.value)


def test_a_good_dict_still_reads_and_round_trips(predictor):
    p = Prompt(points=((120.0, 80.0), (10.0, 10.0)), labels=(1, 0), box=roof_box(0), extra={"feature": 7})
    assert Prompt.from_dict(p.to_dict()) == p
    assert predictor.predict_many([p.to_dict()])[0].pixels > 0


def test_image_of_wrong_type_is_an_input_error():
    p = geoseg.SegmentPredictor(backend="classical")
    with pytest.raises(InputError, match="cannot use a list as an image"):
        p.set_image([[1, 2], [3, 4]])


@pytest.mark.parametrize(("value", "nodata"), [(np.nan, None), (0.0, 0.0)])
def test_array_without_valid_pixels_names_the_array(value, nodata):
    p = geoseg.SegmentPredictor(backend="classical")
    with pytest.raises(InputError) as err:
        p.set_image(np.full((32, 32, 3), value, np.float32), nodata=nodata)
    assert "the array image has no valid pixels" in str(err.value)
    assert "vsimem" not in str(err.value)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"boxes": (1, 2, 30, 40)}, "boxes=(1, 2, 30, 40) is a list of numbers, not of boxes"),
    ({"boxes": [(1, 2, 3)]}, "cannot read box (1, 2, 3)"),
    ({"points": (5, 5)}, "points=(5, 5) is a list of numbers, not of points"),
    ({"points": 5}, "points=5 is not a list"),
    ({"text": 5}, "the text prompt is a int"),
])
def test_segment_keywords_malformed(tmp_path, kwargs, words):
    scene = write_geotiff(tmp_path / "s.tif", scene_array())
    with pytest.raises(PromptError) as err:
        geoseg.segment(scene, output=tmp_path / "m.tif", backend="classical", **kwargs)
    assert words in str(err.value)
    assert not (tmp_path / "m.tif").exists()


def test_write_refuses_results_of_another_image(tmp_path):
    """A result from another scene was pasted into this one's grid and written without a word."""
    from .conftest import geo_transform

    a = write_geotiff(tmp_path / "a.tif", scene_array())
    b = write_geotiff(tmp_path / "b.tif", scene_array(200, 100, seed=1, roofs=((20, 60, 20, 60),)), crs="EPSG:4326", transform=geo_transform())
    pa, pb = geoseg.SegmentPredictor(backend="classical"), geoseg.SegmentPredictor(backend="classical")
    pa.set_image(a)
    pb.set_image(b)
    theirs = pb.predict(box=(10, 10, 50, 50))
    with pytest.raises(geoseg.errors.GeosegError, match=r"a result belongs to another image \(200x100, EPSG:4326\)"):
        pa.write([pa.predict(box=roof_box(0)), theirs], tmp_path / "m.tif")
    with pytest.raises(geoseg.errors.GeosegError, match="cannot write a str as a result"):
        pa.write(["m"], tmp_path / "m.tif")
    assert not (tmp_path / "m.tif").exists()
    assert pa.write([pa.predict(box=roof_box(0))], tmp_path / "m.tif").mask_pixels > 0
