"""``SamSegmenter``: Segment Anything (the ``segment-anything`` package) behind the segmenter contract.

The user brings the weights (``--checkpoint sam_vit_b_01ec64.pth``; nothing is ever
downloaded). The official checkpoints are plain state dicts; the architecture (ViT-B/L/H,
or any other size built with the package's classes) is read from the tensor shapes, so
``model_type`` only has to be given to insist on one.

The package's ``SamPredictor`` (and its package ``__init__``) import torchvision, which
geoseg does not install (it pins a CPU torch build that torchvision would replace). The
backend therefore loads only the package's builder and ``modeling`` modules, and does the
predictor's two small jobs itself, in torch: resize the longest side to the encoder's
input size (bilinear, antialiased) and map prompt coordinates into that frame. Everything
else — normalisation, padding, the encoders, the decoder and mask post-processing — is
the package's own code (``Sam.preprocess``, ``Sam.postprocess_masks``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from geoseg.device import image_tensor, resolve_device
from geoseg.errors import GeosegError, InputError, MissingExtraError, reason
from geoseg.prompts import Prompt
from geoseg.segmenters.base import Prediction, Segmenter

log = logging.getLogger(__name__)

SAM_TYPES = ("vit_b", "vit_l", "vit_h")
# the published encoders: (embed_dim, depth, heads, global-attention blocks)
_PUBLISHED = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}


# --------------------------------------------------------------------------------------
# shared helpers (also used by the SAM 2 backend)
# --------------------------------------------------------------------------------------


def load_weights_file(path: str | os.PathLike, what: str, fix: str) -> Any:
    """``torch.load`` a weights file safely (tensors only, memory-mapped when possible).

    Raises:
        InputError: the file is missing or is not a torch weights file.
    """
    import torch

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{what} checkpoint {p} does not exist", fix)
    try:
        try:
            return torch.load(p, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input problem
        if is_truncated(p, exc):
            raise InputError(f"{what} checkpoint {p} is cut short ({p.stat().st_size:,} bytes; an interrupted "
                             "download or copy?)", "download or copy it again and check its size against the "
                             "published one") from None
        raise InputError(f"cannot read {what} checkpoint {p} ({reason(exc)})", fix) from None


def is_truncated(path: Path, exc: BaseException) -> bool:
    """Whether ``torch.load`` failed on ``path`` because the file ends early.

    A torch zip archive that lost its tail keeps its first entry's header but not the central
    directory at the end; a legacy (pickle) file or an empty one runs out of bytes (EOF).
    """
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:  # unreadable (permissions): the caller names the error as it is
        return False
    if head == b"PK\x03\x04":
        return not zipfile.is_zipfile(path)
    return isinstance(exc, EOFError) or "EOF" in str(exc)


#: keys under which training loops store the network's weights next to optimiser state etc.
_WRAPPERS = ("model", "state_dict", "model_state_dict", "module")
#: prefixes a wrapper adds to every key (DataParallel/DistributedDataParallel, torch.compile)
_KEY_PREFIXES = ("module.", "_orig_mod.")


def state_dict_of(obj: Any) -> dict | None:
    """The network's state dict inside a loaded checkpoint, or ``None`` when there is none.

    The official SAM files are flat state dicts and the SAM 2 files ``{"model": state_dict}``;
    fine-tuning code commonly saves ``{"model"|"state_dict": ..., "optimizer": ..., "epoch": ...}``
    and, under (Distributed)DataParallel or ``torch.compile``, prefixes every key with
    ``module.`` / ``_orig_mod.``. All of these hold the same network, so all are unwrapped.
    """
    if not isinstance(obj, dict):
        return None
    for key in _WRAPPERS:
        inner = obj.get(key)
        if isinstance(inner, dict) and any(hasattr(v, "shape") for v in inner.values()):  # tensors, not a config
            obj = inner
            break
    keys = [k for k in obj if isinstance(k, str)]
    if not keys:
        return None
    for prefix in _KEY_PREFIXES:
        if all(k.startswith(prefix) for k in keys):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def checkpoint_kind(obj: Any) -> str:
    """What a loaded checkpoint holds: ``sam``, ``sam2``, ``unified`` or ``unknown``.

    SAM state dicts have ``image_encoder.patch_embed`` keys, SAM 2 ones a Hiera
    ``image_encoder.trunk`` (either wrapped as :func:`state_dict_of` unwraps); geoseg's own
    checkpoints carry ``format == "geoseg.unigeoseg"``.
    """
    if not isinstance(obj, dict):
        return "unknown"
    if obj.get("format") == "geoseg.unigeoseg":
        return "unified"
    sd = state_dict_of(obj) or {}
    keys = [k for k in sd if isinstance(k, str)]
    if any(k.startswith("image_encoder.trunk.") for k in keys):
        return "sam2"
    if any(k.startswith("image_encoder.patch_embed.") for k in keys) and any(k.startswith("mask_decoder.") for k in keys):
        return "sam"
    return "unknown"


def sniff_checkpoint(path: str | os.PathLike) -> str:
    """The :func:`checkpoint_kind` of a file (``unknown`` when it is not a tensors-only torch file)."""
    try:
        import torch

        obj = torch.load(Path(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - geoseg checkpoints hold non-tensor objects; caller decides
        return "unknown"
    return checkpoint_kind(obj)


def wrong_kind_error(path: str | os.PathLike, kind: str, expected: str) -> GeosegError:
    """The one-line error for a checkpoint of another model family."""
    backend = {"sam": "sam", "sam2": "sam2", "unified": "unified"}.get(kind)
    fix = (f"use --backend {backend} for this file" if backend
           else f"pass the official {expected} checkpoint (a .pt/.pth file of that model's weights)")
    what = {"sam": "a SAM", "sam2": "a SAM 2", "unified": "a geoseg unified-model"}.get(kind, "not a recognised")
    return GeosegError(f"{path} is {what} checkpoint, not a {expected} one", fix)


def import_segment_anything() -> tuple[Any, Any]:
    """The package's ``build_sam`` and ``modeling`` modules, without its torchvision-bound ``__init__``.

    Raises:
        MissingExtraError: ``segment-anything`` is not installed.
    """
    if "segment_anything.build_sam" in sys.modules and "segment_anything.modeling" in sys.modules:
        return sys.modules["segment_anything.build_sam"], sys.modules["segment_anything.modeling"]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("sam", "segment-anything")
    parent = sys.modules.get("segment_anything")
    placeholder = None
    if parent is None:  # an un-executed package object: submodules import, __init__ (torchvision) does not run
        placeholder = importlib.util.module_from_spec(spec)
        sys.modules["segment_anything"] = placeholder
    try:
        build_sam = importlib.import_module("segment_anything.build_sam")
        modeling = importlib.import_module("segment_anything.modeling")
    except ImportError as exc:
        raise MissingExtraError("sam", "segment-anything") from exc
    finally:
        if placeholder is not None and sys.modules.get("segment_anything") is placeholder:
            del sys.modules["segment_anything"]  # a later plain import behaves as it would have
    return build_sam, modeling


# --------------------------------------------------------------------------------------
# architecture from the weights
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamArch:
    """The hyper-parameters of a SAM network, as read from its state dict."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int
    img_size: int
    patch_size: int
    prompt_dim: int
    mask_in_chans: int
    num_multimask_outputs: int
    decoder_depth: int
    decoder_mlp_dim: int
    iou_head_depth: int
    iou_head_hidden_dim: int

    @property
    def published_type(self) -> str | None:
        """``vit_b``/``vit_l``/``vit_h`` when this is a published architecture, else ``None``."""
        for name, (dim, depth, heads, glob) in _PUBLISHED.items():
            if (self.embed_dim, self.depth, self.num_heads, self.global_attn_indexes) == (dim, depth, heads, glob) \
                    and self.img_size == 1024 and self.patch_size == 16 and self.window_size == 14 \
                    and self.prompt_dim == 256 and self.decoder_depth == 2 and self.decoder_mlp_dim == 2048:
                return name
        return None

    @property
    def label(self) -> str:
        return self.published_type or f"custom ViT (dim {self.embed_dim}, depth {self.depth}, {self.img_size} px)"


def _count(sd: dict, prefix: str) -> int:
    idx = {int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit()}
    return max(idx) + 1 if idx else 0


def infer_sam_arch(sd: dict) -> SamArch:
    """Read the architecture from a SAM state dict's tensor shapes.

    Raises:
        KeyError: a tensor every SAM network has is missing (not a SAM state dict).
    """
    proj = sd["image_encoder.patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    grid = int(sd["image_encoder.pos_embed"].shape[1])
    depth = _count(sd, "image_encoder.blocks.")
    head_dim = int(sd["image_encoder.blocks.0.attn.rel_pos_h"].shape[1])
    spans = [(int(sd[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) + 1) // 2 for i in range(depth)]
    glob = tuple(i for i, s in enumerate(spans) if s == grid)
    windowed = [s for s in spans if s != grid]
    return SamArch(
        embed_dim=embed_dim, depth=depth, num_heads=embed_dim // head_dim, global_attn_indexes=glob,
        window_size=windowed[0] if windowed else 0, img_size=grid * patch, patch_size=patch,
        prompt_dim=int(sd["image_encoder.neck.0.weight"].shape[0]),
        mask_in_chans=int(sd["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
        num_multimask_outputs=int(sd["mask_decoder.mask_tokens.weight"].shape[0]) - 1,
        decoder_depth=_count(sd, "mask_decoder.transformer.layers."),
        decoder_mlp_dim=int(sd["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0]),
        iou_head_depth=_count(sd, "mask_decoder.iou_prediction_head.layers."),
        iou_head_hidden_dim=int(sd["mask_decoder.iou_prediction_head.layers.0.weight"].shape[0]),
    )


def build_sam_from_arch(arch: SamArch):
    """Build an (untrained) ``Sam`` for ``arch``: the package's registry for the published
    sizes, the package's own classes for any other size."""
    import torch

    build_sam, modeling = import_segment_anything()
    if arch.published_type is not None:
        return build_sam.sam_model_registry[arch.published_type]()
    grid = arch.img_size // arch.patch_size
    return modeling.Sam(
        image_encoder=modeling.ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=arch.global_attn_indexes, window_size=arch.window_size, out_chans=arch.prompt_dim),
        prompt_encoder=modeling.PromptEncoder(
            embed_dim=arch.prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(arch.img_size, arch.img_size), mask_in_chans=arch.mask_in_chans),
        mask_decoder=modeling.MaskDecoder(
            num_multimask_outputs=arch.num_multimask_outputs,
            transformer=modeling.TwoWayTransformer(depth=arch.decoder_depth, embedding_dim=arch.prompt_dim,
                                                   mlp_dim=arch.decoder_mlp_dim, num_heads=8),
            transformer_dim=arch.prompt_dim, iou_head_depth=arch.iou_head_depth,
            iou_head_hidden_dim=arch.iou_head_hidden_dim),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    )


_FIX = "pass --checkpoint PATH to an official SAM checkpoint (sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or sam_vit_h_4b8939.pth)"


def load_sam(checkpoint: str | os.PathLike, model_type: str = "auto", device: str | None = "cpu"):
    """Load a SAM network from an official checkpoint file.

    Args:
        checkpoint: the ``.pth`` state dict (or one a training loop wrapped, see :func:`state_dict_of`).
        model_type: ``auto`` (read from the weights) or ``vit_b``/``vit_l``/``vit_h`` to insist on one.
        device: where the network runs.

    Returns:
        ``(sam, arch)`` — the ``segment_anything.modeling.Sam`` in eval mode and its :class:`SamArch`.
    """
    if model_type not in ("auto", *SAM_TYPES):
        raise GeosegError(f"unknown SAM model type {model_type!r}", f"use auto or one of {', '.join(SAM_TYPES)}")
    import_segment_anything()  # a missing package is reported before the file is read
    payload = load_weights_file(checkpoint, "SAM", _FIX)
    kind = checkpoint_kind(payload)
    if kind != "sam":
        raise wrong_kind_error(checkpoint, kind, "SAM")
    sd = state_dict_of(payload)
    try:
        arch = infer_sam_arch(sd)
    except (KeyError, IndexError, ValueError) as exc:
        raise GeosegError(f"{checkpoint} does not hold a complete SAM network (no tensor {exc})", _FIX) from None
    if model_type != "auto" and arch.published_type != model_type:
        raise GeosegError(f"{checkpoint} holds a SAM {arch.label}, not {model_type}",
                          "leave the model type on auto or give the matching one")
    sam = build_sam_from_arch(arch)
    try:
        sam.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise GeosegError(f"{checkpoint} does not fit the SAM {arch.label} network ({first[:160]})", _FIX) from None
    sam.to(resolve_device(device)).eval()
    log.info("loaded SAM %s from %s", arch.label, checkpoint)
    return sam, arch


def longest_side_shape(height: int, width: int, target: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the longest side to ``target`` (rounded to the nearest pixel)."""
    scale = target / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def prompt_to_sam_frame(prompt: Prompt, height: int, width: int, in_h: int, in_w: int
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Prompt coordinates in the network's input frame, as SAM's prompt encoder expects them.

    geoseg coordinates are continuous (a pixel's centre is at ``i + 0.5``); SAM's encoder
    takes pixel indices and adds 0.5 itself. So a continuous coordinate ``c`` is scaled to
    the resized frame and given as ``c * s - 0.5``: the encoder then sees exactly ``c * s``.

    Returns:
        ``(coords N×2, labels N, box 4)`` as float32/int arrays, ``None`` for absent parts.
    """
    sx, sy = in_w / width, in_h / height
    coords = labels = box = None
    if prompt.points:
        coords = np.array([[x * sx - 0.5, y * sy - 0.5] for x, y in prompt.points], dtype=np.float32)
        labels = np.array(prompt.labels, dtype=np.int64)
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        box = np.array([x0 * sx - 0.5, y0 * sy - 0.5, x1 * sx - 0.5, y1 * sy - 0.5], dtype=np.float32)
    return coords, labels, box


class SamSegmenter(Segmenter):
    """Segment Anything with the user's weights (registry name ``sam``; point and box prompts).

    Args:
        checkpoint: the official ``.pth`` (or ``$GEOSEG_SAM_CHECKPOINT`` when left out).
        model_type: ``auto`` (read from the weights) or ``vit_b``/``vit_l``/``vit_h``.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        multimask: ``auto`` asks for SAM's three candidate masks only for a lone point (the
            ambiguous case) and keeps the one with the best predicted IoU; ``True``/``False`` force it.
    """

    name: ClassVar[str] = "sam"
    capabilities: ClassVar[frozenset[str]] = frozenset({"point", "box"})
    shares_windows: ClassVar[bool] = True  # every window is resized to 1024 px: embed it once for all prompts

    def __init__(self, checkpoint: str | os.PathLike | None = None, model_type: str = "auto",
                 device: str | None = "auto", multimask: bool | str = "auto", **_: object) -> None:
        super().__init__()
        checkpoint = checkpoint or os.environ.get("GEOSEG_SAM_CHECKPOINT")
        if not checkpoint:
            raise GeosegError("the sam backend needs SAM weights", _FIX + " or set GEOSEG_SAM_CHECKPOINT")
        self.device = resolve_device(device)
        self.model, self.arch = load_sam(checkpoint, model_type, self.device)
        self.checkpoint_path = Path(checkpoint)
        self.multimask = multimask
        self._features = None
        self._input_hw: tuple[int, int] | None = None

    def _set_image(self, image: np.ndarray) -> None:
        import torch
        import torch.nn.functional as F

        h, w = image.shape[:2]
        size = self.model.image_encoder.img_size
        nh, nw = longest_side_shape(h, w, size)
        with torch.inference_mode():
            x = image_tensor(image, self.device)
            x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255)  # the reference predictor feeds uint8 pixels
            self._features = self.model.image_encoder(self.model.preprocess(x))
        self._input_hw = (nh, nw)

    def _predict(self, prompt: Prompt) -> Prediction:
        import torch

        if self._features is None or self._input_hw is None:
            raise RuntimeError("call set_image() before predict()")
        h, w = self.image_shape
        nh, nw = self._input_hw
        coords, labels, box = prompt_to_sam_frame(prompt, h, w, nh, nw)
        multi = (len(prompt.points) == 1 and prompt.box is None) if self.multimask == "auto" else bool(self.multimask)
        dev = self.device
        with torch.inference_mode():
            points = None
            if coords is not None:
                points = (torch.from_numpy(coords)[None].to(dev), torch.from_numpy(labels)[None].to(dev))
            boxes = torch.from_numpy(box)[None].to(dev) if box is not None else None
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
            low, iou = self.model.mask_decoder(
                image_embeddings=self._features, image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multi)
            best = int(torch.argmax(iou[0]))
            logits = self.model.postprocess_masks(low[:, best:best + 1], (nh, nw), (h, w))[0, 0].float()
            prob = torch.sigmoid(logits).cpu().numpy().astype(np.float32)
            mask = (logits > self.model.mask_threshold).cpu().numpy()
        score = float(np.clip(float(iou[0, best]), 0.0, 1.0))
        return Prediction(mask=mask, score=score, prob=prob, info={"candidate": best, "multimask": multi})

    def provenance(self) -> dict:
        prov = super().provenance()
        prov.update({"checkpoint": self.checkpoint_path.name, "arch": f"sam {self.arch.label}"})
        return prov
