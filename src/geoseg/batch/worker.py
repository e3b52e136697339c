"""The worker side: one segmenter per process, and seeded processing of one window group."""

from __future__ import annotations

import contextlib
import logging
import os
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from geoseg.batch.jobs import BackendSpec
from geoseg.prompts import Prompt

log = logging.getLogger(__name__)


_SEGMENTERS: dict[BackendSpec, tuple[Any, list[str]]] = {}


BUILDS: dict[str, int] = {}  # segmenters this process built, by backend name (checked by the tests)


def get_segmenter(spec: BackendSpec):
    """The segmenter for ``spec``, built once per process (on a Dask worker: once per worker)."""
    hit = _SEGMENTERS.get(spec)
    if hit is None:
        from geoseg.pipeline import build_backend

        prompts = [Prompt(text="x") if k == "text" else Prompt(box=(0, 0, 1, 1)) if k == "box"
                   else Prompt(points=((0, 0),), labels=(1,)) for k in spec.kinds]
        with _notes_held_back() as held:
            seg, notes = build_backend(spec.backend, prompts, spec.checkpoint, spec.device, dict(spec.options))
        held.release(notes)
        BUILDS[seg.name] = BUILDS.get(seg.name, 0) + 1
        hit = _SEGMENTERS[spec] = (seg, notes)
        log.info("built segmenter %s in process %d", seg.name, os.getpid())
    return hit


class _HeldBack(logging.Filter):
    """The backend builder's log records, kept until its notes are known."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        self.records.append(record)
        return False

    def release(self, notes: list[str]) -> None:
        """Pass the records on, a fallback note (reported once in the batch summary) at debug level."""
        for record in self.records:
            if record.getMessage() in notes:
                log.debug("backend note (in the batch summary): %s", record.getMessage())
            else:
                logging.getLogger(record.name).handle(record)


@contextlib.contextmanager
def _notes_held_back() -> Iterator[_HeldBack]:
    """Hold back what :func:`geoseg.backends.build_backend` logs while it builds.

    Its fallback note ("the unified backend is not available ...") comes back as a note, and the
    batch prints it once in its summary; logged too, it would show once per Dask worker (each
    builds its own segmenter), through Python's last-resort handler even with ``-q``.
    """
    held = _HeldBack()
    logger = logging.getLogger("geoseg.backends")
    logger.addFilter(held)
    try:
        yield held
    except BaseException:
        logger.removeFilter(held)
        held.release([])  # the build failed: what it logged on the way is shown as it was
        raise
    finally:
        logger.removeFilter(held)


def resolve_backend(spec: BackendSpec, prompts: Sequence[Prompt] = ()) -> tuple[str, dict, list[str]]:
    """Build (or reuse) the segmenter and return its name, provenance and notes: fallbacks, and text prompts
    unlike the model's training instructions (measured once for the batch, as ``geoseg segment`` does)."""
    from geoseg.unified.instruction_check import check_instructions

    seg, notes = get_segmenter(spec)
    checked = check_instructions(seg, prompts)
    provenance = {**seg.provenance(), "backend": seg.name}
    if checked.record is not None:
        provenance["instruction_check"] = checked.record
    return seg.name, provenance, [*notes, *checked.notes]


def _seed_everything(seed: int = 0) -> None:
    """Fixed RNG state before every window: results must not depend on the task order."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import cv2

        cv2.setRNGSeed(seed)
    except ImportError:  # pragma: no cover - opencv is a core dependency
        pass
    import sys

    torch = sys.modules.get("torch")  # only when a backend already imported it
    if torch is not None:
        torch.manual_seed(seed)


def process_group(source, group, spec: BackendSpec) -> list:
    """Process one window group with this process's segmenter (runs on a worker).

    A read GDAL refuses (a truncated scene) is raised as one line with GDAL's reason: rasterio
    keeps that reason only in the exception chain, which does not survive the way to a Dask client.
    """
    from geoseg.pipeline import process_window
    from geoseg.raster.read_errors import unreadable

    seg, _ = get_segmenter(spec)
    _seed_everything()
    try:
        return process_window(source, group, seg)
    except Exception as exc:
        err = unreadable(os.path.basename(source.path), exc)
        if err is None:
            raise
    # raised outside the handler, so without the chain: Dask pickles a chain with it (tblib), and GDAL's
    # exceptions in it do not unpickle, which would turn the error into a bare Exception('InputError(...)')
    raise err


def worker_builds() -> dict[str, int]:
    """Segmenters built in this process, by backend name (for ``client.run``: once per worker)."""
    return dict(BUILDS)
