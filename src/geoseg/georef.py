"""Prompts given in map coordinates (``--prompt-crs``) turned into pixel coordinates of a scene.

Points are transformed exactly; a box is transformed with densified edges
(:func:`rasterio.warp.transform_bounds`) so a box drawn in EPSG:4326 covers the same
ground in a projected scene, then mapped to the pixel bounding box (:func:`box_to_pixels`,
which ``geoseg serve`` uses for its lon/lat boxes too).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError

from geoseg.errors import InputError, PromptError, reason
from geoseg.prompts import Prompt

if TYPE_CHECKING:
    from affine import Affine

    from geoseg.raster.io import RasterSource


def parse_crs(value: str | CRS) -> CRS:
    """A CRS from ``EPSG:XXXX``, WKT or PROJ text, or a :class:`PromptError` naming the fix."""
    if isinstance(value, CRS):
        return value
    try:
        with rasterio.Env():  # routes GDAL/PROJ messages to logging instead of stderr
            return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError):
        raise PromptError(f"unknown CRS {value!r}", "give the prompt CRS as EPSG:XXXX, e.g. --prompt-crs EPSG:4326") from None


def why_no_crs(source: RasterSource) -> tuple[str, str]:
    """Why ``source`` has no CRS for geoseg, and how to give it one: ``(why, fix)``, both starting lower case.

    ``why`` starts with the file's name (``"l1.tif is placed on the ground only by 4 ground control
    points (no CRS or geotransform)"``); ``fix`` is the GDAL command that georeferences it. A scene placed
    by GCPs or RPCs alone is on the ground for GDAL, so a plain "the image has no CRS" misled users
    who could see it placed in QGIS.
    """
    name = os.path.basename(source.path)
    stem = os.path.splitext(name)[0]
    if source.gcps:
        return (f"{name} is placed on the ground only by {len(source.gcps[0])} ground control points "
                f"(no CRS or geotransform)",
                f"georeference it first, e.g. gdalwarp -tps -t_srs EPSG:XXXX {name} {stem}_warped.tif")
    if source.rpcs is not None:
        return (f"{name} is placed on the ground only by RPCs (no CRS or geotransform)",
                f"orthorectify it first, e.g. gdalwarp -rpc -to RPC_DEM=dem.tif -t_srs EPSG:XXXX {name} {stem}_ortho.tif")
    crs = source.dataset.crs
    if crs is not None:  # dropped by RasterSource: a CRS without a geotransform places nothing
        return (f"{name} has no CRS geoseg can use (its {crs.to_string()} comes without a geotransform)",
                f"set its corners first, e.g. gdal_edit.py -a_ullr ULX ULY LRX LRY {name}")
    return f"{name} has no CRS", "georeference it first"


def no_crs_error(source: RasterSource, consequence: str, instead: str) -> InputError:
    """The one-line error for map coordinates asked of a scene without CRS: why it has none, what fails, the fixes.

    Args:
        source: the scene (``source.crs is None``).
        consequence: what cannot be done, e.g. ``"--prompt-crs EPSG:4326 coordinates cannot be placed on it"``.
        instead: the way round that needs no CRS, e.g. ``"give pixel coordinates (drop --prompt-crs)"``.
    """
    why, fix = why_no_crs(source)
    return InputError(f"{why}, so {consequence}", f"{fix}, or {instead}")


def _check_finite(values: list[float], what: str, crs: CRS) -> None:
    if not all(math.isfinite(v) for v in values):
        raise PromptError(
            f"{what} cannot be transformed from {crs.to_string()} to the image CRS",
            "check the coordinates' order (X=easting/longitude first) and the --prompt-crs",
        )


#: points per box edge transformed besides its corners: the curve a straight edge becomes in another CRS
BOX_DENSIFY_PTS = 21


def box_to_pixels(box: Sequence[float], box_crs: str | CRS, src_crs: str | CRS, transform: Affine
                  ) -> tuple[float, float, float, float]:
    """The pixel bounding box ``(x0, y0, x1, y1)`` of the ground ``box`` covers in a scene.

    ``box`` (``x0, y0, x1, y1`` in ``box_crs``, ``x`` = easting or longitude) is transformed with
    :data:`BOX_DENSIFY_PTS` points on each edge (:func:`rasterio.warp.transform_bounds`): an edge
    straight in lon/lat is a curve in a projected scene, and its four corners alone can miss
    where it bulges out (many pixels in a polar or a wide scene). The bounds in the scene's CRS
    (``src_crs``, pixel→map ``transform``) are then mapped to pixels. Shared by ``--prompt-crs``
    (:func:`prompt_to_pixels`) and ``geoseg serve``'s lon/lat boxes, so both cover the same ground.

    The result may hold non-finite numbers where PROJ gives them; callers check it and word the error
    for their users, as they do for the errors rasterio and PROJ raise here (``CRSError``,
    ``RasterioError``, ``CPLE_BaseError``, ``ValueError``), which pass through.
    """
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(box_crs, src_crs, box[0], box[1], box[2], box[3],
                                                densify_pts=BOX_DENSIFY_PTS)
    inv = ~transform
    corners = [inv @ (x, y) for x in (left, right) for y in (bottom, top)]
    cols = [c[0] for c in corners]
    rows = [c[1] for c in corners]
    return min(cols), min(rows), max(cols), max(rows)


def prompt_to_pixels(prompt: Prompt, prompt_crs: str | CRS | None, src_crs: CRS | None, transform) -> Prompt:
    """Return ``prompt`` in the scene's pixel coordinates.

    Args:
        prompt: points/box in ``prompt_crs`` map coordinates (``x`` = easting or longitude).
        prompt_crs: the CRS of the prompt's coordinates; ``None`` means they already are pixels.
        src_crs: the scene's CRS (``None`` for a non-georeferenced image).
        transform: the scene's affine pixel→map transform.

    Raises:
        InputError: the scene has no CRS, so map coordinates cannot be placed.
        PromptError: unknown CRS or coordinates that cannot be transformed.
    """
    if prompt_crs is None or (not prompt.points and prompt.box is None):
        return prompt
    crs = parse_crs(prompt_crs)
    if src_crs is None:
        raise InputError(
            "the image has no CRS, so --prompt-crs coordinates cannot be placed on it",
            "give pixel coordinates (drop --prompt-crs) or georeference the image",
        )
    from rasterio.errors import RasterioError
    from rasterio.warp import transform as warp_transform

    inv = ~transform
    points = prompt.points
    try:
        with rasterio.Env():
            if points:
                xs, ys = warp_transform(crs, src_crs, [p[0] for p in points], [p[1] for p in points])
                _check_finite(list(xs) + list(ys), "a point", crs)
                points = tuple(tuple(float(v) for v in inv @ (x, y)) for x, y in zip(xs, ys))
            box = prompt.box
            if box is not None:
                box = box_to_pixels(box, crs, src_crs, transform)
                _check_finite(list(box), "the box", crs)
    except (CRSError, RasterioError, CPLE_BaseError, ValueError) as exc:
        raise PromptError(
            f"the prompt cannot be transformed from {crs.to_string()} to the image CRS ({reason(exc)})",
            "check --prompt-crs and the coordinates",
        ) from None
    return replace(prompt, points=points, box=box)
