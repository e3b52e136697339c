"""The segmenter contract every backend implements.

Modelled on segment-anything's ``SamPredictor``: :meth:`Segmenter.set_image` does
the expensive work once (decode, normalise, encode) and caches it;
:meth:`Segmenter.predict` answers one prompt cheaply. The scene pipeline, the
benchmark, the batch runner and the server all talk to backends only through
this class.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from geoseg._version import __version__
from geoseg.errors import InputError, PromptError
from geoseg.prompts import Prompt


@dataclass
class Prediction:
    """One answer to one prompt.

    Attributes:
        mask: boolean ``H x W`` mask at the resolution of the image given to ``set_image``;
            all ``False`` means "nothing matches".
        score: confidence in ``[0, 1]`` that the mask is the requested target.
        prob: optional ``float32`` ``H x W`` per-pixel probability (used for blending tiles
            and for the optional score raster).
    """

    mask: np.ndarray
    score: float
    prob: np.ndarray | None = None
    info: dict = field(default_factory=dict)


class Segmenter(ABC):
    """A backend that turns (image, prompt) into a mask.

    Subclasses set ``name`` (the registry key) and ``capabilities`` (the prompt kinds
    they use, a subset of ``{"point", "box", "text"}``).
    """

    name: ClassVar[str] = "base"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: whether point/box prompts may share one window (the whole scene, or the grid tile holding them
    #: with the most context) instead of each getting a crop around it: right for backends that resize
    #: every window to one fixed input anyway (SAM: 1024 px), whose image embedding is the costly part
    shares_windows: ClassVar[bool] = False

    def __init__(self) -> None:
        self._image_shape: tuple[int, int] | None = None

    # -- image -------------------------------------------------------------------------
    def set_image(self, image: np.ndarray) -> None:
        """Cache everything prompt-independent for ``image`` (``H x W x 3`` uint8 RGB)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InputError(
                f"segmenters take H x W x 3 uint8 RGB images, got {getattr(image, 'dtype', type(image))} "
                f"{getattr(image, 'shape', '')}",
                "convert with geoseg.raster.to_display_rgb or pass --bands to pick three bands",
            )
        self._image_shape = image.shape[:2]
        self._set_image(image)

    @abstractmethod
    def _set_image(self, image: np.ndarray) -> None: ...

    @property
    def image_shape(self) -> tuple[int, int]:
        if self._image_shape is None:
            raise RuntimeError("call set_image() before predict()")
        return self._image_shape

    # -- prompts -----------------------------------------------------------------------
    def predict(self, prompt: Prompt) -> Prediction:
        """Segment what ``prompt`` asks for in the current image."""
        self.check_prompt(prompt)
        h, w = self.image_shape
        pred = self._predict(prompt)
        if pred.mask.shape != (h, w):
            raise RuntimeError(f"{self.name} returned a {pred.mask.shape} mask for a {(h, w)} image")
        pred.mask = pred.mask.astype(bool, copy=False)
        return pred

    @abstractmethod
    def _predict(self, prompt: Prompt) -> Prediction: ...

    def check_prompt(self, prompt: Prompt) -> None:
        """Raise :class:`PromptError` when the prompt has a part this backend cannot use.

        A part it would ignore is refused too (text with a box on a geometry-only backend): the
        answer would look like an answer to the whole prompt, and its provenance would say so.
        """
        if prompt.is_empty:
            raise PromptError("the prompt is empty", "give --point, --box or --text")
        unsupported = prompt.kinds - self.capabilities
        if not unsupported:
            return
        kinds = ", ".join(sorted(unsupported))
        if prompt.kinds & self.capabilities:
            raise PromptError(f"backend '{self.name}' cannot use the {kinds} part of this prompt (it would be ignored)",
                              f"drop it, or use a backend that takes it (this one takes: "
                              f"{', '.join(sorted(self.capabilities))})")
        hint = (
            "give points or a box to this backend, or use a text-capable backend such as unified"
            if "text" in unsupported
            else f"this backend takes: {', '.join(sorted(self.capabilities))}"
        )
        raise PromptError(f"backend '{self.name}' cannot use {kinds} prompts", hint)

    def empty_answer_hint(self, prompt: Prompt) -> str | None:
        """Advice for a user whose ``prompt`` found nothing in a whole scene, or ``None``.

        An empty mask is a valid answer ("nothing matches"), so it is not an error; but a
        model that only knows some classes should say so, or users cannot tell "absent"
        from "outside what this model was trained on".
        """
        return None

    def warm_up(self) -> None:
        """Load now what the backend would otherwise load on first use (a server calls this at start,
        so the first request is not the slow one and a broken part fails before it listens)."""
        return None

    # -- provenance --------------------------------------------------------------------
    def provenance(self) -> dict:
        """What produced a mask: written into raster tags, vector metadata and reports."""
        return {"model": self.name, "geoseg_version": __version__}
