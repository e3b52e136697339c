"""Notes: what the library did for the user that changes the answer (bands chosen for them, an
instruction asked another way or unlike the training instructions). Each is returned with the
result (``SegmentResult.notes``, a batch summary's notes) and logged on the ``geoseg.notes``
logger, so a Python user sees it in the log; the CLI, which prints the notes itself, quiets that
logger so a note is not shown twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

#: the logger every note goes through
NOTES = logging.getLogger("geoseg.notes")


def note(message: str, level: int = logging.WARNING) -> str:
    """Log ``message`` as a note (a warning unless ``level`` says otherwise) and return it for the result."""
    NOTES.log(level, message)
    return message


@contextmanager
def notes_shown_elsewhere() -> Iterator[None]:
    """For a front end that shows the notes itself: do not log them meanwhile (errors still pass)."""
    level = NOTES.level
    NOTES.setLevel(logging.ERROR)
    try:
        yield
    finally:
        NOTES.setLevel(level)
