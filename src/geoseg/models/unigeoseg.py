"""UniGeoSeg: one network for interactive, referring and reasoning segmentation.

image → :class:`ConvBackbone` → :class:`FPN` (cached per image) ;
instruction tokens + geometry → :class:`TATE` → :class:`LatentKnowledgeMemory` → mask query ;
pyramid + query (+ dense prompt map) → :class:`MaskDecoder` → mask logits and presence.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from geoseg.models.backbone import FPN, ConvBackbone
from geoseg.models.decoder import MaskDecoder, render_prompt_map
from geoseg.models.memory import LatentKnowledgeMemory
from geoseg.models.tate import TATE


class UniGeoSeg(nn.Module):
    """The unified instruction-driven segmentation network (text encoder excluded: it is frozen and cached).

    Args:
        channels, depths: backbone stage widths and depths.
        fpn_dim: pyramid / decoder width.
        text_dim: width of the text encoder's token embeddings.
        query_dim: mask query width.
        heads: attention heads (TATE reasoning pool and decoder).
        decoder_layers: query→image cross-attention layers.
        tate: task-aware text enhancement on (False: mean pooling ablation).
        latent_memory: number of latent knowledge vectors (0 disables the memory).
        memory_lambdas: λ per task (interactive, referring, reasoning).
        prompt_map: dense prompt channels in the decoder.
        class_memory_classes, class_memory_slots: GeoPix class-wise memory (0 classes = off).
        semantic_classes: classes of the auxiliary per-pixel class head (0 = off).
        spatial_prior: query-conditioned spatial prior on the mask logits (position words).
        relation_anchor: query-derived anchor map and its surroundings at stride 8 (relations).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 192), depths: Sequence[int] = (1, 2, 2, 1),
                 fpn_dim: int = 64, text_dim: int = 384, query_dim: int = 128, heads: int = 4,
                 decoder_layers: int = 2, tate: bool = True, latent_memory: int = 4,
                 memory_lambdas: Sequence[float] = (0.0, 0.2, 0.2), prompt_map: bool = True,
                 class_memory_classes: int = 0, class_memory_slots: int = 4, semantic_classes: int = 0,
                 spatial_prior: bool = False, relation_anchor: bool = False) -> None:
        super().__init__()
        self.backbone = ConvBackbone(channels, depths)
        self.fpn = FPN(self.backbone.out_channels, fpn_dim)
        self.tate = TATE(text_dim, query_dim, heads, enabled=tate)
        self.memory = LatentKnowledgeMemory(query_dim, latent_memory, memory_lambdas) if latent_memory > 0 else None
        self.decoder = MaskDecoder(fpn_dim, query_dim, heads, decoder_layers, prompt_map, class_memory_classes,
                                   class_memory_slots, semantic_classes, spatial_prior,
                                   relation_anchor)

    def encode_image(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Normalised ``B×3×H×W`` image (H, W multiples of 32) → pyramid features (strides 4–32)."""
        return self.fpn(self.backbone(image))

    def make_query(self, tokens: torch.Tensor, token_mask: torch.Tensor, task: torch.Tensor, points: torch.Tensor,
                   point_labels: torch.Tensor, box: torch.Tensor, box_valid: torch.Tensor) -> torch.Tensor:
        """Instruction tokens and geometry → the ``B×query_dim`` mask query (TATE, then the latent memory)."""
        q = self.tate(tokens, token_mask, task, points, point_labels, box, box_valid)
        if self.memory is not None:
            q = self.memory(q, task)
        return q

    def decode(self, pyramid: list[torch.Tensor], tokens: torch.Tensor, token_mask: torch.Tensor, task: torch.Tensor,
               points: torch.Tensor, point_labels: torch.Tensor, box: torch.Tensor, box_valid: torch.Tensor
               ) -> dict[str, torch.Tensor]:
        """Decode masks for prompts against cached pyramid features (batch sizes must match)."""
        q = self.make_query(tokens, token_mask, task, points, point_labels, box, box_valid)
        h8, w8 = pyramid[1].shape[-2:]
        pmap = render_prompt_map(points, point_labels, box, box_valid, h8, w8) if self.decoder.use_prompt_map else None
        return self.decoder(pyramid, q, pmap)

    def forward(self, image: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, task: torch.Tensor,
                points: torch.Tensor, point_labels: torch.Tensor, box: torch.Tensor, box_valid: torch.Tensor
                ) -> dict[str, torch.Tensor]:
        """Full pass: see :meth:`decode` for the outputs (``logits`` at stride 4, ``presence``, ...)."""
        return self.decode(self.encode_image(image), tokens, token_mask, task, points, point_labels, box, box_valid)
