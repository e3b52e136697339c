"""Model specifications for ``geoseg bench run --model``, including the baseline rows.

A plain name (``classical``, ``unified`` …) or a checkpoint path runs that backend on each
sample's own prompt (parts the backend cannot use are dropped; a sample with nothing the
backend can use is *unsupported*: it is not predicted and is left out of the scores, and
reports say so). Two baseline wrappers put every model row in context:

* ``oracle-box[:BACKEND]`` (default backend ``classical``) — the prompt is replaced by the
  bounding box of the ground-truth mask, for every task. It is the upper bound of any
  pipeline that first finds a box and then segments inside it with that backend
  (empty targets get the oracle's empty answer).
* ``category-only:MODEL`` — a text-capable model is given only the bare category name
  instead of the instruction: it finds the category, ignoring attributes, relations and
  reasoning. It is the bar any referring or reasoning model must clear.
* ``category-region`` — no model: the answer is the whole ground-truth region of the
  category the sample names, in its tile (:mod:`geoseg.bench.class_regions`; samples built
  by the data engine only, others are unsupported). The category-only bar with a perfect
  semantic segmenter: a referring/reasoning model below it did not use the instruction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from geoseg.bench.sample import BenchSample
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt
from geoseg.segmenters import Segmenter, build_segmenter

EMPTY = "empty"  # a transform's answer meaning "predict an empty mask without asking the backend"
BASELINE_ROWS = ("classical", "oracle-box:classical", "category-region", "category-only:unified")


def restrict(prompt: Prompt, capabilities: frozenset[str]) -> Prompt | None:
    """``prompt`` without the parts a backend cannot use; ``None`` when nothing usable is left."""
    if not (prompt.kinds & capabilities):
        return None
    out = prompt
    if "text" not in capabilities and prompt.text is not None:
        out = replace(out, text=None)
    if "box" not in capabilities and prompt.box is not None:
        out = replace(out, box=None)
    if "point" not in capabilities and prompt.points:
        out = replace(out, points=(), labels=())
    return out


def gt_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """The pixel bounding box ``(x0, y0, x1, y1)`` (x1/y1 exclusive) of a mask; ``None`` if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


Transform = Callable[[BenchSample, "Segmenter | None"], "Prompt | str | np.ndarray | None"]


def _own_prompt(sample: BenchSample, seg: Segmenter) -> Prompt | None:
    return restrict(sample.prompt, seg.capabilities)


def _oracle_box(sample: BenchSample, seg: Segmenter) -> Prompt | str | None:
    box = gt_box(sample.load_mask())
    if box is None:
        return EMPTY
    return restrict(Prompt(box=box, task="interactive"), seg.capabilities)


def _category_only(sample: BenchSample, seg: Segmenter) -> Prompt | None:
    if not sample.category:
        return None
    return Prompt(text=sample.category, task="referring")


def _category_region(sample: BenchSample, seg: Segmenter | None) -> np.ndarray | None:
    regions = sample.meta.get("class_regions")
    if regions is None or not sample.category or sample.meta.get("window") is None:
        return None
    return regions.region(sample.meta["source"], sample.meta["scene"], sample.meta["window"], sample.category)


#: provenance keys that identify a backend's weights and decision rule (a resumed run must match them)
IDENTITY_KEYS = ("checkpoint_sha256", "mask_thresholds", "presence_threshold", "instance_selector",
                 "interactive_refine", "object_region", "small_box_zoom")
#: what identifies weights a backend does not hash (sam, sam2: hashing vit_h costs seconds), and what
#: decides a training-free answer besides them
NAMED_WEIGHTS_KEYS = ("checkpoint", "arch", "mask_backend", "vlm_model", "vlm_family", "refinement", "routes")


@dataclass
class ModelSpec:
    """A resolved ``--model`` value: how to build the backend and how to prompt it per sample."""

    spec: str
    backend: str | None  # None: the transform answers with a mask itself (no model)
    transform: Transform
    description: str
    kwargs: dict = field(default_factory=dict)
    _segmenter: Segmenter | None = None

    @property
    def segmenter(self) -> Segmenter | None:
        """The backend, built on first use (so re-scoring a cached run never loads a model)."""
        if self._segmenter is None and self.backend is not None:
            self._segmenter = build_segmenter(self.backend, **self.kwargs)
            if self.transform is _category_only and "text" not in self._segmenter.capabilities:
                raise GeosegError(f"category-only needs a text-capable model, '{self.backend}' takes "
                                  f"{', '.join(sorted(self._segmenter.capabilities))}",
                                  "use category-only:unified or a checkpoint")
        return self._segmenter

    def weights_identity(self) -> dict:
        """What, besides ``--model``, decides the backend's answers: its weights' digest, decision
        thresholds and answer post-processing (instance selector, interactive re-cut) where the
        backend reports them (builds the backend)."""
        seg = self.segmenter
        if seg is None:
            return {}
        prov = seg.provenance()
        keys = IDENTITY_KEYS if "checkpoint_sha256" in prov else IDENTITY_KEYS + NAMED_WEIGHTS_KEYS
        return {k: prov[k] for k in keys if k in prov}

    def provenance(self) -> dict:
        prov = {"model": self.spec, "backend": self.backend, "protocol": self.description}
        if self._segmenter is not None:
            prov["backend_provenance"] = self._segmenter.provenance()
        return prov


def resolve_model(spec: str, segmenter: Segmenter | None = None, **kwargs) -> ModelSpec:
    """Parse ``--model``: a backend name or checkpoint, ``oracle-box[:B]`` or ``category-only:M``.

    Args:
        spec: the value the user typed.
        segmenter: an already built backend to use instead of building one (tests, notebooks).
        **kwargs: passed to :func:`geoseg.segmenters.build_segmenter`.
    """
    if spec == "category-region":
        ms = ModelSpec(spec, None, _category_region, "whole ground-truth region of the named category (no model)", kwargs)
    elif spec == "oracle-box" or spec.startswith("oracle-box:"):
        backend = spec.partition(":")[2] or "classical"
        ms = ModelSpec(spec, backend, _oracle_box, "oracle: ground-truth bounding box given to the backend", kwargs)
    elif spec.startswith("category-only"):
        backend = spec.partition(":")[2] or "unified"
        ms = ModelSpec(spec, backend, _category_only, "instruction replaced by the bare category name", kwargs)
    else:
        ms = ModelSpec(spec, spec, _own_prompt, "the benchmark's own prompts", kwargs)
    if segmenter is not None:
        ms._segmenter = segmenter
    return ms
