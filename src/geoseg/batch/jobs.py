"""A batch job: the options that decide a scene's outputs (the resume key) and how workers build the segmenter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from geoseg.prompt_layer import PromptLayer
from geoseg.prompts import Prompt
from geoseg.vector import check_vector_options

OnError = Literal["skip", "fail"]


#: backend options that are secrets: passed to the backend, never written anywhere
SECRET_OPTIONS = frozenset({"vlm_key"})


@dataclass(frozen=True)
class BackendSpec:
    """How a worker builds its segmenter; also the key of its worker-local cache."""

    backend: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    kinds: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()  # the backend's own keyword arguments, sorted (hashable)


@dataclass
class BatchOptions:
    """Everything besides the scene that decides a scene's outputs (the resume key)."""

    backend: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    bands: tuple[int, ...] | None = None
    tile_size: int = 1024
    overlap: int = 128
    prompt_crs: str | None = None
    vector: Literal["gpkg", "geojson", "fgb", "shp"] | None = None
    score_raster: bool = False
    backend_options: dict[str, Any] = field(default_factory=dict)
    prompt_layer: PromptLayer | None = None  # --prompt-file: its features that fall on each scene
    simplify: float = 0.0  # --simplify: polygon tolerance in pixels
    min_area: float = 0.0  # --min-area: in the layer's area unit

    def __post_init__(self) -> None:
        check_vector_options(self.simplify, self.min_area, self.vector)

    def key(self, prompts: Sequence[Prompt]) -> dict:
        layer = self.prompt_layer
        d = asdict(replace(self, prompt_layer=None))
        for name in ("simplify", "min_area"):  # at their defaults they stay out: earlier runs' keys still match
            if not d[name]:
                del d[name]
        d["prompt_layer"] = layer.provenance() if layer is not None else None
        d["bands"] = list(self.bands) if self.bands else None
        # secrets never reach the resume key, which is written into every scene's marker file
        d["backend_options"] = {k: v for k, v in sorted(self.backend_options.items()) if k not in SECRET_OPTIONS}
        d["prompts"] = [p.to_dict() for p in prompts]
        return d
