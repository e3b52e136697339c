"""Builder registry of unified-model architectures (like segment-anything's ``build_sam``).

Each entry maps an architecture name to the default :class:`ModelConfig` it starts
from; a config may override any field. ``build_model(cfg)`` is the one way the
network is constructed (training, checkpoint loading, tests).
"""

from __future__ import annotations

from collections.abc import Callable

from geoseg.errors import GeosegError
from geoseg.models import UniGeoSeg
from geoseg.unified.config import ModelConfig


def _tiny() -> ModelConfig:
    return ModelConfig(arch="unigeoseg_tiny")


def _small() -> ModelConfig:
    return ModelConfig(arch="unigeoseg_small", channels=(48, 96, 192, 288), depths=(1, 2, 3, 1), fpn_dim=96,
                       query_dim=192, input_size=512)


ARCHITECTURES: dict[str, Callable[[], ModelConfig]] = {
    "unigeoseg_tiny": _tiny,
    "unigeoseg_small": _small,
}


def default_config(arch: str) -> ModelConfig:
    """The registered default config of ``arch``."""
    if arch not in ARCHITECTURES:
        raise GeosegError(f"unknown architecture {arch!r}", f"use one of {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch]()


def build_model(cfg: ModelConfig) -> UniGeoSeg:
    """Construct the (randomly initialised) network described by ``cfg``."""
    default_config(cfg.arch)  # validates the name
    return UniGeoSeg(**cfg.module_kwargs())
