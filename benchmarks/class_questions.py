"""Bare class names as typed, or as the model's class-level question? (``geoseg.unified.class_questions``)

For each Dubai class, the shipped unified model answers the bare name a GIS user types ("water",
"buildings", "vegetation", "roads", "land") once as written (``class_question=False``) and once as
the segmenter reads it by default (the class's first class-level question from the knowledge
base). Scored per class as pooled IoU over the images holding it (unlabeled pixels left out), and
the mean of the classes. Each image is one window: the whole image when it fits ``--crop``, else
its centre crop of that size (tile_7's images are 1817x2061).

    python benchmarks/class_questions.py [--region tile_6] [--region tile_7] [--crop 1024] [--scenes 1024]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_presence import ROOT, labels_of  # noqa: E402

TYPED = {"water": "water", "building": "buildings", "vegetation": "vegetation", "road": "roads", "land": "land"}


def score(region: Path, crop: int, images: int) -> dict[str, dict[str, list[int]]]:
    """Per reading ("as typed", "as question") and class: ``[intersection, union]`` pooled over the images."""
    from rasterio.windows import Window

    from geoseg.prompts import Prompt
    from geoseg.raster.io import open_source
    from geoseg.unified.segmenter import UnifiedSegmenter

    readers = {"as typed": UnifiedSegmenter(device="cpu", class_question=False),
               "as question": UnifiedSegmenter(device="cpu")}
    out = {name: {c: [0, 0] for c in TYPED} for name in readers}
    for image in sorted((region / "images").glob("*.jpg"))[:images]:
        with open_source(str(image)) as src:
            w, h = min(crop, src.width), min(crop, src.height)
            win = Window((src.width - w) // 2, (src.height - h) // 2, w, h)
            rgb, _ = src.read_rgb(win)
        rows = slice(int(win.row_off), int(win.row_off) + h)
        cols = slice(int(win.col_off), int(win.col_off) + w)
        gt = {k: v[rows, cols] for k, v in labels_of(region / "masks" / f"{image.stem}.png").items()}
        for name, seg in readers.items():
            seg.set_image(rgb)
            for cls, text in TYPED.items():
                target = gt[cls] & gt["known"]
                if not target.any():
                    continue
                mask = seg.predict(Prompt(text=text)).mask & gt["known"]
                out[name][cls][0] += int((mask & target).sum())
                out[name][cls][1] += int((mask | target).sum())
    return out


def score_scenes(region: Path, tile: int, images: int) -> dict[str, dict[str, list[int]]]:
    """As :func:`score`, through ``geoseg.segment`` on the whole images at ``tile``-px tiles (what a user runs)."""
    import tempfile

    import rasterio

    from geoseg.pipeline import segment
    from geoseg.unified.segmenter import UnifiedSegmenter

    readers = {"as typed": UnifiedSegmenter(device="cpu", class_question=False),
               "as question": UnifiedSegmenter(device="cpu")}
    out = {name: {c: [0, 0] for c in TYPED} for name in readers}
    with tempfile.TemporaryDirectory() as tmp:
        for image in sorted((region / "images").glob("*.jpg"))[:images]:
            gt = labels_of(region / "masks" / f"{image.stem}.png")
            for name, seg in readers.items():
                for cls, text in TYPED.items():
                    target = gt[cls] & gt["known"]
                    if not target.any():
                        continue
                    segment(image, text=text, output=Path(tmp) / "m.tif", segmenter=seg, tile_size=tile)
                    with rasterio.open(Path(tmp) / "m.tif") as ds:
                        mask = (ds.read(1) == 1) & gt["known"]
                    out[name][cls][0] += int((mask & target).sum())
                    out[name][cls][1] += int((mask | target).sum())
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dubai"))
    ap.add_argument("--region", action="append")
    ap.add_argument("--crop", type=int, default=1024)
    ap.add_argument("--images", type=int, default=9)
    ap.add_argument("--scenes", type=int, default=None, metavar="TILE",
                    help="instead: whole images through geoseg.segment at TILE-px tiles (1024: the default)")
    args = ap.parse_args(argv)
    for region in args.region or ["tile_6", "tile_7"]:
        if args.scenes:
            result = score_scenes(Path(args.data) / region, args.scenes, args.images)
        else:
            result = score(Path(args.data) / region, args.crop, args.images)
        print(f"\n{region}: pooled IoU per class ({', '.join(TYPED.values())} as typed), mean of classes")
        print(f"{'reading':<12}" + "".join(f"{c:>11}" for c in TYPED) + f"{'mean':>9}")
        for name, stats in result.items():
            ious = [i / u if u else float("nan") for i, u in stats.values()]
            print(f"{name:<12}" + "".join(f"{v:11.3f}" for v in ious) + f"{np.nanmean(ious):9.3f}")


if __name__ == "__main__":
    main()
