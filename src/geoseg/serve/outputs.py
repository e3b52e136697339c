"""Encode one predicted mask the ways the API returns it: PNG, overlay PNG, GeoJSON, GeoTIFF.

GeoJSON follows RFC 7946 (EPSG:4326) for georeferenced images; for plain images
the coordinates are pixel ``(x, y)`` and the collection says so in
``"geoseg:coordinates": "pixel"``. Polygon fields are the project's: ``id``,
``prompt``, ``score``, ``area`` (m² for georeferenced images — on the ellipsoid for geographic CRSs and for
projections that distort areas, as Web Mercator does —, pixels otherwise).
"""

from __future__ import annotations

import json
import math

import cv2
import numpy as np

from geoseg.serve.images import ImageRecord

OVERLAY_RGBA = (0, 229, 255, 130)  # cyan, half transparent


def mask_png(mask: np.ndarray) -> bytes:
    """A single-band 0/255 PNG of the mask."""
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover - cv2 always encodes uint8
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def overlay_png(mask: np.ndarray, rgba: tuple[int, int, int, int] = OVERLAY_RGBA) -> bytes:
    """A transparent RGBA PNG that colours the mask, drawn by the page over the image."""
    h, w = mask.shape
    bgra = np.zeros((h, w, 4), dtype=np.uint8)
    bgra[mask] = (rgba[2], rgba[1], rgba[0], rgba[3])
    ok, buf = cv2.imencode(".png", bgra, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:  # pragma: no cover
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def preview_jpeg(record: ImageRecord, max_side: int = 2048) -> bytes:
    """The display RGB as JPEG, downsampled so the long side is at most ``max_side``."""
    rgb = record.rgb
    scale = max_side / max(rgb.shape[:2])
    if scale < 1:
        rgb = cv2.resize(rgb, (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:  # pragma: no cover
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def area_unit(record: ImageRecord) -> str:
    """The unit of the features' ``area`` (and of ``min_area``): ``m2`` for a georeferenced image, else ``pixel``."""
    return "m2" if record.geo else "pixel"


def mask_features(mask: np.ndarray, record: ImageRecord, prompt: str, score: float, *, simplify: float = 0.0,
                  min_area: float = 0.0) -> list[dict]:
    """Polygons of the mask's connected regions as GeoJSON features (see the module docstring).

    The polygons are the ones ``geoseg segment --vector`` writes for the same mask: traced with
    4-connectivity (:func:`geoseg.vector.polygonize_mask`; regions touching at a corner only are
    two valid polygons, not one whose outline touches itself), then shaped by
    :func:`geoseg.vector.finish_polygons`: ``simplify`` (pixels) simplifies them as one coverage,
    ``min_area`` (the ``area`` unit, :func:`area_unit`) fills smaller holes and drops smaller
    polygons. ``area`` is measured on the polygons as they are returned.
    """
    from rasterio.crs import CRS
    from rasterio.transform import Affine
    from rasterio.windows import Window
    from shapely.geometry import mapping

    from geoseg.raster.areas import polygon_areas, scene_grid
    from geoseg.vector import finish_polygons, pixel_to_map, polygonize_mask, reproject_geoms

    if not mask.any():
        return []
    geo = record.geo
    h, w = mask.shape
    crs = CRS.from_user_input(geo.crs) if geo else None
    transform = Affine(*geo.transform) if geo else Affine.identity()
    scene = scene_grid(crs, transform, w, h)
    traced = [(1, g) for g in polygonize_mask(mask, Window(0, 0, w, h), w, h)]
    pix = [g for _, g in finish_polygons(traced, scene, simplify, min_area)]
    if not pix:
        return []
    if geo is not None:
        geoms = pixel_to_map(pix, transform)
        areas = list(polygon_areas(geoms, np.asarray(pix, dtype=object), scene)[0])  # as geoseg segment's layers
        out_geoms = list(reproject_geoms(geoms, crs, "EPSG:4326"))
    else:
        out_geoms = pix
        areas = [g.area for g in pix]
    feats = []
    for i, (g, area) in enumerate(zip(out_geoms, areas), start=1):
        feats.append({
            "type": "Feature",
            "geometry": mapping(g),
            "properties": {"id": i, "prompt": prompt, "score": round(float(score), 6),
                           "area": round(float(area), 3) if math.isfinite(area) else None},
        })
    return feats


def feature_collection(features: list[dict], record: ImageRecord, provenance: dict) -> dict:
    """Wrap features in a FeatureCollection that says how its coordinates are meant."""
    fc: dict = {"type": "FeatureCollection", "features": features}
    fc["geoseg:coordinates"] = "lonlat" if record.geo else "pixel"
    fc["geoseg:area_unit"] = area_unit(record)
    fc["geoseg:provenance"] = provenance
    return fc


def mask_geotiff(mask: np.ndarray, record: ImageRecord, tags: dict) -> bytes:
    """The mask as a tiled, deflate-compressed uint8 GeoTIFF (1 = target, 0 = background, 255 = nodata)."""
    import warnings

    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.io import MemoryFile
    from rasterio.transform import Affine

    data = mask.astype(np.uint8)
    if record.valid is not None:
        data = data.copy()
        data[~record.valid] = 255
    h, w = data.shape
    profile = {
        "driver": "GTiff", "width": w, "height": h, "count": 1, "dtype": "uint8", "nodata": 255,
        "compress": "deflate", "tiled": True, "blockxsize": 256, "blockysize": 256,
    }
    if record.geo:
        profile["crs"] = record.geo.crs
        profile["transform"] = Affine(*record.geo.transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with MemoryFile() as mem:
            with mem.open(**profile) as dst:
                dst.write(data, 1)
                dst.update_tags(**{k: (v if isinstance(v, str) else json.dumps(v)) for k, v in tags.items()})
            return bytes(mem.read())


def rle_json(mask: np.ndarray) -> dict:
    """COCO RLE of the mask (``counts`` as a string)."""
    from geoseg.rle import rle_encode

    return rle_encode(mask)
