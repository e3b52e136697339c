"""How well the unified model's semantic head maps the Dubai classes: pixel accuracy, per-class IoU, mIoU.

Why: the class-region step of point and box answers (:mod:`geoseg.unified.object_region`) cuts
answers along this map, and class-level text answers are about as good as it (docs/model_history.md,
2026-12-02), so its quality bounds both. Each region's scenes are read by the data engine's own
Dubai reader, cut into non-overlapping 512-px tiles (the training tile size; edge remainders are
skipped), and each tile's class map (``UnifiedSegmenter.class_map``) is compared with the palette
labels (a scene smaller than a tile is one tile); unlabeled pixels are left out.

Usage: ``python benchmarks/semantic_map.py [--checkpoint PATH] [--data ../shared/data/dubai]
[--regions tile_6 tile_7] [--max-scenes N] [--threads 2]`` (the shipped checkpoint by default;
``tile_6`` is the validation region, ``tile_7`` the held-out one).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from geoseg.data.sources.dubai import CLASSES, DubaiSource
from geoseg.unified.segmenter import UnifiedSegmenter

TILE = 512


def accumulate(confusion: np.ndarray, winner: np.ndarray, label: np.ndarray) -> None:
    """Add one tile to ``confusion`` (``K×K``, rows = label, columns = prediction); labels ≥ K are skipped."""
    k = confusion.shape[0]
    keep = label < k
    confusion += np.bincount(label[keep].astype(np.int64) * k + winner[keep], minlength=k * k).reshape(k, k)


def scores(confusion: np.ndarray) -> dict:
    """Pixel accuracy, per-class IoU (None for a class absent from both) and their mean."""
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = [float(t / u) if u else None for t, u in zip(tp, union)]
    present = [v for v in iou if v is not None]
    return {"pixel_acc": float(tp.sum() / max(1, confusion.sum())), "iou": iou,
            "miou": float(np.mean(present)) if present else None}


def region_confusion(seg: UnifiedSegmenter, data: Path, region: str, max_scenes: int | None = None) -> np.ndarray:
    """The confusion matrix of ``seg``'s class map over the 512-px tiles of one Dubai region."""
    source = DubaiSource(str(data), regions=[region], **({"max_scenes_per_region": max_scenes} if max_scenes else {}))
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    for ref in source.scenes():
        scene = source.load(ref)
        h, w = scene.label.shape
        th, tw = min(TILE, h), min(TILE, w)  # a scene smaller than a tile is one tile
        for y in range(0, h - th + 1, th):
            for x in range(0, w - tw + 1, tw):
                seg.set_image(np.ascontiguousarray(scene.rgb[y:y + th, x:x + tw]))
                classes = seg.class_map()
                if classes is None:
                    raise SystemExit("this checkpoint has no semantic head (semantic_aux: false): nothing to measure")
                accumulate(confusion, classes.winner, scene.label[y:y + th, x:x + tw])
    return confusion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "dubai"))
    ap.add_argument("--regions", nargs="+", default=["tile_6", "tile_7"])
    ap.add_argument("--max-scenes", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    seg = UnifiedSegmenter(a.checkpoint, device="cpu", threads=a.threads)
    print(f"semantic head of {seg.checkpoint_path.name}: IoU per class on {TILE}-px tiles (%)\n")
    print("| region | pixel acc | mIoU | " + " | ".join(CLASSES) + " |")
    print("|---|---:|---:|" + "---:|" * len(CLASSES))
    for region in a.regions:
        s = scores(region_confusion(seg, Path(a.data), region, a.max_scenes))
        if s["miou"] is None:
            print(f"| {region} | no labelled pixels | | " + " | ".join("" for _ in CLASSES) + " |")
            continue
        cells = " | ".join("–" if v is None else f"{100 * v:.1f}" for v in s["iou"])
        print(f"| {region} | {100 * s['pixel_acc']:.1f} | {100 * s['miou']:.1f} | {cells} |")


if __name__ == "__main__":
    main()
