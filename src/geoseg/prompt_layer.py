"""Prompts from a vector file: every point or polygon feature of a layer becomes one target.

The GIS way to give many prompts at once: digitise a point on each object in QGIS (or reuse
polygons drawn around them, e.g. last year's field parcels), save the layer, and segment
every feature (``geoseg segment scene.tif --prompt-file fields.gpkg``), as samgeo takes boxes
from a vector file. Mapping, one prompt per feature:

- ``Point`` → one positive point; ``MultiPoint`` → several positive points on one target;
- ``Polygon`` / ``MultiPolygon`` → a box: the feature's bounds in the scene's pixel grid
  (the geometry is transformed first, so the box is exact in any CRS pair).

A ``.csv`` table reads as points from its x/y (lon/lat, easting/northing) columns or
polygons from a WKT ``geometry``/``wkt`` column.

Coordinates are in the file's CRS (transformed with PROJ to the scene's), or — for a file
without one — in the ``crs`` given (``--prompt-crs``), else pixel column/row. One layer
may cover many scenes: features that miss a scene are left out of it with a log line; a
scene none of them touches raises a :class:`PromptError` only when no other prompt is
given. Each prompt remembers its feature id (``Prompt.extra["feature"]``), which the
vector output's ``prompt`` field shows, for joining answers back to the features.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np
import shapely

from geoseg.errors import InputError, PromptError, reason
from geoseg.prompts import Prompt

log = logging.getLogger(__name__)

#: geometry types a prompt can come from (2-D or 3-D; the third coordinate is ignored)
POINT_TYPES = ("Point", "MultiPoint")
AREA_TYPES = ("Polygon", "MultiPolygon")
#: GDAL CSV open options: a table of points with x/y (lon/lat, easting/northing) columns, or a WKT column,
#: reads as a point layer (the way QGIS's "delimited text" layer reads it); its CRS is ``--prompt-crs``
CSV_OPEN_OPTIONS = {"X_POSSIBLE_NAMES": "x,lon,long,longitude,easting",
                    "Y_POSSIBLE_NAMES": "y,lat,latitude,northing",
                    "GEOM_POSSIBLE_NAMES": "geometry,wkt,geom", "KEEP_GEOM_COLUMNS": "NO"}


@dataclass(frozen=True)
class PromptLayer:
    """The prompt features of a vector file, kept in the file's coordinates until a scene is known.

    Attributes:
        path: the file read.
        geometries: WKB of each usable feature (2-D).
        fids: each feature's id in the file (GeoPackage/Shapefile FID).
        crs: WKT of the coordinates' CRS; ``None`` means pixel column/row.
    """

    path: str
    geometries: tuple[bytes, ...]
    fids: tuple[int, ...]
    crs: str | None

    def __len__(self) -> int:
        return len(self.fids)

    @property
    def kinds(self) -> frozenset[str]:
        """The prompt kinds the features give: ``point`` (point features), ``box`` (polygons)."""
        types = {shapely.from_wkb(g).geom_type for g in self.geometries}
        return frozenset(({"point"} if types & set(POINT_TYPES) else set())
                         | ({"box"} if types & set(AREA_TYPES) else set()))

    def digest(self) -> str:
        """A short fingerprint of the features and their CRS (a batch's resume key uses it)."""
        h = hashlib.sha256((self.crs or "pixels").encode())
        for fid, wkb in zip(self.fids, self.geometries):
            h.update(str(fid).encode() + b":" + wkb)
        return h.hexdigest()[:16]

    def provenance(self) -> dict:
        """Where the prompts came from, for outputs' metadata and a batch's resume key."""
        return {"path": self.path, "digest": self.digest()}

    def on_scene(self, crs, transform, width: int, height: int, scene: str = "the image") -> list[Prompt]:
        """The features that fall on a ``width`` x ``height`` scene, as prompts in its pixels.

        Points outside the scene are dropped (a feature keeps its points inside); a box is
        kept when it overlaps the scene and is clipped later with the other prompts. A
        box thinner than a pixel is widened to one pixel around its centre.

        Raises:
            InputError: the layer is in map coordinates but the scene has no CRS.
        """
        geoms = shapely.from_wkb(np.array(self.geometries, dtype=object))
        if self.crs is not None:
            if crs is None:
                raise InputError(f"{scene} has no CRS, so the features of {self.path} cannot be placed on it",
                                 "georeference the image, or give a prompt file in pixel coordinates without a CRS")
            geoms = _to_pixels(geoms, self.crs, crs, transform)
        prompts = [p for p in (_feature_prompt(g, fid, width, height) for fid, g in zip(self.fids, geoms))
                   if p is not None]
        if len(prompts) < len(self):
            log.info("%s: %d of %d feature(s) of %s fall on it", scene, len(prompts), len(self), self.path)
        return prompts


def _to_pixels(geoms: np.ndarray, src_crs: str, dst_crs, transform) -> np.ndarray:
    """Geometries from ``src_crs`` map coordinates to the scene's pixel column/row (non-finite where PROJ fails)."""
    from pyproj import CRS, Transformer

    inv = ~transform
    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs.to_wkt())
    tr = None if src == dst else Transformer.from_crs(src, dst, always_xy=True)

    def to_px(xy: np.ndarray) -> np.ndarray:
        x, y = xy[:, 0], xy[:, 1]
        if tr is not None:
            x, y = tr.transform(x, y, errcheck=False)
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return np.column_stack((inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f))

    return shapely.transform(geoms, to_px)


def _feature_prompt(geom, fid: int, width: int, height: int) -> Prompt | None:
    """Feature ``fid`` (in pixels) as a prompt on a ``width`` x ``height`` scene, or ``None`` when it misses it."""
    extra = {"feature": int(fid)}
    if geom.geom_type in POINT_TYPES:
        pts = [(float(x), float(y)) for x, y in shapely.get_coordinates(geom)
               if np.isfinite(x) and np.isfinite(y) and 0 <= x < width and 0 <= y < height]
        return Prompt(points=tuple(pts), labels=(1,) * len(pts), extra=extra) if pts else None
    x0, y0, x1, y1 = (float(v) for v in geom.bounds)
    if not all(np.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    if x1 - x0 < 1:
        x0, x1 = cx - 0.5, cx + 0.5
    if y1 - y0 < 1:
        y0, y1 = cy - 0.5, cy + 0.5
    return Prompt(box=(x0, y0, x1, y1), extra=extra)


def read_prompt_layer(path: str | os.PathLike, crs: str | None = None) -> PromptLayer:
    """Read the point or polygon features of a vector file (GeoPackage, Shapefile, GeoJSON, FlatGeobuf, ...).

    Args:
        path: the file; it must hold one layer (save the prompt layer on its own).
        crs: the coordinates' CRS when the file has none (``None``: pixel column/row).

    Raises:
        InputError: the file is missing, unreadable or holds several layers.
        PromptError: no usable feature, or a feature that is not a point or polygon.
    """
    import pyogrio
    import pyogrio.raw
    from pyogrio.errors import DataSourceError

    from geoseg.georef import parse_crs

    path = os.fspath(path)
    if not os.path.exists(path):
        raise InputError(f"prompt file {path} does not exist", "check the path")
    try:
        layers = pyogrio.list_layers(path)
        if len(layers) > 1:
            names = ", ".join(str(n) for n, _ in layers[:5])
            raise InputError(f"prompt file {path} holds {len(layers)} layers ({names})",
                             "save the prompt layer as a file of its own")
        meta, fids, wkb, _ = pyogrio.raw.read(path, columns=[], return_fids=True, force_2d=True,
                                              **(CSV_OPEN_OPTIONS if path.lower().endswith(".csv") else {}))
    except DataSourceError as exc:
        raise InputError(f"cannot read prompt file {path} ({reason(exc)})",
                         "give a vector file GDAL can open: .gpkg, .shp, .geojson, .fgb") from None
    if wkb is None:
        raise PromptError(f"prompt file {path} has no geometry",
                          "give points or polygons; a CSV needs x/y (lon/lat, easting/northing) columns "
                          "or a WKT column named geometry or wkt")
    file_crs = meta.get("crs")
    if file_crs and crs and parse_crs(crs) != parse_crs(file_crs):
        log.warning("%s has its own CRS (%s): --prompt-crs %s is not used for it", path, file_crs, crs)
    layer_crs = parse_crs(file_crs or crs).to_wkt() if (file_crs or crs) else None
    geometries: list[bytes] = []
    kept: list[int] = []
    for fid, g in zip(fids, wkb):
        geom = shapely.from_wkb(g) if g is not None else None
        if geom is None or geom.is_empty:
            log.warning("%s: feature %d has no geometry and was skipped", path, int(fid))
            continue
        if geom.geom_type not in POINT_TYPES + AREA_TYPES:
            raise PromptError(f"feature {int(fid)} of {path} is a {geom.geom_type}",
                              "use point features on the targets or polygons around them")
        geometries.append(bytes(g))  # already 2-D (force_2d)
        kept.append(int(fid))
    if not kept:
        raise PromptError(f"prompt file {path} has no feature with a geometry",
                          "give a layer of points on the targets or polygons around them")
    log.info("read %d prompt feature(s) from %s", len(kept), path)
    return PromptLayer(path, tuple(geometries), tuple(kept), layer_crs)
