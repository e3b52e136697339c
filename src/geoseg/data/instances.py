"""Instances of a tile: 8-connected components of each class, or given instance ids (polygons, COCO).

All per-instance statistics are computed for every instance of the tile at once from
one instance-id map (``cv2.connectedComponentsWithStats`` and ``np.bincount``), so the
cost per tile does not grow with a Python loop over pixels or instances.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from geoseg.data.sources.base import UNLABELED


@dataclass
class TileInstances:
    """Every instance of one tile.

    Attributes:
        ids: ``H x W`` int32 map, 0 = no instance, k = instance k-1 of the arrays below.
        cls: class index per instance.
        area: pixel count per instance.
        bbox: ``x, y, w, h`` per instance (tile pixels).
        centroid: ``x, y`` per instance (pixel centres, tile pixels).
        classes: class names of the source.
        label: the tile's class map (``UNLABELED`` = no label), or ``None`` for instance-only sources.
    """

    ids: np.ndarray
    cls: np.ndarray
    area: np.ndarray
    bbox: np.ndarray
    centroid: np.ndarray
    classes: list[str]
    label: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.cls.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.ids.shape[0]), int(self.ids.shape[1])

    def mask(self, k: int) -> np.ndarray:
        """Boolean tile-size mask of instance ``k``."""
        x, y, w, h = (int(v) for v in self.bbox[k])
        out = np.zeros(self.shape, dtype=bool)
        out[y:y + h, x:x + w] = self.ids[y:y + h, x:x + w] == k + 1
        return out

    def class_mask(self, c: int) -> np.ndarray:
        """Boolean mask of every pixel of class ``c`` in the tile."""
        if self.label is not None:
            return self.label == c
        members = np.flatnonzero(self.cls == c) + 1
        lut = np.zeros(len(self) + 1, dtype=bool)
        lut[members] = True
        return lut[self.ids]

    def class_present(self) -> np.ndarray:
        """Pixel count per class in the tile."""
        if self.label is not None:
            return np.bincount(self.label[self.label != UNLABELED].ravel(), minlength=len(self.classes))[: len(self.classes)]
        return np.bincount(self.cls, weights=self.area, minlength=len(self.classes)).astype(np.int64)


def empty_instances(h: int, w: int, classes: list[str], label: np.ndarray | None = None) -> TileInstances:
    """A tile without any instance."""
    return TileInstances(np.zeros((h, w), np.int32), np.zeros(0, np.int32), np.zeros(0, np.int64),
                         np.zeros((0, 4), np.int32), np.zeros((0, 2)), classes, label)


def from_class_map(label: np.ndarray, classes: list[str]) -> TileInstances:
    """8-connected components of every class of a tile's class map."""
    h, w = label.shape
    ids = np.zeros((h, w), dtype=np.int32)
    counts = np.bincount(label.ravel(), minlength=256)
    cls_l, area_l, bbox_l, cen_l = [], [], [], []
    offset = 0
    for c in range(len(classes)):
        if counts[c] == 0:
            continue
        n, lab, stats, cents = cv2.connectedComponentsWithStats((label == c).view(np.uint8), connectivity=8,
                                                                 ltype=cv2.CV_32S)
        if n <= 1:
            continue
        fg = lab > 0
        ids[fg] = lab[fg] + offset
        cls_l.append(np.full(n - 1, c, dtype=np.int32))
        area_l.append(stats[1:, cv2.CC_STAT_AREA].astype(np.int64))
        bbox_l.append(stats[1:, :4].astype(np.int32))
        cen_l.append(cents[1:] + 0.5)
        offset += n - 1
    if offset == 0:
        return empty_instances(h, w, classes, label)
    return TileInstances(ids, np.concatenate(cls_l), np.concatenate(area_l), np.concatenate(bbox_l),
                         np.concatenate(cen_l), classes, label)


def from_instance_map(inst: np.ndarray, instance_class: np.ndarray, classes: list[str]) -> TileInstances:
    """Instances given by an instance-id map (0 = none), renumbered densely in id order."""
    h, w = inst.shape
    uniq, inv = np.unique(inst, return_inverse=True)
    inv = inv.reshape(h, w).astype(np.int32)
    if uniq.size and uniq[0] != 0:  # no background pixel in the tile: shift so 0 stays "none"
        inv += 1
        uniq = np.concatenate([[0], uniq])
    ids = inv
    n = int(uniq.size - 1)
    if n == 0:
        return empty_instances(h, w, classes)
    flat = ids.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:].astype(np.int64)
    ys, xs = np.divmod(np.arange(flat.size), w)
    cx = np.bincount(flat, weights=xs, minlength=n + 1)[1:] / np.maximum(area, 1) + 0.5
    cy = np.bincount(flat, weights=ys, minlength=n + 1)[1:] / np.maximum(area, 1) + 0.5
    x0 = np.full(n + 1, w, np.int64)
    y0 = np.full(n + 1, h, np.int64)
    x1 = np.zeros(n + 1, np.int64)
    y1 = np.zeros(n + 1, np.int64)
    np.minimum.at(x0, flat, xs)
    np.minimum.at(y0, flat, ys)
    np.maximum.at(x1, flat, xs)
    np.maximum.at(y1, flat, ys)
    bbox = np.stack([x0[1:], y0[1:], x1[1:] - x0[1:] + 1, y1[1:] - y0[1:] + 1], axis=1).astype(np.int32)
    cls = np.asarray(instance_class, dtype=np.int32)[uniq[1:] - 1]
    return TileInstances(ids, cls, area, bbox, np.stack([cx, cy], axis=1), classes, None)
