"""``Sam2Segmenter``: SAM 2 / SAM 2.1 (the ``sam2`` package) behind the segmenter contract.

The network is built by the package's own builder (``sam2.build_sam.build_sam2``, a Hydra
config shipped inside the package) and the user's official checkpoint — ``{"model":
state_dict}`` — is loaded into it. The config is read from the weights when not given:
the Hiera trunk's width and depth tell tiny / small / base+ / large apart, and the SAM 2.1
checkpoints carry tensors SAM 2 lacks (``no_obj_embed_spatial``).

``SAM2ImagePredictor`` imports torchvision for its transforms (geoseg does not install it),
so the backend does the predictor's job with the model's own parts: the image is resized
to the model's square input and normalised (ImageNet statistics) in torch, encoded once
with ``forward_image`` / ``_prepare_backbone_features``; each prompt goes through
``sam_prompt_encoder`` (a box is the two corner points with labels 2 and 3, as SAM 2
expects) and ``sam_mask_decoder`` with the high-resolution features, and the low-resolution
logits are upsampled to the image.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from geoseg.device import image_tensor, resolve_device
from geoseg.errors import GeosegError, MissingExtraError, reason
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter
from geoseg.segmenters.sam import checkpoint_kind, load_weights_file, state_dict_of, wrong_kind_error

log = logging.getLogger(__name__)

#: (trunk width, trunk blocks) -> config suffix of the published models
_SIZES = {(96, 12): "t", (96, 16): "s", (112, 24): "b+", (144, 48): "l"}
_NAMES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}
_FIX = ("pass --checkpoint PATH to an official SAM 2 checkpoint (sam2_hiera_tiny.pt, sam2.1_hiera_large.pt, ...)")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def import_sam2() -> Any:
    """The package's ``build_sam`` module.

    Raises:
        MissingExtraError: ``sam2`` (or the Hydra/iopath it needs) is not installed.
    """
    try:
        from sam2 import build_sam
    except ImportError as exc:
        err = MissingExtraError("sam2", "sam2")
        GeosegError.__init__(err, err.problem, err.fix + " then: SAM2_BUILD_CUDA=0 pip install --no-deps "
                             "--no-build-isolation sam2==1.1.0 (its torchvision requirement is not needed)")
        raise err from exc
    return build_sam


def infer_sam2_config(sd: dict) -> str:
    """The package config (``configs/sam2.1/sam2.1_hiera_t.yaml`` ...) that fits a SAM 2 state dict.

    Raises:
        GeosegError: the trunk is not one of the published sizes (give ``config`` explicitly).
    """
    width = int(sd["image_encoder.trunk.patch_embed.proj.weight"].shape[0])
    blocks = {k.split(".")[3] for k in sd if k.startswith("image_encoder.trunk.blocks.")}
    size = _SIZES.get((width, len(blocks)))
    if size is None:
        raise GeosegError(f"a SAM 2 trunk of width {width} with {len(blocks)} blocks is not a published size",
                          "give the model's Hydra config explicitly (config=configs/sam2.1/....yaml)")
    version = "sam2.1" if "no_obj_embed_spatial" in sd else "sam2"
    return f"configs/{version}/{version}_hiera_{size}.yaml"


def load_sam2(checkpoint: str | os.PathLike, config: str | None = None, device: str | None = "cpu",
              image_size: int | None = None):
    """Build SAM 2 with the package's builder and load an official checkpoint into it.

    Args:
        checkpoint: ``{"model": state_dict}`` as published (a bare state dict, or one a training
            loop wrapped otherwise, is taken too: :func:`~geoseg.segmenters.sam.state_dict_of`).
        config: the package's Hydra config name (read from the weights when ``None``).
        device: where the network runs.
        image_size: override of the square input size (default: the config's, 1024).

    Returns:
        ``(model, config)``: the ``SAM2Base`` in eval mode and the config it was built from.
    """
    build_sam = import_sam2()
    payload = load_weights_file(checkpoint, "SAM 2", _FIX)
    kind = checkpoint_kind(payload)
    if kind != "sam2":
        raise wrong_kind_error(checkpoint, kind, "SAM 2")
    sd = state_dict_of(payload)
    try:
        config = config or infer_sam2_config(sd)
    except (KeyError, IndexError) as exc:
        raise GeosegError(f"{checkpoint} does not hold a complete SAM 2 network (no tensor {exc})", _FIX) from None
    overrides = [f"++model.image_size={int(image_size)}"] if image_size else []
    try:
        model = build_sam.build_sam2(config, None, device="cpu", mode="eval", hydra_overrides_extra=overrides)
    except Exception as exc:  # noqa: BLE001 - Hydra reports a bad config name in many ways
        raise GeosegError(f"cannot build SAM 2 from config {config!r} ({reason(exc)})",
                          "give one of the package's configs, e.g. configs/sam2.1/sam2.1_hiera_t.yaml") from None
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        first = lines[1].strip() if len(lines) > 1 else lines[0]
        raise GeosegError(f"{checkpoint} does not fit SAM 2 config {config} ({first[:160]})", _FIX) from None
    model.to(resolve_device(device)).eval()
    log.info("loaded SAM 2 (%s, %d px input) from %s", config, model.image_size, checkpoint)
    return model, config


def prompt_to_sam2_points(prompt: Prompt, height: int, width: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Box corners (labels 2, 3) then points, in the model's ``size``-px square frame.

    SAM 2's prompt encoder, like SAM's, takes pixel indices and adds 0.5; a continuous
    geoseg coordinate ``c`` is therefore given as ``c * s - 0.5`` (``s`` per axis).
    """
    sx, sy = size / width, size / height
    coords: list[list[float]] = []
    labels: list[int] = []
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        coords += [[x0 * sx - 0.5, y0 * sy - 0.5], [x1 * sx - 0.5, y1 * sy - 0.5]]
        labels += [2, 3]
    for (x, y), lab in zip(prompt.points, prompt.labels):
        coords.append([x * sx - 0.5, y * sy - 0.5])
        labels.append(int(lab))
    return np.asarray(coords, dtype=np.float32), np.asarray(labels, dtype=np.int32)


class Sam2Segmenter(Segmenter):
    """SAM 2 / 2.1 with the user's weights (registry name ``sam2``; point and box prompts).

    Args:
        checkpoint: the official ``.pt`` (or ``$GEOSEG_SAM2_CHECKPOINT`` when left out).
        config: the package's Hydra config (read from the weights when left out).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        image_size: input size override (default 1024, the published one).
        multimask: ``auto`` asks for three candidates only for a lone point and keeps the
            best predicted IoU; ``True``/``False`` force it.
    """

    name: ClassVar[str] = "sam2"
    capabilities: ClassVar[frozenset[str]] = frozenset({"point", "box"})
    shares_windows: ClassVar[bool] = True  # every window is resized to 1024 px: embed it once for all prompts

    def __init__(self, checkpoint: str | os.PathLike | None = None, config: str | None = None,
                 device: str | None = "auto", image_size: int | None = None, multimask: bool | str = "auto",
                 **_: object) -> None:
        super().__init__()
        checkpoint = checkpoint or os.environ.get("GEOSEG_SAM2_CHECKPOINT")
        if not checkpoint:
            raise GeosegError("the sam2 backend needs SAM 2 weights", _FIX + " or set GEOSEG_SAM2_CHECKPOINT")
        self.device = resolve_device(device)
        self.model, self.config = load_sam2(checkpoint, config, self.device, image_size)
        self.checkpoint_path = Path(checkpoint)
        self.multimask = multimask
        self._features: dict | None = None

    def _set_image(self, image: np.ndarray) -> None:
        import torch
        import torch.nn.functional as F

        size = int(self.model.image_size)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        with torch.inference_mode():
            x = image_tensor(image, self.device) / 255.0
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            backbone = self.model.forward_image((x - mean) / std)
            _, feats, _, sizes = self.model._prepare_backbone_features(backbone)
            if self.model.directly_add_no_mem_embed:
                feats[-1] = feats[-1] + self.model.no_mem_embed
            maps = [f.permute(1, 2, 0).reshape(1, -1, h, w) for f, (h, w) in zip(feats, sizes)]
        self._features = {"image_embed": maps[-1], "high_res_feats": maps[:-1]}

    def _predict(self, prompt: Prompt) -> Prediction:
        import torch
        import torch.nn.functional as F

        if self._features is None:
            raise RuntimeError("call set_image() before predict()")
        h, w = self.image_shape
        coords, labels = prompt_to_sam2_points(prompt, h, w, int(self.model.image_size))
        multi = (len(prompt.points) == 1 and prompt.box is None) if self.multimask == "auto" else bool(self.multimask)
        dev = self.device
        with torch.inference_mode():
            pts = (torch.from_numpy(coords)[None].to(dev), torch.from_numpy(labels)[None].to(dev))
            sparse, dense = self.model.sam_prompt_encoder(points=pts, boxes=None, masks=None)
            low, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=self._features["image_embed"], image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multi,
                repeat_image=False, high_res_features=self._features["high_res_feats"])
            best = int(torch.argmax(iou[0]))
            logits = F.interpolate(low[:, best:best + 1].float(), size=(h, w), mode="bilinear",
                                   align_corners=False)[0, 0]
            prob = torch.sigmoid(logits).cpu().numpy().astype(np.float32)
            mask = (logits > 0.0).cpu().numpy()
        score = float(np.clip(float(iou[0, best]), 0.0, 1.0))
        return Prediction(mask=mask, score=score, prob=prob, info={"candidate": best, "multimask": multi})

    def provenance(self) -> dict:
        prov = super().provenance()
        prov.update({"checkpoint": self.checkpoint_path.name, "arch": Path(self.config).stem})
        return prov
