"""Point answers kept to the object under the clicks: class region, then the parts the points touch."""

from __future__ import annotations

import numpy as np

from geoseg.prompts import Prompt
from geoseg.unified.pointed import (
    ClassMap,
    PointedConfig,
    class_region,
    keep_pointed,
    pointed_parts,
    positive_pixels,
)


def _blobs() -> np.ndarray:
    """Three separate parts: left square, right square, a speck at the bottom."""
    m = np.zeros((60, 80), bool)
    m[10:30, 5:25] = True
    m[10:30, 50:70] = True
    m[52:55, 38:41] = True
    return m


def _semantic(h: int = 60, w: int = 80, confidence: float = 0.8) -> ClassMap:
    """Two classes: class 1 in two separate vertical bands (x < 30 and x >= 45), class 0 between."""
    sem = np.zeros((2, h, w), np.float32)
    band = np.zeros((h, w), bool)
    band[:, :30] = True
    band[:, 45:] = True
    sem[1][band], sem[0][band] = confidence, 1 - confidence
    sem[0][~band], sem[1][~band] = 0.9, 0.1
    return ClassMap.from_probs(sem)


def test_positive_pixels_drop_negative_points_and_clip_to_the_image():
    p = Prompt(points=((10.7, 5.2), (200.0, -3.0), (4.0, 4.0)), labels=(1, 1, 0))
    assert positive_pixels(p, 60, 80) == [(10, 5), (79, 0)]


def test_pointed_parts_keep_what_a_point_touches():
    m = _blobs()
    kept = pointed_parts(m, [(15, 20)])
    assert kept[20, 15] and not kept[20, 60] and not kept[53, 39]
    both = pointed_parts(m, [(15, 20), (60, 20)])
    assert both[20, 15] and both[20, 60] and not both[53, 39]


def test_pointed_parts_take_the_nearest_part_when_no_point_lands_on_one():
    kept = pointed_parts(_blobs(), [(45, 20)])  # in the gap, nearer the right square (x=50) than the left (x=24)
    assert kept[20, 60] and not kept[20, 15] and not kept[53, 39]


def test_class_region_is_the_connected_region_under_the_first_point():
    region, conf = class_region(_semantic(), [(10, 10)])
    assert conf == float(np.float32(0.8)) and region[:, :30].all() and not region[:, 30:].any()
    region, _ = class_region(_semantic(), [(10, 10), (60, 10), (35, 10)])  # a point on another class adds nothing
    assert region[:, :30].all() and region[:, 45:].all() and not region[:, 30:45].any()


def test_a_confident_class_region_cuts_the_answer():
    answer = np.zeros((60, 80), bool)
    answer[10:30, 5:40] = True  # spills from the left band (class 1) into the middle (class 0)
    out, done = keep_pointed(answer, Prompt(points=((10.0, 20.0),), labels=(1,)), _semantic())
    assert out[20, 10] and not out[:, 30:].any() and out.sum() == 20 * 25
    assert done["class_region"] == 0.8


def test_an_unsure_class_region_leaves_the_answer_to_the_pointed_parts():
    answer = np.zeros((60, 80), bool)
    answer[10:30, 5:40] = True
    out, done = keep_pointed(answer, Prompt(points=((10.0, 20.0),), labels=(1,)), _semantic(confidence=0.55),
                             PointedConfig(class_confidence=0.6))
    assert (out == answer).all() and done == {}


def test_an_answer_outside_the_class_region_is_kept():
    answer = np.zeros((60, 80), bool)
    answer[10:30, 32:42] = True  # entirely in the middle class; the point is on the left band
    out, _ = keep_pointed(answer, Prompt(points=((10.0, 20.0),), labels=(1,)), _semantic())
    assert (out == answer).all()


def test_stray_parts_are_dropped_without_a_semantic_head():
    out, done = keep_pointed(_blobs(), Prompt(points=((15.0, 20.0),), labels=(1,)), None)
    assert out[20, 15] and not out[20, 60] and not out[53, 39]
    assert done == {"dropped_px": 400 + 9}


def test_box_prompts_and_negative_only_prompts_are_left_alone():
    m = _blobs()
    for prompt in (Prompt(box=(0.0, 0.0, 30.0, 40.0), points=((15.0, 20.0),), labels=(1,)),
                   Prompt(points=((15.0, 20.0),), labels=(0,))):
        out, done = keep_pointed(m, prompt, _semantic())
        assert (out == m).all() and done == {}
