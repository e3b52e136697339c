"""Speed of the unified model: CPU per-tile latency and, on a CUDA GPU, batched throughput.

Prints:
* CPU, batch 1, 2 threads (default): a 512×512 RGB tile end to end — ``set_image``
  (resize to the working scale + backbone + pyramid) and one ``predict`` with the
  instruction's embedding already cached — as the median over repeats, plus the split
  between the two, the cost of a first (uncached) instruction, what the GrabCut re-cut of
  point/box answers adds (:mod:`geoseg.unified.refine`) and what keeping them to the class region
  the prompt marks adds (:mod:`geoseg.unified.object_region`);
* CUDA (when present): 512² tiles/s at batch 64 in bf16 autocast (resize + encoder +
  decoder), the FLOPs per tile (torch's FlopCounterMode) and the fraction of the GPU's
  peak dense bf16 FLOP/s that represents.

Usage: ``python benchmarks/model_speed.py [--checkpoint PATH] [--threads 2] [--repeats 30] [--gpu-only]``
(the packaged default checkpoint when present, else a randomly initialised network of the
default architecture: speed does not depend on the weights).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.prompts import Prompt
from geoseg.unified.build import build_model
from geoseg.unified.checkpoint import save_checkpoint
from geoseg.unified.config import load_config
from geoseg.unified.segmenter import UnifiedSegmenter, default_checkpoint_path

ROOT = Path(__file__).resolve().parents[1]
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def checkpoint_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if default_checkpoint_path().is_file():
        return default_checkpoint_path()
    cfg = load_config(ROOT / "configs" / "unigeoseg_default.yaml").model
    tmp = Path(tempfile.mkdtemp()) / "random.pt"
    print("note: no packaged checkpoint yet; timing a randomly initialised default architecture")
    return save_checkpoint(tmp, build_model(cfg), cfg)


def cpu_latency(ckpt: Path, threads: int, repeats: int) -> None:
    torch.set_num_threads(threads)
    seg = UnifiedSegmenter(checkpoint=ckpt, device="cpu")
    rng = np.random.default_rng(0)
    tile = rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)
    prompts = [Prompt(text="the buildings"), Prompt(box=(100.0, 100.0, 300.0, 260.0)),
               Prompt(text="Where could a boat sail?")]
    for p in prompts:  # warm-up, fills the instruction cache
        seg.set_image(tile)
        seg.predict(p)
    enc, dec = [], []
    for i in range(repeats):
        t0 = time.perf_counter()
        seg.set_image(tile)
        t1 = time.perf_counter()
        seg.predict(prompts[i % len(prompts)])
        t2 = time.perf_counter()
        enc.append(t1 - t0)
        dec.append(t2 - t1)
    total = [a + b for a, b in zip(enc, dec)]
    t0 = time.perf_counter()
    seg.predict(Prompt(text=f"the {repeats} largest water bodies near the coast"))
    first = time.perf_counter() - t0
    print(f"CPU ({threads} threads), 512x512 tile, batch 1, working scale {seg.cfg.input_size}px "
          f"({seg.cfg.arch}, {sum(p.numel() for p in seg.model.parameters()) / 1e6:.2f} M params):")
    print(f"  per tile (set_image + predict, cached instruction): median {statistics.median(total) * 1e3:.1f} ms, "
          f"p90 {np.percentile(total, 90) * 1e3:.1f} ms over {repeats} runs")
    print(f"  set_image {statistics.median(enc) * 1e3:.1f} ms, predict {statistics.median(dec) * 1e3:.1f} ms; "
          f"a new instruction adds the text encoder once: {first * 1e3:.1f} ms")
    answer_step_cost(ckpt, tile, repeats)


def answer_step_cost(ckpt: Path, tile: np.ndarray, repeats: int) -> None:
    """What the GrabCut re-cut and then the class-region step add to a point or box answer."""
    def seg(**steps) -> UnifiedSegmenter:
        return UnifiedSegmenter(checkpoint=ckpt, device="cpu", presence_threshold=1e-6, **steps)

    def median_ms(s: UnifiedSegmenter) -> tuple[float, float]:
        s.set_image(tile)
        prompts = [Prompt(box=(100.0, 100.0, 300.0, 260.0)), Prompt(points=((256.0, 256.0),), labels=(1,))]
        times = []
        for i in range(repeats + 2):
            t0 = time.perf_counter()
            s.predict(prompts[i % 2])
            if i >= 2:  # the first calls warm up
                times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e3, float(np.percentile(times, 90)) * 1e3

    a, _ = median_ms(seg(refine=False, object_region=False))
    b, b90 = median_ms(seg(object_region=False))
    full = seg()
    c, c90 = median_ms(full)
    full.set_image(tile)
    t0 = time.perf_counter()
    full.class_map()  # what the first point/box prompt on an image pays once (cached after)
    once = (time.perf_counter() - t0) * 1e3
    print(f"  point/box predict: {a:.1f} ms without the GrabCut re-cut, {b:.1f} ms with it "
          f"(+{b - a:.1f} ms; p90 {b90:.1f} ms)")
    print(f"  point/box predict with the class-region step too: {c:.1f} ms ({c - b:+.1f} ms; p90 {c90:.1f} ms), "
          f"plus {once:.1f} ms once per image for the class map")


def peak_tflops(name: str) -> float | None:
    for key, val in PEAK_BF16_TFLOPS.items():
        if key in name:
            return val
    return None


def gpu_throughput(ckpt: Path, batch: int = 64, iters: int = 20, device: str = "cuda") -> dict:
    """Batched bf16 throughput and FLOP/s; returns the figures it prints.

    ``device`` exists so that CI, which has no GPU, runs this same code under CPU autocast (a
    dtype or shape error would otherwise first show on a lent GPU, with its minutes counting).
    """
    from torch.utils.flop_counter import FlopCounterMode

    from geoseg.unified.checkpoint import load_model

    dev = torch.device(device)
    cuda = dev.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    model, cfg, _ = load_model(ckpt, dev)
    # FlopCounterMode's module tracker hooks every tensor argument that requires grad; a parameter
    # handed to a submodule (TATE's learned reasoning query, passed to its attention) has no grad_fn
    # under no_grad and stops it with "Expected gradient function to be set"
    model.requires_grad_(False)
    x = torch.randint(0, 255, (batch, 3, 512, 512), device=dev, dtype=torch.uint8)
    tokens = torch.randn(batch, 12, cfg.text_dim, device=dev)
    args = (torch.ones(batch, 12, dtype=torch.bool, device=dev), torch.ones(batch, dtype=torch.long, device=dev),
            torch.rand(batch, 3, 2, device=dev), torch.full((batch, 3), -1, device=dev),
            torch.rand(batch, 4, device=dev).sort(-1).values, torch.zeros(batch, dtype=torch.bool, device=dev))
    mean = torch.tensor([123.7, 116.3, 103.5], device=dev).view(1, 3, 1, 1)

    def step() -> torch.Tensor:
        img = F.interpolate(x.float(), size=(cfg.input_size, cfg.input_size), mode="bilinear", antialias=True)
        return model((img - mean) / 58.0, tokens, *args)["logits"]

    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
        for _ in range(5 if cuda else 1):
            step()
        sync()
        with FlopCounterMode(display=False) as fc:
            step()
        flops = fc.get_total_flops()
        t0 = time.perf_counter()
        for _ in range(iters):
            step()
        sync()
        dt = (time.perf_counter() - t0) / iters
    name = torch.cuda.get_device_name(dev) if cuda else "CPU"
    rate = flops / dt
    peak = peak_tflops(name)
    print(f"{'GPU ' if cuda else ''}{name}, batch {batch}, bf16 autocast: {batch / dt:.0f} tiles/s (512² tiles at working scale "
          f"{cfg.input_size}px), {flops / batch / 1e9:.2f} GFLOP/tile, {rate / 1e12:.2f} TFLOP/s achieved")
    if peak:
        print(f"  = {rate / (peak * 1e12) * 100:.2f} % of the {peak:.0f} TFLOP/s dense bf16 peak")
    else:
        print("  (peak FLOP/s of this device unknown to the script)")
    return {"device": name, "tiles_per_s": batch / dt, "gflop_per_tile": flops / batch / 1e9,
            "tflops": rate / 1e12, "peak_fraction": rate / (peak * 1e12) if peak else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--gpu-only", action="store_true")
    a = ap.parse_args()
    ckpt = checkpoint_path(a.checkpoint)
    if not a.gpu_only:
        cpu_latency(ckpt, a.threads, a.repeats)
    if torch.cuda.is_available():
        gpu_throughput(ckpt)
    else:
        print("GPU: no CUDA device here; run this script on the GPU machine for tiles/s and % of peak")


if __name__ == "__main__":
    main()
