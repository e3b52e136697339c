"""Readers for every benchmark format geoseg evaluates on, with autodetection.

One module per format; each exposes ``NAME``, ``DESCRIPTION``, ``detect(path) -> bool``
and ``read(path, split=None) -> list[BenchSample]``. :func:`load_benchmark` picks the
reader by ``--format`` or, when exactly one reader recognises the path, automatically.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError

log = logging.getLogger(__name__)

# format name -> module (imported on use)
FORMATS: dict[str, str] = {
    "shards": "geoseg.bench.readers.shards",
    "unigeoseg": "geoseg.bench.readers.unigeoseg",
    "geoseg810": "geoseg.bench.readers.geoseg810",
    "rrsisd": "geoseg.bench.readers.rrsisd",
    "refsegrs": "geoseg.bench.readers.refsegrs",
    "earthreason": "geoseg.bench.readers.earthreason",
    "risbench": "geoseg.bench.readers.risbench",
    "geopix": "geoseg.bench.readers.geopix",
    "split": "geoseg.bench.readers.split",
}


def reader(fmt: str) -> ModuleType:
    """The reader module of format ``fmt``."""
    if fmt not in FORMATS:
        raise InputError(f"unknown benchmark format {fmt!r}", f"use one of {', '.join(FORMATS)} or leave --format out")
    return importlib.import_module(FORMATS[fmt])


def detect_format(path: str | Path) -> str:
    """The one format that recognises ``path``; an error when none or several do."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"benchmark path {path} does not exist", "check the --data path")
    hits = []
    for fmt in FORMATS:
        try:
            if reader(fmt).detect(path):
                hits.append(fmt)
        except (OSError, ValueError) as exc:  # a detector must never crash autodetection
            log.debug("detector %s failed on %s: %s", fmt, path, exc)
    if not hits:
        raise InputError(f"unknown benchmark format at {path}",
                         f"pass --format with one of {', '.join(FORMATS)} (see docs/bench.md for the layouts)")
    if len(hits) > 1:
        raise InputError(f"{path} matches several formats ({', '.join(hits)})", "pass --format to choose one")
    return hits[0]


def load_benchmark(path: str | Path, fmt: str | None = None, split: str | None = None) -> tuple[list[BenchSample], str]:
    """Read a benchmark: ``(samples, format_name)``. Sample ids are checked for uniqueness."""
    fmt = fmt or detect_format(path)
    mod = reader(fmt)
    if not Path(path).exists():
        raise InputError(f"benchmark path {path} does not exist", "check the --data path")
    samples = mod.read(Path(path), split=split)
    if not samples:
        raise InputError(f"no samples found in {path} (format {fmt}{', split ' + split if split else ''})",
                         "check the path, the split name and the format")
    seen: set[str] = set()
    for s in samples:
        if s.sample_id in seen:
            raise InputError(f"duplicate sample id {s.sample_id!r} in {s.source_file}", "sample ids must be unique")
        seen.add(s.sample_id)
    return samples, fmt
