"""Orchestration of the data engine: sources -> tiles -> instances -> filters -> attributes -> instructions -> shards.

Work is parallel over source images (one task per scene) on a Dask distributed cluster
(a local one by default, an existing one with ``scheduler``), or in-process with
``workers=0``. Results are consumed in scene order with a bounded number of scenes in
flight and streamed to the shard writer, so memory does not grow with the dataset and
the same seed gives byte-identical shards whatever the number of workers. Each tile's
randomness is seeded from the build seed and the tile's identity only.
"""

from __future__ import annotations

import json
import logging
import os
import time
import zlib
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import yaml
from pycocotools import mask as mask_utils

from geoseg._version import __version__
from geoseg.data import attributes as A
from geoseg.data import filters as F
from geoseg.data import instances as I
from geoseg.data.instructions import InstructionConfig, generate
from geoseg.data.instructions.knowledge import load_kb
from geoseg.data.paraphrase import ParaphraseConfig, Paraphraser
from geoseg.data.schema import SCHEMA_VERSION, SHARD_SCHEMA
from geoseg.data.sources import UNLABELED, SceneRef, get_source
from geoseg.data.tiling import tile_windows
from geoseg.data.writer import ShardWriter, write_json_atomic
from geoseg.errors import GeosegError, InputError
from geoseg.progress import progress

log = logging.getLogger(__name__)

#: no-target instructions are only asked in tiles with at most this share of unlabeled pixels
NO_TARGET_MAX_UNLABELED = 0.02
#: glibc heap trim threshold for local Dask workers (bytes)
MALLOC_TRIM = 64 * 1024 * 1024


@dataclass(frozen=True)
class SourceSpec:
    """One source of a build: adapter type, root path, split map, adapter options, own tiling.

    ``tile_size``/``stride`` override the build's for this source (e.g. smaller tiles for a
    small 10 m Sentinel-2 scene whose parcels are tiny at 512 px).
    """

    type: str
    path: str
    splits: dict[str, list[str]] = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    tile_size: int | None = None
    stride: int | None = None

    def open(self):
        return get_source(self.type, self.path, splits=self.splits, **self.options)


@dataclass(frozen=True)
class BuildConfig:
    """Everything that determines a build's output (stored in the manifest)."""

    sources: tuple[SourceSpec, ...]
    seed: int = 0
    tile_size: int = 512
    stride: int = 256
    shard_rows: int = 50_000
    filters: F.FilterConfig = field(default_factory=F.FilterConfig)
    instructions: InstructionConfig = field(default_factory=InstructionConfig)
    knowledge: str | None = None
    paraphrase: ParaphraseConfig = field(default_factory=ParaphraseConfig)

    @classmethod
    def from_dict(cls, d: dict) -> BuildConfig:
        d = dict(d)
        known = {"sources", "seed", "tile_size", "stride", "shard_rows", "filters", "instructions", "knowledge",
                 "paraphrase"}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown build settings {sorted(unknown)}", f"use {sorted(known)}")
        specs = []
        source_keys = {"type", "path", "splits", "options", "tile_size", "stride"}
        for s in d.get("sources") or []:
            if not isinstance(s, dict) or "type" not in s or "path" not in s:
                raise InputError(f"source entry {s!r} needs 'type' and 'path'", "see configs/data/dubai.yaml")
            if set(s) - source_keys:
                raise InputError(f"unknown source settings {sorted(set(s) - source_keys)}", f"use {sorted(source_keys)}")
            specs.append(SourceSpec(str(s["type"]), str(s["path"]), dict(s.get("splits") or {}),
                                    dict(s.get("options") or {}),
                                    int(s["tile_size"]) if s.get("tile_size") else None,
                                    int(s["stride"]) if s.get("stride") else None))
        if not specs:
            raise InputError("the build has no sources", "give --source TYPE=PATH or a config with 'sources:'")
        return cls(tuple(specs), int(d.get("seed", 0)), int(d.get("tile_size", 512)), int(d.get("stride", 256)),
                   int(d.get("shard_rows", 50_000)), F.FilterConfig.from_dict(d.get("filters")),
                   InstructionConfig.from_dict(d.get("instructions")), d.get("knowledge"),
                   ParaphraseConfig.from_dict(d.get("paraphrase")))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> BuildConfig:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read build config {path} ({exc})", "pass a YAML file like configs/data/dubai.yaml") from exc
        if not isinstance(data, dict):
            raise InputError(f"build config {path} is not a mapping", "see configs/data/dubai.yaml")
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sources"] = [asdict(s) for s in self.sources]
        d["instructions"]["point_count_p"] = list(self.instructions.point_count_p)
        d["paraphrase"]["tasks"] = list(self.paraphrase.tasks)
        return d


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
        blocked: frozenset[int] = frozenset()
        if scene.crowd is not None:
            blocked = frozenset(int(c) for c in np.unique(scene.crowd[sl]) if c != UNLABELED)
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


def build(cfg: BuildConfig, out_dir: str | os.PathLike, workers: int = 2, scheduler: str | None = None,
          strict: bool = False, max_in_flight: int | None = None, report: bool = True, examples: int = 12) -> dict:
    """Build shards, ``manifest.json`` and the stats report in ``out_dir``; returns the manifest.

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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs: list[tuple[SourceSpec, SceneRef]] = []
    if cfg.paraphrase.enabled:
        Paraphraser(cfg.paraphrase).check()
    for spec in cfg.sources:
        refs = spec.open().scenes()
        jobs.extend((spec, r) for r in refs)
    log.info("%d scenes from %d sources", len(jobs), len(cfg.sources))
    writer = ShardWriter(out, cfg.shard_rows)
    totals: Counter = Counter()
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
    elapsed = time.perf_counter() - t0
    rows = sum(s["rows"] for s in shards)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "geoseg_version": __version__,
        "config": cfg.to_dict(),
        "shards": shards,
        "rows": rows,
        "splits": {s: sorted(r) for s, r in sorted(regions.items())},
        "counts": dict(sorted((k, int(v)) for k, v in totals.items())),
        "skipped": skipped,
        "scenes": len(jobs),
    }
    old = out / "manifest.json"
    if old.exists():  # drop shards of a previous build that this one did not rewrite
        try:
            prev = json.loads(old.read_text())
            keep_paths = {s["path"] for s in shards}
            for s in prev.get("shards", []):
                if s["path"] not in keep_paths:
                    (out / s["path"]).unlink(missing_ok=True)
        except (OSError, ValueError, KeyError):
            pass
    write_json_atomic(old, manifest)
    if report:
        from geoseg.data.stats import write_report

        write_report(out, examples=examples, seed=cfg.seed)
    log.info("%d rows in %d shards in %.1f s (%.0f rows/s)", rows, len(shards), elapsed, rows / max(elapsed, 1e-9))
    manifest["elapsed_s"] = elapsed  # not in the file: keeps manifests byte-identical across runs
    return manifest
