"""Georeferenced rasters with vector polygons as instances (the Danish field parcels).

Layout: a folder holding one or more GeoTIFFs (the scenes) and a vector file of polygons
(Shapefile, GeoPackage, GeoJSON; the first one found, or ``options.vectors``). Every
polygon is an instance. Polygons are reprojected from the vector file's CRS to each
raster's CRS (pyproj), clipped to the raster and burned into an instance-id map with
``rasterio.features.rasterize`` (largest first, so a small parcel inside a larger one stays
visible). 16-bit reflectance gets a scene-level percentile stretch for display; the rows
keep pointing at the GeoTIFF, so every band stays available.

Options:
    image: file name or glob of the rasters (default ``*.tif`` / ``*.tiff``).
    vectors: file name of the polygons (default: the only vector file in the folder).
    category: class of every polygon (default ``farmland``).
    class_field: attribute holding each polygon's class instead (e.g. ``Afgroede``, the crop).
    bands: 1-based display bands as R, G, B (default ``[3, 2, 1]``: the Danish file stores
        Sentinel-2 B02, B03, B04 in that order, as its band statistics show (band 3 has the
        spread of red over fields and soil) and water only renders blue that way).
    split: put every scene in this split (default: the split map, else ``test``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from geoseg.data.sources.base import Scene, SceneRef, Source
from geoseg.data.sources.raster import read_full, scene_stretch, to_display
from geoseg.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_BANDS = (3, 2, 1)
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb")
#: polygons smaller than this fraction of a pixel are degenerate (zero area up to rounding)
ZERO_AREA_PX = 1e-3


def read_polygons(path: str, class_field: str | None = None) -> tuple[np.ndarray, list[str | None] | None, str]:
    """Polygons of a vector file as shapely geometries, their class values (``None`` = null) and the file's CRS (WKT)."""
    import shapely
    from pyogrio.errors import DataSourceError
    from pyogrio.raw import read

    try:
        meta, _, wkb, fields = read(path, columns=[class_field] if class_field else [])
    except (DataSourceError, OSError, ValueError) as exc:
        raise InputError(f"cannot read polygons from {path} ({exc})", "give a Shapefile, GeoPackage or GeoJSON") from exc
    if class_field and (not len(meta["fields"]) or meta["fields"][0] != class_field):
        raise InputError(f"{path} has no attribute {class_field!r}", "set class_field to one of the file's attributes")
    crs = meta.get("crs")
    if not crs:
        raise InputError(f"{path} has no coordinate reference system", "add the .prj file (or set the CRS in the file)")
    geoms = shapely.from_wkb(wkb)
    values = [_class_value(v) for v in fields[0]] if class_field else None
    return geoms, values, str(crs)


def _class_value(v: object) -> str | None:
    """A polygon's class attribute as a class name; ``None`` when it is null, NaN or blank (no class)."""
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    text = str(v).strip()
    return text or None


def reproject(geoms: np.ndarray, src_crs: str, dst_crs: object) -> np.ndarray:
    """Geometries transformed from ``src_crs`` to ``dst_crs`` (a no-op when both are the same CRS)."""
    import shapely
    from pyproj import CRS, Transformer

    src, dst = CRS.from_user_input(src_crs), CRS.from_user_input(dst_crs)
    if src == dst:
        return geoms
    t = Transformer.from_crs(src, dst, always_xy=True)

    def _xy(coords: np.ndarray) -> np.ndarray:
        x, y = t.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return shapely.transform(geoms, _xy)


class DkFieldsSource(Source):
    """A GeoTIFF (or several) with polygon instances; one scene and region per raster."""

    name = "dk_fields"
    default_split = "test"

    def _vector_path(self) -> Path:
        root = Path(self.root)
        given = self.options.get("vectors")
        if given:
            p = Path(str(given))
            p = p if p.is_absolute() else root / p
            if not p.exists():
                raise InputError(f"vector file {p} does not exist", "set vectors: to the polygon file")
            return p
        found = sorted(p for p in root.iterdir() if p.suffix.lower() in VECTOR_SUFFIXES)
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise InputError(f"{what} vector files in {root}", "set vectors: to the polygon file (.shp/.gpkg/.geojson)")
        return found[0]

    def scenes(self) -> list[SceneRef]:
        root = Path(self.root)
        if not root.is_dir():
            raise InputError(f"folder {root} does not exist", "pass the folder holding the GeoTIFF and the polygons")
        pattern = self.options.get("image")
        if pattern:
            rasters = sorted(root.glob(str(pattern)))
        else:
            rasters = sorted(p for p in root.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        if not rasters:
            raise InputError(f"no GeoTIFF in {root}", "put the raster (.tif) next to the polygons or set image:")
        vec = self._vector_path()
        bands = tuple(int(b) for b in self.options.get("bands", DEFAULT_BANDS))  # type: ignore[union-attr]
        return [SceneRef(self.name, r.stem, r.stem, str(r.resolve()), "", bands, (("vectors", str(vec.resolve())),))
                for r in rasters]

    def load(self, ref: SceneRef) -> Scene:
        import rasterio
        import shapely
        from rasterio.features import rasterize

        class_field = self.options.get("class_field")
        geoms, values, vcrs = read_polygons(str(ref.option("vectors")), str(class_field) if class_field else None)
        try:
            with rasterio.open(ref.image_path) as src:
                rcrs, transform, (h, w), nodata = src.crs, src.transform, src.shape, src.nodata
        except rasterio.errors.RasterioIOError as exc:
            raise InputError(f"cannot read image {ref.image_path} ({exc})", "check that the file is a GeoTIFF") from exc
        if rcrs is None:
            raise InputError(f"{ref.image_path} has no CRS, so the polygons cannot be placed on it",
                             "use a georeferenced raster")
        notes: dict[str, int] = {}
        geoms = reproject(geoms, vcrs, rcrs.to_wkt())
        bounds = shapely.box(*rasterio.transform.array_bounds(h, w, transform))
        ok = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
        if (~ok).any():
            notes["polygons_empty"] = int((~ok).sum())
        invalid = ok & ~shapely.is_valid(geoms)
        if invalid.any():
            geoms = geoms.copy()
            geoms[invalid] = shapely.make_valid(geoms[invalid])
            notes["polygons_repaired"] = int(invalid.sum())
        # a polygon with no area (a line or point, or one repaired into one; after reprojection its
        # area is rounding noise) is no parcel: it would burn a stray line of pixels or none at all,
        # so it is dropped and counted
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
        flat = ok & ~(shapely.area(geoms) > ZERO_AREA_PX * pixel_area)
        if flat.any():
            notes["polygons_zero_area"] = int(flat.sum())
        ok &= ~flat
        if values is not None:
            unclassed = ok & np.array([v is None for v in values], dtype=bool)
            if unclassed.any():
                notes["polygons_without_class"] = int(unclassed.sum())
            ok &= ~unclassed
        inside = ok & shapely.intersects(geoms, bounds)
        notes["polygons_outside_raster"] = int((ok & ~inside).sum())
        idx = np.flatnonzero(inside)
        if values is not None:
            classes = sorted({values[i] for i in idx})
            cls_of = {c: k for k, c in enumerate(classes)}
        else:
            classes = [str(self.options.get("category", "farmland"))]
        order = idx[np.argsort(-shapely.area(geoms[idx]), kind="stable")]
        inst = np.zeros((h, w), dtype=np.int32)
        if order.size:
            inst = rasterize(((geoms[i], n + 1) for n, i in enumerate(order)), out_shape=(h, w), transform=transform,
                             fill=0, dtype="int32")
        inst_class = np.array([cls_of[values[i]] if values is not None else 0 for i in order], dtype=np.int32)
        data = read_full(ref.image_path, list(ref.bands))
        valid = np.all(data != nodata, axis=2) if nodata is not None else None
        stretch = scene_stretch(data, valid=valid) if data.dtype != np.uint8 else []
        log.debug("%s: %d polygons on the raster", ref.scene, order.size)
        return Scene(ref, to_display(data, stretch), classes, label=None, instances=inst, instance_class=inst_class,
                     stretch=stretch, exhaustive=False, notes={k: v for k, v in notes.items() if v})
