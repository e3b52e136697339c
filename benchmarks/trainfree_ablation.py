"""Ablation of the training-free route: refinement (none / fixed / calibrated) x routes (A / B / both).

No multimodal LLM can run on these machines, so the boxes come from two stand-in
grounders, each a controlled experiment of what refinement and calibration recover:

(a) ``unified-proposals`` — the unified model reads the instruction; the bounding box of its
    text prediction is the proposal (a real, imperfect grounder with its own drift);
(b) ``gt+bias`` — the ground-truth box with an injected systematic bias (per coordinate
    ``u' = scale * u + shift`` in fractions of the image side, like a coordinate-convention
    mix-up) plus seeded Gaussian noise: exactly the error model the calibration fits.

Each row is a ``geoseg bench run`` (the runner API: cached predictions, the benchmark's own
metrics) of ``TrainFreeSegmenter`` with the shipped unified model as the mask backend and
similarity source. Calibration profiles are fitted (``geoseg.trainfree.calibrate``) on a
disjoint seeded calibration set of other scenes. Reference rows: the unified model on the
instruction alone, and the unified model given the exact ground-truth box.

Data: the benchmark split built by the data engine (Dubai tile_7, held out of training)::

    geoseg data build --config configs/data/bench.yaml -o out/bench

Run: ``PYTHONPATH=src nice -n 10 python benchmarks/trainfree_ablation.py --data out/bench``
(about 10 minutes on the 2-core machine with the defaults).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from geoseg.bench.baselines import gt_box, resolve_model
from geoseg.bench.readers import load_benchmark
from geoseg.bench.runner import run_benchmark
from geoseg.prompts import Prompt
from geoseg.trainfree.calibrate import calibrate
from geoseg.trainfree.client import Grounding, NoBoxError
from geoseg.trainfree.refine import fixed_rule, refine_box
from geoseg.trainfree.segmenter import TrainFreeSegmenter

ROOT = Path(__file__).resolve().parents[1]
TEXT_TASKS = ("referring", "reasoning")
#: the injected systematic error of grounder (b): u' = scale * u + shift per (x0, y0, x1, y1), u in [0, 1]
BIAS_SCALE = (0.94, 0.95, 0.97, 0.96)
BIAS_SHIFT = (0.05, 0.06, -0.01, 0.0)
NOISE = 0.006  # Gaussian noise, fraction of the image side (3 px on a 512 tile)


def _digest(image: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=12).hexdigest()


class _Lookup:
    """Maps (image pixels, instruction) back to the benchmark sample (the grounders see only those)."""

    def __init__(self, samples) -> None:
        self.by_key = {}
        for s in samples:
            self.by_key[(_digest(s.load_image()), s.instruction.strip())] = s

    def sample(self, image: np.ndarray, instruction: str):
        return self.by_key[(_digest(image), instruction.strip())]


class UnifiedProposals:
    """Grounder (a): the bounding box of the unified model's text prediction (its own model instance)."""

    model = backend_key = "unified-proposals"

    def __init__(self, lookup: _Lookup, device: str = "cpu") -> None:
        from geoseg.unified.segmenter import UnifiedSegmenter

        self.seg = UnifiedSegmenter(device=device, threads=2)
        self.lookup = lookup
        self.cache: dict = {}
        self._held = None

    def ground(self, image: np.ndarray, instruction: str) -> Grounding:
        key = (_digest(image), instruction.strip())
        if key not in self.cache:
            s = self.lookup.sample(image, instruction)
            if self._held != key[0]:
                self.seg.set_image(image)
                self._held = key[0]
            self.cache[key] = gt_box(self.seg.predict(Prompt(text=instruction, task=s.task)).mask)
        box = self.cache[key]
        if box is None:
            raise NoBoxError("the unified model found nothing")
        return Grounding(box=box, points=[], label=None, raw="", family="unified")


class BiasedTruth:
    """Grounder (b): the ground-truth box, systematically biased and noisy (seeded per sample)."""

    model = backend_key = "gt+bias"

    def __init__(self, lookup: _Lookup, seed: int = 0) -> None:
        self.lookup, self.seed = lookup, seed

    def ground(self, image: np.ndarray, instruction: str) -> Grounding:
        s = self.lookup.sample(image, instruction)
        box = gt_box(s.load_mask())
        if box is None:
            raise NoBoxError("no target")
        h, w = image.shape[:2]
        side = np.array([w, h, w, h], float)
        rng = np.random.default_rng([self.seed, int(hashlib.sha1(s.sample_id.encode()).hexdigest()[:8], 16)])
        u = np.array(box) / side * np.array(BIAS_SCALE) + np.array(BIAS_SHIFT) + rng.normal(0, NOISE, 4)
        x0, y0, x1, y1 = (u * side).tolist()
        return Grounding(box=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), points=[], label=s.category or None,
                         raw="", family="synthetic")


def _box_iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_quality(grounder, samples, profile) -> dict:
    """Mean corner error (px) and box IoU against the true box: raw, fixed rule, calibrated."""
    out = {"raw": [], "fixed": [], "calibrated": []}
    for s in samples:
        img = s.load_image()
        h, w = img.shape[:2]
        true = gt_box(s.load_mask())
        try:
            raw = grounder.ground(img, s.instruction).box
        except NoBoxError:
            continue
        for name, b in (("raw", raw), ("fixed", fixed_rule(raw, w, h)), ("calibrated", refine_box(raw, w, h, profile))):
            out[name].append((float(np.abs(np.array(b) - np.array(true)).mean()), _box_iou(b, true)))
    return {k: {"corner_err_px": float(np.mean([e for e, _ in v])), "box_iou": float(np.mean([i for _, i in v])),
                "n": len(v)} for k, v in out.items() if v}


def pick(samples, n: int, seed: int, scenes: set[str] | None, exclude: set[str] | None):
    rng = np.random.default_rng(seed)
    pool = [s for s in samples if s.task in TEXT_TASKS and s.meta.get("source") == "dubai" and not s.empty_target
            and (scenes is None or s.meta.get("scene") in scenes)
            and (exclude is None or s.meta.get("scene") not in exclude)]
    idx = rng.choice(len(pool), size=min(n, len(pool)), replace=False)
    return sorted((pool[i] for i in idx), key=lambda s: (s.image_key, s.sample_id))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "out" / "bench"), help="benchmark shards (geoseg data build ...)")
    ap.add_argument("--out", default=str(ROOT / "out" / "trainfree_ablation"), help="run folders and results.json")
    ap.add_argument("-n", type=int, default=40, help="evaluation samples (seeded)")
    ap.add_argument("--calib", type=int, default=30, help="calibration samples (seeded, other scenes)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not Path(args.data).exists():
        print(f"benchmark data not found at {args.data}: geoseg data build --config configs/data/bench.yaml "
              f"-o {args.data}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    samples, fmt = load_benchmark(args.data, None, "test")
    scenes = sorted({s.meta.get("scene") for s in samples if s.meta.get("source") == "dubai"})
    calib_scenes = set(np.random.default_rng(args.seed).choice(scenes, size=max(1, len(scenes) // 3), replace=False))
    evals = pick(samples, args.n, args.seed, None, calib_scenes)
    calib = pick(samples, args.calib, args.seed + 1, calib_scenes, None)
    lookup = _Lookup(evals + calib)
    print(f"{len(evals)} evaluation samples ({', '.join(f'{t} {sum(s.task == t for s in evals)}' for t in TEXT_TASKS)}) "
          f"from {len({s.image_key for s in evals})} tiles; {len(calib)} calibration samples from scenes "
          f"{', '.join(sorted(calib_scenes))}", flush=True)

    from geoseg.segmenters import build_segmenter

    mask_model = build_segmenter("unified", device="cpu", threads=2)
    grounders = {"a": UnifiedProposals(lookup), "b": BiasedTruth(lookup, args.seed)}
    out = Path(args.out)
    rows, quality = [], {}
    for src, grounder in grounders.items():
        profile = calibrate(grounder, calib, key=grounder.backend_key)
        quality[src] = {"profile": profile.to_dict(), **box_quality(grounder, evals, profile)}
        print(f"({src}) {grounder.model}: calibration on {profile.n} boxes, corner error "
              f"{profile.residuals['mean_abs_before']:.1f} -> {profile.residuals['mean_abs_after']:.1f} px (fit set)",
              flush=True)
        for refinement, routes in (("none", "both"), ("fixed", "both"), ("calibrated", "both"),
                                   ("fixed", "A"), ("fixed", "B"), ("none", "B"), ("calibrated", "B")):
            seg = TrainFreeSegmenter(grounder=grounder, mask_backend=mask_model, refinement=refinement,
                                     profile=profile if refinement == "calibrated" else None, routes=routes)
            spec = resolve_model(f"trainfree[{src}:{grounder.model},{refinement},{routes}]", segmenter=seg)
            t0 = time.perf_counter()
            m = run_benchmark(spec, evals, out / f"{src}-{refinement}-{routes}", data=args.data, fmt=fmt,
                              split="test", report=False)
            rows.append({"source": f"({src}) {grounder.model}", "refinement": refinement, "routes": routes,
                         **{k: m["overall"][k] for k in ("gIoU", "cIoU", "Pr@0.5")}, "n": m["overall"]["n"],
                         "seconds": round(time.perf_counter() - t0, 1)})
            print(f"  {refinement:>10} {routes:>4}  gIoU {m['overall']['gIoU']:.3f}  ({rows[-1]['seconds']} s)",
                  flush=True)
    reference = build_segmenter("unified", device="cpu", threads=2)  # its own instance: the runner sets images directly
    for name, spec in (("unified, instruction only", "unified"), ("unified, exact GT box", "oracle-box:unified")):
        ms = resolve_model(spec, segmenter=reference)
        m = run_benchmark(ms, evals, out / spec.replace(":", "_"), data=args.data, fmt=fmt, split="test", report=False)
        rows.append({"source": f"reference: {name}", "refinement": "-", "routes": "-",
                     **{k: m["overall"][k] for k in ("gIoU", "cIoU", "Pr@0.5")}, "n": m["overall"]["n"], "seconds": 0})
    total = time.perf_counter() - t_start
    print("\n| box source | refinement | routes | gIoU | cIoU | Pr@0.5 |\n|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['source']} | {r['refinement']} | {r['routes']} | {100 * r['gIoU']:.1f} | {100 * r['cIoU']:.1f} "
              f"| {100 * r['Pr@0.5']:.1f} |")
    print("\n| box source | boxes | corner error raw | fixed rule | calibrated | box IoU raw | fixed | calibrated |"
          "\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for src, q in quality.items():
        print(f"| ({src}) {grounders[src].model} | {q['raw']['n']} | {q['raw']['corner_err_px']:.1f} px "
              f"| {q['fixed']['corner_err_px']:.1f} px | {q['calibrated']['corner_err_px']:.1f} px "
              f"| {q['raw']['box_iou']:.3f} | {q['fixed']['box_iou']:.3f} | {q['calibrated']['box_iou']:.3f} |")
    print(f"\n{len(evals)} samples, empty-target rule unigeoseg, total {total / 60:.1f} min")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": rows, "box_quality": quality, "n": len(evals),
                                                  "seconds": total, "bias": {"scale": BIAS_SCALE, "shift": BIAS_SHIFT,
                                                                             "noise": NOISE}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
