"""What the routes of one server share: its open images, its upload folder and its limits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from geoseg.serve.limits import BodyLimit
from geoseg.serve.sessions import SessionStore
from geoseg.serve.uploads import UploadFolder


@dataclass(frozen=True)
class ServerContext:
    """One server's state, handed to each group of routes when the app is built.

    Attributes:
        store: the open images with their embeddings and masks.
        uploads: where uploaded files are kept while their image is open.
        roots: folders whose files clients may open by path (empty: uploads only).
        max_pixels: images with more pixels are refused with 413.
        upload_limit: uploads above this many bytes are refused with 413 ...
        upload_rule: ... with this message and fix.
    """

    store: SessionStore
    uploads: UploadFolder
    roots: list[Path]
    max_pixels: int
    upload_limit: int
    upload_rule: BodyLimit
