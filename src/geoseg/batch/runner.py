"""The batch: check everything, then run the scenes here or on Dask and merge their layers."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from geoseg.batch.earlier import SetAside, earlier_option_sets, settle_leftover
from geoseg.batch.folders import (
    _check_no_overwrite,
    _drop_previous_outputs,
    _remove_stale_temps,
)
from geoseg.batch.jobs import BackendSpec, BatchOptions, OnError
from geoseg.batch.local import _run_local
from geoseg.batch.markers import (
    MARKER_DIR,
    _marker_outputs,
    _marker_path,
    _scene_outputs,
    _write_summary,
    is_complete,
)
from geoseg.batch.merge import merge_vectors
from geoseg.batch.on_dask import _quiet_dask_on_interrupt, _run_dask
from geoseg.batch.outcomes import BatchSummary, SceneOutcome
from geoseg.batch.scenes import expand_scenes
from geoseg.errors import GeosegError, InputError
from geoseg.folders import missing_folders, remove_empty_folders
from geoseg.prompt_layer import PromptLayer
from geoseg.prompts import Prompt

log = logging.getLogger(__name__)


def run_batch(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    prompts: Sequence[Prompt],
    *,
    backend: str | None = None,
    checkpoint: str | None = None,
    device: str = "auto",
    bands: Sequence[int] | None = None,
    tile_size: int = 1024,
    overlap: int = 128,
    prompt_crs: str | None = None,
    vector: Literal["gpkg", "geojson", "fgb", "shp"] | None = None,
    simplify: float = 0.0,
    min_area: float = 0.0,
    score_raster: bool = False,
    merged_vector: str | os.PathLike | None = None,
    workers: int = 0,
    scheduler: str | None = None,
    on_error: OnError = "skip",
    resume: bool = True,
    max_inflight: int | None = None,
    recursive: bool = False,
    backend_options: dict[str, Any] | None = None,
    prompt_file: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> BatchSummary:
    """Segment every scene of ``inputs`` with the same ``prompts``; one output set per scene.

    Args:
        inputs: folder, glob, list file or sequence (see :func:`expand_scenes`).
        output_dir: receives ``<scene>.tif`` (and ``<scene>.gpkg|.geojson``, ``<scene>_score.tif``).
        prompts: the prompts applied to every scene (pixel coordinates, or ``prompt_crs``).
        prompt_file: a vector file of point / polygon features, one target each; a scene gets
            the features that fall on it (:mod:`geoseg.prompt_layer`).
        backend, checkpoint, device: the segmenter (built once per worker process).
        backend_options: the backend's own keyword arguments (``mask_threshold``, ``vlm_url``, ...);
            they travel to the workers with the job, API keys excepted from the resume key.
        bands, tile_size, overlap, prompt_crs: as for :func:`geoseg.pipeline.segment`.
        vector: per-scene vector format (``gpkg``, ``geojson``, ``fgb`` or ``shp``); ``merged_vector``
            implies ``gpkg`` when not given.
        simplify, min_area: shape every scene's polygons as :func:`geoseg.pipeline.segment` does
            (tolerance in pixels; area in the layer's ``area`` unit); they need ``vector`` or
            ``merged_vector`` and are part of the resume key.
        score_raster: also write a float32 score raster per scene.
        merged_vector: one ``.gpkg``/``.geojson``/``.fgb``/``.shp`` with every scene's polygons in EPSG:4326
            and a ``scene`` field.
        workers: local Dask workers; ``0`` runs in this process (no Dask).
        scheduler: address of an existing Dask scheduler (overrides ``workers``).
        on_error: ``"skip"`` reports a failed scene and goes on; ``"fail"`` stops the batch.
        resume: skip scenes a previous run of the same job completed.
        max_inflight: window tasks submitted at once (default ``4 x workers``, at least 4).
        overwrite: when ``output_dir`` holds scenes an earlier run segmented with other options,
            set their outputs aside and go on; they are removed once a scene of this run is done,
            else put back (the summary's ``earlier`` says which); without it such a
            run is refused before anything is read or written, so one folder never mixes two
            option sets. A changed scene or prompt-file content is not an option change: those
            scenes are redone as on any resume.

    Returns:
        A :class:`BatchSummary`; with ``on_error="skip"`` failed scenes are listed in it.

    Raises:
        GeosegError: bad arguments, outputs of other options without ``overwrite``, or the
            first failed scene with ``on_error="fail"``.
    """
    from geoseg.raster.tiling import check_tiling

    t0 = time.perf_counter()
    if on_error not in ("skip", "fail"):
        raise GeosegError(f"unknown --on-error {on_error!r}", "use skip or fail")
    layer = None
    if prompt_file is not None:
        from geoseg.prompt_layer import read_prompt_layer

        layer = read_prompt_layer(prompt_file, prompt_crs)
    if not prompts and layer is None:
        raise GeosegError("no prompt given", "give --text '...', --point/--box with --prompt-crs, or --prompt-file")
    check_tiling(tile_size, overlap)
    from geoseg.vector import vector_driver

    if vector is not None:
        vector_driver(f"scene.{vector}")
    if merged_vector is not None:
        vector_driver(os.fspath(merged_vector))
        vector = vector or "gpkg"
    out_dir = Path(os.path.abspath(output_dir))  # markers and the summary name outputs wherever the run is started
    scenes = _drop_previous_outputs(expand_scenes(inputs, recursive=recursive), out_dir)
    stems: dict[str, Path] = {}
    for s in scenes:
        if s.stem in stems:
            raise InputError(f"two scenes would write the same output {s.stem}.tif ({stems[s.stem]} and {s})",
                             "rename one of them or run the folders as separate batches")
        stems[s.stem] = s
    if out_dir.exists() and not out_dir.is_dir():
        raise GeosegError(f"output {out_dir} is a file", "give a folder for a batch's outputs (-o DIR)")
    from geoseg.raster.writer import check_writable_folder

    check_writable_folder(os.fspath(out_dir / "scene.tif"))  # before any scene is read or model built
    opts = BatchOptions(backend=backend, checkpoint=checkpoint, device=device,
                        bands=tuple(bands) if bands else None, tile_size=tile_size, overlap=overlap,
                        prompt_crs=prompt_crs, vector=vector, score_raster=score_raster,
                        backend_options=dict(backend_options or {}), prompt_layer=layer,
                        simplify=simplify, min_area=min_area)
    _check_no_overwrite(scenes, out_dir, opts, merged_vector)
    job_key = opts.key(prompts)
    settle_leftover(out_dir)  # an --overwrite run killed before its end: put back or removed, as it would have
    earlier = earlier_option_sets(out_dir, job_key)
    if earlier and not overwrite:
        raise InputError(f"{out_dir} holds the outputs of {earlier.describe()}",
                         "give another output folder (-o), or add --overwrite to replace them")
    made = missing_folders(out_dir / MARKER_DIR)
    aside: list[SetAside] = []

    def start() -> None:
        """--overwrite moves the earlier outputs aside only now: cluster reached, backend built.

        A run that cannot start (an unreachable scheduler, a backend that does not build) must
        leave them as they were, as ``ogr2ogr -overwrite`` keeps the file when the source fails;
        one that starts removes them when it ends only if it has done a scene, else puts them back.
        """
        if earlier and not aside:
            aside.append(earlier.set_aside(out_dir, scenes))

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        summary = _run_scenes(scenes, out_dir, prompts, opts, job_key, layer, workers=workers, scheduler=scheduler,
                              on_error=on_error, resume=resume, max_inflight=max_inflight,
                              merged_vector=merged_vector, start=start)
    except BaseException as exc:
        if aside:
            aside[0].end(exc)
        remove_empty_folders(made)  # a run that failed before finishing a scene leaves no empty folder
        raise
    summary.earlier = aside[0].end() if aside else None
    summary.seconds = time.perf_counter() - t0
    _write_summary(out_dir, summary)
    log.info("batch: %d done, %d skipped, %d failed in %.1fs", summary.count("done"), summary.count("skipped"),
             summary.count("failed"), summary.seconds)
    return summary


def _run_scenes(scenes: list[Path], out_dir: Path, prompts: Sequence[Prompt], opts: BatchOptions, job_key: dict,
                layer: PromptLayer | None, *, workers: int, scheduler: str | None, on_error: OnError, resume: bool,
                max_inflight: int | None, merged_vector: str | os.PathLike | None,
                start: Callable[[], None]) -> BatchSummary:
    """Skip the complete scenes, segment the others (here or on Dask) and merge the vector layers.

    ``start`` is called once the run can go ahead (the cluster answers, the backend is built),
    before the first scene is segmented.
    """
    kinds = set().union(*(p.kinds for p in prompts), layer.kinds if layer is not None else ())
    spec = BackendSpec(opts.backend, opts.checkpoint, opts.device, tuple(sorted(kinds)),
                       tuple(sorted(opts.backend_options.items())))
    outcomes: dict[Path, SceneOutcome] = {}
    todo = []
    for s in scenes:
        if resume and is_complete(s, out_dir, job_key):
            outcomes[s] = SceneOutcome(scene=str(s), status="skipped",
                                       outputs=_marker_outputs(json.loads(_marker_path(s, out_dir).read_text()),
                                                               out_dir))
        else:
            todo.append(s)
    if outcomes:
        log.info("resuming: %d of %d scene(s) already complete", len(outcomes), len(scenes))
    _remove_stale_temps([p for s in todo for p in _scene_outputs(s, out_dir, opts).values()]
                        + ([os.fspath(merged_vector)] if merged_vector is not None else []))

    if workers <= 0 and not scheduler:
        name, notes, done = _run_local(todo, out_dir, prompts, opts, spec, job_key, on_error, len(scenes) - len(todo),
                                       start)
        workers_label: int | str = 0
    else:
        from geoseg.cluster import dask_client

        with dask_client(scheduler, max(workers, 1)) as client, _quiet_dask_on_interrupt(client, local=not scheduler):
            n_workers = len(client.scheduler_info().get("workers", {})) or max(workers, 1)
            inflight = max_inflight or max(4, 4 * n_workers)
            name, notes, done = _run_dask(client, todo, out_dir, prompts, opts, spec, job_key, on_error,
                                          len(scenes) - len(todo), inflight, start)
        workers_label = scheduler or workers
    outcomes.update(done)
    summary = BatchSummary(scenes=[outcomes[s] for s in scenes], seconds=0.0, backend=name, workers=workers_label,
                           notes=notes)
    if merged_vector is not None:
        summary.merged_vector = merge_vectors(
            [(Path(o.scene).stem, o.outputs["vector"]) for o in summary.scenes
             if o.status != "failed" and o.outputs.get("vector")], os.fspath(merged_vector))
    return summary
