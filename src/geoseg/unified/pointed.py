"""Point answers kept to the object under the clicks.

A point prompt asks for one object: in the data engine's terms the 8-connected region of one
class that the positive points fall on (:mod:`geoseg.data.instances`). The decoder's answer
(and GrabCut's re-cut of it, :mod:`geoseg.unified.refine`) often spills into neighbouring
regions of other classes and leaves stray specks elsewhere in the tile. Two cheap steps use what
the prompt and the network already say:

1. **class region** — when the network's semantic head is confident (probability ≥
   ``class_confidence``) about the class under the first positive point, the answer is cut to
   the connected region of that class (its per-pixel argmax) that the positive points fall on;
   if nothing of the answer is left, the answer is kept whole;
2. **pointed parts** — of the connected parts of the answer, only those a positive point
   touches are kept (the nearest part when no point lands on one).

Prompts with a box are left alone: the box already bounds the object, and on the validation
region cutting box answers to a class region lowered them. Chosen on validation
(``docs/model_history.md``, 2026-12-02).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import cv2
import numpy as np

from geoseg.prompts import Prompt


@dataclass(frozen=True)
class PointedConfig:
    """Settings of :func:`keep_pointed` (chosen on the validation region).

    Attributes:
        class_confidence: the semantic head's probability of the class under the first positive
            point at and above which the answer is cut to that class's region.
    """

    class_confidence: float = 0.6

    def to_dict(self) -> dict:
        """The settings, for an answer's provenance."""
        return {"method": "pointed-parts", **asdict(self)}


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


class ClassMap(NamedTuple):
    """The semantic head's answer at the image's resolution, computed once per image.

    Attributes:
        winner: ``H×W`` index of the most probable class.
        confidence: ``H×W`` probability of that class.
    """

    winner: np.ndarray
    confidence: np.ndarray

    @classmethod
    def from_probs(cls, probs: np.ndarray) -> ClassMap:
        """From ``K×H×W`` per-class probabilities."""
        return cls(probs.argmax(0).astype(np.uint8), probs.max(0))


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
    cls = classes.winner[y, x]
    n, labels = cv2.connectedComponents((classes.winner == cls).view(np.uint8), connectivity=8)
    keep = {int(labels[py, px]) for px, py in points if classes.winner[py, px] == cls}
    return _keep_labels(labels, keep), float(classes.confidence[y, x])


def keep_pointed(mask: np.ndarray, prompt: Prompt, classes: ClassMap | None,
                 cfg: PointedConfig | None = None) -> tuple[np.ndarray, dict]:
    """``mask`` restricted to the object its positive points are on (see the module docstring).

    Args:
        mask: the answer to ``prompt`` (``H×W`` bool).
        prompt: the prompt in the image's pixel coordinates.
        classes: the semantic head's :class:`ClassMap` of the image, or None when the network has
            no semantic head (then only the pointed-parts step runs).
        cfg: settings (defaults when None).

    Returns:
        the new mask and what was done (for the answer's ``info``); ``mask`` unchanged for
        prompts with a box, without positive points, or with an empty answer.
    """
    cfg = cfg or PointedConfig()
    h, w = mask.shape
    points = positive_pixels(prompt, h, w)
    if prompt.box is not None or not points or not mask.any():
        return mask, {}
    done: dict = {}
    if classes is not None:
        region, confidence = class_region(classes, points)
        if confidence >= cfg.class_confidence and (mask & region).any():
            mask = mask & region
            done["class_region"] = round(confidence, 3)
    kept = pointed_parts(mask, points)
    if kept.sum() < mask.sum():
        done["dropped_px"] = int(mask.sum() - kept.sum())
    return kept, done
