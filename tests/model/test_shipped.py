"""The shipped default checkpoint: installed, small, loaded with no flag, and useful on held-out Dubai imagery.

The quality checks run on region ``tile_7``, which the default model never saw (training
used tile_1..tile_5, validation tile_6). Ground truth comes straight from the palette
masks: a class map, and 8-connected components of a class as instances. The thresholds
sit well below what the shipped model measures (see docs/model_card.md), so they catch
a broken or untrained checkpoint, not a small regression.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from geoseg.data.sources.dubai import PALETTE, palette_to_classes
from geoseg.prompts import Prompt
from geoseg.segmenters import build_segmenter
from geoseg.unified.segmenter import UnifiedSegmenter, default_checkpoint_path

WATER, BUILDING, ROAD = 1, 2, 4
#: (image, row, column) of 512-px crops of tile_7: built-up crops and crops with water
BUILT = (("image_part_001", 0, 0), ("image_part_002", 0, 0), ("image_part_004", 0, 0))
WET = (("image_part_009", 1024, 512), ("image_part_005", 1536, 256))


def test_default_checkpoint_is_shipped_small_and_described():
    path = default_checkpoint_path()
    assert path.is_file(), (f"{path} missing: geoseg train --config configs/unigeoseg_cw_smallt_ctrl.yaml "
                            f"--export-only --tune-decision --fit-selector --export {path}")
    assert path.stat().st_size < 50e6
    seg = build_segmenter("unified", device="cpu")
    assert isinstance(seg, UnifiedSegmenter) and seg.checkpoint_path == path
    # the third stage of the class-wise-memory recipe (configs/unigeoseg_cw_smallt_ctrl.yaml: stage 2's
    # export trained 30 more minutes, epochs chosen at tuned thresholds), trained on the no-target-rich
    # build and validated on the default build's validation split (tile_6), where its decision
    # thresholds were tuned
    assert seg.meta["experiment"] == "unigeoseg_cw_smallt_ctrl" and seg.meta["step"] > 0
    assert seg.meta["config"]["train"]["select_on"] == "tuned" and "val_tuned" in seg.meta
    train = seg.meta["config"]["train"]
    assert train["mask_loss_on_empty"] is False and train["progressive"] is False
    assert train["shards"] == "data/shards/dubai_nt" and train["val_shards"] == "data/shards/dubai"
    assert seg.cfg.class_memory and seg.cfg.relation_anchor
    assert "1672 val rows of data/shards/dubai" in seg.decision.tuned_on
    assert seg.decision.mask_threshold("referring") < 0.5 and seg.decision.mask_threshold("reasoning") < 0.5
    assert seg.provenance()["checkpoint"] == path.name
    # the instance selector (geoseg train --fit-selector): fitted on the training build, on for both
    # text tasks because it raised their validation gIoU (+3.1 / +1.9 points on tile_6)
    from geoseg.unified.checkpoint import read_checkpoint

    entry = read_checkpoint(path)["selector"]
    assert "train rows of data/shards/dubai_nt" in entry["trained_on"] and "1241 val rows" in entry["trained_on"]
    assert seg.selector is not None
    stored = seg.selector[2]
    assert stored["referring"] is not None and stored["reasoning"] is not None
    assert seg.provenance()["instance_selector"] == stored


@pytest.fixture(scope="module")
def shipped() -> UnifiedSegmenter:
    return build_segmenter("unified", device="cpu", threads=2)


def _scene(dubai_dir, crop: tuple[str, int, int]) -> tuple[np.ndarray, np.ndarray]:
    name, y, x = crop
    img = cv2.imread(str(dubai_dir / "tile_7" / "images" / f"{name}.jpg"), cv2.IMREAD_COLOR)[:, :, ::-1]
    mrgb = cv2.imread(str(dubai_dir / "tile_7" / "masks" / f"{name}.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    classes, _ = palette_to_classes(np.ascontiguousarray(mrgb[y: y + 512, x: x + 512]), PALETTE, unknown="unlabeled")
    return np.ascontiguousarray(img[y: y + 512, x: x + 512]), classes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


def _largest_instances(classes: np.ndarray, cls: int, k: int) -> list[np.ndarray]:
    n, lab, stats, _ = cv2.connectedComponentsWithStats((classes == cls).astype(np.uint8), connectivity=8)
    order = sorted(range(1, n), key=lambda i: -stats[i, cv2.CC_STAT_AREA])
    return [lab == i for i in order[:k] if stats[i, cv2.CC_STAT_AREA] >= 400]


def _held_out_instances(dubai_dir, *segmenters):
    """The three largest water and building instances of each held-out crop, the crop set on ``segmenters``."""
    for crop in BUILT + WET:
        img, classes = _scene(dubai_dir, crop)
        for seg in segmenters:
            seg.set_image(img)
        for cls in (WATER, BUILDING):
            yield from _largest_instances(classes, cls, 3)


def test_box_prompts_recover_held_out_instances(shipped, dubai_dir):
    """Box prompts on held-out crops find the instance, and the GrabCut re-cut along image edges
    improves on the decoder's own mask."""
    plain = UnifiedSegmenter(shipped.checkpoint_path, device="cpu", refine=False, object_region=False)
    ious, plain_ious = [], []
    for inst in _held_out_instances(dubai_dir, shipped, plain):
        ys, xs = np.nonzero(inst)
        box = Prompt(box=(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)))
        ious.append(_iou(shipped.predict(box).mask, inst))
        plain_ious.append(_iou(plain.predict(box).mask, inst))
    assert len(ious) >= 6
    # measured over 16 instances: 0.60 with the re-cut, 0.52 without (previous default 0.61 / 0.59);
    # 0.59 with the re-cut and the class-region step (2026-12-02)
    assert np.mean(ious) > 0.35, ious
    assert np.mean(ious) > np.mean(plain_ious), (ious, plain_ious)


@pytest.mark.parametrize("crops, cls, text, floor", [
    (WET, WATER, "Where could a boat sail in this image?", 0.5),     # measured 0.90 (0.95, 0.85)
    (BUILT, ROAD, "Where could a car drive in this image?", 0.2),    # measured 0.38 (0.50, 0.39, 0.24)
])
def test_class_level_reasoning_finds_the_class(shipped, dubai_dir, crops, cls, text, floor):
    scored = []
    for crop in crops:
        img, classes = _scene(dubai_dir, crop)
        shipped.set_image(img)
        scored.append(_iou(shipped.predict(Prompt(text=text)).mask, classes == cls))
    assert np.mean(scored) > floor, scored


def test_the_selector_keeps_parts_of_the_decoders_answer(shipped, dubai_dir):
    """On held-out crops an instance-level instruction keeps a subset of what the decoder found,
    and at least one crop's answer is cut down to fewer parts (the selector is really applied)."""
    plain = UnifiedSegmenter(shipped.checkpoint_path, device="cpu", use_selector=False)
    cut = 0
    for crop in BUILT + WET:
        img, _ = _scene(dubai_dir, crop)
        shipped.set_image(img)
        plain.set_image(img)
        for text in ("the largest building", "the smallest body of water"):
            full = plain.predict(Prompt(text=text)).mask
            pred = shipped.predict(Prompt(text=text))
            assert not (pred.mask & ~full).any()
            cut += int(pred.mask.sum() < full.sum())
    assert cut >= 2


def _interior_point(inst: np.ndarray) -> tuple[float, float]:
    """The instance pixel farthest from its border (a click a person would make)."""
    dist = cv2.distanceTransform(inst.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return float(x), float(y)


def test_point_answers_are_one_part_under_the_click(shipped, dubai_dir):
    """On held-out crops a one-point answer is a single connected part of what the network painted
    without the class-region step, on the clicked pixel, and at least one answer is cut down."""
    plain = UnifiedSegmenter(shipped.checkpoint_path, device="cpu", object_region=False)
    ious, plain_ious, cut = [], [], 0
    for inst in _held_out_instances(dubai_dir, shipped, plain):
        x, y = _interior_point(inst)
        prompt = Prompt(points=((x, y),), labels=(1,))
        full, mask = plain.predict(prompt).mask, shipped.predict(prompt).mask
        assert not (mask & ~full).any()
        if mask.any():
            assert cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] == 2
        cut += int(mask.sum() < full.sum())
        ious.append(_iou(mask, inst))
        plain_ious.append(_iou(full, inst))
    # measured 2026-12-02 over 16 instances: IoU 0.33 with the step, 0.34 without; 12 answers cut
    assert cut >= 1
    assert np.mean(ious) > 0.2, (ious, plain_ious)


def test_small_boxes_are_answered_from_a_zoomed_crop(shipped, dubai_dir):
    """Held-out instances whose box is 10-40 px (one or two decoder cells at the working scale): the
    zoomed crop answers most of them; at the working scale most answers come back empty."""
    flat = UnifiedSegmenter(shipped.checkpoint_path, device="cpu", zoom=False)
    ious, flat_ious, empty, flat_empty = [], [], 0, 0
    for crop in BUILT + WET:
        img, classes = _scene(dubai_dir, crop)
        shipped.set_image(img)
        flat.set_image(img)
        for cls in range(5):
            n, lab, stats, _ = cv2.connectedComponentsWithStats((classes == cls).astype(np.uint8), connectivity=8)
            for i in range(1, n):
                x, y, w, h, area = stats[i]
                if not (10 <= max(w, h) <= 40 and area >= 50):
                    continue
                inst = lab == i
                box = Prompt(box=(float(x), float(y), float(x + w), float(y + h)))
                pred, base = shipped.predict(box), flat.predict(box)
                assert pred.info["zoom"] > 1
                ious.append(_iou(pred.mask, inst))
                flat_ious.append(_iou(base.mask, inst))
                empty += int(not pred.mask.any())
                flat_empty += int(not base.mask.any())
    assert len(ious) >= 10
    # measured 2026-12-03 over 44 boxes: IoU 0.49 zoomed, 0.09 at the working scale; 0 and 34 answers empty
    assert np.mean(ious) > np.mean(flat_ious) + 0.1, (np.mean(ious), np.mean(flat_ious))
    assert empty < flat_empty, (empty, flat_empty)
