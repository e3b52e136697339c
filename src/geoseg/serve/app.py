"""The FastAPI application: a REST API for set-once/prompt-many segmentation, and the map page.

Endpoints (the OpenAPI schema is at ``/openapi.json``):

- ``POST /api/images`` (multipart ``file``, optional ``bands``): upload an image; its
  embedding is computed once here and reused by every prompt.
- ``POST /api/images/reference`` (JSON ``{"path": ...}``): open a file on the server,
  allowed only under the ``image_roots`` the server was started with.
- ``GET /api/images``, ``GET /api/images/{id}``, ``DELETE /api/images/{id}``,
  ``GET /api/images/{id}/preview.jpg``.
- ``POST /api/images/{id}/predict`` (JSON prompt): returns the mask as COCO RLE, the
  polygons as GeoJSON, optionally an overlay PNG; ``?format=png|geojson|tif`` returns
  that file instead of JSON.
- ``GET /api/images/{id}/masks/{mask_id}.{png|geojson|tif}``: downloads.
- ``GET /`` the web page; ``GET /api/health``.

Bad requests get a 4xx answer whose ``detail`` is one line naming the problem and the
fix; the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from geoseg._version import __version__
from geoseg.errors import GeosegError, InputError, MissingExtraError, PromptError
from geoseg.prompts import Prompt
from geoseg.segmenters import Segmenter, build_segmenter
from geoseg.serve import outputs
from geoseg.serve.images import ImageRecord, ImageTooLargeError, image_id_for, open_image
from geoseg.serve.limits import BodyLimitMiddleware, BodyTooLargeError
from geoseg.serve.sessions import Session, SessionStore, StoredMask, UnknownImageError, UnknownMaskError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

Coord = Annotated[float, Field(allow_inf_nan=False)]


# -- request and response models --------------------------------------------------------
class PredictRequest(BaseModel):
    """A prompt on an open image. Coordinates are pixels ``(x, y)`` unless ``coords`` is ``lonlat``."""

    model_config = ConfigDict(extra="forbid")

    points: list[tuple[Coord, Coord]] = Field(default_factory=list, max_length=64,
                                              description="(x, y) points; pixel or lon/lat per `coords`")
    labels: list[Literal[0, 1]] | None = Field(None, max_length=64,
                                               description="1 positive, 0 negative; default all positive")
    box: tuple[Coord, Coord, Coord, Coord] | None = Field(None, description="x0, y0, x1, y1")
    text: str | None = Field(None, max_length=2000, description="a referring expression or reasoning query")
    task: Literal["interactive", "referring", "reasoning"] | None = None
    coords: Literal["pixel", "lonlat"] = "pixel"
    include: list[Literal["rle", "geojson", "overlay"]] = Field(
        default_factory=lambda: ["rle", "geojson"], description="what the JSON answer carries")


class ReferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(..., max_length=4096)
    bands: list[int] | None = Field(None, max_length=3)


class ImageInfo(BaseModel):
    image_id: str
    name: str
    width: int
    height: int
    bands: int
    dtype: str
    georeferenced: bool
    geo: dict | None
    embedding_cached: bool = False
    embed_ms: float = 0.0


class PredictResponse(BaseModel):
    image_id: str
    mask_id: str
    score: float
    area_px: int
    bbox: list[int] | None = Field(None, description="x0, y0, x1, y1 (exclusive) of the mask in pixels")
    prompt: str
    embedding_cached: bool
    timing_ms: dict[str, float]
    rle: dict | None = None
    geojson: dict | None = None
    overlay_png: str | None = Field(None, description="data: URL of a transparent PNG colouring the mask")
    provenance: dict
    downloads: dict[str, str]
    hint: str | None = Field(None, description="when the mask is empty: the backend's advice (what it can find)")


# -- error handling ---------------------------------------------------------------------
def _status_for(exc: GeosegError) -> int:
    if isinstance(exc, (UnknownImageError, UnknownMaskError)):
        return 404
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, PromptError):
        return 422
    if isinstance(exc, PermissionError):
        return 403
    if isinstance(exc, MissingExtraError):
        return 501
    return 400


class ForbiddenPathError(GeosegError, PermissionError):
    """A referenced path outside the server's image roots."""


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) + " (see the schema at /openapi.json)"


# -- the app ----------------------------------------------------------------------------
def create_app(
    backend: str = "unified",
    checkpoint: str | None = None,
    *,
    segmenter_factory: Callable[[], Segmenter] | None = None,
    max_upload_mb: float = 200.0,
    max_json_kb: float = 256.0,
    max_pixels: int = 64_000_000,
    max_images: int = 8,
    image_roots: Sequence[str | os.PathLike] = (),
    upload_dir: str | os.PathLike | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        backend: registry name of the segmenter (``geoseg.segmenters``).
        checkpoint: weights for the backend (passed as ``checkpoint=``).
        segmenter_factory: build the segmenter yourself (overrides ``backend``).
        max_upload_mb: uploads above this get 413.
        max_json_kb: JSON bodies above this get 413.
        max_pixels: images with more pixels get 413 (use ``geoseg segment`` for big scenes).
        max_images: open images kept with their embeddings (least recently used dropped).
        image_roots: folders whose files ``POST /api/images/reference`` may open; none = disabled.
        upload_dir: where uploads are kept while open (default: a temporary folder).
    """
    if segmenter_factory is None:
        kwargs = {"checkpoint": checkpoint} if checkpoint else {}

        def segmenter_factory() -> Segmenter:
            return build_segmenter(backend, **kwargs)

    roots = [Path(r).resolve() for r in image_roots]
    updir = Path(upload_dir) if upload_dir else Path(tempfile.mkdtemp(prefix="geoseg-serve-"))
    updir.mkdir(parents=True, exist_ok=True)

    def _remove_upload(record: ImageRecord) -> None:
        path = Path(record.source_path)
        if path.parent.resolve() == updir.resolve() and path.exists():
            path.unlink()

    store = SessionStore(segmenter_factory, max_images=max_images, on_drop=_remove_upload)
    upload_limit = int(max_upload_mb * 1024 * 1024)

    app = FastAPI(
        title="geoseg",
        version=__version__,
        description="Instruction-driven segmentation of remote-sensing imagery: set an image once, "
        "prompt it many times with points, boxes or text.",
        docs_url=None,  # Swagger UI loads from a CDN; the schema itself is at /openapi.json
        redoc_url=None,
    )
    app.state.store = store
    app.state.backend_name = backend
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=lambda method, path: upload_limit if (method == "POST" and path == "/api/images")
        else int(max_json_kb * 1024),
    )

    @app.exception_handler(GeosegError)
    async def _geoseg_error(_: Request, exc: GeosegError) -> JSONResponse:
        return _error(_status_for(exc), str(exc), problem=exc.problem, fix=exc.fix)

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(_: Request, exc: BodyTooLargeError) -> JSONResponse:
        return _error(413, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLargeError):  # raised while FastAPI parsed a streamed body
            return _error(413, str(exc.__cause__))
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # keep serving, say what broke
        log.exception("internal error")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    # -- helpers -------------------------------------------------------------------------
    def _info(sess: Session, cached: bool = True) -> ImageInfo:
        return ImageInfo(**sess.record.to_dict(), embedding_cached=cached, embed_ms=round(sess.embed_ms, 2))

    def _open(path: Path, name: str, bands: tuple[int, ...] | None, image_id: str) -> ImageInfo:
        try:
            existing = store.get(image_id)
        except UnknownImageError:
            existing = None
        if existing is not None:
            return _info(existing, cached=store.ensure_embedding(existing))
        record: ImageRecord = open_image(path, name=name, bands=bands, max_pixels=max_pixels, image_id=image_id)
        sess = store.add(record, embed=False)
        cached = store.ensure_embedding(sess)
        return _info(sess, cached)

    def _parse_bands(bands: str | list[int] | None) -> tuple[int, ...] | None:
        if bands is None or bands == "":
            return None
        if isinstance(bands, str):
            try:
                return tuple(int(b) for b in bands.split(","))
            except ValueError:
                raise InputError(f"cannot read bands {bands!r}", "give 1-based indices such as 4,3,2") from None
        return tuple(bands)

    def _prompt(req: PredictRequest, sess: Session) -> Prompt:
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

    def _downloads(image_id: str, mask_id: str) -> dict[str, str]:
        base = f"/api/images/{image_id}/masks/{mask_id}"
        return {"png": base + ".png", "geojson": base + ".geojson", "tif": base + ".tif"}

    def _geojson(sess: Session, stored: StoredMask) -> dict:
        feats = outputs.mask_features(stored.mask, sess.record, stored.prompt.describe(), stored.score)
        return outputs.feature_collection(feats, sess.record, stored.provenance)

    def _file(sess: Session, stored: StoredMask, fmt: str) -> Response:
        stem = f"{Path(sess.record.name).stem}_{stored.mask_id}"
        if fmt == "png":
            return Response(outputs.mask_png(stored.mask), media_type="image/png",
                            headers={"Content-Disposition": f'attachment; filename="{stem}.png"'})
        if fmt == "geojson":
            body = json.dumps(_geojson(sess, stored)).encode()
            return Response(body, media_type="application/geo+json",
                            headers={"Content-Disposition": f'attachment; filename="{stem}.geojson"'})
        if fmt == "tif":
            tags = {"prompt": stored.prompt.describe(), "geoseg_provenance": stored.provenance,
                    "model": stored.provenance.get("model", ""), "geoseg_version": __version__}
            return Response(outputs.mask_geotiff(stored.mask, sess.record, tags), media_type="image/tiff",
                            headers={"Content-Disposition": f'attachment; filename="{stem}.tif"'})
        raise InputError(f"unknown format {fmt!r}", "use png, geojson or tif")

    # -- routes --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/health")
    def health() -> dict:
        """Liveness, backend and limits."""
        return {
            "status": "ok", "version": __version__, "backend": backend,
            "open_images": len(store.list()),
            "limits": {"max_upload_mb": max_upload_mb, "max_json_kb": max_json_kb, "max_pixels": max_pixels,
                       "max_images": max_images, "reference_enabled": bool(roots)},
        }

    @app.get("/api/backend")
    def backend_info() -> dict:
        """The loaded backend: name, prompt kinds it takes, provenance (loads it on first call)."""
        proto = store.prototype
        return {"name": proto.name, "capabilities": sorted(proto.capabilities), "provenance": proto.provenance()}

    @app.post("/api/images", status_code=201, response_model=ImageInfo)
    def upload_image(file: UploadFile = File(..., description="GeoTIFF, JPG or PNG"),
                     bands: str | None = Form(None, description="1-based R,G,B band indices, e.g. 4,3,2")) -> ImageInfo:
        """Upload an image and compute its embedding once (same file again = same id, cached)."""
        band_t = _parse_bands(bands)
        name = Path(file.filename or "image").name
        fd, tmp = tempfile.mkstemp(dir=updir, suffix=Path(name).suffix or ".bin")
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    size += len(chunk)
                    if size > upload_limit:
                        raise BodyTooLargeError(upload_limit)
                    out.write(chunk)
            if size == 0:
                raise InputError("the uploaded file is empty", "send a GeoTIFF, JPG or PNG file")
            image_id = image_id_for(tmp, band_t)
            final = updir / f"{image_id}{Path(name).suffix.lower()}"
            try:
                store.get(image_id)
                return _open(final, name, band_t, image_id)  # already open: reuse it and its embedding
            except UnknownImageError:
                pass
            os.replace(tmp, final)
            tmp = str(final)  # removed below if it cannot be opened
            info = _open(final, name, band_t, image_id)
            tmp = None
            return info
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    @app.post("/api/images/reference", status_code=201, response_model=ImageInfo)
    def reference_image(req: ReferenceRequest) -> ImageInfo:
        """Open a file already on the server (only under the server's ``--image-root`` folders)."""
        if not roots:
            raise ForbiddenPathError("opening server-side paths is disabled",
                                     "start the server with --image-root DIR, or upload the file")
        path = Path(req.path).resolve()
        if not any(path == r or r in path.parents for r in roots):
            raise ForbiddenPathError(f"{req.path} is outside the allowed image roots",
                                     f"use a file under {', '.join(map(str, roots))}")
        if not path.is_file():
            raise InputError(f"no such file: {req.path}", "check the path")
        band_t = _parse_bands(req.bands)
        return _open(path, path.name, band_t, image_id_for(path, band_t))

    @app.get("/api/images")
    def list_images() -> list[ImageInfo]:
        """Open images, most recently used last."""
        return [_info(s) for s in store.list()]

    @app.get("/api/images/{image_id}", response_model=ImageInfo)
    def get_image(image_id: str) -> ImageInfo:
        return _info(store.get(image_id))

    @app.delete("/api/images/{image_id}", status_code=204)
    def delete_image(image_id: str) -> Response:
        store.remove(image_id)
        return Response(status_code=204)

    @app.get("/api/images/{image_id}/preview.jpg", response_class=Response)
    def preview(image_id: str, max_side: int = Query(2048, ge=64, le=8192)) -> Response:
        """The display RGB (stretched bands) as JPEG, for the map page."""
        sess = store.get(image_id)
        return Response(outputs.preview_jpeg(sess.record, max_side), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/images/{image_id}/predict", response_model=PredictResponse)
    def predict(image_id: str, req: PredictRequest,
                format: Literal["json", "png", "geojson", "tif"] = Query("json")) -> Any:  # noqa: A002
        """Segment what the prompt asks for; the image's cached embedding is reused."""
        t0 = time.perf_counter()
        sess = store.get(image_id)
        prompt = _prompt(req, sess)
        stored, cached, predict_ms = store.predict(sess, prompt)
        if format != "json":
            return _file(sess, stored, format)
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
            "downloads": _downloads(image_id, stored.mask_id),
            "hint": None if area else store.prototype.empty_answer_hint(prompt),
        }
        if "rle" in req.include:
            resp["rle"] = outputs.rle_json(mask)
        if "geojson" in req.include:
            resp["geojson"] = _geojson(sess, stored)
        if "overlay" in req.include:
            resp["overlay_png"] = "data:image/png;base64," + base64.b64encode(outputs.overlay_png(mask)).decode()
        resp["timing_ms"] = {"predict": round(predict_ms, 2), "total": round((time.perf_counter() - t0) * 1000, 2),
                             "embed": 0.0 if cached else round(sess.embed_ms, 2)}  # spent in this request
        return resp

    @app.get("/api/images/{image_id}/masks/{mask_id}.{fmt}", response_class=Response)
    def download(image_id: str, mask_id: str, fmt: Literal["png", "geojson", "tif"]) -> Response:
        """A predicted mask as PNG (0/255), GeoJSON polygons or a GeoTIFF with the image's georeference."""
        sess = store.get(image_id)
        return _file(sess, store.get_mask(sess, mask_id), fmt)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


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
