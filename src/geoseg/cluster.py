"""Dask distributed set-up shared by the data engine and batch segmentation.

A local cluster by default (``workers`` processes, one thread each, on loopback),
or an existing cluster given by its scheduler address. Used as a context manager
so a local cluster is always torn down.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from geoseg.errors import GeosegError, require

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2, threads_per_worker: int = 1,
                memory_limit: str | None = "auto") -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``scheduler``, or for a new local cluster of ``workers``."""
    distributed = require("distributed", "distributed")
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout="10s")
        except (OSError, ValueError, TypeError) as exc:  # unreachable (OSError) or malformed (ValueError)
            raise GeosegError(
                f"cannot reach the Dask scheduler at {scheduler} ({exc})",
                "start it with 'dask scheduler' or drop --scheduler to use a local cluster",
            ) from exc
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:
        raise GeosegError(f"--workers must be at least 1, got {workers}", "pass --workers 1 or more")
    log.info("starting a local Dask cluster with %d workers", workers)
    cluster = distributed.LocalCluster(
        n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
        host="127.0.0.1", dashboard_address=None, memory_limit=memory_limit,
    )
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
