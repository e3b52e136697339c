"""Open and validate a source image and read display-RGB windows from it.

A :class:`RasterSource` is the one way the pipeline, the predictor and the batch
runner look at a scene: it validates the file and the ``--bands`` choice once,
computes the scene-level stretch once (:mod:`geoseg.raster.stretch`), and then
reads any window as ``H x W x 3`` uint8 RGB plus a validity mask that honours the
source's nodata value, alpha band or internal mask (and NaN in float data).

The object is cheap to pickle (the open dataset handle is dropped and reopened
lazily), so a Dask worker can receive it and read its own windows.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import InputError

log = logging.getLogger(__name__)

#: GDAL settings used for every read/write: a bounded block cache keeps memory flat on big scenes.
GDAL_ENV: dict[str, Any] = {"GDAL_CACHEMAX": 64, "GDAL_NUM_THREADS": "1"}


def parse_bands(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Parse ``--bands`` (``"4,3,2"`` or a sequence) into 1-based band indices.

    Raises:
        InputError: when the text is not a comma-separated list of positive integers.
    """
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, str):
        try:
            out = tuple(int(v) for v in value.split(","))
        except ValueError:
            raise InputError(f"cannot read --bands {value!r}", "give 1-based band numbers such as --bands 4,3,2") from None
    else:
        out = tuple(int(v) for v in value)
    if any(b < 1 for b in out):
        raise InputError(f"band numbers start at 1, got {value!r}", "give 1-based band numbers such as --bands 4,3,2")
    if len(out) not in (1, 3):
        raise InputError(f"--bands needs 1 or 3 bands, got {len(out)}", "pick three bands for RGB (e.g. 4,3,2) or one for grey")
    return out


#: a band description that names a colour: the word on its own ("B4 Red", "red", "Blue (B2)"), not inside
#: another ("Infrared", "coastal_blue") and not a red edge band ("B5 Red Edge 1", "red-edge")
_COLOUR_WORD = {c: re.compile(rf"\b{c}\b(?![\s_-]*edge)", re.IGNORECASE) for c in ("red", "green", "blue")}


def declared_rgb(ds: rasterio.DatasetReader) -> tuple[int, int, int] | None:
    """The 1-based bands the file declares red, green and blue by colour interpretation, or ``None``."""
    ci = list(ds.colorinterp)
    wanted = (ColorInterp.red, ColorInterp.green, ColorInterp.blue)
    if not all(c in ci for c in wanted):
        return None
    red, green, blue = (ci.index(c) + 1 for c in wanted)
    return red, green, blue


def named_rgb(descriptions: Sequence[str | None]) -> tuple[int, int, int] | None:
    """The 1-based bands whose descriptions name red, green and blue, each by exactly one band, or ``None``.

    A stack written by SNAP, ``gdal_merge`` or a Sentinel-2 export names its bands ("B2 Blue",
    "B3 Green", "B4 Red", "B8 NIR") but declares no colour interpretation. A colour named by two
    bands (e.g. "Coastal blue" beside "Blue") or by none says nothing sure, so no choice is made.
    """
    names = [(d or "").strip() for d in descriptions]
    found = [[i + 1 for i, n in enumerate(names) if pattern.search(n)] for pattern in _COLOUR_WORD.values()]
    if any(len(bands) != 1 for bands in found):
        return None
    (red,), (green,), (blue,) = found
    return (red, green, blue) if len({red, green, blue}) == 3 else None


def default_bands(ds: rasterio.DatasetReader) -> tuple[int, ...]:
    """The bands read as R,G,B when ``--bands`` is not given.

    In order: the bands declared red, green and blue by colour interpretation; else the bands
    whose descriptions name them (:func:`named_rgb`; read as 1,2,3 a Blue, Green, Red, NIR
    stack showed blue as red, and text answers changed with it); else the first three bands;
    else band 1 as grey.
    """
    chosen = declared_rgb(ds) or named_rgb(ds.descriptions)
    if chosen is not None:
        return chosen
    if ds.count >= 3:
        return (1, 2, 3)
    return (1,)


def palette_lut(ds: rasterio.DatasetReader, bands: Sequence[int]) -> np.ndarray | None:
    """The colour table of a single chosen palette band as an ``N x 3`` uint8 lookup, else ``None``.

    An indexed-colour image (a paletted PNG or GeoTIFF) stores colour-table indices; read as
    grey they are a near-black picture (values 0..15 for a 16-colour table), which is what the
    model was shown before. Expanded, it sees the image a viewer shows.
    """
    if len(bands) != 1 or ds.colorinterp[bands[0] - 1] != ColorInterp.palette:
        return None
    try:
        table = ds.colormap(bands[0])
    except ValueError:  # declared palette without a table
        return None
    size = 256 if np.dtype(ds.dtypes[bands[0] - 1]).itemsize == 1 else 65536
    lut = np.zeros((size, 3), np.uint8)
    for index, rgba in table.items():
        if 0 <= index < size:
            lut[index] = rgba[:3]
    return lut


class RasterSource:
    """A validated source image: size, georeference, chosen bands, nodata handling and stretch.

    Build it with :func:`open_source`. Use it as a context manager (or call :meth:`close`)
    to release the dataset handle; reads reopen it lazily when needed.

    Attributes:
        path: the file.
        width, height: pixel size.
        count: number of bands in the file.
        dtype: the bands' numpy dtype name.
        crs: ``rasterio.crs.CRS`` or ``None`` when the image has no georeference (a CRS without a
            geotransform counts as none).
        gcps: ``(ground control points, their CRS)`` when those are the image's only georeference.
        rpcs: the image's rational polynomial coefficients (``rasterio.rpc.RPC``) or ``None``.
        transform: the affine pixel→map transform (identity when not georeferenced).
        nodata: the declared nodata value or ``None``.
        bands: the 1-based bands read as display RGB (1 band = grey, repeated; a palette band
            is expanded through its colour table).
        palette: that colour table as an ``N x 3`` uint8 lookup, or ``None``.
        stretch: per display band ``[lo, hi]`` mapped to 0..255, or ``None`` (uint8 as is).
        has_mask: whether some pixels may be invalid (nodata, alpha, internal mask, float NaN).
    """

    def __init__(self, path: str, bands: Sequence[int] | None = None, stretch: list[list[float]] | None = None,
                 compute_stretch: bool = True) -> None:
        self.path = str(path)
        self._ds: rasterio.DatasetReader | None = None
        self._no_geotransform = False
        ds = self._open()
        self.width, self.height, self.count = ds.width, ds.height, ds.count
        self.dtype = ds.dtypes[0]
        self.crs = ds.crs
        self.transform = ds.transform
        gcps, gcp_crs = ds.gcps
        # georeferenced by ground control points only (raw L1 / SAR geometry): no affine transform
        self.gcps = (list(gcps), gcp_crs) if self.crs is None and gcps else None
        # rational polynomial coefficients (raw optical L1): kept in every raster written, whatever else there is
        self.rpcs = ds.rpcs
        self._check_georeference(len(gcps))
        self.nodata = ds.nodata
        self.res = ds.res
        self.driver = ds.driver
        if self.width == 0 or self.height == 0 or self.count == 0:
            raise InputError(f"{self.path} is empty ({self.width}x{self.height}, {self.count} bands)", "give a non-empty image")
        if bands:
            bad = [b for b in bands if b > self.count]
            if bad:
                raise InputError(
                    f"band {bad[0]} is out of range: {os.path.basename(self.path)} has {self.count} band(s)",
                    f"give --bands between 1 and {self.count}",
                )
            self.bands = tuple(int(b) for b in bands)
        else:
            self.bands = default_bands(ds)
        flags = [ds.mask_flag_enums[b - 1] for b in self.bands]
        self.has_mask = not all(f == [MaskFlags.all_valid] for f in flags) or np.dtype(self.dtype).kind in "fc"
        self.palette = palette_lut(ds, self.bands)
        self.stretch = None if self.palette is not None else stretch
        if compute_stretch and self.stretch is None and self.palette is None:
            from geoseg.raster.stretch import scene_stretch

            self.stretch = scene_stretch(self)

    def _check_georeference(self, n_gcps: int) -> None:
        """Warn about a scene placed on the ground other than by a CRS and a geotransform, and drop a CRS without one.

        A CRS with no geotransform (GeoKeys without tie point and pixel scale; a PNG whose ``.aux.xml``
        holds only an SRS) used to be taken at face value with GDAL's stand-in transform: 1 m pixels
        at the CRS's origin, y pointing south, so polygons landed in the Gulf of Guinea and areas
        were "m²" of nothing. It is treated as not georeferenced instead.
        """
        name = os.path.basename(self.path)
        if self.crs is not None and self._no_geotransform:
            log.warning("%s has a CRS (%s) but no geotransform: it is segmented in pixel space and the outputs carry "
                        "no CRS (set its corners first, e.g. gdal_edit.py -a_ullr ULX ULY LRX LRY)",
                        name, self.crs.to_string())
            self.crs = None
        if self.gcps:
            log.warning("%s is georeferenced by %d ground control points only: the rasters written carry the same "
                        "points and polygons are in pixel coordinates (warp it first, e.g. gdalwarp -tps, for map "
                        "coordinates)", name, n_gcps)
        elif self.crs is None and self.rpcs is not None:
            log.warning("%s is georeferenced by RPCs only: the rasters written carry the same coefficients and "
                        "polygons are in pixel coordinates (orthorectify it first, e.g. gdalwarp -rpc with a DEM, "
                        "for map coordinates)", name)

    # -- handle management -----------------------------------------------------------
    def _open(self) -> rasterio.DatasetReader:
        if self._ds is None or self._ds.closed:
            # /vsi... paths are GDAL virtual files (e.g. an array opened by the predictor)
            if not self.path.startswith("/vsi") and not os.path.exists(self.path):
                raise InputError(f"image {self.path} does not exist", "check the path")
            if os.path.isdir(self.path):
                raise InputError(f"{self.path} is a folder, not an image", "give the path of a GeoTIFF, JPG or PNG file")
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", NotGeoreferencedWarning)
                    self._ds = rasterio.open(self.path)
            except RasterioIOError as exc:
                first = str(exc).splitlines()[0] if str(exc) else "unknown format"
                raise InputError(
                    f"cannot read image {self.path} ({first})", "give a GeoTIFF, JPG or PNG that GDAL can open"
                ) from None
            # rasterio's sign that GDAL has no geotransform (nor GCPs or RPCs): its transform is a stand-in
            self._no_geotransform = any(issubclass(w.category, NotGeoreferencedWarning) for w in caught)
            for w in caught:
                if not issubclass(w.category, NotGeoreferencedWarning):
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return self._ds

    @property
    def dataset(self) -> rasterio.DatasetReader:
        """The open rasterio dataset (reopened on demand, e.g. after unpickling)."""
        return self._open()

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None

    def __enter__(self) -> RasterSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_ds"] = None
        return state

    # -- facts -----------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)``."""
        return self.height, self.width

    @property
    def is_georeferenced(self) -> bool:
        return self.crs is not None

    @property
    def is_projected(self) -> bool:
        return self.crs is not None and bool(self.crs.is_projected)

    def profile_for_output(self) -> dict:
        """CRS and transform (or ground control points), and RPCs, to copy into outputs (none for non-georeferenced images)."""
        out: dict = {"width": self.width, "height": self.height}
        if self.crs is not None:
            out["crs"] = self.crs
            out["transform"] = self.transform
        elif self.gcps:
            out["gcps"], out["crs"] = self.gcps  # rasterio writes this CRS as the points' CRS
        elif not self.transform.is_identity:
            out["transform"] = self.transform
        if self.rpcs is not None:
            out["rpcs"] = self.rpcs
        return out

    # -- reading ---------------------------------------------------------------------
    def _explained(self, read, *args, **kwargs) -> np.ndarray:
        """``read(*args, **kwargs)``; a read GDAL fails (a truncated or corrupt file) is one :class:`InputError`
        with GDAL's own reason, which rasterio's "Read failed. See previous exception" leaves in the chain."""
        from geoseg.raster.read_errors import unreadable

        try:
            return read(*args, **kwargs)
        except RasterioIOError as exc:
            err = unreadable(os.path.basename(self.path), exc)
            if err is None:
                raise
        raise err  # outside the except block: no GDAL exception chain to pickle (Dask workers)

    def read_raw(self, window: Window, out_shape: tuple[int, int] | None = None) -> np.ndarray:
        """Read the chosen bands of ``window`` as ``C x h x w`` in the source dtype (decimated to ``out_shape``)."""
        ds = self._open()
        kw: dict = {}
        if out_shape is not None and tuple(out_shape) != (int(window.height), int(window.width)):
            # colour-table indices are labels: averaging two of them names a third colour
            resampling = Resampling.nearest if self.palette is not None else Resampling.bilinear
            kw = {"out_shape": (len(self.bands), int(out_shape[0]), int(out_shape[1])), "resampling": resampling}
        with rasterio.Env(**GDAL_ENV):
            data = self._explained(ds.read, list(self.bands), window=window, **kw)
        if self.palette is not None:
            return np.transpose(self.palette[data[0]], (2, 0, 1))
        if np.iscomplexobj(data):  # SAR single-look complex: the amplitude is the picture
            return np.abs(data).astype(np.float32)
        return data

    def read_valid(self, window: Window, out_shape: tuple[int, int] | None = None,
                   raw: np.ndarray | None = None) -> np.ndarray:
        """A boolean ``h x w`` mask of valid pixels (``True`` everywhere when the source has no mask)."""
        h, w = out_shape if out_shape is not None else (int(window.height), int(window.width))
        if not self.has_mask:
            return np.ones((h, w), dtype=bool)
        ds = self._open()
        kw: dict = {}
        if (h, w) != (int(window.height), int(window.width)):
            kw = {"out_shape": (len(self.bands), h, w), "resampling": Resampling.nearest}
        with rasterio.Env(**GDAL_ENV):
            masks = self._explained(ds.read_masks, list(self.bands), window=window, **kw)
        # as rasterio's dataset_mask(): a pixel is nodata only when every chosen band is
        valid = np.any(masks > 0, axis=0)
        if np.dtype(self.dtype).kind in "fc":
            if raw is None or raw.shape[1:] != (h, w):
                raw = self.read_raw(window, (h, w))
            valid &= np.any(np.isfinite(raw), axis=0)
        return valid

    def any_valid(self, window: Window, chunk: int = 1024) -> bool:
        """Whether ``window`` holds at least one valid (not nodata) pixel, at full resolution.

        Read in ``chunk``-pixel squares that stop at the first valid pixel, so memory stays flat
        whatever the window's size: a decimated read could miss a small valid area.
        """
        from geoseg.raster.tiling import intersect, iter_blocks

        win = intersect(window, Window(0, 0, self.width, self.height))
        if win is None:
            return False
        if not self.has_mask:
            return True
        return any(self.read_valid(Window(win.col_off + b.col_off, win.row_off + b.row_off, b.width, b.height)).any()
                   for b in iter_blocks(int(win.width), int(win.height), chunk))

    def read_rgb(self, window: Window | None = None, out_shape: tuple[int, int] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Read ``window`` (whole image when ``None``) as display RGB.

        Returns:
            ``(rgb, valid)``: ``h x w x 3`` uint8 with invalid pixels filled by
            :func:`fill_invalid`, and the boolean validity mask. ``out_shape`` reads a
            decimated version (GDAL uses overviews when present).
        """
        if window is None:
            window = Window(0, 0, self.width, self.height)
        raw = self.read_raw(window, out_shape)
        valid = self.read_valid(window, raw.shape[1:], raw=raw)
        return fill_invalid(to_display_rgb(raw, self.stretch), valid), valid


def fill_invalid(rgb: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``rgb`` with every nodata pixel given the colour of the nearest valid pixel (in place).

    Segmenters see no nodata mask, so what nodata looks like matters: painted black, a rotated
    scene's collar is a dark object with a strong edge, and text answers ("the water" above all)
    were drawn to that edge. Extending the valid pixels outwards adds no edge and no colour the
    scene lacks; the answers are cut to ``valid`` afterwards. A window with no valid pixel is black.
    """
    if not valid.any():
        rgb[...] = 0
        return rgb
    if valid.all():
        return rgb
    from scipy.ndimage import distance_transform_edt

    iy, ix = distance_transform_edt(~valid, return_distances=False, return_indices=True)
    hole = ~valid
    rgb[hole] = rgb[iy[hole], ix[hole]]
    return rgb


def to_display_rgb(raw: np.ndarray, stretch: Sequence[Sequence[float]] | None) -> np.ndarray:
    """Turn ``C x h x w`` source data (C = 1 or 3) into ``h x w x 3`` uint8 with a scene-level stretch.

    Uses :func:`geoseg.data.imagery.apply_stretch` so every part of geoseg renders pixels alike.
    """
    from geoseg.data.imagery import apply_stretch

    data = np.transpose(raw, (1, 2, 0))
    rgb = apply_stretch(data, stretch)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb[:, :, :3])


def open_source(path: str | os.PathLike, bands: str | Sequence[int] | None = None,
                stretch: list[list[float]] | None = None) -> RasterSource:
    """Open and validate an image: existence, format, ``--bands`` range, and a non-empty valid area.

    Args:
        path: GeoTIFF (any band count and dtype, with or without CRS/nodata), JPG or PNG.
        bands: 1-based band indices (``"4,3,2"`` or a sequence); default: :func:`default_bands` (declared
            or named R,G,B, else the first three, else grey).
        stretch: a known scene stretch to reuse (e.g. computed once by a batch driver);
            computed from an overview or a sample of windows otherwise.

    Raises:
        InputError: one-line message naming the problem and the fix.
    """
    return RasterSource(os.fspath(path), parse_bands(bands), stretch=stretch)
