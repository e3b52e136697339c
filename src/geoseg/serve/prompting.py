"""A predict request's prompt as pixels of its image: lon/lat converted, checked to lie inside it."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from rasterio._err import CPLE_BaseError  # PROJ's errors (rasterio exports no public name)
from rasterio.errors import RasterioError

from geoseg.errors import PromptError, reason
from geoseg.prompts import Prompt
from geoseg.segmenters import Segmenter
from geoseg.serve.images import ImageRecord
from geoseg.serve.schemas import PredictRequest
from geoseg.serve.sessions import Session

XY = tuple[float, float]
Box = tuple[float, float, float, float]


def prompt_from_request(req: PredictRequest, sess: Session) -> Prompt:
    """The request's prompt in pixels of the session's image; a one-line :class:`PromptError` when it cannot apply."""
    rec = sess.record
    points = [tuple(p) for p in req.points]
    box = tuple(req.box) if req.box is not None else None
    if req.coords == "lonlat":
        if rec.geo is None:
            raise PromptError("lon/lat coordinates given for an image without a georeference",
                              "send pixel coordinates (coords='pixel')")
        lonlat_points, lonlat_box = points, box
        points = _to_pixel(rec, points)
        box = _box_to_pixel(rec, box)
        _check_lonlat_inside(rec, lonlat_points, points, lonlat_box, box)
    labels = tuple(req.labels) if req.labels is not None else (1,) * len(points)
    prompt = Prompt(points=tuple(points), labels=labels, box=box, text=req.text, task=req.task)
    if prompt.is_empty:
        raise PromptError("the prompt is empty", "give points, a box or a text instruction")
    try:
        prompt.check_inside(rec.width, rec.height)
    except PromptError as exc:  # the CLI's fix names --prompt-crs; say what an API client can do
        raise PromptError(exc.problem, "send pixel coordinates inside the image, or lon/lat with "
                          "coords='lonlat' for a georeferenced image") from None
    return prompt


#: :data:`geoseg.pipeline.NODATA_PROMPT_HINT` worded for an API client (the command's names --prompt-crs)
NODATA_PROMPT_HINT = ("it lies on nodata pixels only; move it onto the image's valid data (check coords if "
                      "lon/lat were meant: coords='lonlat' takes [lon, lat] in degrees, coords='pixel' image pixels)")


def empty_answer_hint(segmenter: Segmenter, record: ImageRecord, prompt: Prompt) -> str | None:
    """The advice a client gets with an empty mask, as ``geoseg segment`` gives it (:func:`geoseg.pipeline.empty_answer_hints`).

    A point or box on the image's nodata pixels only (a rotated scene's collar, its nodata value)
    is told so (:func:`geoseg.pipeline.prompt_on_nodata`, asked of the open image): no backend can
    answer there, since answers never include nodata, so the backend's advice (another class,
    other words) would mislead. Any other prompt gets the backend's advice, or ``None``.
    """
    from geoseg.pipeline import empty_answer_advice

    return empty_answer_advice(segmenter, prompt, record, NODATA_PROMPT_HINT)


LONLAT_FIX = "send [lon, lat] in degrees of EPSG:4326, longitude first, or pixel coordinates with coords='pixel'"


#: what rasterio raises when PROJ cannot transform coordinates
PROJ_ERRORS = (CPLE_BaseError, RasterioError, ValueError)


def _check_lonlat(lonlat: Sequence[XY]) -> None:
    """A :class:`PromptError` for numbers that are no longitude, latitude (before PROJ is asked)."""
    for lon, lat in lonlat:
        if not (-180 <= lon <= 180 and -90 <= lat <= 90):
            raise PromptError(f"({lon:g}, {lat:g}) is not a longitude, latitude: longitude runs from -180 to 180, "
                              "latitude from -90 to 90", LONLAT_FIX)


def _unplaceable(rec: ImageRecord, lonlat: Sequence[XY], why: str) -> PromptError:
    """The error for lon/lat that PROJ cannot place in the image's CRS, in the client's numbers."""
    return PromptError(f"lon/lat {', '.join(f'({x:g}, {y:g})' for x, y in lonlat[:4])} cannot be placed in "
                       f"the image's CRS {rec.geo.crs}: {why}",
                       "send lon/lat inside the image, or pixel coordinates with coords='pixel'")


def _to_pixel(rec: ImageRecord, lonlat: Sequence[XY]) -> list[XY]:
    """Exact lon/lat -> source CRS -> pixel; a :class:`PromptError` for numbers that are no lon/lat or cannot be projected."""
    from rasterio.transform import Affine
    from rasterio.warp import transform as warp_transform

    if not lonlat:
        return []
    _check_lonlat(lonlat)
    inv = ~Affine(*rec.geo.transform)
    try:
        xs, ys = warp_transform("EPSG:4326", rec.geo.crs, [p[0] for p in lonlat], [p[1] for p in lonlat])
    except PROJ_ERRORS as exc:  # PROJ refuses points its projection does not cover
        raise _unplaceable(rec, lonlat, reason(exc)) from None
    return [tuple(inv @ (x, y)) for x, y in zip(xs, ys)]


def _fits_swapped(check: Callable[[], bool]) -> bool:
    """Whether the client's numbers, read the other way round, land on the image (``False`` when they cannot)."""
    try:
        return check()
    except PromptError:
        return False


def _box_to_pixel(rec: ImageRecord, box: Box | None) -> Box | None:
    """A lon/lat box in pixels: the bounding box of the ground it covers, its edges densified as
    ``geoseg segment --prompt-crs EPSG:4326`` does (:func:`geoseg.georef.box_to_pixels`), so a box
    covers the same pixels through the API as through the command."""
    from rasterio.transform import Affine

    from geoseg.georef import box_to_pixels

    if box is None:
        return None
    corners = [(box[0], box[1]), (box[2], box[3])]
    _check_lonlat(corners)
    try:
        px = box_to_pixels(box, "EPSG:4326", rec.geo.crs, Affine(*rec.geo.transform))
    except PROJ_ERRORS as exc:
        raise _unplaceable(rec, corners, reason(exc)) from None
    if not all(math.isfinite(v) for v in px):
        raise _unplaceable(rec, corners, "its projection does not cover them")
    return px


def _inside(rec: ImageRecord, xy: XY) -> bool:
    return 0 <= xy[0] < rec.width and 0 <= xy[1] < rec.height


def _overlaps(rec: ImageRecord, box: Box) -> bool:
    return box[2] > 0 and box[3] > 0 and box[0] < rec.width and box[1] < rec.height


def _check_lonlat_inside(rec: ImageRecord, lonlat_points: Sequence[XY], points: Sequence[XY],
                         lonlat_box: Box | None, box: Box | None) -> None:
    """Refuse lon/lat that misses the image in the client's own numbers, with the image's extent.

    A message in the pixels they were converted to would name coordinates the client never sent;
    and numbers that land inside the image once swapped were sent as (lat, lon): say so.
    """
    lons = [c[0] for c in rec.geo.corners_lonlat]
    lats = [c[1] for c in rec.geo.corners_lonlat]
    extent = (f"the image spans lon {min(lons):.5f} to {max(lons):.5f}, "
              f"lat {min(lats):.5f} to {max(lats):.5f}")
    swap_fix = "the numbers look like latitude first: send each point as [lon, lat], longitude first as in GeoJSON"
    other_fix = "send lon/lat inside the image, or pixel coordinates with coords='pixel'"
    for (lon, lat), xy in zip(lonlat_points, points):
        if not _inside(rec, xy):
            swapped = _fits_swapped(lambda lon=lon, lat=lat: _inside(rec, _to_pixel(rec, [(lat, lon)])[0]))
            raise PromptError(f"point (lon {lon:g}, lat {lat:g}) lies outside the image: {extent}",
                              swap_fix if swapped else other_fix)
    if lonlat_box is not None and box is not None and not _overlaps(rec, box):
        b = lonlat_box
        swapped = _fits_swapped(lambda: _overlaps(rec, _box_to_pixel(rec, (b[1], b[0], b[3], b[2]))))
        raise PromptError(f"box (lon {b[0]:g} to {b[2]:g}, lat {b[1]:g} to {b[3]:g}) does not overlap the image: "
                          f"{extent}", swap_fix.replace("each point as [lon, lat]", "the box as "
                                                        "[lon0, lat0, lon1, lat1]") if swapped else other_fix)
