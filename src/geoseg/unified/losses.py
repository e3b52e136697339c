"""The training objective: the forward pass of a batch and its loss terms.

BCE + Dice on the mask (Dice on non-empty targets only), BCE on the presence logit (no-target
head), with the semantic head a per-pixel class loss on the target pixels, and with the
class-wise memory an auxiliary pre-memory mask loss and a class-attention loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geoseg.unified.data import MODEL_INPUTS


def dice_loss(logits: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """1 − soft Dice over the rows in ``keep`` (zero when none)."""
    if not keep.any():
        return logits.sum() * 0
    p = torch.sigmoid(logits[keep]).flatten(1)
    t = target[keep].flatten(1)
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def semantic_loss(sem: torch.Tensor, target: torch.Tensor, category: torch.Tensor, nonempty: torch.Tensor
                  ) -> torch.Tensor:
    """Cross-entropy of the per-pixel class head on each sample's target pixels, labelled with its category.

    Every row (interactive ones too) names the category of its target, so the pixels inside
    the target mask are labelled pixels of that class: a partial semantic-segmentation
    signal that teaches the backbone what water, buildings or roads look like.
    """
    t = F.interpolate(target, size=sem.shape[-2:], mode="area")[:, 0] > 0.5  # B×h×w
    ok = nonempty & (category >= 0)
    labels = torch.full(t.shape, -100, dtype=torch.long, device=sem.device)
    labels[t & ok[:, None, None]] = category[:, None, None].expand_as(t)[t & ok[:, None, None]]
    if not (labels >= 0).any():
        return sem.sum() * 0
    return F.cross_entropy(sem.float(), labels, ignore_index=-100)


def forward_batch(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training forward pass of a :func:`collate` batch: each tile encoded once, its pyramid
    shared by the rows ``image_of`` maps to it, every row decoded."""
    pyramid = [f[batch["image_of"]] for f in model.encode_image(batch["image"])]
    return model.decode(pyramid, *[batch[k] for k in MODEL_INPUTS])


def compute_losses(out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg_train) -> dict[str, torch.Tensor]:
    """All loss terms (and their weighted ``total``) for one batch."""
    target = batch["target"]
    nonempty = ~batch["empty"]
    logits = F.interpolate(out["logits"].float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
    if cfg_train.mask_loss_on_empty:
        bce = F.binary_cross_entropy_with_logits(logits, target)
    elif nonempty.any():  # no-target rows train the presence head only; their masks are left to it
        bce = F.binary_cross_entropy_with_logits(logits[nonempty], target[nonempty])
    else:
        bce = logits.sum() * 0
    losses = {
        "bce": bce,
        "dice": dice_loss(logits, target, nonempty),
        "presence": F.binary_cross_entropy_with_logits(out["presence"].float(), nonempty.float()),
    }
    total = cfg_train.bce_weight * losses["bce"] + cfg_train.dice_weight * losses["dice"] \
        + cfg_train.no_target_weight * losses["presence"]
    if "semantic_logits" in out:
        losses["semantic"] = semantic_loss(out["semantic_logits"], target, batch["category"], nonempty)
        total = total + cfg_train.semantic_weight * losses["semantic"]
    if "aux_logits" in out:
        aux = F.interpolate(out["aux_logits"].float(), size=target.shape[-2:], mode="bilinear", align_corners=False)
        losses["aux"] = F.binary_cross_entropy_with_logits(aux, target) + dice_loss(aux, target, nonempty)
        att = out["class_attention"].float()  # B×K×h×w, sums to 1 over K
        t8 = F.interpolate(target, size=att.shape[-2:], mode="area")[:, 0] > 0.5
        cat = batch["category"]
        ok = nonempty & (cat >= 0)
        if ok.any():
            sel = att[ok, cat[ok]]  # n×h×w
            m = t8[ok]
            losses["class_mem"] = -(sel.clamp_min(1e-6).log() * m).sum() / m.sum().clamp_min(1)
        else:
            losses["class_mem"] = att.sum() * 0
        total = total + 0.5 * losses["aux"] + cfg_train.class_memory_weight * losses["class_mem"]
    losses["total"] = total
    return losses


__all__ = ["compute_losses", "dice_loss", "forward_batch", "semantic_loss"]
