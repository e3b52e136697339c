"""Request size limits enforced before a body is parsed.

A declared ``Content-Length`` above the limit is answered 413 at once, without
reading the body; a body sent without one (chunked) is counted while it streams
and the request fails with :class:`BodyTooLargeError` (also a 413) as soon as it
crosses the limit, so the server never buffers more than the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from geoseg.errors import GeosegError

UPLOAD_FIX = ("send a smaller file (crop it, or segment big scenes with 'geoseg segment'); "
              "the server's operator sets this limit with --max-upload-mb")
JSON_FIX = "send fewer points or a shorter text; images go to POST /api/images as a multipart upload"


class BodyTooLargeError(GeosegError):
    """A request body above the server's limit; ``fix`` says what the client can do."""

    def __init__(self, limit: int, fix: str = UPLOAD_FIX, what: str = "request body") -> None:
        size = f"{limit / 1048576:.2f} MB" if limit >= 1048576 else f"{limit / 1024:g} KB"
        super().__init__(f"the {what} is larger than the server's limit of {size}", fix)


class BodyLimit:
    """The limit of one kind of request: bytes, and what to tell a client that crosses it."""

    def __init__(self, limit: int, fix: str = UPLOAD_FIX, what: str = "request body") -> None:
        self.limit, self.fix, self.what = limit, fix, what

    def error(self) -> BodyTooLargeError:
        return BodyTooLargeError(self.limit, self.fix, self.what)


class BodyLimitMiddleware:
    """Pure ASGI middleware: ``limit_for(method, path)`` gives the :class:`BodyLimit` of each request."""

    def __init__(self, app, limit_for: Callable[[str, str], BodyLimit]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rule = self.limit_for(scope["method"], scope["path"])
        limit = rule.limit
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            body = json.dumps({"detail": str(rule.error())}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise rule.error()
            return message

        await self.app(scope, counted_receive, send)
