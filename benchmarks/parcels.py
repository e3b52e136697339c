"""Real field parcels as a prompt file through `geoseg segment`: boxes and clicks, backends side by side.

A GIS analyst's commonest instance prompt is a layer of polygons or points. This script takes
the Danish parcel layer of ``../shared/data/dk_fields`` (276 polygons on a 452×413 Sentinel-2
scene, 10 m) and runs ``geoseg.segment(prompt_file=...)`` exactly as the command does, once per
backend and prompt kind:

* ``box``: the parcel polygons themselves (each becomes a box around its parcel);
* ``point``: one click per parcel, at a point inside it (``shapely.point_on_surface``).

Each answer's polygons (joined back by the ``feature`` field) are scored against the parcel it
came from: IoU per parcel, by parcel area, how many parcels got no answer at all, the median
ratio of answer area to parcel area, and seconds. Rows are paired against the first with a 95 %
bootstrap interval (the bench's :func:`~geoseg.bench.compare.paired_difference`).

    python benchmarks/parcels.py [--backend unified --backend classical] [--prompt box --prompt point] \
        [--limit N] [--checkpoint X.pt] [--quiet]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
#: parcel area buckets (hectares)
AREA_BUCKETS = ((0.0, 1.0), (1.0, 4.0), (4.0, None))


def nearest_parcels(parcels: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the ``limit`` parcels nearest the first one (a compact neighbourhood; all when None)."""
    import shapely

    if limit is None or limit >= len(parcels):
        return np.arange(len(parcels))
    centres = shapely.centroid(parcels)
    return np.argsort(shapely.distance(centres, centres[0]), kind="stable")[:limit]


def score_answers(parcels: np.ndarray, features: np.ndarray, answers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per parcel ``i``: IoU of the union of the answers whose ``features`` is ``i`` with ``parcels[i]``
    (0 when it has none), and the answer's area over the parcel's (0 when none)."""
    import shapely

    iou = np.zeros(len(parcels))
    ratio = np.zeros(len(parcels))
    for i, parcel in enumerate(parcels):
        mine = answers[features == i]
        if not len(mine):
            continue
        answer = shapely.union_all(mine)
        iou[i] = shapely.area(shapely.intersection(answer, parcel)) / shapely.area(shapely.union(answer, parcel))
        ratio[i] = shapely.area(answer) / shapely.area(parcel)
    return iou, ratio


def main(argv: list[str] | None = None) -> dict:
    import pyogrio.raw
    import shapely

    import geoseg
    from geoseg.bench.compare import paired_difference
    from geoseg.progress import set_progress

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "dk_fields"))
    ap.add_argument("--backend", action="append", default=None, help="repeatable (default: unified, classical)")
    ap.add_argument("--prompt", action="append", choices=["box", "point"], default=None,
                    help="repeatable (default: box, point)")
    ap.add_argument("--bands", default="3,2,1", help="the scene's RGB bands (its file order is B, G, R)")
    ap.add_argument("--limit", type=int, default=None, help="only the N parcels nearest the first one")
    ap.add_argument("--checkpoint", default=None, help="the unified backend's checkpoint (default: the packaged one)")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    set_progress(not args.quiet)
    backends = args.backend or ["unified", "classical"]
    kinds = args.prompt or ["box", "point"]
    folder = Path(args.data)

    meta, _, wkb, _ = pyogrio.raw.read(folder / "marker2016_small.shp", return_fids=True)
    keep = nearest_parcels(shapely.from_wkb(wkb), args.limit)
    parcels = shapely.from_wkb(wkb)[keep]
    hectares = shapely.area(parcels) / 1e4
    bucket = np.array([next(k for k, (lo, hi) in enumerate(AREA_BUCKETS) if a >= lo and (hi is None or a < hi))
                       for a in hectares], dtype=int)
    print(f"{len(parcels)} parcels of {folder.name} (median {np.median(hectares):.2f} ha = "
          f"{np.median(hectares) * 100:.0f} px at 10 m)")

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        layers = {"box": parcels, "point": shapely.point_on_surface(parcels)}
        for kind in kinds:  # a GeoPackage's FIDs start at 1: feature f is parcel f - 1
            pyogrio.raw.write(Path(tmp) / f"{kind}.gpkg", shapely.to_wkb(layers[kind]),
                              [np.arange(len(parcels))], ["parcel"], geometry_type="Unknown",
                              crs=meta["crs"])
        for backend in backends:
            for kind in kinds:
                out = Path(tmp) / f"{backend}_{kind}"
                t0 = time.perf_counter()
                geoseg.segment(folder / "RGB_small.tif", output=f"{out}.tif", bands=args.bands,
                               prompt_file=Path(tmp) / f"{kind}.gpkg", backend=backend, vector=f"{out}.gpkg",
                               checkpoint=args.checkpoint if backend == "unified" else None)
                seconds = time.perf_counter() - t0
                vmeta, _, vwkb, vfields = pyogrio.raw.read(f"{out}.gpkg")
                feature = vfields[list(vmeta["fields"]).index("feature")] - 1
                iou, ratio = score_answers(parcels, feature, shapely.from_wkb(vwkb))
                rows[f"{backend} {kind}"] = {"iou": iou, "ratio": ratio, "seconds": seconds}

    heads = [f"{lo:g}-{hi:g} ha" if hi else f">={lo:g} ha" for lo, hi in AREA_BUCKETS]
    print("\nIoU % with the parcel, by parcel area (parcels)")
    print(f"{'backend prompt':>18} {'all':>6} " + " ".join(f"{h:>9}" for h in heads)
          + "  no answer  area ratio   s   paired vs first [95 %]")
    print(f"{'':>18} {len(parcels):>6} " + " ".join(f"{int((bucket == k).sum()):>9}" for k in range(len(heads))))
    first = next(iter(rows.values()))["iou"] if rows else None
    for name, r in rows.items():
        v = r["iou"]
        cells = [f"{100 * v[bucket == k].mean():9.1f}" if (bucket == k).any() else f"{'-':>9}"
                 for k in range(len(heads))]
        pd = paired_difference({i: ("parcel", x) for i, x in enumerate(first)},
                               {i: ("parcel", x) for i, x in enumerate(v)})["all"]
        answered = r["ratio"] > 0
        median_ratio = float(np.median(r["ratio"][answered])) if answered.any() else float("nan")
        print(f"{name:>18} {100 * v.mean():6.1f} " + " ".join(cells) + f"  {int((~answered).sum()):9d}"
              f"  {median_ratio:10.2f} {r['seconds']:4.0f}   "
              f"{100 * pd['diff']:+.1f} [{100 * pd['low']:+.1f}, {100 * pd['high']:+.1f}]")
    return {"parcels": len(parcels), "hectares": hectares.tolist(),
            "rows": {k: {"iou": r["iou"].tolist(), "ratio": r["ratio"].tolist(), "seconds": r["seconds"]}
                     for k, r in rows.items()}}


if __name__ == "__main__":
    main()
