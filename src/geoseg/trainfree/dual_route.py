"""Dual-route prompting (GUIDE §1, GeoSeg): from a refined box to a mask of the whole image.

1. Crop the image to the refined box plus a margin, so the mask backend sees the target
   large and little else (grown to a floor size for a backend trained on fixed-size tiles).
2. Route A: a text–image similarity map of the crop (see :mod:`geoseg.trainfree.similarity`)
   is thresholded (0.8 by default) inside the box; the most interior pixel of each of the
   largest above-threshold regions becomes a positive point. When no pixel passes, a 3 x 3
   grid of points at the box centre is used instead. The points prompt the mask backend.
3. Route B: the mask backend is prompted with the box (and with the noun when it takes text).
4. Fuse: the intersection when both routes found something, otherwise whichever did. When
   both found something but the two masks do not overlap at all, the intersection would
   be empty although both routes saw a target; route B's mask (the box is the stronger
   evidence) is kept and the rule says so (``disjoint->B``).
5. Paste the crop's mask back into a full-size mask.

Everything here works in pixel coordinates of the image given to :func:`dual_route`
(continuous, origin at the top-left corner of the top-left pixel, like
:class:`geoseg.prompts.Prompt`).
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import ndimage

from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

if TYPE_CHECKING:
    from geoseg.trainfree.similarity import SimilaritySource

log = logging.getLogger(__name__)

Routes = Literal["A", "B", "both"]
ROUTES: tuple[str, ...] = ("A", "B", "both")
Box = tuple[float, float, float, float]


#: segmenter -> digest of the image it holds, shared by every session around the same segmenter
_HELD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class ImageSession:
    """A segmenter plus the digest of the image it currently holds.

    Route A (when its similarity comes from the same model) and route B both need the crop
    encoded; :meth:`ensure` calls ``set_image`` only when the pixels changed. The digest is
    kept per segmenter, so several sessions around one segmenter stay coherent; code that
    calls the segmenter's ``set_image`` directly must use its own segmenter.
    """

    def __init__(self, segmenter: Segmenter) -> None:
        self.segmenter = segmenter

    def ensure(self, image: np.ndarray) -> None:
        """Make ``image`` the segmenter's current image (encoding it only if it is new)."""
        digest = (image.shape, hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest())
        if _HELD.get(self.segmenter) != digest:
            _HELD.pop(self.segmenter, None)  # a failing set_image leaves no stale claim
            self.segmenter.set_image(image)
            _HELD[self.segmenter] = digest

    def predict(self, image: np.ndarray, prompt: Prompt) -> Prediction:
        self.ensure(image)
        return self.segmenter.predict(prompt)


@dataclass(frozen=True)
class DualRouteConfig:
    """Settings of the dual route.

    Attributes:
        routes: ``A`` (similarity points only), ``B`` (box only) or ``both`` (fused).
        margin: crop margin on each side, as a share of the box's width/height.
        min_margin: the margin is at least this many pixels.
        min_crop: the crop is grown (around the box's centre, inside the image) to at least this
            many pixels per side: a backend trained at a fixed ground resolution on tiles of that
            size (the unified model: 512) loses the target in a tight crop; SAM resizes any crop
            to its input and needs no floor (0).
        box_text: give route B the noun with the box when the backend takes text.
        threshold: similarity above which a pixel may carry a point (GeoSeg: 0.8).
        max_points: at most this many positive points (one per above-threshold region, largest first).
        grid: the fallback grid is ``grid x grid`` points ...
        grid_spread: ... spanning this share of the box around its centre.
    """

    routes: Routes = "both"
    margin: float = 0.1
    min_margin: int = 8
    min_crop: int = 0
    box_text: bool = True
    threshold: float = 0.8
    max_points: int = 3
    grid: int = 3
    grid_spread: float = 0.3

    def __post_init__(self) -> None:
        if self.routes not in ROUTES:
            raise GeosegError(f"unknown route setting {self.routes!r}", "use A, B or both")
        if not 0.0 <= self.threshold <= 1.0:
            raise GeosegError(f"similarity threshold {self.threshold} is outside [0, 1]", "use e.g. 0.8")


@dataclass
class RouteResult:
    """The fused answer in full-image pixels, with what each route did (for ``Prediction.info``)."""

    mask: np.ndarray
    score: float
    prob: np.ndarray
    info: dict = field(default_factory=dict)


def crop_window(box: Box, width: int, height: int, margin: float = 0.1, min_margin: int = 8,
                min_crop: int = 0) -> tuple[int, int, int, int]:
    """Integer window ``(c0, r0, c1, r1)`` (end-exclusive) holding ``box`` plus a margin, inside the image,
    at least ``min_crop`` pixels per side where the image allows."""
    x0, y0, x1, y1 = box
    mx = max(min_margin, margin * (x1 - x0), (min(min_crop, width) - (x1 - x0)) / 2)
    my = max(min_margin, margin * (y1 - y0), (min(min_crop, height) - (y1 - y0)) / 2)
    if min_crop:  # keep the floor when the box sits at an image edge: slide the window inwards
        cx = float(np.clip((x0 + x1) / 2, (x1 - x0) / 2 + mx, width - (x1 - x0) / 2 - mx))
        cy = float(np.clip((y0 + y1) / 2, (y1 - y0) / 2 + my, height - (y1 - y0) / 2 - my))
        hx, hy = (x1 - x0) / 2, (y1 - y0) / 2
        x0, x1, y0, y1 = cx - hx, cx + hx, cy - hy, cy + hy
    c0 = int(np.clip(np.floor(x0 - mx), 0, width - 1))
    r0 = int(np.clip(np.floor(y0 - my), 0, height - 1))
    c1 = int(np.clip(np.ceil(x1 + mx), c0 + 1, width))
    r1 = int(np.clip(np.ceil(y1 + my), r0 + 1, height))
    return c0, r0, c1, r1


def similarity_points(sim: np.ndarray, threshold: float = 0.8, max_points: int = 3) -> list[tuple[float, float]]:
    """Positive points from a similarity map: the most interior pixel (ties: nearest the centroid)
    of each of the largest above-threshold regions (largest first); ``[]`` when no pixel reaches ``threshold``.

    The most interior pixel (largest distance to the region's edge) rather than the maximum:
    a saturated map has a plateau whose first maximum sits on its border.
    """
    above = np.asarray(sim) >= threshold
    if not above.any():
        return []
    labels, n = ndimage.label(above, structure=np.ones((3, 3), bool))
    sizes = np.bincount(labels.ravel())[1:]
    dist = ndimage.distance_transform_edt(np.pad(above, 1))[1:-1, 1:-1]
    out = []
    for lab in np.argsort(-sizes, kind="stable")[:max_points] + 1:
        rr, cc = np.nonzero(labels == lab)
        d = dist[rr, cc]
        ridge = d >= d.max() - 1e-6  # ties (a ridge): the one nearest the region's centroid
        k = np.argmin((rr[ridge] - rr.mean()) ** 2 + (cc[ridge] - cc.mean()) ** 2)
        out.append((float(cc[ridge][k]) + 0.5, float(rr[ridge][k]) + 0.5))
    return out


def fallback_grid(height: int, width: int, n: int = 3, spread: float = 0.3) -> list[tuple[float, float]]:
    """``n x n`` points centred on a ``height x width`` region, spanning ``spread`` of each side."""
    offs = np.linspace(-spread / 2, spread / 2, n) if n > 1 else np.zeros(1)
    return [(float(width * (0.5 + dx)), float(height * (0.5 + dy))) for dy in offs for dx in offs]


def fuse_masks(a: np.ndarray | None, b: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Fuse route A's and route B's masks; returns ``(mask, rule)``.

    Rules: both non-empty and overlapping → intersection (``A&B``); both non-empty but
    disjoint → B (``disjoint->B``); one non-empty → that one (``A`` / ``B``); none → empty.
    A route that was not run is ``None``.
    """
    if a is None and b is None:
        raise ValueError("fuse_masks needs at least one route's mask")
    shape = (a if a is not None else b).shape
    has_a = a is not None and bool(a.any())
    has_b = b is not None and bool(b.any())
    if has_a and has_b:
        both = a & b
        return (both, "A&B") if both.any() else (b.copy(), "disjoint->B")
    if has_a:
        return a.copy(), "A"
    if has_b:
        return b.copy(), "B"
    return np.zeros(shape, bool), "empty"


def paste(crop: np.ndarray, window: tuple[int, int, int, int], shape: tuple[int, int], fill=0) -> np.ndarray:
    """Place a crop-sized array back at ``window`` of a full ``shape`` array (``fill`` elsewhere)."""
    c0, r0, c1, r1 = window
    out = np.full(shape, fill, dtype=crop.dtype)
    out[r0:r1, c0:c1] = crop
    return out


def _prob(pred: Prediction) -> np.ndarray:
    return pred.prob if pred.prob is not None else pred.mask.astype(np.float32)


def dual_route(image: np.ndarray, box: Box, noun: str, session: ImageSession,
               similarity: SimilaritySource | None = None, config: DualRouteConfig = DualRouteConfig()) -> RouteResult:
    """Segment the target in ``box`` of ``image`` with routes A and/or B and fuse them.

    Args:
        image: ``H x W x 3`` uint8 RGB (the full image the box refers to).
        box: the refined box ``(x0, y0, x1, y1)`` in pixels of ``image``.
        noun: what the target is (the grounder's label, else the instruction).
        session: the mask backend (points and boxes; text too when it can use it).
        similarity: route A's source (required unless ``config.routes == "B"``).
        config: routes, margin, threshold, fallback grid.
    """
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    if not (x1 > x0 and y1 > y0):
        raise GeosegError(f"box {box} is empty or inverted", "the grounder must give x0 < x1 and y0 < y1")
    window = crop_window(box, w, h, config.margin, config.min_margin, config.min_crop)
    c0, r0, c1, r1 = window
    crop = np.array(image[r0:r1, c0:c1], copy=True)  # writable and contiguous (torch warns on read-only arrays)
    ch, cw = crop.shape[:2]
    caps = session.segmenter.capabilities
    info: dict = {"window": list(window), "box": [float(v) for v in box], "noun": noun, "routes": config.routes}
    bx = (max(0.0, x0 - c0), max(0.0, y0 - r0), min(float(cw), x1 - c0), min(float(ch), y1 - r0))  # box in the crop
    pred_a = pred_b = None
    if config.routes in ("A", "both"):
        if similarity is None:
            raise GeosegError("route A needs a similarity source", "give one, or use routes=B")
        sim = np.asarray(similarity.similarity(crop, noun), dtype=np.float32)
        inside = np.zeros_like(sim)  # points only inside the box: the crop may hold context around it
        inside[int(bx[1]):int(np.ceil(bx[3])), int(bx[0]):int(np.ceil(bx[2]))] = 1.0
        sim = sim * inside
        points = similarity_points(sim, config.threshold, config.max_points)
        info["grid_fallback"] = not points
        if not points:
            gx0, gy0, gx1, gy1 = bx
            points = [(gx0 + x, gy0 + y) for x, y in fallback_grid(gy1 - gy0, gx1 - gx0, config.grid, config.grid_spread)]
        info["points"] = [[x + c0, y + r0] for x, y in points]
        info["similarity_max"] = float(np.max(sim)) if sim.size else 0.0
        pred_a = session.predict(crop, Prompt(points=tuple(points), labels=(1,) * len(points), task="interactive"))
    if config.routes in ("B", "both"):
        text = noun if config.box_text and "text" in caps and noun else None
        pred_b = session.predict(crop, Prompt(box=bx, text=text, task="interactive"))
    fused, rule = fuse_masks(pred_a.mask if pred_a else None, pred_b.mask if pred_b else None)
    if rule == "A&B":
        prob = np.minimum(_prob(pred_a), _prob(pred_b))
    elif rule == "A":
        prob = _prob(pred_a)
    elif rule in ("B", "disjoint->B"):
        prob = _prob(pred_b)
    else:
        prob = np.zeros((ch, cw), np.float32)
    used = [p for p, r in ((pred_a, "A"), (pred_b, "B")) if p is not None and (r in rule or rule == "empty")]
    score = float(np.mean([p.score for p in used])) if used else 0.0
    info.update(fusion=rule, pixels_a=int(pred_a.mask.sum()) if pred_a else None,
                pixels_b=int(pred_b.mask.sum()) if pred_b else None)
    return RouteResult(mask=paste(fused, window, (h, w), False), score=score,
                       prob=paste(prob.astype(np.float32), window, (h, w), 0.0), info=info)
