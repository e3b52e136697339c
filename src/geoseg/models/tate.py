"""Task-aware text enhancement (TATE): instruction tokens → one mask query per sample.

UniGeoSeg turns the instruction's token embeddings into the mask query differently per
task, because the useful signal sits in different places:

* **interactive** – the geometry: points/box coordinates are embedded (Fourier
  features + a linear map, with a label/corner type embedding) and fused with the
  pooled instruction tokens;
* **referring** – the words naming the target: one learned query scores the tokens
  and re-weights them (a single-head attention pool);
* **reasoning** – an implicit query spread over the sentence: multi-head attention
  pooling followed by LayerNorm.

With ``enabled=False`` (the "no TATE" ablation) every task uses a plain masked mean of
the tokens plus the same coordinate embedding, so the comparison isolates the
task-specific pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

TASK_IDS = {"interactive": 0, "referring": 1, "reasoning": 2}


def fourier_features(xy: torch.Tensor, num_freqs: int) -> torch.Tensor:
    """``...×2`` coordinates in [0, 1] → ``...×(4·num_freqs)`` sin/cos features."""
    freqs = (2.0 ** torch.arange(num_freqs, device=xy.device, dtype=xy.dtype)) * math.pi
    ang = (xy * 2 - 1).unsqueeze(-1) * freqs  # ...×2×F
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``B×L×D`` tokens over the positions where ``mask`` (``B×L`` bool) is True."""
    w = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


class CoordinateEmbedding(nn.Module):
    """Embeds up to P points (with labels) and an optional box as tokens of width ``dim``.

    Token types: 0 negative point, 1 positive point, 2 box top-left, 3 box bottom-right.
    """

    def __init__(self, dim: int, num_freqs: int = 8) -> None:
        super().__init__()
        self.num_freqs = num_freqs
        self.proj = nn.Linear(4 * num_freqs, dim)
        self.type_embed = nn.Embedding(4, dim)

    def forward(self, points: torch.Tensor, point_labels: torch.Tensor, box: torch.Tensor,
                box_valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``B×(P+2)×dim`` tokens and their ``B×(P+2)`` validity mask.

        Args:
            points: ``B×P×2`` normalised (x, y); ``point_labels``: ``B×P`` (1 pos, 0 neg, -1 padding).
            box: ``B×4`` normalised ``x0, y0, x1, y1``; ``box_valid``: ``B`` bool.
        """
        b = points.shape[0]
        corners = box.view(b, 2, 2)
        xy = torch.cat([points, corners], dim=1)
        types = torch.cat([point_labels.clamp_min(0), torch.tensor([2, 3], device=box.device).expand(b, 2)], dim=1)
        valid = torch.cat([point_labels >= 0, box_valid.unsqueeze(1).expand(b, 2)], dim=1)
        tok = self.proj(fourier_features(xy, self.num_freqs)) + self.type_embed(types.long())
        return tok, valid


class TATE(nn.Module):
    """Task-aware text enhancement producing a ``B×dim`` mask query.

    Args:
        text_dim: width of the text encoder's token embeddings (384 for MiniLM).
        dim: width of the query.
        heads: attention heads of the reasoning pool.
        enabled: False = the "no TATE" ablation (masked mean pooling for every task).
    """

    def __init__(self, text_dim: int, dim: int, heads: int = 4, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        self.token_proj = nn.Sequential(nn.Linear(text_dim, dim), nn.LayerNorm(dim))
        self.coords = CoordinateEmbedding(dim)
        # interactive: fuse pooled geometry tokens with pooled text tokens
        self.inter_fuse = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))
        # referring: one learned query re-weighting the tokens
        self.ref_query = nn.Parameter(torch.randn(dim) / math.sqrt(dim))
        self.ref_out = nn.Linear(dim, dim)
        # reasoning: multi-head attention pooling + LayerNorm
        self.reason_query = nn.Parameter(torch.randn(1, 1, dim) / math.sqrt(dim))
        self.reason_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.reason_norm = nn.LayerNorm(dim)
        # ablation path: one shared projection
        self.plain_out = nn.Linear(2 * dim, dim)

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor, task: torch.Tensor, points: torch.Tensor,
                point_labels: torch.Tensor, box: torch.Tensor, box_valid: torch.Tensor) -> torch.Tensor:
        """Tokens ``B×L×text_dim`` (+ mask ``B×L``), task ids ``B`` and geometry → query ``B×dim``."""
        t = self.token_proj(tokens)
        mean_t = masked_mean(t, token_mask)
        ctok, cvalid = self.coords(points, point_labels, box, box_valid)
        mean_c = masked_mean(ctok, cvalid)
        if not self.enabled:
            return self.plain_out(torch.cat([mean_t, mean_c], dim=-1))

        q_inter = self.inter_fuse(torch.cat([mean_c, mean_t], dim=-1))

        scores = (t @ self.ref_query) / math.sqrt(t.shape[-1])
        scores = scores.masked_fill(~token_mask, float("-inf"))
        w = torch.softmax(scores, dim=-1).unsqueeze(-1)
        q_ref = self.ref_out((w * t).sum(1))

        rq = self.reason_query.expand(t.shape[0], -1, -1)
        pooled, _ = self.reason_attn(rq, t, t, key_padding_mask=~token_mask, need_weights=False)
        q_reason = self.reason_norm(pooled.squeeze(1))

        stacked = torch.stack([q_inter, q_ref, q_reason], dim=1)  # B×3×dim
        return stacked[torch.arange(t.shape[0], device=t.device), task.long()]
