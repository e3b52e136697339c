"""How the server answers errors: a 4xx naming the problem and the fix, and a 500 that never escapes the app.

Bad requests get a 4xx answer whose ``detail`` is one line naming the problem and the
fix (:func:`install_error_handlers`); an unexpected error gets a 500 JSON answer on a
connection that stays open (:class:`InternalErrorMiddleware`); the server keeps serving.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from geoseg.errors import GeosegError, MissingExtraError, PromptError, reason
from geoseg.serve.exports import ExportOptionError
from geoseg.serve.images import ImageTooLargeError
from geoseg.serve.limits import BodyTooLargeError
from geoseg.serve.sessions import DroppedMaskError, UnknownImageError, UnknownMaskError

log = logging.getLogger(__name__)


def status_for(exc: GeosegError) -> int:
    if isinstance(exc, DroppedMaskError):
        return 410  # it existed and is gone for good: predicting again makes a new one
    if isinstance(exc, (UnknownImageError, UnknownMaskError)):
        return 404
    if isinstance(exc, ImageTooLargeError):
        return 413
    if isinstance(exc, (PromptError, ExportOptionError)):
        return 422
    if isinstance(exc, PermissionError):
        return 403
    if isinstance(exc, MissingExtraError):
        return 501
    return 400


class ForbiddenPathError(GeosegError, PermissionError):
    """A referenced path outside the server's image roots."""


def error_response(status: int, detail: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


NO_FILE_MESSAGE = ("no image file in the upload: the multipart field 'file' is missing or has no file name, as when "
                   "a form is sent with no file chosen (choose a GeoTIFF, JPG or PNG file and send it as the "
                   "multipart/form-data field 'file' with its file name, e.g. curl -F file=@scene.tif URL/api/images)")


def _no_file(err: dict) -> bool:
    """An upload without a file: the ``file`` part absent, or sent as a plain field (a form with no file chosen
    sends a part whose file name is empty, which is read as text)."""
    if tuple(err.get("loc", ())) != ("body", "file"):
        return False
    return err.get("type") == "missing" or "Expected UploadFile" in str(err.get("msg", ""))


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
    if any(_no_file(err) for err in errors):
        return NO_FILE_MESSAGE
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


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the routes raise as :class:`~geoseg.serve.schemas.ErrorResponse` JSON."""

    @app.exception_handler(GeosegError)
    async def _geoseg_error(_: Request, exc: GeosegError) -> JSONResponse:
        code = {"code": exc.code} if isinstance(exc, (UnknownImageError, UnknownMaskError)) else {}
        return error_response(status_for(exc), str(exc), problem=exc.problem, fix=exc.fix, **code)

    @app.exception_handler(BodyTooLargeError)
    async def _too_large(_: Request, exc: BodyTooLargeError) -> JSONResponse:
        return error_response(413, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLargeError):  # raised while FastAPI parsed a streamed body
            return error_response(413, str(exc.__cause__))
        return error_response(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, _validation_message(exc))

    @app.exception_handler(Exception)
    async def _internal(_: Request, exc: Exception) -> JSONResponse:  # pragma: no cover - see InternalErrorMiddleware
        log.exception("internal error")
        return error_response(500, _internal_message(exc))
