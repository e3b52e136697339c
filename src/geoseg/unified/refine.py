"""Edge-aware refinement of interactive answers: GrabCut seeded by the network's probabilities.

The unified network decodes masks at a quarter of its working scale (a 512-px tile is 64 cells
across), so its interactive answers follow the object only coarsely and overshoot it: on the
validation region, box answers cover the target well (recall 88 %) but half of what they paint is
not the target (precision 55 %). Colour edges in the full-resolution image are what is missing.

OpenCV's GrabCut (Rother et al. 2004) re-labels pixels with two colour mixture models and a graph
cut that follows image edges. Instead of a hand-drawn rectangle, it is seeded here with the
network's answer:

* probability ≥ ``sure_fg``, and a small disc around each positive point: certainly the target;
* probability ≥ the task's mask threshold: probably the target;
* probability < ``sure_bg``, everything outside a box prompt (the box is the object's extent), and
  a disc around each negative point: certainly not the target;
* everything else: probably not.

GrabCut runs on the bounding box of the uncertain and target seeds plus ``margin`` pixels,
downscaled to at most ``max_side`` pixels, with a fixed random seed so an answer is reproducible.
When the seeds leave nothing to decide, GrabCut fails on a degenerate image, it keeps nothing, or it
keeps less than ``min_keep`` of the network's answer to a box, the network's mask is returned
unchanged: a prompt the network answered never ends up empty, nor a box answer cut to a sliver. (The
last happens to a large water body in a box: a few hundred pixels reach ``sure_fg``, the box edge
fixes the same water outside it as background, and the colour models give every "probably target"
pixel to the background — 68 pixels kept of 178,000.)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from geoseg.prompts import Prompt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefineConfig:
    """How the network's probability map seeds GrabCut (defaults chosen on the validation region).

    Attributes:
        sure_fg: probability at and above which a pixel is certainly the target.
        sure_bg: probability below which a pixel is certainly not the target.
        iterations: GrabCut iterations (colour-model re-estimations).
        margin: pixels added around the seeded region before GrabCut runs.
        point_radius: radius in pixels of the disc fixed around each prompt point.
        max_side: the region is downscaled so its longer side is at most this many pixels.
        min_keep: a box answer's cut must keep at least this share of the network's mask, or the
            network's mask is returned (a re-cut trims edges; one that removes nearly everything has
            failed). Boxes only: the failure comes from the box edge's certain background, and a
            click's legitimate cut of an overshooting answer can keep less (on `tile_6`'s 232 class
            regions the rule gained +0.3 [+0.0, +0.6] on boxes and lost −0.4 [−1.0, +0.0] on clicks).
    """

    sure_fg: float = 0.9
    sure_bg: float = 0.01
    iterations: int = 3
    margin: int = 16
    point_radius: int = 3
    max_side: int = 128
    min_keep: float = 0.1

    def to_dict(self) -> dict:
        """The settings, for an answer's provenance."""
        return {"method": "grabcut", **asdict(self)}


def grabcut_seeds(prob: np.ndarray, threshold: float, prompt: Prompt, cfg: RefineConfig) -> np.ndarray:
    """GrabCut's ``H×W`` label map (``cv2.GC_*``) from a probability map and the prompt's geometry."""
    h, w = prob.shape
    seeds = np.full((h, w), cv2.GC_PR_BGD, np.uint8)
    seeds[prob < cfg.sure_bg] = cv2.GC_BGD
    seeds[prob >= threshold] = cv2.GC_PR_FGD
    seeds[prob >= cfg.sure_fg] = cv2.GC_FGD
    if prompt.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        inside = np.zeros((h, w), bool)
        inside[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = True
        seeds[~inside] = cv2.GC_BGD
    for (x, y), label in zip(prompt.points, prompt.labels):
        cv2.circle(seeds, (int(x), int(y)), cfg.point_radius, cv2.GC_FGD if label == 1 else cv2.GC_BGD, -1)
    return seeds


def _region(seeds: np.ndarray, margin: int) -> tuple[int, int, int, int] | None:
    """Rows/columns ``r0, r1, c0, c1`` around every pixel that is not certain background."""
    ys, xs = np.nonzero(seeds != cv2.GC_BGD)
    if ys.size == 0:
        return None
    h, w = seeds.shape
    return (max(0, int(ys.min()) - margin), min(h, int(ys.max()) + margin + 1),
            max(0, int(xs.min()) - margin), min(w, int(xs.max()) + margin + 1))


def refine_mask(image: np.ndarray, prob: np.ndarray, mask: np.ndarray, threshold: float, prompt: Prompt,
                cfg: RefineConfig | None = None) -> np.ndarray:
    """The network's interactive ``mask`` re-cut along image edges by GrabCut (same shape, bool).

    Args:
        image: ``H×W×3`` uint8 RGB, the image the network answered on.
        prob: ``H×W`` float32 target probability from the network.
        mask: the network's decided mask (returned when there is nothing to refine).
        threshold: the interactive mask threshold that decided ``mask``.
        prompt: the points/box in the image's pixel coordinates.
        cfg: seeding settings (defaults when None).
    """
    cfg = cfg or RefineConfig()
    if not mask.any():
        return mask
    seeds = grabcut_seeds(prob, threshold, prompt, cfg)
    region = _region(seeds, cfg.margin)
    if region is None:
        return mask
    r0, r1, c0, c1 = region
    sub, crop = seeds[r0:r1, c0:c1], image[r0:r1, c0:c1]
    fg_seed = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
    if not fg_seed.any() or fg_seed.all() or min(sub.shape) < 4:
        return mask
    scale = min(1.0, cfg.max_side / max(sub.shape))
    if scale < 1.0:
        size = (max(4, round(sub.shape[1] * scale)), max(4, round(sub.shape[0] * scale)))
        crop = cv2.resize(crop, size, interpolation=cv2.INTER_AREA)
        sub = cv2.resize(sub, size, interpolation=cv2.INTER_NEAREST)
    else:
        sub = sub.copy()
    cv2.setRNGSeed(0)  # GrabCut initialises its colour models with k-means
    try:
        cv2.grabCut(np.ascontiguousarray(crop), sub, None, np.zeros((1, 65)), np.zeros((1, 65)),
                    cfg.iterations, cv2.GC_INIT_WITH_MASK)
    except cv2.error as exc:  # e.g. a constant image: one colour model cannot be fitted
        log.debug("GrabCut refinement skipped: %s", exc)
        return mask
    cut = (sub == cv2.GC_FGD) | (sub == cv2.GC_PR_FGD)
    if scale < 1.0:
        cut = cv2.resize(cut.view(np.uint8), (c1 - c0, r1 - r0), interpolation=cv2.INTER_NEAREST).astype(bool)
    out = np.zeros_like(mask)
    out[r0:r1, c0:c1] = cut
    kept = np.count_nonzero(out & mask)
    if kept == 0 or (prompt.box is not None and kept < cfg.min_keep * np.count_nonzero(mask)):
        # the colour models gave (nearly) the whole answer to the background: keep the network's
        log.debug("GrabCut refinement kept %d of %d pixels: network answer kept", kept, np.count_nonzero(mask))
        return mask
    return out
