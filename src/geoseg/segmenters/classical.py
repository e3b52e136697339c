"""The classical interactive baseline: OpenCV GrabCut seeded from point and box prompts.

No learned weights. GrabCut fits two colour mixture models (target / background) and
cuts the graph between them; the prompt decides the seeds:

* box: outside the box (within a margin) is sure background, inside is probable target;
* positive points: a small disk of sure target inside a larger disk of probable target;
* negative points: a small disk of sure background;
* box and points combined: both.

For speed and stability on aerial crops, the region of interest is downscaled to at
most ``max_side`` pixels, the result is cleaned (small specks removed, small holes
filled) and only the connected part(s) the prompt points at are kept: the components
under positive points, or the largest component(s) inside the box. The score is the
colour separation between target and background (1 - Bhattacharyya coefficient of
their Lab histograms), lowered when the mask barely fills or overfills the box or
leaks to the border of the region: a cheap, honest confidence, not a probability.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from scipy import ndimage

from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

log = logging.getLogger(__name__)


class GrabCutSegmenter(Segmenter):
    """GrabCut seeded from the prompt (registry name ``classical``; points and boxes).

    Args:
        iterations: GrabCut iterations.
        max_side: the region of interest is downscaled to at most this many pixels per side.
        box_margin: background margin around a box, as a share of its larger side.
        keep_ratio: with a box and no positive point, components at least this share of
            the largest one are kept as well.
        **_ignored: accepted and ignored (``device=``, ``checkpoint=``) so every backend
            can be built with the same keywords.
    """

    name = "classical"
    capabilities = frozenset({"point", "box"})

    def __init__(self, iterations: int = 5, max_side: int = 320, box_margin: float = 0.25,
                 keep_ratio: float = 0.5, **_ignored: object) -> None:
        super().__init__()
        self.iterations = int(iterations)
        self.max_side = int(max_side)
        self.box_margin = float(box_margin)
        self.keep_ratio = float(keep_ratio)
        self._image: np.ndarray | None = None

    def _set_image(self, image: np.ndarray) -> None:
        self._image = image

    def provenance(self) -> dict:
        out = super().provenance()
        out.update({"algorithm": "opencv-grabcut", "opencv": cv2.__version__, "iterations": self.iterations})
        return out

    # -- helpers -----------------------------------------------------------------------
    def _roi(self, prompt: Prompt, h: int, w: int) -> tuple[int, int, int, int]:
        xs, ys = [], []
        if prompt.box is not None:
            x0, y0, x1, y1 = prompt.box
            m = max(8.0, self.box_margin * max(x1 - x0, y1 - y0))
            xs += [x0 - m, x1 + m]
            ys += [y0 - m, y1 + m]
        pos = [p for p, lab in zip(prompt.points, prompt.labels) if lab == 1]
        if pos and prompt.box is None:
            r = max(48.0, 0.2 * max(h, w))
            xs += [min(p[0] for p in pos) - r, max(p[0] for p in pos) + r]
            ys += [min(p[1] for p in pos) - r, max(p[1] for p in pos) + r]
        elif pos:
            xs += [p[0] for p in pos]
            ys += [p[1] for p in pos]
        c0 = int(max(0, np.floor(min(xs))))
        r0 = int(max(0, np.floor(min(ys))))
        c1 = int(min(w, np.ceil(max(xs))))
        r1 = int(min(h, np.ceil(max(ys))))
        return c0, r0, max(c1, c0 + 1), max(r1, r0 + 1)

    @staticmethod
    def _disk(mask: np.ndarray, x: float, y: float, r: int, value: int) -> None:
        cv2.circle(mask, (int(round(x)), int(round(y))), max(int(r), 1), int(value), thickness=-1)

    def _seed(self, prompt: Prompt, roi: tuple[int, int, int, int], scale: float, shape: tuple[int, int]
              ) -> tuple[np.ndarray, list[tuple[int, int]], tuple[int, int, int, int] | None]:
        c0, r0, _, _ = roi
        sh, sw = shape
        side = max(sh, sw)

        def to_crop(x: float, y: float) -> tuple[float, float]:
            return (x - c0) * scale, (y - r0) * scale

        box_c = None
        if prompt.box is not None:
            mask = np.full(shape, cv2.GC_BGD, np.uint8)
            bx0, by0 = to_crop(prompt.box[0], prompt.box[1])
            bx1, by1 = to_crop(prompt.box[2], prompt.box[3])
            box_c = (max(0, int(np.floor(bx0))), max(0, int(np.floor(by0))),
                     min(sw, int(np.ceil(bx1))), min(sh, int(np.ceil(by1))))
            mask[box_c[1]:box_c[3], box_c[0]:box_c[2]] = cv2.GC_PR_FGD
        else:
            mask = np.full(shape, cv2.GC_PR_BGD, np.uint8)
            mask[:2, :] = mask[-2:, :] = cv2.GC_BGD
            mask[:, :2] = mask[:, -2:] = cv2.GC_BGD
        sure_r = max(2, int(0.02 * side))
        prob_r = max(5, int(0.1 * side))
        pos_c: list[tuple[int, int]] = []
        for (x, y), lab in zip(prompt.points, prompt.labels):
            cx, cy = to_crop(x, y)
            if lab == 1:
                if prompt.box is None:
                    self._disk(mask, cx, cy, prob_r, cv2.GC_PR_FGD)
                pos_c.append((min(sw - 1, max(0, int(cx))), min(sh - 1, max(0, int(cy)))))
        for (x, y), lab in zip(prompt.points, prompt.labels):
            cx, cy = to_crop(x, y)
            self._disk(mask, cx, cy, sure_r, cv2.GC_FGD if lab == 1 else cv2.GC_BGD)
        bg = (mask == cv2.GC_BGD) | (mask == cv2.GC_PR_BGD)
        if not bg.any():  # the box fills the whole region (e.g. at the image border)
            for sl in ((slice(0, 1), slice(None)), (slice(-1, None), slice(None)),
                       (slice(None), slice(0, 1)), (slice(None), slice(-1, None))):
                region = mask[sl]
                region[region == cv2.GC_PR_FGD] = cv2.GC_PR_BGD
        return mask, pos_c, box_c

    def _clean(self, fg: np.ndarray, pos: list[tuple[int, int]]) -> np.ndarray:
        if not fg.any():
            return fg
        k = np.ones((3, 3), np.uint8)
        opened = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, k).astype(bool)
        if opened.any():
            fg = opened
        lab, n = ndimage.label(fg, structure=np.ones((3, 3)))
        if n == 0:
            return fg
        sizes = ndimage.sum_labels(np.ones_like(lab), lab, index=np.arange(1, n + 1))
        if pos:
            keep = {int(lab[y, x]) for x, y in pos if lab[y, x] > 0}
            if not keep:  # the seed was eroded away: keep the component nearest to the first point
                dist = ndimage.distance_transform_edt(lab == 0, return_indices=True)[1]
                x, y = pos[0]
                keep = {int(lab[dist[0][y, x], dist[1][y, x]])}
        else:
            big = sizes.max()
            keep = {i + 1 for i, s in enumerate(sizes) if s >= self.keep_ratio * big}
        out = np.isin(lab, list(keep))
        # fill holes smaller than 5 % of the object (courtyards and large holes stay)
        filled = ndimage.binary_fill_holes(out)
        holes = filled & ~out
        if holes.any():
            hl, hn = ndimage.label(holes)
            hs = ndimage.sum_labels(np.ones_like(hl), hl, index=np.arange(1, hn + 1))
            small = [i + 1 for i, s in enumerate(hs) if s < 0.05 * out.sum()]
            if small:
                out |= np.isin(hl, small)
        return out

    @staticmethod
    def _separation(crop: np.ndarray, fg: np.ndarray) -> float:
        bg = ~fg
        if fg.sum() < 4 or bg.sum() < 4:
            return 0.0
        lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB)
        bins, ranges = [8, 8, 8], [0, 256, 0, 256, 0, 256]
        hf = cv2.calcHist([lab], [0, 1, 2], fg.astype(np.uint8), bins, ranges)
        hb = cv2.calcHist([lab], [0, 1, 2], bg.astype(np.uint8), bins, ranges)
        cv2.normalize(hf, hf, 1, 0, cv2.NORM_L1)
        cv2.normalize(hb, hb, 1, 0, cv2.NORM_L1)
        return float(np.clip(cv2.compareHist(hf, hb, cv2.HISTCMP_BHATTACHARYYA), 0.0, 1.0))

    # -- predict -----------------------------------------------------------------------
    def _predict(self, prompt: Prompt) -> Prediction:
        assert self._image is not None
        h, w = self.image_shape
        full = np.zeros((h, w), dtype=bool)
        pos_pts = [p for p, lab in zip(prompt.points, prompt.labels) if lab == 1]
        if prompt.box is None and not pos_pts:
            return Prediction(full, 0.0, info={"reason": "no positive point or box"})
        roi = self._roi(prompt, h, w)
        c0, r0, c1, r1 = roi
        crop = self._image[r0:r1, c0:c1]
        rh, rw = crop.shape[:2]
        scale = min(1.0, self.max_side / max(rh, rw))
        shape = (max(1, round(rh * scale)), max(1, round(rw * scale)))
        small = cv2.resize(crop, (shape[1], shape[0]), interpolation=cv2.INTER_AREA) if scale < 1 else crop
        small = np.ascontiguousarray(small)
        seed, pos_c, box_c = self._seed(prompt, roi, scale, shape)
        info: dict = {"roi": [c0, r0, c1, r1], "scale": scale}
        has_fg = ((seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)).any()
        if not has_fg or min(shape) < 4:
            fg = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
            info["fallback"] = "region too small for GrabCut"
            score = 0.1
        else:
            cv2.setRNGSeed(0)
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            gc = seed.copy()
            try:
                cv2.grabCut(small, gc, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
                fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
                if box_c is not None and not pos_c and fg.sum() < 0.05 * max(1, (seed == cv2.GC_PR_FGD).sum()):
                    # the colour models collapsed to background (target looks like its
                    # surroundings): assume the box is centred on the target and seed its core
                    gc = seed.copy()
                    bx0, by0, bx1, by1 = box_c
                    cv2.ellipse(gc, ((bx0 + bx1) // 2, (by0 + by1) // 2),
                                (max(1, (bx1 - bx0) // 5), max(1, (by1 - by0) // 5)), 0, 0, 360, cv2.GC_FGD, -1)
                    bgd[:], fgd[:] = 0, 0
                    cv2.setRNGSeed(0)
                    cv2.grabCut(small, gc, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
                    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
                    info["reseeded"] = True
            except cv2.error as exc:  # degenerate colour models (e.g. a constant image)
                log.debug("grabcut failed: %s", exc)
                fg = (seed == cv2.GC_FGD) | (seed == cv2.GC_PR_FGD)
                info["fallback"] = "grabcut failed; prompt region returned"
            fg = self._clean(fg, pos_c)
            if box_c is not None:
                clip = np.zeros_like(fg)
                tol = max(1, int(0.02 * max(shape)))
                clip[max(0, box_c[1] - tol):box_c[3] + tol, max(0, box_c[0] - tol):box_c[2] + tol] = True
                fg &= clip
            score = self._separation(small, fg)
            if box_c is not None:
                box_area = max(1, (box_c[2] - box_c[0]) * (box_c[3] - box_c[1]))
                fill = fg.sum() / box_area
                score *= float(np.clip(fill / 0.1, 0.0, 1.0)) * (0.6 if fill > 0.97 else 1.0)
            else:
                border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
                score *= 1.0 - 0.7 * float(border.mean())
            if "fallback" in info:
                score = min(score, 0.1)
        if scale < 1:
            fg = cv2.resize(fg.astype(np.uint8), (rw, rh), interpolation=cv2.INTER_NEAREST).astype(bool)
        full[r0:r1, c0:c1] = fg
        return Prediction(full, float(np.clip(score, 0.0, 1.0)), None, info)
