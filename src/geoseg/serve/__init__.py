"""Interactive segmentation over HTTP: a FastAPI app with a REST API and a map page.

``create_app(backend, checkpoint)`` builds the app; ``geoseg serve`` runs it with
uvicorn. Needs the ``serve`` extra (fastapi, uvicorn, python-multipart).
"""

from __future__ import annotations

from geoseg.errors import require

require("fastapi", "serve")
require("python_multipart", "serve")

from geoseg.serve.app import create_app  # noqa: E402

__all__ = ["create_app"]
