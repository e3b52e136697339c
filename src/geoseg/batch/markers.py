"""Done markers (the resume record of each finished scene), the scenes' output paths and the run summary."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from geoseg.batch.jobs import BatchOptions
from geoseg.batch.outcomes import BatchSummary, SceneOutcome

MARKER_DIR = ".geoseg-batch"


#: the last run's summary (--json), in a sub-folder: a marker is <scene stem>.json, so "summary.json" could be one
SUMMARY_FILE = f"{MARKER_DIR}/run/summary.json"


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


def _marker_outputs(data: dict, out_dir: Path) -> dict[str, str]:
    """The outputs a done marker lists, as paths in ``out_dir`` (where they always are).

    Taken by file name, so a marker written with a relative ``-o`` from another working
    directory, or an output folder moved as a whole, still finds its outputs.
    """
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if not isinstance(outputs, dict):
        return {}
    return {k: str(out_dir / Path(v).name) for k, v in outputs.items() if isinstance(v, str)}


def is_complete(scene: Path, out_dir: Path, job_key: dict) -> bool:
    """Whether a previous run finished this scene with the same job (and its outputs are there)."""
    marker = _marker_path(scene, out_dir)
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or data.get("job") != _job_hash(job_key) \
            or data.get("scene") != _scene_fingerprint(scene):
        return False
    return all(os.path.isfile(p) for p in _marker_outputs(data, out_dir).values())


def _write_marker(scene: Path, out_dir: Path, job_key: dict, outcome: SceneOutcome) -> None:
    marker = _marker_path(scene, out_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"job": _job_hash(job_key), "scene": _scene_fingerprint(scene), "job_key": job_key,
                               "outputs": outcome.outputs, "mask_pixels": outcome.mask_pixels,
                               "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, default=str))
    os.replace(tmp, marker)


def _write_summary(out_dir: Path, summary: BatchSummary) -> None:
    """The last run's summary (a scene named "summary" has the marker ``summary.json``: not the same file)."""
    path = out_dir / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=1, default=str))
    os.replace(tmp, path)
