"""Per-instance attributes, computed for all instances of a tile at once.

Everything is derived from the tile's instance-id map with whole-array operations
(``np.bincount`` moments, one distance transform, neighbour-pair counting), so a tile
with hundreds of components costs about as much as one with three.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from geoseg.data.instances import TileInstances

GRID_WORDS = ["top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right"]
GRID_PHRASES = [
    "in the top left corner", "at the top", "in the top right corner",
    "on the left side", "in the center", "on the right side",
    "in the bottom left corner", "at the bottom", "in the bottom right corner",
]


@dataclass
class Attributes:
    """Arrays of length N (instances of the tile) plus the contact graph."""

    area_frac: np.ndarray
    boundary_px: np.ndarray
    edge_px: np.ndarray
    thickness: np.ndarray
    elongation: np.ndarray
    orientation: np.ndarray
    compactness: np.ndarray
    mean_rgb: np.ndarray
    brightness: np.ndarray
    grid: np.ndarray
    size_rank: np.ndarray
    class_count: np.ndarray
    #: contact[(i, j)] = shared boundary length in pixels for i < j (4-neighbour pairs)
    contact: dict[tuple[int, int], int] = field(default_factory=dict)
    neighbours: list[dict[int, int]] = field(default_factory=list)

    @property
    def border_fraction(self) -> np.ndarray:
        """Share of each instance's boundary lying on the tile edge (truncation by the tile)."""
        return self.edge_px / np.maximum(self.boundary_px, 1)

    @property
    def irregularity(self) -> np.ndarray:
        """Boundary length squared over ``4 pi area`` (1 for a disk; large for fragmented shapes)."""
        return 1.0 / np.maximum(self.compactness, 1e-9)


_GRID_CACHE: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    key = (h, w)
    if key not in _GRID_CACHE:
        ys, xs = np.divmod(np.arange(h * w, dtype=np.float64), w)
        _GRID_CACHE.clear()
        _GRID_CACHE[key] = (xs, ys)
    return _GRID_CACHE[key]


def compute(inst: TileInstances, rgb: np.ndarray) -> Attributes:
    """Attributes of every instance of ``inst``; ``rgb`` is the tile's display image."""
    n = len(inst)
    h, w = inst.shape
    ids = inst.ids
    flat = ids.ravel().astype(np.intp)  # bincount casts to intp anyway: once here, not per call
    area = inst.area.astype(np.float64)
    m = n + 1

    # boundaries and contacts (4-neighbourhood)
    diff_h = ids[:, 1:] != ids[:, :-1]
    diff_v = ids[1:, :] != ids[:-1, :]
    bnd = np.zeros((h, w), dtype=bool)
    bnd[:, 1:] |= diff_h
    bnd[:, :-1] |= diff_h
    bnd[1:, :] |= diff_v
    bnd[:-1, :] |= diff_v
    edge = np.zeros((h, w), dtype=bool)
    edge[0, :] = edge[-1, :] = True
    edge[:, 0] = edge[:, -1] = True
    boundary_px = np.bincount(ids[bnd | edge], minlength=m)[1:].astype(np.float64)
    edge_px = np.bincount(ids[edge], minlength=m)[1:].astype(np.float64)

    a = np.concatenate([ids[:, 1:][diff_h], ids[1:, :][diff_v]]).astype(np.int64)
    b = np.concatenate([ids[:, :-1][diff_h], ids[:-1, :][diff_v]]).astype(np.int64)
    both = (a > 0) & (b > 0)
    lo = np.minimum(a[both], b[both]) - 1
    hi = np.maximum(a[both], b[both]) - 1
    codes, counts = np.unique(lo * m + hi, return_counts=True)
    contact: dict[tuple[int, int], int] = {}
    neighbours: list[dict[int, int]] = [dict() for _ in range(n)]
    for code, cnt in zip(codes.tolist(), counts.tolist()):
        i, j = divmod(code, m)
        contact[(i, j)] = cnt
        neighbours[i][j] = cnt
        neighbours[j][i] = cnt

    # thickness: twice the largest distance from an inner pixel to the instance boundary
    if n:
        dist = cv2.distanceTransform((~bnd).view(np.uint8), cv2.DIST_L2, 3)
        peak = np.zeros(m, dtype=np.float32)
        np.maximum.at(peak, flat, dist.ravel())  # per-instance maximum without sorting the tile
        thickness = 2.0 * peak[1:].astype(np.float64) + 1.0
    else:
        thickness = np.zeros(0)

    # second moments -> elongation and orientation
    xs, ys = _coords(h, w)
    cx = inst.centroid[:, 0] - 0.5 if n else np.zeros(0)
    cy = inst.centroid[:, 1] - 0.5 if n else np.zeros(0)
    sxx = np.bincount(flat, weights=xs * xs, minlength=m)[1:] / np.maximum(area, 1) - cx * cx
    syy = np.bincount(flat, weights=ys * ys, minlength=m)[1:] / np.maximum(area, 1) - cy * cy
    sxy = np.bincount(flat, weights=xs * ys, minlength=m)[1:] / np.maximum(area, 1) - cx * cy
    tr = sxx + syy
    det = np.sqrt(np.maximum((sxx - syy) ** 2 / 4 + sxy * sxy, 0))
    l1 = tr / 2 + det
    l2 = np.maximum(tr / 2 - det, 1e-3)
    elongation = np.sqrt(np.maximum(l1, 1e-3) / l2)
    # angle of the major axis, degrees in [0, 180), 0 = horizontal, 90 = vertical (image rows grow downward)
    orientation = (np.degrees(0.5 * np.arctan2(-2 * sxy, sxx - syy)) + 180.0) % 180.0
    compactness = 4 * np.pi * area / np.maximum(boundary_px, 1) ** 2

    # colour
    mean_rgb = np.stack([np.bincount(flat, weights=rgb[:, :, c].ravel(), minlength=m)[1:] for c in range(3)], axis=1)
    mean_rgb /= np.maximum(area, 1)[:, None]
    brightness = mean_rgb @ np.array([0.299, 0.587, 0.114])

    # position and ranks
    col = np.minimum((inst.centroid[:, 0] / w * 3).astype(int), 2) if n else np.zeros(0, int)
    row = np.minimum((inst.centroid[:, 1] / h * 3).astype(int), 2) if n else np.zeros(0, int)
    grid = row * 3 + col
    size_rank = np.zeros(n, dtype=np.int32)
    class_count = np.zeros(n, dtype=np.int32)
    for c in np.unique(inst.cls):
        members = np.flatnonzero(inst.cls == c)
        order = members[np.argsort(-area[members], kind="stable")]
        size_rank[order] = np.arange(1, members.size + 1)
        class_count[members] = members.size
    return Attributes(area / float(h * w), boundary_px, edge_px, thickness, elongation, orientation, compactness,
                      mean_rgb, brightness, grid, size_rank, class_count, contact, neighbours)


_HUES = [(10, "red"), (22, "orange"), (35, "yellow"), (85, "green"), (100, "cyan"), (130, "blue"), (170, "purple"),
         (181, "red")]


def colour_word(rgb: np.ndarray) -> str:
    """A basic colour name for a mean RGB colour."""
    hsv = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8).reshape(1, 1, 3), cv2.COLOR_RGB2HSV)[0, 0]
    hue, sat, val = int(hsv[0]), int(hsv[1]), int(hsv[2])
    if val < 50:
        return "black"
    if sat < 40:
        return "white" if val > 200 else "gray"
    for limit, name in _HUES:
        if hue < limit:
            if name == "orange" and val < 150:
                return "brown"
            return name
    return "red"


def size_word(area_frac: float) -> str:
    """Absolute size of an instance relative to the tile."""
    if area_frac < 0.02:
        return "small"
    if area_frac < 0.12:
        return "medium-sized"
    return "large"


def shape_word(elongation: float, compactness: float) -> str | None:
    if elongation >= 3.0:
        return "elongated"
    if compactness >= 0.6 and elongation < 1.5:
        return "compact"
    return None


def orientation_word(deg: float, elongation: float) -> str | None:
    if elongation < 2.0:
        return None
    if deg < 22.5 or deg >= 157.5:
        return "horizontal"
    if 67.5 <= deg < 112.5:
        return "vertical"
    return "diagonal"


def describe(inst: TileInstances, att: Attributes, k: int) -> dict:
    """The JSON-friendly attribute record of instance ``k`` stored with each row."""
    names = inst.classes
    rel = sorted(att.neighbours[k].items(), key=lambda kv: -kv[1])[:4] if att.neighbours else []
    return {
        "category": names[int(inst.cls[k])],
        "area_px": int(inst.area[k]),
        "area_frac": round(float(att.area_frac[k]), 5),
        "size": size_word(float(att.area_frac[k])),
        "size_rank": int(att.size_rank[k]),
        "class_count": int(att.class_count[k]),
        "bbox": [int(v) for v in inst.bbox[k]],
        "centroid": [round(float(v), 2) for v in inst.centroid[k]],
        "grid": GRID_WORDS[int(att.grid[k])],
        "elongation": round(float(att.elongation[k]), 3),
        "orientation_deg": round(float(att.orientation[k]), 1),
        "compactness": round(float(att.compactness[k]), 4),
        "thickness_px": round(float(att.thickness[k]), 1),
        "border_fraction": round(float(att.border_fraction[k]), 4),
        "colour": colour_word(att.mean_rgb[k]),
        "brightness": round(float(att.brightness[k]), 1),
        "neighbours": [{"category": names[int(inst.cls[j])], "instance_id": int(j), "contact_px": int(c)}
                       for j, c in rel],
    }
