"""Open an image for interactive prompting: display RGB plus where it lies on Earth.

The server keeps the whole image in memory (interactive use is about one scene
at a time, bounded by ``max_pixels``); big scenes belong to ``geoseg segment``,
which tiles. Only three formats are opened: GeoTIFF (any dtype and band count),
JPEG and PNG. The format is recognised from the file's first bytes and GDAL is
told to use that one driver, so a GDAL virtual raster (``.vrt``), an archive or
any other format that can pull in *other* files on the server is refused before
GDAL parses it. Non-uint8 data are stretched with statistics of the whole image
(2nd–98th percentile per band, nodata excluded), never per tile.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geoseg.digest import sha256_file
from geoseg.errors import InputError, reason
from geoseg.raster.io import default_bands, palette_lut

if TYPE_CHECKING:
    from rasterio.windows import Window

# rasterio's Affine coefficients (a, b, c, d, e, f): x = a*col + b*row + c, y = d*col + e*row + f
AffineTuple = tuple[float, float, float, float, float, float]


@dataclass
class GeoInfo:
    """Georeference of an image: its CRS and transform, and how pixels map to lon/lat.

    ``pixel_to_lonlat`` is an affine fitted by least squares on a grid of pixels
    transformed to EPSG:4326; for the scene sizes served interactively the fit is
    within ``fit_error_px`` pixels, good enough to place clicks and draw the map.
    """

    crs: str
    transform: AffineTuple
    corners_lonlat: list[list[float]]
    pixel_to_lonlat: AffineTuple
    fit_error_px: float
    units: str
    pixel_size: tuple[float, float]

    def to_dict(self) -> dict:
        return {
            "crs": self.crs,
            "transform": list(self.transform),
            "corners_lonlat": self.corners_lonlat,
            "pixel_to_lonlat": list(self.pixel_to_lonlat),
            "fit_error_px": self.fit_error_px,
            "units": self.units,
            "pixel_size": list(self.pixel_size),
        }


@dataclass
class ImageRecord:
    """One image as the server sees it."""

    image_id: str
    name: str
    rgb: np.ndarray  # H x W x 3 uint8
    geo: GeoInfo | None
    source_path: str
    band_count: int
    dtype: str
    valid: np.ndarray | None = field(default=None, repr=False)  # H x W bool where the source has data
    rgb_bands: tuple[int, ...] = (1, 2, 3)  # 1-based bands shown as red, green, blue (one: grey)
    band_names: tuple[str, ...] = ()  # per band: its description, else its declared colour, else ""
    rgb_declared: bool = False  # the file declares which bands are red, green and blue
    digest: str = ""  # content hash of the file (its pixels and bands, whatever the name)

    def model_rgb(self) -> np.ndarray:
        """The pixels a segmenter sees: nodata (black in ``rgb``, for display) given the nearest valid colour.

        A black nodata collar is a dark object with a strong edge to a model; see
        :func:`geoseg.raster.io.fill_invalid`.
        """
        if self.valid is None or self.valid.all():
            return self.rgb
        from geoseg.raster.io import fill_invalid

        return fill_invalid(self.rgb.copy(), self.valid)

    def any_valid(self, window: Window) -> bool:
        """Whether ``window`` (cut to the image) holds a pixel with data, as
        :meth:`geoseg.raster.io.RasterSource.any_valid` answers for a scene on disk.

        So :func:`geoseg.pipeline.prompt_on_nodata` can ask it of an open image (held in memory
        with its validity, ``valid``) to tell a client whose point or box lies on nodata only.
        """
        from rasterio.windows import Window

        from geoseg.raster.tiling import intersect

        win = intersect(window, Window(0, 0, self.width, self.height))
        if win is None:
            return False
        return self.valid is None or bool(self.valid[win.toslices()].any())

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    def to_dict(self) -> dict:
        return {
            "image_id": self.image_id,
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "bands": self.band_count,
            "dtype": self.dtype,
            "georeferenced": self.geo is not None,
            "geo": self.geo.to_dict() if self.geo else None,
            "rgb_bands": list(self.rgb_bands),
            "band_names": list(self.band_names),
            "rgb_declared": self.rgb_declared,
        }

    @property
    def content_key(self) -> tuple[str, tuple[int, ...]]:
        """Same file read with the same bands: the same pixels, so the same embedding (any name)."""
        return self.digest, self.rgb_bands


class ImageTooLargeError(InputError):
    """An image with more pixels than the server holds in memory."""


class UnsupportedFormatError(InputError):
    """A file that is not a GeoTIFF, JPEG or PNG (a GDAL virtual raster, an archive, text, ...)."""


#: the GDAL drivers the server opens, and the file extension each is kept under
ALLOWED_DRIVERS: dict[str, str] = {"GTiff": ".tif", "JPEG": ".jpg", "PNG": ".png"}

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"II*\x00", "GTiff"), (b"MM\x00*", "GTiff"),  # classic TIFF, little / big endian
    (b"II+\x00", "GTiff"), (b"MM\x00+", "GTiff"),  # BigTIFF
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
)


def sniff_driver(path: str | Path) -> str | None:
    """The GDAL driver (``GTiff``, ``JPEG`` or ``PNG``) the file's first bytes say it needs, else ``None``."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    for magic, driver in _MAGIC:
        if head.startswith(magic):
            return driver
    return None


def unsupported_format_error(name: str) -> UnsupportedFormatError:
    return UnsupportedFormatError(
        f"unsupported image format: {name} is not a GeoTIFF, JPEG or PNG file "
        "(GDAL virtual rasters, archives and other formats are refused)",
        "give a GeoTIFF, JPEG or PNG",
    )


def make_image_id(digest: str, bands: tuple[int, ...] | None, name: str | None = None) -> str:
    """The id of a file (by its :func:`sha256_file`) opened under ``name`` with ``bands``.

    The same file under the same name and bands gets the same id (and its embedding again);
    under another name it is another image, so each name is shown, and names its downloads.
    """
    h = hashlib.sha256(digest.encode())
    h.update(repr(bands).encode())
    if name is not None:
        h.update(b"\x00" + name.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def image_id_for(path: str | Path, bands: tuple[int, ...] | None, name: str | None = None) -> str:
    """A content hash of the file, the band choice and the name the user gave it (see :func:`make_image_id`)."""
    return make_image_id(sha256_file(path), bands, name)


def _band_names(src) -> tuple[str, ...]:
    """Each band's description (``B8``), else its declared colour (``red``), else ``""``: what a GIS shows."""
    names = []
    for desc, ci in zip(src.descriptions, src.colorinterp):
        colour = "" if ci.name in ("undefined", "gray") else ci.name
        names.append((desc or "").strip() or colour)
    return tuple(names)


def _stretch(data: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Bands x H x W of any dtype -> uint8 with whole-image 2–98 % percentiles per band."""
    if data.dtype == np.uint8:
        return data
    out = np.zeros(data.shape, dtype=np.uint8)
    for i, band in enumerate(data):
        vals = band[valid] if valid is not None else band.ravel()
        vals = vals[np.isfinite(vals)] if np.issubdtype(vals.dtype, np.floating) else vals
        if vals.size == 0:
            continue
        if vals.size > 2_000_000:  # statistics from a seeded sample: same answer every time
            vals = np.random.default_rng(0).choice(vals, 2_000_000, replace=False)
        lo, hi = np.percentile(vals, [2, 98]).astype(np.float64)
        scaled = (band.astype(np.float32) - lo) * (255.0 / max(hi - lo, 1e-12))
        out[i] = np.clip(np.nan_to_num(scaled, nan=0.0), 0, 255).astype(np.uint8)
    return out


def _geo_info(src) -> GeoInfo | None:
    """Georeference of an open rasterio dataset, or ``None`` for a plain image."""
    from rasterio.transform import Affine
    from rasterio.warp import transform as warp_transform

    if src.crs is None or src.transform == Affine.identity():
        return None
    h, w = src.height, src.width
    t = src.transform
    # a 5 x 5 grid of pixel positions -> source CRS -> lon/lat, then least-squares affine
    cols, rows = np.meshgrid(np.linspace(0, w, 5), np.linspace(0, h, 5))
    cols, rows = cols.ravel(), rows.ravel()
    xs = t.a * cols + t.b * rows + t.c
    ys = t.d * cols + t.e * rows + t.f
    try:
        lons, lats = warp_transform(src.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    except Exception as exc:  # noqa: BLE001 - any PROJ failure means "cannot place it on the map"
        raise InputError(
            f"the image's CRS cannot be transformed to lon/lat ({exc})",
            "reproject the image with gdalwarp or remove its CRS to open it as a plain image",
        ) from exc
    lons, lats = np.asarray(lons), np.asarray(lats)
    design = np.column_stack([cols, rows, np.ones_like(cols)])
    (a, b, c), *_ = np.linalg.lstsq(design, lons, rcond=None)
    (d, e, f), *_ = np.linalg.lstsq(design, lats, rcond=None)
    # fit error in pixels: distance between the fitted and the true lon/lat, in pixel units
    fit_lon = design @ np.array([a, b, c])
    fit_lat = design @ np.array([d, e, f])
    det = a * e - b * d
    err_px = 0.0
    if det != 0:
        dcol = (e * (lons - fit_lon) - b * (lats - fit_lat)) / det
        drow = (-d * (lons - fit_lon) + a * (lats - fit_lat)) / det
        err_px = float(np.max(np.hypot(dcol, drow)))
    corners = [[float(lon), float(lat)] for lon, lat in zip(
        *warp_transform(src.crs, "EPSG:4326", [t.c, t.c + t.a * w, t.c + t.a * w + t.b * h, t.c + t.b * h],
                        [t.f, t.f + t.d * w, t.f + t.d * w + t.e * h, t.f + t.e * h]))]
    units = "degree" if src.crs.is_geographic else (src.crs.linear_units or "metre")
    epsg = src.crs.to_epsg()
    return GeoInfo(
        crs=f"EPSG:{epsg}" if epsg else src.crs.to_wkt(),
        transform=(t.a, t.b, t.c, t.d, t.e, t.f),
        corners_lonlat=corners,
        pixel_to_lonlat=(float(a), float(b), float(c), float(d), float(e), float(f)),
        fit_error_px=round(err_px, 4),
        units=units,
        pixel_size=(abs(t.a), abs(t.e)),
    )


def open_image(path: str | Path, name: str | None = None, bands: tuple[int, ...] | None = None,
               max_pixels: int = 64_000_000, image_id: str | None = None, *, sidecars: bool = True,
               digest: str | None = None) -> ImageRecord:
    """Read ``path`` into an :class:`ImageRecord` (display RGB + georeference).

    Args:
        path: a GeoTIFF, JPEG or PNG file (anything else: :class:`UnsupportedFormatError`).
        name: the name shown to the user (the upload's file name).
        bands: 1-based band indices for R, G, B (default: the bands declared red, green and blue,
            else 1, 2, 3, or band 1 as grey).
        max_pixels: larger images are refused with a pointer to ``geoseg segment``.
        image_id: the id to use (default: :func:`make_image_id` of the file, bands and name).
        digest: the file's :func:`sha256_file` when the caller has it (else computed).
        sidecars: let GDAL read sidecar files next to it (``.aux.xml``, ``.ovr``, world files);
            ``False`` for uploads, which have none.

    Raises:
        InputError: not a GeoTIFF/JPEG/PNG, unreadable or truncated file, too many pixels, bad band
            indices.
    """
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    path = str(path)
    shown = name or os.path.basename(path)

    def hide(text: str) -> str:  # never show the server's folders
        return text.replace(path, shown)

    try:
        driver = sniff_driver(path)
    except OSError as exc:
        raise InputError(f"cannot read the image {shown} ({type(exc).__name__})", "check the file") from exc
    if driver is None:
        raise unsupported_format_error(shown)
    # one driver only: GDAL never picks another (VRT, archives, ...) even if the bytes would fit it.
    # Uploads have no sidecar files; EMPTY_DIR stops GDAL from looking for any (.ovr, .aux.xml, .msk).
    env = rasterio.Env(GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR") if not sidecars else rasterio.Env()
    with env, warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(path, driver=driver)
        except (RasterioError, CPLE_BaseError) as exc:
            raise InputError(f"cannot read the image ({hide(str(exc))})", "send a GeoTIFF, JPG or PNG file") from exc
        with src:
            if src.driver not in ALLOWED_DRIVERS:  # pragma: no cover - driver= already restricts it
                raise unsupported_format_error(shown)
            if src.width * src.height > max_pixels:
                raise ImageTooLargeError(
                    f"the image has {src.width}x{src.height} pixels, more than the server's limit of {max_pixels:,}",
                    "crop it, or segment the whole scene with 'geoseg segment', which tiles",
                )
            if bands:
                bad = [b for b in bands if not 1 <= b <= src.count]
                if bad or len(bands) not in (1, 3):
                    raise InputError(
                        f"bands {list(bands)} do not fit an image with {src.count} band(s)",
                        f"give one or three 1-based indices between 1 and {src.count}",
                    )
                idx = list(bands)
            else:  # as 'geoseg segment' reads it: declared red/green/blue bands, else the first three
                idx = list(default_bands(src))
            try:
                data = src.read(idx)
                lut = palette_lut(src, idx)
                if lut is not None:  # indexed colour: the colours, not the indices as grey
                    data = np.transpose(lut[data[0]], (2, 0, 1))
                valid = None
                if src.nodata is not None or any(f.name != "all_valid" for f in src.mask_flag_enums[0]):
                    valid = src.dataset_mask() > 0
                if np.issubdtype(data.dtype, np.floating):  # NaN is no data, as RasterSource.read_valid says
                    finite = np.any(np.isfinite(data), axis=0)
                    if not finite.all():
                        valid = finite if valid is None else valid & finite
            except (RasterioError, CPLE_BaseError) as exc:  # a truncated or corrupt file opens but cannot be read
                raise InputError(f"cannot read the pixels of {shown}, the file is truncated or corrupt "
                                 f"({hide(reason(exc))})", "send the complete GeoTIFF, JPEG or PNG file") from exc
            geo = _geo_info(src)
            dtype = src.dtypes[0]
            count = src.count
            names = _band_names(src)
            declared = {"red", "green", "blue"} <= {ci.name for ci in src.colorinterp}
    rgb8 = _stretch(data, valid)
    if rgb8.shape[0] == 1:
        rgb8 = np.repeat(rgb8, 3, axis=0)
    rgb = np.ascontiguousarray(np.transpose(rgb8, (1, 2, 0)))
    if valid is not None:
        rgb[~valid] = 0
    digest = digest or sha256_file(path)
    return ImageRecord(
        image_id=image_id or make_image_id(digest, bands, shown),
        name=shown,
        rgb=rgb,
        geo=geo,
        source_path=path,
        band_count=count,
        dtype=dtype,
        valid=valid,
        rgb_bands=tuple(idx),
        band_names=names,
        rgb_declared=declared,
        digest=digest,
    )
