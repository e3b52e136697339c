"""A predict request's prompt as pixels of its image: lon/lat converted, checked to lie inside it."""

from __future__ import annotations

from geoseg.errors import PromptError
from geoseg.prompts import Prompt
from geoseg.serve.images import ImageRecord
from geoseg.serve.schemas import PredictRequest
from geoseg.serve.sessions import Session


def prompt_from_request(req: PredictRequest, sess: Session) -> Prompt:
    """The request's prompt in pixels of the session's image; a one-line :class:`PromptError` when it cannot apply."""
    rec = sess.record
    points = [tuple(p) for p in req.points]
    box = tuple(req.box) if req.box is not None else None
    if req.coords == "lonlat":
        if rec.geo is None:
            raise PromptError("lon/lat coordinates given for an image without a georeference",
                              "send pixel coordinates (coords='pixel')")
        points, box = _lonlat_to_pixel(rec, points, box)
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


def _lonlat_to_pixel(rec: ImageRecord, points: list[tuple[float, float]],
                     box: tuple[float, float, float, float] | None):
    """Exact lon/lat -> source CRS -> pixel for points and a box (the box as the bounds of its corners)."""
    from rasterio.transform import Affine
    from rasterio.warp import transform as warp_transform

    inv = ~Affine(*rec.geo.transform)

    def conv(lonlat: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if not lonlat:
            return []
        xs, ys = warp_transform("EPSG:4326", rec.geo.crs, [p[0] for p in lonlat], [p[1] for p in lonlat])
        return [tuple(inv @ (x, y)) for x, y in zip(xs, ys)]

    px_points = conv(points)
    px_box = None
    if box is not None:
        corners = conv([(box[0], box[1]), (box[2], box[1]), (box[2], box[3]), (box[0], box[3])])
        cx = [c[0] for c in corners]
        cy = [c[1] for c in corners]
        px_box = (min(cx), min(cy), max(cx), max(cy))
    return px_points, px_box
