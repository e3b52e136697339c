"""Training batches, built in the training loop or in worker processes beside it.

On the 2-core CPU the network is the cost and batches are built in the loop (``num_workers: 0``,
bit-for-bit the runs recorded in the model history). A GPU steps far faster than one process
can decode masks and augment tiles (about 2 ms a row), so ``num_workers: N`` builds batches
in N processes through a ``torch`` DataLoader: the main process still draws which rows form each
batch (the task schedule lives there) and hands each worker a *job*, the rows and a seed for its
augmentation drawn from a generator of the main process, so a run is reproducible for a given N.
The workers' own random states are never used: a batch is a function of its job alone. The
schedule is then applied a few batches late (the ``2 N`` jobs prefetched), which the task weights'
slow change makes immaterial.

A stopped run resumes exactly (:meth:`BatchStream.state`): the checkpoint keeps the job generator's
state and the jobs drawn but not yet trained on (the prefetched ones, whose rows the task sampler
has already drawn), which the resumed stream hands out first; the DataLoader draws its base seed
from a generator of its own, not from torch's global one that the training step restores. With the
same ``num_workers`` a stopped-and-resumed run is bit-identical to an uninterrupted one; with
another worker count (or 0) it replays the pending jobs and goes on, as reproducible but not
identical (jobs are drawn at another point of the schedule, and the loop's own augmentation
generator is another stream than the jobs' seeds).
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import cv2
import numpy as np
import torch

from geoseg.unified.data import TileCache, collate

Job = tuple[tuple[int, ...], int]


class _Jobs(torch.utils.data.Sampler):
    """Endless ``(row indices, seed)`` jobs: first ``pending`` (drawn before a resume), then drawn in the main
    process from the task sampler, each kept in ``pending`` until the loop takes its batch."""

    def __init__(self, draw: Callable[[], list[dict]], index: dict[int, int], rng: np.random.Generator,
                 pending: deque[Job]) -> None:
        self.draw = draw
        self.index = index
        self.rng = rng
        self.pending = pending

    def __iter__(self) -> Iterator[Job]:
        yield from list(self.pending)
        while True:
            rows = self.draw()
            job = tuple(self.index[id(r)] for r in rows), int(self.rng.integers(2**62))
            self.pending.append(job)
            yield job


def _make(rows: list[dict], gen: np.random.Generator, tiles: TileCache, texts: dict[str, torch.Tensor],
          classes: Sequence[str], mean: torch.Tensor, std: torch.Tensor, augment: bool, shadow: float,
          prompts_per_image: int) -> dict[str, torch.Tensor]:
    return collate(rows, tiles, texts, classes, mean, std, gen if augment else None, shadow, prompts_per_image)


class _Collate(torch.utils.data.Dataset):
    """A job → one collated batch (run in a worker; picklable, for start methods other than fork)."""

    def __init__(self, rows: Sequence[dict], make: Callable[[list[dict], np.random.Generator], dict]) -> None:
        self.rows = rows
        self.make = make

    def __getitem__(self, job: Job) -> dict[str, torch.Tensor]:
        idx, seed = job
        return self.make([self.rows[i] for i in idx], np.random.default_rng(seed))

    def __len__(self) -> int:  # endless; DataLoader only asks when it wants a length hint
        return 2**31 - 1


class BatchStream:
    """``next()`` → the next training batch (a dict of CPU tensors, as :func:`collate` makes).

    Args:
        rows: the training rows the sampler draws from (the same objects).
        draw: returns the next batch's rows (the task sampler at the current schedule).
        tiles, texts, classes, mean, std, augment, shadow, prompts_per_image: what :func:`collate` takes.
        rng: the augmentation generator of the in-loop path (``num_workers`` 0).
        num_workers: worker processes (0 = build in the loop).
        seed: seeds the workers' per-batch augmentation.
        pin_memory: page-locked batches (faster copies to a GPU).
        timeout_s: a worker that has not delivered a batch in this long is an error, not a silent hang.
        state: what :meth:`state` returned when the run was saved (resume): the jobs' generator and the
            jobs drawn but not yet trained on.
    """

    def __init__(self, rows: Sequence[dict], draw: Callable[[], list[dict]], tiles: TileCache,
                 texts: dict[str, torch.Tensor], classes: Sequence[str], mean: torch.Tensor, std: torch.Tensor,
                 augment: bool, shadow: float, prompts_per_image: int, rng: np.random.Generator,
                 num_workers: int = 0, seed: int = 0, pin_memory: bool = False, timeout_s: float = 300.0,
                 state: dict | None = None) -> None:
        make = partial(_make, tiles=tiles, texts=texts, classes=classes, mean=mean, std=std, augment=augment,
                       shadow=shadow, prompts_per_image=prompts_per_image)
        self._draw, self._make, self._rng, self._rows = draw, make, rng, rows
        self._iter: Iterator[dict[str, torch.Tensor]] | None = None
        self._job_rng = np.random.default_rng(seed)
        self._pending: deque[Job] = deque()
        if state:
            self._job_rng.bit_generator.state = state["job_rng"]
            self._pending.extend((tuple(int(i) for i in idx), int(s)) for idx, s in state["pending"])
        if num_workers > 0:
            # OpenCV's thread pool does not survive fork: a worker that touches it (even to shrink it) can
            # hang. The workers are the parallelism, so this process's OpenCV goes serial before forking.
            cv2.setNumThreads(1)
            loader = torch.utils.data.DataLoader(
                _Collate(rows, make),
                sampler=_Jobs(draw, {id(r): i for i, r in enumerate(rows)}, self._job_rng, self._pending),
                batch_size=None, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=True,
                prefetch_factor=2, timeout=timeout_s,
                # the workers' base seed from a generator of the loader's own: drawn from torch's global one it
                # would shift the training step's random stream on a resume (restored, then drawn again)
                generator=torch.Generator().manual_seed(seed),
                # fork shares the tiles and embeddings with the workers instead of copying them to each
                multiprocessing_context="fork" if sys.platform.startswith("linux") else None)
            self._iter = iter(loader)

    def next(self) -> dict[str, torch.Tensor]:
        """The next batch: a worker's (jobs come back in the order drawn), else one built here, the jobs left
        pending by a run resumed from workers first."""
        if self._iter is not None:
            batch = next(self._iter)
            self._pending.popleft()  # its job, the oldest drawn
            return batch
        if self._pending:
            idx, seed = self._pending.popleft()
            return self._make([self._rows[i] for i in idx], np.random.default_rng(seed))
        return self._make(self._draw(), self._rng)

    def state(self) -> dict:
        """What a checkpoint keeps to resume this stream exactly: the jobs' generator state and the jobs
        drawn but not yet handed out (the task sampler's state already counts their rows)."""
        return {"job_rng": self._job_rng.bit_generator.state,
                "pending": [[list(idx), seed] for idx, seed in self._pending]}

    def close(self) -> None:
        """Stop the workers: dropping the DataLoader's iterator shuts them down."""
        self._iter = None


__all__ = ["BatchStream"]
