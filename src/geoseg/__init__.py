"""geoseg: instruction-driven segmentation of remote-sensing imagery.

Give an image and an instruction (a point, a box, a referring expression or a
reasoning query) and get a georeferenced mask and vector polygons.

The public API is imported lazily so ``import geoseg`` stays light.
"""

from __future__ import annotations

from typing import Any

from geoseg._version import __version__
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt

__all__ = ["GeosegError", "Prompt", "SegmentPredictor", "__version__", "build_segmenter", "segment"]

_LAZY = {
    "segment": "geoseg.pipeline:segment",
    "SegmentPredictor": "geoseg.predictor:SegmentPredictor",
    "build_segmenter": "geoseg.segmenters:build_segmenter",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
