"""Peak memory and speed of ``geoseg segment`` on scenes of two sizes (memory must not grow with the scene).

Generates seeded 3-band uint8 GeoTIFFs of ``--sizes`` (default 4,000² and 16,000²;
tiled, uncompressed, UTM, 0.5 m pixels; bright roofs on noisy ground) in a temp folder,
written window by window so the generator never holds a scene in memory. Then each
scene is segmented by :func:`geoseg.segment` in a fresh child process with the
``classical`` backend and ``--boxes`` box prompts spread evenly over the scene (one
around a roof in each cell of a regular grid), writing the mask GeoTIFF, a score
raster and a GeoPackage. Each child reports its own peak RSS (``getrusage``), so
the figure covers the whole job: open, scene stretch, windows, the final streaming
pass and the vectors.

Prints, per size: seconds, megapixels/s, windows, polygons and peak RSS; then the
growth of peak RSS between the smallest and the largest scene. Targets: peak RSS
under 1.5 GB and growth under 20 %.

Run with nice on a shared machine::

    nice -n 10 python benchmarks/scene_memory.py
    nice -n 10 python benchmarks/scene_memory.py --sizes 2000,8000 --boxes 40   # quicker
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RES = 0.5
BLOCK = 1024
TARGET_RSS_MB = 1.5 * 1000**3 / 2**20  # 1.5 GB in MiB
TARGET_GROWTH = 0.20


def roofs_for(size: int, n_boxes: int, seed: int = 0) -> list[tuple[int, int, int, int, tuple[int, int, int]]]:
    """``(x, y, w, h, colour)`` of one roof per cell of a ``k x k`` grid with ``k² >= n_boxes``."""
    rng = np.random.default_rng(seed)
    k = int(np.ceil(np.sqrt(n_boxes)))
    cell = size // k
    out = []
    for i in range(k):
        for j in range(k):
            w, h = (int(v) for v in rng.integers(40, 120, 2))
            x = j * cell + int(rng.integers(20, max(21, cell - w - 20)))
            y = i * cell + int(rng.integers(20, max(21, cell - h - 20)))
            out.append((x, y, w, h, tuple(int(c) for c in rng.integers(160, 240, 3))))
    return out[:n_boxes]


def make_scene(path: Path, size: int, roofs, seed: int = 0) -> None:
    """Write the scene window by window (memory bounded by ``BLOCK``²)."""
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "tiled": True,
               "blockxsize": 256, "blockysize": 256, "crs": "EPSG:32632", "BIGTIFF": "IF_SAFER",
               "transform": from_origin(500000.0, 6200000.0, RES, RES)}
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, BLOCK):
            for c0 in range(0, size, BLOCK):
                h, w = min(BLOCK, size - r0), min(BLOCK, size - c0)
                rng = np.random.default_rng((seed, r0, c0))
                block = np.full((3, h, w), 70, np.uint8) + rng.integers(0, 24, (3, h, w), dtype=np.uint8)
                for x, y, rw, rh, col in roofs:
                    a, b = max(y, r0), min(y + rh, r0 + h)
                    c, d = max(x, c0), min(x + rw, c0 + w)
                    if a < b and c < d:
                        block[:, a - r0:b - r0, c - c0:d - c0] = np.array(col, np.uint8)[:, None, None]
                dst.write(block, window=Window(c0, r0, w, h))


def child(args: argparse.Namespace) -> None:
    """One measured ``geoseg.segment`` run in this fresh process; prints one JSON line."""
    import geoseg

    boxes = json.loads(Path(args.boxes_file).read_text())
    out = Path(args.out)
    t0 = time.perf_counter()
    res = geoseg.segment(args.scene, output=out / "mask.tif", boxes=boxes, backend="classical",
                         vector=out / "objects.gpkg", score_raster=out / "score.tif")
    seconds = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"seconds": seconds, "rss_mb": rss_mb, "windows": res.n_windows, "objects": res.n_objects,
                      "mask_pixels": res.mask_pixels, "timings": res.timings}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="4000,16000", help="scene sizes in pixels, comma-separated")
    ap.add_argument("--boxes", type=int, default=100, help="box prompts per scene")
    ap.add_argument("--_child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--scene", help=argparse.SUPPRESS)
    ap.add_argument("--boxes-file", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        child(args)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="scene-memory-") as tmp:
        root = Path(tmp)
        for size in sizes:
            roofs = roofs_for(size, args.boxes)
            scene = root / f"scene_{size}.tif"
            t = time.perf_counter()
            make_scene(scene, size, roofs)
            gen = time.perf_counter() - t
            m = 12
            boxes = [[max(0, x - m), max(0, y - m), min(size, x + w + m), min(size, y + h + m)]
                     for x, y, w, h, _ in roofs]
            (root / "boxes.json").write_text(json.dumps(boxes))
            out = root / f"out_{size}"
            out.mkdir()
            cmd = [sys.executable, __file__, "--_child", "--scene", str(scene), "--boxes-file",
                   str(root / "boxes.json"), "--out", str(out)]
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"segmenting the {size}² scene failed (exit {proc.returncode})")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            mpx = size * size / 1e6
            r.update(size=size, mpx=mpx, mpx_s=mpx / r["seconds"])
            rows.append(r)
            print(f"{size:>6}² ({mpx:.0f} MP, generated in {gen:.0f}s): {r['seconds']:.1f}s = {r['mpx_s']:.1f} MP/s, "
                  f"{len(boxes)} boxes, {r['windows']} windows, {r['objects']} polygons, "
                  f"peak RSS {r['rss_mb']:.0f} MiB; stages {r['timings']}", flush=True)
            scene.unlink()
    peak = max(r["rss_mb"] for r in rows)
    growth = rows[-1]["rss_mb"] / rows[0]["rss_mb"] - 1
    print(f"peak RSS {peak:.0f} MiB (target < {TARGET_RSS_MB:.0f} MiB = 1.5 GB): "
          f"{'met' if peak < TARGET_RSS_MB else 'MISSED'}; growth {rows[0]['size']}² -> {rows[-1]['size']}² "
          f"{growth * 100:+.1f} % (target < {TARGET_GROWTH * 100:.0f} %): "
          f"{'met' if growth < TARGET_GROWTH else 'MISSED'}")


if __name__ == "__main__":
    main()
