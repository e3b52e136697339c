"""The worker side: one segmenter per process, and seeded processing of one window group."""

from __future__ import annotations

import logging
import os
import random
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
        seg, notes = build_backend(spec.backend, prompts, spec.checkpoint, spec.device, dict(spec.options))
        BUILDS[seg.name] = BUILDS.get(seg.name, 0) + 1
        hit = _SEGMENTERS[spec] = (seg, notes)
        log.info("built segmenter %s in process %d", seg.name, os.getpid())
    return hit


def resolve_backend(spec: BackendSpec) -> tuple[str, dict, list[str]]:
    """Build (or reuse) the segmenter and return its name, provenance and fallback notes."""
    seg, notes = get_segmenter(spec)
    return seg.name, {**seg.provenance(), "backend": seg.name}, list(notes)


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
    """Process one window group with this process's segmenter (runs on a worker)."""
    from geoseg.pipeline import process_window

    seg, _ = get_segmenter(spec)
    _seed_everything()
    return process_window(source, group, seg)


def worker_builds() -> dict[str, int]:
    """Segmenters built in this process, by backend name (for ``client.run``: once per worker)."""
    return dict(BUILDS)
