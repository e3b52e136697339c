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


class BodyTooLargeError(GeosegError):
    """A request body above the server's limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than the server's limit of {limit / 1048576:.2f} MB",
            "send a smaller file, or restart the server with a larger --max-upload-mb",
        )


class BodyLimitMiddleware:
    """Pure ASGI middleware: ``limit_for(method, path)`` gives the byte limit of each request."""

    def __init__(self, app, limit_for: Callable[[str, str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > limit:
            body = json.dumps({"detail": str(BodyTooLargeError(limit))}).encode()
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
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, counted_receive, send)
