"""``TrainFreeSegmenter``: the training-free route (GeoSeg) behind the segmenter contract.

For each text prompt: a multimodal LLM behind an OpenAI-compatible server grounds the
instruction to a box (:class:`~geoseg.trainfree.client.GroundingClient`) → the box is
refined (GeoSeg's fixed rule, or the backend's calibrated profile) → dual-route prompting
(:mod:`geoseg.trainfree.dual_route`) turns it into a mask with a mask backend: SAM or SAM 2
when the user has their weights, otherwise the unified model's interactive head (the
shipped default checkpoint), so the route runs with no SAM weights at all.

Registered as backend ``trainfree``: ``geoseg segment IMG --backend trainfree --text ...
--vlm-url http://HOST:PORT/v1`` and ``geoseg bench run --model trainfree --vlm-url ...``.
The ablation switches (refinement ``none``/``fixed``/``calibrated``, routes ``A``/``B``/``both``)
are constructor options.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from geoseg.errors import GeosegError, InputError
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter
from geoseg.trainfree.dual_route import ROUTES, DualRouteConfig, ImageSession, dual_route

log = logging.getLogger(__name__)

REFINEMENTS: tuple[str, ...] = ("auto", "none", "fixed", "calibrated")
#: the unified model was trained on 512-px tiles: its crops are never smaller (see DualRouteConfig.min_crop)
UNIFIED_MIN_CROP = 512
#: default routes with the unified mask backend: its point head is weak, so route A's points and the
#: intersection lower IoU (benchmarks/trainfree_ablation.py); SAM / SAM 2 get GeoSeg's both routes
UNIFIED_ROUTES = "B"
#: environment variables the backend falls back on when no vlm_* argument is given
ENV_URL, ENV_MODEL, ENV_KEY = "GEOSEG_VLM_URL", "GEOSEG_VLM_MODEL", "GEOSEG_VLM_KEY"
ENV_FAMILY, ENV_TIMEOUT, ENV_MAX_PIXELS = "GEOSEG_VLM_FAMILY", "GEOSEG_VLM_TIMEOUT", "GEOSEG_VLM_MAX_PIXELS"
ENV_MAX_TOKENS = "GEOSEG_VLM_MAX_TOKENS"
#: answer length asked of the model when nothing sets it (a grounding answer is a few dozen tokens)
DEFAULT_MAX_TOKENS = 512
#: mask-backend weights for the route where no --checkpoint flag reaches the backend (bench runs)
ENV_MASK_CHECKPOINT = "GEOSEG_TRAINFREE_CHECKPOINT"

Box = tuple[float, float, float, float]


def _env_number(name: str, kind: type[int] | type[float], example: str) -> int | float | None:
    """``$name`` as a ``kind`` (``None`` when unset or empty); a one-line error when it is not one."""
    value = (os.environ.get(name) or "").strip()
    if not value:
        return None
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise GeosegError(f"${name}={value!r} is not {what}", f"set {name} to {example}, or unset it") from None


def _first(*values: Any) -> Any:
    """The first value that is not ``None`` (so an explicit 0 reaches validation instead of becoming a default)."""
    return next((v for v in values if v is not None), None)


class Grounder(Protocol):
    """What the route needs from a grounder: ``ground(image, instruction)`` → an object with
    ``box`` (original-image pixels or ``None``), ``points``, ``label``, ``raw`` and ``family``.
    A :class:`~geoseg.trainfree.client.GroundingClient` is one; the ablation uses others."""

    def ground(self, image: np.ndarray, instruction: str) -> Any: ...


def build_mask_backend(mask_backend: str | Segmenter | None = None, checkpoint: str | os.PathLike | None = None,
                       device: str | None = "auto", threads: int | None = None) -> Segmenter:
    """The segmenter the routes prompt.

    Args:
        mask_backend: ``auto`` / ``None`` (from the checkpoint's kind; the shipped unified model
            when there is none), ``sam``, ``sam2``, ``unified``, or a built segmenter.
        checkpoint: SAM / SAM 2 / unified weights.
    """
    from geoseg.segmenters import build_segmenter
    from geoseg.segmenters.sam import sniff_checkpoint

    if isinstance(mask_backend, Segmenter):
        return mask_backend
    name = mask_backend or "auto"
    sniffed = False
    if name == "auto":
        if checkpoint and not Path(checkpoint).is_file():
            raise GeosegError(f"mask-backend checkpoint {checkpoint} does not exist",
                              "pass --checkpoint PATH to SAM (.pth), SAM 2 (.pt) or geoseg unified weights, "
                              "or leave it out for the shipped unified model")
        kind = sniff_checkpoint(checkpoint) if checkpoint else "unknown"
        name = kind if kind in ("sam", "sam2") else "unified"
        sniffed = bool(checkpoint) and kind not in ("sam", "sam2")
    if name not in ("sam", "sam2", "unified"):
        raise GeosegError(f"unknown mask backend {name!r} for the trainfree route", "use auto, sam, sam2 or unified")
    kw: dict[str, Any] = {"device": device}
    if checkpoint:
        kw["checkpoint"] = str(checkpoint)
    if name == "unified":
        # the routes' boxes are the MLLM's estimates, not the object's extent, so the unified model's
        # GrabCut re-cut (which takes everything outside a box as background) stays off here
        kw["refine"] = False
        if threads:
            kw["threads"] = threads
    try:
        seg = build_segmenter(name, **kw)
    except InputError as exc:
        if not sniffed:
            raise
        # neither SAM nor SAM 2 weights were recognised, and the unified model could not read the file
        # either (a truncated download, another model's file): say so, not "a file written by geoseg train"
        raise GeosegError(f"mask-backend checkpoint {checkpoint} is neither SAM, SAM 2 nor geoseg unified weights "
                          f"({exc.problem})",
                          "pass a complete official SAM (.pth) or SAM 2 (.pt) file (re-download a truncated one), "
                          "or leave --checkpoint out for the shipped unified model") from None
    if not {"point", "box"} <= seg.capabilities:
        raise GeosegError(f"mask backend {seg.name!r} cannot take point and box prompts", "use sam, sam2 or unified")
    return seg


class TrainFreeSegmenter(Segmenter):
    """MLLM grounding → bias-aware refinement → dual-route prompting (registry name ``trainfree``; text prompts).

    Args:
        checkpoint: mask-backend weights (SAM ``.pth``, SAM 2 ``.pt`` or a unified checkpoint;
            the kind is read from the file). ``None``: ``$GEOSEG_TRAINFREE_CHECKPOINT``, else the
            shipped unified model.
        device: ``auto``, ``cpu`` or ``cuda`` for the local models.
        vlm_url, vlm_model, vlm_key: the OpenAI-compatible endpoint (``http://HOST:PORT/v1``), the
            served model name and the API key; default ``$GEOSEG_VLM_URL`` / ``_MODEL`` / ``_KEY``,
            then ``$OPENAI_BASE_URL`` / ``$OPENAI_MODEL`` / ``$OPENAI_API_KEY``.
        vlm_family: the model family whose image size and coordinate convention apply (default
            ``$GEOSEG_VLM_FAMILY``, else ``auto``: guessed from the model name).
        vlm_timeout, vlm_retries: per-request time-out (s; default ``$GEOSEG_VLM_TIMEOUT``, else 60) and retries.
        vlm_max_pixels: image budget of a server started with a non-default one (``$GEOSEG_VLM_MAX_PIXELS``).
        vlm_max_tokens: answer length limit (``$GEOSEG_VLM_MAX_TOKENS``, else 512); a thinking model needs thousands.
        grounder: a ready grounder (anything with ``ground(image, instruction)``) instead of a client.
        mask_backend: ``auto``, ``sam``, ``sam2``, ``unified`` or a built segmenter.
        similarity: route A's source: ``unified`` (default), ``clip:PATH`` or a source object.
        refinement: ``auto`` (the backend's calibrated profile when one exists, else the fixed
            rule), ``none`` (the box clamped to the image), ``fixed`` or ``calibrated``.
        profile: a :class:`~geoseg.trainfree.refine.CalibrationProfile` or its JSON path (instead
            of the one stored for the backend).
        routes: ``A``, ``B`` or ``both``; default ``both`` (GeoSeg's recipe) with SAM / SAM 2 and ``B``
            with the unified model, whose weak point head makes route A cost IoU (see docs/trainfree.md).
        threshold, margin, max_points, min_crop, box_text: dual-route settings
            (:class:`~geoseg.trainfree.dual_route.DualRouteConfig`); ``min_crop``/``box_text``
            default per mask backend (unified: 512 / off; SAM: 0 / on).
        threads: torch CPU threads for the unified model.
    """

    name: ClassVar[str] = "trainfree"
    capabilities: ClassVar[frozenset[str]] = frozenset({"text"})

    def __init__(self, checkpoint: str | os.PathLike | None = None, device: str | None = "auto", *,
                 vlm_url: str | None = None, vlm_model: str | None = None, vlm_key: str | None = None,
                 vlm_family: str | None = None, vlm_timeout: float | None = None, vlm_retries: int = 2,
                 vlm_max_pixels: int | None = None, vlm_max_tokens: int | None = None,
                 grounder: Grounder | None = None, mask_backend: str | Segmenter | None = None,
                 similarity: Any = "unified", refinement: str = "auto", profile: Any = None,
                 routes: str | None = None, threshold: float = 0.8, margin: float = 0.1, max_points: int = 3,
                 min_crop: int | None = None, box_text: bool | None = None, threads: int | None = None,
                 **_: object) -> None:
        super().__init__()
        if refinement not in REFINEMENTS:
            raise GeosegError(f"unknown refinement {refinement!r}", f"use one of {', '.join(REFINEMENTS)}")
        if routes is not None and routes not in ROUTES:
            raise GeosegError(f"unknown route setting {routes!r}", "use A, B or both")
        if grounder is None:
            from geoseg.trainfree.client import GroundingClient

            env_timeout = _env_number(ENV_TIMEOUT, float, "seconds, e.g. 60")
            env_pixels = _env_number(ENV_MAX_PIXELS, int, "a whole number of pixels")
            env_tokens = _env_number(ENV_MAX_TOKENS, int, "a whole number of tokens, e.g. 4096")
            grounder = GroundingClient(base_url=vlm_url or os.environ.get(ENV_URL),
                                       model=vlm_model or os.environ.get(ENV_MODEL),
                                       api_key=vlm_key or os.environ.get(ENV_KEY),
                                       family=vlm_family or os.environ.get(ENV_FAMILY) or "auto",
                                       timeout=_first(vlm_timeout, env_timeout, 60.0),
                                       retries=vlm_retries,
                                       max_pixels=_first(vlm_max_pixels, env_pixels),
                                       max_tokens=_first(vlm_max_tokens, env_tokens, DEFAULT_MAX_TOKENS))
        self.grounder = grounder
        ckpt = checkpoint or os.environ.get(ENV_MASK_CHECKPOINT) or None
        self.session = ImageSession(build_mask_backend(mask_backend, ckpt, device, threads))
        unified = self.session.segmenter.name == "unified"
        if routes is None:  # see docs/trainfree.md: route A through the unified point head only costs IoU
            routes = UNIFIED_ROUTES if unified else "both"
        self.config = DualRouteConfig(
            routes=routes, threshold=threshold, margin=margin, max_points=max_points,  # type: ignore[arg-type]
            min_crop=(UNIFIED_MIN_CROP if unified else 0) if min_crop is None else int(min_crop),
            box_text=(not unified) if box_text is None else bool(box_text))
        self.similarity = None
        if routes != "B":
            from geoseg.trainfree.similarity import build_similarity

            self.similarity = build_similarity(similarity, self.session, device)
        self.refinement = refinement
        self._profile_arg = profile
        self._profile: Any = None
        self._refine_mode: str | None = None
        self._image: np.ndarray | None = None
        #: prompt text -> why its last grounding gave no box (the note of an empty answer names it)
        self._no_box: dict[str, str] = {}

    # -- refinement --------------------------------------------------------------------------
    def _backend_key(self) -> str | None:
        key = getattr(self.grounder, "backend_key", None)
        return str(key) if key else None

    def refine_mode(self) -> str:
        """The refinement actually applied (``auto`` resolved: ``calibrated`` when a profile exists)."""
        if self._refine_mode is None:
            from geoseg.trainfree.refine import CalibrationProfile, load_profile

            prof = self._profile_arg
            if isinstance(prof, (str, os.PathLike)):
                prof = CalibrationProfile.load(prof)
            if prof is None and self.refinement in ("auto", "calibrated"):
                key = self._backend_key()
                prof = load_profile(key) if key else None
                if prof is None and self.refinement == "calibrated":
                    raise GeosegError(f"no calibration profile for grounding backend {key!r}",
                                      "run 'geoseg trainfree calibrate' for it, or use refinement fixed")
            mode = self.refinement
            if mode == "auto":
                mode = "calibrated" if prof is not None else "fixed"
            self._profile = prof if mode == "calibrated" else None
            self._refine_mode = mode
            if mode == "calibrated":
                log.info("refining boxes with calibration profile %s", getattr(prof, "key", "?"))
        return self._refine_mode

    def refine(self, box: Box, width: int, height: int) -> Box | None:
        """The box handed to the dual route; ``None`` when nothing of it lies inside the image."""
        from geoseg.trainfree.refine import clamp_box, refine_box

        mode = self.refine_mode()
        if mode == "none":
            out = clamp_box(tuple(float(v) for v in box), width, height)  # type: ignore[arg-type]
        else:
            out = refine_box(box, width, height, self._profile if mode == "calibrated" else None)
        return out if out[2] > out[0] and out[3] > out[1] else None

    # -- segmenter contract ------------------------------------------------------------------
    def _set_image(self, image: np.ndarray) -> None:
        self._image = image

    def _empty(self, text: str, info: dict) -> Prediction:
        log.info("no mask for %r (%s): %s", text, info["grounding"], info.get("reason") or info.get("vlm_raw", ""))
        h, w = self.image_shape
        return Prediction(mask=np.zeros((h, w), bool), score=0.0, prob=np.zeros((h, w), np.float32), info=info)

    def _predict(self, prompt: Prompt) -> Prediction:
        from geoseg.trainfree.client import NoBoxError

        if self._image is None:
            raise RuntimeError("call set_image() before predict()")
        image = self._image
        h, w = image.shape[:2]
        text = prompt.text or ""
        try:
            g = self.grounder.ground(image, text)
        except NoBoxError as exc:
            self._remember_no_box(text, exc)
            return self._empty(text, {"grounding": "no box", "reason": str(exc)})
        base = {"vlm_box": None if g.box is None else [float(v) for v in g.box], "label": g.label,
                "family": getattr(g, "family", ""), "vlm_raw": str(getattr(g, "raw", ""))[:500]}
        noun = (g.label or text).strip()
        if g.box is None:  # points only: the points prompt the mask backend on the whole image
            pts = tuple((float(x), float(y)) for x, y in g.points if 0 <= x < w and 0 <= y < h)
            if not pts:
                return self._empty(text, {**base, "grounding": "no box"})
            pred = self.session.predict(image, Prompt(points=pts, labels=(1,) * len(pts), task="interactive"))
            return Prediction(mask=pred.mask, score=pred.score, prob=pred.prob, info={**base, "grounding": "points"})
        refined = self.refine(g.box, w, h)
        if refined is None:
            return self._empty(text, {**base, "grounding": "box outside the image"})
        out = dual_route(image, refined, noun, self.session, self.similarity, self.config)
        info = {**base, **out.info, "grounding": "box", "refinement": self.refine_mode(),
                "refined_box": [float(v) for v in refined]}
        return Prediction(mask=out.mask, score=out.score, prob=out.prob, info=info)

    def _remember_no_box(self, text: str, exc: Exception) -> None:
        """Keep why ``text`` got no box; a wrong coordinate frame outranks a plain miss (it is the fix to make)."""
        from geoseg.trainfree.client import FrameMismatchError

        if isinstance(exc, FrameMismatchError) or text not in self._no_box:
            self._no_box[text] = str(exc)

    def empty_answer_hint(self, prompt: Prompt) -> str | None:
        """Where an empty answer comes from on this route: the multimodal LLM's grounding, logged at -v.

        When the model's answer held no usable box, the note says why (its quoted answer, or the
        coordinate frame it wrote its box in and the ``--vlm-family`` that reads it).
        """
        model = getattr(self.grounder, "model", type(self.grounder).__name__)
        why = self._no_box.get(prompt.text or "")
        if why:
            return f"the multimodal LLM ({model}) gave no usable box: {why}"
        return (f"the multimodal LLM ({model}) grounds the text and gave no usable box or point, or the mask "
                "backend found nothing in it; -v logs its answers; rephrase the instruction or try another --vlm-model")

    def provenance(self) -> dict:
        prov = super().provenance()
        prov.update({
            "vlm_model": str(getattr(self.grounder, "model", type(self.grounder).__name__)),
            "vlm_url": str(getattr(self.grounder, "display_url", None) or getattr(self.grounder, "base_url", "")),
            "mask_backend": self.session.segmenter.provenance(),
            "similarity": (getattr(self.similarity, "provenance", lambda: {})() if self.similarity else {}),
            "refinement": self.refine_mode(),
            "routes": self.config.routes,
        })
        fam = getattr(self.grounder, "family", None)
        if fam is not None:
            prov["vlm_family"] = str(getattr(fam, "name", fam))
        return prov
