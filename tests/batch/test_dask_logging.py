"""How much Dask logs in a batch: its errors only by default (client and workers), its warnings with -v."""

from __future__ import annotations

import contextlib
import logging
import os

import pytest

import geoseg.cluster

from .conftest import run_cli, write_scene


def _level() -> int:
    return logging.getLogger("distributed").getEffectiveLevel()


def _batch(tmp_path, flags: list[str], workers: int) -> int:
    for i in range(2):
        write_scene(tmp_path / f"s{i}.tif", width=300, height=300, seed=i)
    return run_cli([*flags, "segment", str(tmp_path / "*.tif"), "--box", "140,90,290,290", "--backend", "classical",
                    "-o", str(tmp_path / "out"), "--workers", str(workers)])


def test_a_default_batch_shows_only_dask_errors_also_from_its_workers(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)  # the CLI sets it; restored after the test
    seen: dict = {}
    real = geoseg.cluster.dask_client

    @contextlib.contextmanager
    def dask_client(*args, **kwargs):
        with real(*args, **kwargs) as client:
            seen.update(client.run(_level))  # worker processes read the level when they import Dask
            yield client

    monkeypatch.setattr(geoseg.cluster, "dask_client", dask_client)
    assert _batch(tmp_path, [], workers=1) == 0
    assert list(seen.values()) == [logging.ERROR]


def test_verbose_keeps_dask_warnings(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_LOGGING__DISTRIBUTED", raising=False)
    assert _batch(tmp_path, ["-v"], workers=0) == 0
    assert os.environ.get("DASK_LOGGING__DISTRIBUTED") == "warning"  # what Dask's workers would read


def test_a_users_own_dask_level_is_kept(tmp_path, monkeypatch):
    """Batch's errors-only default used to replace a level the user had set to 'warning' themselves."""
    monkeypatch.setenv("DASK_LOGGING__DISTRIBUTED", "warning")
    assert _batch(tmp_path, [], workers=0) == 0
    assert os.environ.get("DASK_LOGGING__DISTRIBUTED") == "warning"
