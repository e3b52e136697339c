"""A mask backend for route tests: it answers a box with exactly that box, so where the box went shows."""

from __future__ import annotations

import numpy as np

from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter


class BoxAnswer(Segmenter):
    """Answers a box with that box (and anything else with nothing)."""

    name = "boxanswer"
    capabilities = frozenset({"point", "box"})

    def _set_image(self, image: np.ndarray) -> None:
        pass

    def _predict(self, prompt: Prompt) -> Prediction:
        h, w = self.image_shape
        m = np.zeros((h, w), bool)
        if prompt.box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
            m[max(y0, 0):y1, max(x0, 0):x1] = True
        return Prediction(mask=m, score=0.5)
