"""Training away from this machine: the lossless tile store, the packed text cache, worker-built batches,
and ``geoseg train --pack`` (a run that trains with the imagery gone)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from geoseg.errors import InputError
from geoseg.unified.data import TileCache, collate, load_rows, row_text, tile_key, training_tiles
from geoseg.unified.loader import BatchStream
from geoseg.unified.text_cache import encode_texts, load_text_cache, pack, save_packed, unpack
from geoseg.unified.train import TaskSampler

from .conftest import tiny_config

CLASSES = ("water", "building", "vegetation")


def test_tile_store_round_trip_is_bit_exact(tiny_shard, tmp_path):
    rows = load_rows(tiny_shard)
    tiles = TileCache(64)
    tiles.fill(rows)
    path = tiles.save(tmp_path / "tiles.npz")
    back = TileCache(64)
    assert back.load(path) == len(tiles.tiles)
    assert set(back.tiles) == set(tiles.tiles)
    for k, v in tiles.tiles.items():
        assert back.tiles[k].dtype == np.uint8 and np.array_equal(back.tiles[k], v), k
    # smaller than the raw pixels
    assert path.stat().st_size < sum(v.nbytes for v in tiles.tiles.values())


def test_tile_store_of_another_size_or_a_broken_file_is_a_clear_error(tiny_shard, tmp_path):
    tiles = TileCache(64)
    tiles.fill(load_rows(tiny_shard)[:3])
    path = tiles.save(tmp_path / "tiles.npz")
    with pytest.raises(InputError, match="64-px tiles, the model takes 32 px"):
        TileCache(32).load(path)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read tile store"):
        TileCache(64).load(bad)


def _copied_shard(tiny_shard, tmp_path):
    """A copy of the session's shard whose images may be moved away; its rows, mapped to the copy."""
    shard = tmp_path / "shard"
    shutil.copytree(tiny_shard, shard)
    return shard, load_rows(shard, path_map={str(tiny_shard): str(shard)})


def test_training_tiles_reads_only_what_the_store_lacks(tiny_shard, tmp_path):
    shard, rows = _copied_shard(tiny_shard, tmp_path)
    full = TileCache(64)
    full.fill(rows)
    keys = list(dict.fromkeys(tile_key(r) for r in rows))
    store = full.save(tmp_path / "tiles.npz", keys=keys[1:])
    (shard / rows[-1]["image_path"].rsplit("/", 1)[1]).unlink()  # a stored tile's image
    got = training_tiles(rows, 64, store)
    assert all(np.array_equal(got.get(r), full.get(r)) for r in rows)
    (shard / rows[0]["image_path"].rsplit("/", 1)[1]).unlink()  # the one tile the store lacks
    with pytest.raises(InputError, match=r"scene_000.png of the shards does not exist"):
        training_tiles(rows, 64, store)


def test_packed_text_cache_is_the_cache_to_int8_rounding(tmp_path):
    gen = torch.Generator().manual_seed(0)
    cache = {f"instruction {i}": (torch.randn(3 + i, 384, generator=gen) * (1 + i)).half() for i in range(6)}
    back = unpack(pack(cache))
    assert set(back) == set(cache)
    for t, e in cache.items():
        assert back[t].shape == e.shape and back[t].dtype == torch.float16
        step = e.float().abs().amax(dim=1, keepdim=True) / 127
        # half a quantisation step, plus float16's rounding of the result
        assert torch.all((back[t].float() - e.float()).abs() <= step * 0.5 + e.float().abs() * 2**-11 + 1e-6), t
    path = save_packed(cache, tmp_path / "packed.pt", texts=["instruction 1", "instruction 4"])
    assert set(load_text_cache(path)) == {"instruction 1", "instruction 4"}
    with pytest.raises(InputError, match="not in the text cache"):
        pack(cache, ["instruction 1", "never encoded"])


def test_encode_texts_reads_a_packed_cache_without_the_encoder(tmp_path, monkeypatch):
    cache = {"the water": torch.ones(4, 384).half(), "the building": torch.full((5, 384), -0.5).half()}
    path = save_packed(cache, tmp_path / "packed.pt")

    def no_encoder(*a, **k):
        raise AssertionError("the encoder must not be loaded when the cache holds every instruction")

    monkeypatch.setattr("geoseg.unified.text_encoder.TextEncoder", no_encoder)
    got = encode_texts(["the water", "the building"], path, None, 128)
    assert torch.equal(got["the water"], cache["the water"]) and torch.equal(got["the building"], cache["the building"])


def _stream(rows, tiles, texts, workers: int, seed: int = 3) -> BatchStream:
    sampler = TaskSampler(rows, seed=seed)
    weights = {"interactive": 1.0, "referring": 1.0, "reasoning": 1.0}
    return BatchStream(rows, lambda: sampler.batch(4, weights), tiles, texts, CLASSES, torch.zeros(3), torch.ones(3),
                       True, 0.0, 1, np.random.default_rng(seed), num_workers=workers, seed=seed, timeout_s=120)


def test_worker_batches_match_the_in_loop_batches_in_form_and_repeat_for_a_seed(tiny_shard):
    rows = load_rows(tiny_shard, "train")
    tiles = TileCache(64)
    tiles.fill(rows)
    texts = {row_text(r): torch.ones(3, 384) for r in rows}
    inline = _stream(rows, tiles, texts, 0)
    first = [inline.next() for _ in range(3)]
    # the in-loop path is collate on the sampler's rows with the loop's generator, as before workers existed
    sampler, rng = TaskSampler(rows, seed=3), np.random.default_rng(3)
    weights = {"interactive": 1.0, "referring": 1.0, "reasoning": 1.0}
    again = collate(sampler.batch(4, weights), tiles, texts, CLASSES, torch.zeros(3), torch.ones(3), rng)
    assert all(torch.equal(first[0][k], again[k]) for k in again)
    a, b = _stream(rows, tiles, texts, 2), _stream(rows, tiles, texts, 2)
    try:
        for _ in range(3):
            x, y = a.next(), b.next()
            assert set(x) == set(first[0])
            for k in x:
                assert x[k].dtype == first[0][k].dtype and x[k].shape[1:] == first[0][k].shape[1:], k
                assert torch.equal(x[k], y[k]), k
    finally:
        a.close()
        b.close()


def test_pack_trains_with_the_imagery_gone(tiny_shard, text_cache_path, tmp_path, capsys):
    """geoseg train --pack, then a run from the pack (two batch workers) after the images were deleted."""
    from geoseg.cli import main

    shard, rows = _copied_shard(tiny_shard, tmp_path)
    cfg = tiny_config(shard, tmp_path / "run", epochs=1, steps_per_epoch=6, num_workers=2,
                      image_path_map={str(tiny_shard): str(shard)})
    (tmp_path / "cfg.yaml").write_text(cfg.to_yaml())
    pack_dir = tmp_path / "pack"
    main(["-q", "train", "--config", str(tmp_path / "cfg.yaml"), "--text-cache", str(text_cache_path),
          "--pack", str(pack_dir)])
    out = capsys.readouterr().out
    assert "packed tiny into" in out and f"{len(rows) - sum(r['split'] == 'val' for r in rows)} train" in out
    # the pack's tiles are the pixels this machine decodes
    got, want = TileCache(64), TileCache(64)
    got.load(pack_dir / "data" / "tiles.npz")
    want.fill(rows)
    assert set(got.tiles) == set(want.tiles)
    assert all(np.array_equal(got.tiles[k], want.tiles[k]) for k in want.tiles)
    for png in shard.glob("*.png"):
        png.unlink()
    main(["-q", "train", "--config", str(pack_dir / "data" / "config.yaml"), "--text-cache",
          str(pack_dir / "text" / "text_cache.pt"), "--device", "cpu"])
    hist = [json.loads(x) for x in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["step"] == 6 and np.isfinite(hist[-1]["train_loss"])
    assert sum(hist[-1]["task_mix"].values()) == 6 * 8 and "interactive" in hist[-1]["val"]
    # a second pack into the same folder is refused, nothing overwritten
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(tmp_path / "cfg.yaml"), "--text-cache", str(text_cache_path),
              "--pack", str(pack_dir)])
    assert exc.value.code == 2 and "is not empty" in capsys.readouterr().err


def test_worker_jobs_pickle_for_start_methods_other_than_fork(tiny_shard):
    """macOS and Windows start workers by spawning, which pickles what a worker runs."""
    import pickle
    from functools import partial

    from geoseg.unified.loader import _Collate, _make

    rows = load_rows(tiny_shard, "train")
    tiles = TileCache(64)
    tiles.fill(rows)
    texts = {row_text(r): torch.ones(3, 384) for r in rows}
    job = _Collate(rows, partial(_make, tiles=tiles, texts=texts, classes=CLASSES, mean=torch.zeros(3),
                                 std=torch.ones(3), augment=True, shadow=0.0, prompts_per_image=1))
    again = pickle.loads(pickle.dumps(job))
    a, b = job[((0, 1, 2), 7)], again[((0, 1, 2), 7)]
    assert all(torch.equal(a[k], b[k]) for k in a)
