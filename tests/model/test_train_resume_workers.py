"""``--resume`` with batch workers (``num_workers`` > 0) ends where the uninterrupted run ends, bit for bit.

Before, three things differed after a resume: the jobs' augmentation seeds restarted from
``train.seed``, the jobs the workers had prefetched (their rows already drawn by the task sampler,
whose state the checkpoint kept) were never trained on, and the DataLoader drew its workers' base
seed from torch's global generator right after the run had restored it."""

from __future__ import annotations

import numpy as np
import torch

from .conftest import stop_and_resume


def test_resume_with_batch_workers_trains_the_same_weights_as_an_uninterrupted_run(tiny_shard, text_cache_path,
                                                                                   tmp_path, monkeypatch):
    a, b = stop_and_resume(tiny_shard, text_cache_path, tmp_path, monkeypatch, epochs=2, steps_per_epoch=3,
                           augment=True, shadow_aug=0.5, num_workers=2)
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # the same batches were trained on: the task mix and the loss of the resumed epoch match too
    assert a["train_state"]["history"][-1]["task_mix"] == b["train_state"]["history"][-1]["task_mix"]
    assert a["train_state"]["history"][-1]["train_loss"] == b["train_state"]["history"][-1]["train_loss"]
    # what the checkpoint kept: the 2 x 2 prefetched jobs, whose rows the sampler had drawn
    stream = a["train_state"]["stream"]
    assert len(stream["pending"]) == 4 and all(len(idx) == 8 for idx, _ in stream["pending"])


def test_a_stream_resumed_from_its_state_hands_out_the_batches_the_first_would_have(tiny_shard):
    """BatchStream alone: a stream stopped after 3 batches and rebuilt from its state (the sampler's
    state restored too) gives batches 4-6 of an uninterrupted stream; also into the in-loop path."""
    from geoseg.unified.data import TileCache, load_rows, row_text
    from geoseg.unified.loader import BatchStream
    from geoseg.unified.sampler import TaskSampler

    rows = load_rows(tiny_shard, "train")
    tiles = TileCache(64)
    tiles.fill(rows)
    texts = {row_text(r): torch.ones(3, 384) for r in rows}
    weights = {"interactive": 1.0, "referring": 1.0, "reasoning": 1.0}

    def stream(workers: int, sampler: TaskSampler, state=None) -> BatchStream:
        return BatchStream(rows, lambda: sampler.batch(4, weights), tiles, texts, ("water", "building", "vegetation"),
                           torch.zeros(3), torch.ones(3), True, 0.0, 1, np.random.default_rng(5),
                           num_workers=workers, seed=5, timeout_s=120, state=state)

    whole_sampler, first_sampler = TaskSampler(rows, seed=5), TaskSampler(rows, seed=5)
    whole, first = stream(2, whole_sampler), stream(2, first_sampler)
    try:
        want = [whole.next() for _ in range(6)]
        for _ in range(3):
            first.next()
        saved, sampler_state = first.state(), first_sampler.state()
    finally:
        whole.close()
        first.close()
    assert len(saved["pending"]) == 4  # 2 workers x prefetch 2, drawn ahead of the loop
    for workers in (2, 0):
        again = TaskSampler(rows, seed=5)
        again.set_state(sampler_state)
        resumed = stream(workers, again, saved)
        try:
            got = [resumed.next() for _ in range(3)]
        finally:
            resumed.close()
        for x, y in zip(got, want[3:], strict=True):
            assert all(torch.equal(x[k], y[k]) for k in y), workers
