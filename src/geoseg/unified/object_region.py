"""Interactive answers kept to the one class region the prompt marks.

A point or box prompt asks for one object: in the data engine's terms an 8-connected region of
one class (:mod:`geoseg.data.instances`) that the positive points fall on or whose extent the box
is. The decoder's answer (and GrabCut's re-cut of it, :mod:`geoseg.unified.refine`) often spills
into neighbouring regions of other classes and, for points, leaves stray specks elsewhere in the
tile. The network's semantic head (a per-class map at stride 8, trained as an auxiliary loss)
already says where each class's regions are, so cheap steps after the re-cut use it:

* **points** (no box): when the head is confident (probability ≥ ``class_confidence``) about
  the class under the first positive point, the answer is cut to the connected region of that
  class (its per-pixel argmax) the positive points fall on; then only the connected parts of the
  answer that a positive point touches are kept (the nearest part when no point lands on one);
* **boxes**: among the connected regions of every class, the one whose bounding box best
  matches the prompt's box is found; when the two boxes overlap by IoU ≥ ``box_fit`` the answer
  is cut to that region grown by ``box_margin`` pixels (the head's regions are coarse).

Whenever a cut would leave nothing, the answer is kept as it was. Settings chosen on the
validation region (``docs/model_history.md``, 2026-12-02).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from geoseg.prompts import Prompt


@dataclass(frozen=True)
class ObjectRegionConfig:
    """Settings of :func:`keep_object_region` (chosen on the validation region).

    Attributes:
        class_confidence: the semantic head's probability of the class under the first positive
            point at and above which a point answer is cut to that class's region.
        box_fit: the bounding-box IoU between a class region and a box prompt at and above which
            a box answer is cut to that region.
        box_margin: pixels the matched region is grown by before it cuts a box answer.
    """

    class_confidence: float = 0.6
    box_fit: float = 0.6
    box_margin: int = 4

    def to_dict(self) -> dict:
        """The settings, for an answer's provenance."""
        return {"method": "semantic-class-region", **asdict(self)}


class ClassMap:
    """The semantic head's answer at the image's resolution, computed once per image.

    Attributes:
        winner: ``H×W`` index of the most probable class.
        confidence: ``H×W`` probability of that class.
    """

    def __init__(self, winner: np.ndarray, confidence: np.ndarray) -> None:
        self.winner = winner
        self.confidence = confidence
        self._regions: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def from_probs(cls, probs: np.ndarray) -> ClassMap:
        """From ``K×H×W`` per-class probabilities."""
        return cls(probs.argmax(0).astype(np.uint8), probs.max(0))

    def labels(self, cls: int) -> tuple[np.ndarray, np.ndarray]:
        """8-connected regions of class ``cls``: the label image and the per-label stats (cv2 layout).

        Computed on first use per class: a point prompt needs one class, a box prompt every class."""
        if cls not in self._regions:
            _, labels, stats, _ = cv2.connectedComponentsWithStats((self.winner == cls).view(np.uint8),
                                                                    connectivity=8)
            self._regions[cls] = (labels, stats)
        return self._regions[cls]


def positive_pixels(prompt: Prompt, height: int, width: int) -> list[tuple[int, int]]:
    """The positive points of ``prompt`` as ``(x, y)`` pixel indices inside an ``height×width`` image."""
    return [(min(width - 1, max(0, int(x))), min(height - 1, max(0, int(y))))
            for (x, y), label in zip(prompt.points, prompt.labels) if label == 1]


def _keep_labels(labels: np.ndarray, keep: set[int]) -> np.ndarray:
    if len(keep) == 1:
        return labels == next(iter(keep))
    return np.isin(labels, sorted(keep))


def pointed_parts(mask: np.ndarray, points: list[tuple[int, int]]) -> np.ndarray:
    """The 8-connected parts of ``mask`` that a point lands on (the nearest part when none does)."""
    if not points or not mask.any():
        return mask
    n, labels = cv2.connectedComponents(mask.view(np.uint8), connectivity=8)
    if n <= 2:
        return mask
    keep = {int(labels[y, x]) for x, y in points} - {0}
    if not keep:
        ys, xs = np.nonzero(labels)
        dist = np.min([(xs - x) ** 2 + (ys - y) ** 2 for x, y in points], axis=0)
        j = int(dist.argmin())
        keep = {int(labels[ys[j], xs[j]])}
    return _keep_labels(labels, keep)


def class_region(classes: ClassMap, points: list[tuple[int, int]]) -> tuple[np.ndarray, float]:
    """The connected region of the class under the first point, and the head's confidence in it.

    Args:
        classes: the image's :class:`ClassMap`.
        points: positive points as ``(x, y)`` pixel indices (at least one).

    Returns:
        the boolean ``H×W`` union of the regions of that class the points fall on (points on
        another class add nothing), and the probability of that class at the first point.
    """
    x, y = points[0]
    cls = int(classes.winner[y, x])
    labels, _ = classes.labels(cls)
    keep = {int(labels[py, px]) for px, py in points if classes.winner[py, px] == cls}
    return _keep_labels(labels, keep), float(classes.confidence[y, x])


def _box_ious(stats: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """Bounding-box IoU of every region in ``stats`` (cv2 layout: x, y, w, h, area) with ``box``."""
    x0, y0 = stats[:, 0].astype(np.float64), stats[:, 1].astype(np.float64)
    x1, y1 = x0 + stats[:, 2], y0 + stats[:, 3]
    ix = np.clip(np.minimum(x1, box[2]) - np.maximum(x0, box[0]), 0, None)
    iy = np.clip(np.minimum(y1, box[3]) - np.maximum(y0, box[1]), 0, None)
    inter = ix * iy
    union = (x1 - x0) * (y1 - y0) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def box_region(classes: ClassMap, box: tuple[float, float, float, float]) -> tuple[np.ndarray | None, float]:
    """The class region whose bounding box best matches ``box``, and that match (bounding-box IoU).

    Args:
        classes: the image's :class:`ClassMap`.
        box: ``x0, y0, x1, y1`` in the image's pixel coordinates.

    Returns:
        the region as a boolean ``H×W`` mask (None when the map has no region) and its IoU with ``box``.
    """
    best, best_fit = None, 0.0
    for cls in np.unique(classes.winner):
        labels, stats = classes.labels(int(cls))
        if len(stats) < 2:
            continue
        fits = _box_ious(stats[1:], box)
        j = int(fits.argmax())
        if fits[j] > best_fit:
            best, best_fit = (labels, j + 1), float(fits[j])
    if best is None:
        return None, 0.0
    return best[0] == best[1], best_fit


def keep_object_region(mask: np.ndarray, prompt: Prompt, classes: ClassMap | None,
                       cfg: ObjectRegionConfig | None = None) -> tuple[np.ndarray, dict]:
    """``mask`` restricted to the object its prompt marks (see the module docstring).

    Args:
        mask: the interactive answer to ``prompt`` (``H×W`` bool).
        prompt: the prompt in the image's pixel coordinates.
        classes: the semantic head's :class:`ClassMap` of the image, or None when the network has
            no semantic head (then only the pointed-parts step of a point prompt runs).
        cfg: settings (defaults when None).

    Returns:
        the new mask and what was done (for the answer's ``info``); ``mask`` unchanged for an
        empty answer and for prompts with neither a box nor a positive point.
    """
    cfg = cfg or ObjectRegionConfig()
    before = int(mask.sum())
    if before == 0:
        return mask, {}
    done: dict = {}
    if prompt.box is not None:
        if classes is None:
            return mask, {}
        region, fit = box_region(classes, prompt.box)
        if region is not None and fit >= cfg.box_fit:
            side = 2 * cfg.box_margin + 1
            grown = cv2.dilate(region.view(np.uint8), np.ones((side, side), np.uint8)).astype(bool)
            if (mask & grown).any():
                mask = mask & grown
                done["box_region_fit"] = round(fit, 3)
    else:
        h, w = mask.shape
        points = positive_pixels(prompt, h, w)
        if not points:
            return mask, {}
        if classes is not None:
            region, confidence = class_region(classes, points)
            if confidence >= cfg.class_confidence and (mask & region).any():
                mask = mask & region
                done["class_region"] = round(confidence, 3)
        mask = pointed_parts(mask, points)
    if int(mask.sum()) < before:
        done["dropped_px"] = before - int(mask.sum())
    return mask, done
