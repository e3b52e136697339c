"""How many labelled samples calibration needs: corner error and box IoU on real Dubai boxes.

A controlled experiment (no multimodal LLM runs on these machines): the true boxes are
real — every building of Dubai ``tile_7`` larger than ``--min-area`` pixels (8-connected
components of the palette masks) — and a grounder is simulated by a systematic bias in
normalised coordinates (``u' = scale * u + shift`` per corner, the same as the tests'
loopback server), Gaussian noise in pixels and a share of wild answers (random boxes).
For each number of fitting samples, profiles are fitted on random draws and scored on all
other boxes: mean |corner error| in pixels, mean IoU with the true box and mean coverage
(share of the true box inside the refined box, what the segmenter needs), for the raw
boxes, GeoSeg's fixed rule and the calibrated correction.

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/trainfree_calibration.py [--draws 20]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from geoseg.data.sources.dubai import PALETTE, palette_to_classes
from geoseg.errors import GeosegError
from geoseg.trainfree.calibrate import fit_profile
from geoseg.trainfree.refine import refine_box

ROOT = Path(__file__).resolve().parents[1]
SCALE = np.array([1.04, 0.97, 1.06, 0.95])
SHIFT = np.array([-0.03, 0.04, 0.02, 0.05])


def real_boxes(dubai: Path, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """True building boxes of tile_7 and their image sizes ``(w, h, w, h)``."""
    boxes, sizes = [], []
    for mpath in sorted((dubai / "tile_7" / "masks").glob("*.png")):
        with Image.open(mpath) as im:
            label, _ = palette_to_classes(np.asarray(im.convert("RGB")), PALETTE, unknown="unlabeled")
        comps, n = ndimage.label(label == 2, structure=np.ones((3, 3), bool))
        h, w = label.shape
        for sl, idx in zip(ndimage.find_objects(comps), range(1, n + 1)):
            if sl is None or (comps[sl] == idx).sum() < min_area:
                continue
            boxes.append((sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
            sizes.append((w, h, w, h))
    return np.array(boxes, float), np.array(sizes, float)


def grounder(true: np.ndarray, sizes: np.ndarray, biased: bool, noise_px: float, wild: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Simulated answers and which of them are wild."""
    scale, shift = (SCALE, SHIFT) if biased else (1.0, 0.0)
    pred = (scale * true / sizes + shift) * sizes + rng.normal(0, noise_px, true.shape)
    is_wild = rng.random(len(true)) < wild
    for i in np.flatnonzero(is_wild):
        w, h = sizes[i, :2]
        x0, y0 = rng.uniform(0, 0.8) * w, rng.uniform(0, 0.8) * h
        pred[i] = (x0, y0, x0 + rng.uniform(0.05, 0.2) * w, y0 + rng.uniform(0.05, 0.2) * h)
    pred[:, [0, 2]] = np.sort(pred[:, [0, 2]], axis=1)
    pred[:, [1, 3]] = np.sort(pred[:, [1, 3]], axis=1)
    return pred, is_wild


def iou_cov(a: np.ndarray, t: np.ndarray) -> tuple[float, float]:
    iw = max(0.0, min(a[2], t[2]) - max(a[0], t[0]))
    ih = max(0.0, min(a[3], t[3]) - max(a[1], t[1]))
    inter = iw * ih
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    return inter / (area(a) + area(t) - inter), inter / area(t)


def score(boxes: np.ndarray, true: np.ndarray) -> tuple[float, float, float]:
    err = float(np.abs(boxes - true).mean())
    ic = np.array([iou_cov(b, t) for b, t in zip(boxes, true)])
    return err, float(ic[:, 0].mean()), float(ic[:, 1].mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dubai"), help="Dubai folder")
    ap.add_argument("--min-area", type=int, default=2000, help="smallest building (pixels) used")
    ap.add_argument("--draws", type=int, default=20, help="random fitting sets per setting")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    dubai = Path(args.data)
    if not (dubai / "tile_7").is_dir():
        print(f"Dubai data not found at {dubai} (pass --data)", file=sys.stderr)
        return 2
    true, sizes = real_boxes(dubai, args.min_area)
    print(f"{len(true)} real building boxes (tile_7, >= {args.min_area} px); bias scale {SCALE.tolist()}, "
          f"shift {SHIFT.tolist()} (fractions of the image side)")
    print("scored on the held-out boxes whose answer is not wild (no refinement can fix a wild answer)")
    print(f"{'bias':>4} {'noise px':>8} {'wild':>5} {'n fit':>5} | {'raw err':>8} {'IoU':>5} {'cov':>5} | {'fixed err':>9} "
          f"{'IoU':>5} {'cov':>5} | {'calib err':>9} {'IoU':>5} {'cov':>5} | {'failed':>6}")
    rng = np.random.default_rng(args.seed)
    for biased, noise, wild in ((False, 2.0, 0.0), (True, 0.0, 0.0), (True, 2.0, 0.0), (True, 5.0, 0.0),
                                (True, 5.0, 0.1), (True, 5.0, 0.2)):
        for n_fit in (3, 5, 10, 20):
            rows, failed = [], 0
            for _ in range(args.draws):
                pred, is_wild = grounder(true, sizes, biased, noise, wild, rng)
                idx = rng.permutation(len(true))
                fit, test = idx[:n_fit], idx[n_fit:]
                test = test[~is_wild[test]]
                try:
                    prof = fit_profile(pred[fit], true[fit], "sim", sizes=[tuple(s[:2]) for s in sizes[fit]])
                except GeosegError:
                    failed += 1
                    continue
                wh = sizes[test, :2].astype(int)
                fixed = np.array([refine_box(tuple(p), w, h) for p, (w, h) in zip(pred[test], wh)])
                calib = np.array([refine_box(tuple(p), w, h, prof) for p, (w, h) in zip(pred[test], wh)])
                raw = np.array([refine_box(tuple(p), w, h, _IDENTITY) for p, (w, h) in zip(pred[test], wh)])
                rows.append(score(raw, true[test]) + score(fixed, true[test]) + score(calib, true[test]))
            m = np.mean(rows, axis=0)
            print(f"{'yes' if biased else 'no':>4} {noise:>8.1f} {wild:>5.2f} {n_fit:>5d} | {m[0]:>8.1f} {m[1]:>5.3f} {m[2]:>5.3f} | {m[3]:>9.1f} "
                  f"{m[4]:>5.3f} {m[5]:>5.3f} | {m[6]:>9.1f} {m[7]:>5.3f} {m[8]:>5.3f} | {failed:>6d}")
    return 0


class _Identity:
    """A profile that changes nothing: the raw box, clamped and at least 16 px like the others."""

    def apply(self, box, width, height):  # noqa: ANN001, ANN201 - duck-typed CalibrationProfile
        return tuple(box)


_IDENTITY = _Identity()

if __name__ == "__main__":
    raise SystemExit(main())
