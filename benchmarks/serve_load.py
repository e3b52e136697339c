"""Load on ``geoseg serve`` over loopback: latency percentiles and requests/s with the embedding cached.

Starts the real server (``python -m geoseg serve``) in a child process on a free
loopback port, uploads a generated, seeded 1,024² GeoTIFF (bright roofs on noisy
ground) once, then sends ``--requests`` prompt requests from ``--concurrency`` client
threads (stopping early after ``--max-seconds``), each a box or point around one of
the roofs, asking for what the web page asks for (overlay PNG + GeoJSON). It prints
the upload/embedding time, the first prompt's latency, p50/p95/max latency, requests/s
and whether every answer reused the cached embedding; then it sends malformed,
oversized, unknown-id and outside-the-image requests and checks that each gets a 4xx
and that the server still answers a good prompt afterwards.

Run it with nice on a shared machine::

    nice -n 10 python benchmarks/serve_load.py --backend classical --prompt box
    nice -n 10 python benchmarks/serve_load.py --untrained-unified --prompt text   # timing of the default arch
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_scene(path: Path, size: int, seed: int = 0) -> list[tuple[int, int, int, int]]:
    """Write a seeded RGB GeoTIFF with a grid of bright roofs; return the roofs' pixel boxes."""
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    img = (np.full((3, size, size), 70, np.uint8) + rng.integers(0, 20, (3, size, size), dtype=np.uint8))
    roofs = []
    step = max(64, size // 8)
    for y in range(step // 4, size - step // 2, step):
        for x in range(step // 4, size - step // 2, step):
            w, h = int(rng.integers(step // 3, step // 2)), int(rng.integers(step // 3, step // 2))
            img[:, y:y + h, x:x + w] = rng.integers(150, 240, (3, 1, 1), dtype=np.uint8)
            roofs.append((x, y, x + w, y + h))
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
               "crs": "EPSG:32640", "transform": from_origin(300000.0, 2800000.0, 0.5, 0.5)}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(img)
    return roofs


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


def start_server(backend: str, checkpoint: str | None, port: int, max_upload_mb: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "geoseg", "-q", "serve", "--backend", backend, "--port", str(port),
           "--max-upload-mb", str(max_upload_mb)]
    if checkpoint:
        cmd += ["--checkpoint", checkpoint]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(client, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read().strip()}")
        try:
            if client.get("/api/health").status_code == 200:
                return
        except Exception:  # noqa: BLE001 - not listening yet
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not start in time")


def prompt_body(kind: str, roof: tuple[int, int, int, int], i: int) -> dict:
    x0, y0, x1, y1 = roof
    if kind == "box":
        return {"box": [x0 - 6, y0 - 6, x1 + 6, y1 + 6], "include": ["overlay", "geojson"]}
    if kind == "point":
        return {"points": [[(x0 + x1) / 2, (y0 + y1) / 2]], "include": ["overlay", "geojson"]}
    texts = ["the bright roofs", "the largest building", "buildings in the upper half", "the roof on the left"]
    return {"text": texts[i % len(texts)], "include": ["overlay", "geojson"]}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backend", default="classical", help="unified, classical, ... (default: classical)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--untrained-unified", action="store_true",
                    help="time the default unified architecture with seeded random weights (masks are meaningless)")
    ap.add_argument("--prompt", choices=["box", "point", "text"], default="box")
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=90.0)
    args = ap.parse_args()

    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        scene = Path(tmp) / "scene.tif"
        roofs = make_scene(scene, args.size)
        if args.untrained_unified:
            args.backend, args.checkpoint = "unified", untrained_checkpoint(Path(tmp))
        proc = start_server(args.backend, args.checkpoint, port, max_upload_mb=16)
        try:
            with httpx.Client(base_url=base, timeout=120) as c:
                t = time.perf_counter()
                wait_ready(c, proc)
                print(f"server up in {time.perf_counter() - t:.1f}s: {c.get('/api/backend').json()}")
                t = time.perf_counter()
                with open(scene, "rb") as fh:
                    r = c.post("/api/images", files={"file": ("scene.tif", fh, "image/tiff")})
                r.raise_for_status()
                info = r.json()
                iid = info["image_id"]
                print(f"upload + set image ({args.size}x{args.size}): {1000 * (time.perf_counter() - t):.0f} ms "
                      f"(embedding {info['embed_ms']:.0f} ms)")
                t = time.perf_counter()
                r = c.post(f"/api/images/{iid}/predict", json=prompt_body(args.prompt, roofs[0], 0))
                r.raise_for_status()
                print(f"first prompt: {1000 * (time.perf_counter() - t):.0f} ms (server {r.json()['timing_ms']})")

            lat: list[float] = []
            cached: list[bool] = []
            failures: list[str] = []
            lock = threading.Lock()
            counter = iter(range(args.requests))
            stop_at = time.perf_counter() + args.max_seconds

            def worker() -> None:
                with httpx.Client(base_url=base, timeout=120) as cl:
                    while time.perf_counter() < stop_at:
                        with lock:
                            i = next(counter, None)
                        if i is None:
                            return
                        body = prompt_body(args.prompt, roofs[i % len(roofs)], i)
                        t0 = time.perf_counter()
                        resp = cl.post(f"/api/images/{iid}/predict", json=body)
                        dt = time.perf_counter() - t0
                        with lock:
                            if resp.status_code == 200:
                                lat.append(dt)
                                cached.append(bool(resp.json()["embedding_cached"]))
                            else:
                                failures.append(f"{resp.status_code}: {resp.text[:120]}")

            threads = [threading.Thread(target=worker) for _ in range(args.concurrency)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            ms = [1000 * v for v in lat]
            print(f"{len(lat)} prompt requests ({args.prompt}, {args.concurrency} concurrent) in {wall:.1f}s: "
                  f"p50 {pct(ms, 50):.0f} ms, p95 {pct(ms, 95):.0f} ms, max {max(ms, default=float('nan')):.0f} ms, "
                  f"mean {statistics.fmean(ms) if ms else float('nan'):.0f} ms, {len(lat) / wall:.2f} req/s; "
                  f"embedding cached in {sum(cached)}/{len(cached)}; failures {len(failures)}")
            for f in failures[:5]:
                print("  failure:", f)

            with httpx.Client(base_url=base, timeout=60) as c:
                bad = {
                    "malformed JSON": c.post(f"/api/images/{iid}/predict", content=b"{not json",
                                             headers={"Content-Type": "application/json"}),
                    "unknown field": c.post(f"/api/images/{iid}/predict", json={"boxx": [1, 2, 3, 4]}),
                    "empty prompt": c.post(f"/api/images/{iid}/predict", json={}),
                    "unknown image id": c.post("/api/images/0123456789abcdef/predict", json={"box": [1, 2, 30, 40]}),
                    "point outside the image": c.post(f"/api/images/{iid}/predict",
                                                      json={"points": [[args.size + 50, 10]]}),
                    "oversized upload (17 MiB)": c.post("/api/images", files={
                        "file": ("big.tif", io.BytesIO(os.urandom(17 * 1024 * 1024)), "image/tiff")}),
                    "not an image": c.post("/api/images", files={"file": ("x.tif", io.BytesIO(b"hello"), "image/tiff")}),
                }
                for name, resp in bad.items():
                    detail = resp.json().get("detail", "") if resp.headers.get("content-type", "").startswith(
                        "application/json") else resp.text
                    print(f"  {name}: {resp.status_code} {str(detail)[:110]}")
                ok = c.post(f"/api/images/{iid}/predict", json=prompt_body(args.prompt, roofs[1], 1))
                all_4xx = all(400 <= r.status_code < 500 for r in bad.values())
                print(f"bad input: {'all 4xx' if all_4xx else 'NOT all 4xx'}; server still serving: "
                      f"{ok.status_code == 200}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
