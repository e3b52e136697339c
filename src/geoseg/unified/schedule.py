"""The training schedule: which tasks a batch draws as training progresses, and the learning rate.

Progressive multi-task training: interactive prompts only at first, referring and reasoning
mixed in while the interactive weight decays over the first ``ramp_frac`` of the run; the
learning rate warms up linearly and then follows a cosine to 5 %.
"""

from __future__ import annotations

import math

from geoseg.models import TASK_IDS

TASKS = tuple(TASK_IDS)


def task_weights(cfg_train, frac: float) -> dict[str, float]:
    """Sampling weight of each task at training progress ``frac`` in [0, 1]."""
    if not cfg_train.progressive:
        return {t: 1 / 3 for t in TASKS}
    r = min(1.0, frac / max(cfg_train.ramp_frac, 1e-9))
    w_int = cfg_train.interactive_start + (cfg_train.interactive_end - cfg_train.interactive_start) * r
    rest = 1.0 - w_int
    return {"interactive": w_int, "referring": rest * (1 - cfg_train.reasoning_share),
            "reasoning": rest * cfg_train.reasoning_share}


def lr_factor(step: int, frac: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5 % following training progress."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))


__all__ = ["TASKS", "lr_factor", "task_weights"]
