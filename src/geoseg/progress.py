"""One switch for every progress bar in geoseg.

Long operations wrap their iterables with :func:`progress`. Bars are shown when
enabled (the CLI enables them unless ``-q``) and never in the library by default
unless ``GEOSEG_PROGRESS=1`` is set, so notebooks and services stay quiet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

_enabled: bool | None = None


def set_progress(enabled: bool) -> None:
    """Turn all progress bars on or off for this process."""
    global _enabled
    _enabled = enabled


def progress_enabled() -> bool:
    """Whether bars are shown: the explicit switch wins, then ``GEOSEG_PROGRESS``."""
    if _enabled is not None:
        return _enabled
    return os.environ.get("GEOSEG_PROGRESS", "0") not in ("0", "", "false", "no")


def progress(iterable: Iterable[T], desc: str = "", total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Iterate with a tqdm bar when progress is enabled, plainly otherwise."""
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=not progress_enabled(), leave=False))
