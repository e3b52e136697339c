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
import math
import os
import re
import signal
import threading
import time
import zlib
from collections import Counter, deque
from collections.abc import Iterator
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
from geoseg.data.sources import ADAPTERS, SceneRef, get_source
from geoseg.data.sources.base import ANY_CLASS
from geoseg.data.tiling import tile_windows
from geoseg.data.writer import TMP_SUFFIX, ShardWriter, staged_dir, write_json_atomic
from geoseg.errors import GeosegError, InputError, reason
from geoseg.progress import progress

log = logging.getLogger(__name__)

#: no-target instructions are only asked in tiles with at most this share of unlabeled pixels
NO_TARGET_MAX_UNLABELED = 0.02
#: glibc heap trim threshold for local Dask workers (bytes)
MALLOC_TRIM = 64 * 1024 * 1024


# ----------------------------------------------------------------------------------------- config checks
# A build config is checked while it is parsed, so a wrong value is one line naming the key, the
# value and what it needs, before any output exists (not a traceback from deep inside the build).

EXAMPLE_CONFIG = "see configs/data/dubai.yaml"


def _bad(key: str, value: object, need: str) -> InputError:
    return InputError(f"build setting {key} = {value!r} is invalid", f"{key} needs {need}")


def _is_int(v: object) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer())


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_int(key: str, v: object, lo: int | None = None) -> None:
    if not _is_int(v) or (lo is not None and v < lo):
        raise _bad(key, v, "a whole number" + (f" >= {lo}" if lo is not None else ""))


def _check_num(key: str, v: object, lo: float | None = None, hi: float | None = None, hi_open: bool = False,
               lo_open: bool = False) -> None:
    ok = _is_num(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        if lo is not None and hi is not None:
            need = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        elif lo is not None:
            need = f"a number {'>' if lo_open else '>='} {lo:g}"
        else:
            need = "a number"
        raise _bad(key, v, need)


def _check_bool(key: str, v: object) -> None:
    if not isinstance(v, bool):
        raise _bad(key, v, "true or false")


def _check_str(key: str, v: object) -> None:
    if not isinstance(v, str) or not v.strip():
        raise _bad(key, v, "a non-empty text")


def _check_str_list(key: str, v: object) -> None:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise _bad(key, v, "a list of names, e.g. [tile_1, tile_2]")


def _check_bands(key: str, v: object) -> None:
    if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_int(b) and b >= 1 for b in v):
        raise _bad(key, v, "three 1-based band numbers shown as red, green, blue, e.g. [3, 2, 1]")


def _check_choice(key: str, v: object, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise _bad(key, v, "one of " + ", ".join(choices))


def _check_regex(key: str, v: object) -> None:
    _check_str(key, v)
    try:
        groups = re.compile(str(v)).groups
    except re.error as exc:
        raise _bad(key, v, f"a valid regular expression ({exc})") from exc
    if groups < 1:
        raise _bad(key, v, "a regular expression whose first group is the region, e.g. '^(P\\d+)_'")


def _check_values(key: str, v: object) -> None:
    ok = isinstance(v, dict) and bool(v) and all(
        (_is_int(k) or (isinstance(k, str) and k.strip().isdigit())) and 0 <= int(k) <= 65535
        and isinstance(name, str) and name for k, name in v.items())
    if not ok:
        raise _bad(key, v, "a mapping of mask value (0-65535) to class name, e.g. {0: cloud shadow, 4: cloud}")


#: the options each source adapter reads (``self.options.get`` in ``geoseg.data.sources.*``) and what they
#: need; ``split`` is read by every adapter (``Source.split_of``)
COMMON_OPTIONS = {"split": _check_str}
SOURCE_OPTIONS: dict[str, dict] = {
    "dubai": {"regions": _check_str_list,
              "max_scenes_per_region": lambda k, v: _check_int(k, v, 1),
              "unknown_colour": lambda k, v: _check_choice(k, v, ("error", "unlabeled"))},
    "dk_fields": {"vectors": _check_str, "image": _check_str, "bands": _check_bands, "class_field": _check_str,
                  "category": _check_str},
    "ukis": {"values": _check_values, "bands": _check_bands, "image_key": _check_str, "mask_key": _check_str,
             "unknown_value": lambda k, v: _check_choice(k, v, ("error", "unlabeled"))},
    "coco": {"images": _check_str, "region_pattern": _check_regex, "exhaustive": _check_bool},
}


def check_source_options(kind: str, options: object, where: str = "options") -> None:
    """Raise a one-line :class:`InputError` on an option ``kind``'s adapter does not read, or a wrong value."""
    if not isinstance(options, dict):
        raise _bad(where, options, "a mapping of option: value, e.g. {split: test}")
    allowed = {**COMMON_OPTIONS, **SOURCE_OPTIONS.get(kind, {})}
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        raise InputError(f"unknown {kind} source option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                         f"in {where}", f"the {kind} source reads {', '.join(sorted(allowed))}")
    for k, v in options.items():
        allowed[k](f"{where}.{k}", v)


#: key -> check of the nested settings (before their own ``from_dict``, which checks names and cross-field ranges)
FILTER_CHECKS = {
    "min_area_frac": lambda k, v: _check_num(k, v, 0, 1), "max_area_frac": lambda k, v: _check_num(k, v, 0, 1),
    "min_pixels": lambda k, v: _check_int(k, v, 0), "max_border_fraction": lambda k, v: _check_num(k, v, 0, 1),
    "min_thickness": lambda k, v: _check_num(k, v, 0), "max_irregularity": lambda k, v: _check_num(k, v, 0),
    "max_unlabeled_frac": lambda k, v: _check_num(k, v, 0, 1),
}


def _check_point_p(key: str, v: object) -> None:
    if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(_is_num(x) and x >= 0 for x in v) or sum(v) <= 0:
        raise _bad(key, v, "three shares >= 0 (of 1, 2 and 3 points), e.g. [0.6, 0.2, 0.2]")


INSTRUCTION_CHECKS = {
    "interactive_per_instance": lambda k, v: _check_int(k, v, 0),
    "referring_per_instance": lambda k, v: _check_int(k, v, 0),
    "reasoning_per_instance": lambda k, v: _check_int(k, v, 0),
    "class_reasoning": _check_bool,
    "no_target_ratio": lambda k, v: _check_num(k, v, 0, 1, hi_open=True),
    "no_target_per_absent": lambda k, v: _check_int(k, v, 0),
    "no_target_level2_share": lambda k, v: _check_num(k, v, 0, 1),
    "distractor_min_frac": lambda k, v: _check_num(k, v, 0, 1),
    "box_share": lambda k, v: _check_num(k, v, 0, 1),
    "point_count_p": _check_point_p,
}


def _check_url(key: str, v: object) -> None:
    if v is not None:
        _check_str(key, v)


def _check_tasks(key: str, v: object) -> None:
    if not isinstance(v, (list, tuple)) or not all(isinstance(t, str) for t in v):
        raise _bad(key, v, "a list of tasks, e.g. [referring, reasoning]")


PARAPHRASE_CHECKS = {
    "url": _check_url, "model": _check_str, "api_key_env": _check_str, "share": lambda k, v: _check_num(k, v, 0, 1),
    "tasks": _check_tasks, "timeout_s": lambda k, v: _check_num(k, v, 0, lo_open=True),
    "max_ratio": lambda k, v: _check_num(k, v, 0, lo_open=True),
}


def _checked_section(name: str, value: object, checks: dict) -> dict | None:
    """A nested settings mapping with every known key's value checked (unknown keys: its own ``from_dict``)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(name, value, "a mapping of setting: value")
    for k, v in value.items():
        if k in checks:
            checks[k](f"{name}.{k}", v)
    return value


def _optional_size(key: str, v: object) -> int | None:
    if v is None:
        return None
    _check_int(key, v, 1)
    return int(v)


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping in a build-config YAML file (an empty file is an empty mapping); one-line errors."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read build config {path} ({reason(exc)})",
                         "pass a YAML file like configs/data/dubai.yaml") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"build config {path} is not valid YAML ({reason(exc)})",
                         "fix the YAML syntax at that place") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"build config {path} holds a {type(data).__name__}, not a mapping of settings",
                         EXAMPLE_CONFIG)
    return data


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
        """Parse and check a build config; a wrong setting raises one :class:`InputError` line naming it."""
        if not isinstance(d, dict):
            raise InputError(f"the build config is a {type(d).__name__}, not a mapping of settings", EXAMPLE_CONFIG)
        d = dict(d)
        known = {"sources", "seed", "tile_size", "stride", "shard_rows", "filters", "instructions", "knowledge",
                 "paraphrase"}
        unknown = set(d) - known
        if unknown:
            raise InputError(f"unknown build settings {sorted(map(str, unknown))}", f"use {sorted(known)}")
        specs = []
        source_keys = {"type", "path", "splits", "options", "tile_size", "stride"}
        sources = d.get("sources")
        if sources is not None and not isinstance(sources, (list, tuple)):
            raise _bad("sources", sources, "a list of {type, path, ...} entries")
        for i, s in enumerate(sources or []):
            where = f"sources[{i}]"
            if not isinstance(s, dict) or "type" not in s or "path" not in s:
                raise InputError(f"source entry {s!r} needs 'type' and 'path'", EXAMPLE_CONFIG)
            if set(s) - source_keys:
                raise InputError(f"unknown source settings {sorted(map(str, set(s) - source_keys))}",
                                 f"use {sorted(source_keys)}")
            if s["type"] not in ADAPTERS:
                raise _bad(f"{where}.type", s["type"], "one of " + ", ".join(sorted(ADAPTERS)))
            _check_str(f"{where}.path", s["path"])
            splits = s.get("splits") or {}
            if not isinstance(splits, dict):
                raise _bad(f"{where}.splits", splits, "a mapping of split: [regions], e.g. {train: [tile_1]}")
            for split, regions in splits.items():
                _check_str(f"{where}.splits", split)
                _check_str_list(f"{where}.splits.{split}", regions)
            options = s.get("options") or {}
            check_source_options(s["type"], options, f"{where}.options")
            specs.append(SourceSpec(s["type"], s["path"], dict(splits), dict(options),
                                    _optional_size(f"{where}.tile_size", s.get("tile_size")),
                                    _optional_size(f"{where}.stride", s.get("stride"))))
        if not specs:
            raise InputError("the build has no sources", "give --source TYPE=PATH or a config with 'sources:'")
        seed = d.get("seed", 0)
        _check_int("seed", seed)
        sizes = {}
        for key, default in (("tile_size", 512), ("stride", 256), ("shard_rows", 50_000)):
            sizes[key] = d.get(key, default)
            _check_int(key, sizes[key], 1)
        knowledge = d.get("knowledge")
        if knowledge is not None:
            _check_str("knowledge", knowledge)
        filters = F.FilterConfig.from_dict(_checked_section("filters", d.get("filters"), FILTER_CHECKS))
        if filters.min_area_frac > filters.max_area_frac:
            raise InputError(f"filters.min_area_frac ({filters.min_area_frac}) is above filters.max_area_frac "
                             f"({filters.max_area_frac}): no instance could be kept",
                             "set min_area_frac <= max_area_frac")
        return cls(tuple(specs), int(seed), int(sizes["tile_size"]), int(sizes["stride"]), int(sizes["shard_rows"]),
                   filters,
                   InstructionConfig.from_dict(_checked_section("instructions", d.get("instructions"),
                                                                INSTRUCTION_CHECKS)),
                   knowledge,
                   ParaphraseConfig.from_dict(_checked_section("paraphrase", d.get("paraphrase"), PARAPHRASE_CHECKS)))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> BuildConfig:
        return cls.from_dict(read_config_file(path))

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
