"""The project's benchmark split, materialised by ``geoseg bench split build``.

``path`` is the folder holding ``split.json`` (a copy of the manifest) and
``samples.parquet`` (the manifest's rows, in the shard schema). Every read checks the
folder against the manifest — the same sample ids, each sample's checksum, each source
image's SHA-256 — and, when geoseg ships a manifest of that name, that the folder was
built from that exact version: a run is on exactly the manifest's samples, or refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from geoseg.bench import split as S
from geoseg.bench.readers.shards import row_to_sample
from geoseg.bench.sample import BenchSample
from geoseg.errors import InputError

NAME = "split"
DESCRIPTION = "geoseg benchmark split (geoseg bench split build)"


def _folder(path: Path) -> Path:
    return path.parent if path.is_file() and path.name == S.SPLIT_FILE else path


def detect(path: Path) -> bool:
    f = _folder(path) / S.SPLIT_FILE
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("format") == S.FORMAT_TAG
    except (OSError, ValueError, AttributeError):
        return False


def read(path: Path, split: str | None = None) -> list[BenchSample]:
    import pyarrow.parquet as pq

    folder = _folder(path)
    man = S.load_manifest(folder / S.SPLIT_FILE)
    shipped = S.SPLITS_DIR / f"{man['name']}.json"
    if shipped.exists():
        ref = S.load_manifest(shipped)
        if ref.get("samples_digest") != man.get("samples_digest") or ref["samples"] != man["samples"]:
            raise InputError(f"{folder} was built from another version of split {man['name']} than this geoseg ships",
                             f"rebuild it: geoseg bench split build {man['name']} -o {folder} --overwrite")
    f = folder / S.SAMPLES_FILE
    try:
        rows = pq.read_table(f).to_pylist()
    except Exception as exc:
        raise InputError(f"cannot read {f} ({exc})", f"rebuild it: geoseg bench split build {man['name']} -o {folder} "
                         "--overwrite") from exc
    rows = S.verify(man, rows, None, str(f))
    regions = None
    if rows and rows[0].get("image_rel") and rows[0]["image_path"].endswith(rows[0]["image_rel"]):
        from geoseg.bench.class_regions import ClassRegions

        root = rows[0]["image_path"][: -len(rows[0]["image_rel"])]
        regions = ClassRegions([{**s, "path": str(Path(root) / s["path"])} for s in man["config"]["sources"]])
    samples = [row_to_sample(r, f, regions) for r in rows if split is None or r.get("split") == split]
    for s in samples:
        s.meta["benchmark"] = f"{man['name']} (samples digest {man.get('samples_digest')})"
    return samples
