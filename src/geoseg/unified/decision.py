"""The unified model's decision rule: when a probability map becomes a mask.

The network gives a per-pixel probability and a presence probability (no-target head).
The answer is an empty mask when presence is below ``presence_threshold``, otherwise the
pixels whose probability is at or above the task's mask threshold.

Why per-task thresholds: for instance-level text instructions ("the elongated field on
the left") a small model is often unsure which instance is meant and spreads probability
below 0.5 over the candidates; a fixed 0.5 cut then returns an empty mask although the
presence head says the target exists (a third of the benchmark's level-2/3 text samples
with the stage-2 default). Point and box prompts are sharp and keep 0.5. The thresholds
are tuned on the training run's *validation* split — never on the benchmark — and stored
in the checkpoint (``meta["decision"]``), so the CLI, the benchmark and the server all
apply the same rule.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from geoseg.errors import InputError
from geoseg.models import TASK_IDS

TASKS = tuple(TASK_IDS)
THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(2, 20))  # 0.10 … 0.95


@dataclass(frozen=True)
class Decision:
    """Per-task mask thresholds and the presence threshold, with where they were tuned."""

    mask_thresholds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(TASKS, 0.5))
    presence_threshold: float = 0.5
    tuned_on: str = ""

    def mask_threshold(self, task: str) -> float:
        """The probability above which a pixel belongs to the mask for ``task``."""
        return float(self.mask_thresholds.get(task, 0.5))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Decision:
        """Read the block stored in a checkpoint (None or missing keys = the 0.5 defaults)."""
        if not data:
            return cls()
        thresholds = dict.fromkeys(TASKS, 0.5)
        thresholds.update({str(k): float(v) for k, v in dict(data.get("mask_thresholds", {})).items()})
        presence = float(data.get("presence_threshold", 0.5))
        for name, v in [*thresholds.items(), ("presence", presence)]:
            if not 0.0 < v < 1.0:
                raise InputError(f"the checkpoint's decision threshold for {name} is {v}, outside (0, 1)",
                                 "re-export the checkpoint with geoseg train --export-only --tune-decision")
        return cls(thresholds, presence, str(data.get("tuned_on", "")))


def iou_curve(prob: np.ndarray, gt: np.ndarray, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """IoU of ``prob >= t`` with ``gt`` for every ``t`` in ``grid`` (two empty masks score 1, UniGeoSeg's rule).

    One pass over the pixels: histograms of the probabilities inside and outside the
    target, accumulated from the top, give every threshold's intersection and union.
    """
    edges = np.concatenate([[-np.inf], np.asarray(grid, dtype=np.float64), [np.inf]])
    p = prob.astype(np.float64).ravel()
    g = gt.astype(bool).ravel()
    h_in = np.histogram(p[g], bins=edges)[0]
    h_all = np.histogram(p, bins=edges)[0]
    # pixels at or above grid[i] = pixels in bins i+1.. (np.histogram bins are [a, b))
    above_in = np.cumsum(h_in[::-1])[::-1][1:]
    above_all = np.cumsum(h_all[::-1])[::-1][1:]
    union = above_all + int(g.sum()) - above_in
    return np.where(union == 0, 1.0, above_in / np.maximum(union, 1))


def answered_curve(record: dict, presence_threshold: float, grid_len: int) -> np.ndarray:
    """The record's IoU at every grid threshold once the presence head has spoken: its own curve
    when presence reaches ``presence_threshold``, otherwise an empty answer whatever the
    threshold (IoU 1 on an empty target, 0 on a real one)."""
    if record["presence"] >= presence_threshold:
        return np.asarray(record["curve"], dtype=np.float64)
    return np.full(grid_len, 1.0 if record["empty"] else 0.0)


def tune(records: Iterable[dict], grid: Sequence[float] = THRESHOLD_GRID, presence_threshold: float = 0.5,
         tuned_on: str = "") -> tuple[Decision, dict[str, dict[str, float]]]:
    """Pick each task's mask threshold that maximises its mean IoU (gIoU) over ``records``.

    Each record: ``task``, ``presence`` (probability), ``empty`` (target empty) and ``curve``
    (:func:`iou_curve` on ``grid``). Ties go to the threshold nearest 0.5.

    Returns:
        the decision and, per task, the gIoU at 0.5 and at the chosen threshold (a report).
    """
    grid = list(grid)
    by_task: dict[str, list[np.ndarray]] = defaultdict(list)
    for r in records:
        by_task[r["task"]].append(answered_curve(r, presence_threshold, len(grid)))
    if not by_task:
        raise InputError("no validation rows to tune the decision thresholds on",
                         "build shards with a val split (geoseg data build) and train on them")
    chosen, report = {}, {}
    half = min(range(len(grid)), key=lambda i: abs(grid[i] - 0.5))
    for task, curves in sorted(by_task.items()):
        mean = np.mean(curves, axis=0) * 100
        best = max(range(len(grid)), key=lambda i: (round(mean[i], 6), -abs(grid[i] - 0.5)))
        chosen[task] = float(grid[best])
        report[task] = {"n": len(curves), "gIoU@0.5": float(mean[half]), "threshold": float(grid[best]),
                        "gIoU@threshold": float(mean[best])}
    return Decision({**dict.fromkeys(TASKS, 0.5), **chosen}, presence_threshold, tuned_on), report


def record_ious(records: Sequence[dict], decision: Decision, grid: Sequence[float] = THRESHOLD_GRID) -> np.ndarray:
    """Each record's IoU when ``decision`` answers it (records as for :func:`tune`).

    Why: to compare two models row by row (paired differences) each at its own tuned
    thresholds, without predicting the rows again. A mask threshold must lie on ``grid``.
    """
    grid = [round(float(g), 6) for g in grid]
    out = np.empty(len(records))
    for i, r in enumerate(records):
        t = round(decision.mask_threshold(r["task"]), 6)
        if t not in grid:
            raise InputError(f"mask threshold {t} of task {r['task']} is not on the tuning grid",
                             "use a threshold from geoseg.unified.decision.THRESHOLD_GRID")
        out[i] = float(answered_curve(r, decision.presence_threshold, len(grid))[grid.index(t)])
    return out


PRESENCE_GRID: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass(frozen=True)
class ScenePresence:
    """The presence rule for a text prompt answered window by window over a scene (hysteresis).

    A text prompt on a scene larger than one tile is answered in every window, and each window's
    presence head decides alone; a window whose presence falls just under ``threshold`` then drops
    its whole answer, leaving a square hole in a water body at the tile border. This rule decides
    per scene: a window at or above ``threshold`` proves the target present; a window in the grey
    band ``[low_factor * threshold, threshold)`` keeps its answer aside, painted only when some other
    window of the same prompt proves the target present; below the band the answer is dropped as
    before. A scene with one window, or none reaching the threshold, is answered exactly as before.
    Measured on the validation region (``benchmarks/scene_presence.py``; see ``docs/segment.md``).
    """

    low_factor: float = 0.3

    def __post_init__(self) -> None:
        if not 0.0 <= self.low_factor < 1.0:
            raise InputError(f"the scene presence factor is {self.low_factor}, outside [0, 1)",
                             "give a fraction of the presence threshold such as 0.3, or None to decide per window")

    def gate(self, presence: float, threshold: float) -> str:
        """``"pass"`` (the target is here), ``"hold"`` (keep the answer aside) or ``"drop"``."""
        if presence >= threshold:
            return "pass"
        return "hold" if presence >= self.low_factor * threshold else "drop"

    def to_dict(self, threshold: float) -> dict[str, Any]:
        """The rule and its parameters, as written into an output's provenance."""
        return {"rule": "hysteresis", "low_factor": self.low_factor,
                "low": round(self.low_factor * threshold, 6), "threshold": threshold}


def tune_with_presence(records: Sequence[dict], grid: Sequence[float] = THRESHOLD_GRID,
                       presence_grid: Sequence[float] = PRESENCE_GRID, tuned_on: str = ""
                       ) -> tuple[Decision, dict[str, dict[str, float]]]:
    """:func:`tune` for every presence threshold of ``presence_grid``; keep the best mean task gIoU.

    Lowering the mask thresholds turns some wrong "present" answers on empty targets into
    non-empty masks; a stricter presence threshold can win those back, so both are chosen
    together (ties go to presence 0.5). The report's ``gIoU@0.5`` is the untuned rule
    (presence 0.5, mask 0.5); ``no_target_acc`` is measured on the rows with empty targets.
    """
    records = list(records)
    base = tune(records, grid, 0.5)[1]
    best: tuple | None = None
    for p in presence_grid:
        decision, report = tune(records, grid, p, tuned_on)
        score = float(np.mean([r["gIoU@threshold"] for r in report.values()]))
        key = (round(score, 6), -abs(p - 0.5))
        if best is None or key > best[0]:
            best = (key, decision, report)
    assert best is not None
    _, decision, report = best
    for task, r in report.items():
        r["gIoU@0.5"] = base[task]["gIoU@0.5"]
        k = list(grid).index(decision.mask_threshold(task))
        empties = [rec for rec in records if rec["task"] == task and rec["empty"]]
        ok = [rec["presence"] < decision.presence_threshold or rec["curve"][k] == 1.0 for rec in empties]
        r["no_target_acc"] = float(np.mean(ok) * 100) if ok else float("nan")
        r["presence_threshold"] = decision.presence_threshold
    return decision, report


__all__ = ["PRESENCE_GRID", "THRESHOLD_GRID", "Decision", "ScenePresence", "answered_curve", "iou_curve", "record_ious", "tune", "tune_with_presence"]
