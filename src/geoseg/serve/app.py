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
fix; an unexpected error gets a 500 JSON answer on a connection that stays open
(:class:`InternalErrorMiddleware`); the server keeps serving. Uploads are kept in a
temporary folder created on the first upload and removed at shutdown.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from geoseg._version import __version__
from geoseg.errors import GeosegError, InputError, MissingExtraError, PromptError, reason
from geoseg.prompts import Prompt
from geoseg.segmenters import Segmenter, build_segmenter
from geoseg.serve import outputs
from geoseg.serve.images import (
    ALLOWED_DRIVERS,
    ImageRecord,
    ImageTooLargeError,
    image_id_for,
    open_image,
    sniff_driver,
    unsupported_format_error,
)
from geoseg.serve.limits import JSON_FIX, BodyLimit, BodyLimitMiddleware, BodyTooLargeError
from geoseg.serve.sessions import Session, SessionStore, StoredMask, UnknownImageError, UnknownMaskError

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")

Coord = Annotated[float, Field(allow_inf_nan=False)]

#: registered backends that load no weights: a --checkpoint given to them is a mistake
NO_CHECKPOINT_BACKENDS = frozenset({"classical"})


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


class ErrorResponse(BaseModel):
    """Every error answer: one line naming the problem and, in brackets, the fix."""

    detail: str = Field(..., description="the problem (the fix)")
    problem: str | None = Field(None, description="the problem alone (errors the client can fix)")
    fix: str | None = Field(None, description="the fix alone (errors the client can fix)")


_ERROR_TEXT = {
    400: "not an image / unsupported format / truncated file, empty upload, bad bands, bad path",
    403: "a referenced path outside --image-root (or referencing disabled)",
    404: "unknown image id or mask id",
    413: "upload, JSON body or image above the server's limits",
    422: "malformed JSON, unknown fields, wrong types, a prompt that cannot be applied",
    500: "an internal error (the server keeps serving)",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for these error statuses, all answered as :class:`ErrorResponse`."""
    return {c: {"model": ErrorResponse, "description": _ERROR_TEXT[c]} for c in codes}


_BINARY = {"schema": {"type": "string", "format": "binary"}}
_MASK_FILES = {"image/png": _BINARY, "application/geo+json": {"schema": {"type": "object"}}, "image/tiff": _BINARY}


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
    errors = exc.errors()
    if errors and errors[0].get("type") == "json_invalid":
        doc = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body or "")
        loc = errors[0].get("loc", ())
        pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
        line = doc.count("\n", 0, pos) + 1
        col = pos - (doc.rfind("\n", 0, pos) + 1) + 1
        why = (errors[0].get("ctx") or {}).get("error", "JSON decode error")
        return (f"malformed JSON at line {line}, column {col}: {why} (send one JSON object with "
                'Content-Type: application/json, e.g. {"box": [10, 10, 120, 90]}; see the schema at /openapi.json)')
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) + " (see the schema at /openapi.json)"


def _internal_message(exc: BaseException) -> str:
    return (f"internal error: {type(exc).__name__}: {reason(exc)} "
            "(the server keeps serving; retry, or report it with the server log)")


class InternalErrorMiddleware:
    """Pure ASGI middleware: an unexpected exception becomes a 500 JSON answer and stops here.

    Starlette's own catch-all answers 500 and then re-raises, and uvicorn closes the
    connection of a request whose exception escaped the app, which breaks clients that
    keep connections alive. Here nothing escapes once the answer is sent.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as exc:  # noqa: BLE001 - the point: answer every unexpected error
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # the answer is half sent: nothing sane to add, let the server close it
                raise
            body = json.dumps({"detail": _internal_message(exc)}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


def _attachment(filename: str) -> str:
    """``Content-Disposition`` for ``filename`` (RFC 6266): an ASCII fallback plus the UTF-8 name."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def check_backend_options(backend: str, checkpoint: str | os.PathLike | None) -> None:
    """Refuse, before anything is loaded, a --checkpoint that is missing or that the backend cannot use."""
    if not checkpoint:
        return
    if backend in NO_CHECKPOINT_BACKENDS:
        raise GeosegError(f"the {backend} backend loads no weights, but --checkpoint {checkpoint} was given",
                          "leave out --checkpoint, or use a backend that loads weights: unified, trainfree, sam, sam2")
    if not os.path.isfile(checkpoint):
        what = "is a folder, not a file" if os.path.isdir(checkpoint) else "does not exist"
        raise GeosegError(f"checkpoint {checkpoint} {what}", "check the --checkpoint path")


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
        upload_dir: where uploads are kept while open (default: a temporary folder, created on
            the first upload and removed at shutdown). Uploads still open at shutdown are removed.

    Raises:
        GeosegError: a ``checkpoint`` that does not exist, or one given to a backend without weights.
    """
    if segmenter_factory is None:
        check_backend_options(backend, checkpoint)
        kwargs = {"checkpoint": checkpoint} if checkpoint else {}

        def segmenter_factory() -> Segmenter:
            return build_segmenter(backend, **kwargs)

    roots = [Path(r).resolve() for r in image_roots]
    # the upload folder is made on the first upload (a start that fails leaves nothing behind)
    # and, when it is our temporary folder, removed at shutdown
    updir_state: dict[str, Any] = {"dir": Path(upload_dir) if upload_dir else None, "atexit": None}
    updir_lock = threading.Lock()

    def _updir() -> Path:
        with updir_lock:
            d = updir_state["dir"]
            if d is None:
                d = Path(tempfile.mkdtemp(prefix="geoseg-serve-"))

                def remove(d: Path = d) -> None:
                    shutil.rmtree(d, ignore_errors=True)

                atexit.register(remove)  # in case the app is never shut down through its lifespan
                updir_state.update(dir=d, atexit=remove)
            else:
                d.mkdir(parents=True, exist_ok=True)
            return d

    def _remove_upload(record: ImageRecord) -> None:
        d = updir_state["dir"]
        path = Path(record.source_path)
        if d is not None and path.parent.resolve() == d.resolve() and path.exists():
            path.unlink()

    store = SessionStore(segmenter_factory, max_images=max_images, on_drop=_remove_upload)
    upload_limit = int(max_upload_mb * 1024 * 1024)
    upload_rule = BodyLimit(upload_limit, what="upload")
    json_rule = BodyLimit(int(max_json_kb * 1024), JSON_FIX, what="JSON body")

    def _shutdown() -> None:
        """Close every image (removing uploaded files) and our temporary upload folder."""
        for sess in store.list():
            try:
                store.remove(sess.record.image_id)
            except GeosegError:  # dropped meanwhile
                pass
        with updir_lock:
            d = updir_state["dir"]
            if d is not None and upload_dir is None:
                shutil.rmtree(d, ignore_errors=True)
                atexit.unregister(updir_state["atexit"])
                updir_state.update(dir=None, atexit=None)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        _shutdown()

    app = FastAPI(
        title="geoseg",
        version=__version__,
        description="Instruction-driven segmentation of remote-sensing imagery: set an image once, "
        "prompt it many times with points, boxes or text.",
        docs_url=None,  # Swagger UI loads from a CDN; the schema itself is at /openapi.json
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.backend_name = backend
    app.state.upload_dir = lambda: updir_state["dir"]  # None until the first upload (and after shutdown)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=lambda method, path: upload_rule if (method == "POST" and path == "/api/images") else json_rule,
    )
    app.add_middleware(InternalErrorMiddleware)  # outermost of ours: nothing unexpected escapes the app

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
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - see InternalErrorMiddleware
        log.exception("internal error")
        return _error(500, _internal_message(exc))

    # -- helpers -------------------------------------------------------------------------
    def _info(sess: Session, cached: bool = True) -> ImageInfo:
        return ImageInfo(**sess.record.to_dict(), embedding_cached=cached, embed_ms=round(sess.embed_ms, 2))

    def _open(path: Path, name: str, bands: tuple[int, ...] | None, image_id: str, sidecars: bool) -> ImageInfo:
        try:
            existing = store.get(image_id)
        except UnknownImageError:
            existing = None
        if existing is not None:
            return _info(existing, cached=store.ensure_embedding(existing))
        record: ImageRecord = open_image(path, name=name, bands=bands, max_pixels=max_pixels, image_id=image_id,
                                         sidecars=sidecars)
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
        return tuple(bands) or None  # [] means the default, like no bands at all

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
        stem = f"{Path(sess.record.name).stem[:100]}_{stored.mask_id}"
        if fmt == "png":
            return Response(outputs.mask_png(stored.mask), media_type="image/png",
                            headers={"Content-Disposition": _attachment(f"{stem}.png")})
        if fmt == "geojson":
            body = json.dumps(_geojson(sess, stored)).encode()
            return Response(body, media_type="application/geo+json",
                            headers={"Content-Disposition": _attachment(f"{stem}.geojson")})
        if fmt == "tif":
            tags = {"prompt": stored.prompt.describe(), "geoseg_provenance": stored.provenance,
                    "model": stored.provenance.get("model", ""), "geoseg_version": __version__}
            return Response(outputs.mask_geotiff(stored.mask, sess.record, tags), media_type="image/tiff",
                            headers={"Content-Disposition": _attachment(f"{stem}.tif")})
        raise InputError(f"unknown format {fmt!r}", "use png, geojson or tif")

    # -- routes --------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/health", responses=_errors(500))
    def health() -> dict:
        """Liveness, backend and limits."""
        return {
            "status": "ok", "version": __version__, "backend": backend,
            "open_images": len(store.list()),
            "limits": {"max_upload_mb": max_upload_mb, "max_json_kb": max_json_kb, "max_pixels": max_pixels,
                       "max_images": max_images, "reference_enabled": bool(roots)},
        }

    @app.get("/api/backend", responses=_errors(500))
    def backend_info() -> dict:
        """The loaded backend: name, prompt kinds it takes, provenance (loads it on first call)."""
        proto = store.prototype
        return {"name": proto.name, "capabilities": sorted(proto.capabilities), "provenance": proto.provenance()}

    @app.post("/api/images", status_code=201, response_model=ImageInfo, responses=_errors(400, 413, 422, 500))
    def upload_image(file: UploadFile = File(..., description="GeoTIFF, JPG or PNG"),
                     bands: str | None = Form(None, description="1-based R,G,B band indices, e.g. 4,3,2")) -> ImageInfo:
        """Upload an image and compute its embedding once (same file again = same id, cached)."""
        band_t = _parse_bands(bands)
        name = Path(file.filename or "image").name or "image"
        updir = _updir()
        fd, tmp = tempfile.mkstemp(dir=updir, suffix=".part")  # never the client's name: it may be anything
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := file.file.read(1 << 20):
                    size += len(chunk)
                    if size > upload_limit:
                        raise upload_rule.error()
                    out.write(chunk)
            if size == 0:
                raise InputError("the uploaded file is empty", "send a GeoTIFF, JPG or PNG file")
            driver = sniff_driver(tmp)
            if driver is None:  # refused before GDAL sees it (a .vrt could read other files on the server)
                raise unsupported_format_error(name)
            image_id = image_id_for(tmp, band_t)
            final = updir / f"{image_id}{ALLOWED_DRIVERS[driver]}"
            try:
                store.get(image_id)
                return _open(final, name, band_t, image_id, False)  # already open: reuse it and its embedding
            except UnknownImageError:
                pass
            os.replace(tmp, final)
            tmp = str(final)  # removed below if it cannot be opened
            info = _open(final, name, band_t, image_id, False)
            tmp = None
            return info
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)

    @app.post("/api/images/reference", status_code=201, response_model=ImageInfo,
              responses=_errors(400, 403, 413, 422, 500))
    def reference_image(req: ReferenceRequest) -> ImageInfo:
        """Open a file already on the server (only under the server's ``--image-root`` folders)."""
        if not roots:
            raise ForbiddenPathError("opening server-side paths is disabled",
                                     "start the server with --image-root DIR, or upload the file")
        if "\x00" in req.path:
            raise InputError("the path contains a NUL character", "send the file's path as plain text")
        try:
            path = Path(req.path).resolve()
        except (OSError, ValueError, RuntimeError) as exc:  # a symlink loop, a name too long, ...
            raise InputError(f"cannot resolve the path {req.path!r} ({reason(exc)})", "check the path") from None
        if not any(path == r or r in path.parents for r in roots):
            raise ForbiddenPathError(f"{req.path} is outside the allowed image roots",
                                     f"use a file under {', '.join(map(str, roots))}")
        try:
            is_file = path.is_file()
        except OSError:
            is_file = False
        if not is_file:
            raise InputError(f"no such file: {req.path}", "check the path")
        band_t = _parse_bands(req.bands)
        return _open(path, path.name, band_t, image_id_for(path, band_t), True)

    @app.get("/api/images", responses=_errors(500))
    def list_images() -> list[ImageInfo]:
        """Open images, most recently used last."""
        return [_info(s) for s in store.list()]

    @app.get("/api/images/{image_id}", response_model=ImageInfo, responses=_errors(404, 422, 500))
    def get_image(image_id: str) -> ImageInfo:
        return _info(store.get(image_id))

    @app.delete("/api/images/{image_id}", status_code=204, responses=_errors(404, 422, 500))
    def delete_image(image_id: str) -> Response:
        store.remove(image_id)
        return Response(status_code=204)

    @app.get("/api/images/{image_id}/preview.jpg", response_class=Response,
             responses={200: {"content": {"image/jpeg": _BINARY}, "description": "the display RGB as JPEG"},
                        **_errors(404, 422, 500)})
    def preview(image_id: str, max_side: int = Query(2048, ge=64, le=8192)) -> Response:
        """The display RGB (stretched bands) as JPEG, for the map page."""
        sess = store.get(image_id)
        return Response(outputs.preview_jpeg(sess.record, max_side), media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})

    @app.post("/api/images/{image_id}/predict", response_model=PredictResponse,
              responses={200: {"content": _MASK_FILES,
                               "description": "JSON (default), or with ?format=png|geojson|tif that file"},
                         **_errors(404, 413, 422, 500)})
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

    @app.get("/api/images/{image_id}/masks/{mask_id}.{fmt}", response_class=Response,
             responses={200: {"content": _MASK_FILES, "description": "the mask as PNG, GeoJSON or GeoTIFF"},
                        **_errors(404, 422, 500)})
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
