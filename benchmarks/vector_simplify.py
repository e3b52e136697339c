"""`geoseg segment --vector --simplify TOL`: vertices, file size, time and area against the mask.

Polygons traced from a mask follow its pixel staircase; ``--simplify`` (pixels) simplifies each
prompt's polygons as one coverage. For a real scene (default: Dubai ``tile_7/image_part_004.jpg``
of ``../shared/data/dubai``) this script writes the vectors at each tolerance and prints, per row:

* ``polygons`` and ``vertices`` in the layer, and the ``.gpkg`` size;
* ``vector s``: seconds to shape and write the layer from the polygons as traced (the same each
  time; best of three);
* ``area Δ``: the polygons' total area against the mask's, in %;
* ``pixels off``: pixels where the polygons, burnt back into the grid (pixel centres), differ from
  the mask, in % of the mask's pixels.

Two answers per scene: ``model``, the shipped unified model's answer to ``--text`` (one
``geoseg.segment`` run, as the command does), and ``labels``, the scene's hand-labelled building
mask (many more outlines, real ones), traced and written as the scene writer does.

    python benchmarks/vector_simplify.py [--image X.jpg] [--text buildings] [--tolerance 0 --tolerance 1]
        [--min-area A] [--backend classical --box X0,Y0,X1,Y1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DUBAI = ROOT.parent / "shared" / "data" / "dubai"
#: the building colour of the Dubai label masks (docs of ../shared/data)
BUILDING_RGB = (60, 16, 152)
TOLERANCES = (0.0, 0.5, 1.0, 2.0)
#: each layer is written this many times; the fastest counts (the first write also loads GDAL's driver)
REPEATS = 3


def label_mask(image: Path) -> np.ndarray | None:
    """The building pixels of a Dubai image's label mask (``None`` when it has none)."""
    from PIL import Image

    path = image.parent.parent / "masks" / (image.stem + ".png")
    if not path.exists():
        return None
    rgb = np.asarray(Image.open(path).convert("RGB"))
    return (rgb == np.array(BUILDING_RGB, dtype=np.uint8)).all(axis=2)


def answer_mask(image: Path, folder: Path, args: argparse.Namespace) -> np.ndarray:
    """The mask ``geoseg.segment`` writes for the benchmark's prompt (1 = target)."""
    import rasterio

    import geoseg
    from geoseg.prompts import parse_box

    out = folder / "answer.tif"
    geoseg.segment(image, output=out, text=[] if args.box else [args.text],
                   boxes=[parse_box(b) for b in args.box], backend=args.backend, checkpoint=args.checkpoint,
                   device=args.device)
    with rasterio.open(out) as ds:
        return ds.read(1) == 1


def layer_stats(path: Path, mask: np.ndarray, mask_area: float) -> dict:
    """Polygons, vertices and area of a written layer, and how it differs from ``mask`` (pixel coordinates)."""
    import pyogrio.raw
    import shapely
    from rasterio.features import rasterize

    meta, _, wkb, fields = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkb)
    area = float(fields[list(meta["fields"]).index("area")].sum())
    burnt = rasterize(((g, 1) for g in geoms), out_shape=mask.shape, dtype="uint8").astype(bool) \
        if len(geoms) else np.zeros_like(mask)
    return {"polygons": len(geoms), "vertices": int(shapely.get_num_coordinates(geoms).sum()),
            "kb": os.path.getsize(path) / 1024, "area_delta": 100 * (area - mask_area) / max(mask_area, 1e-9),
            "pixels_off": 100 * float((burnt ^ mask).sum()) / max(int(mask.sum()), 1)}


def traced(mask: np.ndarray) -> list:
    """``mask``'s polygons as the scene writer traces them: block by block, pieces merged across block borders."""
    from geoseg.raster.tiling import iter_blocks
    from geoseg.raster.writer import BLOCK
    from geoseg.vector import PolygonCollector

    h, w = mask.shape
    collector = PolygonCollector(w, h)
    for win in iter_blocks(w, h, BLOCK):
        r0, c0 = int(win.row_off), int(win.col_off)
        collector.add_block(mask[r0:r0 + int(win.height), c0:c0 + int(win.width)].view(np.uint8), win)
    return collector.polygons()


def write_layer(image: Path, polygons: list, path: Path, tolerance: float, min_area: float) -> float:
    """Shape and write one prompt's traced ``polygons`` as ``--vector`` does; the seconds it took."""
    from geoseg.prompts import Prompt
    from geoseg.raster.io import open_source
    from geoseg.vector import write_vectors

    src = open_source(str(image))
    try:
        best = float("inf")
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            write_vectors(polygons, str(path), str(path), src, [Prompt(text="buildings")], [1.0],
                          {"model": "benchmark"}, simplify=tolerance, min_area=min_area)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        src.close()


def run(image: Path, args: argparse.Namespace) -> list[tuple[str, float, dict]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        answers = {"model": answer_mask(image, folder, args)}
        labels = label_mask(image)
        if labels is not None:
            answers["labels"] = labels
        for name, mask in answers.items():
            polygons = traced(mask)
            for tol in args.tolerance or TOLERANCES:
                path = folder / f"{name}_{tol:g}.gpkg"
                seconds = write_layer(image, polygons, path, tol, args.min_area)
                rows.append((name, tol, {**layer_stats(path, mask, float(mask.sum())), "seconds": seconds}))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=DUBAI / "tile_7" / "images" / "image_part_004.jpg")
    ap.add_argument("--text", default="buildings")
    ap.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1", help="box prompts instead of --text")
    ap.add_argument("--backend", default=None)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tolerance", type=float, action="append", help=f"default: {', '.join(map(str, TOLERANCES))}")
    ap.add_argument("--min-area", type=float, default=0.0, help="also drop pieces and fill holes under A px")
    args = ap.parse_args()
    from rasterio.errors import NotGeoreferencedWarning

    warnings.simplefilter("ignore", NotGeoreferencedWarning)  # the Dubai images are plain JPGs: pixels on purpose
    if not args.image.exists():
        raise SystemExit(f"{args.image} is not there (the real data lives in ../shared/data)")
    rows = run(args.image, args)
    print(f"{args.image.parent.parent.name}/{args.image.name}, --min-area {args.min_area:g}")
    print(f"{'answer':7} {'simplify':>8} {'polygons':>8} {'vertices':>9} {'KiB':>7} {'vector s':>8} "
          f"{'area Δ %':>9} {'pixels off %':>12}")
    for name, tol, r in rows:
        print(f"{name:7} {tol:8g} {r['polygons']:8d} {r['vertices']:9d} {r['kb']:7.0f} {r['seconds']:8.3f} "
              f"{r['area_delta']:+9.2f} {r['pixels_off']:12.2f}")


if __name__ == "__main__":
    main()
