"""Memories read by attention: UniGeoSeg's latent knowledge memory and GeoPix's class-wise memory."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


class LatentKnowledgeMemory(nn.Module):
    """A few learned latent vectors the query reads by softmax attention.

    The read-out is mixed into the query with a per-task weight λ: UniGeoSeg uses
    λ = 0.2 for referring and reasoning (dataset-level knowledge helps implicit
    queries) and λ = 0 for interactive prompts, whose geometry is explicit.

    Args:
        dim: query width.
        num_latents: number of memory vectors (4 in UniGeoSeg).
        lambdas: λ per task id (interactive, referring, reasoning).
    """

    def __init__(self, dim: int, num_latents: int = 4, lambdas: Sequence[float] = (0.0, 0.2, 0.2)) -> None:
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim) / math.sqrt(dim))
        self.q_proj = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("lambdas", torch.tensor(list(lambdas), dtype=torch.float32), persistent=False)

    def read(self, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The memory read-out ``B×dim`` and the attention weights ``B×num_latents``."""
        att = torch.softmax(self.q_proj(query) @ self.latents.t() / math.sqrt(query.shape[-1]), dim=-1)
        return self.out(att @ self.latents), att

    def forward(self, query: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """``query + λ[task] · read(query)``."""
        readout, _ = self.read(query)
        lam = self.lambdas.to(query.dtype)[task.long()].unsqueeze(-1)
        return query + lam * readout


class ClassWiseMemory(nn.Module):
    """GeoPix's class-wise learnable memory: ``slots`` vectors per class, read by pixel features.

    Pixel features (``B×C×H×W``) cross-attend to all class memories; the read-out is
    added back (memory attention). The attention mass each pixel gives to each class's
    slots is returned so training can tie the slots of class *c* to pixels of class *c*
    (which makes the memory class-wise rather than a generic bank).
    """

    def __init__(self, dim: int, num_classes: int, slots: int = 4, heads: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.slots = slots
        self.memory = nn.Parameter(torch.randn(num_classes * slots, dim) / math.sqrt(dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the updated features and per-pixel class attention ``B×num_classes×H×W``."""
        b, c, h, w = feat.shape
        x = feat.flatten(2).transpose(1, 2)  # B×HW×C
        mem = self.memory.unsqueeze(0).expand(b, -1, -1)
        read, att = self.attn(x, mem, mem, need_weights=True, average_attn_weights=True)  # att: B×HW×(K·S)
        x = self.norm(x + read)
        cls_att = att.view(b, h * w, self.num_classes, self.slots).sum(-1).transpose(1, 2).reshape(b, -1, h, w)
        return x.transpose(1, 2).reshape(b, c, h, w), cls_att
