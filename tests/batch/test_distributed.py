"""Batch on a real Dask LocalCluster (2 worker processes on loopback) equals the single-process run byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg.batch import run_batch, worker_builds
from geoseg.prompts import Prompt

from .conftest import write_scene

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes on 127.0.0.1, shared by the tests of this module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, memory_limit="2GiB") as lc, distributed.Client(lc) as client:
        yield lc, client


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _features(path: Path) -> list:
    import pyogrio.raw

    meta, _, wkb, data = pyogrio.raw.read(path)
    return [bytes(g) for g in wkb] + [list(col) for col in data]


def _compare(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        if name.endswith(".tif"):
            assert _digest(a / name) == _digest(b / name), f"{name} differs"
        else:
            assert _features(a / name) == _features(b / name), f"{name} differs"


def test_boxes_over_scenes_and_windows(tmp_path, cluster):
    lc, client = cluster
    d = tmp_path / "scenes"
    d.mkdir()
    for i in range(2):
        write_scene(d / f"s{i}.tif", width=1100, height=900, seed=i)
    # three boxes far apart -> three windows per scene, six tasks for the two workers
    boxes = [(140, 90, 410, 310), (440, 370, 650, 530), (800, 50, 1080, 300)]
    prompts = [Prompt(box=b) for b in boxes]
    kw = dict(backend="classical", vector="gpkg", score_raster=True, tile_size=512, overlap=64)
    single = run_batch(d, tmp_path / "single", prompts, workers=0, **kw)
    dist = run_batch(d, tmp_path / "dist", prompts, scheduler=lc.scheduler_address, max_inflight=4, **kw)
    assert single.count("done") == dist.count("done") == 2
    assert [o.n_windows for o in dist.scenes] == [3, 3]
    _compare(tmp_path / "single", tmp_path / "dist",
             [f"s{i}{ext}" for i in range(2) for ext in (".tif", "_score.tif", ".gpkg")])
    with rasterio.open(tmp_path / "dist" / "s0.tif") as ds:
        assert (ds.read(1) == 1).sum() > 0.5 * 200 * 250  # the roofs were found, not an empty result
    builds = client.run(worker_builds)
    assert all(b.get("classical", 0) <= 1 for b in builds.values()), builds  # built once per worker, not per task


@pytest.fixture
def one_torch_thread():
    """Run the in-process reference with one torch thread, as each Dask worker does.

    Dask's nanny starts workers with OMP/MKL threads = threads_per_worker (1 here); float
    reductions split over a different number of threads sum in a different order, so the
    byte-for-byte claim holds for equal thread counts, which is what this pins.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_text_prompt_spreads_one_scene_over_both_workers(tmp_path, cluster, tiny_checkpoint, one_torch_thread):
    lc, client = cluster
    scene = write_scene(tmp_path / "big.tif", width=1400, height=1200, seed=4)
    prompts = [Prompt(text="the bright roofs")]
    kw = dict(checkpoint=str(tiny_checkpoint), device="cpu", score_raster=True, tile_size=512, overlap=64)
    single = run_batch([scene], tmp_path / "single", prompts, workers=0, **kw)
    dist = run_batch([scene], tmp_path / "dist", prompts, scheduler=lc.scheduler_address, **kw)
    assert single.scenes[0].n_windows == dist.scenes[0].n_windows == 9  # 3 x 3 tiles
    _compare(tmp_path / "single", tmp_path / "dist", ["big.tif", "big_score.tif"])
    with rasterio.open(tmp_path / "dist" / "big_score.tif") as ds:
        score = ds.read(1)
    assert np.ptp(score[np.isfinite(score)]) > 0  # a real, varying model response was compared
    builds = client.run(worker_builds)
    assert [b.get("unified") for b in builds.values()] == [1, 1], builds  # both workers worked, each built it once
