"""Mask decoder: fuses the mask query with multi-scale image features, plus a no-target head.

Design (Mask2Former-flavoured, sized for a CPU):

1. the query cross-attends the coarse pyramid levels (strides 16 and 32, with
   positional encodings) for two layers, so it can look at the image before deciding;
2. the refined query modulates the stride-8 and stride-16 features (FiLM) and its
   cosine similarity with them is appended as a channel (the text-conditioned
   similarity map that the training-free route reuses);
3. a dense *prompt map* (positive/negative point Gaussians and the box, rendered
   from the same coordinates the query embeds, like SAM's dense prompt input) and
   two coordinate channels (absolute position, needed for "top left" in referring
   expressions) are concatenated at stride 8;
4. optionally GeoPix's class-wise memory is read by the stride-8 features, decoding
   once before and once after the read (both supervised);
5. the stride-4 pixel embedding is scored against the query (dot product) plus a
   1×1 head; a presence head says whether the target exists at all (no-target);
6. optionally a *relation anchor* map (a second, query-derived response and its
   max-pooled surroundings) is added to the stride-8 features, for "next to X";
7. optionally a query-conditioned *spatial prior* is added to the mask logits: the
   query picks weights of a fixed grid of smooth Gaussian bumps, giving "in the top
   left corner" a direct path to a location instead of one learned through the
   coordinate channels alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from geoseg.models.backbone import conv_bn
from geoseg.models.memory import ClassWiseMemory


def coord_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``1×2×h×w`` pixel-centre coordinates (x, y) in [0, 1]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).unsqueeze(0)


def render_prompt_map(points: torch.Tensor, point_labels: torch.Tensor, box: torch.Tensor, box_valid: torch.Tensor,
                      h: int, w: int, sigma: float = 0.04) -> torch.Tensor:
    """Dense ``B×3×h×w`` prompt map: positive points, negative points, box (soft edges)."""
    grid = coord_grid(h, w, points.device, points.dtype)  # 1×2×h×w
    d2 = ((grid.unsqueeze(1) - points[:, :, :, None, None]) ** 2).sum(2)  # B×P×h×w
    g = torch.exp(-d2 / (2 * sigma**2))
    pos = (g * (point_labels == 1).to(g.dtype)[:, :, None, None]).amax(1, keepdim=True)
    neg = (g * (point_labels == 0).to(g.dtype)[:, :, None, None]).amax(1, keepdim=True)
    gx, gy = grid[:, 0:1], grid[:, 1:2]
    k = 4.0 * max(h, w)  # edge sharpness ~ one cell
    x0, y0, x1, y1 = (box[:, i, None, None, None] for i in range(4))
    inside = (torch.sigmoid(k * (gx - x0)) * torch.sigmoid(k * (x1 - gx)) * torch.sigmoid(k * (gy - y0))
              * torch.sigmoid(k * (y1 - gy)))
    inside = inside * box_valid.to(inside.dtype)[:, None, None, None]
    return torch.cat([pos, neg, inside], dim=1)


class SpatialPrior(nn.Module):
    """A query-conditioned low-frequency logit map: ``Σ_k w_k(q) · exp(-|p - c_k|² / 2σ²)``.

    ``grid × grid`` Gaussian bumps with centres evenly spread over the image; the weights
    come from a small MLP of the query whose last layer starts at zero, so adding the prior
    to a trained decoder leaves its outputs unchanged until fine-tuning moves it.
    """

    def __init__(self, dim: int, grid: int = 5) -> None:
        super().__init__()
        self.grid = grid
        self.sigma = 0.5 / grid
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, grid * grid))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``B×dim`` queries → ``B×1×h×w`` additive logits."""
        centres = (torch.arange(self.grid, device=q.device, dtype=q.dtype) + 0.5) / self.grid
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        grid = coord_grid(h, w, q.device, q.dtype)  # 1×2×h×w
        d2 = (grid[:, 0:1] - cx.reshape(-1, 1, 1)) ** 2 + (grid[:, 1:2] - cy.reshape(-1, 1, 1)) ** 2  # 1×K×h×w
        basis = torch.exp(-d2 / (2 * self.sigma**2))
        return torch.einsum("bk,khw->bhw", self.mlp(q), basis[0]).unsqueeze(1)


class RelationAnchor(nn.Module):
    """An *anchor* response and its surroundings, for relational instructions.

    "the road next to the vegetation" needs the vegetation first. A small MLP turns the
    mask query into an anchor query; its cosine similarity with the stride-8 features
    (sharpened by a learned temperature, then a sigmoid) marks the anchor, and max-pooling
    grows that map by one and three cells so "next to", "surrounded by" and "nearest"
    become local evidence. A 1×1 convolution whose weights start at zero adds the three
    maps to the decoder's stride-8 features, so adding the module to a trained decoder
    leaves its outputs unchanged until fine-tuning moves it.
    """

    def __init__(self, dim: int, grow: tuple[int, ...] = (3, 7)) -> None:
        super().__init__()
        self.grow = grow
        self.to_anchor = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.log_temp = nn.Parameter(torch.tensor(math.log(10.0)))
        self.mix = nn.Conv2d(1 + len(grow), dim, 1)
        nn.init.zeros_(self.mix.weight)
        nn.init.zeros_(self.mix.bias)

    def forward(self, q: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``B×dim`` queries and ``B×dim×h×w`` features → (additive features, ``B×1×h×w`` anchor map)."""
        sim = torch.einsum("bc,bchw->bhw", F.normalize(self.to_anchor(q), dim=-1), F.normalize(feat, dim=1))
        anchor = torch.sigmoid(self.log_temp.exp() * sim).unsqueeze(1)
        maps = [anchor] + [F.max_pool2d(anchor, k, stride=1, padding=k // 2) for k in self.grow]
        return self.mix(torch.cat(maps, 1)), anchor


class QueryImageLayer(nn.Module):
    """The query attends image tokens (cross-attention + MLP, pre-norm residual)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        a, _ = self.attn(self.norm1(q), keys, values, need_weights=False)
        q = q + a
        return q + self.mlp(self.norm2(q))


class MaskDecoder(nn.Module):
    """Decode one mask (and a presence logit) per query from pyramid features.

    Args:
        dim: pyramid / pixel feature width.
        query_dim: width of the incoming mask query.
        heads: attention heads.
        layers: query→image cross-attention layers.
        prompt_map: render points/box as dense channels (False drops them).
        class_memory_classes: > 0 enables GeoPix's class-wise memory with this many classes.
        class_memory_slots: memory vectors per class.
        semantic_classes: > 0 adds a per-pixel class head on the stride-8 pyramid level (an
            auxiliary loss that gives the from-scratch backbone class semantics the text
            query can select; not used at inference).
        spatial_prior: add the query-conditioned :class:`SpatialPrior` to the mask logits.
        relation_anchor: add :class:`RelationAnchor` features at stride 8.
    """

    def __init__(self, dim: int = 64, query_dim: int = 128, heads: int = 4, layers: int = 2, prompt_map: bool = True,
                 class_memory_classes: int = 0, class_memory_slots: int = 4, semantic_classes: int = 0,
                 spatial_prior: bool = False, relation_anchor: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.use_prompt_map = prompt_map
        self.q_in = nn.Linear(query_dim, dim)
        self.pos = nn.Sequential(nn.Conv2d(2, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 1))
        self.layers = nn.ModuleList([QueryImageLayer(dim, heads) for _ in range(layers)])
        self.q_norm = nn.LayerNorm(dim)
        self.film = nn.Linear(dim, 4 * dim)
        extra = 2 + 1 + (3 if prompt_map else 0)  # coords + similarity + prompt map
        self.fuse8 = nn.Sequential(conv_bn(dim + extra, dim), conv_bn(dim, dim))
        self.fuse16 = conv_bn(dim + 1, dim)
        self.fuse4 = nn.Sequential(conv_bn(dim, dim), conv_bn(dim, dim))
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.pixel_head = nn.Conv2d(dim, 1, 1)
        self.presence = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 1))
        self.class_memory = (ClassWiseMemory(dim, class_memory_classes, class_memory_slots, heads)
                             if class_memory_classes > 0 else None)
        if self.class_memory is not None:
            self.aux_head = nn.Conv2d(dim, 1, 1)
            self.aux_embed = nn.Linear(dim, dim)
        self.semantic_head = nn.Conv2d(dim, semantic_classes, 1) if semantic_classes > 0 else None
        self.spatial_prior = SpatialPrior(dim) if spatial_prior else None
        self.anchor = RelationAnchor(dim) if relation_anchor else None

    # -- pieces ------------------------------------------------------------------------
    def refine_query(self, query: torch.Tensor, pyramid: list[torch.Tensor]) -> torch.Tensor:
        """Cross-attend the query to the stride-16 and stride-32 tokens → ``B×dim``."""
        keys, values = [], []
        for f in pyramid[2:]:
            pos = self.pos(coord_grid(f.shape[-2], f.shape[-1], f.device, f.dtype))
            values.append(f.flatten(2).transpose(1, 2))
            keys.append((f + pos).flatten(2).transpose(1, 2))
        k, v = torch.cat(keys, 1), torch.cat(values, 1)
        q = self.q_in(query).unsqueeze(1)
        for layer in self.layers:
            q = layer(q, k, v)
        return self.q_norm(q.squeeze(1))

    @staticmethod
    def similarity(q: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """Cosine similarity ``B×1×H×W`` between the query and each pixel feature."""
        return torch.einsum("bc,bchw->bhw", F.normalize(q, dim=-1), F.normalize(feat, dim=1)).unsqueeze(1)

    def _score(self, q: torch.Tensor, feat: torch.Tensor, embed: nn.Module, head: nn.Module) -> torch.Tensor:
        return torch.einsum("bc,bchw->bhw", embed(q), feat).unsqueeze(1) / math.sqrt(self.dim) + head(feat)

    # -- forward -----------------------------------------------------------------------
    def forward(self, pyramid: list[torch.Tensor], query: torch.Tensor, prompt_map: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Decode masks.

        Args:
            pyramid: FPN features at strides 4, 8, 16, 32 (``B×dim×h×w`` each).
            query: ``B×query_dim`` mask queries.
            prompt_map: ``B×3×h8×w8`` dense prompt channels at stride 8 (zeros for text tasks).

        Returns:
            ``logits`` (``B×1×h4×w4``), ``presence`` (``B``), ``similarity`` (``B×1×h8×w8``),
            with the class-wise memory ``aux_logits`` and ``class_attention``, with the
            semantic head (training only) ``semantic_logits`` (``B×K×h8×w8``).
        """
        p4, p8, p16, _ = pyramid
        b = query.shape[0]
        q = self.refine_query(query, pyramid)
        g8, b8, g16, b16 = self.film(q).chunk(4, dim=-1)
        sim8 = self.similarity(q, p8)
        sim16 = self.similarity(q, p16)
        x16 = self.fuse16(torch.cat([p16 * (1 + g16[:, :, None, None]) + b16[:, :, None, None], sim16], 1))
        parts = [p8 * (1 + g8[:, :, None, None]) + b8[:, :, None, None], sim8,
                 coord_grid(p8.shape[-2], p8.shape[-1], p8.device, p8.dtype).expand(b, -1, -1, -1)]
        if self.use_prompt_map:
            parts.append(prompt_map if prompt_map is not None else p8.new_zeros(b, 3, *p8.shape[-2:]))
        x8 = self.fuse8(torch.cat(parts, 1)) + F.interpolate(x16, size=p8.shape[-2:], mode="bilinear",
                                                              align_corners=False)
        out: dict[str, torch.Tensor] = {"similarity": sim8}
        if self.anchor is not None:
            extra, out["anchor"] = self.anchor(q, p8)
            x8 = x8 + extra
        if self.semantic_head is not None and self.training:
            out["semantic_logits"] = self.semantic_head(p8)
        if self.class_memory is not None:
            out["aux_logits"] = self._score(q, x8, self.aux_embed, self.aux_head)
            x8, out["class_attention"] = self.class_memory(x8)
        x4 = self.fuse4(p4 + F.interpolate(x8, size=p4.shape[-2:], mode="bilinear", align_corners=False))
        logits = self._score(q, x4, self.mask_embed, self.pixel_head)
        if self.spatial_prior is not None:
            logits = logits + self.spatial_prior(q, *logits.shape[-2:])
        w = torch.sigmoid(logits).flatten(2)  # B×1×HW
        pooled = (x4.flatten(2) * w).sum(-1) / w.sum(-1).clamp_min(1.0)
        out["logits"] = logits
        out["presence"] = self.presence(torch.cat([q, pooled], -1)).squeeze(-1)
        return out
