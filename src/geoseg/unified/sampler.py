"""The task sampler: which rows make up each training batch, following the schedule's task mix."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from geoseg.unified.data import orientation_free, tile_key
from geoseg.unified.schedule import TASKS


class TaskSampler:
    """Draws batches whose task mix follows the schedule; rows uniformly within a task.

    With ``no_target_share`` > 0 a text-task pick comes from that task's no-target rows with this
    probability (they are 1-4 % of the engine's rows; too few and the presence head learns that
    a qualified instruction, "the leftmost body of water", always has a target).
    """

    def __init__(self, rows: list[dict], seed: int, no_target_share: float = 0.0) -> None:
        self.by_task = {t: [r for r in rows if r["task"] == t] for t in TASKS}
        self.empty = {t: [r for r in v if r["empty_target"]] for t, v in self.by_task.items() if t != "interactive"}
        self.no_target_share = no_target_share
        self.rng = random.Random(seed)
        self._by_tile: dict[tuple, dict[str, list[dict]]] | None = None  # (tile, flip-free only) → task → rows

    def _draw(self, rows: list[dict], empty: list[dict] | None) -> dict:
        """One of ``rows``, or with probability ``no_target_share`` one of their no-target ``empty`` rows."""
        if self.no_target_share > 0 and empty and self.rng.random() < self.no_target_share:
            return self.rng.choice(empty)
        return self.rng.choice(rows)

    def _pick(self, task: str) -> dict:
        return self._draw(self.by_task[task], self.empty.get(task))

    def _tasks(self, weights: dict[str, float], by_task: dict[str, list[dict]]) -> tuple[list[str], list[float]]:
        tasks = [t for t in TASKS if by_task.get(t) and weights.get(t, 0) > 0]
        if not tasks:
            tasks = [t for t in TASKS if by_task.get(t)]
        return tasks, [weights.get(t, 0) or 1e-9 for t in tasks]

    def _tile_pool(self, row: dict) -> dict[str, list[dict]]:
        """The rows of ``row``'s tile by task; only those without position words when ``row`` has none."""
        if self._by_tile is None:
            self._by_tile = defaultdict(dict)
            for task, rows in self.by_task.items():
                for r in rows:
                    for free in {False, orientation_free(r)}:
                        self._by_tile[(tile_key(r), free)].setdefault(task, []).append(r)
        return self._by_tile[(tile_key(row), orientation_free(row))]

    def batch(self, n: int, weights: dict[str, float], prompts_per_image: int = 1) -> list[dict]:
        """``n`` rows; with ``prompts_per_image`` = k > 1, ``n // k`` runs of k rows from one tile each.

        A run starts from a row drawn as usual; the other k − 1 come from the same tile, their task
        drawn by the same weights (and a no-target pick at the same share). When the first row's
        instruction allows flips, so must the rest (the group shares one augmented image).
        """
        tasks, w = self._tasks(weights, self.by_task)
        k = prompts_per_image
        if k <= 1:
            return [self._pick(t) for t in self.rng.choices(tasks, weights=w, k=n)]
        out: list[dict] = []
        for t in self.rng.choices(tasks, weights=w, k=n // k):
            first = self._pick(t)
            pool = self._tile_pool(first)
            group_tasks, gw = self._tasks(weights, pool)
            out.append(first)
            for t2 in self.rng.choices(group_tasks, weights=gw, k=k - 1):
                empty = [r for r in pool[t2] if r["empty_target"]] if t2 != "interactive" else None
                out.append(self._draw(pool[t2], empty))
        return out

    def state(self) -> Any:
        return self.rng.getstate()

    def set_state(self, s: Any) -> None:
        self.rng.setstate(_tuplify(s))


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


__all__ = ["TaskSampler"]
