"""Scene throughput of batch segmentation: km²/min, single process vs a 2-worker local Dask cluster.

Generates a seeded ``--size``² RGB GeoTIFF (default 16,000², 0.5 m pixels = 64 km²;
tiled, uncompressed; bright roofs on noisy ground, written strip by strip so the
generator itself stays small), then segments it with :func:`geoseg.batch.run_batch`
twice, each in a fresh child process: once in-process (``workers=0``) and once on a
local cluster of ``--workers`` worker processes (one thread each). It prints seconds,
km²/min, windows, and the peak RSS of the client process and of every worker, and
checks that both runs wrote identical masks.

Prompts:

* ``--prompt text`` (the default model's mode): one instruction over the whole scene,
  so every tile of the overlapping grid is processed (the honest "whole scene" figure);
* ``--prompt box``: one box around a roof in every ``--tile-size`` cell of the scene
  (for backends without text, e.g. ``classical``; the work is then one box per cell).

Run with nice on a shared machine, e.g.::

    nice -n 10 python benchmarks/scene_throughput.py --backend classical --prompt box
    nice -n 10 python benchmarks/scene_throughput.py --prompt text          # the default unified model
    nice -n 10 python benchmarks/scene_throughput.py --untrained-unified    # its architecture, random weights
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RES = 0.5
STRIP = 512


def make_scene(path: Path, size: int, cell: int, seed: int = 0) -> list[tuple[float, float, float, float]]:
    """Write the scene; return one roof box (pixels, with a margin) per ``cell``² cell."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    boxes = []
    roofs = []
    for cy in range(0, size, cell):
        for cx in range(0, size, cell):
            w = int(rng.integers(cell // 8, cell // 4))
            h = int(rng.integers(cell // 8, cell // 4))
            room_x, room_y = min(cell, size - cx), min(cell, size - cy)
            if room_x < w + 40 or room_y < h + 40:
                continue
            x = cx + int(rng.integers(20, room_x - w - 20))
            y = cy + int(rng.integers(20, room_y - h - 20))
            roofs.append((x, y, w, h, rng.integers(150, 240, 3)))
            m = 12
            boxes.append((float(max(0, x - m)), float(max(0, y - m)), float(min(size, x + w + m)),
                          float(min(size, y + h + m))))
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 512, "blockysize": 512, "crs": "EPSG:32640",
               "transform": from_origin(300000.0, 2800000.0, RES, RES), "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as dst:
        for y0 in range(0, size, STRIP):
            h = min(STRIP, size - y0)
            strip = np.full((3, h, size), 70, np.uint8) + rng.integers(0, 20, (3, h, size), dtype=np.uint8)
            for x, y, w, hh, col in roofs:
                a, b = max(y, y0), min(y + hh, y0 + h)
                if a < b:
                    strip[:, a - y0:b - y0, x:x + w] = col[:, None, None].astype(np.uint8)
            dst.write(strip, window=rasterio.windows.Window(0, y0, size, h))
    return boxes


def untrained_checkpoint(folder: Path) -> str:
    """A seeded, randomly initialised checkpoint of the default unified architecture (timing only)."""
    import torch

    from geoseg.unified.build import build_model, default_config
    from geoseg.unified.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = default_config("unigeoseg_tiny")
    path = save_checkpoint(folder / "unified_untrained.pt", build_model(cfg).eval(), cfg,
                           meta={"experiment": "untrained, timing only"})
    return str(path)


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(args: argparse.Namespace) -> None:
    """One measured run in this (fresh) process; prints one JSON line."""
    from geoseg.batch import run_batch
    from geoseg.progress import set_progress
    from geoseg.prompts import Prompt

    set_progress(not args.quiet)
    if args.prompt == "text":
        prompts = [Prompt(text=args.text)]
    else:
        prompts = [Prompt(box=tuple(b)) for b in json.loads(Path(args.boxes).read_text())]
    out = Path(args.out)
    t0 = time.perf_counter()
    workers_rss: dict[str, float] = {}
    kw = dict(backend=args.backend, checkpoint=args.checkpoint, device="cpu", tile_size=args.tile_size,
              overlap=args.overlap, resume=False)
    if args.workers == 0:
        summary = run_batch([args.scene], out, prompts, workers=0, **kw)
    else:
        from geoseg.cluster import dask_client

        with dask_client(None, args.workers) as client:
            summary = run_batch([args.scene], out, prompts, scheduler=client.scheduler.address, **kw)
            workers_rss = {w.rsplit(":", 1)[-1]: v for w, v in client.run(peak_rss_mb).items()}
    seconds = time.perf_counter() - t0
    sc = summary.scenes[0]
    if sc.status != "done":
        raise SystemExit(f"the scene failed: {sc.error}")
    digest = hashlib.sha256(Path(sc.outputs["mask"]).read_bytes()).hexdigest()[:16]
    print(json.dumps({"seconds": seconds, "km2": sc.scene_km2, "windows": sc.n_windows, "backend": summary.backend,
                      "client_rss_mb": peak_rss_mb(), "workers_rss_mb": workers_rss, "mask_sha": digest,
                      "mask_pixels": sc.mask_pixels}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=16000)
    ap.add_argument("--backend", default=None, help="default: the unified model (text); classical for boxes")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--prompt", choices=["text", "box"], default="text")
    ap.add_argument("--text", default="all the buildings")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tile-size", type=int, default=1024)
    ap.add_argument("--overlap", type=int, default=128)
    ap.add_argument("--untrained-unified", action="store_true",
                    help="time the default unified architecture with seeded random weights (masks are meaningless)")
    ap.add_argument("--keep", default=None, help="folder to keep the scene and outputs in (default: a temp dir)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scene", help=argparse.SUPPRESS)
    ap.add_argument("--boxes", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        run_child(args)
        return

    tmp_ctx = tempfile.TemporaryDirectory(prefix="scene-throughput-") if not args.keep else None
    root = Path(args.keep or tmp_ctx.name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.untrained_unified:
            args.backend, args.checkpoint = "unified", untrained_checkpoint(root)
        scene = root / f"scene_{args.size}.tif"
        t = time.perf_counter()
        boxes = make_scene(scene, args.size, args.tile_size)
        (root / "boxes.json").write_text(json.dumps(boxes))
        km2 = (args.size * RES) ** 2 / 1e6
        print(f"scene {args.size}x{args.size} px at {RES} m = {km2:.1f} km², {scene.stat().st_size / 2**20:.0f} MiB, "
              f"written in {time.perf_counter() - t:.1f}s; prompt: "
              + (f"text {args.text!r}" if args.prompt == "text" else f"{len(boxes)} boxes (one per "
                 f"{args.tile_size}² cell)"))
        results = {}
        for workers in (0, args.workers):
            cmd = [sys.executable, __file__, "--_child", "--scene", str(scene), "--boxes", str(root / "boxes.json"),
                   "--out", str(root / f"out_w{workers}"), "--workers", str(workers), "--prompt", args.prompt,
                   "--text", args.text, "--tile-size", str(args.tile_size), "--overlap", str(args.overlap)]
            if args.backend:
                cmd += ["--backend", args.backend]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            if args.quiet:
                cmd.append("--quiet")
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=os.environ.copy())
            if proc.returncode != 0:
                raise SystemExit(f"run with workers={workers} failed (exit {proc.returncode})")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            results[workers] = r
            label = "single process" if workers == 0 else f"{workers}-worker local cluster"
            rss = ", ".join(f"{v:.0f}" for v in r["workers_rss_mb"].values())
            print(f"{label:>24}: {r['seconds']:.1f}s, {r['km2'] / (r['seconds'] / 60):.2f} km²/min, "
                  f"{r['windows']} windows, backend {r['backend']}, peak RSS client {r['client_rss_mb']:.0f} MiB"
                  + (f", workers [{rss}] MiB" if rss else ""))
        a, b = results[0], results[args.workers]
        print(f"speed-up {a['seconds'] / b['seconds']:.2f}x on {os.cpu_count()} CPU(s); masks identical: "
              f"{a['mask_sha'] == b['mask_sha']} ({a['mask_pixels']} mask pixels)")
    finally:
        if tmp_ctx is not None:
            tmp_ctx.cleanup()


if __name__ == "__main__":
    main()
