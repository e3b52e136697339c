"""GrabCut refinement of interactive answers: seeds from the probability map, edges from the image."""

from __future__ import annotations

import cv2
import numpy as np

from geoseg.prompts import Prompt
from geoseg.unified.refine import RefineConfig, grabcut_seeds, refine_mask


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A textured background with a bright irregular object (and a similar one elsewhere)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(30, 90, size=(160, 200, 3)).astype(np.uint8)
    obj = np.zeros((160, 200), np.uint8)
    cv2.ellipse(obj, (70, 80), (38, 22), 25, 0, 360, 1, -1)
    cv2.rectangle(obj, (60, 95), (80, 120), 1, -1)
    img[obj.astype(bool)] = rng.integers(190, 240, size=(int(obj.sum()), 3)).astype(np.uint8)
    img[20:40, 150:185] = 210  # a second bright object the prompt does not mean
    return img, obj.astype(bool)


def _coarse(obj: np.ndarray) -> np.ndarray:
    """A network-like answer: the object seen at 1/8 resolution, dilated and blurred (overshoots)."""
    small = cv2.resize(obj.astype(np.float32), (obj.shape[1] // 8, obj.shape[0] // 8), interpolation=cv2.INTER_AREA)
    prob = cv2.resize(small, (obj.shape[1], obj.shape[0]), interpolation=cv2.INTER_LINEAR)
    prob = cv2.dilate(prob, np.ones((11, 11), np.uint8))
    return np.clip(cv2.GaussianBlur(prob, (0, 0), 4) * 1.1, 0, 1).astype(np.float32)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_seeds_follow_probability_box_and_points():
    prob = np.zeros((50, 60), np.float32)
    prob[10:30, 10:40] = 0.5
    prob[15:25, 15:35] = 0.95
    prob[40:, :] = 0.1
    cfg = RefineConfig()
    s = grabcut_seeds(prob, 0.4, Prompt(points=((50.0, 5.0), (20.0, 20.0)), labels=(1, 0)), cfg)
    assert s[20, 30] == cv2.GC_FGD and s[12, 12] == cv2.GC_PR_FGD
    assert s[45, 5] == cv2.GC_PR_BGD and s[0, 0] == cv2.GC_BGD
    assert s[5, 50] == cv2.GC_FGD  # positive point: fixed as target though the network missed it
    assert s[20, 20] == cv2.GC_BGD  # negative point: fixed as background though the network painted it
    boxed = grabcut_seeds(prob, 0.4, Prompt(box=(10.0, 10.0, 30.0, 30.0)), cfg)
    assert (boxed[:, 30:] == cv2.GC_BGD).all() and boxed[20, 20] == cv2.GC_FGD


def test_refinement_snaps_a_coarse_box_answer_to_the_object():
    img, obj = _scene()
    prob = _coarse(obj)
    mask = prob >= 0.4
    ys, xs = np.nonzero(obj)
    box = Prompt(box=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    out = refine_mask(img, prob, mask, 0.4, box)
    assert _iou(mask, obj) < 0.8
    assert _iou(out, obj) > 0.85 and _iou(out, obj) > _iou(mask, obj) + 0.1
    assert not out[:, int(xs.max()) + 1:].any()  # never outside the box
    assert np.array_equal(out, refine_mask(img, prob, mask, 0.4, box))  # reproducible


def test_refinement_of_a_point_answer_and_a_downscaled_region():
    img, obj = _scene(1)
    prob = _coarse(obj)
    mask = prob >= 0.4
    point = Prompt(points=((70.0, 80.0),), labels=(1,))
    out = refine_mask(img, prob, mask, 0.4, point)
    assert _iou(out, obj) > _iou(mask, obj) + 0.1 and not out[20:40, 150:185].any()
    small = refine_mask(img, prob, mask, 0.4, point, RefineConfig(max_side=48))  # cut at low resolution
    assert small.shape == obj.shape and _iou(small, obj) > _iou(mask, obj)


def test_nothing_to_refine_returns_the_network_mask():
    img, obj = _scene()
    prob = _coarse(obj)
    empty = np.zeros_like(obj)
    assert not refine_mask(img, prob, empty, 0.4, Prompt(box=(0.0, 0.0, 200.0, 160.0))).any()
    flat = np.full_like(img, 128)  # one colour: GrabCut cannot fit two colour models
    mask = prob >= 0.4
    out = refine_mask(flat, prob, mask, 0.4, Prompt(points=((70.0, 80.0),), labels=(1,)))
    assert out.shape == mask.shape and out.dtype == bool
    whole = np.ones_like(obj)  # every pixel already certain target: nothing left to decide
    assert np.array_equal(refine_mask(img, np.ones_like(prob), whole, 0.4, Prompt(points=((5.0, 5.0),), labels=(1,))),
                          whole)


def test_a_collapsed_cut_keeps_the_network_answer():
    """A small box whose inside looks like its outside: GrabCut gives everything to the background,
    and the answer stays the network's rather than becoming empty."""
    img = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    prob = np.zeros((64, 64), np.float32)
    prob[20:30, 20:30] = 0.5
    box = Prompt(box=(20.0, 20.0, 30.0, 30.0))
    seeds = grabcut_seeds(prob, 0.4, box, RefineConfig())
    cv2.setRNGSeed(0)
    cv2.grabCut(img, seeds, None, np.zeros((1, 65)), np.zeros((1, 65)), 3, cv2.GC_INIT_WITH_MASK)
    assert not ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).any()  # the raw cut is empty
    assert np.array_equal(refine_mask(img, prob, prob >= 0.4, 0.4, box), prob >= 0.4)


def test_a_cut_to_a_sliver_keeps_the_network_answer():
    """A box inside a large water body: the same water outside the box is fixed as background, so the
    colour models give every uncertain pixel to it and only the few certain ones stay (a 68-pixel answer
    to a 178,000-pixel water box was seen); below ``min_keep`` of the network's mask, the network's stays."""
    rng = np.random.default_rng(3)
    img = np.empty((120, 160, 3), np.uint8)
    img[:, :100] = (30, 60, 110) + rng.integers(0, 12, (120, 100, 3))  # water, wider than the box
    img[:, 100:] = (160, 140, 100) + rng.integers(0, 12, (120, 60, 3))  # land
    prob = np.zeros((120, 160), np.float32)
    prob[20:100, 30:100] = 0.5
    prob[55:60, 60:65] = 0.95  # a few certain pixels
    mask = prob >= 0.4
    box = Prompt(box=(30.0, 20.0, 110.0, 100.0))
    raw = refine_mask(img, prob, mask, 0.4, box, RefineConfig(min_keep=0.0))
    assert 0 < raw.sum() < 0.1 * mask.sum()  # what the cut alone gives
    assert np.array_equal(refine_mask(img, prob, mask, 0.4, box), mask)


def test_the_share_kept_is_a_rule_for_boxes_only():
    """For clicks the guard does not apply: a click's cut of an overshooting answer may keep little."""
    img, obj = _scene(1)
    prob = _coarse(obj)
    mask = prob >= 0.4
    strict = RefineConfig(min_keep=0.99)  # any real trim falls below it
    click = refine_mask(img, prob, mask, 0.4, Prompt(points=((70.0, 80.0),), labels=(1,)), strict)
    assert 0 < click.sum() < 0.99 * mask.sum() and _iou(click, obj) > _iou(mask, obj)
    ys, xs = np.nonzero(obj)
    box = Prompt(box=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
    assert np.array_equal(refine_mask(img, prob, mask, 0.4, box, strict), mask)
