"""Which segmenter answers: argument checks before anything loads, and the default's fallback."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from geoseg.errors import GeosegError, reason
from geoseg.prompts import Prompt
from geoseg.segmenters import DEFAULT_BACKEND, Segmenter, build_segmenter

log = logging.getLogger(__name__)

FALLBACK_BACKEND = "classical"


# --------------------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------------------
#: backends that load no weights: a --checkpoint given to them is a mistake, not something to ignore
NO_CHECKPOINT_BACKENDS = frozenset({"classical"})


def check_backend_args(backend: str, checkpoint: str | os.PathLike | None, device: str | None = "auto") -> None:
    """Refuse, before anything is loaded, a device that is not there and a checkpoint the backend cannot use.

    Without this an unusable ``--device`` made the default model fail to load and the run fell
    back to the classical backend, and a ``--checkpoint`` given to ``classical`` was ignored.
    """
    from geoseg.device import check_device

    check_device(device)
    if not checkpoint:
        return
    if backend in NO_CHECKPOINT_BACKENDS:
        raise GeosegError(f"the {backend} backend loads no weights, but --checkpoint {checkpoint} was given",
                          "leave out --checkpoint, or use a backend that loads weights: unified, trainfree, sam, sam2")
    if not os.path.isfile(checkpoint):
        what = "is a folder, not a file" if os.path.isdir(checkpoint) else "does not exist"
        raise GeosegError(f"checkpoint {checkpoint} {what}", "check the --checkpoint path")


def build_backend(backend: str | None = None, prompts: Sequence[Prompt] = (), checkpoint: str | None = None,
                  device: str = "auto", options: Mapping[str, Any] | None = None) -> tuple[Segmenter, list[str]]:
    """Build the segmenter for these prompts, falling back from ``unified`` to ``classical``.

    ``options`` are the backend's own keyword arguments (``mask_threshold`` for ``unified``,
    ``vlm_url``/``vlm_model``/``vlm_key``/... for ``trainfree``); a backend ignores those it
    does not take.

    When the default ``unified`` backend cannot be built (module missing, no checkpoint)
    point/box prompts fall back to ``classical`` with a logged notice, and text prompts
    fail with a one-line error naming the fix.

    Returns:
        ``(segmenter, notes)`` where ``notes`` lists what was changed (for ``--json``).
    """
    name = backend or DEFAULT_BACKEND
    check_backend_args(name, checkpoint, device)
    kinds = set().union(*(p.kinds for p in prompts)) if prompts else set()
    kw: dict[str, Any] = {**(options or {}), "device": device}
    if checkpoint:
        kw["checkpoint"] = checkpoint
    notes: list[str] = []
    try:
        seg = build_segmenter(name, **kw)
    except Exception as exc:  # noqa: BLE001 - any failure of the optional default model
        if name != DEFAULT_BACKEND or checkpoint:
            if isinstance(exc, GeosegError):
                raise
            if isinstance(exc, ImportError):
                raise GeosegError(
                    f"backend {name!r} cannot be loaded ({exc})", "install the extra it needs or pick another --backend"
                ) from None
            raise
        why = reason(exc)
        if "text" in kinds:
            raise GeosegError(
                f"--text needs the unified model, which is not available here ({why})",
                "pass --checkpoint PATH to a model trained with 'geoseg train', or use --point/--box",
            ) from None
        note = f"the unified backend is not available ({why}); using the classical backend for point/box prompts"
        log.warning(note)
        notes.append(note)
        seg = build_segmenter(FALLBACK_BACKEND, **kw)
    for p in prompts:
        seg.check_prompt(p)
        if "text" in p.kinds and "text" not in seg.capabilities:
            log.warning("backend %s ignores the text of prompt %r", seg.name, p.describe())
    return seg, notes
