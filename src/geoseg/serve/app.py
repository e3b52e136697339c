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
(:mod:`geoseg.serve.errors`); the server keeps serving. Uploads are kept in a
temporary folder created on the first upload and removed at shutdown; folders that killed
servers left behind are removed at start (:mod:`geoseg.serve.uploads`).

This module builds the app; the routes live in :mod:`~geoseg.serve.routes_images` and
:mod:`~geoseg.serve.routes_masks`, the request and response models in :mod:`~geoseg.serve.schemas`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from geoseg._version import __version__
from geoseg.errors import GeosegError
from geoseg.pipeline import check_backend_args
from geoseg.segmenters import Segmenter, build_segmenter
from geoseg.serve.context import ServerContext
from geoseg.serve.errors import InternalErrorMiddleware, install_error_handlers
from geoseg.serve.images import ImageRecord
from geoseg.serve.limits import JSON_FIX, BodyLimit, BodyLimitMiddleware
from geoseg.serve.routes_images import image_routes
from geoseg.serve.routes_masks import mask_routes
from geoseg.serve.schemas import error_responses
from geoseg.serve.sessions import SessionStore
from geoseg.serve.uploads import UploadFolder, check_upload_dir

STATIC_DIR = Path(__file__).with_name("static")

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
    backend_options: Mapping[str, Any] | None = None,
    device: str | None = "auto",
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
        backend_options: further keyword arguments of the backend (``trainfree``: ``vlm_url``,
            ``vlm_model``, ``vlm_family``, ...).
        device: where the backend's model runs: ``auto`` (a GPU when there is one), ``cpu``,
            ``cuda`` or ``cuda:N``; backends without a model ignore it.

    Raises:
        GeosegError: a ``checkpoint`` that does not exist, or one given to a backend without weights;
            a ``device`` that is unknown or not on this machine; an ``upload_dir`` that is not a
            folder this process can write in.
    """
    if upload_dir is not None:
        upload_dir = check_upload_dir(upload_dir)
    if segmenter_factory is None:
        check_backend_args(backend, checkpoint, device)
        kwargs = {**(backend_options or {}), "device": device, **({"checkpoint": checkpoint} if checkpoint else {})}

        def segmenter_factory() -> Segmenter:
            return build_segmenter(backend, **kwargs)

    roots = [Path(r).resolve() for r in image_roots]
    # the upload folder is made on the first upload (a start that fails leaves nothing behind)
    # and, when it is our temporary folder, removed at shutdown
    uploads = UploadFolder(upload_dir)

    def _remove_upload(record: ImageRecord) -> None:
        path = Path(record.source_path)
        if uploads.holds(path) and path.exists():
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
        uploads.close()

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        uploads.reap()  # folders of servers that were killed before they could remove theirs
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
    app.state.upload_dir = lambda: uploads.current  # None until the first upload (and after shutdown)
    app.add_middleware(
        BodyLimitMiddleware,
        limit_for=lambda method, path: upload_rule if (method == "POST" and path == "/api/images") else json_rule,
    )
    app.add_middleware(InternalErrorMiddleware)  # outermost of ours: nothing unexpected escapes the app

    install_error_handlers(app)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/api/health", responses=error_responses(500))
    def health() -> dict:
        """Liveness, backend and limits."""
        return {
            "status": "ok", "version": __version__, "backend": backend,
            "open_images": len(store.list()),
            "limits": {"max_upload_mb": max_upload_mb, "max_json_kb": max_json_kb, "max_pixels": max_pixels,
                       "max_images": max_images, "max_masks": store.max_masks, "reference_enabled": bool(roots)},
        }

    @app.get("/api/backend", responses=error_responses(500))
    def backend_info() -> dict:
        """The loaded backend: name, prompt kinds it takes, provenance (loads it on first call)."""
        proto = store.prototype
        return {"name": proto.name, "capabilities": sorted(proto.capabilities), "provenance": proto.provenance()}

    ctx = ServerContext(store, uploads, roots, max_pixels, upload_limit, upload_rule)
    app.include_router(image_routes(ctx))
    app.include_router(mask_routes(ctx))
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
