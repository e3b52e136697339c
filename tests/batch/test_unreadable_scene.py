"""A truncated scene is reported in one line with GDAL's own reason, in this process and from a Dask worker.

Two ways a scene is cut short: a plain GeoTIFF cut in half fails when the client opens it (the
stretch samples every strip); a Cloud-Optimized GeoTIFF keeps its overviews first and its full
resolution tiles last, so a cut one opens and samples fine and fails in a window read, on a worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from geoseg.batch import run_batch
from geoseg.errors import GeosegError
from geoseg.prompts import Prompt

from .conftest import write_scene

SIZE = 2048
LAST_TILE = [Prompt(box=(1700.0, 1700.0, 1900.0, 1900.0))]  # in the COG's last 512 px tile
KW = dict(backend="classical", tile_size=512, overlap=64)


def _cut_plain(folder: Path) -> Path:
    path = write_scene(folder / "plain.tif", width=SIZE, height=SIZE, seed=1)
    os.truncate(path, path.stat().st_size // 2)  # a copy that stopped half-way: header fine, strips missing
    return path


def _cut_cog(folder: Path, tmp_path: Path) -> Path:
    import rasterio
    import rasterio.shutil

    src = write_scene(tmp_path / "whole.tif", width=SIZE, height=SIZE, seed=2)
    path = folder / "cog.tif"
    rasterio.shutil.copy(src, path, driver="COG", BLOCKSIZE=512)
    with rasterio.open(path) as ds:
        assert ds.overviews(1)  # the scene stretch reads those, not the cut tiles
    os.truncate(path, int(path.stat().st_size * 0.8))
    return path


def _check(outcome, name: str, out: Path) -> None:
    assert outcome.status == "failed"
    err = outcome.error
    assert err.startswith(f"cannot read {name}: ") and "\n" not in err
    assert "See previous exception" not in err and not err.startswith("Exception")
    assert "bytes, expected" in err  # GDAL's reason: how much of the strip or tile it got
    assert not list(out.glob(f"{Path(name).stem}*"))  # no partial output


def test_truncated_scenes_in_process(tmp_path):
    d = tmp_path / "scenes"
    d.mkdir()
    _cut_cog(d, tmp_path)
    _cut_plain(d)
    out = tmp_path / "out"
    s = run_batch(d, out, LAST_TILE, workers=0, **KW)
    assert [Path(o.scene).name for o in s.scenes] == ["cog.tif", "plain.tif"]
    _check(s.scenes[0], "cog.tif", out)
    _check(s.scenes[1], "plain.tif", out)
    assert f"failed: {s.scenes[0].scene}: cannot read cog.tif: " in s.report()
    with pytest.raises(GeosegError, match=r"^scene cog.tif failed: cannot read cog.tif: .*bytes, expected"):
        run_batch(d, tmp_path / "out_fail", LAST_TILE, on_error="fail", **KW)


def test_truncated_scene_on_a_dask_worker(tmp_path):
    distributed = pytest.importorskip("distributed")
    d = tmp_path / "scenes"
    d.mkdir()
    _cut_cog(d, tmp_path)
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None, memory_limit="2GiB") as lc:
        s = run_batch(d, out, LAST_TILE, scheduler=lc.scheduler_address, **KW)
    _check(s.scenes[0], "cog.tif", out)
