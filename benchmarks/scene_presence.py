"""Deciding "is the target here?" per window or per scene: which presence rule answers class texts best?

``geoseg segment --text`` on a scene larger than one tile answers the text in every window; the
unified model's presence head used to decide in each window alone, and a window just under the
threshold dropped its whole answer (a square hole in a water body at a tile border). This script
runs the network ONCE per window with every answer kept (``scene_presence=0.0``: a window under the
threshold hands its answer over as ``WindowResult.held``), records each window's presence and
answer, and then simulates the rules offline on the same records:

* ``window``: a window under the threshold drops its answer (the old rule);
* ``scene``: every window counts when any window of the scene reaches the threshold, none otherwise;
* ``hystF``: a window counts when its presence is at least F x threshold and some window of the
  scene reaches the threshold (:class:`geoseg.unified.decision.ScenePresence` with ``low_factor`` F);
* ``lowF``: a control, a per-window threshold of F x threshold with no scene condition.

Per tile size and class it prints the pooled IoU (intersections / unions over the scenes holding the
class) and the mean per-scene IoU, the scenes without the class where something was marked, the
windows whose core holds none of the class yet were marked (specks), and how many (scene, class)
IoUs each rule moved up or down against ``window``. Unlabeled pixels are left out. Class texts:
"the water", "buildings", "vegetation", "roads", "land" (class-level text is what the model card
says works). ``--mosaic`` adds 2x2 mosaics of the region's images (groups of four, wrapping), so a
1024 tile has more than one window. Overlap: 128, or a quarter of a smaller tile (256 -> 64).

    python benchmarks/scene_presence.py [--region tile_6] [--tile-size 256 --tile-size 512 ...] \
        [--mosaic] [--factor 0.3 --factor 0.5 ...] [--cache runs/scene_presence_tile_6.pkl]
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TEXTS = {"the water": "water", "buildings": "building", "vegetation": "vegetation", "roads": "road", "land": "land"}


def labels_of(mask_path: Path) -> dict[str, np.ndarray]:
    """Per class a boolean map of its labelled pixels, and ``"known"``: every labelled pixel."""
    from PIL import Image

    from geoseg.data.sources.base import UNLABELED
    from geoseg.data.sources.dubai import CLASSES, PALETTE, palette_to_classes

    label, _ = palette_to_classes(np.array(Image.open(mask_path).convert("RGB")), PALETTE, unknown="unlabeled")
    out = {name: label == i for i, name in enumerate(CLASSES)}
    out["known"] = label != UNLABELED
    return out


def mosaics(images: list[Path], folder: Path) -> list[tuple[Path, Path]]:
    """2x2 mosaics (PNG, lossless) of consecutive groups of four images and of their masks."""
    from PIL import Image

    out = []
    n = len(images)
    for k in range(0, n, 4):
        group = [images[(k + i) % n] for i in range(4)]
        pair = []
        for kind, path_of in (("image", lambda p: p), ("mask", lambda p: p.parent.parent / "masks" / (p.stem + ".png"))):
            arrs = [np.array(Image.open(path_of(p)).convert("RGB")) for p in group]
            h, w = min(a.shape[0] for a in arrs), min(a.shape[1] for a in arrs)
            arrs = [a[:h, :w] for a in arrs]
            whole = np.concatenate([np.concatenate(arrs[:2], 1), np.concatenate(arrs[2:], 1)], 0)
            path = folder / f"{kind}_mosaic{k // 4 + 1}.png"
            Image.fromarray(whole).save(path)
            pair.append(path)
        out.append((pair[0], pair[1]))
    return out


def record(scenes: list[tuple[Path, Path]], tile: int, checkpoint: str | None, threads: int | None) -> dict:
    """Per scene and window: ``(text, core window, presence, packed answer)`` with the gate off."""
    from geoseg.pipeline import group_tasks, plan_windows, process_window
    from geoseg.prompts import Prompt
    from geoseg.raster.io import open_source
    from geoseg.unified.segmenter import UnifiedSegmenter

    seg = UnifiedSegmenter(checkpoint, device="cpu", threads=threads, scene_presence=0.0,
                           class_question=False)  # the class texts as written, as when the figures were taken
    prompts = [Prompt(text=t) for t in TEXTS]
    out = {"threshold": seg.decision.presence_threshold, "scenes": {}}
    for image, mask in scenes:
        t0 = time.perf_counter()
        src = open_source(str(image))
        recs = []
        for group in group_tasks(plan_windows(src.width, src.height, prompts, tile, min(128, tile // 4))):
            for r in process_window(src, group, seg):
                answer = r.mask if r.present or r.held is None else r.held
                w = r.window
                recs.append((prompts[r.prompt_index].text, (int(w.col_off), int(w.row_off), int(w.width),
                                                            int(w.height)), float(r.score), np.packbits(answer)))
        out["scenes"][str(image)] = {"mask": str(mask), "size": (src.width, src.height), "recs": recs}
        src.close()
        print(f"  {image.name} at {tile}: {len(recs)} answers in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def rules(threshold: float, factors: list[float]) -> dict:
    """Rule name -> ``keep(presence, scene max presence)``."""
    def hysteresis(low: float):
        return lambda p, mx: mx >= threshold and p >= low

    def lowered(low: float):
        return lambda p, mx: p >= low

    out = {"window": lambda p, mx: p >= threshold, "scene": lambda p, mx: mx >= threshold}
    out.update({f"hyst{f:g}": hysteresis(f * threshold) for f in factors})
    out.update({f"low{f:g}": lowered(f * threshold) for f in factors})
    return out


def simulate(data: dict, factors: list[float]) -> dict:
    """Every rule's scene masks against the labels: per rule and class, the figures the table prints."""
    keep = rules(data["threshold"], factors)
    stats: dict = {name: defaultdict(lambda: {"inter": 0, "union": 0, "ious": {}, "fp": 0, "absent": 0})
                   for name in keep}
    specks = defaultdict(lambda: [0, 0])
    for image, scene in data["scenes"].items():
        gt = labels_of(Path(scene["mask"]))
        known = gt["known"]
        width, height = scene["size"]
        by_text = defaultdict(list)
        for text, (c, r, w, h), p, bits in scene["recs"]:
            by_text[text].append(((c, r, w, h), p, np.unpackbits(bits, count=w * h).reshape(h, w).astype(bool)))
        for text, recs in by_text.items():
            cls = TEXTS[text]
            target = gt[cls] & known
            top = max(p for _, p, _ in recs)
            for name, rule in keep.items():
                pred = np.zeros((height, width), bool)
                for (c, r, w, h), p, m in recs:
                    if rule(p, top):
                        pred[r:r + h, c:c + w] = m
                        marked = int((m & known[r:r + h, c:c + w]).sum())
                        if marked and not target[r:r + h, c:c + w].any():
                            specks[name][0] += 1
                            specks[name][1] += marked
                pred &= known
                s = stats[name][cls]
                if target.any():
                    i, u = int((pred & target).sum()), int((pred | target).sum())
                    s["inter"] += i
                    s["union"] += u
                    s["ious"][image] = i / u
                else:
                    s["absent"] += 1
                    s["fp"] += bool(pred.any())
    return {"stats": stats, "specks": specks}


def report(tile: int, data: dict, result: dict) -> None:
    stats, specks = result["stats"], result["specks"]
    classes = list(TEXTS.values())
    print(f"\ntile {tile}: {len(data['scenes'])} scenes, presence threshold {data['threshold']}; "
          "per class: pooled IoU / mean IoU, absent-class scenes marked / absent-class scenes")
    print(f"{'rule':8s}" + "".join(f"{c:>24s}" for c in classes) + f"{'mean pooled':>13s}  {'specks':>19s}  vs window")
    base = stats["window"]
    for name, per in stats.items():
        cells, pooled, up, down = [], [], 0, 0
        for c in classes:
            s = per[c]
            pooled.append(s["inter"] / s["union"] if s["union"] else float("nan"))
            mean = float(np.mean(list(s["ious"].values()))) if s["ious"] else float("nan")
            cells.append(f"{pooled[-1]:.3f}/{mean:.3f} fp {s['fp']}/{s['absent']}")
            for image, v in s["ious"].items():
                d = v - base[c]["ious"][image]
                up += d > 1e-4
                down += d < -1e-4
        n, px = specks[name]
        print(f"{name:8s}" + "".join(f"{x:>24s}" for x in cells) + f"{np.nanmean(pooled):13.4f}"
              f"  {f'{n} win {px} px':>19s}  +{up} -{down}")


def common_arguments(ap: argparse.ArgumentParser) -> None:
    """The options this script shares with ``tile_stitching.py``: data, region, tiles, mosaics, cache."""
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dubai"))
    ap.add_argument("--region", default="tile_6")
    ap.add_argument("--tile-size", type=int, action="append")
    ap.add_argument("--mosaic", action="store_true", help="also 2x2 mosaics of the region's images")
    ap.add_argument("--images", type=int, default=9)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--cache", default=None, help="pickle of the recorded windows (reused when it exists)")


def recordings(args: argparse.Namespace, tiles: list[int], record_fn, key_extra: tuple = ()):
    """Per tile size, ``(tile, data)``: ``record_fn(scenes, tile)`` on the region's images (and mosaics), cached.

    Mosaic masks live in a temporary folder made here; the recorded paths are pointed at it.
    """
    folder = Path(args.data) / args.region
    images = sorted((folder / "images").glob("*.jpg"))[: args.images]
    cache = Path(args.cache) if args.cache else None
    recorded = pickle.loads(cache.read_bytes()) if cache is not None and cache.is_file() else {}
    with tempfile.TemporaryDirectory() as tmp:
        scenes = [(p, folder / "masks" / (p.stem + ".png")) for p in images]
        if args.mosaic:
            scenes += mosaics(images, Path(tmp))
        for tile in tiles:
            key = (args.region, tile, args.mosaic, len(images), *key_extra)
            if key not in recorded:
                recorded[key] = record_fn(scenes, tile)
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    cache.write_bytes(pickle.dumps(recorded))
            data = recorded[key]
            for s in data["scenes"].values():  # mosaic masks live in the temp folder: rebuild paths
                s["mask"] = str(Path(tmp) / Path(s["mask"]).name) if "mosaic" in s["mask"] else s["mask"]
            yield tile, data


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(ap)
    ap.add_argument("--factor", type=float, action="append")
    ap.add_argument("--checkpoint", default=None)
    args = ap.parse_args(argv)
    factors = args.factor or [0.3, 0.5, 0.7]
    for tile, data in recordings(args, args.tile_size or [256, 512, 1024],
                                 lambda scenes, tile: record(scenes, tile, args.checkpoint, args.threads),
                                 (args.checkpoint,)):
        report(tile, data, simulate(data, factors))


if __name__ == "__main__":
    main()
