"""Routes that answer prompts: ``POST /api/images/{id}/predict`` and the mask downloads."""

from __future__ import annotations

import base64
import time
from typing import Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from geoseg.serve import outputs
from geoseg.serve.context import ServerContext
from geoseg.serve.exports import check_export_options, downloads, filenames, mask_file, mask_geojson
from geoseg.serve.prompting import empty_answer_hint, prompt_from_request
from geoseg.serve.schemas import MASK_FILES, PredictRequest, PredictResponse, error_responses
from geoseg.unified.instruction_check import check_instructions

SIMPLIFY_HELP = ("GeoJSON only: simplify the polygons together as one coverage (valid, no overlaps), tolerance "
                 "in pixels: 1 removes the pixel staircases, 0 (default) keeps the exact pixel outlines")
MIN_AREA_HELP = ("GeoJSON only: fill holes and drop polygons smaller than this, in the `area` unit (m² for a "
                 "georeferenced image, pixels otherwise), measured after `simplify`; 0 (default) keeps all")


def mask_routes(ctx: ServerContext) -> APIRouter:
    """The predict and download routes of one server."""
    router = APIRouter()
    store = ctx.store

    @router.post("/api/images/{image_id}/predict", response_model=PredictResponse,
              responses={200: {"content": MASK_FILES,
                               "description": "JSON (default), or with ?format=png|geojson|tif that file"},
                         **error_responses(404, 413, 422, 500)})
    def predict(image_id: str, req: PredictRequest,
                format: Literal["json", "png", "geojson", "tif"] = Query("json")) -> Any:  # noqa: A002
        """Segment what the prompt asks for; the image's cached embedding is reused."""
        t0 = time.perf_counter()
        sess = store.get(image_id)
        prompt = prompt_from_request(req, sess)
        shaped = format if format != "json" else ("geojson" if "geojson" in req.include else "json")
        check_export_options(shaped, req.simplify, req.min_area)  # before the model runs
        stored, cached, predict_ms = store.predict(sess, prompt)
        if format != "json":
            return mask_file(sess, stored, format, req.simplify, req.min_area)
        mask = stored.mask
        area = int(mask.sum())
        bbox = None
        if area:
            import numpy as np

            rows, cols = np.any(mask, axis=1), np.any(mask, axis=0)
            r = np.flatnonzero(rows)
            c = np.flatnonzero(cols)
            bbox = [int(c[0]), int(r[0]), int(c[-1]) + 1, int(r[-1]) + 1]
        resp: dict[str, Any] = {
            "image_id": image_id, "mask_id": stored.mask_id, "score": stored.score, "area_px": area, "bbox": bbox,
            "prompt": prompt.describe(), "embedding_cached": cached, "provenance": stored.provenance,
            "downloads": downloads(image_id, stored.mask_id), "filenames": filenames(sess.record.name, stored.mask_id),
            "hint": None if area else empty_answer_hint(sess.segmenter or store.prototype, sess.record, prompt),
            # a text unlike the model's training instructions: said, as geoseg segment says it
            "notes": check_instructions(sess.segmenter or store.prototype, [prompt]).unfamiliar,
        }
        if "rle" in req.include:
            resp["rle"] = outputs.rle_json(mask)
        if "geojson" in req.include:
            resp["geojson"] = mask_geojson(sess, stored, req.simplify, req.min_area)
        if "overlay" in req.include:
            resp["overlay_png"] = "data:image/png;base64," + base64.b64encode(outputs.overlay_png(mask)).decode()
        resp["timing_ms"] = {"predict": round(predict_ms, 2), "total": round((time.perf_counter() - t0) * 1000, 2),
                             "embed": 0.0 if cached else round(sess.embed_ms, 2)}  # spent in this request
        return resp

    @router.get("/api/images/{image_id}/masks/{mask_id}.{fmt}", response_class=Response,
             responses={200: {"content": MASK_FILES, "description": "the mask as PNG, GeoJSON or GeoTIFF"},
                        **error_responses(404, 410, 422, 500)})
    def download(image_id: str, mask_id: str, fmt: Literal["png", "geojson", "tif"],
                 simplify: float = Query(0.0, description=SIMPLIFY_HELP),
                 min_area: float = Query(0.0, description=MIN_AREA_HELP)) -> Response:
        """A predicted mask as PNG (0/255), GeoJSON polygons or a GeoTIFF with the image's georeference.

        ``simplify`` and ``min_area`` shape the GeoJSON's polygons as ``geoseg segment --simplify``
        / ``--min-area`` do; a negative or non-finite value, or either one on a .png / .tif, is
        answered 422. Each image keeps its last masks only (16): an older one is answered 410 with
        ``code`` ``mask_dropped`` and the prompt to predict it again.
        """
        check_export_options(fmt, simplify, min_area)
        sess = store.get(image_id)
        return mask_file(sess, store.get_mask(sess, mask_id), fmt, simplify, min_area)

    return router
