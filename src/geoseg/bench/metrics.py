"""Segmentation metrics exactly as GUIDE §2, vectorised over samples.

Each sample is reduced once to four integers — intersection, union, predicted area and
target area — computed at the ground truth's resolution. Every figure (gIoU, cIoU,
Pr@t, Dice, no-target / target accuracy) is an aggregate of those arrays, so re-scoring
under another empty-target rule or another breakdown never touches a mask again.

Empty targets are scored differently across code bases; the rule is a named option:

* ``unigeoseg`` (default, UniGeoSeg / SegEarth-R1): an empty prediction of an empty
  target has IoU 1 (and Dice 1); a non-empty prediction of it has IoU 0.
* ``zero`` (RMSIN, GeoSeg): every empty-target sample has IoU 0 (and Dice 0).
* ``skip`` (RSRefSeg2): empty-target samples are left out of gIoU, cIoU, Pr@t and Dice;
  they only count in no-target accuracy.

cIoU = ΣI / ΣU is independent of the rule except under ``skip`` (which also removes the
false-positive area predicted on empty targets from ΣU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

EMPTY_RULES: dict[str, str] = {
    "unigeoseg": "empty prediction of an empty target scores IoU 1 (UniGeoSeg, SegEarth-R1)",
    "zero": "every empty-target sample scores IoU 0 (RMSIN, GeoSeg)",
    "skip": "empty-target samples are excluded from IoU metrics, counted only in no-target accuracy (RSRefSeg2)",
}
DEFAULT_EMPTY_RULE = "unigeoseg"
THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)


def check_rule(rule: str) -> str:
    """Return ``rule`` if it is a known empty-target rule, else raise a one-line error."""
    if rule not in EMPTY_RULES:
        from geoseg.errors import GeosegError

        raise GeosegError(f"unknown empty-target rule {rule!r}", f"use one of {', '.join(EMPTY_RULES)}")
    return rule


def mask_counts(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Intersection, union, predicted and target area of binary masks.

    Args:
        pred: ``H x W`` or ``N x H x W`` boolean (or 0/1) predicted mask(s).
        gt: the ground truth, same shape.

    Returns:
        Four ``int64`` arrays (scalars' shape ``()`` for 2-D input, ``(N,)`` for a batch).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction of shape {pred.shape} does not match target of shape {gt.shape}")
    p = pred.astype(bool, copy=False)
    g = gt.astype(bool, copy=False)
    axes = (-2, -1)
    inter = np.count_nonzero(p & g, axis=axes)
    pa = np.count_nonzero(p, axis=axes)
    ga = np.count_nonzero(g, axis=axes)
    union = pa + ga - inter
    return (np.asarray(inter, np.int64), np.asarray(union, np.int64), np.asarray(pa, np.int64), np.asarray(ga, np.int64))


def rle_counts(pred_rle: dict, gt_rle: dict) -> tuple[int, int, int, int]:
    """:func:`mask_counts` of two COCO RLEs without decoding them (pycocotools run arithmetic, ~100x faster)."""
    from pycocotools import mask as mask_utils

    def enc(r: dict) -> dict:
        if isinstance(r["counts"], list):
            h, w = (int(v) for v in r["size"])
            return mask_utils.frPyObjects({"size": [h, w], "counts": r["counts"]}, h, w)
        c = r["counts"]
        return {"size": [int(v) for v in r["size"]], "counts": c.encode("ascii") if isinstance(c, str) else c}

    p, g = enc(pred_rle), enc(gt_rle)
    if list(p["size"]) != list(g["size"]):
        raise ValueError(f"prediction of size {list(p['size'])} does not match target of size {list(g['size'])}")
    inter = int(mask_utils.area(mask_utils.merge([p, g], intersect=True)))
    pa, ga = (int(v) for v in mask_utils.area([p, g]))
    return inter, pa + ga - inter, pa, ga


@dataclass
class Counts:
    """Per-sample counts (one entry per sample) plus the labels used for breakdowns."""

    inter: np.ndarray
    union: np.ndarray
    pred_area: np.ndarray
    gt_area: np.ndarray
    task: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    level: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    category: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def __post_init__(self) -> None:
        n = len(self.inter)
        for name in ("inter", "union", "pred_area", "gt_area"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.int64).reshape(-1))
            if len(getattr(self, name)) != n:
                raise ValueError(f"counts array {name} has {len(getattr(self, name))} entries, expected {n}")
        for name in ("task", "level", "category"):
            arr = np.asarray(getattr(self, name), dtype=object).reshape(-1)
            if len(arr) == 0:
                arr = np.full(n, "", dtype=object)
            if len(arr) != n:
                raise ValueError(f"label array {name} has {len(arr)} entries, expected {n}")
            setattr(self, name, arr)

    def __len__(self) -> int:
        return len(self.inter)

    def subset(self, keep: np.ndarray) -> Counts:
        """The samples selected by the boolean or index array ``keep``."""
        return Counts(self.inter[keep], self.union[keep], self.pred_area[keep], self.gt_area[keep],
                      self.task[keep], self.level[keep], self.category[keep])

    @classmethod
    def from_records(cls, records: Sequence[dict]) -> Counts:
        """Build from dicts with keys ``inter, union, pred_area, gt_area`` (+ optional labels)."""
        def col(k: str, default=0):
            return [r.get(k, default) for r in records]
        return cls(np.array(col("inter"), np.int64), np.array(col("union"), np.int64),
                   np.array(col("pred_area"), np.int64), np.array(col("gt_area"), np.int64),
                   np.array(col("task", ""), object), np.array([_level_label(v) for v in col("level", "")], object),
                   np.array(col("category", ""), object))


def _level_label(v) -> str:
    if v is None or v == "" or (isinstance(v, float) and np.isnan(v)):
        return ""
    return str(v)


def per_sample_iou(c: Counts, rule: str = DEFAULT_EMPTY_RULE) -> np.ndarray:
    """IoU per sample under ``rule``; ``NaN`` marks samples the rule skips."""
    check_rule(rule)
    empty_t = c.gt_area == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(c.union > 0, c.inter / np.maximum(c.union, 1), 0.0).astype(np.float64)
    both_empty = empty_t & (c.pred_area == 0)
    if rule == "unigeoseg":
        iou[both_empty] = 1.0
    elif rule == "zero":
        iou[empty_t] = 0.0
    else:  # skip
        iou[empty_t] = np.nan
    return iou


def per_sample_dice(c: Counts, rule: str = DEFAULT_EMPTY_RULE) -> np.ndarray:
    """Dice = 2I / (|P| + |G|) per sample, empty targets handled like :func:`per_sample_iou`."""
    check_rule(rule)
    denom = c.pred_area + c.gt_area
    dice = np.where(denom > 0, 2.0 * c.inter / np.maximum(denom, 1), 0.0).astype(np.float64)
    empty_t = c.gt_area == 0
    if rule == "unigeoseg":
        dice[empty_t & (c.pred_area == 0)] = 1.0
    elif rule == "zero":
        dice[empty_t] = 0.0
    else:
        dice[empty_t] = np.nan
    return dice


def _nan_or(x: float) -> float | None:
    return None if x is None or np.isnan(x) else float(x)


def summarize(c: Counts, rule: str = DEFAULT_EMPTY_RULE, thresholds: Sequence[float] = THRESHOLDS) -> dict:
    """All headline metrics of a set of samples under one empty-target rule.

    Returns a dict with ``n`` (samples), ``n_scored`` (samples the rule scores),
    ``n_empty_target``, ``gIoU``, ``cIoU``, ``Pr@0.5`` … ``Pr@0.9`` (share of scored samples
    with IoU strictly above t), ``Dice`` (mean per-sample Dice), ``no_target_acc`` (share of
    empty targets predicted empty), ``target_acc`` (share of non-empty targets predicted
    non-empty) and ``empty_rule``. Ratios are in [0, 1]; ``None`` where undefined.
    """
    iou = per_sample_iou(c, rule)
    dice = per_sample_dice(c, rule)
    scored = ~np.isnan(iou)
    empty_t = c.gt_area == 0
    n_scored = int(scored.sum())
    out: dict = {"n": len(c), "n_scored": n_scored, "n_empty_target": int(empty_t.sum()), "empty_rule": rule}
    if n_scored:
        out["gIoU"] = float(iou[scored].mean())
        su = int(c.union[scored].sum())
        out["cIoU"] = float(c.inter[scored].sum() / su) if su else (1.0 if rule == "unigeoseg" else 0.0)
        for t in thresholds:
            out[f"Pr@{t:g}"] = float((iou[scored] > t).mean())
        out["Dice"] = float(dice[scored].mean())
    else:
        out["gIoU"] = out["cIoU"] = out["Dice"] = None
        for t in thresholds:
            out[f"Pr@{t:g}"] = None
    ne = int(empty_t.sum())
    out["no_target_acc"] = float((c.pred_area[empty_t] == 0).mean()) if ne else None
    nt = len(c) - ne
    out["target_acc"] = float((c.pred_area[~empty_t] > 0).mean()) if nt else None
    return out


def breakdown(c: Counts, by: str, rule: str = DEFAULT_EMPTY_RULE) -> dict[str, dict]:
    """:func:`summarize` per distinct value of the label ``by`` (``task``, ``level`` or ``category``)."""
    labels = np.array([str(v) for v in getattr(c, by)], dtype=str) if len(c) else np.array([], dtype=str)
    keys, inverse = np.unique(labels, return_inverse=True)
    out: dict[str, dict] = {}
    for idx in sorted(range(len(keys)), key=lambda i: _sort_key(str(keys[i]))):
        key = str(keys[idx])
        if key == "":
            continue
        out[key] = summarize(c.subset(inverse == idx), rule)
    return out


def _sort_key(v: str):
    return (0, int(v), "") if v.isdigit() else (1, 0, v)


def evaluate(c: Counts, rule: str = DEFAULT_EMPTY_RULE) -> dict:
    """The full metric record: overall, per task, per level, per category, and the rule stated."""
    check_rule(rule)
    return {
        "empty_rule": rule,
        "empty_rule_meaning": EMPTY_RULES[rule],
        "overall": summarize(c, rule),
        "per_task": breakdown(c, "task", rule),
        "per_level": breakdown(c, "level", rule),
        "per_category": breakdown(c, "category", rule),
    }
