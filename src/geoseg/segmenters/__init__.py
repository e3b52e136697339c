"""Registry of segmenter backends.

Backends are registered by name with the dotted path of their factory, so that
importing geoseg never imports torch or an optional extra; the module is imported
only when the backend is built. Third-party code may add backends with
:func:`register_segmenter`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from geoseg.errors import GeosegError
from geoseg.segmenters.base import Prediction, Segmenter

__all__ = ["Prediction", "Segmenter", "available_segmenters", "build_segmenter", "register_segmenter",
           "shares_windows"]

# name -> "module:attribute" (a Segmenter subclass or a factory returning one)
_REGISTRY: dict[str, str | Callable[..., Segmenter]] = {
    "unified": "geoseg.unified.segmenter:UnifiedSegmenter",
    "classical": "geoseg.segmenters.classical:GrabCutSegmenter",
    "trainfree": "geoseg.trainfree.segmenter:TrainFreeSegmenter",
    "sam": "geoseg.segmenters.sam:SamSegmenter",
    "sam2": "geoseg.segmenters.sam2:Sam2Segmenter",
}

DEFAULT_BACKEND = "unified"

#: backends whose ``shares_windows`` is set, known without importing them (a batch client plans the
#: windows of every scene before any worker builds a backend)
_SHARES_WINDOWS: set[str] = {"sam", "sam2"}


def register_segmenter(name: str, factory: str | Callable[..., Segmenter], shares_windows: bool = False) -> None:
    """Add or replace a backend: ``factory`` is a callable or a ``"module:attr"`` path.

    ``shares_windows``: the backend's :attr:`Segmenter.shares_windows` (point/box prompts may share
    one window), for planners that run before it is built.
    """
    _REGISTRY[name] = factory
    (_SHARES_WINDOWS.add if shares_windows else _SHARES_WINDOWS.discard)(name)


def shares_windows(name: str | None) -> bool:
    """Whether backend ``name`` (``None``: the default; a checkpoint path: unified) shares windows."""
    return (name or DEFAULT_BACKEND) in _SHARES_WINDOWS


def available_segmenters() -> list[str]:
    """Registered backend names (some may need an optional extra to build)."""
    return sorted(_REGISTRY)


def _resolve(factory: str | Callable[..., Segmenter]) -> Callable[..., Segmenter]:
    if callable(factory):
        return factory
    module, _, attr = factory.partition(":")
    return getattr(importlib.import_module(module), attr)


def build_segmenter(name_or_checkpoint: str, **kwargs: Any) -> Segmenter:
    """Build a backend by registry name, or the unified model from a checkpoint path.

    Keyword arguments go to the backend's constructor (``checkpoint=``, ``device=``, ...).
    """
    if name_or_checkpoint in _REGISTRY:
        factory = _resolve(_REGISTRY[name_or_checkpoint])
        return factory(**kwargs)
    if os.path.isfile(name_or_checkpoint):
        factory = _resolve(_REGISTRY["unified"])
        return factory(checkpoint=name_or_checkpoint, **kwargs)
    if os.sep in name_or_checkpoint or name_or_checkpoint.endswith((".pt", ".pth", ".ckpt", ".safetensors")):
        raise GeosegError(f"checkpoint {name_or_checkpoint} does not exist",
                          f"check the path, or name a backend: {', '.join(available_segmenters())}")
    raise GeosegError(
        f"unknown segmenter backend {name_or_checkpoint!r}",
        f"use one of {', '.join(available_segmenters())} or the path of a checkpoint file",
    )
