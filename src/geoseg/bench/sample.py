"""One benchmark sample, independent of the format it was read from.

Readers turn every public format into a list of :class:`BenchSample`. Pixels are
loaded lazily (a benchmark of thousands of images is never held in memory) and samples
that share an image share an ``image_key`` so the runner calls ``set_image`` once per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from geoseg.prompts import Prompt


@dataclass
class BenchSample:
    """An (image, instruction, target mask) triplet.

    Attributes:
        sample_id: unique id within the benchmark (stable across runs: it keys the cache).
        task: ``interactive`` | ``referring`` | ``reasoning``.
        prompt: what the segmenter is given (points/box in image pixels and/or text).
        image_key: identifies the image; samples with the same key share one ``set_image``.
        load_image: returns the ``H x W x 3`` uint8 RGB image.
        load_mask: returns the boolean target mask at the image's size (already reconciled,
            see :func:`geoseg.bench.readers.common.reconcile_mask`).
        source_file: the annotation file the sample came from (named in errors).
        level: difficulty (``1``..``3``) or ``None``.
        category: target class name (``""`` when the format has none).
        instruction: the instruction text as given by the benchmark.
        empty_target: ``True`` when the format says the target is absent (``None`` = unknown;
            metrics always use the mask itself).
        meta: anything else the format carries (answer, rationale ...).
        mask_rle: the target as COCO RLE at the image's size when the format stores it so
            (shards, the benchmark split): scoring then counts pixels on runs without decoding.
    """

    sample_id: str
    task: str
    prompt: Prompt
    image_key: str
    load_image: Callable[[], np.ndarray]
    load_mask: Callable[[], np.ndarray]
    source_file: str = ""
    level: int | None = None
    category: str = ""
    instruction: str = ""
    empty_target: bool | None = None
    meta: dict = field(default_factory=dict)
    mask_rle: dict | None = None

    def labels(self) -> dict:
        """The breakdown labels written next to the sample's counts."""
        return {"task": self.task, "level": "" if self.level is None else int(self.level), "category": self.category}
