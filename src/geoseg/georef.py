"""Prompts given in map coordinates (``--prompt-crs``) turned into pixel coordinates of a scene.

Points are transformed exactly; a box is transformed with densified edges
(:func:`rasterio.warp.transform_bounds`) so a box drawn in EPSG:4326 covers the same
ground in a projected scene, then mapped to the pixel bounding box.
"""

from __future__ import annotations

import math
from dataclasses import replace

import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.errors import CRSError

from geoseg.errors import InputError, PromptError, reason
from geoseg.prompts import Prompt


def parse_crs(value: str | CRS) -> CRS:
    """A CRS from ``EPSG:XXXX``, WKT or PROJ text, or a :class:`PromptError` naming the fix."""
    if isinstance(value, CRS):
        return value
    try:
        with rasterio.Env():  # routes GDAL/PROJ messages to logging instead of stderr
            return CRS.from_user_input(value)
    except (CRSError, ValueError, TypeError):
        raise PromptError(f"unknown CRS {value!r}", "give the prompt CRS as EPSG:XXXX, e.g. --prompt-crs EPSG:4326") from None


def _check_finite(values: list[float], what: str, crs: CRS) -> None:
    if not all(math.isfinite(v) for v in values):
        raise PromptError(
            f"{what} cannot be transformed from {crs.to_string()} to the image CRS",
            "check the coordinates' order (X=easting/longitude first) and the --prompt-crs",
        )


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
    from rasterio.warp import transform_bounds

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
                left, bottom, right, top = transform_bounds(crs, src_crs, box[0], box[1], box[2], box[3], densify_pts=21)
                _check_finite([left, bottom, right, top], "the box", crs)
                corners = [inv @ (x, y) for x in (left, right) for y in (bottom, top)]
                cols = [c[0] for c in corners]
                rows = [c[1] for c in corners]
                box = (min(cols), min(rows), max(cols), max(rows))
    except (CRSError, RasterioError, CPLE_BaseError, ValueError) as exc:
        raise PromptError(
            f"the prompt cannot be transformed from {crs.to_string()} to the image CRS ({reason(exc)})",
            "check --prompt-crs and the coordinates",
        ) from None
    return replace(prompt, points=points, box=box)
