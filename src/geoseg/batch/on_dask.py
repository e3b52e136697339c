"""Scenes x window groups as Dask tasks, painted on the client in plan order; a clean Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from geoseg.batch.markers import _mark_done
from geoseg.batch.outcomes import SceneOutcome, _bars, _failed
from geoseg.batch.scene_run import _SceneRun
from geoseg.batch.worker import process_group, resolve_backend


def _ignore_interrupts() -> None:
    """Run on each local worker: Ctrl-C is for the client, which cancels the work and closes the cluster.

    The terminal sends SIGINT to the whole process group, local workers included; a worker
    hit by it dies mid-task and every part of the cluster logs the wreck.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def _quiet_dask_on_interrupt(client, local: bool) -> Iterator[None]:
    """Make Ctrl-C one clean stop: workers ignore SIGINT, and the teardown after it logs nothing.

    Closing a cluster whose tasks were just cancelled makes Dask warn (cancelled tasks,
    lost workers, a worker killed after its grace period): expected, and not the user's
    business after they asked to stop.
    """
    if local:
        client.run(_ignore_interrupts)
    try:
        yield
    except KeyboardInterrupt:
        _silence_dask_logs()
        if local:  # the workers log from their own processes: a task cut short by the closing cluster
            client.run(_silence_dask_logs, on_error="ignore")
        raise


def _silence_dask_logs() -> None:
    """Only critical messages from Dask's loggers in this process (its own or a worker's) from now on."""
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in ("distributed", "tornado")]
    for name in ["distributed", *names]:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _run_dask(client, todo: list[Path], out_dir: Path, prompts, opts, spec, job_key, on_error, n_skipped,
              max_inflight: int, start: Callable[[], None]):
    """Scenes x window groups as Dask tasks, painting on the client in plan order.

    ``start()`` runs once a worker has built the backend, before the first scene.

    At most ``max_inflight`` groups are submitted or waiting to be painted at any time,
    so memory stays bounded whatever the number of scenes; tasks of the next scenes are
    submitted while the current one finishes, so workers stay busy across scene borders.
    """
    from collections import deque

    from distributed import as_completed

    outcomes: dict[Path, SceneOutcome] = {}
    if not todo:
        start()
        return spec.backend or "unified", [], outcomes
    name, provenance, notes = client.submit(resolve_backend, spec, prompts, pure=False).result()
    start()
    scene_bar, tile_bar = _bars(len(todo) + n_skipped)
    scene_bar.update(n_skipped)
    order: deque[_SceneRun] = deque()  # planned scenes, painted strictly in this order
    futures: dict[Any, tuple[_SceneRun, int]] = {}
    ac = as_completed()

    def tasks() -> Iterator[tuple[_SceneRun, int]]:
        for scene in todo:
            t0 = time.perf_counter()
            try:
                run = _SceneRun(scene, out_dir, prompts, opts, provenance)
            except Exception as exc:  # noqa: BLE001 - reported per scene (on_error=fail re-raises)
                outcomes[scene] = _failed(scene, exc, on_error, t0)
                scene_bar.update(1)
                continue
            order.append(run)
            tile_bar.total += len(run.groups)
            tile_bar.refresh()
            for i in range(len(run.groups)):
                if run.failed:
                    break
                yield run, i

    pending = tasks()

    def fill() -> None:
        while len(futures) + sum(len(r.waiting) for r in order) < max_inflight:
            nxt = next(pending, None)
            if nxt is None:
                return
            run, i = nxt
            fut = client.submit(process_group, run.source, run.groups[i], spec, pure=False)
            futures[fut] = (run, i)
            ac.add(fut)

    def fail(run: _SceneRun, exc: BaseException) -> None:
        run.abort()
        for f, (r, _) in list(futures.items()):
            if r is run:
                f.cancel()
                futures.pop(f, None)
        outcomes[run.scene] = _failed(run.scene, exc, on_error, run.t0)
        scene_bar.update(1)

    def paint() -> None:
        while order:
            run = order[0]
            if run.failed:
                order.popleft()
                continue
            try:
                tile_bar.update(run.paint_ready())
                if not run.complete:
                    return
                outcome = run.finish()
                _mark_done(run.scene, out_dir, job_key, outcome)  # or removes the outputs and raises
            except Exception as exc:  # noqa: BLE001
                fail(run, exc)
                continue
            outcomes[run.scene] = outcome
            scene_bar.update(1)
            order.popleft()

    try:
        fill()
        for fut in ac:
            entry = futures.pop(fut, None)
            if entry is None:  # cancelled with its failed scene
                continue
            run, i = entry
            if not run.failed:
                try:
                    run.add(i, fut.result())
                except Exception as exc:  # noqa: BLE001 - on_error decides (fail re-raises in _failed)
                    fail(run, exc)
                paint()
            fill()
        paint()
    except BaseException:
        for f in futures:
            f.cancel()
        for run in order:
            if not run.failed:
                run.abort()
        raise
    finally:
        tile_bar.close()
        scene_bar.close()
    return name, notes, outcomes
