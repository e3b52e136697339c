"""The project's benchmark split: a fixed, versioned manifest over data-engine rows.

A manifest (``src/geoseg/bench/splits/<name>.json``) holds no pixels. It names:

* ``config`` — the exact data-engine build (:class:`geoseg.data.engine.BuildConfig`), with
  source paths relative to a *data root* (``../shared/data`` by default);
* ``selection`` — how the samples were chosen (seed, per-task quota, no-target share,
  source weights) and the resulting counts;
* ``images`` — the SHA-256 of every source image file the samples are cut from;
* ``samples`` — ``[sample_id, checksum]`` pairs, the checksum being a digest of everything
  that defines the sample as scored (tile window, bands, stretch, target RLE, task, level,
  category, instruction, prompt, answer, empty-target flag), never the machine's paths.

:func:`materialise` rebuilds the pool with the data engine, checks every listed sample
and image against the manifest and writes ``DIR/split.json`` + ``DIR/samples.parquet``;
the ``split`` reader re-checks them on every read, so a run is always on exactly the
manifest's samples or refused with an error naming the first sample that differs.

**Selection rule** (:func:`select`): per task a quota of ``per_task`` samples;
``no_target_share`` of it goes to empty-target samples (tasks that have them), spread
evenly over levels; the rest is spread evenly over the levels, a level short of samples
giving its remainder to the others ("water-filling"). Inside a (task, level, empty)
stratum samples are split over sources by ``source_weights`` (again water-filled), and
drawn with a generator seeded by the seed and the stratum, from the sorted ids.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

from geoseg.digest import sha256_file
from geoseg.errors import InputError

log = logging.getLogger(__name__)

SPLITS_DIR = Path(__file__).with_name("splits")
DEFAULT_SPLIT = "geoseg_bench_v1"
FORMAT_TAG = "geoseg-bench-split"
MANIFEST_VERSION = 1
DATA_ROOT_ENV = "GEOSEG_SHARED_DATA"
TASKS = ("interactive", "referring", "reasoning")
SAMPLES_FILE = "samples.parquet"
SPLIT_FILE = "split.json"
#: row fields that define a sample as it is scored (paths and derived attributes are left out)
CHECKSUM_FIELDS = ("sample_id", "source", "scene", "region", "image_key", "window", "bands", "stretch", "mask", "task",
                   "level", "category", "instruction", "prompt", "answer", "empty_target", "instance_id")


def default_data_root() -> Path:
    """``$GEOSEG_SHARED_DATA`` or ``../shared/data`` (relative to the working directory, as in configs/)."""
    return Path(os.environ.get(DATA_ROOT_ENV) or "../shared/data")


def row_checksum(row: Mapping) -> str:
    """A 16-hex digest of a shard row's scored content (floats of the stretch at 6 significant digits)."""
    rec = {k: row.get(k) for k in CHECKSUM_FIELDS}
    rec["stretch"] = [[float(f"{v:.6g}") for v in band] for band in (row.get("stretch") or [])]
    blob = json.dumps(rec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


# ----------------------------------------------------------------------------------------- manifests

def manifest_path(name_or_path: str | Path) -> Path:
    """A manifest file: a path, or the name of one shipped in ``geoseg/bench/splits``."""
    p = Path(name_or_path)
    if p.suffix == ".json" and p.exists():
        return p
    shipped = SPLITS_DIR / f"{name_or_path}.json"
    if shipped.exists():
        return shipped
    names = sorted(f.stem for f in SPLITS_DIR.glob("*.json"))
    raise InputError(f"no benchmark split manifest {str(name_or_path)!r}",
                     f"give a manifest .json path or one of: {', '.join(names) or '(none shipped)'}")


def load_manifest(name_or_path: str | Path) -> dict:
    """Read and check a manifest (see module docstring)."""
    path = manifest_path(name_or_path)
    try:
        man = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"benchmark split manifest {path} is unreadable ({exc})", "restore it from the repository") from exc
    if not isinstance(man, dict) or man.get("format") != FORMAT_TAG or not isinstance(man.get("samples"), list):
        raise InputError(f"{path} is not a geoseg benchmark split manifest", "pass a file written by geoseg bench split create")
    return man


def dump_manifest(man: Mapping) -> str:
    """A manifest as JSON text with one ``[id, checksum]`` sample per line (readable diffs)."""
    head = {k: v for k, v in man.items() if k != "samples"}
    text = json.dumps(head, indent=1)[:-2]
    lines = ",\n".join("  " + json.dumps(s) for s in man["samples"])
    return f'{text},\n "samples": [\n{lines}\n ]\n}}\n'


def samples_digest(samples: Sequence[Sequence[str]]) -> str:
    """Digest of a manifest's ``[id, checksum]`` list (identifies the exact sample set)."""
    blob = "\n".join(f"{i} {c}" for i, c in samples)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def resolve_config(manifest: Mapping, data_root: str | Path):
    """The manifest's :class:`BuildConfig` with its source paths under ``data_root``."""
    from geoseg.data.engine import BuildConfig

    root = Path(data_root)
    if not root.is_dir():
        raise InputError(f"data root {root} does not exist",
                         f"pass --data-root (the folder holding dubai/, dk_fields/, ukis_tiles/) or set ${DATA_ROOT_ENV}")
    cfg = json.loads(json.dumps(manifest["config"]))
    for s in cfg["sources"]:
        s["path"] = str(root / s["path"])
    return BuildConfig.from_dict(cfg)


def relative_config(cfg: Mapping, data_root: str | Path) -> dict:
    """A build config dict whose source paths are made relative to ``data_root`` (for a manifest)."""
    out = json.loads(json.dumps(cfg))
    root = Path(data_root).resolve()
    for s in out["sources"]:
        p = Path(s["path"]).resolve()
        try:
            s["path"] = p.relative_to(root).as_posix()
        except ValueError as exc:
            raise InputError(f"source {s['path']} is not under the data root {data_root}",
                             "pass --data-root the folder holding every source") from exc
    return out


# ----------------------------------------------------------------------------------------- selection

def allocate(total: int, avail: Mapping[Hashable, int], weights: Mapping[Hashable, float] | None = None) -> dict:
    """Split ``total`` over keys in proportion to ``weights``, never above ``avail`` (water-filling).

    A key that cannot take its share gives the remainder to the others; integer shares use
    the largest remainder (ties by sorted key). Returns ``{key: n}``.
    """
    keys = sorted(avail, key=str)
    alloc = {k: 0 for k in keys}
    active = [k for k in keys if avail[k] > 0]
    remaining = min(total, sum(avail.values()))
    w = {k: float((weights or {}).get(k, 1.0)) for k in keys}
    while remaining > 0 and active:
        wsum = sum(w[k] for k in active) or float(len(active))
        share = {k: remaining * (w[k] / wsum if wsum else 1 / len(active)) for k in active}
        full = [k for k in active if share[k] >= avail[k] - alloc[k]]
        if full:
            for k in full:
                remaining -= avail[k] - alloc[k]
                alloc[k] = avail[k]
            active = [k for k in active if k not in full]
            continue
        base = {k: int(share[k]) for k in active}
        left = remaining - sum(base.values())
        order = sorted(active, key=lambda k: (-(share[k] - base[k]), str(k)))
        for k in order[:left]:
            base[k] += 1
        for k in active:
            alloc[k] += base[k]
        remaining = 0
    return alloc


def select(rows: Iterable[Mapping], seed: int = 0, per_task: int = 400, no_target_share: float = 0.1,
           source_weights: Mapping[str, float] | None = None) -> list[str]:
    """The sorted sample ids chosen from pool ``rows`` by the selection rule (module docstring)."""
    cells: dict[tuple, list[str]] = defaultdict(list)
    for r in rows:
        cells[(r["task"], int(r["level"]), bool(r["empty_target"]), r["source"])].append(r["sample_id"])
    def sizes(task: str, empty: bool, by: int) -> dict:  # rows per level (by=1) or per source (by=3)
        out: Counter = Counter()
        for key, v in cells.items():
            if key[0] == task and key[2] == empty:
                out[key[by]] += len(v)
        return out

    chosen: list[str] = []
    for task in TASKS:
        nt = allocate(round(per_task * no_target_share), sizes(task, True, 1))
        pos = allocate(per_task - sum(nt.values()), {lv: sizes(task, False, 1).get(lv, 0)
                                                     for lv in sorted({k[1] for k in cells if k[0] == task})})
        for empty, per_level in ((True, nt), (False, pos)):
            for lv, n in per_level.items():
                by_src = {k[3]: len(v) for k, v in cells.items() if k[:3] == (task, lv, empty)}
                for src, k in allocate(n, by_src, source_weights).items():
                    ids = sorted(cells[(task, lv, empty, src)])
                    rng = random.Random(f"{seed}/{task}/{lv}/{int(empty)}/{src}")
                    chosen.extend(rng.sample(ids, k))
    return sorted(chosen)


def counts(rows: Iterable[Mapping]) -> dict:
    """Breakdown of rows per task, task/level, source, no-target per task, region (for the manifest/tests)."""
    c: dict[str, Counter] = {k: Counter() for k in ("task", "task_level", "source", "no_target", "region")}
    for r in rows:
        c["task"][r["task"]] += 1
        c["task_level"][f"{r['task']}/{r['level']}"] += 1
        c["source"][r["source"]] += 1
        c["region"][f"{r['source']}/{r['region']}"] += 1
        if r["empty_target"]:
            c["no_target"][r["task"]] += 1
    return {k: dict(sorted(v.items())) for k, v in c.items()}


# ----------------------------------------------------------------------------------------- build / verify

def build_pool(cfg, out_dir: Path, workers: int = 0) -> list[dict]:
    """Run the data engine for ``cfg`` into ``out_dir`` and return every row."""
    import pyarrow.parquet as pq

    from geoseg.data.engine import build

    build(cfg, out_dir, workers=workers, report=False)
    files = sorted(Path(out_dir).rglob("*.parquet"))
    rows: list[dict] = []
    for f in files:
        rows.extend(pq.read_table(f).to_pylist())
    return rows


def image_rel(row: Mapping, data_root: str | Path) -> str:
    """A row's source image path relative to the data root (``as_posix``), or the path itself."""
    p = Path(row["image_path"]).resolve()
    try:
        return p.relative_to(Path(data_root).resolve()).as_posix()
    except ValueError:
        return p.as_posix()


def image_checksums(rows: Iterable[Mapping], data_root: str | Path) -> dict[str, str]:
    """``{image path relative to the data root: sha256}`` of the source images of ``rows``."""
    paths = {image_rel(r, data_root): r["image_path"] for r in rows}
    return {rel: sha256_file(paths[rel]) for rel in sorted(paths)}


def create_manifest(config: Mapping, data_root: str | Path, name: str, *, seed: int = 0, per_task: int = 400,
                    no_target_share: float = 0.1, source_weights: Mapping[str, float] | None = None,
                    exclude_regions: Sequence[str] = (), workers: int = 0, description: str = "") -> dict:
    """Build the pool of ``config`` (paths relative to ``data_root``), select samples, return a manifest.

    Args:
        config: a data-engine config dict whose source paths are relative to ``data_root``.
        exclude_regions: ``source/region`` values that must not occur in the pool (training
            regions): their presence is an error, so a manifest can never contain them.
    """
    from geoseg._version import __version__
    from geoseg.data.schema import SCHEMA_VERSION

    man = {"format": FORMAT_TAG, "manifest_version": MANIFEST_VERSION, "name": name, "description": description,
           "config": json.loads(json.dumps(config))}
    cfg = resolve_config(man, data_root)
    with tempfile.TemporaryDirectory(prefix="geoseg-split-") as tmp:
        rows = build_pool(cfg, Path(tmp) / "pool", workers)
    bad = sorted({f"{r['source']}/{r['region']}" for r in rows} & set(exclude_regions))
    if bad:
        raise InputError(f"the pool holds excluded (training) regions {', '.join(bad)}", "fix the config's sources")
    ids = set(select(rows, seed, per_task, no_target_share, source_weights))
    picked = sorted((r for r in rows if r["sample_id"] in ids), key=lambda r: r["sample_id"])
    samples = [[r["sample_id"], row_checksum(r)] for r in picked]
    man.update({
        "built_with": {"geoseg_version": __version__, "schema_version": SCHEMA_VERSION},
        "data_root_default": "../shared/data",
        "selection": {"seed": seed, "per_task": per_task, "no_target_share": no_target_share,
                      "source_weights": dict(source_weights or {}), "excluded_regions": list(exclude_regions),
                      "pool_rows": len(rows), "pool_counts": counts(rows)},
        "counts": counts(picked),
        "images": image_checksums(picked, data_root),
        "samples_digest": samples_digest(samples),
        "samples": samples,
    })
    return man


def verify(manifest: Mapping, rows: Sequence[Mapping], data_root: str | Path | None, where: str) -> list[dict]:
    """The manifest's rows, in manifest order, checked; an error naming the first difference otherwise.

    Args:
        rows: candidate rows (a rebuilt pool, or a materialised split).
        data_root: where image paths are made relative for the image checksums (``None``: use
            the stored ``image_rel`` of each row when present).
        where: the file or folder the rows came from (named in errors).
    """
    name = manifest.get("name", "?")
    by_id = {r["sample_id"]: r for r in rows}
    fix = ("rebuild it with 'geoseg bench split build' from the data and geoseg version the manifest names "
           f"({manifest.get('built_with', {})})")
    out = []
    for sid, checksum in manifest["samples"]:
        row = by_id.get(sid)
        if row is None:
            raise InputError(f"split {name}: sample {sid} is missing from {where}", fix)
        got = row_checksum(row)
        if got != checksum:
            raise InputError(f"split {name}: sample {sid} in {where} differs from the manifest "
                             f"(checksum {got} != {checksum})", fix)
        out.append(row)
    seen: set[str] = set()
    for row in out:
        rel = row.get("image_rel") or image_rel(row, data_root or "/")
        if rel in seen:
            continue
        seen.add(rel)
        want = manifest["images"].get(rel)
        if want is None:
            raise InputError(f"split {name}: image {rel} of sample {row['sample_id']} is not in the manifest", fix)
        try:
            got = sha256_file(row["image_path"])
        except OSError as exc:
            raise InputError(f"split {name}: cannot read image {row['image_path']} of sample {row['sample_id']} ({exc})",
                             "materialise the split again where its data lives") from exc
        if got != want:
            raise InputError(f"split {name}: image {row['image_path']} of sample {row['sample_id']} differs from "
                             f"the manifest (sha256 {got[:12]} != {want[:12]})", fix)
    return out


def materialise(name_or_path: str | Path, out_dir: str | Path, data_root: str | Path | None = None,
                workers: int = 0, overwrite: bool = False) -> Path:
    """Rebuild a manifest's samples into ``out_dir`` (``split.json`` + ``samples.parquet``).

    The pool is rebuilt by the data engine into a temporary folder, checked sample by sample
    and image by image against the manifest (:func:`verify`), and only then moved into place:
    a failed build leaves no output. Returns ``out_dir``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from geoseg.data.schema import SHARD_SCHEMA
    from geoseg.data.writer import staged_dir

    man = load_manifest(name_or_path)
    root = Path(data_root) if data_root is not None else default_data_root()
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise InputError(f"{out} exists and is not empty", "choose another -o folder or pass --overwrite")
    cfg = resolve_config(man, root)
    with staged_dir(out) as tmp:
        rows = build_pool(cfg, tmp / "pool", workers)
        picked = verify(man, rows, root, f"the pool rebuilt from {root}")
        for r in picked:
            r["image_rel"] = image_rel(r, root)
        schema = SHARD_SCHEMA.append(pa.field("image_rel", pa.string()))
        pq.write_table(pa.Table.from_pylist(picked, schema=schema), tmp / SAMPLES_FILE, compression="zstd")
        (tmp / SPLIT_FILE).write_text(dump_manifest(man), encoding="utf-8")
        shutil.rmtree(tmp / "pool")
    log.info("split %s: %d samples -> %s", man["name"], len(picked), out)
    return out
