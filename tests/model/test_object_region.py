"""Interactive answers kept to the class region the prompt marks (points: also the parts they touch)."""

from __future__ import annotations

import numpy as np

from geoseg.prompts import Prompt
from geoseg.unified.object_region import (
    ClassMap,
    ObjectRegionConfig,
    box_region,
    class_region,
    keep_object_region,
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
    out, done = keep_object_region(answer, Prompt(points=((10.0, 20.0),), labels=(1,)), _semantic())
    assert out[20, 10] and not out[:, 30:].any() and out.sum() == 20 * 25
    assert done["class_region"] == 0.8


def test_an_unsure_class_region_leaves_the_answer_to_the_pointed_parts():
    answer = np.zeros((60, 80), bool)
    answer[10:30, 5:40] = True
    out, done = keep_object_region(answer, Prompt(points=((10.0, 20.0),), labels=(1,)), _semantic(confidence=0.55),
                             ObjectRegionConfig(class_confidence=0.6))
    assert (out == answer).all() and done == {}


def test_an_answer_outside_the_class_region_is_kept():
    answer = np.zeros((60, 80), bool)
    answer[10:30, 32:42] = True  # entirely in the middle class; the point is on the left band
    out, _ = keep_object_region(answer, Prompt(points=((10.0, 20.0),), labels=(1,)), _semantic())
    assert (out == answer).all()


def test_stray_parts_are_dropped_without_a_semantic_head():
    out, done = keep_object_region(_blobs(), Prompt(points=((15.0, 20.0),), labels=(1,)), None)
    assert out[20, 15] and not out[20, 60] and not out[53, 39]
    assert done == {"dropped_px": 400 + 9}


def test_negative_only_prompts_are_left_alone():
    m = _blobs()
    out, done = keep_object_region(m, Prompt(points=((15.0, 20.0),), labels=(0,)), _semantic())
    assert (out == m).all() and done == {}


def _buildings() -> ClassMap:
    """Class 1 ("building") in two blocks on class 0: one at x 10..29, y 10..29, one at x 50..69, y 35..54."""
    sem = np.zeros((2, 60, 80), np.float32)
    sem[0] = 0.9
    for y0, x0 in ((10, 10), (35, 50)):
        sem[1, y0:y0 + 20, x0:x0 + 20], sem[0, y0:y0 + 20, x0:x0 + 20] = 0.8, 0.2
    return ClassMap.from_probs(sem)


def test_box_region_is_the_region_whose_extent_matches_the_box():
    region, fit = box_region(_buildings(), (48.0, 33.0, 72.0, 57.0))
    assert region[40, 60] and not region[20, 20] and region.sum() == 400
    assert fit == (20 * 20) / (24 * 24)


def test_a_box_answer_is_cut_to_the_matching_region_grown_by_the_margin():
    answer = np.zeros((60, 80), bool)
    answer[30:58, 45:74] = True  # the block at x 50..69, y 35..54 and a spill around it
    prompt = Prompt(box=(48.0, 33.0, 72.0, 57.0))
    out, done = keep_object_region(answer, prompt, _buildings(), ObjectRegionConfig(box_fit=0.6, box_margin=2))
    assert out[35:55, 50:70].all() and out[33:57, 48:72].all() and not out[:, :48].any() and not out[30:33].any()
    assert out.sum() == 24 * 24 and done["box_region_fit"] == round(400 / 576, 3)
    assert done["dropped_px"] == answer.sum() - out.sum()


def test_a_box_that_matches_no_region_leaves_the_answer_alone():
    answer = np.zeros((60, 80), bool)
    answer[5:55, 5:75] = True
    for cfg, box in ((ObjectRegionConfig(), (0.0, 0.0, 40.0, 60.0)),  # best fit 0.5: the background, whose extent is the image
                     (ObjectRegionConfig(box_fit=0.8), (48.0, 33.0, 72.0, 57.0))):  # fit 0.69, below 0.8
        out, done = keep_object_region(answer, Prompt(box=box), _buildings(), cfg)
        assert (out == answer).all() and done == {}
    out, done = keep_object_region(answer, Prompt(box=(48.0, 33.0, 72.0, 57.0)), None)  # no semantic head
    assert (out == answer).all() and done == {}
