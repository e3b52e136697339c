"""Torch device selection shared by every model backend (unified, SAM, SAM 2, training)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from geoseg.errors import GeosegError

if TYPE_CHECKING:
    import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None → CUDA when available, else CPU; asking for a missing GPU is a one-line error."""
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise GeosegError(f"unknown device {device!r}", "use --device auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise GeosegError(f"--device {device} was asked for but no CUDA GPU is available",
                              "use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise GeosegError(f"--device {device} was asked for but this machine has "
                              f"{torch.cuda.device_count()} CUDA GPU(s)",
                              f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}, or auto")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise GeosegError(f"--device {device} was asked for but Apple's MPS is not available here",
                              "use --device cpu or auto")
    elif dev.type != "cpu":
        raise GeosegError(f"device {device!r} is not supported", "use --device auto, cpu, cuda or cuda:N")
    return dev


def check_device(device: str | None) -> None:
    """Refuse an unknown or unavailable device before any model is built (cheap for auto/cpu: no torch import)."""
    if device in (None, "auto", "cpu"):
        return
    resolve_device(device)


def image_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """An ``H x W x 3`` image as a ``1 x 3 x H x W`` float tensor on ``device`` (values kept, 0-255).

    A read-only array (a window of a memory-mapped or cached read) is copied first: torch cannot
    share memory it may not write, and warned about it on every SAM run.
    """
    import torch

    pixels = np.require(image, requirements=("C_CONTIGUOUS", "WRITEABLE"))
    return torch.from_numpy(pixels).to(device).permute(2, 0, 1)[None].float()
