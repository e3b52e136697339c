"""Training batches, built in the training loop or in worker processes beside it.

On the 2-core CPU the network is the cost and batches are built in the loop (``num_workers: 0``,
bit-for-bit the runs recorded in the model history). A GPU steps far faster than one process
can decode masks and augment tiles (about 2 ms a row), so ``num_workers: N`` builds batches
in N processes through a ``torch`` DataLoader: the main process still draws which rows form each
batch (the task schedule lives there) and hands each worker the rows and a seed for its
augmentation, so a run is reproducible for a given N. The schedule is then applied a few
batches late (the ones prefetched), which the task weights' slow change makes immaterial.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial

import cv2
import numpy as np
import torch

from geoseg.unified.data import TileCache, collate


class _Jobs(torch.utils.data.Sampler):
    """Endless ``(row indices, seed)`` jobs drawn in the main process from the task sampler."""

    def __init__(self, draw: Callable[[], list[dict]], index: dict[int, int], seed: int) -> None:
        self.draw = draw
        self.index = index
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[tuple[tuple[int, ...], int]]:
        while True:
            rows = self.draw()
            yield tuple(self.index[id(r)] for r in rows), int(self.rng.integers(2**62))


def _make(rows: list[dict], gen: np.random.Generator, tiles: TileCache, texts: dict[str, torch.Tensor],
          classes: Sequence[str], mean: torch.Tensor, std: torch.Tensor, augment: bool, shadow: float,
          prompts_per_image: int) -> dict[str, torch.Tensor]:
    return collate(rows, tiles, texts, classes, mean, std, gen if augment else None, shadow, prompts_per_image)


class _Collate(torch.utils.data.Dataset):
    """A job → one collated batch (run in a worker; picklable, for start methods other than fork)."""

    def __init__(self, rows: Sequence[dict], make: Callable[[list[dict], np.random.Generator], dict]) -> None:
        self.rows = rows
        self.make = make

    def __getitem__(self, job: tuple[tuple[int, ...], int]) -> dict[str, torch.Tensor]:
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
    """

    def __init__(self, rows: Sequence[dict], draw: Callable[[], list[dict]], tiles: TileCache,
                 texts: dict[str, torch.Tensor], classes: Sequence[str], mean: torch.Tensor, std: torch.Tensor,
                 augment: bool, shadow: float, prompts_per_image: int, rng: np.random.Generator,
                 num_workers: int = 0, seed: int = 0, pin_memory: bool = False, timeout_s: float = 300.0) -> None:
        make = partial(_make, tiles=tiles, texts=texts, classes=classes, mean=mean, std=std, augment=augment,
                       shadow=shadow, prompts_per_image=prompts_per_image)
        self._draw, self._make, self._rng = draw, make, rng
        self._iter: Iterator[dict[str, torch.Tensor]] | None = None
        if num_workers > 0:
            # OpenCV's thread pool does not survive fork: a worker that touches it (even to shrink it) can
            # hang. The workers are the parallelism, so this process's OpenCV goes serial before forking.
            cv2.setNumThreads(1)
            loader = torch.utils.data.DataLoader(
                _Collate(rows, make), sampler=_Jobs(draw, {id(r): i for i, r in enumerate(rows)}, seed),
                batch_size=None, num_workers=num_workers, pin_memory=pin_memory, persistent_workers=True,
                prefetch_factor=2, timeout=timeout_s,
                # fork shares the tiles and embeddings with the workers instead of copying them to each
                multiprocessing_context="fork" if sys.platform.startswith("linux") else None)
            self._iter = iter(loader)

    def next(self) -> dict[str, torch.Tensor]:
        if self._iter is not None:
            return next(self._iter)
        return self._make(self._draw(), self._rng)

    def close(self) -> None:
        """Stop the workers: dropping the DataLoader's iterator shuts them down."""
        self._iter = None


__all__ = ["BatchStream"]
