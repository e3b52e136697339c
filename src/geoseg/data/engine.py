"""Orchestration of the data engine: sources -> tiles -> instances -> filters -> attributes -> instructions -> shards.

Work is parallel over source images (one task per scene) on a Dask distributed cluster
(a local one by default, an existing one with ``scheduler``), or in-process with
``workers=0``. Results are consumed in scene order with a bounded number of scenes in
flight and streamed to the shard writer, so memory does not grow with the dataset and
the same seed gives byte-identical shards whatever the number of workers. Each tile's
randomness is seeded from the build seed and the tile's identity only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
from pycocotools import mask as mask_utils

from geoseg._version import __version__
from geoseg.data import attributes as A
from geoseg.data import filters as F
from geoseg.data import instances as I
from geoseg.data.build_config import BuildConfig, SourceSpec, check_source_options, read_config_file
from geoseg.data.instructions import generate
from geoseg.data.instructions.knowledge import load_kb
from geoseg.data.paraphrase import Paraphraser
from geoseg.data.schema import SCHEMA_VERSION, SHARD_SCHEMA
from geoseg.data.sources import SceneRef
from geoseg.data.sources.base import ANY_CLASS
from geoseg.data.tiling import tile_windows
from geoseg.data.writer import TMP_SUFFIX, ShardWriter, staged_dir, write_json_atomic
from geoseg.errors import GeosegError, InputError
from geoseg.progress import progress

log = logging.getLogger(__name__)

# the config's names stay importable from here (the CLI, the benchmark split and user code use them)
__all__ = ["BuildConfig", "SourceSpec", "build", "check_source_options", "process_scene", "read_config_file"]

#: no-target instructions are only asked in tiles with at most this share of unlabeled pixels
NO_TARGET_MAX_UNLABELED = 0.02
#: glibc heap trim threshold for local Dask workers (bytes)
MALLOC_TRIM = 64 * 1024 * 1024


def tile_rng(seed: int, key: str) -> np.random.Generator:
    """The random generator of one tile: depends on the seed and the tile's identity only."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode("utf-8"))])


def target_rle(inst: I.TileInstances, kind: str, j: int) -> dict:
    """COCO RLE of a sample's target at tile size (an instance, a whole class, or nothing).

    The mask is built straight into a column-major buffer (what pycocotools encodes), which
    saves a full-tile transpose per target; the RLE is identical to ``geoseg.rle.rle_encode``.
    """
    h, w = inst.shape
    buf = np.zeros((h, w), dtype=np.uint8, order="F")
    if kind == "instance":
        x, y, bw, bh = (int(v) for v in inst.bbox[j])
        buf[y:y + bh, x:x + bw] = inst.ids[y:y + bh, x:x + bw] == j + 1
    elif kind == "class":
        buf[:] = inst.class_mask(j)
    rle = mask_utils.encode(buf)
    return {"size": [h, w], "counts": rle["counts"].decode("ascii")}


def blocked_classes(crowd: np.ndarray, n_classes: int) -> frozenset[int]:
    """The classes a tile asks no referring, class-level or no-target question about, from its crowd map.

    A crowd region blocks its own class; an object of a category the source does not list
    (``ANY_CLASS``) blocks every class, since it may be any of them under another name.
    """
    values = np.unique(crowd)
    if (values == ANY_CLASS).any():
        return frozenset(range(n_classes))
    return frozenset(int(c) for c in values if 0 <= c < n_classes)


def _paraphrase(samples: list, para: Paraphraser, rng: np.random.Generator, stats: Counter) -> None:
    """Reword a share of the text instructions in place (own generator: the rest of the tile is unchanged)."""
    pc = para.cfg
    for s in samples:
        if s.task not in pc.tasks or rng.random() >= pc.share:
            continue
        new = para.rewrite(s.instruction, s.task)
        if new is None:
            stats["paraphrase_failed"] += 1
            continue
        s.attributes = {**s.attributes, "original_instruction": s.instruction, "paraphrase": para.provenance()}
        s.instruction = new
        stats["paraphrased"] += 1


def process_scene(spec: SourceSpec, ref: SceneRef, cfg: BuildConfig) -> tuple[pa.Table, dict]:
    """Every row of one scene, and its counters. Runs on a Dask worker or in-process."""
    cv2.setNumThreads(1)  # parallelism is over scenes; OpenCV's own threads would only contend with them
    stats: Counter = Counter()
    source = spec.open()
    scene = source.load(ref)
    for k, v in scene.notes.items():
        stats[f"notes/{k}"] += v
    split = source.split_of(ref.region)
    kb = load_kb(cfg.knowledge)
    para = Paraphraser(cfg.paraphrase) if cfg.paraphrase.enabled else None
    cols: dict[str, list] = {name: [] for name in SHARD_SCHEMA.names}
    stretch = [[float(v) for v in b] for b in scene.stretch]
    bands = list(scene.ref.bands)  # an adapter may settle the bands on load (e.g. a grey COCO image)
    size, stride = spec.tile_size or cfg.tile_size, spec.stride or cfg.stride
    for win in tile_windows(scene.height, scene.width, size, stride):
        stats["tiles"] += 1
        sl = (slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width))
        rgb = scene.rgb[sl]
        if scene.instances is not None:
            inst = I.from_instance_map(scene.instances[sl], scene.instance_class, scene.classes)
            if scene.label is not None:
                inst.label = scene.label[sl]
        else:
            inst = I.from_class_map(scene.label[sl], scene.classes)
        stats["instances"] += len(inst)
        if len(inst) == 0:
            stats["tiles_without_instances"] += 1
            continue
        att = A.compute(inst, rgb)
        rejected: Counter = Counter()
        keep = F.apply(inst, att, cfg.filters, rejected)
        for r, c in rejected.items():
            stats[f"rejected/{r}"] += c
        stats["kept"] += int(keep.sum())
        tile_key = f"{ref.source}/{ref.scene}/{win.col_off}_{win.row_off}"
        rng = tile_rng(cfg.seed, tile_key)
        allow_nt = scene.exhaustive and F.unlabeled_fraction(inst) <= NO_TARGET_MAX_UNLABELED
        blocked = blocked_classes(scene.crowd[sl], len(scene.classes)) if scene.crowd is not None else frozenset()
        samples = generate(inst, att, keep, cfg.instructions, kb, rng, allow_no_target=allow_nt, blocked=blocked)
        if para is not None:
            _paraphrase(samples, para, tile_rng(cfg.seed, tile_key + "/paraphrase"), stats)
        rles: dict[tuple[str, int], dict] = {}
        seen: Counter = Counter()
        for s in samples:
            if s.target not in rles:
                rles[s.target] = target_rle(inst, *s.target)
            tag = {"instance": f"i{s.target[1]}", "class": f"c{s.target[1]}", "none": "none"}[s.target[0]]
            base = f"{tile_key}/{tag}/{s.task}"
            n = seen[base]
            seen[base] += 1
            cols["sample_id"].append(f"{base}-{n}")
            cols["source"].append(ref.source)
            cols["scene"].append(ref.scene)
            cols["region"].append(ref.region)
            cols["split"].append(split)
            cols["image_path"].append(ref.image_path)
            cols["image_key"].append(ref.image_key)
            cols["window"].append(win.as_dict())
            cols["bands"].append(bands)
            cols["stretch"].append(stretch)
            cols["mask"].append(rles[s.target])
            cols["task"].append(s.task)
            cols["level"].append(s.level)
            cols["category"].append(s.category)
            cols["instruction"].append(s.instruction)
            cols["prompt"].append(json.dumps(s.prompt, sort_keys=True, separators=(",", ":")))
            cols["answer"].append(s.answer)
            cols["empty_target"].append(s.empty_target)
            cols["instance_id"].append(s.instance_id)
            cols["attributes"].append(json.dumps(s.attributes, sort_keys=True, separators=(",", ":")))
            stats[f"samples/{s.task}/{s.level}"] += 1
            stats[f"category/{s.category}"] += 1
            if s.empty_target:
                stats["no_target"] += 1
    stats[f"split/{split}"] += len(cols["sample_id"])
    return pa.table(cols, schema=SHARD_SCHEMA), dict(stats)


def _safe_process(spec: SourceSpec, ref: SceneRef, cfg: BuildConfig, strict: bool) -> tuple[pa.Table | None, dict]:
    try:
        return process_scene(spec, ref, cfg)
    except GeosegError as exc:
        if strict:
            raise
        return None, {"skipped_scenes": 1, "_skip": f"{ref.source}/{ref.scene}: {exc}"}


#: what a build writes in its folder (besides split folders of ``part-NNNNN.parquet`` shards)
BUILD_FILES = frozenset({"manifest.json", "stats.json", "stats.md", "examples.png"})


def _check_out(out: Path) -> None:
    """Refuse an output that is not a folder or holds something a build did not write (it would be replaced)."""
    if not out.name or out == out.parent:
        raise InputError(f"cannot build into {out}", "name a folder for the build, e.g. -o data/shards/mine")
    if not out.exists():
        return
    if not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder", "choose a folder for -o")
    foreign = []
    for p in out.iterdir():
        if p.is_file() and (p.name in BUILD_FILES or p.name.endswith(TMP_SUFFIX)):
            continue
        if p.is_dir() and not p.is_symlink() and all(
                f.is_file() and f.name.startswith("part-") and f.name.endswith((".parquet", ".parquet" + TMP_SUFFIX))
                for f in p.iterdir()):
            continue
        foreign.append(p.name)
    if foreign:
        shown = ", ".join(sorted(foreign)[:3]) + (", ..." if len(foreign) > 3 else "")
        raise InputError(f"output folder {out} holds files a build does not write ({shown}); a build replaces "
                         "its folder as a whole", "choose a new or empty folder, or one holding an earlier build")


@contextlib.contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """While building, SIGTERM ends the build like Ctrl-C does (cleanup runs) instead of killing the process."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield  # a signal handler of the caller's own stays in charge
        return

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def build(cfg: BuildConfig, out_dir: str | os.PathLike, workers: int = 2, scheduler: str | None = None,
          strict: bool = False, max_in_flight: int | None = None, report: bool = True, examples: int = 12) -> dict:
    """Build shards, ``manifest.json`` and the stats report in ``out_dir``; returns the manifest.

    The build is written into a hidden sibling folder that takes the place of ``out_dir`` only
    once it is complete (:func:`geoseg.data.writer.staged_dir`): an earlier build there stays
    intact until then, and a failed or interrupted build leaves nothing behind (not even
    ``out_dir``). ``out_dir`` must be new, empty, or hold an earlier build (which is replaced
    as a whole).

    Args:
        cfg: what to build.
        out_dir: destination folder (created).
        workers: local Dask worker processes; 0 runs in this process.
        scheduler: address of an existing Dask scheduler (overrides ``workers``).
        strict: raise on the first unreadable scene instead of counting it as skipped.
        max_in_flight: scenes submitted ahead of the writer (default ``4 x workers``).
        report: write ``stats.json``, ``stats.md`` and ``examples.png`` (:mod:`geoseg.data.stats`).
        examples: tiles on the example sheet (0: no sheet).
    """
    out = Path(os.path.abspath(out_dir))  # absolute and without '..': its name and parent are real
    _check_out(out)
    t0 = time.perf_counter()
    jobs: list[tuple[SourceSpec, SceneRef]] = []
    if cfg.paraphrase.enabled:
        Paraphraser(cfg.paraphrase).check()
    load_kb(cfg.knowledge)  # a missing knowledge base stops the build before it starts, not scene by scene
    notes: Counter = Counter()  # problems of a source as a whole (e.g. COCO annotations of no image)
    for spec in cfg.sources:
        source = spec.open()
        jobs.extend((spec, r) for r in source.scenes())
        notes.update({f"notes/{k}": v for k, v in source.source_notes().items() if v})
    log.info("%d scenes from %d sources", len(jobs), len(cfg.sources))
    with _terminate_as_exit(), staged_dir(out) as stage:
        manifest = _build_into(stage, cfg, jobs, workers, scheduler, strict, max_in_flight, report, examples, notes)
    elapsed = time.perf_counter() - t0
    rows = manifest["rows"]
    log.info("%d rows in %d shards in %.1f s (%.0f rows/s)", rows, len(manifest["shards"]), elapsed,
             rows / max(elapsed, 1e-9))
    manifest["elapsed_s"] = elapsed  # not in the file: keeps manifests byte-identical across runs
    return manifest


def _build_into(out: Path, cfg: BuildConfig, jobs: list[tuple[SourceSpec, SceneRef]], workers: int,
                scheduler: str | None, strict: bool, max_in_flight: int | None, report: bool, examples: int,
                notes: Counter) -> dict:
    """The build itself, into ``out`` (the staging folder). Dask workers only return rows; this process writes.

    ``notes`` are the sources' own counters (:meth:`Source.source_notes`), added to the manifest's counts.
    """
    writer = ShardWriter(out, cfg.shard_rows)
    totals: Counter = Counter(notes)
    skipped: list[str] = []
    regions: dict[str, set[str]] = {}

    def consume(table: pa.Table | None, stats: dict) -> None:
        skip = stats.pop("_skip", None)
        if skip:
            log.warning("skipped %s", skip)
            skipped.append(skip)
        totals.update(stats)
        if table is not None and table.num_rows:
            writer.write(table)
            for split, region, src in set(zip(table.column("split").to_pylist(), table.column("region").to_pylist(),
                                              table.column("source").to_pylist())):
                regions.setdefault(split, set()).add(f"{src}/{region}")

    try:
        if scheduler is None and workers == 0:
            for spec, ref in progress(jobs, desc="scenes", unit="scene"):
                consume(*_safe_process(spec, ref, cfg, strict))
        else:
            import dask

            from geoseg.cluster import dask_client

            # Dask makes glibc return freed memory at 64 KiB; per-tile arrays of a few MB would
            # then be mapped and unmapped for every tile (a third of the CPU time went to the kernel).
            env = {**dask.config.get("distributed.nanny.pre-spawn-environ", {}), "MALLOC_TRIM_THRESHOLD_": MALLOC_TRIM,
                   "MALLOC_MMAP_THRESHOLD_": MALLOC_TRIM // 2}
            with dask.config.set({"distributed.nanny.pre-spawn-environ": env}), \
                    dask_client(scheduler, max(workers, 1)) as client:
                window = max_in_flight or 4 * max(workers, 1)
                pending: deque = deque()
                it = iter(jobs)
                bar = progress(range(len(jobs)), desc="scenes", unit="scene")
                for spec, ref in it:
                    pending.append(client.submit(_safe_process, spec, ref, cfg, strict, pure=False))
                    if len(pending) >= window:
                        break
                while pending:
                    fut = pending.popleft()
                    consume(*fut.result())
                    fut.release()
                    next(bar, None)
                    nxt = next(it, None)
                    if nxt is not None:
                        pending.append(client.submit(_safe_process, nxt[0], nxt[1], cfg, strict, pure=False))
        shards = writer.close()
    except BaseException:
        writer.abort()
        raise
    if not shards:
        raise InputError(f"the build produced no samples ({len(skipped)} of {len(jobs)} scenes skipped)",
                         "check the sources and the filter settings (see the log with -v)")
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "geoseg_version": __version__,
        "config": cfg.to_dict(),
        "shards": shards,
        "rows": sum(s["rows"] for s in shards),
        "splits": {s: sorted(r) for s, r in sorted(regions.items())},
        "counts": dict(sorted((k, int(v)) for k, v in totals.items())),
        "skipped": skipped,
        "scenes": len(jobs),
    }
    write_json_atomic(out / "manifest.json", manifest)
    if report:
        from geoseg.data.stats import write_report

        write_report(out, examples=examples, seed=cfg.seed)
    return manifest
