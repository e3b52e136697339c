"""Components of a decided mask and their features, for the instance selector.

A referring or reasoning answer at level 2/3 is one instance ("the smallest building", "the road
along the vegetation"); the mask decoder tends to answer with every instance of the class.
:func:`split_components` cuts the decided mask into 8-connected components (the data engine's
own instance definition), :func:`component_features` describes each one, and
:class:`geoseg.models.selector.InstanceSelector` scores them against the instruction.
:func:`select_mask` keeps the chosen ones.

Features (all scale-free, so any tile size works), per component:
position (centroid, bounding box, distance from the centre), size (log area share, area
relative to the largest, size rank), ranks of x and y among the components, elongation and
orientation from second moments, mean and max probability, the component count, and per class
of the network's semantic map: the distance to the nearest pixel of that class, its rank among
the components, and the class's share of the component's surroundings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

GEOMETRY_NAMES = ("cx", "cy", "x0", "y0", "x1", "y1", "centre_dist", "log_share", "area_vs_largest",
                  "size_rank", "area_vs_all", "x_rank", "y_rank", "elongation", "horizontal", "diagonal",
                  "mean_prob", "max_prob", "log_count")
PER_CLASS_NAMES = ("dist", "dist_rank", "surround")
GEOMETRY_FEATURES = len(GEOMETRY_NAMES)
PER_CLASS_FEATURES = len(PER_CLASS_NAMES)


def feature_dim(num_classes: int) -> int:
    """Features per component for a semantic map with ``num_classes`` classes (0 = none)."""
    return GEOMETRY_FEATURES + PER_CLASS_FEATURES * num_classes


def feature_names(num_classes: int) -> list[str]:
    """Names of the feature columns (``size_rank`` 0 = largest, ``x_rank`` 0 = leftmost; per class
    ``c``: ``dist_c``, ``dist_rank_c``, ``surround_c``)."""
    return list(GEOMETRY_NAMES) + [f"{n}_{c}" for c in range(num_classes) for n in PER_CLASS_NAMES]


@dataclass
class Components:
    """Connected components of one mask: ``labels`` (0 = none, k = component k-1), their count and
    bounding boxes (``x, y, w, h`` in pixels, one row per component)."""

    labels: np.ndarray
    count: int
    bbox: np.ndarray

    def mask(self, keep: Sequence[int] | np.ndarray) -> np.ndarray:
        """Boolean mask of the components whose indices are in ``keep``."""
        lut = np.zeros(self.count + 1, dtype=bool)
        lut[np.asarray(keep, dtype=np.int64) + 1] = True
        return lut[self.labels]


def split_components(mask: np.ndarray, min_share: float = 5e-4) -> Components:
    """8-connected components of ``mask`` with at least ``min_share`` of the tile's pixels
    (smaller specks are dropped: they are decoder noise, not instances)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] >= max(1.0, min_share * mask.size)) + 1
    lut = np.zeros(n, dtype=np.int32)
    lut[keep] = np.arange(1, len(keep) + 1, dtype=np.int32)
    return Components(lut[labels], len(keep), stats[keep, :4].astype(np.int64))


def _rank(values: np.ndarray) -> np.ndarray:
    """Rank of each value scaled to [0, 1] (0 = smallest); a single value gets 0."""
    n = len(values)
    if n < 2:
        return np.zeros(n)
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") / (n - 1)


def _reduce(op: np.ufunc, values: np.ndarray, labels: np.ndarray, n: int, init: float) -> np.ndarray:
    """``op`` (np.minimum / np.maximum) of ``values`` over each label 1..n (``init`` where a label has no pixel)."""
    out = np.full(n + 1, init, dtype=np.float64)
    op.at(out, labels.ravel(), values.ravel())
    return out[1:]


def component_features(comps: Components, prob: np.ndarray, semantic: np.ndarray | None = None,
                       grid: int = 128) -> np.ndarray:
    """``N×F`` float32 features of the components (see the module docstring).

    Sums (area, centroid, moments, mean probability) use every pixel; maxima, minima and the
    context features use a sub-grid of about ``grid`` cells a side, which keeps the cost per
    tile to a few milliseconds (the mask probabilities come from a stride-4 map anyway).

    Args:
        comps: from :func:`split_components`.
        prob: ``H×W`` mask probabilities of the answer.
        semantic: ``K×h×w`` per-class probabilities of the image (any resolution; resized here), or None.
    """
    n = comps.count
    k = 0 if semantic is None else semantic.shape[0]
    if n == 0:
        return np.zeros((0, feature_dim(k)), np.float32)
    h, w = comps.labels.shape
    lab = comps.labels.ravel()
    xn = (np.arange(w) + 0.5) / w
    yn = (np.arange(h) + 0.5) / h
    area = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)

    def mean(v: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=v.ravel(), minlength=n + 1)[1:] / area

    xs = np.broadcast_to(xn[None, :], (h, w))
    ys = np.broadcast_to(yn[:, None], (h, w))
    cx, cy = mean(xs), mean(ys)
    cxx = mean(xs * xs) - cx ** 2
    cyy = mean(ys * ys) - cy ** 2
    cxy = mean(xs * ys) - cx * cy
    # principal axes of the second moments: elongation and orientation (cos 2θ = +1 horizontal)
    tr, det = cxx + cyy, cxx * cyy - cxy ** 2
    disc = np.sqrt(np.maximum(tr ** 2 / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1e-12)
    aniso = 1.0 - l2 / np.maximum(l1, 1e-12)
    theta2 = np.arctan2(2 * cxy, cxx - cyy)
    bx, by, bw, bh = (comps.bbox[:, i].astype(np.float64) for i in range(4))
    s = max(1, min(h, w) // grid)
    sub = comps.labels[::s, ::s]
    # a component too thin to be sampled by the sub-grid is read at its centroid instead
    cidx = (np.minimum((cy * h).astype(int), h - 1), np.minimum((cx * w).astype(int), w - 1))

    def sub_reduce(op: np.ufunc, v: np.ndarray, init: float) -> np.ndarray:
        r = _reduce(op, v, sub, n, init)
        return np.where(np.isfinite(r), r, full_at_centroid(v))

    def full_at_centroid(v: np.ndarray) -> np.ndarray:
        return v[np.minimum(cidx[0] // s, v.shape[0] - 1), np.minimum(cidx[1] // s, v.shape[1] - 1)]

    share = area / (h * w)
    feats = [cx, cy, bx / w, by / h, (bx + bw) / w, (by + bh) / h,
             np.hypot(cx - 0.5, cy - 0.5),
             np.log(share), area / area.max(), 1.0 - _rank(area), area / area.sum(),
             _rank(cx), _rank(cy),
             np.log(np.maximum(l1, 1e-12) / l2) / 4.0, np.cos(theta2) * aniso, np.sin(theta2) * aniso,
             mean(prob.astype(np.float64)), sub_reduce(np.maximum, prob[::s, ::s], -np.inf),
             np.full(n, np.log(n))]
    if k:
        sh, sw = sub.shape
        sem = np.stack([cv2.resize(c.astype(np.float32), (sw, sh), interpolation=cv2.INTER_LINEAR) for c in semantic])
        arg = sem.argmax(0)
        diag = float(np.hypot(sh, sw))
        ksize = max(3, (min(sh, sw) // 8) | 1)
        for c in range(k):
            near = arg == c
            dist = (cv2.distanceTransform((~near).astype(np.uint8), cv2.DIST_L2, 5) if near.any()
                    else np.full((sh, sw), diag, np.float32))
            dmin = sub_reduce(np.minimum, dist, np.inf) / diag
            surround = cv2.blur(sem[c], (ksize, ksize))
            ssum = np.bincount(sub.ravel(), weights=surround.ravel(), minlength=n + 1)[1:]
            scount = np.bincount(sub.ravel(), minlength=n + 1)[1:]
            smean = np.where(scount > 0, ssum / np.maximum(scount, 1), full_at_centroid(surround))
            feats += [dmin, _rank(dmin), smean]
    return np.stack(feats, 1).astype(np.float32)


def target_labels(comps: Components, gt: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Training labels: a component belongs to the answer when at least ``share`` of it lies in the
    target or it holds at least ``share`` of the target."""
    n = comps.count
    lab = comps.labels.ravel()
    area = np.bincount(lab, minlength=n + 1)[1:]
    inside = np.bincount(lab, weights=gt.ravel().astype(np.float64), minlength=n + 1)[1:]
    total = max(int(gt.sum()), 1)
    return ((inside >= share * np.maximum(area, 1)) | (inside >= share * total)).astype(np.float32)


def select_mask(comps: Components, scores: np.ndarray, threshold: float) -> np.ndarray | None:
    """The components scoring at least ``threshold``; None when none does (the selector has no
    preference, so the caller keeps the whole answer rather than gamble on one part)."""
    keep = np.flatnonzero(scores >= threshold)
    if keep.size == 0:
        return None
    return comps.mask(keep)


def apply_selection(comps: Components, scores: np.ndarray, threshold: float, answer: np.ndarray) -> np.ndarray:
    """The answer after selection: the parts scoring at least ``threshold``, or the whole
    ``answer`` when it has fewer than two parts or no part passes."""
    if comps.count < 2:
        return answer
    kept = select_mask(comps, scores, threshold)
    return answer if kept is None else kept


__all__ = ["Components", "apply_selection", "component_features", "feature_dim", "feature_names", "select_mask",
           "split_components", "target_labels"]
