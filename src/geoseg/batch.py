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
leaves no partial output behind.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from geoseg.errors import GeosegError, InputError
from geoseg.progress import progress_enabled
from geoseg.prompt_layer import PromptLayer
from geoseg.prompts import Prompt

log = logging.getLogger(__name__)

RASTER_EXTS = (".tif", ".tiff", ".jpg", ".jpeg", ".png", ".jp2", ".vrt", ".img")
LIST_EXTS = (".txt", ".lst", ".list", ".csv")
MARKER_DIR = ".geoseg-batch"
GLOB_CHARS = set("*?[")

OnError = Literal["skip", "fail"]


# --------------------------------------------------------------------------------------
# scene lists
# --------------------------------------------------------------------------------------
def is_batch_input(value: str | os.PathLike | Sequence[str]) -> bool:
    """Whether ``value`` names several scenes: a folder, a glob pattern, a list file or a sequence."""
    if not isinstance(value, (str, os.PathLike)):
        return True
    s = os.fspath(value)
    return os.path.isdir(s) or bool(GLOB_CHARS & set(s)) and not os.path.exists(s) or s.lower().endswith(LIST_EXTS)


def _read_list_file(path: Path) -> list[Path]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read the scene list {path} ({exc})", "check the path") from exc
    for line in lines:
        line = line.split("#", 1)[0].strip().strip(",")
        if not line:
            continue
        p = Path(line).expanduser()
        out.append(p if p.is_absolute() else path.parent / p)
    return out


def expand_scenes(inputs: str | os.PathLike | Sequence[str | os.PathLike], recursive: bool = False) -> list[Path]:
    """The scenes named by ``inputs``, in a stable (sorted) order without duplicates.

    Args:
        inputs: a folder (its rasters: .tif .tiff .jpg .jpeg .png .jp2 .vrt .img), a glob
            pattern (``"scenes/*.tif"``, ``**`` with ``recursive``), a list file (.txt/.lst/.csv,
            one path per line, ``#`` comments, relative paths taken from the list's folder),
            a single file, or a sequence of any of these.
        recursive: also look into sub-folders of a folder.

    Raises:
        InputError: nothing matched, or a listed scene does not exist.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    found: list[Path] = []
    for item in items:
        s = os.fspath(item)
        p = Path(s).expanduser()
        if p.is_dir():
            it = p.rglob("*") if recursive else p.iterdir()
            # hidden files are left out: an interrupted run's temporary outputs (.<name>.*.tmp.tif)
            found += sorted(f for f in it if f.is_file() and f.suffix.lower() in RASTER_EXTS
                            and not f.name.startswith(".") and not any(part == MARKER_DIR for part in f.parts))
        elif p.is_file() and p.suffix.lower() in LIST_EXTS:
            listed = _read_list_file(p)
            missing = [str(f) for f in listed if not f.is_file()]
            if missing:
                raise InputError(f"{len(missing)} scene(s) in {p} do not exist, e.g. {missing[0]}",
                                 "fix the list file (paths are relative to its folder)")
            found += listed
        elif p.is_file():
            found.append(p)
        elif GLOB_CHARS & set(s):
            found += sorted(Path(f) for f in glob.glob(os.path.expanduser(s), recursive=True)
                            if os.path.isfile(f) and f.lower().endswith(RASTER_EXTS))
        else:
            raise InputError(f"{s} does not exist", "give a folder, a glob pattern, a list file or a scene path")
    seen: set[str] = set()
    out = []
    for f in found:
        key = os.path.abspath(f)
        if key not in seen:
            seen.add(key)
            out.append(Path(key))
    if not out:
        raise InputError(f"no scenes found in {', '.join(map(os.fspath, items))}",
                         f"give a folder or pattern matching rasters ({', '.join(RASTER_EXTS)})")
    return out


# --------------------------------------------------------------------------------------
# jobs and outcomes
# --------------------------------------------------------------------------------------
#: backend options that are secrets: passed to the backend, never written anywhere
SECRET_OPTIONS = frozenset({"vlm_key"})


@dataclass(frozen=True)
class BackendSpec:
    """How a worker builds its segmenter; also the key of its worker-local cache."""

    backend: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    kinds: tuple[str, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()  # the backend's own keyword arguments, sorted (hashable)


@dataclass
class BatchOptions:
    """Everything besides the scene that decides a scene's outputs (the resume key)."""

    backend: str | None = None
    checkpoint: str | None = None
    device: str = "auto"
    bands: tuple[int, ...] | None = None
    tile_size: int = 1024
    overlap: int = 128
    prompt_crs: str | None = None
    vector: Literal["gpkg", "geojson", "fgb", "shp"] | None = None
    score_raster: bool = False
    backend_options: dict[str, Any] = field(default_factory=dict)
    prompt_layer: PromptLayer | None = None  # --prompt-file: its features that fall on each scene

    def key(self, prompts: Sequence[Prompt]) -> dict:
        layer = self.prompt_layer
        d = asdict(replace(self, prompt_layer=None))
        d["prompt_layer"] = layer.provenance() if layer is not None else None
        d["bands"] = list(self.bands) if self.bands else None
        # secrets never reach the resume key, which is written into every scene's marker file
        d["backend_options"] = {k: v for k, v in sorted(self.backend_options.items()) if k not in SECRET_OPTIONS}
        d["prompts"] = [p.to_dict() for p in prompts]
        return d


@dataclass
class SceneOutcome:
    """What happened to one scene."""

    scene: str
    status: Literal["done", "skipped", "failed"]
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    n_windows: int = 0
    mask_pixels: int = 0
    mask_area: float = 0.0
    area_unit: str = "px"
    scene_km2: float | None = None
    seconds: float = 0.0


@dataclass
class BatchSummary:
    """The batch's result; ``to_dict()`` is the ``--json`` output."""

    scenes: list[SceneOutcome]
    seconds: float
    backend: str
    workers: int | str
    merged_vector: str | None = None
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for s in self.scenes if s.status == status)

    @property
    def failed(self) -> list[SceneOutcome]:
        return [s for s in self.scenes if s.status == "failed"]

    @property
    def km2_per_min(self) -> float | None:
        km2 = sum(s.scene_km2 or 0.0 for s in self.scenes if s.status == "done")
        return km2 / (self.seconds / 60) if km2 and self.seconds > 0 else None

    def to_dict(self) -> dict:
        return {
            "done": self.count("done"), "skipped": self.count("skipped"), "failed": self.count("failed"),
            "seconds": round(self.seconds, 3), "backend": self.backend, "workers": self.workers,
            "km2_per_min": self.km2_per_min, "merged_vector": self.merged_vector, "notes": self.notes,
            "scenes": [asdict(s) for s in self.scenes],
        }

    def report(self) -> str:
        """A few human-readable lines for the CLI."""
        lines = [f"{len(self.scenes)} scene(s): {self.count('done')} done, {self.count('skipped')} skipped "
                 f"(already complete), {self.count('failed')} failed in {self.seconds:.1f}s "
                 f"[backend {self.backend}, workers {self.workers}]"]
        if self.km2_per_min:
            lines.append(f"throughput: {self.km2_per_min:.2f} km²/min")
        empty = [Path(s.scene).name for s in self.scenes if s.status == "done" and s.mask_pixels == 0]
        if empty:
            shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            lines.append(f"nothing found in {len(empty)} of {self.count('done')} scene(s) done: {shown}")
        for s in self.failed:
            lines.append(f"failed: {s.scene}: {s.error}")
        if self.merged_vector:
            lines.append(f"merged vector layer: {self.merged_vector}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------
# the worker side: a segmenter per process, seeded window processing
# --------------------------------------------------------------------------------------
_SEGMENTERS: dict[BackendSpec, tuple[Any, list[str]]] = {}
BUILDS: dict[str, int] = {}  # segmenters this process built, by backend name (checked by the tests)


def get_segmenter(spec: BackendSpec):
    """The segmenter for ``spec``, built once per process (on a Dask worker: once per worker)."""
    hit = _SEGMENTERS.get(spec)
    if hit is None:
        from geoseg.pipeline import build_backend

        prompts = [Prompt(text="x") if k == "text" else Prompt(box=(0, 0, 1, 1)) if k == "box"
                   else Prompt(points=((0, 0),), labels=(1,)) for k in spec.kinds]
        seg, notes = build_backend(spec.backend, prompts, spec.checkpoint, spec.device, dict(spec.options))
        BUILDS[seg.name] = BUILDS.get(seg.name, 0) + 1
        hit = _SEGMENTERS[spec] = (seg, notes)
        log.info("built segmenter %s in process %d", seg.name, os.getpid())
    return hit


def resolve_backend(spec: BackendSpec) -> tuple[str, dict, list[str]]:
    """Build (or reuse) the segmenter and return its name, provenance and fallback notes."""
    seg, notes = get_segmenter(spec)
    return seg.name, {**seg.provenance(), "backend": seg.name}, list(notes)


def _seed_everything(seed: int = 0) -> None:
    """Fixed RNG state before every window: results must not depend on the task order."""
    random.seed(seed)
    np.random.seed(seed)
    try:
        import cv2

        cv2.setRNGSeed(seed)
    except ImportError:  # pragma: no cover - opencv is a core dependency
        pass
    import sys

    torch = sys.modules.get("torch")  # only when a backend already imported it
    if torch is not None:
        torch.manual_seed(seed)


def process_group(source, group, spec: BackendSpec) -> list:
    """Process one window group with this process's segmenter (runs on a worker)."""
    from geoseg.pipeline import process_window

    seg, _ = get_segmenter(spec)
    _seed_everything()
    return process_window(source, group, seg)


def worker_builds() -> dict[str, int]:
    """Segmenters built in this process, by backend name (for ``client.run``: once per worker)."""
    return dict(BUILDS)


# --------------------------------------------------------------------------------------
# one scene: plan, paint results in order, finish, marker
# --------------------------------------------------------------------------------------
def _scene_outputs(scene: Path, out_dir: Path, opts: BatchOptions) -> dict[str, str]:
    stem = scene.stem
    outs = {"mask": str(out_dir / f"{stem}.tif")}
    if opts.vector:
        outs["vector"] = str(out_dir / f"{stem}.{opts.vector}")
    if opts.score_raster:
        outs["score_raster"] = str(out_dir / f"{stem}_score.tif")
    return outs


def _marker_path(scene: Path, out_dir: Path) -> Path:
    return out_dir / MARKER_DIR / f"{scene.stem}.json"


def _scene_fingerprint(scene: Path) -> dict:
    st = scene.stat()
    return {"path": str(scene), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _job_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(scene: Path, out_dir: Path, job_key: dict) -> bool:
    """Whether a previous run finished this scene with the same job (and its outputs are there)."""
    marker = _marker_path(scene, out_dir)
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if data.get("job") != _job_hash(job_key) or data.get("scene") != _scene_fingerprint(scene):
        return False
    return all(os.path.isfile(p) for p in data.get("outputs", {}).values())


def _write_marker(scene: Path, out_dir: Path, job_key: dict, outcome: SceneOutcome) -> None:
    marker = _marker_path(scene, out_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"job": _job_hash(job_key), "scene": _scene_fingerprint(scene), "job_key": job_key,
                               "outputs": outcome.outputs, "mask_pixels": outcome.mask_pixels,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, default=str))
    os.replace(tmp, marker)


class _SceneRun:
    """One scene in flight: its source, plan, writer and the results waiting for their turn.

    Results may arrive in any order; they are painted in plan order (the writer's
    first-come claim of overlapping pixels must not depend on scheduling), and the
    writer is opened only when the scene's turn to paint comes, so a single scene's
    scratch files are open at a time.
    """

    def __init__(self, scene: Path, out_dir: Path, prompts: Sequence[Prompt], opts: BatchOptions,
                 provenance: dict) -> None:
        from geoseg.pipeline import (
            group_tasks,
            input_provenance,
            layer_prompts,
            plan_windows,
            prepare_prompts,
        )
        from geoseg.raster.io import open_source

        self.scene = scene
        self.t0 = time.perf_counter()
        self.outputs = _scene_outputs(scene, out_dir, opts)
        self.source = open_source(str(scene), opts.bands)
        try:
            if opts.vector == "geojson" and self.source.crs is None:
                raise GeosegError(f"{scene.name} has no georeference, so it cannot be written as GeoJSON",
                                  "use --vector gpkg (pixel coordinates) or georeference the scene")
            self.prompts = prepare_prompts(self.source, list(prompts), opts.prompt_crs)
            if opts.prompt_layer is not None:
                self.prompts += layer_prompts(opts.prompt_layer, self.source, self.prompts)
            self.groups = group_tasks(plan_windows(self.source.width, self.source.height, self.prompts,
                                                   opts.tile_size, opts.overlap))
        finally:
            self.source.close()  # reopened lazily by reads; workers get a pickled copy
        self.provenance = {**provenance, "prompts": [p.to_dict() for p in self.prompts],
                           "input": input_provenance(self.source)}
        if opts.prompt_layer is not None:
            self.provenance["prompt_file"] = opts.prompt_layer.provenance()
        self.writer = None
        self.next = 0
        self.waiting: dict[int, list] = {}
        self.failed = False

    def add(self, index: int, results: list) -> None:
        """Keep the results of group ``index`` until its turn."""
        self.waiting[index] = results

    def paint_ready(self) -> int:
        """Paint every group whose turn has come (opening the writer first); return how many."""
        if self.writer is None:
            from geoseg.raster.writer import SceneWriter

            self.writer = SceneWriter(self.source, self.outputs["mask"], self.prompts, self.provenance,
                                      score_raster=self.outputs.get("score_raster"),
                                      vector=self.outputs.get("vector"))
            self.writer.open()
        painted = 0
        while self.next in self.waiting:
            for r in self.waiting.pop(self.next):
                self.writer.add(r)
            self.next += 1
            painted += 1
        return painted

    @property
    def complete(self) -> bool:
        return self.next == len(self.groups)

    def finish(self) -> SceneOutcome:
        try:
            summary = self.writer.finish()
        finally:
            self.writer.close()
            self.writer = None
            self.source.close()
        km2 = None
        src = self.source
        if src.crs is not None and src.crs.is_projected:
            t = src.transform
            factor = float(src.crs.linear_units_factor[1] or 1.0)
            km2 = abs(t.a * t.e - t.b * t.d) * factor * factor * src.width * src.height / 1e6
        return SceneOutcome(
            scene=str(self.scene), status="done", outputs=dict(summary.outputs), n_windows=len(self.groups),
            mask_pixels=summary.mask_pixels, mask_area=summary.mask_area, area_unit=summary.area_unit,
            scene_km2=km2, seconds=round(time.perf_counter() - self.t0, 3),
        )

    def abort(self) -> None:
        """Drop everything of this scene; no partial output stays behind."""
        self.failed = True
        self.waiting.clear()
        try:
            if self.writer is not None:
                self.writer.close(abort=True)
                self.writer = None
        finally:
            self.source.close()


# --------------------------------------------------------------------------------------
# the batch
# --------------------------------------------------------------------------------------
def _bars(n_scenes: int):
    from tqdm.auto import tqdm

    off = not progress_enabled()
    return (tqdm(total=n_scenes, desc="scenes", unit="scene", disable=off, position=0),
            tqdm(total=0, desc="tiles", unit="tile", disable=off, position=1, leave=False))


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text if isinstance(exc, GeosegError) else f"{type(exc).__name__}: {text}"


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
        score_raster: also write a float32 score raster per scene.
        merged_vector: one ``.gpkg``/``.geojson``/``.fgb``/``.shp`` with every scene's polygons in EPSG:4326
            and a ``scene`` field.
        workers: local Dask workers; ``0`` runs in this process (no Dask).
        scheduler: address of an existing Dask scheduler (overrides ``workers``).
        on_error: ``"skip"`` reports a failed scene and goes on; ``"fail"`` stops the batch.
        resume: skip scenes a previous run of the same job completed.
        max_inflight: window tasks submitted at once (default ``4 x workers``, at least 4).

    Returns:
        A :class:`BatchSummary`; with ``on_error="skip"`` failed scenes are listed in it.

    Raises:
        GeosegError: bad arguments, or the first failed scene with ``on_error="fail"``.
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
    scenes = _drop_previous_outputs(expand_scenes(inputs, recursive=recursive), Path(output_dir))
    stems: dict[str, Path] = {}
    for s in scenes:
        if s.stem in stems:
            raise InputError(f"two scenes would write the same output {s.stem}.tif ({stems[s.stem]} and {s})",
                             "rename one of them or run the folders as separate batches")
        stems[s.stem] = s
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GeosegError(f"output {out_dir} is a file", "give a folder for a batch's outputs (-o DIR)")
    from geoseg.raster.writer import check_writable_folder

    check_writable_folder(os.fspath(out_dir / "scene.tif"))  # before any scene is read or model built
    out_dir.mkdir(parents=True, exist_ok=True)
    opts = BatchOptions(backend=backend, checkpoint=checkpoint, device=device,
                        bands=tuple(bands) if bands else None, tile_size=tile_size, overlap=overlap,
                        prompt_crs=prompt_crs, vector=vector, score_raster=score_raster,
                        backend_options=dict(backend_options or {}), prompt_layer=layer)
    _check_no_overwrite(scenes, out_dir, opts)
    job_key = opts.key(prompts)
    kinds = set().union(*(p.kinds for p in prompts), layer.kinds if layer is not None else ())
    spec = BackendSpec(backend, checkpoint, device, tuple(sorted(kinds)),
                       tuple(sorted(opts.backend_options.items())))

    outcomes: dict[Path, SceneOutcome] = {}
    todo = []
    for s in scenes:
        if resume and is_complete(s, out_dir, job_key):
            outcomes[s] = SceneOutcome(scene=str(s), status="skipped",
                                       outputs=json.loads(_marker_path(s, out_dir).read_text())["outputs"])
        else:
            todo.append(s)
    if outcomes:
        log.info("resuming: %d of %d scene(s) already complete", len(outcomes), len(scenes))
    _remove_stale_temps([p for s in todo for p in _scene_outputs(s, out_dir, opts).values()]
                        + ([os.fspath(merged_vector)] if merged_vector is not None else []))

    if workers <= 0 and not scheduler:
        name, notes, done = _run_local(todo, out_dir, prompts, opts, spec, job_key, on_error, len(scenes) - len(todo))
        workers_label: int | str = 0
    else:
        from geoseg.cluster import dask_client

        with dask_client(scheduler, max(workers, 1)) as client:
            n_workers = len(client.scheduler_info().get("workers", {})) or max(workers, 1)
            inflight = max_inflight or max(4, 4 * n_workers)
            name, notes, done = _run_dask(client, todo, out_dir, prompts, opts, spec, job_key, on_error,
                                          len(scenes) - len(todo), inflight)
        workers_label = scheduler or workers
    outcomes.update(done)
    summary = BatchSummary(scenes=[outcomes[s] for s in scenes], seconds=0.0, backend=name, workers=workers_label,
                           notes=notes)
    if merged_vector is not None:
        summary.merged_vector = merge_vectors(
            [(Path(o.scene).stem, o.outputs["vector"]) for o in summary.scenes
             if o.status != "failed" and o.outputs.get("vector")], os.fspath(merged_vector))
    summary.seconds = time.perf_counter() - t0
    _write_summary(out_dir, summary)
    log.info("batch: %d done, %d skipped, %d failed in %.1fs", summary.count("done"), summary.count("skipped"),
             summary.count("failed"), summary.seconds)
    return summary


def _drop_previous_outputs(scenes: list[Path], out_dir: Path) -> list[Path]:
    """``scenes`` without the files an earlier batch wrote into ``out_dir`` (its done markers list them).

    An output folder inside (or equal to) the input folder must not make the next run
    segment the previous run's masks and score rasters as if they were scenes.
    """
    previous: set[str] = set()
    for marker in (out_dir / MARKER_DIR).glob("*.json"):
        try:
            outputs = json.loads(marker.read_text()).get("outputs", {})
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(outputs, dict):
            previous.update(os.path.abspath(p) for p in outputs.values() if isinstance(p, str))
    kept = [s for s in scenes if os.path.abspath(s) not in previous]
    if len(kept) < len(scenes):
        log.info("left out %d file(s) a previous batch wrote into %s", len(scenes) - len(kept), out_dir)
    if not kept:
        raise InputError(f"no scenes left: every file found is an output of a previous batch in {out_dir}",
                         "give the folder of the scenes, not the output folder")
    return kept


def _check_no_overwrite(scenes: Sequence[Path], out_dir: Path, opts: BatchOptions) -> None:
    """Refuse a batch whose outputs would replace one of its own scenes (``-o`` = the scenes' folder)."""
    inputs = {os.path.abspath(s): s for s in scenes}
    for s in scenes:
        for path in _scene_outputs(s, out_dir, opts).values():
            hit = inputs.get(os.path.abspath(path))
            if hit is not None:
                raise InputError(f"the outputs of {s.name} would overwrite the scene {hit}",
                                 "give an output folder (-o) other than the scenes' folder")


def _remove_stale_temps(outputs: Sequence[str]) -> None:
    """Remove the temporary files a killed run left next to ``outputs`` (``.<name>.XXXX.tmp<ext>``).

    A scene's outputs are written to such files and moved into place at the end; a run
    killed with SIGKILL never removes them. Only the outputs about to be (re)written are
    looked at, so nothing else in the folder is touched.
    """
    for out in outputs:
        folder, name = os.path.split(os.path.abspath(out))
        # ".<name>.XXXX.tmp.<ext>", and a shapefile's companions (.dbf, .shx, .prj, ...) or GDAL's .aux.xml
        for tmp in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.tmp.*")):
            try:
                os.unlink(tmp)
                log.info("removed %s, left by an interrupted run", tmp)
            except OSError:
                pass


def _write_summary(out_dir: Path, summary: BatchSummary) -> None:
    path = out_dir / MARKER_DIR / "summary.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=1, default=str))
    os.replace(tmp, path)


def _failed(scene: Path, exc: BaseException, on_error: OnError, t0: float) -> SceneOutcome:
    msg = _error_text(exc)
    if on_error == "fail":
        if isinstance(exc, GeosegError):
            raise GeosegError(f"scene {scene.name} failed: {exc.problem}", exc.fix) from exc
        raise GeosegError(f"scene {scene.name} failed: {msg}", "fix the scene or run with --on-error skip") from exc
    log.info("scene %s failed: %s", scene, msg)  # listed in the summary (the CLI prints it once)
    return SceneOutcome(scene=str(scene), status="failed", error=msg, seconds=round(time.perf_counter() - t0, 3))


def _run_local(todo: list[Path], out_dir: Path, prompts, opts, spec, job_key, on_error, n_skipped):
    """All scenes in this process, window by window (the reference for the distributed run)."""
    outcomes: dict[Path, SceneOutcome] = {}
    if not todo:
        return spec.backend or "unified", [], outcomes
    name, provenance, notes = resolve_backend(spec)
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
                _write_marker(scene, out_dir, job_key, outcome)
            except Exception as exc:  # noqa: BLE001 - a scene's failure is reported, not fatal (on_error=skip)
                if run is not None and not run.failed:
                    run.abort()
                outcome = _failed(scene, exc, on_error, t0)
            outcomes[scene] = outcome
            scene_bar.update(1)
    finally:
        tile_bar.close()
        scene_bar.close()
    return name, notes, outcomes


def _run_dask(client, todo: list[Path], out_dir: Path, prompts, opts, spec, job_key, on_error, n_skipped,
              max_inflight: int):
    """Scenes x window groups as Dask tasks, painting on the client in plan order.

    At most ``max_inflight`` groups are submitted or waiting to be painted at any time,
    so memory stays bounded whatever the number of scenes; tasks of the next scenes are
    submitted while the current one finishes, so workers stay busy across scene borders.
    """
    from collections import deque

    from distributed import as_completed

    outcomes: dict[Path, SceneOutcome] = {}
    if not todo:
        return spec.backend or "unified", [], outcomes
    name, provenance, notes = client.submit(resolve_backend, spec, pure=False).result()
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
                _write_marker(run.scene, out_dir, job_key, outcome)
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


# --------------------------------------------------------------------------------------
# merged vector layer
# --------------------------------------------------------------------------------------
def merge_vectors(parts: Sequence[tuple[str, str]], output: str) -> str:
    """Write every scene's polygons into one layer in EPSG:4326 with a ``scene`` field.

    Scenes without a georeference (pixel coordinates) cannot share a map layer and are
    left out with a warning.
    """
    import pyogrio.raw
    import shapely
    from pyproj import CRS, Transformer

    from geoseg.raster.writer import temp_path_for
    from geoseg.vector import replace_vector, vector_driver, vector_files

    driver = vector_driver(output)
    geoms: list = []
    cols: dict[str, list] = {"scene": [], "id": [], "prompt": [], "score": [], "area": [], "feature": []}
    for scene, path in parts:
        meta, _, wkb, data = pyogrio.raw.read(path)
        if not meta.get("crs"):
            log.warning("%s has no CRS (pixel coordinates): left out of the merged layer", path)
            continue
        g = shapely.from_wkb(wkb) if len(wkb) else np.array([], dtype=object)
        crs = CRS.from_user_input(meta["crs"])
        if len(g) and crs != CRS.from_epsg(4326):
            tr = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
            g = shapely.transform(g, lambda xy, tr=tr: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        fields = list(meta["fields"])
        geoms.extend(g)
        cols["scene"] += [scene] * len(g)
        for name in ("id", "prompt", "score", "area"):
            cols[name] += list(data[fields.index(name)]) if name in fields else [None] * len(g)
        cols["feature"] += list(data[fields.index("feature")]) if "feature" in fields else [-1] * len(g)
    tmp = temp_path_for(output)
    try:
        wkb_all = shapely.to_wkb(np.array(geoms, dtype=object)) if geoms else np.array([], dtype=object)
        arrays = [np.array(cols["scene"], dtype=object), np.array(cols["id"], dtype=np.int64),
                  np.array(cols["prompt"], dtype=object), np.array(cols["score"], dtype=np.float64),
                  np.array(cols["area"], dtype=np.float64)]
        names = ["scene", "id", "prompt", "score", "area"]
        if any(f != -1 for f in cols["feature"]):
            arrays.append(np.array(cols["feature"], dtype=np.int64))
            names.append("feature")
        pyogrio.raw.write(tmp, wkb_all, arrays, names,
                          layer=Path(output).stem, driver=driver, geometry_type="Polygon", crs="EPSG:4326",
                          layer_options={"RFC7946": "YES"} if driver == "GeoJSON" else None)
        replace_vector(tmp, output)
    finally:
        for part in vector_files(tmp):
            if os.path.exists(part):
                os.unlink(part)
    log.info("merged %d polygons from %d scene(s) into %s", len(geoms), len(parts), output)
    return output
