"""Torch device selection shared by every model backend (unified, SAM, SAM 2, training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from geoseg.errors import GeosegError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU; asking for a missing GPU is a one-line error."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise GeosegError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu or auto")
    return dev
