"""Validation of the unified model on shard rows with the benchmark's metrics (GUIDE §2).

Per sample IoU at the ground truth's resolution; gIoU = mean IoU, cIoU = ΣI/ΣU, per
task and per (task, level); empty targets follow UniGeoSeg's rule (an empty prediction
of an empty target scores IoU 1), and no-target / target accuracy are reported.
``geoseg.bench.metrics`` is used for the summary when it is installed, so validation
and the benchmark agree by construction.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geoseg.models import UniGeoSeg
from geoseg.progress import progress
from geoseg.rle import rle_decode
from geoseg.unified.data import MODEL_INPUTS, TileCache, collate
from geoseg.unified.decision import iou_curve

EMPTY_RULE = "unigeoseg (empty prediction of an empty target = IoU 1)"


def sample_iou(pred: np.ndarray, gt: np.ndarray) -> tuple[float, int, int]:
    """IoU, intersection and union of two boolean masks (UniGeoSeg's rule for two empty masks)."""
    inter = int(np.logical_and(pred, gt).sum())
    union = int(np.logical_or(pred, gt).sum())
    return (1.0 if union == 0 else inter / union), inter, union


def summarise(records: Sequence[dict]) -> dict[str, dict]:
    """Metrics per task and per ``task/L<level>`` (and ``all``) from per-sample records.

    Each record: ``task``, ``level``, ``iou``, ``inter``, ``union``, ``empty`` (GT empty), ``pred_empty``.
    """
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups["all"].append(r)
        groups[r["task"]].append(r)
        groups[f"{r['task']}/L{r['level']}"].append(r)
    out = {}
    for name, rs in sorted(groups.items()):
        ious = np.array([r["iou"] for r in rs])
        inter = sum(r["inter"] for r in rs)
        union = sum(r["union"] for r in rs)
        empties = [r for r in rs if r["empty"]]
        targets = [r for r in rs if not r["empty"]]
        out[name] = {
            "n": len(rs),
            "gIoU": float(ious.mean() * 100),
            "cIoU": float(inter / union * 100) if union else 100.0,
            "Pr@0.5": float((ious > 0.5).mean() * 100),
            "no_target_acc": float(np.mean([r["pred_empty"] for r in empties]) * 100) if empties else None,
            "target_acc": float(np.mean([not r["pred_empty"] for r in targets]) * 100) if targets else None,
        }
    return out


def balanced_subset(rows: Sequence[dict], n: int, seed: int = 0) -> list[dict]:
    """Up to ``n`` rows, equally many per task (all rows when ``n`` is 0)."""
    if n <= 0:
        return list(rows)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_task[r["task"]].append(r)
    rng = random.Random(seed)
    per = max(1, n // max(1, len(by_task)))
    out = []
    for t in sorted(by_task):
        rs = by_task[t]
        out.extend(rng.sample(rs, min(per, len(rs))))
    return out


@torch.no_grad()
def iter_outputs(model: UniGeoSeg, rows: Sequence[dict], tiles: TileCache, text_cache: dict, classes: Sequence[str],
                 mean: torch.Tensor, std: torch.Tensor, device: torch.device, batch_size: int = 16,
                 desc: str = "validate", semantic: bool = False) -> Iterator[tuple]:
    """Run the model over shard rows in batches; yield ``(row, logits, presence, gt)`` per row, with
    the ``H×W`` mask logits resized to the ground truth's full resolution (validation and tuning).

    With ``semantic`` each tuple also ends with the image's per-class probabilities from the
    semantic head (``K×h8×w8`` numpy, read by the instance selector; None without the head).
    """
    model.eval()
    sem_head = getattr(model.decoder, "semantic_head", None) if semantic else None
    for i in progress(range(0, len(rows), batch_size), desc=desc, total=(len(rows) + batch_size - 1) // batch_size):
        chunk = rows[i: i + batch_size]
        batch = collate(chunk, tiles, text_cache, classes, mean, std)
        pyramid = model.encode_image(batch["image"].to(device))
        out = model.decode(pyramid, *[batch[k].to(device) for k in MODEL_INPUTS])
        presence = torch.sigmoid(out["presence"].float()).cpu().numpy()
        sem = torch.softmax(sem_head(pyramid[1]).float(), 1).cpu().numpy() if sem_head is not None else None
        for j, r in enumerate(chunk):
            gt = rle_decode(r["mask"]).astype(bool)
            logit = F.interpolate(out["logits"][j: j + 1].float(), size=gt.shape, mode="bilinear", align_corners=False)
            if semantic:
                yield r, logit[0, 0], float(presence[j]), gt, None if sem is None else sem[j]
            else:
                yield r, logit[0, 0], float(presence[j]), gt


def predict_rows(model: UniGeoSeg, rows: Sequence[dict], tiles: TileCache, text_cache: dict, classes: Sequence[str],
                 mean: torch.Tensor, std: torch.Tensor, device: torch.device, batch_size: int = 16,
                 presence_threshold: float = 0.5, with_curves: bool = False, desc: str = "validate") -> list[dict]:
    """Predict every row and score it against its full-resolution mask (mask at probability 0.5).

    Each record also holds the ``presence`` probability and, ``with_curves``, the row's IoU at
    every decision threshold (``curve``), so the same pass can feed
    :func:`geoseg.unified.decision.tune_with_presence` (per-epoch selection and ``--tune-decision``).
    """
    records = []
    for r, logit, presence, gt in iter_outputs(model, rows, tiles, text_cache, classes, mean, std, device,
                                               batch_size, desc):
        prob = torch.sigmoid(logit).cpu().numpy()
        pred = prob > 0.5
        if presence < presence_threshold:
            pred[:] = False
        iou, inter, union = sample_iou(pred, gt)
        rec = {"sample_id": r["sample_id"], "task": r["task"], "level": int(r["level"]), "iou": iou,
               "inter": inter, "union": union, "empty": not gt.any(), "pred_empty": not pred.any(),
               "category": r["category"], "presence": presence}
        if with_curves:
            rec["curve"] = iou_curve(prob, gt)
        records.append(rec)
    return records


def format_table(metrics: dict[str, dict]) -> str:
    """A Markdown table of the summary (rows: all, tasks, task/levels)."""
    lines = ["| split | n | gIoU | cIoU | Pr@0.5 | no-target acc | target acc |", "|---|---:|---:|---:|---:|---:|---:|"]

    def f(v):
        return "–" if v is None else f"{v:.1f}"

    order = sorted(metrics, key=lambda k: (k != "all", k.split("/")[0], k))
    for k in order:
        m = metrics[k]
        lines.append(f"| {k} | {m['n']} | {f(m['gIoU'])} | {f(m['cIoU'])} | {f(m['Pr@0.5'])} | "
                     f"{f(m['no_target_acc'])} | {f(m['target_acc'])} |")
    return "\n".join(lines)
