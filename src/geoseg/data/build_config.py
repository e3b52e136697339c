"""The data engine's build config: read from YAML, every value checked while it is parsed.

A wrong value is one line naming the key, the value and what it needs, before any output
exists (not a traceback from deep inside the build). :class:`BuildConfig` is everything
that determines a build's output; it is stored in the manifest.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from geoseg.data import filters as F
from geoseg.data.instructions import InstructionConfig
from geoseg.data.paraphrase import ParaphraseConfig
from geoseg.data.sources import ADAPTERS, get_source
from geoseg.errors import InputError, reason

log = logging.getLogger(__name__)


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
