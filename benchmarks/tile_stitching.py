"""How should the text answers of overlapping tiles be stitched into one scene mask?

``geoseg segment --text`` on a scene larger than one tile answers the text in every window of an
overlapping grid and keeps each window's *core* (its part up to the middle of each overlap). The
network answers differently with different context, so neighbouring windows disagree in their
overlap and an object cut by a core border can come out as a straight-edged half. This script runs
the unified model ONCE per window, keeps each window's whole answer (its full read window, with the
scene presence rule of :class:`geoseg.unified.decision.ScenePresence` applied as the writer does),
and compares stitching rules offline on the same answers:

* ``core``: each pixel from the window whose core holds it (what the writer does);
* ``union``: a pixel is marked when any window covering it marks it;
* ``vote``: marked when at least half the windows covering it mark it;
* ``object``: each connected part of a window's answer that touches the window's core is kept
  whole when its centre of mass lies in that core (the window that sees it most centrally), plus
  the core rule for the rest; parts are unioned.

Per tile size and class it prints the pooled IoU over the scenes holding the class (unlabeled
pixels left out) and the mean of the five classes. Class texts as in ``scene_presence.py``.

    python benchmarks/tile_stitching.py [--region tile_6] [--tile-size 512] [--mosaic] [--cache FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scene_presence import TEXTS, common_arguments, labels_of, recordings  # noqa: E402

RULES = ("core", "union", "vote", "object")


def record(scenes: list[tuple[Path, Path]], tile: int, threads: int | None) -> dict:
    """Per scene: the grid's windows (read, core) and per text each window's presence and full answer."""
    from geoseg.prompts import Prompt
    from geoseg.raster.io import open_source
    from geoseg.raster.tiling import plan_tiles
    from geoseg.unified.segmenter import UnifiedSegmenter

    seg = UnifiedSegmenter(device="cpu", threads=threads, scene_presence=0.0,
                           class_question=False)  # the class texts as written, as when the figures were taken
    out = {"threshold": seg.decision.presence_threshold, "low": seg.decision.presence_threshold * 0.3,
           "scenes": {}}
    for image, mask in scenes:
        t0 = time.perf_counter()
        src = open_source(str(image))
        tiles = plan_tiles(src.width, src.height, tile, min(128, tile // 4))
        recs = []
        for t in tiles:
            rgb, _ = src.read_rgb(t.read, (int(t.read.height), int(t.read.width)))
            seg.set_image(rgb)
            for text in TEXTS:
                pred = seg.predict(Prompt(text=text))
                answer = pred.info.get("held_mask", pred.mask) if not pred.mask.any() else pred.mask
                recs.append((text, _box(t.read), _box(t.core), float(pred.score), np.packbits(answer)))
        out["scenes"][str(image)] = {"mask": str(mask), "size": (src.width, src.height), "recs": recs}
        src.close()
        print(f"  {image.name} at {tile}: {len(tiles)} windows in {time.perf_counter() - t0:.1f}s", flush=True)
    return out


def _box(w) -> tuple[int, int, int, int]:
    return int(w.col_off), int(w.row_off), int(w.width), int(w.height)


def stitch(rule: str, recs: list, size: tuple[int, int]) -> np.ndarray:
    """The scene mask one rule makes of the kept windows' answers ``(read, core, answer)``."""
    from scipy import ndimage

    width, height = size
    if rule == "core" or rule == "object":
        out = np.zeros((height, width), bool)
        for (c0, r0, _, _), (c, r, w, h), m in recs:
            out[r:r + h, c:c + w] = m[r - r0:r - r0 + h, c - c0:c - c0 + w]
        if rule == "core":
            return out
        for (c0, r0, _, _), (c, r, w, h), m in recs:
            lab, n = ndimage.label(m)
            if not n:
                continue
            centres = ndimage.center_of_mass(m, lab, range(1, n + 1))
            for k, (cy, cx) in enumerate(centres, start=1):
                y, x = cy + r0, cx + c0
                if r <= y < r + h and c <= x < c + w:
                    part = lab == k
                    ys, xs = np.nonzero(part)
                    out[ys + r0, xs + c0] = True
        return out
    hits = np.zeros((height, width), np.int16)
    cover = np.zeros((height, width), np.int16)
    for (c0, r0, w0, h0), _, m in recs:
        hits[r0:r0 + h0, c0:c0 + w0] += m
        cover[r0:r0 + h0, c0:c0 + w0] += 1
    if rule == "union":
        return hits > 0
    return 2 * hits >= np.maximum(cover, 1)


def simulate(data: dict) -> dict:
    """Per rule and class: ``[intersection, union]`` pooled over the scenes holding the class, per-scene pairs
    (for the bootstrap), and the scenes without the class where the rule marked something."""
    stats = {rule: defaultdict(lambda: [0, 0]) for rule in RULES}
    per_scene = {rule: defaultdict(dict) for rule in RULES}
    absent = {rule: [0, 0] for rule in RULES}
    thr, low = data["threshold"], data["low"]
    for scene in data["scenes"].values():
        gt = labels_of(Path(scene["mask"]))
        known = gt["known"]
        by_text = defaultdict(list)
        for text, read, core, p, bits in scene["recs"]:
            by_text[text].append((read, core, p, bits))
        for text, recs in by_text.items():
            top = max(p for _, _, p, _ in recs)
            kept = []
            for read, core, p, bits in recs:
                w, h = read[2], read[3]
                m = np.unpackbits(bits, count=w * h).reshape(h, w).astype(bool)
                if not (p >= thr or (top >= thr and p >= low)):
                    m = np.zeros_like(m)
                kept.append((read, core, m))
            target = gt[TEXTS[text]] & known
            for rule in RULES:
                pred = stitch(rule, kept, scene["size"]) & known
                if not target.any():
                    absent[rule][0] += bool(pred.any())
                    absent[rule][1] += 1
                    continue
                s = stats[rule][TEXTS[text]]
                i, u = int((pred & target).sum()), int((pred | target).sum())
                s[0] += i
                s[1] += u
                per_scene[rule][TEXTS[text]][scene["mask"]] = (i, u)
    return {"stats": stats, "per_scene": per_scene, "absent": absent}


def class_mean(per_scene: dict, scenes: list[str]) -> float:
    """Mean over classes of the pooled IoU over ``scenes`` (a class no scene holds is left out)."""
    ious = []
    for by_scene in per_scene.values():
        i = sum(by_scene[s][0] for s in scenes if s in by_scene)
        u = sum(by_scene[s][1] for s in scenes if s in by_scene)
        if u:
            ious.append(i / u)
    return float(np.mean(ious))


def bootstrap(result: dict, rule: str, n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """The class-mean IoU difference ``rule`` - ``core`` and its 95 % interval, resampling scenes."""
    scenes = sorted({s for by in result["per_scene"]["core"].values() for s in by})
    rng = np.random.default_rng(seed)
    diff = class_mean(result["per_scene"][rule], scenes) - class_mean(result["per_scene"]["core"], scenes)
    draws = []
    for _ in range(n):
        pick = list(rng.choice(scenes, len(scenes)))
        draws.append(class_mean(result["per_scene"][rule], pick) - class_mean(result["per_scene"]["core"], pick))
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return diff, float(lo), float(hi)


def report(tile: int, result: dict) -> None:
    stats, absent = result["stats"], result["absent"]
    classes = list(TEXTS.values())
    print(f"\ntile {tile}: pooled IoU per class, mean of classes, its difference to core [95 % interval over "
          "scenes], absent-class scenes marked")
    print("rule    " + " ".join(f"{c:>10}" for c in classes) + "       mean   vs core                 absent")
    for rule in RULES:
        ious = [stats[rule][c][0] / stats[rule][c][1] if stats[rule][c][1] else float("nan") for c in classes]
        d, lo, hi = bootstrap(result, rule) if rule != "core" else (0.0, 0.0, 0.0)
        print(f"{rule:<8}" + " ".join(f"{v:10.3f}" for v in ious) + f" {np.nanmean(ious):10.3f}"
              f"   {d:+.3f} [{lo:+.3f}, {hi:+.3f}]   {absent[rule][0]}/{absent[rule][1]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(ap)
    args = ap.parse_args(argv)
    for tile, data in recordings(args, args.tile_size or [512], lambda scenes, tile: record(scenes, tile, args.threads)):
        report(tile, simulate(data))


if __name__ == "__main__":
    main()
