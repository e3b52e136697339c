"""Batch segmentation: many scenes, one output per scene, on Dask distributed or in this process.

A batch is a folder, a glob pattern or a list file of scenes (:func:`expand_scenes`)
and one set of prompts applied to each scene (text prompts are the natural case;
point/box prompts in map coordinates with ``prompt_crs`` also work across scenes).

Work is split by scene *and* by window: every scene is planned with the scene
pipeline (:func:`geoseg.pipeline.plan_windows`) and each window group is one task,
so a single huge scene spreads over all workers. Workers run
:func:`geoseg.pipeline.process_window` with a segmenter built once per worker
process (a worker-local cache keyed by backend, checkpoint and device) and send the
window results back; the client paints them into each scene's
:class:`~geoseg.raster.writer.SceneWriter` in plan order, so outputs are byte for
byte those of the single-process run (each window is also processed with fixed
random seeds, so results never depend on which worker ran which window before).

Resume: a scene whose outputs exist and whose done marker
(``OUTPUT_DIR/.geoseg-batch/<name>.json``) matches this job (prompts, backend,
options, and the scene file's size and modification time) is skipped. A failed scene
is reported and, with ``on_error="skip"`` (default), does not stop the batch; it
leaves no partial output behind. An output folder holds one option set: outputs an
earlier run made with other options are refused, or replaced with ``overwrite`` (set aside, and put
back when the new run does no scene).

Modules (one concept each): :mod:`.scenes` (scene lists), :mod:`.jobs` (the job and its
resume key), :mod:`.markers` (done markers, output paths, summary), :mod:`.earlier` (outputs
of other options), :mod:`.folders` (output-folder safety), :mod:`.scene_run` (one scene in
flight), :mod:`.worker` (the worker side), :mod:`.local` and :mod:`.on_dask` (the two ways to
run), :mod:`.merge` (the merged layer), :mod:`.read_errors` (GDAL's reason for an unreadable scene),
:mod:`.outcomes` (results and summary) and
:mod:`.runner` (:func:`run_batch`).
"""

from __future__ import annotations

from geoseg.batch.earlier import EarlierOutputs, earlier_option_sets
from geoseg.batch.jobs import SECRET_OPTIONS, BackendSpec, BatchOptions, OnError
from geoseg.batch.markers import MARKER_DIR, SUMMARY_FILE, is_complete
from geoseg.batch.merge import merge_vectors
from geoseg.batch.outcomes import BatchSummary, SceneOutcome
from geoseg.batch.runner import run_batch
from geoseg.batch.scenes import (
    GLOB_CHARS,
    LIST_EXTS,
    PATH_COLUMNS,
    RASTER_EXTS,
    expand_scenes,
    is_batch_input,
)
from geoseg.batch.worker import BUILDS, get_segmenter, process_group, resolve_backend, worker_builds

__all__ = [
    "BUILDS", "GLOB_CHARS", "LIST_EXTS", "MARKER_DIR", "PATH_COLUMNS", "RASTER_EXTS", "SECRET_OPTIONS", "SUMMARY_FILE",
    "BackendSpec", "BatchOptions", "BatchSummary", "EarlierOutputs", "OnError", "SceneOutcome", "earlier_option_sets",
    "expand_scenes", "get_segmenter", "is_batch_input", "is_complete", "merge_vectors", "process_group",
    "resolve_backend", "run_batch", "worker_builds",
]
