"""Box (or click) prompts on objects of every size, through `geoseg segment`'s windows: does zoom help small ones?

The data engine keeps only targets of at least 0.5 % of a tile, so the benchmark and the
validation rows hold few small objects; a GIS analyst's boxes (parcels, buildings) are often
small. This script takes the 8-connected class regions of a Dubai region's label masks, draws up
to ``--per-bucket`` of them per image in each size bucket of the box's longer side, prompts the
unified model with each region's bounding box exactly as ``geoseg segment`` would (a context
window of at least 256 px, the packaged checkpoint unless ``--checkpoint``), and prints the IoU
with the region per bucket for each zoom setting, paired against the first, with a 95 %
bootstrap interval. Defaults: the validation region ``tile_6`` (where the shipped setting was
chosen), settings ``off`` and the shipped one.

``--prompt point`` asks for the same regions with one click at each region's innermost pixel
(the data engine's rule, +0.5 px to the pixel's centre) instead of its box; the sizes stay the
regions' boxes' (a click carries none, and the zoom, which works on boxes, changes nothing).
``--checkpoint`` (repeatable; ``packaged`` is the shipped file) compares networks on the same rows:
each checkpoint is run with each zoom setting, every row paired against the first.
``--windows shared`` (repeatable with ``crops``, the default) answers each prompt on the window
``geoseg segment`` gives backends whose ``shares_windows`` is set (SAM): the whole image when it
fits ``--tile-size``, else the grid tile holding the prompt with the most context, instead of the
unified backend's own context crop around it; prompts on one window share its image embedding.

    python benchmarks/small_boxes.py [--region tile_6] [--per-bucket 12] \
        [--zoom off --zoom 32x4 --zoom 48x4 ...] [--images 9] [--prompt point] [--checkpoint X.pt] \
        [--windows crops --windows shared] [--tile-size 1024]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

BUCKETS = ((4, 16), (16, 32), (32, 64), (64, 128), (128, None))
ROOT = Path(__file__).resolve().parents[1]


def regions(label: np.ndarray, n_classes: int) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """``(class, component id, (x, y, w, h))`` of every 8-connected class region of at least 12 px that
    covers at most half the image (a box around most of the image asks little)."""
    out = []
    h_img, w_img = label.shape
    for c in range(n_classes):
        n, _, stats, _ = cv2.connectedComponentsWithStats((label == c).view(np.uint8), connectivity=8)
        for i in range(1, n):
            x, y, w, h, area = (int(v) for v in stats[i])
            if area >= 12 and w * h <= 0.5 * h_img * w_img:
                out.append((c, i, (x, y, w, h)))
    return out


def innermost(region: np.ndarray) -> tuple[float, float]:
    """The click ``(x, y)`` at the pixel of ``region`` farthest from its border (its centre: +0.5)."""
    dist = cv2.distanceTransform(np.pad(region.view(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return float(x) + 0.5, float(y) + 0.5


def bucket_of(side: int) -> int:
    return next(k for k, (lo, hi) in enumerate(BUCKETS) if side >= lo and (hi is None or side < hi))


def parse_zoom(value: str):
    """``off`` or ``SIDExCONTEXT`` (e.g. ``48x4``): a :class:`ZoomConfig` or None."""
    from geoseg.unified.zoom import ZoomConfig

    if value == "off":
        return None
    side, context = value.split("x")
    return ZoomConfig(min_box_side=float(side), context=float(context))


def main(argv: list[str] | None = None) -> dict:
    from PIL import Image

    import geoseg.pipeline as P
    from geoseg.data.sources.dubai import CLASSES, PALETTE, palette_to_classes
    from geoseg.prompts import Prompt
    from geoseg.raster.io import open_source
    from geoseg.raster.writer import resample_part
    from geoseg.unified.zoom import ZoomConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dubai"))
    ap.add_argument("--region", default="tile_6")
    ap.add_argument("--images", type=int, default=9)
    ap.add_argument("--per-bucket", type=int, default=12)
    ap.add_argument("--zoom", action="append", default=None, help="off or SIDExCONTEXT, e.g. 48x4 (repeatable)")
    ap.add_argument("--checkpoint", action="append", default=None,
                    help="repeatable; 'packaged' (the default) is the shipped checkpoint")
    ap.add_argument("--seed", type=int, default=6)
    ap.add_argument("--prompt", choices=["box", "point"], default="box")
    ap.add_argument("--windows", action="append", choices=["crops", "shared"], default=None,
                    help="repeatable; crops (the default): a context crop per prompt; shared: the whole image "
                         "or the grid tile holding the prompt, as for backends that share windows")
    ap.add_argument("--tile-size", type=int, default=1024, help="geoseg segment's --tile-size (default 1024)")
    args = ap.parse_args(argv)
    windows = args.windows or ["crops"]
    shipped = ZoomConfig()
    zooms = args.zoom or ["off", f"{shipped.min_box_side:g}x{shipped.context:g}"]

    rng = np.random.default_rng(args.seed)
    folder = Path(args.data) / args.region
    images = sorted((folder / "images").glob("*.jpg"))[: args.images]
    rows = []  # (image, class, component, box side, box)
    for img in images:
        mask = np.array(Image.open(folder / "masks" / (img.stem + ".png")).convert("RGB"))
        label, _ = palette_to_classes(mask, PALETTE, unknown="unlabeled")
        by_bucket: dict[int, list] = {}
        for c, i, (x, y, w, h) in regions(label, len(CLASSES)):
            by_bucket.setdefault(bucket_of(max(w, h)), []).append((c, i, (x, y, w, h)))
        for k in range(len(BUCKETS)):
            cands = by_bucket.get(k, [])
            for j in rng.permutation(len(cands))[: args.per_bucket]:
                c, i, (x, y, w, h) = cands[j]
                rows.append((img, c, i, max(w, h), (x, y, x + w, y + h)))
    print(f"{len(rows)} {args.prompt} prompts from {len(images)} image(s) of {args.region}")

    checkpoints = args.checkpoint or ["packaged"]
    settings = [(ck, w, z) for ck in checkpoints for w in windows for z in zooms]
    results: dict[str, np.ndarray] = {}
    encodes: dict[str, int] = {}
    seg, loaded = None, None
    for ck, win_kind, zoom in settings:
        if ck != loaded:
            seg, _ = P.build_backend("unified", [Prompt(box=(0, 0, 1, 1))],
                                     checkpoint=None if ck == "packaged" else ck, device="cpu")
            loaded = ck
        name = zoom if len(checkpoints) == 1 else f"{ck} {zoom}"  # as given: runs/a/best.pt, runs/b/best.pt
        name = name if windows == ["crops"] else f"{name} {win_kind}"
        if name in results:
            raise SystemExit(f"error: {name} is asked for twice (give each checkpoint, window kind and zoom once)")
        seg.zoom = parse_zoom(zoom)
        seg.shares_windows = win_kind == "shared"  # as geoseg segment plans for a backend that shares windows
        ious, t0, current, encoded, valid = [], time.perf_counter(), None, None, None
        encodes[name] = 0
        for img, c, i, _, box in rows:
            if current != img:
                src, current = open_source(str(img)), img
                mask = np.array(Image.open(folder / "masks" / (img.stem + ".png")).convert("RGB"))
                label, _ = palette_to_classes(mask, PALETTE, unknown="unlabeled")
                comps = {k: cv2.connectedComponents((label == k).view(np.uint8), connectivity=8)[1]
                         for k in range(len(CLASSES))}
            truth = comps[c] == i
            prompt = (Prompt(box=tuple(float(v) for v in box)) if args.prompt == "box"
                      else Prompt(points=(innermost(truth),), labels=(1,)))
            tasks = P.plan_windows(src.width, src.height, [prompt], args.tile_size, 128, shared=seg.shares_windows)
            if (img, tasks[0].key) == encoded:  # the window set last: its embedding is reused, as segment does
                res = P.predict_tasks(tasks, seg, valid)[0]
            else:
                image = src.read_rgb(tasks[0].read, tasks[0].out_shape)
                res = P.process_window(src, tasks, seg, image=image)[0]
                encoded, valid = (img, tasks[0].key), image[1]
                encodes[name] += 1
            answer = np.zeros_like(truth)
            win = res.window
            if res.mask is not None:
                r0, c0 = int(win.row_off), int(win.col_off)
                answer[r0:r0 + int(win.height), c0:c0 + int(win.width)] = resample_part(res.mask, win, win)
            union = (answer | truth).sum()
            ious.append(float((answer & truth).sum() / union) if union else 0.0)
        results[name] = np.array(ious)
        print(f"  {name}: {time.perf_counter() - t0:.0f} s, {encodes[name]} window(s) encoded")

    from geoseg.bench.compare import paired_difference

    sides = np.array([r[3] for r in rows])
    bucket = np.array([bucket_of(int(v)) for v in sides], dtype=int)
    heads = [f"{lo}-{hi if hi else ''}" for lo, hi in BUCKETS]
    print("\nIoU % by the box's longer side (px; rows)")
    width = max(8, *(len(k) for k in results))
    print(f"{'setting':>{width}} {'all':>6} " + " ".join(f"{h:>9}" for h in heads) + "   IoU=0   paired vs first [95 %]")
    print(f"{'':>{width}} {len(rows):>6} " + " ".join(f"{int((bucket == k).sum()):>9}" for k in range(len(BUCKETS))))
    first = {i: ("box", v) for i, v in enumerate(next(iter(results.values())))}
    for name, v in results.items():
        cells = [f"{100 * v[bucket == k].mean():9.1f}" if (bucket == k).any() else f"{'-':>9}"
                 for k in range(len(BUCKETS))]
        pd = paired_difference(first, {i: ("box", x) for i, x in enumerate(v)})["all"] if len(v) else \
            {"diff": 0.0, "low": 0.0, "high": 0.0}
        print(f"{name:>{width}} {100 * v.mean():6.1f} " + " ".join(cells) + f"   {int((v == 0).sum()):5d}   "
              f"{100 * pd['diff']:+.1f} [{100 * pd['low']:+.1f}, {100 * pd['high']:+.1f}]")
    return {"rows": len(rows), "sides": sides.tolist(), "results": {k: v.tolist() for k, v in results.items()},
            "encodes": encodes}


if __name__ == "__main__":
    main()
