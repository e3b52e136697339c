"""Polygons from the written mask: block-wise polygonize, merge across block borders, write vector files.

Each prompt's answer is polygonized block by block as the scene writer receives it
(:class:`PolygonCollector`, so a block, not the scene, is held as pixels). A polygon that touches an
internal block border may be one piece of an object split by that border: such
pieces are unioned per prompt with shapely and split back into connected parts, so
an object cut by a tile or block border comes out as one polygon.

Outputs: ``.gpkg``, ``.fgb`` (FlatGeobuf) and ``.shp`` (ESRI Shapefile) in the source
CRS, ``.geojson`` in EPSG:4326 (RFC 7946), with the fields ``id``, ``prompt``, ``score`` and
``area`` (m² whenever the CRS places the scene: planar for a projected CRS — on the ellipsoid
when the projection distorts areas by over 1 %, as Web Mercator does —, on the ellipsoid for a
geographic one; pixels without a CRS; see :mod:`geoseg.raster.areas`) — and ``feature``, the id of the
prompt file's feature each answer came from (-1 for other prompts), when a prompt file was
given — written through pyogrio. The provenance goes into the GeoPackage's layer metadata,
the FlatGeobuf's and GeoJSON's layer description; a Shapefile has no place for it (its
``prompt`` field is cut to the format's 254 bytes).

Two options shape the polygons before they are written (:func:`finish_polygons`); the mask raster
is never changed by them:

* ``simplify`` (pixels): each prompt's polygons are simplified together as one coverage
  (:func:`shapely.coverage_simplify`, Visvalingam-Whyatt that keeps shared corners and never lets
  two outlines cross), in scene pixel coordinates, so the tolerance means the same in every CRS.
  The tolerance is roughly the square root of the largest triangle removed: a pixel staircase's
  steps are triangles of 0.5 px², so values under ~0.71 keep the outlines' shape (only vertices
  on straight runs go) and 1 removes the staircases. A polygon is never reduced below a triangle.
* ``min_area`` (the layer's ``area`` unit: m² for a scene placed on the ground, pixels
  otherwise): holes smaller than it are filled, then polygons smaller than it are dropped,
  both measured as the ``area`` field is, after simplification, so no written polygon or hole is
  below it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.windows import Window
from shapely.geometry import shape

from geoseg.errors import GeosegError
from geoseg.metadata import bounded_json
from geoseg.prompts import Prompt
from geoseg.raster.areas import polygon_areas

log = logging.getLogger(__name__)

VECTOR_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf",
                  ".shp": "ESRI Shapefile"}
#: the files a Shapefile ``x.shp`` consists of besides itself (what GDAL writes for a polygon layer)
SHAPEFILE_PARTS = (".shx", ".dbf", ".prj", ".cpg")
#: a dBase text field holds at most this many bytes
DBF_TEXT_BYTES = 254


def vector_driver(path: str) -> str:
    """The OGR driver for an output path, or a :class:`GeosegError` naming the supported extensions."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in VECTOR_DRIVERS:
        raise GeosegError(f"unsupported vector output {path}",
                          "use a .gpkg, .fgb or .shp path (source CRS) or a .geojson path (EPSG:4326)")
    return VECTOR_DRIVERS[ext]


def check_vector_crs(path: str, source) -> None:
    """Raise a :class:`GeosegError` when ``path`` is GeoJSON (EPSG:4326 by RFC 7946) and ``source`` has no CRS.

    The error says why the scene has none (:func:`geoseg.georef.no_crs_error`: plain image, or
    placed only by GCPs / RPCs, with the ``gdalwarp`` that georeferences it).
    """
    if source.crs is None and vector_driver(path) == "GeoJSON":
        from geoseg.georef import no_crs_error

        raise no_crs_error(source, "its polygons cannot be written as GeoJSON (RFC 7946 is EPSG:4326)",
                           "write .gpkg, .fgb or .shp instead (pixel coordinates)")


def vector_files(path: str) -> list[str]:
    """Every file the vector output ``path`` consists of: itself, and a Shapefile's companions."""
    stem, ext = os.path.splitext(path)
    if ext.lower() != ".shp":
        return [path]
    return [path] + [stem + (part.upper() if ext.isupper() else part) for part in SHAPEFILE_PARTS]


def replace_vector(tmp: str, final: str) -> None:
    """Move the vector output written at ``tmp`` onto ``final`` (each of a Shapefile's files).

    A Shapefile's companions move first and its ``.shp`` last; a companion ``final`` had
    from an earlier run that this write did not produce (a ``.prj`` when the new layer has
    no CRS) is removed, so the files never describe two different layers.
    """
    for src, dst in list(zip(vector_files(tmp), vector_files(final)))[::-1]:
        if os.path.exists(src):
            os.replace(src, dst)
        elif os.path.exists(dst):
            os.unlink(dst)


def check_vector_options(simplify: float = 0.0, min_area: float = 0.0, vector: str | None = None,
                         names: tuple[str, str] = ("--simplify", "--min-area")) -> None:
    """Raise a :class:`GeosegError` for a negative or non-finite ``simplify`` / ``min_area``, or either one
    without a ``vector`` output to shape (checked before any work, so nothing is written).

    ``names``: how the two are called where they were given (the CLI's options; the server's query parameters).
    """
    simplify_name, min_area_name = names
    hints = {simplify_name: "give a tolerance in pixels: 1 removes the staircases, 0 keeps the exact pixel outlines",
             min_area_name: "give an area in the layer's area unit, m² for a georeferenced scene and pixels "
                            "otherwise; 0 keeps every polygon"}
    for name, value in ((simplify_name, simplify), (min_area_name, min_area)):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number) or number < 0:
            raise GeosegError(f"{name} {value!r} is not a number >= 0", hints[name])
    given = [name for name, value in ((simplify_name, simplify), (min_area_name, min_area)) if value]
    if given and not vector:
        raise GeosegError(f"{' and '.join(given)} shape{'s' if len(given) == 1 else ''} the polygons, and no "
                          "vector output was asked for",
                          "add a --vector output such as out.gpkg, or leave it out: the mask raster is never changed")


def vector_provenance(simplify: float, min_area: float, area_unit: str) -> dict:
    """How the polygons were shaped, for the provenance of the mask and the layer."""
    return {"simplify": float(simplify), "simplify_unit": "px", "min_area": float(min_area),
            "min_area_unit": area_unit}


def _dbf_text(values: np.ndarray) -> np.ndarray:
    """Text cut to a dBase field's 254 bytes on a character boundary (GDAL would cut mid-character)."""
    out = values.copy()
    for i, v in enumerate(values):
        raw = str(v).encode("utf-8")
        if len(raw) > DBF_TEXT_BYTES:
            out[i] = raw[:DBF_TEXT_BYTES].decode("utf-8", errors="ignore")
            log.info("prompt of polygon %d cut to %d bytes for the Shapefile (a .gpkg keeps it whole)",
                     i + 1, DBF_TEXT_BYTES)
    return out


class PolygonCollector:
    """Collect per-prompt polygons (in scene pixel coordinates) from label blocks.

    ``overlapping``: labels whose blocks may be painted more than once (the overlapping tiles of a
    text prompt, whose answers are united): all their pieces are unioned, so an object two tiles
    both marked comes out once.
    """

    def __init__(self, width: int, height: int, overlapping: Iterable[int] = ()) -> None:
        self.width, self.height = width, height
        self.overlapping = frozenset(int(v) for v in overlapping)
        self._done: list[tuple[int, shapely.Geometry]] = []
        self._edge: dict[int, list[shapely.Geometry]] = defaultdict(list)

    def add_block(self, labels: np.ndarray, window: Window) -> None:
        """Polygonize a block of the label raster (0 = nothing, k = prompt k-1)."""
        if not labels.any():
            return
        c0, r0 = int(window.col_off), int(window.row_off)
        c1, r1 = c0 + int(window.width), r0 + int(window.height)
        data = labels if labels.dtype in (np.uint8, np.uint16, np.int16, np.int32) else labels.astype(np.int32)
        for geom, value in shapes(data, mask=labels > 0, connectivity=4, transform=Affine.translation(c0, r0)):
            poly = shape(geom)
            minx, miny, maxx, maxy = poly.bounds
            on_edge = (minx <= c0 and c0 > 0) or (miny <= r0 and r0 > 0) or \
                      (maxx >= c1 and c1 < self.width) or (maxy >= r1 and r1 < self.height)
            if on_edge or int(value) in self.overlapping:
                self._edge[int(value)].append(poly)
            else:
                self._done.append((int(value), poly))

    def polygons(self) -> list[tuple[int, shapely.Geometry]]:
        """``(label, polygon)`` pairs with pieces split by block borders merged."""
        out = list(self._done)
        for label, pieces in self._edge.items():
            merged = shapely.unary_union(pieces)
            for part in shapely.get_parts(merged):
                if isinstance(part, shapely.Polygon) and not part.is_empty:
                    out.append((label, part))
        out.sort(key=lambda lp: (lp[0], lp[1].bounds[1], lp[1].bounds[0]))
        return out


def polygonize_mask(mask: np.ndarray, window: Window, width: int, height: int
                    ) -> list[shapely.Polygon]:
    """Polygons (scene pixel coordinates) of a boolean ``mask`` covering ``window`` of a ``width`` x ``height`` scene."""
    collector = PolygonCollector(width, height)
    collector.add_block(np.asarray(mask, dtype=bool).view(np.uint8), window)
    return [g for _, g in collector.polygons()]


def pixel_to_map(geoms: np.ndarray, transform: Affine) -> np.ndarray:
    """Geometries in scene pixel coordinates → map coordinates of the affine ``transform``."""
    t = transform
    return shapely.transform(np.asarray(geoms, dtype=object), lambda xy: np.column_stack(
        (t.a * xy[:, 0] + t.b * xy[:, 1] + t.c, t.d * xy[:, 0] + t.e * xy[:, 1] + t.f)))


def scene_to_map(pix: np.ndarray, src) -> np.ndarray:
    """Geometries in ``src``'s pixel coordinates → its map coordinates (kept as they are without a georeference)."""
    t = src.transform
    return pixel_to_map(pix, t) if src.crs is not None or not t.is_identity else pix


def layer_areas(pix: np.ndarray, src) -> tuple[np.ndarray, str]:
    """The ``area`` field of polygons given in ``src``'s pixel coordinates, and its unit."""
    pix = np.asarray(pix, dtype=object)
    return polygon_areas(scene_to_map(pix, src), pix, src)


def _polygonal_parts(geoms: np.ndarray) -> tuple[list[int], list[shapely.Polygon]]:
    """The non-empty polygons of ``geoms`` (an invalid one made valid first), each with the index it came from.

    Coverage simplification gives valid polygons from the valid pixel outlines; this keeps the
    promise of valid, non-empty features should a GEOS version not: an empty result is dropped,
    an invalid one repaired within its own footprint (so it overlaps nothing new) and split.
    """
    index: list[int] = []
    out: list[shapely.Polygon] = []
    for i, g in enumerate(geoms):
        if g is None or g.is_empty:
            continue
        if not g.is_valid:
            g = shapely.make_valid(g, method="structure", keep_collapsed=False)
        for part in shapely.get_parts(g):
            if isinstance(part, shapely.Polygon) and not part.is_empty:
                index.append(i)
                out.append(part)
    return index, out


def simplify_polygons(polygons: Sequence[tuple[int, shapely.Geometry]], tolerance: float
                      ) -> list[tuple[int, shapely.Polygon]]:
    """Each prompt's polygons (pixel coordinates) simplified together as one coverage, ``tolerance`` in pixels.

    Polygons of one prompt stay a valid coverage (no overlaps; shared corners kept), and none is
    reduced below a triangle, so the count does not change.

    Raises:
        GeosegError: the installed shapely / GEOS cannot simplify a coverage (shapely >= 2.1, GEOS >= 3.12).
    """
    if tolerance <= 0 or not polygons:
        return list(polygons)
    if not hasattr(shapely, "coverage_simplify") or shapely.geos_version < (3, 12, 0):
        raise GeosegError(f"--simplify needs shapely >= 2.1 with GEOS >= 3.12 (found shapely {shapely.__version__}, "
                          f"GEOS {'.'.join(map(str, shapely.geos_version))})",
                          "upgrade it: pip install -U 'shapely>=2.1'")
    labels = np.array([lab for lab, _ in polygons], dtype=np.int64)
    geoms = np.array([g for _, g in polygons], dtype=object)
    out = geoms.copy()
    for lab in np.unique(labels):
        mine = labels == lab
        out[mine] = shapely.coverage_simplify(geoms[mine], tolerance)
    index, parts = _polygonal_parts(out)
    if len(index) != len(out) or len(set(index)) != len(out):
        log.info("simplification: %d polygon(s) in, %d out (empty ones dropped, invalid ones repaired)",
                 len(out), len(parts))
    return [(int(labels[i]), p) for i, p in zip(index, parts)]


def drop_small(polygons: Sequence[tuple[int, shapely.Geometry]], min_area: float, src
               ) -> list[tuple[int, shapely.Polygon]]:
    """Fill the holes under ``min_area``, then drop the polygons under it (the ``area`` field's unit).

    Holes are filled first, so a ring-shaped field whose small hole is filled counts whole. A
    polygon of the same prompt inside a filled hole is smaller than that hole, so it is dropped
    too: the prompt's polygons still do not overlap.
    """
    if min_area <= 0 or not polygons:
        return list(polygons)
    labels = [lab for lab, _ in polygons]
    geoms = [g for _, g in polygons]
    holes = [(i, k, shapely.Polygon(ring)) for i, g in enumerate(geoms) for k, ring in enumerate(g.interiors)]
    filled: dict[int, set[int]] = defaultdict(set)
    if holes:
        hole_areas, _ = layer_areas(np.array([h for _, _, h in holes], dtype=object), src)
        for (i, k, _), area in zip(holes, hole_areas):
            if area < min_area:
                filled[i].add(k)
    for i, ks in filled.items():
        geoms[i] = shapely.Polygon(geoms[i].exterior, [r for k, r in enumerate(geoms[i].interiors) if k not in ks])
    area, _ = layer_areas(np.array(geoms, dtype=object), src)
    keep = [i for i in range(len(geoms)) if area[i] >= min_area]
    log.info("--min-area %g: %d hole(s) filled, %d of %d polygon(s) dropped", min_area,
             sum(len(ks) for ks in filled.values()), len(geoms) - len(keep), len(geoms))
    return [(labels[i], geoms[i]) for i in keep]


def finish_polygons(polygons: Sequence[tuple[int, shapely.Geometry]], src, simplify: float = 0.0,
                    min_area: float = 0.0) -> list[tuple[int, shapely.Polygon]]:
    """The polygons as they are written: simplified (``simplify`` pixels), then small holes and pieces removed."""
    return drop_small(simplify_polygons(polygons, simplify), min_area, src)


def reproject_geoms(geoms: np.ndarray, src_crs, dst_crs) -> np.ndarray:
    """Geometries from ``src_crs`` to ``dst_crs`` (x = easting/longitude first)."""
    from pyproj import Transformer

    tr = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    return shapely.transform(np.asarray(geoms, dtype=object),
                             lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def _to_4326(geoms: np.ndarray, crs) -> np.ndarray:
    return reproject_geoms(geoms, crs, "EPSG:4326")


def write_vectors(polygons: Sequence[tuple[int, shapely.Geometry]], tmp_path: str, final_path: str, src,
                  prompts: Sequence[Prompt], scores: Sequence[float | None], provenance: dict,
                  simplify: float = 0.0, min_area: float = 0.0) -> int:
    """Write ``polygons`` (pixel coordinates, label = prompt index + 1) to ``tmp_path``.

    The driver and CRS follow ``final_path``'s extension: GPKG, FlatGeobuf and Shapefile
    keep the source CRS (none for a non-georeferenced image: pixel coordinates), GeoJSON
    is EPSG:4326. ``simplify`` and ``min_area`` shape the polygons first (:func:`finish_polygons`).
    Move the result into place with :func:`replace_vector`.

    Returns:
        The number of features written.
    """
    import pyogrio.raw

    driver = vector_driver(final_path)
    polygons = finish_polygons(polygons, src, simplify, min_area)
    labels = np.array([lab for lab, _ in polygons], dtype=np.int64)
    pix = np.array([g for _, g in polygons], dtype=object)
    geoms = scene_to_map(pix, src)
    area, unit = polygon_areas(geoms, pix, src)
    crs = src.crs.to_wkt() if src.crs is not None else None
    layer_options: dict = {}
    check_vector_crs(final_path, src)
    if driver == "GeoJSON":
        if len(geoms):
            geoms = _to_4326(geoms, src.crs)
        crs = "EPSG:4326"
        layer_options = {"RFC7946": "YES"}
    ids = np.arange(1, len(polygons) + 1, dtype=np.int64)
    prompt_text = np.array([prompts[lab - 1].describe() for lab in labels], dtype=object)
    score = np.array([scores[lab - 1] if scores[lab - 1] is not None else np.nan for lab in labels],
                     dtype=np.float64)
    wkb = shapely.to_wkb(np.asarray(geoms, dtype=object)) if len(geoms) else np.array([], dtype=object)
    meta = {"model": str(provenance.get("model", "")), "geoseg_version": str(provenance.get("geoseg_version", "")),
            "area_unit": unit, "provenance": bounded_json(provenance, 8000)}
    if driver in ("GeoJSON", "FlatGeobuf"):
        layer_options["DESCRIPTION"] = json.dumps({k: meta[k] for k in ("model", "geoseg_version", "area_unit")}
                                                  | {"provenance": json.loads(meta["provenance"])}, default=str)
    if driver == "ESRI Shapefile":
        prompt_text = _dbf_text(prompt_text)
    fields, names = [ids, prompt_text, score, area], ["id", "prompt", "score", "area"]
    if any("feature" in p.extra for p in prompts):  # --prompt-file: the feature each answer came from
        fields.append(np.array([prompts[lab - 1].extra.get("feature", -1) for lab in labels], dtype=np.int64))
        names.append("feature")
    with warnings.catch_warnings():
        # a plain JPG/PNG has no CRS: the layer is in pixel coordinates on purpose (area_unit says so)
        warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
        pyogrio.raw.write(
            tmp_path, wkb, fields, names,
            layer=os.path.splitext(os.path.basename(final_path))[0], driver=driver, geometry_type="Polygon",
            crs=crs, layer_options=layer_options or None, layer_metadata=meta if driver == "GPKG" else None,
        )
    log.info("wrote %d polygons to %s", len(ids), final_path)
    return len(ids)
