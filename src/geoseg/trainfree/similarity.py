"""Text–image similarity maps for route A of the training-free route (GUIDE §1, GeoSeg).

Route A turns "how much does each pixel look like the noun" into positive point prompts.
A source answers ``similarity(image, text) -> H x W float32 in [0, 1]`` for an ``H x W x 3``
uint8 crop. Two sources ship:

* :class:`UnifiedSimilarity` (the default) — the unified model's text-conditioned mask
  probability (``UnifiedSegmenter.similarity_map``): trained on overhead imagery, and when
  the unified model is also the mask backend the crop is encoded once for both routes.
* :class:`ClipSimilarity` — any CLIP-family model the user has as a ``transformers``
  ``CLIPModel`` folder (``save_pretrained`` layout, e.g. a remote-sensing CLIP): cosine
  similarity of each projected patch token with the projected text, upsampled to the crop
  and min–max scaled to [0, 1] (CLIP's raw cosines have no absolute scale).

``build_similarity`` turns a user option (``unified``, ``clip:PATH`` or a folder) into a source.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from geoseg.errors import GeosegError, InputError, reason
from geoseg.trainfree.dual_route import ImageSession

log = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@runtime_checkable
class SimilaritySource(Protocol):
    """A dense text–image response: ``similarity(image, text)`` is ``H x W`` float32 in [0, 1]."""

    name: str

    def similarity(self, image: np.ndarray, text: str) -> np.ndarray: ...


class UnifiedSimilarity:
    """The unified model's text-conditioned probability map.

    Args:
        session: an :class:`ImageSession` around a ``UnifiedSegmenter`` (shared with route B
            when the unified model is also the mask backend); ``None`` builds the shipped default.
        device: used only when the default model is built here.
    """

    name = "unified"

    def __init__(self, session: ImageSession | None = None, device: str | None = "auto") -> None:
        if session is None:
            from geoseg.unified.segmenter import UnifiedSegmenter

            session = ImageSession(UnifiedSegmenter(device=device))
        if not hasattr(session.segmenter, "similarity_map"):
            raise GeosegError(f"backend {session.segmenter.name!r} gives no text similarity map",
                              "use the unified model or a CLIP folder (--similarity clip:PATH) for route A")
        self.session = session

    def similarity(self, image: np.ndarray, text: str) -> np.ndarray:
        self.session.ensure(image)
        return self.session.segmenter.similarity_map(text, task="referring")

    def provenance(self) -> dict:
        return {"similarity": "unified", "similarity_checkpoint": self.session.segmenter.provenance().get("checkpoint")}


class ClipSimilarity:
    """Patch-level CLIP similarity from a local ``transformers`` CLIP folder.

    Args:
        path: folder with ``config.json`` + weights of a ``CLIPModel`` and its tokenizer files
            (``preprocessor_config.json`` is read for the normalisation when present).
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    name = "clip"

    def __init__(self, path: str | Path, device: str | None = "auto") -> None:
        import torch
        from transformers import AutoTokenizer, CLIPModel

        from geoseg.device import resolve_device

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise InputError(f"{self.path} is not a CLIP model folder (no config.json)",
                             "give the folder written by CLIPModel.save_pretrained (config.json + weights + tokenizer)")
        self.device = resolve_device(device)
        try:
            self.model = CLIPModel.from_pretrained(self.path, local_files_only=True).to(self.device).eval()
            self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"cannot load a CLIP model from {self.path} ({reason(exc)})",
                             "give a transformers CLIPModel folder with its tokenizer") from None
        vc = self.model.config.vision_config
        self.size, self.patch = int(vc.image_size), int(vc.patch_size)
        mean, std = CLIP_MEAN, CLIP_STD
        pre = self.path / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text(encoding="utf-8"))
            mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def patch_similarity(self, image: np.ndarray, text: str):
        """Cosine similarity of every projected patch token with the projected text (``g x g`` tensor)."""
        import torch
        import torch.nn.functional as F

        from geoseg.device import image_tensor

        m = self.model
        with torch.inference_mode():
            x = image_tensor(image, self.device) / 255.0
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
            tokens = m.vision_model(pixel_values=(x - self._mean) / self._std).last_hidden_state[:, 1:]
            patches = F.normalize(m.visual_projection(m.vision_model.post_layernorm(tokens)), dim=-1)[0]
            enc = self.tokenizer([text], padding=True, truncation=True,
                                 max_length=m.config.text_config.max_position_embeddings, return_tensors="pt")
            pooled = m.text_model(input_ids=enc["input_ids"].to(self.device),
                                  attention_mask=enc["attention_mask"].to(self.device)).pooler_output
            txt = F.normalize(m.text_projection(pooled), dim=-1)[0]
            g = self.size // self.patch
            return (patches @ txt).view(g, g)

    def similarity(self, image: np.ndarray, text: str) -> np.ndarray:
        import torch.nn.functional as F

        h, w = image.shape[:2]
        sim = self.patch_similarity(image, text)
        up = F.interpolate(sim[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        lo, hi = float(up.min()), float(up.max())
        out = (up - lo) / (hi - lo) if hi > lo else up * 0.0
        return out.cpu().numpy().astype(np.float32)

    def provenance(self) -> dict:
        return {"similarity": f"clip:{self.path.name}"}


def build_similarity(spec: str | SimilaritySource | None, session: ImageSession | None = None,
                     device: str | None = "auto") -> SimilaritySource:
    """A similarity source from a user option.

    Args:
        spec: ``None``/``"unified"`` (default), ``"clip:PATH"``, a CLIP folder path, or a source object.
        session: the unified model's session when it is already built (shared, no second copy).
        device: for models built here.
    """
    if spec is not None and not isinstance(spec, str):
        if not isinstance(spec, SimilaritySource):
            raise GeosegError(f"{spec!r} is not a similarity source", "give an object with similarity(image, text)")
        return spec
    if spec in (None, "", "unified"):
        ok = session is not None and hasattr(session.segmenter, "similarity_map")
        return UnifiedSimilarity(session if ok else None, device=device)
    path = spec[len("clip:"):] if spec.startswith("clip:") else spec
    if not Path(path).exists():
        raise InputError(f"similarity source {spec!r} is neither 'unified' nor an existing CLIP folder",
                         "use --similarity unified or --similarity clip:PATH/TO/CLIP")
    return ClipSimilarity(path, device=device)
