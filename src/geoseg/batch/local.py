"""All scenes in this process, window by window (no Dask)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from geoseg.batch.markers import _mark_done
from geoseg.batch.outcomes import SceneOutcome, _bars, _failed
from geoseg.batch.scene_run import _SceneRun
from geoseg.batch.worker import process_group, resolve_backend


def _run_local(todo: list[Path], out_dir: Path, prompts, opts, spec, job_key, on_error, n_skipped,
               start: Callable[[], None]):
    """All scenes in this process, window by window (the reference for the distributed run).

    ``start()`` runs once the backend is built, before the first scene.
    """
    outcomes: dict[Path, SceneOutcome] = {}
    if not todo:
        start()
        return spec.backend or "unified", [], outcomes
    name, provenance, notes = resolve_backend(spec, prompts)
    start()
    scene_bar, tile_bar = _bars(len(todo) + n_skipped)
    scene_bar.update(n_skipped)
    try:
        for scene in todo:
            t0 = time.perf_counter()
            run = None
            try:
                run = _SceneRun(scene, out_dir, prompts, opts, provenance)
                tile_bar.total += len(run.groups)
                tile_bar.refresh()
                for i, group in enumerate(run.groups):
                    run.add(i, process_group(run.source, group, spec))
                    tile_bar.update(run.paint_ready())
                outcome = run.finish()
                _mark_done(scene, out_dir, job_key, outcome)  # or removes the outputs and raises
            except BaseException as exc:  # noqa: BLE001 - a scene's failure is reported, not fatal (on_error=skip)
                if run is not None and not run.failed:
                    run.abort()  # also on Ctrl-C: no temporary file stays behind
                if not isinstance(exc, Exception):
                    raise
                outcome = _failed(scene, exc, on_error, t0)
            outcomes[scene] = outcome
            scene_bar.update(1)
    finally:
        tile_bar.close()
        scene_bar.close()
    return name, notes, outcomes
