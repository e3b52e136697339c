"""Areas on the ground of pixels and polygons, in m² whenever the scene's CRS says where it is.

* projected CRS (UTM, a national grid, State Plane in feet): planar area times the square of the
  linear unit; where the projection distorts areas by over 1 % (Web Mercator) each pixel and polygon
  is measured on the ellipsoid instead;
* geographic CRS (EPSG:4326, NAD27, EPSG:4979, ...): the area on the CRS's own ellipsoid — a
  pixel of 0.0001° is 111 m² at 25° N and 38 m² at 70° N, so a pixel count says nothing
  about the ground (QGIS and ``geoseg serve`` report these areas ellipsoidally too);
* engineering (local) CRS with linear axes: planar area in its unit, as m²;
* no CRS (a plain JPG/PNG, a scene georeferenced only by GCPs or RPCs): pixels.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from affine import Affine
from rasterio.windows import Window

#: unit names written into ``area_unit`` fields and summaries
M2, PX = "m2", "px"
#: a projection whose areal scale differs from 1 by more than this has its areas corrected
AREAL_TOLERANCE = 0.01
#: axis units that are not lengths (an engineering CRS in these has no planar area)
ANGULAR_UNITS = ("degree", "radian", "grad", "arc-second", "arc-minute")


def scene_grid(crs, transform: Affine, width: int, height: int) -> SimpleNamespace:
    """What the functions here read of a scene (``crs``, ``transform``, ``width``, ``height``), for callers
    that hold those values but no :class:`~geoseg.raster.io.RasterSource` (a predictor result, a served image)."""
    return SimpleNamespace(crs=crs, transform=transform, width=width, height=height)


def _pyproj_crs(crs):
    """A pyproj CRS from a rasterio CRS, WKT or ``EPSG:XXXX`` text."""
    from pyproj import CRS

    return CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def _horizontal(crs):
    """The horizontal part of a (possibly compound) pyproj CRS."""
    return crs.sub_crs_list[0] if crs.is_compound and crs.sub_crs_list else crs


def area_kind(crs) -> str:
    """How areas are measured in ``crs``: ``"planar"``, ``"ellipsoidal"`` (geographic) or ``"pixels"``."""
    if crs is None:
        return "pixels"
    c = _horizontal(_pyproj_crs(crs))
    if c.is_geographic:
        return "ellipsoidal"
    linear = all(a.unit_conversion_factor and a.unit_name not in ANGULAR_UNITS for a in c.axis_info[:2])
    if c.is_projected or (c.is_engineering and len(c.axis_info) >= 2 and linear):
        return "planar"
    return "pixels"


def areal_scale(crs, x: float, y: float) -> float:
    """How much a projected CRS enlarges areas at map point ``(x, y)`` (1.0 when it cannot tell).

    UTM is within 0.1 % of the ground everywhere it is used; Web Mercator (EPSG:3857) enlarges
    areas by sec²(latitude), +22 % at 25° N, so its planar areas cannot be reported as m².
    (PROJ measures Web Mercator's scale against a sphere: to tell distortion, not to measure;
    :func:`ground_pixel_areas` measures.)
    """
    from pyproj import CRS, Proj, Transformer

    try:
        c = CRS.from_user_input(crs)
        lon, lat = Transformer.from_crs(c, "EPSG:4326", always_xy=True).transform(x, y)
        return float(Proj(c).get_factors(lon, lat).areal_scale)
    except Exception:  # noqa: BLE001 - an exotic CRS: keep the planar area
        return 1.0


def distorts(crs, transform: Affine, width: int, height: int) -> bool:
    """Whether projected ``crs`` changes areas by over 1 % at the scene centre (Web Mercator does; UTM does not)."""
    return abs(areal_scale(crs, *(transform @ (width / 2, height / 2))) - 1.0) > AREAL_TOLERANCE


def _linear_factor(crs) -> float:
    """Metres per unit of the horizontal axes of a projected or engineering CRS."""
    return float(_horizontal(_pyproj_crs(crs)).axis_info[0].unit_conversion_factor or 1.0)


def _ellipsoid(crs) -> tuple[float, float, float]:
    """``(radians per angular unit, semi-major axis in m, first eccentricity squared)`` of a geographic ``crs``."""
    c = _horizontal(_pyproj_crs(crs))
    inv_f = float(c.ellipsoid.inverse_flattening or 0.0)
    e2 = (2 - 1 / inv_f) / inv_f if inv_f else 0.0
    return float(c.axis_info[0].unit_conversion_factor), float(c.ellipsoid.semi_major_metre), e2


def _per_rad2(lat: np.ndarray, a: float, e2: float) -> np.ndarray:
    """m² of the ellipsoid per radian² of longitude x latitude at latitude ``lat`` (radians): ``M·N·cos φ``."""
    w2 = 1.0 - e2 * np.sin(lat) ** 2
    return a * a * (1.0 - e2) / (w2 * w2) * np.abs(np.cos(lat))


def ground_pixel_areas(crs, transform: Affine, cols: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """m² on the ellipsoid of the pixels centred at ``(cols, rows)`` of a scene in projected ``crs``.

    The pixel's sides are mapped to longitude/latitude of the CRS's own datum (differences over
    one pixel), and the ellipsoid's area element ``M·N·cos φ`` is applied to that parallelogram:
    the ground area whatever the projection, which PROJ's areal scale is not for Web Mercator
    (it measures against a sphere: 0.4 % off at 25° N).
    """
    from pyproj import Transformer

    c = _pyproj_crs(crs)
    geodetic = c.geodetic_crs
    rad, a, e2 = _ellipsoid(geodetic)
    to_geo = Transformer.from_crs(c, geodetic, always_xy=True)
    t = transform

    def lonlat(dc: float, dr: float) -> tuple[np.ndarray, np.ndarray]:
        cc, rr = cols + dc, rows + dr
        lon, lat = to_geo.transform(t.a * cc + t.b * rr + t.c, t.d * cc + t.e * rr + t.f, errcheck=False)
        return np.asarray(lon, dtype=np.float64) * rad, np.asarray(lat, dtype=np.float64) * rad

    lon_l, lat_l = lonlat(-0.5, 0.0)
    lon_r, lat_r = lonlat(0.5, 0.0)
    lon_u, lat_u = lonlat(0.0, -0.5)
    lon_d, lat_d = lonlat(0.0, 0.5)
    det = np.abs((lon_r - lon_l) * (lat_d - lat_u) - (lon_d - lon_u) * (lat_r - lat_l))
    area = det * _per_rad2((lat_l + lat_r) / 2, a, e2)
    planar = abs(t.a * t.e - t.b * t.d) * _linear_factor(c) ** 2
    return np.where(np.isfinite(area) & (area > 0), area, planar)


def cell_areas(crs, transform: Affine, window: Window, ellipsoid: tuple[float, float, float] | None = None
               ) -> np.ndarray:
    """m² of each pixel of ``window`` of a scene in a geographic ``crs`` (an ``h x w`` array).

    A cell of ``dλ x dφ`` at latitude ``φ`` covers ``M·N·cos φ·dλ·dφ`` of the ellipsoid (``M``, ``N``:
    the meridian and prime-vertical radii of curvature); ``dλ·dφ`` is the transform's determinant
    in the CRS's angular unit. Evaluated at each pixel's centre, so rotated grids are right too.
    ``ellipsoid`` is :func:`_ellipsoid` of ``crs``, computed once by a caller that measures many blocks.
    """
    rad, a, e2 = ellipsoid or _ellipsoid(crs)
    t = transform
    rows = np.arange(int(window.row_off), int(window.row_off + window.height), dtype=np.float64)[:, None] + 0.5
    cols = np.arange(int(window.col_off), int(window.col_off + window.width), dtype=np.float64)[None, :] + 0.5
    lat = (t.d * cols + t.e * rows + t.f) * rad
    return _per_rad2(lat, a, e2) * abs(t.a * t.e - t.b * t.d) * rad * rad


def pixel_area(src) -> tuple[float, str]:
    """Area of one pixel of ``src`` (size, ``crs``, ``transform``) and its unit: m², else 1 pixel.

    Geographic scenes: the pixel at the scene centre (pixels further north or south differ;
    :class:`MaskArea` and :func:`polygon_areas` measure each one).
    """
    kind = area_kind(src.crs)
    t = src.transform
    if kind == "planar":
        if _horizontal(_pyproj_crs(src.crs)).is_projected and distorts(src.crs, t, src.width, src.height):
            centre = (np.array([src.width / 2]), np.array([src.height / 2]))
            return float(ground_pixel_areas(src.crs, t, *centre)[0]), M2
        return abs(t.a * t.e - t.b * t.d) * _linear_factor(src.crs) ** 2, M2
    if kind == "ellipsoidal":
        centre = Window(src.width // 2, src.height // 2, 1, 1)
        return float(cell_areas(src.crs, t, centre)[0, 0]), M2
    return 1.0, PX


class MaskArea:
    """The ground area of a mask streamed block by block over a scene ``src``, in :func:`pixel_area`'s unit.

    Each block is measured where it lies: geographic pixels by their latitude, those of a projection
    that distorts areas (Web Mercator) by their ground area on a grid of cells, so the total matches
    the polygons' own areas (:func:`polygon_areas`), not the scene centre's pixel times a count.
    """

    #: a distorting projection's pixels are measured at the centres of this many cells per block side
    CELLS = 32

    def __init__(self, src) -> None:
        self.src = src
        self.pixel, self.unit = pixel_area(src)
        kind = area_kind(src.crs)
        self._ellipsoid = _ellipsoid(src.crs) if kind == "ellipsoidal" else None
        self._distorting = (kind == "planar" and _horizontal(_pyproj_crs(src.crs)).is_projected
                            and distorts(src.crs, src.transform, src.width, src.height))
        self.total = 0.0

    def add(self, mask: np.ndarray, window: Window) -> float:
        """Add the ``True`` pixels of ``mask`` (covering ``window``) to :attr:`total`; returns their area."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            area = 0.0
        elif self._ellipsoid is not None:
            t = self.src.transform
            if t.d == 0:  # north-up (or south-up): a pixel's size depends on its row only
                rows = Window(window.col_off, window.row_off, 1, window.height)
                per_row = cell_areas(self.src.crs, t, rows, self._ellipsoid)[:, 0]
                area = float(np.count_nonzero(mask, axis=1) @ per_row)
            else:
                area = float(cell_areas(self.src.crs, t, window, self._ellipsoid)[mask].sum())
        elif self._distorting:
            area = self._distorted(mask, window)
        else:
            area = float(np.count_nonzero(mask)) * self.pixel
        self.total += area
        return area

    def _distorted(self, mask: np.ndarray, window: Window) -> float:
        """Ground area of ``mask``, its pixels measured at the centres of at most ``CELLS`` x ``CELLS`` cells."""
        h, w = mask.shape
        step = max(1, -(-max(h, w) // self.CELLS))
        r_idx, c_idx = np.arange(0, h, step), np.arange(0, w, step)
        counts = np.add.reduceat(np.add.reduceat(mask.astype(np.int64), r_idx, axis=0), c_idx, axis=1)
        if not counts.any():
            return 0.0
        rows = window.row_off + r_idx + np.minimum(step, h - r_idx) / 2
        cols = window.col_off + c_idx + np.minimum(step, w - c_idx) / 2
        cc, rr = np.meshgrid(cols, rows)
        return float((counts * ground_pixel_areas(self.src.crs, self.src.transform, cc, rr)).sum())


def lonlat_areas(geoms, geod=None) -> np.ndarray:
    """Areas in m² on the ellipsoid (WGS84 unless ``geod``) of polygons in lon/lat degrees (as QGIS measures)."""
    from pyproj import Geod

    geod = geod or Geod(ellps="WGS84")
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) for g in geoms], dtype=np.float64)


def geodesic_areas(geoms, crs) -> np.ndarray:
    """:func:`lonlat_areas` of polygons given in ``crs``, on ``crs``'s own ellipsoid."""
    from geoseg.vector import reproject_geoms

    c = _pyproj_crs(crs)
    geodetic = c.geodetic_crs
    if geodetic is None or geodetic.axis_info[0].unit_name != "degree":
        from pyproj import CRS

        geodetic = CRS.from_epsg(4326)
    if _horizontal(c) != geodetic:
        geoms = reproject_geoms(geoms, c, geodetic)
    return lonlat_areas(geoms, geodetic.get_geod())


def polygon_areas(map_geoms: np.ndarray, pixel_geoms: np.ndarray, src) -> tuple[np.ndarray, str]:
    """Each polygon's area and the unit: given in map coordinates of ``src.crs`` and in its pixels."""
    kind = area_kind(src.crs)
    if kind == "ellipsoidal" and len(map_geoms):
        return geodesic_areas(map_geoms, src.crs), M2
    unit_area, unit = pixel_area(src)
    area = np.array([g.area for g in pixel_geoms], dtype=np.float64) * unit_area
    if kind == "planar" and len(map_geoms) and _horizontal(_pyproj_crs(src.crs)).is_projected \
            and distorts(src.crs, src.transform, src.width, src.height):
        area = geodesic_areas(map_geoms, src.crs)  # e.g. Web Mercator: planar m² are not ground m²
    return area, unit
